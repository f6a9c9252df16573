import FreightCore
import FreightDirectory
import FreightRouting
import FreightTransport
import FreightWire
import NIOCore

/// A peer node of the cluster: who it is and what it says about itself. The connections to it, and how chunks are
/// spread over them, are its ``PeerLink``; what the node does about its link (dial, hold, resume, forget) is
/// decided by ``Membership``, which keeps one entry per `Member`.
///
/// With rails (docs/topology.md) the link has `streams` stripes per rail pair: rail 0 is the peer's listen address,
/// rail r ≥ 1 its r-th rail, dialed from this node's r-th rail.
final class Member: @unchecked Sendable {  // confined to the node's event loop
    let name: String
    let listen: NodeAddress
    let incarnation: UInt64
    let link: PeerLink
    /// What the peer takes of small messages (its HELLO's eager budget and sizes).
    var small = SmallTerms.none
    /// Messages that ended here having come from the peer or gone to it.
    var outcomes = LinkOutcomes()
    /// What the peer says about itself: its rails and hardware.
    private(set) var record: NodeRecord
    /// What was last heard from the peer, and when (``NodeEngine/closeSilentLinks()``).
    var silence = LinkSilence()

    init(name: String, listen: NodeAddress, incarnation: UInt64, streams: Int) {
        self.name = name
        self.listen = listen
        self.incarnation = incarnation
        self.link = PeerLink(listen: listen, streams: streams)
        self.record = NodeRecord(name: name, listen: listen, incarnation: incarnation)
    }

    /// Takes what the peer announced about itself; grows the link to one set of stripes per rail pair the two
    /// nodes share. Returns true when new stripes need dialing.
    @discardableResult
    func apply(_ announced: NodeRecord, localRails: [String]) -> Bool {
        guard announced.name == name, announced.incarnation == incarnation || announced.incarnation == 0 else {
            return false
        }
        record = announced
        let pairs = min(localRails.count, announced.rails.count)
        guard pairs > link.railCount else { return false }
        var targets: [PeerLink.RailTarget] = [(pairs > 1 ? localRails[0] : nil, listen)]
        for rail in 1..<max(1, pairs) { targets.append((localRails[rail], announced.rails[rail])) }
        let nominal = (0..<pairs).map { rail in
            (announced.topology.nics.first { $0.rail == rail }?.gbitPerSecond ?? 0) * 1e9 / 8
        }
        return link.useRails(targets, nominalBytesPerSecond: nominal)
    }
}

/// An app attached to this node.
final class AppSession: @unchecked Sendable {  // confined to the node's event loop
    let id: UInt64
    let connection: FrameConnection
    let label: String
    var endpoints: Set<UInt64> = []
    /// The app sends a message's bytes again from an offset when asked (its HELLO says "resume").
    var resends = false
    /// What the app takes of small messages (its HELLO's eager budget and sizes).
    var small = SmallTerms.none
    /// Names this session on the descriptor link.
    let token = UInt64.random(in: 1...UInt64.max)
    /// The pools the app lent, once its descriptor link attached them.
    var sendPool: NodePool?
    var receivePool: NodePool?
    /// The descriptor link's socket (-1 when none).
    var link: Int32 = -1
    /// Files the app lent for sending, by pool id, with the link each is lent over.
    var files: [UInt32: (pool: NodePool, link: Int32)] = [:]
    /// Regions lent to this app and not yet released, by region, oldest first.
    var holds: [SharedRegion: [(loan: Loan, since: UInt64)]] = [:]
    var holdCount = 0

    /// GPUs the app opens CUDA IPC handles on (its HELLO's `cuda-ipc:GPU-…` capabilities, docs/gpu.md).
    var gpus: Set<String> = []

    var takesShared: Bool { receivePool != nil && link >= 0 }
    /// Who the app is (its Unix-socket credentials, the token it presented), and whether the node's access list
    /// applies to it (not to the node's own sessions, nor on a node without one).
    var identity = AppIdentity()
    var checked = false

    init(id: UInt64, connection: FrameConnection, label: String, node: String) {
        self.id = id
        self.connection = connection
        self.label = label.isEmpty ? "app-\(id)" : label
        self.source = "\(node)/\(self.label)"
    }

    /// What its messages' headers say they come from: NODE/LABEL (made once: small messages need it each).
    let source: String
}
