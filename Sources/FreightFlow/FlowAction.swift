import FreightCore
import FreightWire

/// What ``FlowTable`` asks its owner to carry out after an event.
public enum FlowAction: Sendable {
    /// Write a control frame to a port (a port that is gone drops it).
    case send(Frame, to: FlowPort)
    /// A branch acknowledged every byte below `acked`: what was lent for those bytes can be returned.
    case branchProgress(messageID: UInt64, port: FlowPort, acked: UInt64)
    /// A branch ended (delivered or failed): everything lent for it can be returned.
    case branchEnded(messageID: UInt64, port: FlowPort)
    /// A branch's link broke (it is suspended, or the bytes past what it acknowledged are sent again): what was
    /// lent for its bytes can be returned, as the source sends them again from its own copy.
    case branchRewound(messageID: UInt64, port: FlowPort)
    /// The flow is gone from the table: its memory is back in the budget; anything still lent for it returns. What
    /// became of it is in `end` (for metrics and traces).
    case finished(FlowEnd)
    /// Something a peer did wrong that ends nothing but deserves a line in the log.
    case warning(String)
}

/// How a message ended at this node: what its metrics and its span record.
public struct FlowEnd: Sendable, Equatable {
    public var messageID: UInt64
    /// Where it was sent (the header's destination).
    public var address: String
    /// The header's W3C trace context, if the message is traced.
    public var traceparent: String
    public var length: UInt64
    /// Body bytes this node admitted from upstream.
    public var bytes: UInt64
    /// When the flow opened and when it ended, on the table's clock (``FlowTable/observe(now:)``).
    public var startedNanos: UInt64
    public var endedNanos: UInt64
    /// Why it failed everywhere, or nil when at least one receiver has it.
    public var failure: FreightError.Code?
    /// The failure's message, when it failed.
    public var reason: String?
    /// Times its upstream link resumed at this node.
    public var resumes: Int
    /// Where it came from, and where each branch went: the links its outcome is counted on.
    public var upstream: FlowPort
    public var branches: [BranchEnd]

    /// How one branch ended: its port, the body bytes it acknowledged, and whether its receivers have the message.
    public struct BranchEnd: Sendable, Equatable {
        public var port: FlowPort
        public var bytes: UInt64
        public var delivered: Bool

        public init(port: FlowPort, bytes: UInt64, delivered: Bool) {
            self.port = port
            self.bytes = bytes
            self.delivered = delivered
        }
    }

    public var nanos: UInt64 { endedNanos &- startedNanos }

    public init(
        messageID: UInt64, address: String = "", traceparent: String = "", length: UInt64, bytes: UInt64,
        startedNanos: UInt64,
        endedNanos: UInt64, failure: FreightError.Code?, reason: String? = nil, resumes: Int,
        upstream: FlowPort = .local(0), branches: [BranchEnd] = []
    ) {
        self.upstream = upstream
        self.branches = branches
        self.messageID = messageID
        self.address = address
        self.traceparent = traceparent
        self.reason = reason
        self.length = length
        self.bytes = bytes
        self.startedNanos = startedNanos
        self.endedNanos = endedNanos
        self.failure = failure
        self.resumes = resumes
    }
}
