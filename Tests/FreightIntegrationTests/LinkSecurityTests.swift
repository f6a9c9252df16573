import Foundation
import FreightCore
import FreightTesting
import Testing

/// Nodes prove who they are (docs/hardening.md): through the CLI as an operator would, `freight cert` makes the
/// authority and certificates, and nodes started with them link only to nodes that prove themselves on every stripe.
@Suite(.serialized) struct LinkSecurityTests {
    /// Makes an authority and a certificate for any node of cluster `test` (ProcessCluster's) under `folder/name`;
    /// returns the node flags that use it.
    static func certificates(in folder: String, _ name: String) async throws -> [String] {
        let authority = try await FreightProcess.run(["cert", "authority", "--out", "\(folder)/\(name)-ca"])
        #expect(authority.status == 0, "\(authority.stderr)")
        let issue = try await FreightProcess.run([
            "cert", "issue", "--cluster", "test", "--authority", "\(folder)/\(name)-ca", "--out", "\(folder)/\(name)",
        ])
        #expect(issue.status == 0, "\(issue.stderr)")
        return [
            "--tls-authority", "\(folder)/\(name)/authority.pem", "--tls-cert", "\(folder)/\(name)/node.pem",
            "--tls-key", "\(folder)/\(name)/node-key.pem",
        ]
    }

    static func peers(_ cluster: ProcessCluster, _ node: String) async throws -> [String] {
        let status = try await cluster.status(node)
        return ((status["peers"] as? [[String: Any]]) ?? []).compactMap { $0["name"] as? String }
    }

