import FreightCore
import FreightFlow
import FreightWire
import Prometheus
import Testing

@testable import FreightAdmin
@testable import FreightNode

/// What `/metrics` exposes (docs/observability.md): names, bounded labels, help for every family, counters that
/// only grow, and series that go with the peer they describe.
struct MetricsTests {
    static func status(peers: [String], bytesOut: UInt64) -> Freight_Wire_V1_NodeStatus {
        var status = Freight_Wire_V1_NodeStatus()
        status.directory = "etcd"
        status.directoryUnreachable = "connection refused"
        status.bytesOut = bytesOut
        status.memoryBudgetBytes = 1 << 30
        status.peers = peers.map { name in
            var peer = Freight_Wire_V1_PeerStatus()
            peer.name = name
            peer.streamsUp = 4
            peer.bytesOut = bytesOut
            return peer
        }
        var link = Freight_Wire_V1_GatewayLinkStatus()
        link.cluster = "east"
        link.rttMicros = 25_000
        link.bytesOut = 7
        status.gatewayLinks = [link]
        return status
    }

    static func sample(_ text: String, _ series: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    @Test func everyFamilyHasHelpAndLabelsStayBounded() throws {
        let registry = PrometheusCollectorRegistry()
        let factory = MetricsCatalog.factory(registry: registry)
        let metrics = NodeMetrics(factory: factory)
        metrics.ended(
            FlowEnd(
                messageID: 1, length: 1 << 20, bytes: 1 << 20, startedNanos: 0, endedNanos: 2_000_000, failure: nil,
                resumes: 1))
        metrics.ended(
            FlowEnd(
                messageID: 2, length: 300, bytes: 0, startedNanos: 0, endedNanos: 1, failure: .resourceExhausted,
                resumes: 0))
        var scraped = StatusMetrics(factory: factory)
        scraped.update(from: Self.status(peers: ["n2", "n3"], bytesOut: 100))
        let text = String(decoding: MetricsCatalog.exposition(registry), as: UTF8.self)

        let types = text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] }
        #expect(types.count >= 25, "\(text)")
        for name in types {
            #expect(text.contains("# HELP \(name) "), "no help for \(name)")
        }
        #expect(Self.sample(text, #"freight_messages_total{outcome="delivered"}"#) == 1)
        #expect(Self.sample(text, #"freight_messages_total{outcome="failed"}"#) == 1)
        #expect(Self.sample(text, #"freight_message_errors_total{code="resource_exhausted"}"#) == 1)
        #expect(Self.sample(text, #"freight_message_duration_seconds_bucket{size="le_1MiB",le="0.0025"}"#) == 1)
        #expect(Self.sample(text, #"freight_message_duration_seconds_bucket{size="le_1MiB",le="0.001"}"#) == 0)
        #expect(Self.sample(text, "freight_message_resumes_total") == 1)
        #expect(Self.sample(text, #"freight_directory_up{backend="etcd"}"#) == 0)
        #expect(Self.sample(text, #"freight_gateway_link_rtt_seconds{cluster="east"}"#) == 0.025)
        #expect(Self.sample(text, #"freight_peer_stripes_up{peer="n3"}"#) == 4)
    }

    @Test func countersGrowByWhatChangedAndGoneSeriesGo() {
        let registry = PrometheusCollectorRegistry()
        var scraped = StatusMetrics(factory: MetricsCatalog.factory(registry: registry))
        scraped.update(from: Self.status(peers: ["n2", "n3"], bytesOut: 100))
        scraped.update(from: Self.status(peers: ["n2"], bytesOut: 250))
        var text = String(decoding: MetricsCatalog.exposition(registry), as: UTF8.self)
        #expect(Self.sample(text, "freight_node_sent_bytes_total") == 250)
        #expect(Self.sample(text, #"freight_peer_sent_bytes_total{peer="n2"}"#) == 250)
        #expect(!text.contains(#"peer="n3""#), "a peer that left keeps no series:\n\(text)")
        // A count that fell (the node's link to n2 came back anew) starts again from zero: the counter never falls.
        scraped.update(from: Self.status(peers: ["n2"], bytesOut: 40))
        text = String(decoding: MetricsCatalog.exposition(registry), as: UTF8.self)
        #expect(Self.sample(text, #"freight_peer_sent_bytes_total{peer="n2"}"#) == 290)
    }

    @Test func labelsAndSizeClasses() {
        #expect(NodeMetrics.label(.resourceExhausted) == "resource_exhausted")
        #expect(NodeMetrics.label(.io) == "io")
        #expect(NodeMetrics.label(FreightError.Code(rawValue: 999)) == "internal_error")
        #expect(NodeMetrics.sizeClass(0) == 0)
        #expect(NodeMetrics.sizeClass(4096) == 0)
        #expect(NodeMetrics.sizeClass(4097) == 1)
        #expect(NodeMetrics.sizeClass(1 << 40) == NodeMetrics.sizeClassNames.count - 1)
        #expect(NodeMetrics.sizeClassNames.count == NodeMetrics.sizeClassBounds.count + 1)
    }

    @Test func topShowsRatesFromTwoSnapshots() {
        var before = Self.status(peers: ["n2"], bytesOut: 1_000_000_000)
        before.name = "n1"
        before.cluster = "demo"
        before.messagesDelivered = 1000
        before.streams = 4
        var after = before
        after.bytesOut = 3_500_000_000
        after.messagesDelivered = 2000
        after.peers[0].bytesOut = 3_500_000_000
        after.uptimeMillis = 3_725_000
        let view = StatusView()
        let first = view.lines(previous: nil, current: before, seconds: 0)
        #expect(first.contains { $0.hasPrefix("n2 ") && $0.hasSuffix(" -") }, "no rate before a second frame: \(first)")
        let lines = view.lines(previous: before, current: after, seconds: 2)
        let text = lines.joined(separator: "\n")
        #expect(lines[0].contains("node n1 of cluster demo") && lines[0].contains("up 1h 02m"), "\(text)")
        #expect(lines[0].contains("UNREACHABLE (connection refused)"), "\(text)")
        #expect(text.contains("delivered 2,000 (500/s)"), "\(text)")
        #expect(text.contains("out 1.25 GB/s"), "\(text)")
        #expect(lines.contains { $0.hasPrefix("n2 ") && $0.contains("4/4") && $0.hasSuffix("1.25 GB/s") }, "\(text)")
        #expect(lines.contains { $0.hasPrefix("east ") && $0.contains("25.0 ms") }, "\(text)")
    }

    static func flow(_ id: UInt64, _ address: String, size: UInt64, bytes: UInt64) -> Freight_Wire_V1_FlowStatus {
        var flow = Freight_Wire_V1_FlowStatus()
        flow.id = id
        flow.address = address
        flow.size = size
        flow.bytes = bytes
        flow.upstream = "app send"
        flow.downstream = ["node n2"]
        return flow
    }

    /// The live page's frame and `freight top` show the messages in flight with their progress and rate, and the
    /// last errors; a frame is one server-sent event of one line of JSON.
    @Test func liveFrameAndTopShowMessagesAndErrors() throws {
        var before = Self.status(peers: ["n2"], bytesOut: 0)
        before.name = "n1"
        before.flows = [Self.flow(0xabc, "tensors/w", size: 1 << 30, bytes: 100 << 20)]
        var after = before
        after.flows = [Self.flow(0xabc, "tensors/w", size: 1 << 30, bytes: 612 << 20)]
        after.flowsOmitted = 3
        var error = Freight_Wire_V1_ErrorStatus()
        error.unixMillis = 1_795_996_800_000 + 3_723_000  // 01:02:03 UTC (1,795,996,800 s is a midnight)
        error.address = "kv/\"quoted\"\nline"
        error.code = "no_route"
        error.message = "no route to kv/x"
        error.size = 4096
        after.recentErrors = [error]

        let frame = LiveFrame(previous: before, current: after, seconds: 2)
        #expect(frame.messages.count == 1 && frame.messages[0].bytesPerSecond == Double(256 << 20))
        #expect(frame.messages[0].id == "abc" && frame.messagesOmitted == 3)
        #expect(frame.links.map(\.kind) == ["peer", "gateway"] && frame.links[1].rttMillis == 25)
        #expect(frame.errors.first?.code == "no_route")
        let event = frame.event()
        #expect(event.hasPrefix("data: {") && event.hasSuffix("}\n\n"))
        #expect(!event.dropLast(2).contains("\n"), "one line of JSON per event: \(event)")
        let first = LiveFrame(previous: nil, current: after, seconds: 0)
        #expect(first.messages[0].bytesPerSecond == 0 && first.totals.bytesOutPerSecond == 0)

        let lines = StatusView().lines(previous: before, current: after, seconds: 2)
        let text = lines.joined(separator: "\n")
        #expect(
            lines.contains {
                $0.hasPrefix("abc ") && $0.contains("tensors/w") && $0.contains("59%") && $0.contains("268 MB/s")
            },
            "\(text)")
        #expect(text.contains("(3 more messages in flight)"), "\(text)")
        #expect(lines.contains { $0.hasPrefix("01:02:03  no_route") && $0.contains("no route to kv/x") }, "\(text)")
    }

    /// A node remembers the last `Limits.recentErrorsMax` failures, newest first.
    @Test func recentErrorsKeepTheNewest() {
        var errors = RecentErrors()
        for id in 1...UInt64(Limits.recentErrorsMax + 5) {
            errors.record(
                id: id, address: "a/\(id)", size: id, code: "no_route", reason: String(repeating: "x", count: 1000))
        }
        let newest = errors.newestFirst
        #expect(newest.map(\.id) == Array((6...UInt64(Limits.recentErrorsMax + 5)).reversed()))
        #expect(newest.allSatisfy { $0.message.count == RecentErrors.messageBytesMax })
        var few = RecentErrors()
        few.record(id: 1, address: "a", size: 1, code: "c", reason: "r")
        few.record(id: 2, address: "a", size: 1, code: "c", reason: "r")
        #expect(few.newestFirst.map(\.id) == [2, 1])
    }
}
