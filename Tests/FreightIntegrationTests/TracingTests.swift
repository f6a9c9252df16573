import Foundation
import FreightCore
import FreightTesting
import Testing

/// One trace per message across every hop (docs/observability.md, "Traces"), exported over OTLP/gRPC by real
/// `freight` processes to an OTLP receiver on loopback (scripts/otlp-receiver.py: PyPI's opentelemetry-proto and
/// grpcio decoding the real protocol, as a Jaeger or a Collector would).
@Suite(.serialized) struct TracingTests {
    /// The receiver, started on a port of its own; its spans go to `file` as JSON lines.
    static func otlpReceiver(writingTo file: String) async throws -> (FreightProcess, String) {
        guard let root = FreightProcess.repositoryRoot else {
            throw FreightError(.internalError, "no repository root for scripts/otlp-receiver.py")
        }
        let receiver = try FreightProcess(
            ["\(root)/scripts/otlp-receiver.py", "--listen", "127.0.0.1:0", "--out", file],
            executable: FreightProcess.pythonPath)
        do {
            let line = try await receiver.waitForLine { $0.contains("\"listening\"") }
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            return (receiver, "http://127.0.0.1:\(object["port"] as! Int)")
        } catch {
            receiver.stop()
            throw error
        }
    }

    /// The spans in `file` once every one of `services` has exported one, or what came within 20 s (the nodes
    /// export within their batch delay, 1 s; apps flush as they exit).
    static func spans(in file: String, from services: [String]) async throws -> [[String: Any]] {
        var spans: [[String: Any]] = []
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            spans = Self.spans(in: file)
            if Set(spans.compactMap { $0["service"] as? String }).isSuperset(of: services) { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        return spans
    }

    static func spans(in file: String) -> [[String: Any]] {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    /// `freight send` from n1 to `freight recv` on n2, every process with `OTEL_EXPORTER_OTLP_ENDPOINT`: four spans
    /// in one trace, each the child of the one before: the sending app's, n1's, n2's, the receiving app's; the
    /// nodes' spans carry the address, size, route, upstream link, chunks, outcome and throughput. A 256 B message
    /// too, which would otherwise pass the nodes as a SMALL entry with no flow of its own.
    @Test(arguments: [(4 << 20, 4), (256, 1)])
    func oneTraceAcrossTwoNodesAndBothApps(size: Int, chunks: Int) async throws {
        let file = NSTemporaryDirectory() + "freight-spans-\(UInt32.random(in: 0...UInt32.max)).jsonl"
        defer { try? FileManager.default.removeItem(atPath: file) }
        let (collector, endpoint) = try await Self.otlpReceiver(writingTo: file)
        defer { collector.stop() }
        let environment = ["OTEL_EXPORTER_OTLP_ENDPOINT": endpoint]
        let cluster = try await ProcessCluster.start(nodes: 2, environment: environment)
        defer { cluster.stop() }
        let receiver = try await cluster.receiver("traced/in", at: "n2", ["--check", "--count", "1"])
        defer { receiver.stop() }
        let sent = try await FreightProcess.run(
            ["send", "traced/in", "--size", "\(size)", "--via", cluster.node("n1").socket], environment: environment)
        try #require(sent.status == 0, "\(sent.stderr)")
        #expect(try await receiver.waitForExit(timeout: .seconds(30)) == 0, "\(receiver.stderr)")

        let services = ["freight-send", "freight-node-n1", "freight-node-n2", "freight-recv"]
        let spans = try await Self.spans(in: file, from: services)
        let byService = Dictionary(spans.map { ($0["service"] as? String ?? "", $0) }) { first, _ in first }
        let chain = services.compactMap { byService[$0] }
        try #require(chain.count == 4, "spans of \(services), got: \(spans)\ncollector: \(collector.stderr)")
        #expect(spans.count == 4, "one span per party: \(spans)")

        let traces = Set(chain.map { $0["trace_id"] as! String })
        #expect(traces.count == 1, "one trace: \(traces)")
        #expect(chain[0]["parent_span_id"] as? String == "", "the sending app's span is the root")
        for (parent, child) in zip(chain, chain.dropFirst()) {
            #expect(
                child["parent_span_id"] as? String == parent["span_id"] as? String,
                "\(child["service"]!)'s parent is \(parent["service"]!)'s span")
        }
        for (node, upstream) in [("freight-node-n1", "app"), ("freight-node-n2", "node n1")] {
            let attributes = try #require(byService[node]?["attributes"] as? [String: Any])
            #expect(attributes["freight.address"] as? String == "traced/in", "\(node): \(attributes)")
            #expect(attributes["freight.size"] as? Int == size)
            #expect(attributes["freight.bytes"] as? Int == size)
            #expect(attributes["freight.chunks"] as? Int == chunks)
            #expect(attributes["freight.outcome"] as? String == "delivered")
            #expect((attributes["freight.throughput_bytes_per_second"] as? Double ?? 0) > 0)
            #expect((attributes["freight.upstream"] as? String ?? "").hasPrefix(upstream), "\(node): \(attributes)")
            #expect(!((attributes["freight.route"] as? [Any]) ?? []).isEmpty, "\(node): \(attributes)")
        }
        #expect(chain.allSatisfy { $0["status"] as? Int != 2 }, "no span failed: \(chain)")
    }

    /// Across clusters: `freight send` on a2 to `freight recv` on c2 through a's gateway and c's (mutual TLS between
    /// them): six spans in one trace, each the child of the one before; each gateway's span names the link the
    /// message came on, and c's names the cluster it came from.
    @Test func oneTraceAcrossTwoGateways() async throws {
        let folder = NSTemporaryDirectory() + "freight-traced-gateways-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let file = "\(folder)/spans.jsonl"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let (collector, endpoint) = try await Self.otlpReceiver(writingTo: file)
        defer { collector.stop() }
        let environment = ["OTEL_EXPORTER_OTLP_ENDPOINT": endpoint]
        for cluster in ["a", "c"] { try await GatewayTests.certificates(cluster, in: folder) }
        let c = try await GatewayTests.site(
            "c", host: "127.0.0.63", folder: folder, peers: ["a"], dial: [], export: ["traced/**"],
            worker: "127.0.0.73", environment: environment)
        defer { c.cluster.stop() }
        let a = try await GatewayTests.site(
            "a", host: "127.0.0.61", folder: folder, peers: ["c"], dial: [c.gateway], export: [],
            worker: "127.0.0.71", environment: environment)
        defer { a.cluster.stop() }
        let receiver = try await c.cluster.receiver("traced/far", at: "c2", ["--check", "--count", "1"], seenAt: "c")
        defer { receiver.stop() }
        try await GatewayTests.waitFor("a2 resolves traced/far through its gateway") {
            try await GatewayDataTests.resolved("traced/far", at: a, node: "a2").contains {
                $0["cluster"] as? String == "c"
            }
        }
        let sent = try await FreightProcess.run(
            ["send", "traced/far", "--size", "4MiB", "--via", a.worker.socket], environment: environment)
        try #require(sent.status == 0, "\(sent.stderr)")
        #expect(try await receiver.waitForExit(timeout: .seconds(30)) == 0, "\(receiver.stderr)")

        let services = [
            "freight-send", "freight-node-a2", "freight-node-a", "freight-node-c", "freight-node-c2", "freight-recv",
        ]
        let spans = try await Self.spans(in: file, from: services)
        let byService = Dictionary(spans.map { ($0["service"] as? String ?? "", $0) }) { first, _ in first }
        let chain = services.compactMap { byService[$0] }
        try #require(chain.count == services.count, "spans of \(services), got: \(spans)")
        #expect(Set(chain.map { $0["trace_id"] as! String }).count == 1, "one trace: \(chain)")
        for (parent, child) in zip(chain, chain.dropFirst()) {
            #expect(
                child["parent_span_id"] as? String == parent["span_id"] as? String,
                "\(child["service"]!)'s parent is \(parent["service"]!)'s span")
        }
        for service in services.dropFirst().dropLast() {
            let attributes = try #require(byService[service]?["attributes"] as? [String: Any])
            #expect(attributes["freight.address"] as? String == "traced/far", "\(service): \(attributes)")
            #expect(attributes["freight.outcome"] as? String == "delivered", "\(service): \(attributes)")
            #expect(attributes["freight.bytes"] as? Int == 4 << 20, "\(service): \(attributes)")
        }
        let upstreamAtC = (byService["freight-node-c"]?["attributes"] as? [String: Any])?["freight.upstream"]
        #expect(
            (upstreamAtC as? String)?.contains("gateway") == true,
            "c took it from its gateway link: \(upstreamAtC ?? "-")")
        #expect(chain.allSatisfy { $0["status"] as? Int != 2 }, "no span failed: \(chain)")
    }
}
