import FreightCore
import FreightDirectory

/// Whether a node's directory backend can be reached.
public enum DirectoryHealth: Sendable, Equatable {
    case reachable
    case unreachable(String)
}

/// The node a directory backend keeps in step: it reads the node's own record and endpoints, and hands it what
/// the directory says about other nodes. Every method may be called from any task.
public protocol DirectoryClient: AnyObject, Sendable {
    var nodeName: String { get }
    var clusterName: String { get }
    /// This node's record now.
    func selfRecord() async throws -> NodeRecord
    /// This node's own endpoints now, for a backend that re-publishes them after an outage.
    func localRecords() async throws -> [EndpointRecord]
    /// Replaces everything the node knows of other nodes with a full read of the directory.
    func directorySnapshot(nodes: [NodeRecord], endpoints: [EndpointRecord], functions: [FunctionRecord])
    /// Applies changes read from the directory.
    func directoryApply(_ updates: [DirectoryUpdate])
}

/// Keeps a node's endpoint index in step with its cluster and publishes the node's own endpoints
/// (docs/directory.md). The mesh directory is the engine's own gossip and needs no backend; etcd is one. It runs as
/// a service beside the node (``run(keeping:)``); `publish` and `withdraw` are called from the node's loop and
/// must not block it.
public protocol DirectoryBackend: AnyObject, Sendable {
    /// "etcd", for status.
    var kind: String { get }
    /// Whether the backend is reachable now (any thread).
    var health: DirectoryHealth { get }
    /// Keeps `client` in step until the task is cancelled, reaching the backend again after every failure.
    /// Registrations made meanwhile wait for it (``Limits/directoryWaitSeconds``); on return every one still
    /// waiting has failed.
    func run(keeping client: any DirectoryClient) async
    /// Publishes this node's new endpoints; `completion` runs (on any thread) once the backend holds them, or
    /// with the reason it cannot.
    func publish(_ records: [EndpointRecord], completion: @escaping @Sendable (FreightError?) -> Void)
    /// Withdraws this node's endpoints (best effort now; made good on the next reconciliation).
    func withdraw(_ keys: [EndpointKey])
    /// Binds `record` to `address` across the cluster, or with nil unbinds it (docs/functions.md); `completion`
    /// runs once the backend holds the change, or with the reason it cannot.
    func function(
        _ address: Address, _ record: FunctionRecord?, completion: @escaping @Sendable (FreightError?) -> Void)
}

/// What a backend tells the engine about other nodes.
public enum DirectoryUpdate: Sendable {
    case endpoint(EndpointRecord)
    case endpointGone(EndpointKey)
    case node(NodeRecord)
    case nodeGone(String)
    case function(FunctionRecord)
    case functionGone(Address)
}
