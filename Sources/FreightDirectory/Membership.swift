import FreightCore

/// Who is in the cluster, as one node sees it, and what to do about each peer's link: a pure state machine
/// (docs/core.md, "Membership"). Events come in as `mutating func`s — a tick of the clock, a peer learned, a
/// connection of its link lost, a stripe dialed, a dial failed — and each appends ``Action``s that the node carries
/// out (dial, forget, hold or resume its messages, send heartbeats). It holds no connection, reads no clock and
/// does no I/O: the node tells it what its links look like (``LinkState``) and the time.
///
/// The node keeps one `Member` (its record and its `PeerLink`) per peer here, created when ``learn(name:listen:incarnation:actions:)``
/// admits one and dropped on ``Action/forget(_:reason:)``.
public struct Membership: Sendable {
    public struct Configuration: Sendable {
        /// This node's name and the address it listens on (a seed naming it is not dialed).
        public var nodeName: String
        public var listen: NodeAddress
        public var membersMax: Int
        /// Dials of a member learned from gossip that failed before it is forgotten (a link that never stood).
        public var dialAttemptsMax: Int
        /// How long a broken link's messages are held (`--resume-hold`), and how long after that the member is
        /// forgotten (so that its messages fail first, each naming its offset).
        public var resumeHoldNanos: UInt64
        public var forgetAfterHoldNanos: UInt64
        /// How often every stripe of a link that stands gets a heartbeat.
        public var heartbeatIntervalNanos: UInt64

        public init(
            nodeName: String, listen: NodeAddress, membersMax: Int = Limits.membersMax,
            dialAttemptsMax: Int = Limits.dialAttemptsMax,
            resumeHoldNanos: UInt64 = UInt64(Limits.resumeHoldSeconds) * 1_000_000_000,
            forgetAfterHoldNanos: UInt64 = 2_000_000_000, heartbeatIntervalNanos: UInt64 = 3_000_000_000
        ) {
            self.nodeName = nodeName
            self.listen = listen
            self.membersMax = membersMax
            self.dialAttemptsMax = dialAttemptsMax
            self.resumeHoldNanos = resumeHoldNanos
            self.forgetAfterHoldNanos = forgetAfterHoldNanos
            self.heartbeatIntervalNanos = heartbeatIntervalNanos
        }
    }

    /// What the node does for the membership.
    public enum Action: Equatable, Sendable {
        /// Dial the seed at this address: the HELLO that answers names the node there.
        case dialSeed(NodeAddress)
        /// Dial the stripes the link to this member is missing.
        case dial(String)
        /// The member is gone: drop its endpoints, fail its messages, close its links, drop its `Member`.
        case forget(String, reason: String)
        /// Every stripe this node sends on broke: hold the messages sent to the member for the hold time.
        case holdMessages(String, reason: String)
        /// Nothing the member sends can arrive any more: hold the messages it sends here.
        case holdUpstream(String)
        /// The link is back: the held messages resume.
        case resume(String)
        /// A heartbeat on every stripe of the link.
        case heartbeat(String)
        /// A stripe broke while others stand: call ``stripeLossSettled(_:linkUp:actions:)`` a moment later
        /// (`Limits.stripeLossSettleMillis`), so that a link that is breaking whole resumes once instead.
        case settleStripeLoss(String)
        /// Send again what the lost stripes carried; with `control`, the latest acknowledgements and outcomes too.
        case resend(String, control: Bool)
    }

    /// What this node knows of one peer beyond its record.
    public struct Peer: Sendable, Equatable {
        public let listen: NodeAddress
        public let incarnation: UInt64
        /// The peer holds and resumes messages across a broken link (its HELLO says "resume").
        public var resumes = false
        /// When every stripe of the link broke; nil while it stands.
        public var lostAtNanos: UInt64?
        public var dialAttempts = 0
        public var stripeLossPending = false
        public var controlLossPending = false
        public var heartbeatNanos: UInt64 = 0
    }

    /// A seed given with `--join`: dialed until it answers.
    public struct Seed: Sendable, Equatable {
        public var attempts = 0
        public var probing = false
    }

    /// A node another node told of (gossip): probed at its address, a few times, and a member only once it answered
    /// with a HELLO of this cluster. It counts against no member table until then (docs/hardening.md).
    public struct Candidate: Sendable, Equatable {
        public var name: String
        public var attempts = 0
        public var probing = false
    }

