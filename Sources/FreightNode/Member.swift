import FreightCore
import FreightDirectory
import FreightRouting
import FreightTransport
import FreightWire
import NIOCore

/// A peer node of the cluster, and the links to it: `egress` stripes that this node dialed and sends on, and
/// `ingress` connections the peer dialed and sends on.
///
/// With rails (docs/topology.md) the egress stripes are `streams` per rail pair: stripe s belongs to rail
/// s / streams; rail 0 is the peer's listen address, rail r ≥ 1 its r-th rail, dialed from this node's r-th rail.
final class Member: @unchecked Sendable {  // confined to the node's event loop
    let name: String
    let listen: NodeAddress
    let incarnation: UInt64
    let streams: Int
    var egress: [FrameConnection?]
    var ingress: Set<FrameConnection> = []
    var dialAttempts = 0
    /// The peer holds and resumes messages across a broken link (its HELLO says "resume").
    var resumes = false
    /// Every stripe of the link broke at this time (monotonic nanoseconds); nil while the link stands. The member is
    /// kept, and redialed, for the hold time: its messages wait to resume.
    var lostAtNanos: UInt64?
    /// A stripe broke while others stand: its bytes go again once the loss settled (`Limits.stripeLossSettleMillis`).
    var stripeLossPending = false
    /// When this node last sent heartbeats on the link's stripes.
    var heartbeatNanos: UInt64 = 0
    var controlLossPending = false
    /// Body bytes sent on each stripe.
    var stripeBytes: [UInt64]
    /// What the peer says about itself: its rails and hardware.
    private(set) var record: NodeRecord
    /// Rail pairs this link uses: (local source address, peer address), rail 0 first.
    private(set) var railTargets: [(source: String?, target: NodeAddress)]
    private(set) var balancer: RailBalancer
    private var rotation = 0

    init(name: String, listen: NodeAddress, incarnation: UInt64, streams: Int) {
        self.name = name
        self.listen = listen
        self.incarnation = incarnation
        self.streams = streams
        self.egress = Array(repeating: nil, count: streams)
        self.stripeBytes = Array(repeating: 0, count: streams)
        self.record = NodeRecord(name: name, listen: listen, incarnation: incarnation)
        self.railTargets = [(nil, listen)]
        self.balancer = RailBalancer(nominalBytesPerSecond: [0])
    }

    var railCount: Int { railTargets.count }

    func rail(ofStripe stripe: Int) -> Int { stripe / streams }

    /// Takes what the peer announced about itself; grows the link to one set of stripes per rail pair the two
    /// nodes share (rails never shrink within one incarnation). Returns true when new stripes need dialing.
    @discardableResult
    func apply(_ announced: NodeRecord, localRails: [String]) -> Bool {
        guard announced.name == name, announced.incarnation == incarnation || announced.incarnation == 0 else {
            return false
        }
        record = announced
        let pairs = min(localRails.count, announced.rails.count)
        guard pairs > railTargets.count else { return false }
        var targets: [(source: String?, target: NodeAddress)] = [(pairs > 1 ? localRails[0] : nil, listen)]
        for rail in 1..<max(1, pairs) { targets.append((localRails[rail], announced.rails[rail])) }
        railTargets = targets
        let nominal = (0..<pairs).map { rail in
            (announced.topology.nics.first { $0.rail == rail }?.gbitPerSecond ?? 0) * 1e9 / 8
        }
        balancer = RailBalancer(nominalBytesPerSecond: nominal)
        let stripes = pairs * streams
        egress += Array(repeating: nil, count: stripes - egress.count)
        stripeBytes += Array(repeating: 0, count: stripes - stripeBytes.count)
        return true
    }

    var allConnections: [FrameConnection] { egress.compactMap { $0 } + ingress }

    func owns(_ connection: FrameConnection) -> Bool {
        ingress.contains(connection) || egress.contains { $0 === connection }
    }

    /// Control frames go on the first stripe that stands (stripe 0 while it does) so that they keep their order.
    var control: FrameConnection? { egress.first { $0 != nil } ?? nil }

    var isUp: Bool { egress.contains { $0 != nil } }

    /// The stripe that takes the next chunk: with several rails, the rail expected to finish it first
    /// (``RailBalancer``); within a rail, ``StripeChooser`` (fill first, spill over).
    /// `rails` limits the choice to those rails (a message planned onto a GPU's rail-aligned NIC).
    func stripeForData(
        spillBytes: Int, policy: StripeChooser.Policy, chunkBytes: Int, nowNanos: UInt64, rails: [Int]? = nil
    ) -> Int? {
        rotation &+= 1
        guard railCount > 1 else {
            return StripeChooser.choose(
                pending: egress.map { $0?.pendingBytes }, spillBytes: spillBytes, policy: policy, rotation: rotation)
        }
        var pending: [Int?] = []
        var drained: [UInt64] = []
        for rail in 0..<railCount {
            let stripes = egress[(rail * streams)..<((rail + 1) * streams)].compactMap { $0 }
            pending.append(stripes.isEmpty ? nil : stripes.reduce(0) { $0 + $1.pendingBytes })
            drained.append(stripes.reduce(0) { $0 &+ $1.drainedBytes })
        }
        balancer.observe(nowNanos: nowNanos, drained: drained, pending: pending)
        var allowed = pending
        if let rails {
            for rail in allowed.indices where !rails.contains(rail) { allowed[rail] = nil }
        }
        // A planned rail with no connection: any rail rather than none.
        guard
            let rail = balancer.choose(pending: allowed, chunkBytes: chunkBytes)
                ?? balancer.choose(pending: pending, chunkBytes: chunkBytes)
        else { return nil }
        let base = rail * streams
        return StripeChooser.choose(
            pending: egress[base..<(base + streams)].map { $0?.pendingBytes }, spillBytes: spillBytes, policy: policy,
            rotation: rotation
        ).map { base + $0 }
    }
}

/// A seed given with `--join`: dialed until this node learns who answers there.
struct SeedState {
    var probe: FrameConnection?
    var attempts = 0
}

/// An app attached to this node.
final class AppSession: @unchecked Sendable {  // confined to the node's event loop
    let id: UInt64
    let connection: FrameConnection
    let label: String
    var endpoints: Set<UInt64> = []
    /// The app sends a message's bytes again from an offset when asked (its HELLO says "resume").
    var resends = false
    /// Names this session on the descriptor link.
    let token = UInt64.random(in: 1...UInt64.max)
    /// The pools the app lent, once its descriptor link attached them.
    var sendPool: NodePool?
    var receivePool: NodePool?
    /// The descriptor link's socket (-1 when none).
    var link: Int32 = -1
    /// Regions lent to this app and not yet released, by region, oldest first.
    var holds: [SharedRegion: [(loan: Loan, since: UInt64)]] = [:]
    var holdCount = 0

    var takesShared: Bool { receivePool != nil && link >= 0 }

    init(id: UInt64, connection: FrameConnection, label: String) {
        self.id = id
        self.connection = connection
        self.label = label.isEmpty ? "app-\(id)" : label
    }
}
