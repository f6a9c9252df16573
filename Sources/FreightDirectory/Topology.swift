import FreightCore

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// The hardware of one node as route planning sees it (docs/topology.md): GPUs, the NVLink domain each belongs to,
/// NICs with their rail, and which PCIe switch and NUMA node each sits on. A plain value; it travels in the node's
/// directory record.
public struct Topology: Sendable, Hashable, Codable {
    public struct GPU: Sendable, Hashable, Codable {
        public var index: Int
        public var model: String
        public var numa: Int?
        /// GPUs and NICs with the same value sit behind one PCIe switch.
        public var pcieSwitch: String?
        /// GPUs with the same value reach each other over NVLink; a rack-scale domain spans nodes.
        public var nvlinkDomain: String?
        /// Sum of this GPU's active NVLinks, one direction.
        public var nvlinkGbitPerSecond: Double

        public init(
            index: Int, model: String = "", numa: Int? = nil, pcieSwitch: String? = nil, nvlinkDomain: String? = nil,
            nvlinkGbitPerSecond: Double = 0
        ) {
            self.index = index
            self.model = model
            self.numa = numa
            self.pcieSwitch = pcieSwitch
            self.nvlinkDomain = nvlinkDomain
            self.nvlinkGbitPerSecond = nvlinkGbitPerSecond
        }

        enum CodingKeys: String, CodingKey {
            case index, model, numa
            case pcieSwitch = "pcie_switch"
            case nvlinkDomain = "nvlink_domain"
            case nvlinkGbitPerSecond = "nvlink_gbit_per_s"
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            try Topology.refuseUnknownKeys(decoder, known: CodingKeys.self, in: "gpu")
            index = try container.decode(Int.self, forKey: .index)
            model = try container.decodeIfPresent(String.self, forKey: .model) ?? ""
            numa = try container.decodeIfPresent(Int.self, forKey: .numa)
            pcieSwitch = try container.decodeIfPresent(String.self, forKey: .pcieSwitch)
            nvlinkDomain = try container.decodeIfPresent(String.self, forKey: .nvlinkDomain)
            nvlinkGbitPerSecond = try container.decodeIfPresent(Double.self, forKey: .nvlinkGbitPerSecond) ?? 0
        }
    }

    public struct NIC: Sendable, Hashable, Codable {
        public var name: String
        /// The IP address this NIC carries, when it is one of the node's rails.
        public var address: String?
        /// Rail index: NIC i of every node meets on rail i.
        public var rail: Int?
        public var pcieSwitch: String?
        public var numa: Int?
        public var gbitPerSecond: Double

        public init(
            name: String, address: String? = nil, rail: Int? = nil, pcieSwitch: String? = nil, numa: Int? = nil,
            gbitPerSecond: Double = 0
        ) {
            self.name = name
            self.address = address
            self.rail = rail
            self.pcieSwitch = pcieSwitch
            self.numa = numa
            self.gbitPerSecond = gbitPerSecond
        }

        enum CodingKeys: String, CodingKey {
            case name, address, rail, numa
            case pcieSwitch = "pcie_switch"
            case gbitPerSecond = "gbit_per_s"
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            try Topology.refuseUnknownKeys(decoder, known: CodingKeys.self, in: "nic")
            name = try container.decode(String.self, forKey: .name)
            address = try container.decodeIfPresent(String.self, forKey: .address)
            rail = try container.decodeIfPresent(Int.self, forKey: .rail)
            pcieSwitch = try container.decodeIfPresent(String.self, forKey: .pcieSwitch)
            numa = try container.decodeIfPresent(Int.self, forKey: .numa)
            gbitPerSecond = try container.decodeIfPresent(Double.self, forKey: .gbitPerSecond) ?? 0
        }
    }

    public var gpus: [GPU]
    public var nics: [NIC]

    public init(gpus: [GPU] = [], nics: [NIC] = []) {
        self.gpus = gpus
        self.nics = nics
    }

