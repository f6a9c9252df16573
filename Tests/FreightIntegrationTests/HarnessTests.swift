import Foundation
import FreightTesting
import Testing

/// The test harness itself: a run spawns thousands of `freight` processes, and each must give back what it took.
struct HarnessTests {
    /// Once a child has exited and its output reached its end, the test process holds none of its pipes: leaked
    /// read ends once piled up past 1,024 descriptors, where Foundation's select() stops seeing any handle, and a
    /// whole run hung.
    @Test func aFinishedProcessLeavesNoPipeOpen() async throws {
        for _ in 0..<5 {
            let process = try FreightProcess(["--help"])
            #expect(try await process.waitForExit(timeout: .seconds(60)) == 0)
            let deadline = ContinuousClock.now + .seconds(10)
            while process.openOutputPipes > 0 && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(process.openOutputPipes == 0)
            #expect(process.stdoutLines.contains { $0.contains("USAGE") })
        }
    }
}