    /// How a member's link stands, as the node sees it.
    public struct LinkState: Sendable {
        /// Some stripe this node dialed stands.
        public var isUp: Bool
        /// Some stripe is missing.
        public var missingStripes: Bool
        public init(isUp: Bool, missingStripes: Bool) {
            self.isUp = isUp
            self.missingStripes = missingStripes
        }
    }

    /// What losing one connection took from a link (`PeerLink.Loss`, with what is left).
    public struct Loss: Sendable {
        public var egress: Bool
        public var ingress: Bool
        public var control: Bool
        /// After the loss: some egress stripe stands; some connection the peer dialed stands.
        public var linkUp: Bool
        public var ingressLeft: Bool
        public init(egress: Bool, ingress: Bool, control: Bool, linkUp: Bool, ingressLeft: Bool) {
            self.egress = egress
            self.ingress = ingress
            self.control = control
            self.linkUp = linkUp
            self.ingressLeft = ingressLeft
        }
    }

    public enum Admission: Equatable, Sendable {
        case known
        case admitted
        /// Past ``Configuration/membersMax``.
        case full
    }

    public private(set) var configuration: Configuration
    public private(set) var peers: [String: Peer] = [:]
    public private(set) var seeds: [NodeAddress: Seed] = [:]
    /// Nodes learned through gossip and not yet heard from, by address (at most ``Configuration/membersMax``).
    public private(set) var candidates: [NodeAddress: Candidate] = [:]
    /// Set when the node stops: links that close then are not redialed or resumed.
    public var stopping = false

    public init(configuration: Configuration, seeds: [NodeAddress] = []) {
        self.configuration = configuration
        for seed in seeds { self.seeds[seed] = Seed() }
    }

    /// The node's listener is bound (its port known only now, where it asked for port 0): the address its own seeds
    /// are told apart by, and the seeds to join. Peers that dialed in meanwhile stay known: the listener takes
    /// connections from the moment it is bound, and a peer learned before this must be held, resumed and
    /// forgotten like any other.
    public mutating func bound(listen: NodeAddress, seeds: [NodeAddress]) {
        configuration.listen = listen
        for seed in seeds where self.seeds[seed] == nil { self.seeds[seed] = Seed() }
    }

    // MARK: Seeds

    public mutating func seedProbing(_ address: NodeAddress, _ probing: Bool) {
        seeds[address]?.probing = probing
        candidates[address]?.probing = probing
    }

    /// The seed answered: its node is known now.
    public mutating func seedAnswered(_ address: NodeAddress) {
        seeds[address]?.probing = false
        seeds[address]?.attempts = 0
        candidates[address] = nil
    }

    // MARK: Peers

    /// A peer named itself (HELLO) or was named (MEMBERS, the directory). A new incarnation of a known name
    /// replaces the old one, which is forgotten first.
    public mutating func learn(
        name: String, listen: NodeAddress, incarnation: UInt64, actions: inout [Action]
    ) -> Admission {
        if let known = peers[name] {
            if known.incarnation == incarnation || incarnation == 0 { return .known }
            forget(name, reason: "restarted", actions: &actions)
        }
        guard peers.count < configuration.membersMax else { return .full }
        peers[name] = Peer(listen: listen, incarnation: incarnation)
        return .admitted
    }

    /// A peer told of node `name` at `listen`. True when it is new and there is room among the candidates: the
    /// caller probes it now (``dialSeed`` on later ticks, up to ``Configuration/dialAttemptsMax`` times in all).
    public mutating func propose(name: String, listen: NodeAddress) -> Bool {
        guard peers[name] == nil, seeds[listen] == nil, candidates[listen] == nil, listen != configuration.listen,
            candidates.count < configuration.membersMax
        else { return false }
        candidates[listen] = Candidate(name: name, attempts: 1)
        return true
    }

    /// What the peer's HELLO says it can do.
    public mutating func peerResumes(_ name: String, _ resumes: Bool) {
        peers[name]?.resumes = resumes
    }

    private mutating func forget(_ name: String, reason: String, actions: inout [Action]) {
        guard peers.removeValue(forKey: name) != nil else { return }
        actions.append(.forget(name, reason: reason))
    }

    /// The node forgets `name` for a reason of its own (it is stopping, a protocol violation).
    public mutating func remove(_ name: String, reason: String, actions: inout [Action]) {
        forget(name, reason: reason, actions: &actions)
    }

    // MARK: Events of links

