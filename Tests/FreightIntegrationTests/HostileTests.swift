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

    /// 32 OPENs of 32 MiB that never send data: the app gets at most its share of the budget (half), the rest is
    /// refused naming the share, the stream beside keeps its rate, and the message whose receiver granted credit
    /// fails when the idle time passes, its reservation returned.
    @Test func oneAppCannotReserveTheWholeBudget() async throws {
        let cluster = try await Self.releaseCluster(nodes: 2, ["--idle", "3"])
        defer { cluster.stop() }
        let sink = try await cluster.receiver("hostile/sink", at: "n2", [])
        defer { sink.stop() }
        let stream = try await CheckedStream.start(cluster)
        defer { stream.stop() }
        let baseline = try await stream.rate(over: .seconds(3))

        let socket = cluster.node("n1").socket
        let opened = ContinuousClock.now
        let app = try await Strangers.onThread { () -> Result<WireApp, FreightError> in
            do {
                let app = try WireApp(socketPath: socket, label: "hoarder")
                for _ in 0..<32 { try app.open("hostile/sink", length: 32 << 20) }
                return .success(app)
            } catch {
                return .failure(error as? FreightError ?? FreightError(.io, "\(error)"))
            }
        }.get()
        let underAttack = try await stream.rate(over: .seconds(3))
        let status = try await cluster.status("n1")
        let reserved = status["memory_reserved_bytes"] as? Int ?? 0
        let budget = status["memory_budget_bytes"] as? Int ?? 0
        let after = try await stream.rate(over: .seconds(2))

        // The first message to the sink got credit and no bytes: it fails within the idle time and a margin.
        let outcomes = await Strangers.onThread { () -> [String] in
            var reasons: [String] = []
            while let frame = try? app.next(where: { if case .abort = $0 { true } else { false } }),
                case .abort(let abort) = frame
            {
                reasons.append(abort.error.message)
                if abort.error.message.contains("sent no bytes") { break }
            }
            return reasons
        }
        let idleAt = ContinuousClock.now - opened
        #expect(outcomes.count(where: { $0.contains("one party may have") }) == 16, "\(outcomes.prefix(3))")
        #expect(outcomes.last?.contains("sent no bytes") == true, "\(outcomes.suffix(2))")
        #expect(idleAt < .seconds(3 + 3 + 6), "the idle message failed after \(idleAt)")
        #expect(reserved <= budget / 2 + 64 << 20, "\(reserved) of \(budget) reserved while the app hoards")
        #expect(
            underAttack >= 0.9 * (baseline + after) / 2,
            "stream: \(baseline) msg/s before, \(underAttack) beside the hoarder, \(after) after")
        #expect(stream.failures.isEmpty, "\(stream.failures.prefix(3))")
    }

    /// A fan-out to two receivers, one of them stopped before the message opened: the stopped one is cut with
    /// `slow receiver` after the slow-receiver time, and the healthy one gets every byte.
    @Test func aStoppedReceiverIsCutAndTheOtherFinishes() async throws {
        let cluster = try await Self.releaseCluster(nodes: 2, ["--slow-receiver", "2"])
        defer { cluster.stop() }
        let stream = try await CheckedStream.start(cluster)
        defer { stream.stop() }
        let healthy = try await cluster.receiver("fan/out", at: "n2", ["--count", "1", "--check"])
        defer { healthy.stop() }
        let stopped = try FreightProcess(
            ["recv", "fan/out", "--via", cluster.node("n2").socket, "--json"], executable: cluster.executable)
        defer {
            stopped.kill(SIGCONT)
            stopped.stop()
        }
        _ = try await stopped.waitForLine { $0.contains("\"ready\"") }
        try await cluster.waitForEndpoints("fan/out", count: 2, at: "n1")
        stopped.kill(SIGSTOP)
        let started = ContinuousClock.now
        let send = try await FreightProcess.run([
            "send", "fan/out", "--size", "256MiB", "--via", cluster.node("n1").socket, "--json",
        ])
        let took = ContinuousClock.now - started
        #expect(try await healthy.waitForExit(timeout: .seconds(20)) == 0, "the healthy receiver got every byte")
        let report = send.stdout.joined()
        #expect(report.contains("slow receiver"), "\(report) \(send.stderr)")
        #expect(took < .seconds(2 + 8), "the fan-out took \(took)")
        #expect(stream.failures.isEmpty, "\(stream.failures.prefix(3))")
    }
}
