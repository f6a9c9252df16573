import Foundation
import FreightCore
import FreightTesting
import Testing

/// Attacks on real `freight node` processes, each with a checked stream of messages between two other apps beside
/// it, and the bound each must meet (docs/hardening.md). The nodes and apps are the release build, as deployed; the
/// test command runs this suite alone, after the others, since it compares rates within one run.
@Suite(.serialized) struct HostileTests {
    static func releaseCluster(nodes: Int = 2, _ extraArguments: [String] = []) async throws -> ProcessCluster {
        let binary = try #require(
            ProcessCluster.releaseBinary, "build the release node first: swift build -c release --product freight")
        return try await ProcessCluster.start(nodes: nodes, extraArguments: extraArguments, executable: binary)
    }

    /// 2,000 strangers that send only the preface and 2,000 that trickle a byte a second: the node's memory rises by
    /// less than 32 MiB, every one of them is closed by the handshake deadline, and the stream beside them keeps at
    /// least 90% of its rate.
    @Test func strangersCostAlmostNothing() async throws {
        let cluster = try await Self.releaseCluster()
        defer { cluster.stop() }
        let stream = try await CheckedStream.start(cluster)
        defer { stream.stop() }
        let pid = cluster.node("n1").process.pid
        let before = Int(ProcessStats.residentBytes(of: pid))
        let baseline = try await stream.rate(over: .seconds(3))

        let parts = cluster.node("n1").listen.split(separator: ":")
        let (host, port) = (String(parts[0]), Int(parts[1])!)
        let sources = (100..<116).map { "127.0.0.\($0)" }
        let attack = Task {
            await Strangers.onThread { () -> (silent: [Int32], trickling: [Int32]) in
                let silent = Strangers.open(
                    count: 2000, host: host, port: port, sources: sources, prefix: Strangers.preface)
                let trickling = Strangers.open(count: 2000, host: host, port: port, sources: sources, prefix: [])
                // A byte a second, for longer than the deadline.
                for second in 0..<Int(Limits.handshakeSeconds) + 3 {
                    Strangers.trickle(trickling, byte: Strangers.preface[second % Strangers.preface.count])
                    Thread.sleep(forTimeInterval: 1)
                }
                return (silent, trickling)
            }
        }
        let sampling = Task {
            var peak = before
            while !Task.isCancelled {
                peak = max(peak, Int(ProcessStats.residentBytes(of: pid)))
                try? await Task.sleep(for: .milliseconds(100))
            }
            return peak
        }
        let underAttack = try await stream.rate(over: .seconds(4))
        let (silent, trickling) = await attack.value
        defer { Strangers.closeAll(silent + trickling) }
        try await Task.sleep(for: .seconds(1))
        sampling.cancel()
        let peak = await sampling.value
        // The machine's own load drifts: the stream's rate before and after the attack is the one it must keep.
        let after = try await stream.rate(over: .seconds(3))
        let unharmed = (baseline + after) / 2

        #expect(silent.count + trickling.count == 4000, "opened \(silent.count) + \(trickling.count)")
        #expect(Strangers.closedCount(silent) == silent.count, "silent strangers still open")
        #expect(Strangers.closedCount(trickling) == trickling.count, "trickling strangers still open")
        #expect(peak - before < 32 << 20, "memory rose from \(before >> 20) to \(peak >> 20) MiB")
        #expect(
            underAttack >= 0.9 * unharmed,
            "stream: \(baseline) msg/s before, \(underAttack) under attack, \(after) after")
        #expect(stream.failures.isEmpty, "\(stream.failures.prefix(3))")
        let log = cluster.node("n1").process.stderr
        #expect(log.contains("in their handshake"), "refusals are logged with their reason")
        print(
            "strangers: rss \(before >> 20) → peak \(peak >> 20) MiB; stream \(baseline) → \(underAttack) → \(after) msg/s"
        )
    }
}
