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
    /// The flow is gone from the table: its memory is back in the budget; anything still lent for it returns.
    case finished(messageID: UInt64)
    /// Something a peer did wrong that ends nothing but deserves a line in the log.
    case warning(String)
}
