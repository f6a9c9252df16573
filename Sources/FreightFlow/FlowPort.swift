/// Who a flow talks to on one side: an app session on this node, a peer node, or an in-process port.
public enum FlowPort: Hashable, Sendable, CustomStringConvertible {
    case session(UInt64)
    case peer(String)
    /// An in-process endpoint or sender.
    case local(UInt64)

    /// On this node: an app session or an in-process port.
    public var isLocal: Bool { if case .peer = self { false } else { true } }

    public var description: String {
        switch self {
        case .session(let id): "app session \(id)"
        case .peer(let name): "node \(name)"
        case .local(let id): "in-process port \(id)"
        }
    }
}
