import FreightCore
import FreightDirectory

/// Chooses which endpoints receive a message. Pure: no I/O, no clock; load and randomness come in as values.
///
/// Semantics (as NATS subjects and queue groups): every matching endpoint without a group gets the message; each
/// group gets it once, at the member that is cheapest to reach (same node first), then least loaded, then a
/// rotation that spreads ties.
public struct DeliveryPlanner: Sendable {
    public var localNode: String

    public init(localNode: String) {
        self.localNode = localNode
    }

    /// - Parameters:
    ///   - matches: endpoints whose pattern matches the destination.
    ///   - load: messages in flight to each endpoint.
    ///   - tieBreak: a number that rotates among equally good members (a counter or a seeded random value).
    public func plan(
        matches: [EndpointRecord],
        load: (EndpointKey) -> Int,
        tieBreak: UInt64
    ) -> [EndpointRecord] {
        var targets: [EndpointRecord] = []
        var groups: [String: [EndpointRecord]] = [:]
        for record in matches {
            if let group = record.group {
                groups[groupKey(group, record.groupScope), default: []].append(record)
            } else {
                targets.append(record)
            }
        }
        for name in groups.keys.sorted() {
            let members = groups[name]!.sorted { ($0.key.node, $0.key.id) < ($1.key.node, $1.key.id) }
            let ranked = members.map { (record: $0, cost: cost(of: $0), load: load($0.key)) }
            let best = ranked.map { ($0.cost, $0.load) }.min { $0 < $1 }!
            let tied = ranked.filter { ($0.cost, $0.load) == best }
            targets.append(tied[Int(tieBreak % UInt64(tied.count))].record)
        }
        return targets.sorted { ($0.key.node, $0.key.id) < ($1.key.node, $1.key.id) }
    }

    /// Relative cost of reaching an endpoint: 0 on this node, 1 one hop away (a full mesh has no longer routes yet),
    /// and for a route to another cluster 2 plus the route's cost: a group is served on the sender's node, then in
    /// its cluster, then in the nearest cluster by cost (docs/gateways.md, "Groups across clusters").
    public func cost(of record: EndpointRecord) -> Int {
        if let route = record.route { return 2 + Int(clamping: min(route.cost, UInt64(Int.max - 2))) }
        return record.key.node == localNode ? 0 : 1
    }

    /// Groups are scoped to the pattern they serve, so `--group g` on two different addresses are two groups.
    private func groupKey(_ group: String, _ pattern: AddressPattern) -> String {
        "\(pattern)\u{0}\(group)"
    }
}
