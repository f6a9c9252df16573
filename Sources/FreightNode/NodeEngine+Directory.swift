import FreightCore
import FreightDirectory
import FreightTransport

/// The engine's side of a directory backend (docs/directory.md): the backend reads and writes the cluster's
/// directory; the engine applies what it learns to its one index, on its loop.
extension NodeEngine {
    /// True when endpoints and members travel by gossip between nodes (no backend).
    var usesMesh: Bool { configuration.directory == nil }

    /// Replaces everything the index holds for other nodes with a full read of the directory.
    public func directorySnapshot(
        nodes: [NodeRecord], endpoints: [EndpointRecord], functions: [FunctionRecord]
    ) {
        eventLoop.execute { [self] in
            functionTable.replace(with: functions)
            let fresh = Set(endpoints.map(\.key))
            for node in index.nodes where node != name {
                for record in index.endpoints(at: node) where !fresh.contains(record.key) { index.remove(record.key) }
            }
            for record in endpoints where record.key.node != name { index.upsert(record) }
            directoryNodes = [:]
            for node in nodes where node.name != name {
                directoryNodes[node.name] = node
                if let member = members[node.name] { adopt(node, for: member) }
            }
            joinDirectoryNodes()
        }
    }

    /// Applies changes read from the directory (other nodes' endpoints and the nodes themselves).
    public func directoryApply(_ updates: [DirectoryUpdate]) {
        eventLoop.execute { [self] in
            for update in updates {
                switch update {
                case .endpoint(let record) where record.key.node != name:
                    index.upsert(record)
                case .endpointGone(let key) where key.node != name:
                    index.remove(key)
                case .node(let record) where record.name != name:
                    directoryNodes[record.name] = record
                    if let member = members[record.name] { adopt(record, for: member) }
                case .function(let record):
                    functionTable.merge(record)
                case .functionGone(let address):
                    functionTable.forget(address)
                case .nodeGone(let node) where node != name:
                    directoryNodes[node] = nil
                    if index.removeAll(at: node) >= MemoryTuning.trimAfterDroppedEntries {
                        MemoryTuning.returnFreeMemory()
                    }
                default:
                    break
                }
            }
            joinDirectoryNodes()
        }
    }

    /// This node's own endpoints now, for a backend that re-publishes them after an outage.
    public func localRecords() async throws -> [EndpointRecord] {
        try await eventLoop.submit { [self] in localEndpoints.records }.get()
    }

    /// Dials every node the directory names that this node has no link to.
    func joinDirectoryNodes() {
        for (node, record) in directoryNodes where members[node] == nil {
            if let member = learn(record) { dial(member) }
        }
    }
}
