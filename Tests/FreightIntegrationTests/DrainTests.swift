import Foundation
import FreightCore
import FreightTesting
import Testing

/// A node told to stop (SIGTERM: Kubernetes ending its pod, a rolling update) drains: the messages in flight get the
/// drain time (`--drain`) to finish, new ones are refused with the reason, and what is left at the end fails both
/// ways with the reason, so that no sender waits for a resume that will not come (docs/deploy.md).
@Suite(.serialized) struct DrainTests {
    /// n1 (127.0.0.141) sends to receivers at n2 (127.0.0.142), which runs with `drain` seconds.
    static func pair(drain: Int) async throws -> ProcessCluster {
        let cluster = try ProcessCluster()
        do {
            let n1 = try await cluster.startNode(name: "n1", host: "127.0.0.141", join: [])
            try await cluster.startNode(
                name: "n2", host: "127.0.0.142", join: [n1.listen], extraArguments: ["--drain", "\(drain)"])
            try await cluster.waitForMesh()
            return cluster
        } catch {
            cluster.stop()
            throw error
        }
    }

    static func bytesIn(_ cluster: ProcessCluster, _ node: String, atLeast bytes: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(120)
        while try await cluster.status(node)["bytes_in"] as? Int ?? 0 < bytes {
            guard ContinuousClock.now < deadline else { throw FreightError(.internalError, "\(node) took too little") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    @Test(.timeLimit(.minutes(5))) func aStoppingNodeLetsItsMessagesFinishAndRefusesNewOnes() async throws {
        let cluster = try await Self.pair(drain: 120)
        defer { cluster.stop() }
        // 256 MiB read at 16 MiB/s: sixteen seconds, most of them after the node is told to stop, so that the late
        // message starts while the node drains even on a loaded machine (once the big one is through, the node exits
        // and the late one finds no route instead).
        let recv = try await cluster.receiver("drain/big", at: "n2", ["--check", "--count", "1", "--rate", "16MiB"])
        defer { recv.stop() }
        let late = try await cluster.receiver("drain/late", at: "n2", ["--count", "1"])
        defer { late.stop() }
        let send = try FreightProcess([
            "send", "drain/big", "--size", "256MiB", "--via", cluster.node("n1").socket, "--json",
        ])
        defer { send.stop() }
        try await Self.bytesIn(cluster, "n2", atLeast: 16 << 20)
        let n2 = cluster.node("n2").process
        n2.kill(SIGTERM)
        let told = ContinuousClock.now + .seconds(30)
        while !n2.stderr.contains("get up to"), ContinuousClock.now < told {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(n2.stderr.contains("1 messages in flight get up to 120 s"), "\(n2.stderr.suffix(2000))")
        let refused = try await FreightProcess.run(
            ["send", "drain/late", "--size", "1MiB", "--via", cluster.node("n1").socket], timeout: .seconds(60))
        #expect(refused.status != 0, "a message that starts while n2 stops is refused")
        #expect(
            refused.stderr.contains("shutting down"),
            "with the reason: \(refused.stderr) (big message still read: \(recv.isRunning), n2 running: \(n2.isRunning))"
        )
        #expect(try await send.waitForExit(timeout: .seconds(90)) == 0, "\(send.stderr)")
        #expect(try await recv.waitForExit(timeout: .seconds(30)) == 0, "\(recv.stderr)")
        let received = recv.jsonLines.first { $0["event"] as? String == "received" }
        #expect(received?["checked"] as? Bool == true, "byte-identical")
        // Then the node exits, well within its drain time.
        #expect(try await n2.waitForExit(timeout: .seconds(30)) == 0, "\(n2.stderr.suffix(2000))")
    }

    @Test(.timeLimit(.minutes(5))) func whatDoesNotFinishWithinTheDrainTimeFailsWithTheReason() async throws {
        let cluster = try await Self.pair(drain: 2)
        defer { cluster.stop() }
        // 2 GiB read at 16 MiB/s: far from done when the two seconds end.
        let recv = try await cluster.receiver("drain/slow", at: "n2", ["--check", "--count", "1", "--rate", "16MiB"])
        defer { recv.stop() }
        let send = try FreightProcess(["send", "drain/slow", "--size", "2GiB", "--via", cluster.node("n1").socket])
        defer { send.stop() }
        try await Self.bytesIn(cluster, "n2", atLeast: 16 << 20)
        let n2 = cluster.node("n2").process
        let stopped = ContinuousClock.now
        n2.kill(SIGTERM)
        #expect(try await send.waitForExit(timeout: .seconds(60)) != 0, "the message fails")
        let waited = ContinuousClock.now - stopped
        #expect(send.stderr.contains("drain time"), "the sender is told why: \(send.stderr)")
        #expect(waited < .seconds(30), "at the end of the drain time, not of a resume hold: \(waited)")
        #expect(try await recv.waitForExit(timeout: .seconds(30)) != 0, "the receiver is told too")
        #expect(try await n2.waitForExit(timeout: .seconds(30)) == 0, "\(n2.stderr.suffix(2000))")
    }
}
