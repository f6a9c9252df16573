import Prometheus

/// The help text of every metric a node exposes (docs/observability.md), and the histograms' buckets. swift-metrics
/// carries no help text, so `/metrics` adds a `# HELP` line before each family's `# TYPE` line from here.
public enum MetricsCatalog {
    public static let help: [String: String] = [
        "freight_messages_total":
            "Messages that ended at this node, by outcome (delivered to at least one receiver, or failed).",
        "freight_message_errors_total": "Messages that failed at this node, by error code.",
        "freight_message_duration_seconds": "Time from a message's OPEN at this node to its outcome, by size class.",
        "freight_message_throughput_bytes_per_second": "Length over duration of delivered messages, by size class.",
        "freight_message_resumes_total": "Times a message's upstream link resumed at this node.",
        "freight_flows_in_flight": "Messages this node holds a flow for now.",
        "freight_small_messages_in_flight": "Small messages passed on and waiting for their outcome.",
        "freight_small_messages_passed_total": "Small messages (SMALL frames) this node passed on.",
        "freight_small_messages_resent_total": "Small messages this node answered with RESEND.",
        "freight_node_received_bytes_total": "Message body bytes this node received.",
        "freight_node_sent_bytes_total": "Message body bytes this node sent.",
        "freight_memory_reserved_bytes": "Bytes of the memory budget reserved by flows in flight.",
        "freight_memory_budget_bytes": "The node's memory budget for message bodies.",
        "freight_resident_memory_bytes": "Resident memory of the node process.",
        "freight_shared_memory_pool_bytes": "Bytes of apps' shared-memory pools this node holds open.",
        "freight_shared_memory_budget_bytes": "The most shared-memory pool bytes this node accepts.",
        "freight_shared_memory_regions_lent": "Shared-memory regions lent and not yet returned.",
        "freight_directory_up": "1 when the directory backend is reachable, 0 when it is not.",
        "freight_directory_endpoints": "Endpoints this node knows of across the cluster.",
        "freight_local_endpoints": "Endpoints of apps attached to this node.",
        "freight_peers": "Other nodes of the cluster this node knows.",
        "freight_peer_stripes_up": "TCP connections (stripes) up to each peer node.",
        "freight_peer_sent_bytes_total": "Bytes this node sent on its stripes to each peer node.",
        "freight_gateway_link_sent_bytes_total":
            "Message body bytes sent on each gateway link, by the cluster it reaches.",
        "freight_gateway_link_received_bytes_total": "Message body bytes received on each gateway link.",
        "freight_gateway_link_stripes": "TCP connections each gateway link has up.",
        "freight_gateway_link_rtt_seconds": "Smoothed round-trip time measured on each gateway link (0: not yet).",
        "freight_links_in_handshake": "Connections to this node still in their handshake.",
        "freight_links_refused_total": "Connections refused at admission (limits, handshakes).",
        "freight_handshakes_timed_out_total": "Connections closed because their handshake took too long.",
        "freight_uptime_seconds": "Seconds since the node started.",
        "freight_credit_stalls_total":
            "Times an upstream (app or node) sent all the credit this node had given it and had to wait for more.",
        "freight_peer_rail_sent_bytes_total": "Bytes this node sent to each peer node on each rail pair.",
        "freight_link_messages_total":
            "Messages that ended at this node, by the link they came in on (direction in) or went out on (out): a peer node, a gateway link's cluster, or this node's apps; by outcome.",
        "freight_link_message_bytes_total":
            "Body bytes of the messages that ended at this node, by the link they came in on or went out on.",
    ]

    /// A factory recording into `registry`, with buckets that span what Freight moves: 100 us to 20 min, and 1 MB/s
    /// to 50 GB/s.
    public static func factory(registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["freight_message_duration_seconds"] = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2500),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
            .seconds(30), .seconds(60), .seconds(300), .seconds(1200),
        ]
        factory.valueHistogramBuckets["freight_message_throughput_bytes_per_second"] = [
            1e6, 1e7, 5e7, 1e8, 2.5e8, 5e8, 1e9, 2.5e9, 5e9, 1e10, 2.5e10, 5e10,
        ]
        return factory
    }

    /// The registry's exposition with a `# HELP` line before each `# TYPE` line of a family in `help`.
    public static func exposition(_ registry: PrometheusCollectorRegistry) -> [UInt8] {
        var raw: [UInt8] = []
        raw.reserveCapacity(16 << 10)
        registry.emit(into: &raw)
        var out: [UInt8] = []
        out.reserveCapacity(raw.count + 4 << 10)
        for line in raw.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            if line.starts(with: Array("# TYPE ".utf8)) {
                let name = String(decoding: line.dropFirst(7).prefix { $0 != UInt8(ascii: " ") }, as: UTF8.self)
                if let text = help[name] { out += Array("# HELP \(name) \(text)\n".utf8) }
            }
            out += line
            out.append(UInt8(ascii: "\n"))
        }
        if out.last == UInt8(ascii: "\n"), raw.last == UInt8(ascii: "\n") { out.removeLast() }
        return out
    }
}
