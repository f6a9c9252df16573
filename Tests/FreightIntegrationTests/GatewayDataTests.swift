import Foundation
import FreightCore
import FreightTesting
import Testing

/// Messages between clusters (docs/gateways.md, "The data path"), as users send them: three clusters a–b–c of two
/// nodes each (a gateway and a second node), each with its own authority, over mutual TLS on 127.0.0.x.
@Suite(.serialized) struct GatewayDataTests {
    typealias Site = GatewayTests.Site

    /// The chain a–b–c with a second node in each cluster: c exports `ckpt/**`, a exports `results/**`, b passes on
    /// everything.
    static func chain(_ folder: String, extraArguments: [String] = []) async throws -> (a: Site, b: Site, c: Site) {
        for cluster in ["a", "b", "c"] { try await GatewayTests.certificates(cluster, in: folder) }
        let a = try await GatewayTests.site(
            "a", host: "127.0.0.41", folder: folder, peers: ["b"], dial: [], export: ["results/**"],
            worker: "127.0.0.51", extraArguments: extraArguments)
        do {
            let c = try await GatewayTests.site(
                "c", host: "127.0.0.43", folder: folder, peers: ["b"], dial: [], export: ["ckpt/**"],
                worker: "127.0.0.53", extraArguments: extraArguments)
            do {
                let b = try await GatewayTests.site(
                    "b", host: "127.0.0.42", folder: folder, peers: ["a", "c"], dial: [a.gateway, c.gateway],
                    export: ["**"], extraArguments: extraArguments)
                return (a, b, c)
            } catch {
                c.cluster.stop()
                throw error
            }
        } catch {
            a.cluster.stop()
            throw error
        }
    }

    /// Starts `a3`, a second gateway of cluster a on `host` that trusts `peer`'s authority, and returns its gateway
    /// address.
    static func secondGateway(of a: Site, host: String, peer: String, folder: String) async throws -> String {
        let issued = try await FreightProcess.run([
            "cert", "issue", "--cluster", "a", "--node", "a3", "--authority", "\(folder)/a-ca", "--out", "\(folder)/a3",
        ])
        #expect(issued.status == 0, "\(issued.stderr)")
        let second = try await a.cluster.startNode(
            name: "a3", host: host, join: [a.node.listen],
            extraArguments: [
                "--tls-authority", "\(folder)/a3/authority.pem", "--tls-cert", "\(folder)/a3/node.pem", "--tls-key",
                "\(folder)/a3/node-key.pem", "--gateway", "\(host):0", "--peer-authority",
                "\(folder)/\(peer)-ca/authority.pem", "--nvidia-smi", "off",
            ])
        try await a.cluster.waitForMesh()
        let line = second.process.stdoutLines.first { $0.contains("\"listening\"") } ?? ""
        return try #require(
            (try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["gateway"] as? String)
    }

