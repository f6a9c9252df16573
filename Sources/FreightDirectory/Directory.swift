import FreightCore

/// Maps addresses to endpoints. The `mesh` directory (``EndpointIndex`` fed by peers' announcements) implements it
/// today; an etcd-backed directory implements the same lookups over etcd's keys.
public protocol Directory {
    /// Endpoints whose pattern matches `address`.
    func match(_ address: Address) -> [EndpointRecord]
    /// Endpoints whose pattern some address matching `pattern` would match (for `freight resolve`).
    func overlapping(_ pattern: AddressPattern) -> [EndpointRecord]
    /// All endpoints held at `node`.
    func endpoints(at node: String) -> [EndpointRecord]
    var count: Int { get }
}

/// The local index of a directory: every endpoint known to this node, looked up through a ``PatternTrie``.
public final class EndpointIndex: Directory {
    private let trie = PatternTrie<EndpointKey>()
    private var records: [EndpointKey: EndpointRecord] = [:]
    private var byNode: [String: Set<EndpointKey>] = [:]

    /// A change to the index, for watchers.
    public enum Change: Sendable {
        case added(EndpointRecord)
        case removed(EndpointRecord)
    }

    /// Called on every change while set (by whoever owns the index, on its thread).
    public var onChange: ((Change) -> Void)?

    /// Order-independent digest of every key held: XOR of ``keyHash(_:)``. Two indexes with the same keys have the
    /// same digest, whatever order they learned them in (tests compare nodes' views with etcd's this way).
    public private(set) var digest: UInt64 = 0
    /// Counts the changes: an owner that derives something from the whole index does it again when this moved.
    public private(set) var version: UInt64 = 0

    public init() {}

    /// 64-bit FNV-1a of "NODE/ID".
    public static func keyHash(_ key: EndpointKey) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "\(key.node)/\(key.id)".utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return hash
    }

    public var count: Int { records.count }

    public func count(at node: String) -> Int { byNode[node]?.count ?? 0 }

    /// Nodes that hold at least one endpoint.
    public var nodes: [String] { Array(byNode.keys) }

    public func record(_ key: EndpointKey) -> EndpointRecord? { records[key] }

    /// Adds or replaces an endpoint.
    public func upsert(_ record: EndpointRecord) {
        if let old = records[record.key] {
            if old == record { return }
            trie.remove(old.pattern, old.key)
        } else {
            digest ^= Self.keyHash(record.key)
        }
        records[record.key] = record
        version &+= 1
        trie.insert(record.pattern, record.key)
        byNode[record.key.node, default: []].insert(record.key)
        onChange?(.added(record))
    }

    @discardableResult
    public func remove(_ key: EndpointKey) -> EndpointRecord? {
        guard let old = records.removeValue(forKey: key) else { return nil }
        digest ^= Self.keyHash(key)
        version &+= 1
        trie.remove(old.pattern, key)
        byNode[key.node]?.remove(key)
        if byNode[key.node]?.isEmpty == true { byNode[key.node] = nil }
        onChange?(.removed(old))
        return old
    }

    /// Drops every endpoint of `node` (it went away, or it sent a full snapshot); returns how many.
    @discardableResult
    public func removeAll(at node: String) -> Int {
        guard let keys = byNode.removeValue(forKey: node) else { return 0 }
        version &+= 1
        for key in keys {
            if let old = records.removeValue(forKey: key) {
                digest ^= Self.keyHash(key)
                trie.remove(old.pattern, key)
                onChange?(.removed(old))
            }
        }
        // A dictionary keeps its capacity when emptied: after a large drop, the table is copied to one of its size,
        // so that a peer that announced a million endpoints and left leaves no room for them behind.
        if keys.count >= Self.compactAfterRemovals, records.capacity > 4 * max(records.count, 1024) {
            records = Dictionary(uniqueKeysWithValues: records.map { ($0.key, $0.value) })
        }
        return keys.count
    }

    /// Endpoints dropped at once past which the table is compacted.
    static let compactAfterRemovals = 10_000

    public func match(_ address: Address) -> [EndpointRecord] {
        trie.match(address).compactMap { records[$0] }
    }

    public func overlapping(_ pattern: AddressPattern) -> [EndpointRecord] {
        records.values.filter { $0.pattern.overlaps(pattern) }
    }

    public func endpoints(at node: String) -> [EndpointRecord] {
        (byNode[node] ?? []).compactMap { records[$0] }
    }
}
