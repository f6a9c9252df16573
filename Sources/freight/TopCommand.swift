import ArgumentParser
import Foundation
import FreightAdmin
import FreightClient
import FreightCore
import FreightWire

/// `freight top`: a node's messages, links and rates, redrawn in place every `--interval` seconds
/// (docs/observability.md). On a terminal each frame replaces the last; otherwise frames follow one another.
struct TopCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "top", abstract: "Watch a node: its messages, its links to peers and gateways, their rates.")

    @OptionGroup var via: ViaOption
    @Option(name: .customLong("interval"), help: "Seconds between frames (0.1 to 60).")
    var interval = 1.0
    @Option(name: .customLong("count"), help: "Frames to draw before exiting (default: until interrupted).")
    var count: Int?

    func run() async throws {
        do {
            guard (0.1...60).contains(interval) else {
                throw FreightError(.invalidArgument, "--interval must be 0.1 to 60 seconds")
            }
            if let count, count < 1 { throw FreightError(.invalidArgument, "--count must be at least 1") }
            let client = try await FreightClient.connect(
                to: try via.address(), label: "top", token: via.token, sharedMemory: .off)
            let terminal = isatty(1) != 0
            let view = StatusView()
            var previous: (status: Freight_Wire_V1_NodeStatus, at: ContinuousClock.Instant)?
            var frames = 0
            while count.map({ frames < $0 }) ?? true {
                if frames > 0 { try await Task.sleep(for: .milliseconds(Int(interval * 1000))) }
                let status = try await client.status()
                let now = ContinuousClock.now
                let seconds = previous.map { StatusView.seconds(now - $0.at) } ?? 0
                let lines = view.lines(previous: previous?.status, current: status, seconds: seconds)
                let frame = lines.joined(separator: "\n")
                // Home and clear on a terminal; a blank line between frames elsewhere.
                printLine(terminal ? "\u{1B}[H\u{1B}[2J" + frame : (frames > 0 ? "\n" : "") + frame)
                previous = (status, now)
                frames += 1
            }
            await client.close()
        } catch {
            fail(error)
        }
    }
}
