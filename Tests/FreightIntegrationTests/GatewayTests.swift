import Foundation
import FreightCore
import FreightTesting
import Testing

/// Gateways (docs/gateways.md) as an operator runs them: three clusters a, b and c, each with its own authority made
/// by `freight cert`, one gateway node each on 127.0.0.41-43, linked in a chain a–b–c over mutual TLS.
@Suite(.serialized) struct GatewayTests {
    /// A cluster of one gateway node: its process cluster and where its gateway listens.
    struct Site {
        let cluster: ProcessCluster
        let gateway: String
        var node: ProcessCluster.Node { cluster.node(cluster.cluster) }
        /// The cluster's second node (`CLUSTER2`), when it has one.
        var worker: ProcessCluster.Node { cluster.node("\(cluster.cluster)2") }
    }

    /// Makes the authority of `cluster`, its gateway's certificate and its second node's under `folder`.
    static func certificates(_ cluster: String, in folder: String) async throws {
        for arguments in [
            ["cert", "authority", "--out", "\(folder)/\(cluster)-ca"],
            [
                "cert", "issue", "--cluster", cluster, "--node", cluster, "--authority", "\(folder)/\(cluster)-ca",
                "--out", "\(folder)/\(cluster)",
            ],
            [
                "cert", "issue", "--cluster", cluster, "--node", "\(cluster)2", "--authority",
                "\(folder)/\(cluster)-ca", "--out", "\(folder)/\(cluster)2",
            ],
        ] {
            let result = try await FreightProcess.run(arguments)
            #expect(result.status == 0, "\(result.stderr)")
        }
    }

    /// Starts the gateway node of `cluster` (named as its cluster) on `host`, trusting the authorities of `peers`;
    /// with `worker`, a second node `CLUSTER2` there that joins it.
    static func site(
        _ cluster: String, host: String, folder: String, peers: [String], dial: [String], export: [String],
        worker: String? = nil, extraArguments: [String] = [], gatewayArguments: [String] = [],
        environment: [String: String] = [:], executable: String? = nil
    ) async throws -> Site {
        let processes = try ProcessCluster(cluster: cluster, executable: executable, environment: environment)
        do {
            var arguments = [
                "--tls-authority", "\(folder)/\(cluster)/authority.pem", "--tls-cert", "\(folder)/\(cluster)/node.pem",
                "--tls-key", "\(folder)/\(cluster)/node-key.pem", "--gateway", "\(host):0", "--nvidia-smi", "off",
            ]
            for peer in peers { arguments += ["--peer-authority", "\(folder)/\(peer)-ca/authority.pem"] }
            for address in dial { arguments += ["--gateway-peer", address] }
            for pattern in export { arguments += ["--export", pattern] }
            let node = try await processes.startNode(
                name: cluster, host: host, join: [], extraArguments: arguments + extraArguments + gatewayArguments)
            let line = node.process.stdoutLines.first { $0.contains("\"listening\"") } ?? ""
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            let gateway = try #require(object?["gateway"] as? String)
            if let worker {
                let name = "\(cluster)2"
                _ = try await processes.startNode(
                    name: name, host: worker, join: [node.listen],
                    extraArguments: [
                        "--tls-authority", "\(folder)/\(name)/authority.pem", "--tls-cert",
                        "\(folder)/\(name)/node.pem", "--tls-key", "\(folder)/\(name)/node-key.pem", "--nvidia-smi",
                        "off",
                    ] + extraArguments)
                try await processes.waitForMesh()
            }
            return Site(cluster: processes, gateway: gateway)
        } catch {
            processes.stop()
            throw error
        }
    }

    /// The routes a node lists in its status: pattern → (origin, path, cost).
    static func routes(_ site: Site) async throws -> [String: (origin: String, path: [String], cost: Int)] {
        let status = try await site.cluster.status(site.cluster.cluster)
        var routes: [String: (origin: String, path: [String], cost: Int)] = [:]
        for route in status["routes"] as? [[String: Any]] ?? [] {
            routes[route["pattern"] as? String ?? ""] = (
                route["origin"] as? String ?? "", route["path"] as? [String] ?? [], route["cost"] as? Int ?? 0
            )
        }
        return routes
    }