    /// The endpoints a node's directory matches for `address` (`freight resolve --json`).
    static func resolved(_ address: String, at site: Site, node: String) async throws -> [[String: Any]] {
        let result = try await FreightProcess.run([
            "resolve", address, "--via", site.cluster.node(node).socket, "--json",
        ])
        guard result.status == 0 else { return [] }
        return result.stdout.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// A file from a's second node to a receiver on c's second node crosses a's gateway, b and c's gateway
    /// byte-identical; the delivery report names every node and gateway on the way; no gateway holds more than its
    /// budget.
    @Test func aFileCrossesTwoGatewaysByteIdentical() async throws {
        let folder = NSTemporaryDirectory() + "freight-gateway-data-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let (a, b, c) = try await Self.chain(folder)
        defer { for site in [a, b, c] { site.cluster.stop() } }
        let bytes: Int64 = 1 << 30
        let source = "\(folder)/source.bin"
        try await TestFiles.write(source, bytes: bytes, seed: 18)
        let receiver = try await c.cluster.receiver(
            "ckpt/eu/step-1", at: "c2", ["--out", "\(folder)/out", "--count", "1"], seenAt: "c")
        defer { receiver.stop() }
        try await GatewayTests.waitFor("a2 resolves ckpt/eu/step-1 to a's gateway") {
            try await Self.resolved("ckpt/eu/step-1", at: a, node: "a2").contains { $0["cluster"] as? String == "c" }
        }
        let remote = try #require(
            try await Self.resolved("ckpt/eu/step-1", at: a, node: "a2").first { $0["cluster"] as? String == "c" })
        #expect(remote["node"] as? String == "a" && remote["cluster_path"] as? [String] == ["b", "c"], "\(remote)")
        // --explain names the gateway hops: from a2 a hop to gateway a, from a itself the way out of the cluster.
        for node in ["a2", "a"] {
            let explained = try await FreightProcess.run([
                "resolve", "ckpt/eu/step-1", "--explain", "--size", "1GiB", "--via", a.cluster.node(node).socket,
                "--json",
            ])
            let plans = explained.stdout.compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
            let plan = plans.first { $0["cluster"] as? String == "c" }
            #expect(plan?["cluster_path"] as? [String] == ["b", "c"], "\(node): \(explained.stdout)")
            if node == "a" {
                #expect((plan?["notes"] as? [String])?.first?.contains("leaves cluster a") == true, "\(plans)")
            }
        }

        let send = try await FreightProcess.run(
            ["send", "ckpt/eu/step-1", "--file", source, "--via", a.worker.socket, "--json"], timeout: .seconds(300))
        #expect(send.status == 0, "\(send.stderr)")
        let report = try #require(
            try JSONSerialization.jsonObject(with: Data((send.stdout.first ?? "{}").utf8)) as? [String: Any])
        let delivery = try #require((report["deliveries"] as? [[String: Any]])?.first, "\(report)")
        #expect(delivery["path"] as? [String] == ["a2", "a", "b/b", "c/c", "c/c2"], "\(delivery)")
        #expect(try await receiver.waitForExit(timeout: .seconds(60)) == 0)
        let received = try #require(receiver.jsonLines.first { $0["event"] as? String == "received" })
        #expect(try await TestFiles.identical(source, received["file"] as? String ?? ""))
        // Cut-through: each gateway holds at most a window of the message, far below its size.
        for site in [a, b, c] {
            let status = try await site.cluster.status(site.cluster.cluster)
            let peak = status["peak_rss_bytes"] as? Int ?? .max
            #expect(peak < 256 << 20, "gateway \(site.cluster.cluster) peak RSS \(peak)")
        }
    }

    /// Export filters hold both ways: a message to an address the far cluster does not export never crosses (no
    /// route), and one it exports does, in either direction.
    @Test func exportFiltersHoldBothWays() async throws {
        let folder = NSTemporaryDirectory() + "freight-gateway-data-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let (a, b, c) = try await Self.chain(folder)
        defer { for site in [a, b, c] { site.cluster.stop() } }
        let secret = try await c.cluster.receiver("secret/plans", at: "c2", ["--count", "1"], seenAt: "c")
        defer { secret.stop() }
        let results = try await a.cluster.receiver("results/run-1", at: "a2", ["--count", "1"], seenAt: "a")
        defer { results.stop() }
        let private_ = try await a.cluster.receiver("private/x", at: "a2", ["--count", "1"], seenAt: "a")
        defer { private_.stop() }
        try await GatewayTests.waitFor("c2 resolves results/run-1 through c's gateway") {
            try await Self.resolved("results/run-1", at: c, node: "c2").contains { $0["cluster"] as? String == "a" }
        }
        // c → a, exported by a: delivered.
        let sent = try await FreightProcess.run([
            "send", "results/run-1", "--size", "1MiB", "--via", c.worker.socket, "--json",
        ])
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(try await results.waitForExit(timeout: .seconds(30)) == 0)
        // a → c secret/plans and c → a private/x: neither is exported, so neither crosses.
        for (address, site) in [("secret/plans", a), ("private/x", c)] {
            let refused = try await FreightProcess.run([
                "send", address, "--size", "1MiB", "--via", site.worker.socket, "--json",
            ])
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("no route to \(address)"), "\(refused.stderr)")
        }
        #expect(secret.isRunning && private_.isRunning)
    }

    /// Cluster a has two gateways, a and a3, both linked to b's gateway; a 2 GiB message from a2 to b2 is going
    /// through one of them when that gateway is killed: the message moves to the other gateway and resumes from where
    /// b's receiver is, and arrives byte-identical (docs/gateways.md, "Resume through another gateway").
    @Test func aGatewayKilledMidMessageHandsTheMessageToTheOther() async throws {
        let folder = NSTemporaryDirectory() + "freight-gateway-data-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for cluster in ["a", "b"] { try await GatewayTests.certificates(cluster, in: folder) }
        let a = try await GatewayTests.site(
            "a", host: "127.0.0.41", folder: folder, peers: ["b"], dial: [], export: [], worker: "127.0.0.51")
        defer { a.cluster.stop() }
        let secondGateway = try await Self.secondGateway(of: a, host: "127.0.0.61", peer: "b", folder: folder)
        let b = try await GatewayTests.site(
            "b", host: "127.0.0.42", folder: folder, peers: ["a"], dial: [a.gateway, secondGateway],
            export: ["ckpt/**"], worker: "127.0.0.52")
        defer { b.cluster.stop() }

        let receiver = try await b.cluster.receiver(
            "ckpt/big", at: "b2", ["--check", "--count", "1", "--rate", "512MiB"], seenAt: "b")
        defer { receiver.stop() }
        try await GatewayTests.waitFor("a2 reaches ckpt/big through both gateways") {
            try await Self.resolved("ckpt/big", at: a, node: "a2").filter { $0["cluster"] as? String == "b" }.count == 2
        }
        let send = try FreightProcess(["send", "ckpt/big", "--size", "2GiB", "--via", a.worker.socket, "--json"])
        defer { send.stop() }
        try await GatewayTests.waitFor("b2 takes 256 MiB") {
            try await b.cluster.status("b2")["bytes_in"] as? Int ?? 0 >= 256 << 20
        }
        // The gateway that carries it now: the one a2 sends it to. (The other may carry a detour of it from the
        // carrier, docs/wan.md: killing that one only ends the detour.)
        let peers = try await a.cluster.status("a2")["peers"] as? [[String: Any]] ?? []
        let carrier = peers.filter { ["a", "a3"].contains($0["name"] as? String ?? "") }
            .max { $0["bytes_out"] as? Int ?? 0 < $1["bytes_out"] as? Int ?? 0 }
        let killed = try #require(carrier?["name"] as? String, "one of a's gateways carries the message")
        #expect(carrier?["bytes_out"] as? Int ?? 0 >= 256 << 20, "a2 sent the message to \(killed): \(peers)")
        #expect(send.isRunning, "the message must still be going when its gateway dies")
        a.cluster.node(killed).process.kill(SIGKILL)
        #expect(try await send.waitForExit(timeout: .seconds(120)) == 0, "\(send.stderr)")
        #expect(try await receiver.waitForExit(timeout: .seconds(30)) == 0, "\(receiver.stderr)")
        let received = receiver.jsonLines.first { $0["event"] as? String == "received" }
        #expect(received?["checked"] as? Bool == true, "byte-identical")
        if received?["checked"] as? Bool != true {
            for (site, node) in [(a, "a2"), (a, "a3"), (a, "a"), (b, "b"), (b, "b2")] {
                print("log of \(node):\n\(site.cluster.node(node).process.stderr.suffix(12000))")
            }
        }
        let other = killed == "a" ? "a3" : "a"
        let delivery = (send.jsonLines.first?["deliveries"] as? [[String: Any]])?.first
        #expect(delivery?["path"] as? [String] == ["a2", other, "b/b", "b/b2"], "\(delivery ?? [:])")
        // Resumed once, mid-way: from where b's receiver was when the message moved.
        let resumes = delivery?["resumed_at"] as? [Int] ?? []
        #expect(resumes.count == 1 && resumes.allSatisfy { $0 >= 256 << 20 && $0 < 2 << 30 }, "\(resumes)")
        print("gateway failover: \(killed) killed, the message resumed through \(other) at \(resumes)")
    }

    /// Cluster a has two gateways, `a` linked to b and `a3` linked to c: b learns c's routes through a (a3 reached c,
    /// `a` passes on what a3 put in a's directory), and a message from b to c crosses both of a's gateways
    /// (docs/gateways.md, "Several gateways"). When a3 goes, b's route to c is withdrawn.
    @Test func aClusterWithTwoGatewaysCarriesWhatEachLearned() async throws {
        let folder = NSTemporaryDirectory() + "freight-gateway-data-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for cluster in ["a", "b", "c"] { try await GatewayTests.certificates(cluster, in: folder) }
        let a = try await GatewayTests.site(
            "a", host: "127.0.0.44", folder: folder, peers: ["b"], dial: [], export: ["ckpt/**"])
        defer { a.cluster.stop() }
        let secondGateway = try await Self.secondGateway(of: a, host: "127.0.0.64", peer: "c", folder: folder)
        let b = try await GatewayTests.site(
            "b", host: "127.0.0.45", folder: folder, peers: ["a"], dial: [a.gateway], export: [])
        defer { b.cluster.stop() }
        let c = try await GatewayTests.site(
            "c", host: "127.0.0.46", folder: folder, peers: ["a"], dial: [secondGateway], export: ["ckpt/**"])
        defer { c.cluster.stop() }

        let receiver = try await c.cluster.receiver(
            "ckpt/x", at: "c", ["--check", "--count", "1"], seenAt: "c")
        defer { receiver.stop() }
        do {
            try await GatewayTests.waitFor("b learns ckpt/x in c through a") {
                try await GatewayTests.routes(b)["ckpt/x"]?.path == ["a", "c"]
            }
        } catch {
            for (site, node) in [(a, "a"), (a, "a3"), (b, "b"), (c, "c")] {
                print("status of \(node): \(try await site.cluster.status(node)["routes"] ?? "-")")
                print("log of \(node):\n\(site.cluster.node(node).process.stderr.suffix(3000))")
            }
            throw error
        }
        // At `a`, the route is a3's, through the directory.
        let status = try await a.cluster.status("a")
        let learned = (status["routes"] as? [[String: Any]] ?? []).first { $0["origin"] as? String == "c" }
        #expect(learned?["through_gateway"] as? String == "a3", "\(learned ?? [:])")

        let send = try await FreightProcess.run([
            "send", "ckpt/x", "--size", "64MiB", "--via", b.cluster.node("b").socket, "--json",
        ])
        #expect(send.status == 0, "\(send.stderr)")
        #expect(try await receiver.waitForExit(timeout: .seconds(30)) == 0, "\(receiver.stderr)")
        let received = receiver.jsonLines.first { $0["event"] as? String == "received" }
        #expect(received?["checked"] as? Bool == true, "byte-identical")
        let report = send.stdout.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let delivery = (report.first?["deliveries"] as? [[String: Any]])?.first
        #expect(delivery?["path"] as? [String] == ["b", "a/a", "a/a3", "c/c"], "\(delivery ?? [:])")

        // a3 goes: b's route to c is withdrawn.
        a.cluster.node("a3").process.kill(SIGKILL)
        try await GatewayTests.waitFor("b's route to c is withdrawn") {
            try await GatewayTests.routes(b)["ckpt/x"] == nil
        }
    }

    /// The routes a gateway reaches travel in an etcd directory as in the mesh (all three clusters keep theirs in one
    /// etcd, each under its own prefix), and a slow receiver in c slows the sender in a: while a receiver at 64 MiB/s
    /// takes 256 MiB, the sender's node is never more than one window (32 MiB) and the sampling ahead of it.
    @Test func aSlowReceiverInCSlowsTheSenderInAOverAnEtcdDirectory() async throws {
        let etcd = try await EtcdServer.start()
        defer { etcd.stop() }
        let folder = NSTemporaryDirectory() + "freight-gateway-data-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let (a, b, c) = try await Self.chain(folder, extraArguments: ["--directory", etcd.url, "--lease-ttl", "5"])
        defer { for site in [a, b, c] { site.cluster.stop() } }
        let receiver = try await c.cluster.receiver(
            "ckpt/eu/slow", at: "c2", ["--check", "--count", "1", "--rate", "64MiB"], seenAt: "c")
        defer { receiver.stop() }
        try await GatewayTests.waitFor("a2 resolves ckpt/eu/slow to a's gateway through etcd") {
            try await Self.resolved("ckpt/eu/slow", at: a, node: "a2").contains { $0["cluster"] as? String == "c" }
        }
        let send = try FreightProcess(["send", "ckpt/eu/slow", "--size", "256MiB", "--via", a.worker.socket, "--json"])
        defer { send.stop() }
        try await GatewayTests.waitFor("c2 takes 64 MiB") {
            try await c.cluster.status("c2")["bytes_in"] as? Int ?? 0 >= 64 << 20
        }
        var samples: [(sent: Int, received: Int)] = []
        for _ in 0..<5 {
            // Both at once: asked one after the other on a loaded machine, the sender moves on between the two.
            async let receivedStatus = c.cluster.status("c2")
            async let sentStatus = a.cluster.status("a2")
            let received = try await receivedStatus["bytes_in"] as? Int ?? 0
            let sent = try await sentStatus["bytes_out"] as? Int ?? 0
            samples.append((sent, received))
            try await Task.sleep(for: .milliseconds(200))
        }
        print("slow receiver: a2 sent, c2 received (MiB): \(samples.map { "\($0.sent >> 20)/\($0.received >> 20)" })")
        // While the receiver has more than a window and a half to go, the sender has not finished: it waits. (Beside
        // the whole test run the samples, each a status call, can be a second apart, and the receiver near its end.)
        let early = samples.filter { $0.received < 200 << 20 }
        #expect(!early.isEmpty && early.allSatisfy { $0.sent < 256 << 20 }, "the sender waits for the receiver")
        #expect(samples.allSatisfy { $0.sent - $0.received <= 48 << 20 }, "at most a window ahead")
        #expect(try await send.waitForExit(timeout: .seconds(60)) == 0, "\(send.stderr)")
        #expect(try await receiver.waitForExit(timeout: .seconds(30)) == 0, "\(receiver.stderr)")
        let received = receiver.jsonLines.first { $0["event"] as? String == "received" }
        #expect(received?["checked"] as? Bool == true, "byte-identical")
        let delivery = (send.jsonLines.first?["deliveries"] as? [[String: Any]])?.first
        #expect(delivery?["path"] as? [String] == ["a2", "a", "b/b", "c/c", "c/c2"], "\(delivery ?? [:])")
    }
}