    /// A cluster with certificates links and carries checked messages; a stranger that says HELLO as a node, a
    /// node of another authority, a node without certificates and a node that chose encryption are all refused,
    /// and the stranger is told nothing (not even the node's HELLO).
    @Test func onlyNodesOfTheAuthorityJoin() async throws {
        let folder = NSTemporaryDirectory() + "freight-tls-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let tls = try await Self.certificates(in: folder, "cluster")
        let cluster = try await ProcessCluster.start(nodes: 2, extraArguments: tls)
        defer { cluster.stop() }
        let status = try await cluster.status("n1")
        #expect((status["link_security"] as? String)?.hasPrefix("mutual TLS, authenticated") == true, "\(status)")

        let recv = try await cluster.receiver("tls/check", at: "n2", ["--count", "1", "--check"])
        defer { recv.stop() }
        let send = try await FreightProcess.run([
            "send", "tls/check", "--size", "24MiB", "--via", cluster.node("n1").socket,
        ])
        #expect(send.status == 0, "\(send.stderr)")
        #expect(try await recv.waitForExit(timeout: .seconds(30)) == 0, "\(recv.stderr)")

        // A stranger that speaks wire v1 with a node's HELLO: closed unanswered.
        guard case .tcp(let host, let port) = try NodeAddress(cluster.node("n1").listen) else { return }
        #expect(throws: (any Error).self) {
            _ = try WireApp(
                peerOf: host, port: port, name: "intruder", cluster: "test", listen: "127.0.0.9:1", incarnation: 7,
                readTimeoutSeconds: 5)
        }
        // A node whose certificate another authority issued, a node with none, a node that encrypts.
        let other = try await Self.certificates(in: folder, "other")
        let join = [cluster.node("n1").listen]
        let n3 = try await cluster.startNode(name: "n3", host: "127.0.0.3", join: join, extraArguments: other)
        let n4 = try await cluster.startNode(name: "n4", host: "127.0.0.4", join: join)
        let n5 = try await cluster.startNode(
            name: "n5", host: "127.0.0.5", join: join, extraArguments: tls + ["--encrypt-links"])
        #expect(
            try await n3.process.waitForStderr(containing: "CERTIFICATE_VERIFY_FAILED"),
            "\(n3.process.stderr.suffix(2000))")
        #expect(
            try await n4.process.waitForStderr(containing: "trusted network only"), "\(n4.process.stderr.suffix(2000))")
        #expect(
            try await cluster.node("n1").process.waitForStderr(containing: "node n4 came without TLS"),
            "\(cluster.node("n1").process.stderr.suffix(2000))")
        #expect(
            try await n5.process.waitForStderr(containing: "a cluster's nodes must agree"),
            "\(n5.process.stderr.suffix(2000))")
        #expect(
            try await cluster.node("n1").process.waitForStderr(containing: "a cluster's nodes must agree"),
            "\(cluster.node("n1").process.stderr.suffix(2000))")
        #expect(try await Self.peers(cluster, "n1") == ["n2"])
        #expect(try await Self.peers(cluster, "n3").isEmpty)
        #expect(try await Self.peers(cluster, "n4").isEmpty)
        #expect(try await Self.peers(cluster, "n5").isEmpty)
    }

    /// Strangers that start a TLS handshake and never finish it cost a node with certificates little and are closed
    /// by the handshake deadline: 1,000 of them (each a TLS handler and its state while it lasts, at most 256 at a
    /// time) raise its memory by less than 32 MiB.
    @Test func unfinishedTLSHandshakesAreClosedByTheDeadline() async throws {
        let folder = NSTemporaryDirectory() + "freight-tls-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let cluster = try await ProcessCluster.start(
            nodes: 1, extraArguments: try await Self.certificates(in: folder, "c"))
        defer { cluster.stop() }
        let node = cluster.node("n1")
        let pid = node.process.pid
        let before = Int(ProcessStats.residentBytes(of: pid))
        guard case .tcp(let host, let port) = try NodeAddress(node.listen) else { return }
        let sampling = PeakMemory(of: pid, from: before)
        // A TLS handshake record announcing 512 bytes, of which none follow.
        let strangers = await Strangers.onThread(lowPriority: true) {
            Strangers.open(
                count: 1000, host: host, port: port, sources: (100..<116).map { "127.0.0.\($0)" },
                prefix: [22, 3, 1, 2, 0])
        }
        defer { Strangers.closeAll(strangers) }
        try await Task.sleep(for: .seconds(Int(Limits.handshakeSeconds) + 2))
        let peak = await sampling.stop()
        print("unfinished TLS handshakes: rss \(before >> 20) → peak \(peak >> 20) MiB")
        #expect(strangers.count == 1000)
        #expect(Strangers.closedCount(strangers) == strangers.count, "unfinished TLS handshakes still open")
        #expect(peak - before < 32 << 20, "memory rose from \(before >> 20) to \(peak >> 20) MiB")
        #expect(node.process.stderr.contains("no hello within"), "the deadline is logged")
        #expect((try await cluster.status("n1")["links_in_handshake"] as? Int) == 0)
    }

    /// Encrypted links carry checked messages of every size class; a node without certificates says it is for a
    /// trusted network only.
    @Test func encryptedLinksCarryCheckedMessages() async throws {
        let folder = NSTemporaryDirectory() + "freight-tls-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let tls = try await Self.certificates(in: folder, "cluster")
        let cluster = try await ProcessCluster.start(nodes: 2, extraArguments: tls + ["--encrypt-links"])
        defer { cluster.stop() }
        #expect(
            (try await cluster.status("n2")["link_security"] as? String)?.hasPrefix("mutual TLS, encrypted") == true)
        let recv = try await cluster.receiver("tls/enc", at: "n2", ["--count", "3", "--check"])
        defer { recv.stop() }
        for size in ["1", "3MiB", "40MiB"] {
            let send = try await FreightProcess.run([
                "send", "tls/enc", "--size", size, "--via", cluster.node("n1").socket,
            ])
            #expect(send.status == 0, "\(send.stderr)")
        }
        #expect(try await recv.waitForExit(timeout: .seconds(30)) == 0, "\(recv.stderr)")

        let plain = try await ProcessCluster.start(nodes: 1)
        defer { plain.stop() }
        #expect((try await plain.status("n1")["link_security"] as? String)?.contains("trusted network only") == true)
    }
}