    static func waitFor(
        _ what: String, timeout: Duration = .seconds(30), _ condition: () async throws -> Bool
    ) async throws {
        let deadline = ContinuousClock.now + timeout
        while try await !condition() {
            guard ContinuousClock.now < deadline else { throw FreightError(.internalError, "never: \(what)") }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// a–b–c: a learns c's exported patterns through b, with the path [b, c]; what a cluster does not export never
    /// leaves it; when b's gateway goes away its routes are withdrawn at a.
    @Test func aChainAdvertisesRoutesThroughTheMiddleAndWithdrawsThem() async throws {
        let folder = NSTemporaryDirectory() + "freight-gateways-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for cluster in ["a", "b", "c"] { try await Self.certificates(cluster, in: folder) }
        let a = try await Self.site(
            "a", host: "127.0.0.41", folder: folder, peers: ["b"], dial: [], export: ["jobs/**"])
        defer { a.cluster.stop() }
        let c = try await Self.site(
            "c", host: "127.0.0.43", folder: folder, peers: ["b"], dial: [], export: ["ckpt/eu/**"])
        defer { c.cluster.stop() }
        let b = try await Self.site(
            "b", host: "127.0.0.42", folder: folder, peers: ["a", "c"], dial: [a.gateway, c.gateway],
            export: ["**"])
        defer { b.cluster.stop() }

        // Receivers in c: one under the exported prefix, one outside it; one in a.
        let exported = try await c.cluster.receiver("ckpt/eu/step-1", at: "c", seenAt: "c")
        defer { exported.stop() }
        let hidden = try await c.cluster.receiver("ckpt/us/step-1", at: "c", seenAt: "c")
        defer { hidden.stop() }
        let jobs = try await a.cluster.receiver("jobs/train", at: "a", seenAt: "a")
        defer { jobs.stop() }

        try await Self.waitFor("a learns c's exported pattern through b") {
            try await Self.routes(a)["ckpt/eu/step-1"] != nil
        }
        let route = try #require(try await Self.routes(a)["ckpt/eu/step-1"])
        #expect(route.origin == "c" && route.path == ["b", "c"], "\(route)")
        // Costs follow measured round trips, and a hears b's changes a moment after b makes them (gathered for
        // 100 ms, and only changes of a quarter or more): compare the two once a has heard b's latest.
        try await Self.waitFor("a's cost adds its link to b to b's cost") {
            let atA = try await Self.routes(a)["ckpt/eu/step-1"]?.cost ?? 0
            let atB = try await Self.routes(b)["ckpt/eu/step-1"]?.cost ?? .max
            return atA > atB
        }
        try await Self.waitFor("c learns a's jobs through b") {
            try await Self.routes(c)["jobs/train"]?.path == ["b", "a"]
        }
        // c exports ckpt/eu/** only: its other receiver is known to nobody outside c.
        #expect(try await Self.routes(a)["ckpt/us/step-1"] == nil)
        #expect(try await Self.routes(b)["ckpt/us/step-1"] == nil)
        let status = try await b.cluster.status("b")
        let links = status["gateway_links"] as? [[String: Any]] ?? []
        #expect(Set(links.compactMap { $0["cluster"] as? String }) == ["a", "c"], "\(links)")
        // Each link measures its round trip (ping and pong about once a second), and its cost follows it.
        try await Self.waitFor("b's links are timed") {
            let links = try await b.cluster.status("b")["gateway_links"] as? [[String: Any]] ?? []
            return links.count == 2
                && links.allSatisfy {
                    let (rtt, cost) = ($0["rtt_us"] as? Int ?? 0, $0["cost"] as? Int ?? .max)
                    return rtt > 0 && cost <= 2 * rtt + 200
                }
        }

        // b's gateway goes away: a withdraws what it learned through it.
        b.cluster.stop()
        try await Self.waitFor("a withdraws c's routes") { try await Self.routes(a).isEmpty }
    }

    /// A ring a–b–c–d–a: a reaches c one way; when the cluster in the middle of that way dies (its gateway killed:
    /// its links close) or falls silent (stopped: its links stay open and say nothing, and the hold time of 3 s
    /// finds it), a takes the other way. Prints how long that took, from the signal to a's new route.
    @Test(arguments: [SIGKILL, SIGSTOP])
    func aRingMovesToTheOtherWayWhenTheMiddleDies(signal: Int32) async throws {
        let folder = NSTemporaryDirectory() + "freight-gateways-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for cluster in ["a", "b", "c", "d"] { try await Self.certificates(cluster, in: folder) }
        // Started in an order that lets each dial the next one around the ring, d last closing it to a.
        let a = try await Self.site(
            "a", host: "127.0.0.41", folder: folder, peers: ["b", "d"], dial: [], export: ["**"])
        defer { a.cluster.stop() }
        let b = try await Self.site(
            "b", host: "127.0.0.42", folder: folder, peers: ["a", "c"], dial: [a.gateway], export: ["**"])
        defer { b.cluster.stop() }
        let c = try await Self.site(
            "c", host: "127.0.0.43", folder: folder, peers: ["b", "d"], dial: [b.gateway], export: ["**"])
        defer { c.cluster.stop() }
        let d = try await Self.site(
            "d", host: "127.0.0.44", folder: folder, peers: ["c", "a"], dial: [c.gateway, a.gateway], export: ["**"])
        defer { d.cluster.stop() }
        let receiver = try await c.cluster.receiver("ckpt/eu/x", at: "c", seenAt: "c")
        defer { receiver.stop() }
        try await Self.waitFor("a reaches c") { try await Self.routes(a)["ckpt/eu/x"] != nil }
        // Let both ways be known everywhere before one is cut.
        try await Self.waitFor("b and d reach c") {
            let atB = try await Self.routes(b)["ckpt/eu/x"]
            let atD = try await Self.routes(d)["ckpt/eu/x"]
            return atB != nil && atD != nil
        }
        let before = try #require(try await Self.routes(a)["ckpt/eu/x"])
        #expect(before.path.count == 2 && before.path.last == "c", "\(before)")
        let (middle, other) = before.path.first == "b" ? (b, "d") : (d, "b")
        let killed = ContinuousClock.now
        middle.node.process.kill(signal)
        defer { middle.node.process.kill(SIGCONT) }
        try await Self.waitFor("a moves to the other way", timeout: .seconds(20)) {
            try await Self.routes(a)["ckpt/eu/x"]?.path == [other, "c"]
        }
        let took = ContinuousClock.now - killed
        let how = signal == SIGKILL ? "killed" : "stopped"
        print("ring failover: a's route to c moved from \(before.path) to [\(other), c] \(took) after \(how)")
        #expect(took < .seconds(signal == SIGKILL ? 5 : 8), "failover took \(took)")
    }

    /// 300 strangers from one address that connect to a's gateway port and say nothing hold at most 8 of its slots,
    /// each for 5 s (the rest are refused at once): b's gateway still links, and every stranger is closed.
    @Test func strangersOnTheGatewayPortDoNotKeepPeersOut() async throws {
        let folder = NSTemporaryDirectory() + "freight-gateways-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for cluster in ["a", "b"] { try await Self.certificates(cluster, in: folder) }
        let a = try await Self.site(
            "a", host: "127.0.0.41", folder: folder, peers: ["b"], dial: [], export: ["**"])
        defer { a.cluster.stop() }
        let parts = a.gateway.split(separator: ":")
        let (host, port) = (String(parts[0]), Int(parts[1])!)
        let strangers = await Strangers.onThread {
            Strangers.open(count: 300, host: host, port: port, sources: ["127.0.0.45"], prefix: [])
        }
        defer { Strangers.closeAll(strangers) }
        #expect(strangers.count == 300)
        // All but 8 are refused at once, well before the 5 s that the 8 may take to say HELLO.
        try await Self.waitFor("all but 8 strangers refused at once", timeout: .seconds(4)) {
            Strangers.closedCount(strangers) >= strangers.count - 8
        }
        let b = try await Self.site(
            "b", host: "127.0.0.42", folder: folder, peers: ["a"], dial: [a.gateway], export: ["**"])
        defer { b.cluster.stop() }
        let receiver = try await b.cluster.receiver("b/inbox", at: "b", seenAt: "b")
        defer { receiver.stop() }
        try await Self.waitFor("a learns b's pattern beside the strangers") {
            try await Self.routes(a)["b/inbox"] != nil
        }
        try await Self.waitFor("every stranger is closed", timeout: .seconds(20)) {
            Strangers.closedCount(strangers) == strangers.count
        }
    }

    /// A gateway whose certificate no authority a trusts is refused, and a's log says why; nothing is learned.
    @Test func aGatewayOfAnUntrustedAuthorityIsRefusedWithTheReason() async throws {
        let folder = NSTemporaryDirectory() + "freight-gateways-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for cluster in ["a", "b", "x"] { try await Self.certificates(cluster, in: folder) }
        // a trusts b's authority only; x's gateway dials a.
        let a = try await Self.site(
            "a", host: "127.0.0.41", folder: folder, peers: ["b"], dial: [], export: ["**"])
        defer { a.cluster.stop() }
        let x = try await Self.site(
            "x", host: "127.0.0.44", folder: folder, peers: ["a"], dial: [a.gateway], export: ["**"])
        defer { x.cluster.stop() }
        let receiver = try await x.cluster.receiver("x/inbox", at: "x", seenAt: "x")
        defer { receiver.stop() }
        #expect(
            try await a.node.process.waitForStderr(
                containing: "not signed by an authority this gateway trusts", timeout: .seconds(20)),
            "\(a.node.process.stderr.suffix(2000))")
        #expect(try await Self.routes(a).isEmpty)
        let status = try await a.cluster.status("a")
        #expect((status["gateway_links"] as? [[String: Any]] ?? []).isEmpty)
    }
}