    /// Once a second: seeds not answered yet are dialed, links missing stripes are completed, heartbeats are due,
    /// and links that are down are redialed until their hold time (or their dial attempts) ran out.
    public mutating func tick(nowNanos now: UInt64, links: [String: LinkState], actions: inout [Action]) {
        for (address, seed) in seeds.sorted(by: { $0.key.description < $1.key.description }) where !seed.probing {
            if address == configuration.listen { continue }
            // A seed that is a known member is redialed as that member (its stripes, below): a probe beside those
            // dials reached the seed as a second stripe 0 once and replaced the member's own, which both ends then
            // lost (the member is forgotten after its hold time, and the seed is probed again).
            if peers.contains(where: { $0.value.listen == address }) { continue }
            seeds[address]?.attempts += 1
            actions.append(.dialSeed(address))
        }
        for (address, candidate) in candidates.sorted(by: { $0.key.description < $1.key.description })
        where !candidate.probing {
            guard candidate.attempts < configuration.dialAttemptsMax, peers[candidate.name] == nil else {
                candidates[address] = nil
                continue
            }
            candidates[address]?.attempts += 1
            actions.append(.dialSeed(address))
        }
        for name in peers.keys.sorted() {
            let link = links[name] ?? LinkState(isUp: false, missingStripes: true)
            guard let peer = peers[name] else { continue }
            if link.isUp {
                if link.missingStripes { actions.append(.dial(name)) }
                if peer.resumes && now &- peer.heartbeatNanos >= configuration.heartbeatIntervalNanos {
                    peers[name]?.heartbeatNanos = now
                    actions.append(.heartbeat(name))
                }
                continue
            }
            peers[name]?.dialAttempts += 1
            if let lost = peer.lostAtNanos {
                // Redialed for as long as its messages are held; a moment past the hold time they fail first, each
                // naming the offset it reached, then the member goes.
                if now &- lost >= configuration.resumeHoldNanos + configuration.forgetAfterHoldNanos {
                    let seconds = configuration.resumeHoldNanos / 1_000_000_000
                    forget(name, reason: "the link broke and did not come back within \(seconds) s", actions: &actions)
                    continue
                }
            } else if peer.dialAttempts + 1 > configuration.dialAttemptsMax {
                forget(name, reason: "unreachable", actions: &actions)
                continue
            }
            actions.append(.dial(name))
        }
    }

    /// One connection of the link to `name` closed. A peer that cannot resume is gone with it. Otherwise: with no
    /// connection of the peer's left, the messages it sends are held; with no stripe of this node's left, the link
    /// is down, the messages sent to it are held and it is redialed at once; with stripes left, what the lost one
    /// carried goes again once the loss settled.
    public mutating func connectionLost(
        _ name: String, _ loss: Loss, reason: String, nowNanos now: UInt64, actions: inout [Action]
    ) {
        guard let peer = peers[name] else { return }
        guard peer.resumes, !stopping else { return forget(name, reason: reason, actions: &actions) }
        if loss.ingress && !loss.ingressLeft { actions.append(.holdUpstream(name)) }
        if loss.egress && !loss.linkUp {
            guard peer.lostAtNanos == nil else { return }
            peers[name]?.lostAtNanos = now
            peers[name]?.dialAttempts = 0
            peers[name]?.stripeLossPending = false
            peers[name]?.controlLossPending = false
            actions.append(.holdMessages(name, reason: reason))
            actions.append(.dial(name))
        } else if loss.egress {
            peers[name]?.stripeLossPending = true
            peers[name]?.controlLossPending = peer.controlLossPending || loss.control
            actions.append(.settleStripeLoss(name))
        }
    }

    /// The moment after a stripe loss passed: if the link still stands, what the lost stripes carried goes again.
    public mutating func stripeLossSettled(_ name: String, linkUp: Bool, actions: inout [Action]) {
        guard linkUp, let peer = peers[name], peer.stripeLossPending else { return }
        peers[name]?.stripeLossPending = false
        peers[name]?.controlLossPending = false
        actions.append(.resend(name, control: peer.controlLossPending))
    }

    /// A stripe to `name` was dialed and stands: a link that was down is back.
    public mutating func stripeUp(_ name: String, actions: inout [Action]) {
        guard peers[name]?.lostAtNanos != nil else { return }
        peers[name]?.lostAtNanos = nil
        peers[name]?.dialAttempts = 0
        actions.append(.resume(name))
    }

    /// A dial to `name` failed. Refused while its link is down: nothing listens where the peer was, its process is
    /// gone, and nothing can resume.
    public mutating func dialFailed(_ name: String, refused: Bool, linkUp: Bool, actions: inout [Action]) {
        guard let peer = peers[name], peer.lostAtNanos != nil, !linkUp, refused else { return }
        forget(name, reason: "its link broke and it refuses connections", actions: &actions)
    }
}
