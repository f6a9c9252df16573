import FreightCore
import FreightDirectory
import FreightTransport

/// Whether a node's directory backend can be reached.
public enum DirectoryHealth: Sendable, Equatable {
    case reachable
    case unreachable(String)
}

/// Keeps a node's endpoint index in step with its cluster and publishes the node's own endpoints
/// (docs/directory.md). The mesh directory is the engine's own gossip and needs no backend; etcd is one.
/// Every method may be called from the engine's loop and must not block it.
public protocol DirectoryBackend: AnyObject, Sendable {
    /// "etcd", for status.
    var kind: String { get }
    /// Whether the backend is reachable now (any thread).
    var health: DirectoryHealth { get }
    /// Starts keeping `engine`'s index in step; returns once the first attempt to reach the backend ended (the
    /// backend keeps retrying on its own after that).
    func start(_ engine: NodeEngine) async
    func stop() async
    /// Publishes this node's new endpoints; `completion` runs (on any thread) once the backend holds them, or
    /// with the reason it cannot.
    func publish(_ records: [EndpointRecord], completion: @escaping @Sendable (FreightError?) -> Void)
    /// Withdraws this node's endpoints (best effort now; made good on the next reconciliation).
    func withdraw(_ keys: [EndpointKey])
}

/// What a backend tells the engine about other nodes.
public enum DirectoryUpdate: Sendable {
    case endpoint(EndpointRecord)
    case endpointGone(EndpointKey)
    case node(NodeRecord)
    case nodeGone(String)
}
