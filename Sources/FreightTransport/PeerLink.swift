import FreightCore

/// The link between this node and one peer node: the stripes this node dialed and sends on (`egress`, `streams` per
/// rail pair: stripe s belongs to rail s / streams), the connections the peer dialed and sends on (`ingress`), and
/// how chunks are spread over the stripes (``StripeChooser`` within a rail, ``RailBalancer`` across rails).
///
/// Losing one stripe shrinks the link (``remove(_:)``); the owner dials it again (``missingStripes``). The link is
/// down only with no egress stripe left. Loop-confined, like the connections it holds.
public final class PeerLink: @unchecked Sendable {
    /// One rail pair: the local address the stripes are dialed from (nil: any) and the peer's address on that rail.
    public typealias RailTarget = (source: String?, target: NodeAddress)

    public let streams: Int
    public private(set) var egress: [FrameConnection?]
    public private(set) var ingress: Set<FrameConnection> = []
    /// Body bytes sent on each stripe.
    public private(set) var stripeBytes: [UInt64]
    /// Rail pairs this link uses, rail 0 (the peer's listen address) first.
    public private(set) var railTargets: [RailTarget]
    public private(set) var balancer: RailBalancer
    private var rotation = 0

    public init(listen: NodeAddress, streams: Int) {
        self.streams = streams
        self.egress = Array(repeating: nil, count: streams)
        self.stripeBytes = Array(repeating: 0, count: streams)
        self.railTargets = [(nil, listen)]
        self.balancer = RailBalancer(nominalBytesPerSecond: [0])
    }

    public var railCount: Int { railTargets.count }

    public func rail(ofStripe stripe: Int) -> Int { stripe / streams }

    /// Where stripe `stripe` is dialed.
    public func target(ofStripe stripe: Int) -> RailTarget { railTargets[rail(ofStripe: stripe)] }

    /// Grows the link to one set of stripes per rail pair (rails never shrink within one incarnation of the peer).
    /// Returns true when there are new stripes to dial.
    @discardableResult
    public func useRails(_ targets: [RailTarget], nominalBytesPerSecond: [Double]) -> Bool {
        guard targets.count > railTargets.count else { return false }
        railTargets = targets
        balancer = RailBalancer(nominalBytesPerSecond: nominalBytesPerSecond)
        let stripes = targets.count * streams
        egress += Array(repeating: nil, count: stripes - egress.count)
        stripeBytes += Array(repeating: 0, count: stripes - stripeBytes.count)
        return true
    }

    /// Stripes with no connection: the owner dials them.
    public var missingStripes: [Int] { egress.indices.filter { egress[$0] == nil } }

    public var stripesUp: Int { egress.reduce(0) { $0 + ($1 == nil ? 0 : 1) } }

    /// Takes a dialed connection as stripe `stripe`; false when the stripe has one already.
    @discardableResult
    public func attach(_ connection: FrameConnection, stripe: Int) -> Bool {
        guard egress.indices.contains(stripe), egress[stripe] == nil else { return false }
        egress[stripe] = connection
        return true
    }

    /// Takes a connection the peer dialed as its stripe `stripe`; returns the earlier connections of that stripe,
    /// which the peer replaced (it dials a stripe again only once it counts the old one broken): the owner closes
    /// them.
    public func accept(_ connection: FrameConnection, stripe: UInt32) -> [FrameConnection] {
        let replaced = ingress.filter { $0 !== connection && $0.hello?.streamIndex == stripe }
        for stale in replaced { ingress.remove(stale) }
        ingress.insert(connection)
        return Array(replaced)
    }

    /// What losing `connection` took from the link.
    public struct Loss: Sendable {
        public var egress = false
        public var ingress = false
        /// It was the stripe control frames went on.
        public var control = false
    }

    /// Forgets `connection`, wherever it was.
    public func remove(_ connection: FrameConnection) -> Loss {
        var loss = Loss()
        loss.control = control === connection
        if let stripe = egress.firstIndex(where: { $0 === connection }) {
            egress[stripe] = nil
            loss.egress = true
        }
        loss.ingress = ingress.remove(connection) != nil
        return loss
    }

    public var allConnections: [FrameConnection] { egress.compactMap { $0 } + ingress }

    public func owns(_ connection: FrameConnection) -> Bool {
        ingress.contains(connection) || egress.contains { $0 === connection }
    }

    /// Control frames go on the first stripe that stands (stripe 0 while it does) so that they keep their order.
    public var control: FrameConnection? { egress.first { $0 != nil } ?? nil }

    /// Where a frame for the peer goes: the control stripe, or, with none of this node's own, a connection the
    /// peer dialed.
    public var anyConnection: FrameConnection? { control ?? ingress.first }

    public var isUp: Bool { egress.contains { $0 != nil } }

    /// Counts body bytes sent on `stripe`.
    public func sent(_ bytes: Int, on stripe: Int) { stripeBytes[stripe] &+= UInt64(bytes) }

    /// The stripe that takes the next chunk: with several rails, the rail expected to finish it first
    /// (``RailBalancer``); within a rail, ``StripeChooser`` (fill first, spill over). `rails` limits the choice to
    /// those rails (a message planned onto a GPU's rail-aligned NIC).
    public func stripeForData(
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
