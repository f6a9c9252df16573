import Foundation
import FreightCore
import FreightTesting
import Testing

/// The admin port (docs/observability.md): `/metrics` that promtool accepts and a real Prometheus scrapes, and
/// `/healthz` and `/readyz` through an etcd outage, on real `freight node` processes.
@Suite(.serialized) struct AdminTests {
    /// Each node's admin address, from the line it prints once its admin port listens.
    static func admin(_ node: ProcessCluster.Node) async throws -> String {
        let line = try await node.process.waitForLine { $0.contains("\"admin\"") }
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        return object["admin"] as! String
    }

    /// The value of the sample `series` (name and labels as exposed) in an exposition, if present.
    static func sample(_ exposition: String, _ series: String) -> Double? {
        for line in exposition.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1).split(separator: " ")[0])
        }
        return nil
    }

    /// `promtool check metrics` on an exposition: its exit status and what it said.
    static func promtool(_ exposition: String) async throws -> (status: Int32, output: String) {
        let file = NSTemporaryDirectory() + "freight-metrics-\(UInt32.random(in: 0...UInt32.max)).prom"
        try exposition.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let check = try FreightProcess(["-c", "promtool check metrics < \(file) 2>&1"], executable: "/bin/sh")
        let status = try await check.waitForExit(timeout: .seconds(30))
        return (status, check.stdoutLines.joined(separator: "\n"))
    }

    /// Two nodes on etcd with admin ports: after three 1 MiB messages from n1 to n2, each node's `/metrics` counts
    /// them (outcome, duration histogram of their size class, the peer link, the directory up) and passes
    /// `promtool check metrics`; `/healthz` and `/readyz` answer 200. etcd stops: `/readyz` answers 503 naming the
    /// directory, `/healthz` stays 200 (the node is alive; a restart would not help), `freight_directory_up` is 0.
    /// etcd comes back: ready again.
    @Test func metricsAndProbesThroughAnEtcdOutage() async throws {
        try #require(EtcdServer.available, "etcd is installed by scripts/test.sh")
        var etcd = try await EtcdServer.start()
        let cluster: ProcessCluster
        do {
            cluster = try await ProcessCluster.start(
                nodes: 2, join: false,
                extraArguments: ["--directory", etcd.url, "--lease-ttl", "2", "--admin", "127.0.0.1:0"])
        } catch {
            etcd.stop()
            throw error
        }
        defer {
            cluster.stop()
            etcd.stop()
        }
        let admin1 = try await Self.admin(cluster.node("n1"))
        let admin2 = try await Self.admin(cluster.node("n2"))
        for admin in [admin1, admin2] {
            let alive = try await HTTPGet.get(admin, "/healthz")
            #expect(alive.status == 200 && alive.body == "alive\n", "\(admin) /healthz: \(alive.status) \(alive.body)")
            let ready = try await HTTPGet.get(admin, "/readyz")
            #expect(ready.status == 200 && ready.body == "ready\n", "\(admin) /readyz: \(ready.status) \(ready.body)")
            let missing = try await HTTPGet.get(admin, "/nothing")
            #expect(missing.status == 404)
        }

        let receiver = try await cluster.receiver("metrics/in", at: "n2", ["--check"], seenAt: "n1")
        defer { receiver.stop() }
        let sent = try await FreightProcess.run([
            "send", "metrics/in", "--size", "1MiB", "--count", "3", "--via", cluster.node("n1").socket,
        ])
        try #require(sent.status == 0, "\(sent.stderr)")

        for (name, admin, peer) in [("n1", admin1, "n2"), ("n2", admin2, "n1")] {
            let metrics = try await HTTPGet.get(admin, "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
            let text = metrics.body
            let delivered = Self.sample(text, #"freight_messages_total{outcome="delivered"}"#) ?? 0
            #expect(delivered >= 3, "\(name): delivered \(delivered)\n\(text)")
            let timed = Self.sample(text, #"freight_message_duration_seconds_count{size="le_1MiB"}"#) ?? 0
            #expect(timed >= 3, "\(name): durations of 1 MiB messages \(timed)")
            let rates = Self.sample(text, #"freight_message_throughput_bytes_per_second_count{size="le_1MiB"}"#) ?? 0
            #expect(rates >= 3, "\(name): throughputs of 1 MiB messages \(rates)")
            #expect((Self.sample(text, #"freight_peer_stripes_up{peer="\#(peer)"}"#) ?? 0) >= 1, "\(name)\n\(text)")
            #expect(Self.sample(text, #"freight_directory_up{backend="etcd"}"#) == 1, "\(name)")
            let sentBytes = Self.sample(text, "freight_node_sent_bytes_total") ?? 0
            let receivedBytes = Self.sample(text, "freight_node_received_bytes_total") ?? 0
            #expect(sentBytes + receivedBytes >= Double(3 << 20), "\(name): body bytes sent and received")
            #expect((Self.sample(text, "freight_memory_budget_bytes") ?? 0) > 0)
            // Messages per link by direction and outcome: n1 took them from its app and sent them to n2, which took
            // them from n1 and gave them to its app.
            let (appDirection, peerDirection) = name == "n1" ? ("in", "out") : ("out", "in")
            for (kind, link, direction) in [("app", "apps", appDirection), ("peer", peer, peerDirection)] {
                let series =
                    #"freight_link_messages_total{link_kind="\#(kind)",link="\#(link)",direction="\#(direction)",outcome="delivered"}"#
                #expect((Self.sample(text, series) ?? 0) >= 3, "\(name): \(series)\n\(text)")
                let bytes =
                    #"freight_link_message_bytes_total{link_kind="\#(kind)",link="\#(link)",direction="\#(direction)"}"#
                #expect((Self.sample(text, bytes) ?? 0) >= Double(3 << 20), "\(name): \(bytes)")
            }
            if name == "n1" {
                let rail = Self.sample(text, #"freight_peer_rail_sent_bytes_total{peer="n2",rail="0"}"#) ?? 0
                #expect(rail >= Double(3 << 20), "n1: bytes to n2 on its one rail \(rail)")
            }
            #expect(Self.sample(text, "freight_credit_stalls_total") != nil, "\(name): credit stalls counted")
            // Every label value is bounded: no address, app or message id appears in a series.
            #expect(!text.contains("metrics/in"), "\(name): an address became a label")
            let lint = try await Self.promtool(text)
            #expect(lint.status == 0, "\(name): promtool check metrics: \(lint.output)")
        }

        etcd.stop(keepData: true)
        let notReady = try await DirectoryTests.eventually(timeout: .seconds(20)) {
            let ready = try await HTTPGet.get(admin1, "/readyz")
            return ready.status == 503 && ready.body.contains("directory etcd unreachable")
        }
        let whileDown = try await HTTPGet.get(admin1, "/readyz")
        #expect(notReady, "n1 /readyz with etcd down: \(whileDown.status) \(whileDown.body)")
        #expect(try await HTTPGet.get(admin1, "/healthz").status == 200, "alive while etcd is down")
        let down = try await HTTPGet.get(admin1, "/metrics")
        #expect(Self.sample(down.body, #"freight_directory_up{backend="etcd"}"#) == 0)

        etcd = try await EtcdServer.start(
            clientPort: etcd.clientPort, peerPort: etcd.peerPort, dataDirectory: etcd.dataDirectory)
        let readyAgain = try await DirectoryTests.eventually(timeout: .seconds(30)) {
            try await HTTPGet.get(admin1, "/readyz").status == 200
        }
        let afterwards = try await HTTPGet.get(admin1, "/readyz")
        #expect(readyAgain, "n1 /readyz with etcd back: \(afterwards.status) \(afterwards.body)")
    }

    /// A real Prometheus scrapes two nodes' admin ports and answers PromQL about them: both targets up, and the
    /// messages delivered summed across the nodes.
    @Test func prometheusScrapesTwoNodes() async throws {
        try #require(PrometheusServer.available, "prometheus is installed by scripts/test.sh")
        let cluster = try await ProcessCluster.start(nodes: 2, extraArguments: ["--admin", "127.0.0.1:0"])
        defer { cluster.stop() }
        let targets = [try await Self.admin(cluster.node("n1")), try await Self.admin(cluster.node("n2"))]
        let prometheus = try await PrometheusServer.start(targets: targets)
        defer { prometheus.stop() }
        let receiver = try await cluster.receiver("scraped/in", at: "n2", ["--check"], seenAt: "n1")
        defer { receiver.stop() }
        let sent = try await FreightProcess.run([
            "send", "scraped/in", "--size", "4MiB", "--count", "2", "--via", cluster.node("n1").socket,
        ])
        try #require(sent.status == 0, "\(sent.stderr)")

        var last: [[String: Any]] = []
        let up = try await DirectoryTests.eventually(timeout: .seconds(30)) {
            last = try await prometheus.query(#"count(up{job="freight"} == 1)"#)
            return Self.scalar(last) == 2
        }
        #expect(up, "both admin ports scraped: \(last); prometheus log: \(prometheus.log.suffix(2000))")
        let counted = try await DirectoryTests.eventually(timeout: .seconds(30)) {
            last = try await prometheus.query(#"sum(freight_messages_total{job="freight",outcome="delivered"})"#)
            return (Self.scalar(last) ?? 0) >= 4
        }
        // Each message ends at both nodes: n1 (from the app) and n2 (to the app).
        #expect(counted, "messages delivered, summed over both nodes: \(last)")
        last = try await prometheus.query(#"freight_peer_stripes_up{job="freight"}"#)
        #expect(last.count == 2, "one peer link series per node: \(last)")

        // `freight top` shows the same node from its socket: two frames, the second with rates.
        let top = try await FreightProcess.run([
            "top", "--via", cluster.node("n1").socket, "--count", "2", "--interval", "0.2",
        ])
        #expect(top.status == 0, "\(top.stderr)")
        let frames = top.stdout.joined(separator: "\n")
        #expect(frames.components(separatedBy: "node n1 of cluster test").count == 3, "two frames:\n\(frames)")
        #expect(top.stdout.contains { $0.hasPrefix("n2 ") && $0.hasSuffix("B/s") }, "n2's link with a rate:\n\(frames)")
    }

    /// The value of a one-sample PromQL result.
    static func scalar(_ result: [[String: Any]]) -> Double? {
        guard result.count == 1, let value = result[0]["value"] as? [Any], value.count == 2,
            let text = value[1] as? String
        else { return nil }
        return Double(text)
    }
}
