import FreightCore
import FreightDirectory
import FreightWire

/// Who a flow talks to on one side: an app session on this node, or a peer node.
enum Port: Hashable, CustomStringConvertible {
    case session(UInt64)
    case peer(String)
    /// An in-process endpoint or sender (``LocalPort``).
    case local(UInt64)

    /// On this node: an app session or an in-process port.
    var isLocal: Bool { if case .peer = self { false } else { true } }

    var description: String {
        switch self {
        case .session(let id): "app session \(id)"
        case .peer(let name): "node \(name)"
        case .local(let id): "in-process port \(id)"
        }
    }
}

/// One message passing through this node: one upstream, one or more branches downstream. Bytes are forwarded
/// chunk by chunk as they arrive (cut-through); the node holds at most the credit it granted upstream beyond
/// what every branch acknowledged.
struct Flow {
    enum BranchState {
        case open
        case done(Freight_Wire_V1_Done)
        case failed(FreightError, acked: UInt64)
    }

    struct Branch {
        var port: Port
        var targets: [EndpointKey]
        var ackedOffset: UInt64 = 0
        var creditOffset: UInt64 = 0
        var state: BranchState = .open
        /// Shared regions sent to this branch's peer with `sendfile`: the kernel sends the pool's pages by
        /// reference, so a region is in use until the branch acknowledges the bytes past its end (then they have
        /// been read out of every socket) or the branch ends.
        var loans: [(end: UInt64, loan: Loan)] = []
        /// The rails this branch's chunks may take (a peer branch whose plan names rails); nil: any.
        var rails: [Int]?

        var isOpen: Bool { if case .open = state { true } else { false } }
    }

    let id: UInt64
    let header: Freight_Wire_V1_MessageHeader
    let upstream: Port
    var branches: [Branch]
    var path: [String]
    /// Bytes this flow may occupy on this node.
    let reservedBytes: Int
    /// Most credit granted upstream beyond what every branch acknowledged: the node's window, or the whole length
    /// for a shared-buffer message between apps of this node, whose bytes no node holds.
    let windowBytes: UInt64
    /// Receivers are told the body comes from one shared buffer (OPEN's `shared`).
    let shared: Bool
    /// Credit and acknowledgement granted upstream so far.
    var upstreamCredit: UInt64 = 0
    var upstreamAcked: UInt64 = 0
    var bytesForwarded: UInt64 = 0

    var length: UInt64 { header.length }
    var allBranchesFinished: Bool { !branches.contains { $0.isOpen } }

    /// The acknowledgement and credit to report upstream: the minimum over open branches, capped by this node's
    /// window. Returns nil when nothing moved.
    mutating func upstreamUpdate() -> (acked: UInt64, credit: UInt64)? {
        var acked = UInt64.max
        var branchCredit = UInt64.max
        for branch in branches where branch.isOpen {
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

    /// What to tell upstream once every branch finished: Done when at least one delivered, Abort otherwise.
    func outcome(nodeName: String) -> Frame {
        var done = Freight_Wire_V1_Done()
        done.messageID = id
        var firstFailure: (FreightError, UInt64)?
        for branch in branches {
            switch branch.state {
            case .open:
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
        for i in done.deliveries.indices where done.deliveries[i].path.first != nodeName {
            done.deliveries[i].path.insert(nodeName, at: 0)
        }
        return .done(done)
    }
}
