import FreightCore
import FreightDirectory
import FreightWire

/// A message whose upstream sends its bytes again from an offset after it moved to another gateway (docs/gateways.md,
/// "Resume through another gateway"): chunks sent before it heard where from are still on their way, on stripes that
/// reorder against each other. They carry the same bytes at the same offsets, so they are let through where they fit
/// and dropped quietly where they do not (below the offset, or past the credit: the old way had credit of its own),
/// instead of failing the message.
public enum ResumeGate: Sendable, Equatable {
    /// The message was opened here by a resume OPEN (it moved to this node from a gateway that went away): its branch
    /// says from where, in the ACK that answers the resume. Until then every chunk is dropped.
    case awaitingOffset
    /// The upstream was asked to send again from this offset.
    case resending(from: UInt64)
}

/// One message passing through a node: one upstream, one or more branches downstream. Bytes are forwarded chunk by
/// chunk as they arrive (cut-through); the node holds at most the credit it granted upstream beyond what every
/// branch acknowledged. A value: only ``FlowTable`` changes it.
public struct Flow: Sendable {
    public enum BranchState: Sendable {
        case open
        /// Its link broke; it waits (until the hold time ends) for the link to come back and resume.
        case suspended(sinceNanos: UInt64)
        case done(Freight_Wire_V1_Done)
        case failed(FreightError, acked: UInt64)
    }

    /// A message's way into another cluster (docs/gateways.md, "Groups across clusters"): the cluster, whether its
    /// pattern receivers take the message, and which of its `any` groups do.
    public struct Remote: Hashable, Sendable {
        public var cluster: String
        public var patterns: Bool
        public var groups: [RouteGroup]

        public init(cluster: String, patterns: Bool = true, groups: [RouteGroup] = []) {
            self.cluster = cluster
            self.patterns = patterns
            self.groups = groups
        }
    }

    public struct Branch: Sendable {
        public var port: FlowPort
        public var targets: [EndpointKey]
        public var ackedOffset: UInt64 = 0
        public var creditOffset: UInt64 = 0
        public var state: BranchState = .open
        /// The rails this branch's chunks may take (a peer branch whose plan names rails); nil: any.
        public var rails: [Int]?
        /// When it last acknowledged or granted more (or opened), on the table's clock: a branch that holds the
        /// others back with no progress for the slow-receiver time is cut (docs/hardening.md).
        public var progressNanos: UInt64 = 0
        /// What this branch carries to another cluster through a gateway of this one (docs/gateways.md): a branch
        /// suspended on a gateway that went away moves to another gateway that carries the same
        /// (``FlowTable/reroute(_:from:to:actions:)``).
        public var remote: Remote?

        /// The branch acknowledged or granted credit at least once: its OPEN arrived.
        public var heard: Bool { ackedOffset > 0 || creditOffset > 0 }
        /// Live: bytes go to it now.
        public var isOpen: Bool { if case .open = state { true } else { false } }
        /// Not finished: live, or suspended until its link comes back.
        public var isPending: Bool {
            switch state {
            case .open, .suspended: true
            case .done, .failed: false
            }
        }

        public init(port: FlowPort, targets: [EndpointKey], rails: [Int]? = nil, remote: Remote? = nil) {
            self.port = port
            self.targets = targets
            self.rails = rails
            self.remote = remote
        }

        /// A branch that failed before it opened (its node is not reachable).
        public static func unreachable(_ port: FlowPort, targets: [EndpointKey], _ error: FreightError) -> Branch {
            var branch = Branch(port: port, targets: targets)
            branch.state = .failed(error, acked: 0)
            return branch
        }
    }

