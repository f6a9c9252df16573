import FreightCore
import FreightWire

/// A WebAssembly module bound to an address across a cluster (docs/functions.md, "Function endpoints"). It
/// travels in the mesh's FUNCTIONS frames and as the value of etcd's `functions/ADDRESS` key; the module's bytes
/// do not: nodes fetch them by digest from `_fn/modules/DIGEST`.
public struct FunctionRecord: Sendable, Hashable {
    public var address: Address
    /// SHA-256 of the module's bytes, hex (64 characters).
    public var digest: String
    public var moduleBytes: UInt64
    /// At most this many messages run the module at once, across the cluster.
    public var maxInstances: Int
    public var config: String
    /// When it was deployed or removed (unix nanoseconds): the newer record of an address wins.
    public var version: UInt64
    public var deployedBy: String
    /// A removal, kept by the mesh so that an older record does not come back.
    public var removed: Bool
    public var name: String

    public init(
        address: Address, digest: String, moduleBytes: UInt64, maxInstances: Int, config: String = "",
        version: UInt64, deployedBy: String, removed: Bool = false, name: String = ""
    ) {
        self.address = address
        self.digest = digest
        self.moduleBytes = moduleBytes
        self.maxInstances = maxInstances
        self.config = config
        self.version = version
        self.deployedBy = deployedBy
        self.removed = removed
        self.name = name
    }

    /// Reads a record that came from the network or from etcd, checking every limit.
    public init(wire: Freight_Wire_V1_FunctionRecord) throws(FreightError) {
        let address = try Address(wire.address)
        guard FunctionRecord.isDigest(wire.digest) else {
            throw FreightError(.protocolViolation, "function \(address): digest is not 64 hex characters")
        }
        guard wire.moduleBytes <= UInt64(Limits.functionModuleBytesMax) else {
            throw FreightError(.protocolViolation, "function \(address): module of \(wire.moduleBytes) bytes")
        }
        guard wire.removed || (1...Limits.functionInstancesMax).contains(Int(wire.maxInstances)) else {
            throw FreightError(
                .protocolViolation,
                "function \(address): \(wire.maxInstances) instances (1 to \(Limits.functionInstancesMax))")
        }
        guard wire.config.utf8.count <= Limits.functionConfigBytesMax, wire.name.utf8.count <= Limits.nameBytesMax,
            wire.deployedBy.isEmpty || AddressGrammar.isName(wire.deployedBy)
        else {
            throw FreightError(.protocolViolation, "function \(address): config, name or node over their limits")
        }
        self.init(
            address: address, digest: wire.digest, moduleBytes: wire.moduleBytes,
            maxInstances: Int(wire.maxInstances), config: wire.config, version: wire.version,
            deployedBy: wire.deployedBy, removed: wire.removed, name: wire.name)
    }

    public var wire: Freight_Wire_V1_FunctionRecord {
        .with {
            $0.address = address.description
            $0.digest = digest
            $0.moduleBytes = moduleBytes
            $0.maxInstances = UInt32(maxInstances)
            $0.config = config
            $0.version = version
            $0.deployedBy = deployedBy
            $0.removed = removed
            $0.name = name
        }
    }

    /// Whether `self` replaces `other` of the same address: the newer version, then the greater node name (two
    /// deploys in the same nanosecond end the same way everywhere).
    public func supersedes(_ other: FunctionRecord) -> Bool {
        (version, deployedBy, digest) > (other.version, other.deployedBy, other.digest)
    }

    public static func isDigest(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    /// Where functions may not be bound: the fabric's own addresses.
    public static func reservedRefusal(_ address: Address) -> String? {
        guard let first = address.segments.first,
            first == Limits.inboxSegment || first == Limits.functionSegment || first.hasPrefix("_")
        else { return nil }
        return "addresses under \(first)/ belong to the fabric; bind a function to an address of your own"
    }
}

/// The function records a node knows, the newer of each address kept (removals too, in the mesh). Pure.
public struct FunctionTable: Sendable {
    public private(set) var records: [Address: FunctionRecord] = [:]

    public init() {}

    /// The functions bound now (removals left out), by address.
    public var live: [FunctionRecord] {
        records.values.filter { !$0.removed }.sorted { $0.address.description < $1.address.description }
    }

    public subscript(address: Address) -> FunctionRecord? {
        records[address].flatMap { $0.removed ? nil : $0 }
    }

    /// Takes `record` when it is newer than what the table holds; true when it did. A full table drops its
    /// oldest removal first, and refuses a new address when it holds nothing but live functions.
    @discardableResult
    public mutating func merge(_ record: FunctionRecord) -> Bool {
        if let known = records[record.address] {
            guard record.supersedes(known) else { return false }
            records[record.address] = record
            return true
        }
        if records.count >= Limits.functionsMax {
            guard let oldest = records.values.filter(\.removed).min(by: { $0.version < $1.version }) else {
                return false
            }
            records[oldest.address] = nil
        }
        records[record.address] = record
        return true
    }

    /// Forgets `address` outright (etcd deleted its key).
    public mutating func forget(_ address: Address) {
        records[address] = nil
    }

    /// Replaces the table with `records` (a full read of etcd).
    public mutating func replace(with records: [FunctionRecord]) {
        self.records = [:]
        for record in records { merge(record) }
    }
}

/// Which nodes serve a function and how many of its instances each runs at once, so that the whole cluster runs
/// at most `maxInstances` (docs/functions.md). Every node computes the same answer from the same hosts: they are
/// ranked by a hash of the function's address and their name (rendezvous hashing, so one host joining or leaving
/// moves few functions), the first `min(maxInstances, hosts)` serve, and the instances are shared among them.
/// Pure.
public enum FunctionPlacement {
    /// How many instances `node` runs of the function at `address`: 0 when it does not serve it.
    public static func share(of node: String, address: Address, maxInstances: Int, hosts: [String]) -> Int {
        let ranked = Set(hosts).sorted { a, b in
            let (ha, hb) = (weight(address, a), weight(address, b))
            return ha != hb ? ha > hb : a < b
        }
        let serving = min(max(maxInstances, 0), ranked.count)
        guard serving > 0, let rank = ranked.firstIndex(of: node), rank < serving else { return 0 }
        return maxInstances / serving + (rank < maxInstances % serving ? 1 : 0)
    }

    /// FNV-1a of the address and node name, then a mixing step.
    static func weight(_ address: Address, _ node: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in address.description.utf8 + [0] + node.utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        hash ^= hash >> 33
        hash = hash &* 0xff51_afd7_ed55_8ccd
        hash ^= hash >> 33
        return hash
    }
}
