import FreightCore
import FreightTransport
import FreightWire
import NIOCore

/// A peer node of the cluster, and the links to it: `egress` stripes that this node dialed and sends on, and
/// `ingress` connections the peer dialed and sends on.
final class Member: @unchecked Sendable {  // confined to the node's event loop
    let name: String
    let listen: NodeAddress
    let incarnation: UInt64
    var egress: [FrameConnection?]
    var ingress: Set<FrameConnection> = []
    var dialAttempts = 0
    /// Body bytes sent on each stripe.
    var stripeBytes: [UInt64]
    private var rotation = 0

    init(name: String, listen: NodeAddress, incarnation: UInt64, streams: Int) {
        self.name = name
        self.listen = listen
        self.incarnation = incarnation
        self.egress = Array(repeating: nil, count: streams)
        self.stripeBytes = Array(repeating: 0, count: streams)
    }

    var allConnections: [FrameConnection] { egress.compactMap { $0 } + ingress }

    func owns(_ connection: FrameConnection) -> Bool {
        ingress.contains(connection) || egress.contains { $0 === connection }
    }

    /// Control frames go on stripe 0 so that they keep their order.
    var control: FrameConnection? { egress[0] }

    var isUp: Bool { egress[0] != nil }

    /// The stripe that takes the next chunk (``StripeChooser``: fill first, spill over).
    func stripeForData(spillBytes: Int, policy: StripeChooser.Policy) -> Int? {
        rotation &+= 1
        return StripeChooser.choose(
            pending: egress.map { $0?.pendingBytes }, spillBytes: spillBytes, policy: policy, rotation: rotation)
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
    /// Names this session on the descriptor link.
    let token = UInt64.random(in: 1...UInt64.max)
    /// The pools the app lent, once its descriptor link attached them.
    var sendPool: NodePool?
    var receivePool: NodePool?
    /// The descriptor link's socket (-1 when none).
    var link: Int32 = -1
    /// Regions lent to this app and not yet released, by region, oldest first.
    var holds: [SharedRegion: [(loan: Loan, since: NIODeadline)]] = [:]
    var holdCount = 0

    var takesShared: Bool { receivePool != nil && link >= 0 }

    init(id: UInt64, connection: FrameConnection, label: String) {
        self.id = id
        self.connection = connection
        self.label = label.isEmpty ? "app-\(id)" : label
    }
}