    enum CodingKeys: String, CodingKey { case gpus, nics }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try Topology.refuseUnknownKeys(decoder, known: CodingKeys.self, in: "topology")
        gpus = try container.decodeIfPresent([GPU].self, forKey: .gpus) ?? []
        nics = try container.decodeIfPresent([NIC].self, forKey: .nics) ?? []
    }

    public var isEmpty: Bool { gpus.isEmpty && nics.isEmpty }

    public func gpu(_ index: Int) -> GPU? { gpus.first { $0.index == index } }

    /// The NIC on GPU `index`'s PCIe switch (its rail), if any: the one whose rail is that GPU's index, else the
    /// first on its switch.
    public func railNIC(forGPU index: Int) -> NIC? {
        guard let gpu = gpu(index) else { return nil }
        let onSwitch = nics.filter { gpu.pcieSwitch == nil || $0.pcieSwitch == gpu.pcieSwitch }
        return onSwitch.first { $0.rail == index } ?? (gpu.pcieSwitch == nil ? nil : onSwitch.first)
    }

    /// Reads a topology file (JSON, docs/topology.md), checking every limit.
    public init(json data: [UInt8]) throws(FreightError) {
        guard data.count <= Limits.topologyInputBytesMax else {
            throw FreightError(.invalidArgument, "topology file is over \(Limits.topologyInputBytesMax) bytes")
        }
        do {
            self = try JSONDecoder().decode(Topology.self, from: Data(data))
        } catch let error as DecodingError {
            throw FreightError(.invalidArgument, "topology file: \(Self.describe(error))")
        } catch {
            throw FreightError(.invalidArgument, "topology file: \(error)")
        }
        try validate()
    }

    public func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return (try? String(decoding: encoder.encode(self), as: UTF8.self)) ?? "{}"
    }

    /// Checks counts, names and numbers; a topology from a file or from the network must pass before it is used.
    public func validate() throws(FreightError) {
        guard gpus.count <= Limits.topologyGPUsMax, nics.count <= Limits.topologyNICsMax else {
            throw FreightError(
                .invalidArgument,
                "topology has \(gpus.count) GPUs and \(nics.count) NICs; at most \(Limits.topologyGPUsMax) and \(Limits.topologyNICsMax)"
            )
        }
        var indices: Set<Int> = []
        for gpu in gpus {
            guard (0..<Limits.topologyIndexMax).contains(gpu.index), indices.insert(gpu.index).inserted else {
                throw FreightError(.invalidArgument, "topology: GPU index \(gpu.index) is out of range or repeated")
            }
            try Self.checkName(gpu.model, "GPU \(gpu.index) model", allowEmpty: true)
            try Self.checkName(gpu.pcieSwitch, "GPU \(gpu.index) pcie_switch")
            try Self.checkName(gpu.nvlinkDomain, "GPU \(gpu.index) nvlink_domain")
            try Self.checkRate(gpu.nvlinkGbitPerSecond, "GPU \(gpu.index) nvlink_gbit_per_s")
            try Self.checkSmall(gpu.numa, "GPU \(gpu.index) numa")
        }
        var names: Set<String> = []
        for nic in nics {
            try Self.checkName(nic.name, "NIC name")
            guard names.insert(nic.name).inserted else {
                throw FreightError(.invalidArgument, "topology: NIC \(nic.name) is listed twice")
            }
            try Self.checkName(nic.address, "NIC \(nic.name) address")
            try Self.checkName(nic.pcieSwitch, "NIC \(nic.name) pcie_switch")
            try Self.checkRate(nic.gbitPerSecond, "NIC \(nic.name) gbit_per_s")
            try Self.checkSmall(nic.numa, "NIC \(nic.name) numa")
            try Self.checkSmall(nic.rail, "NIC \(nic.name) rail")
        }
    }

    private static func checkName(_ value: String?, _ what: String, allowEmpty: Bool = false) throws(FreightError) {
        guard let value else { return }
        guard value.utf8.count <= Limits.topologyNameBytesMax, allowEmpty || !value.isEmpty,
            value.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F })
        else {
            throw FreightError(
                .invalidArgument, "topology: \(what) must be 1 to \(Limits.topologyNameBytesMax) printable bytes")
        }
    }

    private static func checkRate(_ value: Double, _ what: String) throws(FreightError) {
        guard value.isFinite, (0...1_000_000).contains(value) else {
            throw FreightError(.invalidArgument, "topology: \(what) \(value) is not a speed in Gbit/s (0...1000000)")
        }
    }

    private static func checkSmall(_ value: Int?, _ what: String) throws(FreightError) {
        guard let value else { return }
        guard (0..<Limits.topologyIndexMax).contains(value) else {
            throw FreightError(
                .invalidArgument, "topology: \(what) \(value) is out of range 0..<\(Limits.topologyIndexMax)")
        }
    }

    static func refuseUnknownKeys<Key: CodingKey & CaseIterable>(
        _ decoder: any Decoder, known: Key.Type, in what: String
    ) throws {
        let all = try decoder.container(keyedBy: AnyKey.self)
        let allowed = Set(Key.allCases.map(\.stringValue))
        if let unknown = all.allKeys.first(where: { !allowed.contains($0.stringValue) }) {
            throw DecodingError.dataCorrupted(
                .init(codingPath: all.codingPath, debugDescription: "unknown key '\(unknown.stringValue)' in \(what)"))
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let joined = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return joined.isEmpty ? "" : " at \(joined)"
        }
        switch error {
        case .dataCorrupted(let context): return context.debugDescription + path(context)
        case .keyNotFound(let key, let context): return "missing '\(key.stringValue)'\(path(context))"
        case .typeMismatch(let type, let context): return "expected \(type)\(path(context))"
        case .valueNotFound(let type, let context): return "expected \(type)\(path(context))"
        @unknown default: return "\(error)"
        }
    }
}

extension Topology.GPU.CodingKeys: CaseIterable {}
extension Topology.NIC.CodingKeys: CaseIterable {}
extension Topology.CodingKeys: CaseIterable {}

struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) {
        self.stringValue = "\(intValue)"
        self.intValue = intValue
    }
}