    public let id: UInt64
    public let header: Freight_Wire_V1_MessageHeader
    /// Where the message comes from; another gateway of the same cluster may take it over
    /// (``FlowTable/resume(_:from:recording:mayAdopt:actions:)``).
    public internal(set) var upstream: FlowPort
    public internal(set) var branches: [Branch]
    /// Nodes the message has passed, this one last.
    public let path: [String]
    /// Bytes this flow holds of the node's memory budget.
    public internal(set) var reservedBytes: Int
    /// Most credit granted upstream beyond what every branch acknowledged: the node's window (or more, for a message
    /// that crossed a WAN link: ``windowHint``), or the whole length for a shared-buffer message between apps of one
    /// node, whose bytes no node holds.
    public internal(set) var windowBytes: UInt64
    /// Receivers are told the body comes from one shared buffer (OPEN's `shared`).
    public let shared: Bool
    /// The window a gateway asked of every node and app after it (OPEN's `window_hint`, docs/wan.md): passed on in
    /// the OPENs this node sends.
    public internal(set) var windowHint: UInt64 = 0
    /// Set on a detour: the message whose bytes this one carries to another gateway pair, and where they rejoin it
    /// (OPEN's `part`, docs/wan.md, "Over every gateway pair"). Passed on in the OPENs this node sends.
    public internal(set) var part: Freight_Wire_V1_Part?
    /// The window grew here and the node upstream has not been told yet (ACK's `window_hint`).
    public internal(set) var tellsUpstreamWindow = false
    /// Credit and acknowledgement granted upstream so far.
    public internal(set) var upstreamCredit: UInt64 = 0
    public internal(set) var upstreamAcked: UInt64 = 0
    /// Body bytes admitted from upstream (bytes sent again after a resume count again).
    public internal(set) var bytesForwarded: UInt64 = 0
    /// The furthest end of a chunk admitted from upstream: how much of its credit the upstream used.
    public internal(set) var admittedEnd: UInt64 = 0
    /// The upstream can send bytes again from an offset (an app or in-process source that says so, or a peer that
    /// resumes): only then may a broken link suspend a branch instead of failing it.
    public let upstreamResends: Bool
    /// The link to upstream broke at this time: the flow is held for it to come back (docs/core.md).
    public internal(set) var upstreamLostNanos: UInt64?
    /// Offsets at which the upstream link resumed at this node.
    public internal(set) var resumes: [UInt64] = []
    /// The upstream was asked to send again from this offset (a resume) and no chunk from there has arrived yet:
    /// the request goes again whenever acknowledgements to it may have been lost (``FlowTable/controlLost(_:actions:)``).
    public internal(set) var resendAwaited: UInt64?
    /// Times a branch asked this node to have the message sent again from an offset
    /// (``Limits/rewindsPerMessageMax``).
    public internal(set) var rewinds = 0
    /// When bytes last came from the upstream (or the message opened), on the table's clock: a message whose
    /// upstream has credit and sends nothing for the idle time is aborted and its reservation returned.
    public internal(set) var upstreamProgressNanos: UInt64 = 0
    /// When the flow opened, on the table's clock.
    public internal(set) var startedNanos: UInt64 = 0
    /// Chunks are dropped here, without failing the message, until the upstream sends again from where the receiver
    /// is (docs/gateways.md, "Resume through another gateway").
    public internal(set) var gate: ResumeGate?

    public var length: UInt64 { header.length }
    public var allBranchesFinished: Bool { !branches.contains { $0.isPending } }

    /// The index of the live branch to `port`.
    func openBranch(_ port: FlowPort) -> Int? { branches.firstIndex { $0.port == port && $0.isOpen } }
    /// The index of the branch to `port` that has not finished (live or suspended).
    func pendingBranch(_ port: FlowPort) -> Int? { branches.firstIndex { $0.port == port && $0.isPending } }

    /// The acknowledgement and credit to report upstream: the minimum over open branches, capped by this node's
    /// window. Nil when nothing moved.
    mutating func upstreamUpdate() -> (acked: UInt64, credit: UInt64)? {
        var acked = UInt64.max
        var branchCredit = UInt64.max
        for branch in branches where branch.isPending {
            acked = min(acked, branch.ackedOffset)
            branchCredit = min(branchCredit, branch.creditOffset)
        }
        guard acked != .max else { return nil }
        let credit = min(branchCredit, acked + windowBytes, length)
        guard acked > upstreamAcked || credit > upstreamCredit else { return nil }
        upstreamAcked = max(upstreamAcked, acked)
        upstreamCredit = max(upstreamCredit, credit)
        return (upstreamAcked, upstreamCredit)
    }

    /// What to tell upstream once every branch finished: DONE when at least one delivered (the failures listed in
    /// it), ABORT with the first failure otherwise.
    func outcome(nodeName: String) -> Frame {
        var done = Freight_Wire_V1_Done()
        done.messageID = id
        var firstFailure: (FreightError, UInt64)?
        for branch in branches {
            switch branch.state {
            case .open, .suspended:
                break
            case .done(let branchDone):
                done.deliveries += branchDone.deliveries
                done.failures += branchDone.failures
            case .failed(let error, let acked):
                if firstFailure == nil { firstFailure = (error, acked) }
                for target in branch.targets {
                    var failure = Freight_Wire_V1_Failure()
                    failure.endpoint.node = target.node
                    failure.endpoint.id = target.id
                    failure.code = error.code.rawValue
                    failure.reason = error.message
                    failure.ackedOffset = acked
                    done.failures.append(failure)
                }
            }
        }
        if done.deliveries.isEmpty {
            let (error, acked) = firstFailure ?? (FreightError(.internalError, "message ended with no delivery"), 0)
            return .abort(id, error, ackedOffset: acked)
        }
        for i in done.deliveries.indices {
            if done.deliveries[i].path.first != nodeName { done.deliveries[i].path.insert(nodeName, at: 0) }
            done.deliveries[i].resumedAt.insert(contentsOf: resumes, at: 0)
        }
        return .done(done)
    }
}
