import CoreMetrics
import FreightWire

/// The metrics read from the node's status at each scrape (docs/observability.md): gauges set to what the status
/// says, and counters advanced by what grew since the last scrape (a count that fell, a link that came back anew,
/// starts again from zero). Series of a peer or gateway link that is gone are removed.
struct StatusMetrics {
    private let factory: any MetricsFactory
    private var gauges: [String: Gauge] = [:]
    private var counters: [String: (counter: Counter, last: UInt64)] = [:]
    private var seen: Set<String> = []

    init(factory: any MetricsFactory) {
        self.factory = factory
    }

    mutating func update(from status: Freight_Wire_V1_NodeStatus) {
        seen = []
        gauge("freight_flows_in_flight", status.messagesInFlight)
        gauge("freight_small_messages_in_flight", status.smallInFlight)
        count("freight_small_messages_passed_total", status.smallPassed)
        count("freight_small_messages_resent_total", status.smallResent)
        count("freight_node_received_bytes_total", status.bytesIn)
        count("freight_node_sent_bytes_total", status.bytesOut)
        gauge("freight_memory_reserved_bytes", status.memoryReservedBytes)
        gauge("freight_memory_budget_bytes", status.memoryBudgetBytes)
        gauge("freight_resident_memory_bytes", status.rssBytes)
        gauge("freight_shared_memory_pool_bytes", status.sharedPoolBytes)
        gauge("freight_shared_memory_budget_bytes", status.sharedBudgetBytes)
        gauge("freight_shared_memory_regions_lent", status.sharedRegionsLent)
        gauge(
            "freight_directory_up", UInt64(status.directoryUnreachable.isEmpty ? 1 : 0),
            [("backend", status.directory == "etcd" ? "etcd" : "mesh")])
        gauge("freight_directory_endpoints", status.knownEndpoints)
        gauge("freight_local_endpoints", status.localEndpoints)
        gauge("freight_peers", UInt64(status.peers.count) + UInt64(status.peersOmitted))
        count("freight_credit_stalls_total", status.creditStalls)
        outcomes(status.appOutcomes, kind: "app", link: "apps")
        for peer in status.peers {
            gauge("freight_peer_stripes_up", UInt64(peer.streamsUp), [("peer", peer.name)])
            count("freight_peer_sent_bytes_total", peer.bytesOut, [("peer", peer.name)])
            // Stripe i runs on rail i / streams (PeerLink): one series per rail pair to the peer.
            let streams = max(1, Int(status.streams))
            var rails: [UInt64] = []
            for (stripe, bytes) in peer.stripeBytes.enumerated() {
                let rail = stripe / streams
                if rail >= rails.count { rails.append(contentsOf: repeatElement(0, count: rail - rails.count + 1)) }
                rails[rail] &+= bytes
            }
            for (rail, bytes) in rails.enumerated() {
                count("freight_peer_rail_sent_bytes_total", bytes, [("peer", peer.name), ("rail", "\(rail)")])
            }
            outcomes(peer.outcomes, kind: "peer", link: peer.name)
        }
        var clusters: Set<String> = []
        for link in status.gatewayLinks where clusters.insert(link.cluster).inserted {
            outcomes(link.outcomes, kind: "gateway", link: link.cluster)
        }
        for link in status.gatewayLinks {
            let labels = [("cluster", link.cluster)]
            count("freight_gateway_link_sent_bytes_total", link.bytesOut, labels)
            count("freight_gateway_link_received_bytes_total", link.bytesIn, labels)
            gauge("freight_gateway_link_stripes", UInt64(link.stripes), labels)
            gauge("freight_gateway_link_rtt_seconds", Double(link.rttMicros) / 1e6, labels)
        }
        gauge("freight_links_in_handshake", UInt64(status.linksInHandshake))
        count("freight_links_refused_total", status.linksRefused)
        count("freight_handshakes_timed_out_total", status.handshakesTimedOut)
        gauge("freight_uptime_seconds", Double(status.uptimeMillis) / 1e3)
        // Peers and gateway links that went away: their series go with them.
        for key in gauges.keys where !seen.contains(key) {
            gauges.removeValue(forKey: key)?.destroy()
        }
        for key in counters.keys where !seen.contains(key) {
            counters.removeValue(forKey: key)?.counter.destroy()
        }
    }

    /// Messages that ended here on one link, by direction and outcome, and their bytes.
    private mutating func outcomes(_ counts: Freight_Wire_V1_LinkOutcomes, kind: String, link: String) {
        let series: [(String, String, UInt64)] = [
            ("in", "delivered", counts.inDelivered), ("in", "failed", counts.inFailed),
            ("out", "delivered", counts.outDelivered), ("out", "failed", counts.outFailed),
        ]
        for (direction, outcome, messages) in series {
            count(
                "freight_link_messages_total", messages,
                [("link_kind", kind), ("link", link), ("direction", direction), ("outcome", outcome)])
        }
        count(
            "freight_link_message_bytes_total", counts.inBytes,
            [("link_kind", kind), ("link", link), ("direction", "in")])
        count(
            "freight_link_message_bytes_total", counts.outBytes,
            [("link_kind", kind), ("link", link), ("direction", "out")])
    }

    private static func key(_ name: String, _ labels: [(String, String)]) -> String {
        labels.isEmpty ? name : name + "{" + labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",") + "}"
    }

    private mutating func gauge(_ name: String, _ value: UInt64, _ labels: [(String, String)] = []) {
        gauge(name, Double(value), labels)
    }

    private mutating func gauge(_ name: String, _ value: Double, _ labels: [(String, String)] = []) {
        let key = Self.key(name, labels)
        seen.insert(key)
        let gauge = gauges[key] ?? Gauge(label: name, dimensions: labels, factory: factory)
        gauges[key] = gauge
        gauge.record(value)
    }

    private mutating func count(_ name: String, _ total: UInt64, _ labels: [(String, String)] = []) {
        let key = Self.key(name, labels)
        seen.insert(key)
        guard let (counter, last) = counters[key] else {
            let counter = Counter(label: name, dimensions: labels, factory: factory)
            counter.increment(by: Int64(clamping: total))
            counters[key] = (counter, total)
            return
        }
        counter.increment(by: Int64(clamping: total >= last ? total - last : total))
        counters[key] = (counter, total)
    }
}
