import FreightCore
import FreightDirectory

/// How two devices in `nvidia-smi topo -m` are connected (the command's own legend).
public enum DeviceRelation: Sendable, Hashable, CustomStringConvertible {
    /// `X`: the device itself.
    case same
    /// `NV#`: bonded set of # NVLinks.
    case nvlink(Int)
    /// `PIX`: at most one PCIe bridge.
    case pix
    /// `PXB`: several PCIe bridges, no host bridge.
    case pxb
    /// `PHB`: through a PCIe host bridge (the CPU).
    case phb
    /// `NODE`: between host bridges within one NUMA node.
    case node
    /// `SYS`: across the interconnect between NUMA nodes (also the older `SOC`).
    case sys

    init?(_ token: String) {
        switch token {
        case "X": self = .same
        case "PIX": self = .pix
        case "PXB": self = .pxb
        case "PHB": self = .phb
        case "NODE": self = .node
        case "SYS", "SOC": self = .sys
        default:
            guard token.hasPrefix("NV"), let count = Int(token.dropFirst(2)), (1...64).contains(count) else {
                return nil
            }
            self = .nvlink(count)
        }
    }

    /// Behind one PCIe switch (no host bridge between).
    public var sharesPCIeSwitch: Bool { self == .pix || self == .pxb }

    public var description: String {
        switch self {
        case .same: "X"
        case .nvlink(let count): "NV\(count)"
        case .pix: "PIX"
        case .pxb: "PXB"
        case .phb: "PHB"
        case .node: "NODE"
        case .sys: "SYS"
        }
    }
}

/// What `nvidia-smi topo -m` prints: a matrix of relations between GPUs and NICs, each GPU's CPU and NUMA affinity,
/// and the legend that names each NIC. Tab- and space-separated forms both parse (a copy from a terminal loses the
/// tabs); terminal escape codes are ignored.
public struct NvidiaTopoMatrix: Sendable, Hashable {
    /// Column names in order: `GPU0`…, then `NIC0`… (or the NIC's own name on older drivers).
    public var devices: [String]
    /// relations[row][column], both in `devices` order.
    public var relations: [[DeviceRelation]]
    public var cpuAffinity: [String: String]
    public var numaAffinity: [String: Int]
    /// `NIC0` → `mlx5_0`, from the NIC legend.
    public var nicNames: [String: String]

    public func relation(_ a: String, _ b: String) -> DeviceRelation? {
        guard let row = devices.firstIndex(of: a), let column = devices.firstIndex(of: b) else { return nil }
        return relations[row][column]
    }

    public static func isGPU(_ device: String) -> Bool {
        device.hasPrefix("GPU") && device.count > 3 && device.dropFirst(3).allSatisfy(\.isNumber)
    }

    public var gpuIndices: [Int] { devices.filter(Self.isGPU).compactMap { Int($0.dropFirst(3)) } }
    public var nics: [String] { devices.filter { !Self.isGPU($0) } }

    public init(parsing text: String) throws(FreightError) {
        guard text.utf8.count <= Limits.topologyInputBytesMax else {
            throw FreightError(
                .invalidArgument, "nvidia-smi topo -m: output is over \(Limits.topologyInputBytesMax) bytes")
        }
        let lines = stripEscapes(text).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let headerIndex = lines.firstIndex(where: Self.isHeader) else {
            throw FreightError(.invalidArgument, "nvidia-smi topo -m: no header line naming GPU0")
        }
        let header = Self.headerColumns(lines[headerIndex])
        let devices = Array(header.prefix { !["CPU Affinity", "NUMA Affinity", "GPU NUMA ID"].contains($0) })
        guard Set(devices).count == devices.count, devices.count <= Limits.topologyGPUsMax + Limits.topologyNICsMax
        else {
            throw FreightError(.invalidArgument, "nvidia-smi topo -m: header repeats a device or lists too many")
        }
        var rows: [String: [DeviceRelation]] = [:]
        var cpuAffinity: [String: String] = [:]
        var numaAffinity: [String: Int] = [:]
        var nicNames: [String: String] = [:]
        var lineNumber = headerIndex + 1
        for line in lines[(headerIndex + 1)...] {
            lineNumber += 1
            let tokens = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)
            guard let first = tokens.first else { continue }
            if first == "Legend:" || first == "NIC" { continue }
            if first.hasSuffix(":"), tokens.count == 2, devices.contains(String(first.dropLast())) {
                nicNames[String(first.dropLast())] = tokens[1]  // NIC legend: "NIC0: mlx5_0"
                continue
            }
            guard devices.contains(first) else { continue }  // legend text and anything else
            guard rows[first] == nil else {
                throw FreightError(.invalidArgument, "nvidia-smi topo -m line \(lineNumber): \(first) appears twice")
            }
            guard tokens.count > devices.count else {
                throw FreightError(
                    .invalidArgument,
                    "nvidia-smi topo -m line \(lineNumber): \(first) has \(tokens.count - 1) cells, expected \(devices.count)"
                )
            }
            var row: [DeviceRelation] = []
            for token in tokens[1...devices.count] {
                guard let relation = DeviceRelation(token) else {
                    throw FreightError(
                        .invalidArgument, "nvidia-smi topo -m line \(lineNumber): unknown link '\(token)' for \(first)")
                }
                row.append(relation)
            }
            rows[first] = row
            let rest = tokens.dropFirst(devices.count + 1)
            if let cpus = rest.first, cpus != "N/A" { cpuAffinity[first] = cpus }
            if rest.count >= 2, let numa = Int(rest[rest.startIndex + 1]), (0..<Limits.topologyIndexMax).contains(numa)
            {
                numaAffinity[first] = numa
            }
        }
        guard let missing = devices.first(where: { rows[$0] == nil }) else {
            self.devices = devices
            self.relations = devices.map { rows[$0]! }
            self.cpuAffinity = cpuAffinity
            self.numaAffinity = numaAffinity
            self.nicNames = nicNames
            return
        }
        throw FreightError(.invalidArgument, "nvidia-smi topo -m: no row for \(missing)")
    }

    /// The header names GPU0 first, and its next column is a device or an affinity, not a relation (a row's is).
    static func isHeader(_ line: String) -> Bool {
        let columns = headerColumns(line)
        guard let first = columns.first, isGPU(first) else { return false }
        return columns.count == 1 || DeviceRelation(columns[1]) == nil
    }

    /// The header's column names; the multi-word ones (`CPU Affinity`, …) kept whole in either form.
    static func headerColumns(_ line: String) -> [String] {
        let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)
        var columns: [String] = []
        var index = 0
        while index < words.count {
            let joined2 = index + 1 < words.count ? "\(words[index]) \(words[index + 1])" : ""
            let joined3 = index + 2 < words.count ? "\(joined2) \(words[index + 2])" : ""
            if joined3 == "GPU NUMA ID" {
                columns.append(joined3)
                index += 3
            } else if joined2 == "CPU Affinity" || joined2 == "NUMA Affinity" {
                columns.append(joined2)
                index += 2
            } else {
                columns.append(words[index])
                index += 1
            }
        }
        return columns
    }
}

/// What `nvidia-smi nvlink --status` prints: per GPU, its model and each link's speed (GB/s, one direction) or
/// that the link is inactive.
public struct NvlinkStatus: Sendable, Hashable {
    public struct GPU: Sendable, Hashable {
        public var index: Int
        public var model: String
        /// Speed of each active link in GB/s; inactive links are not listed.
        public var linkGigabytesPerSecond: [Int: Double]
        public var inactiveLinks: Int

        public var totalGbitPerSecond: Double { linkGigabytesPerSecond.values.reduce(0, +) * 8 }
    }

    public var gpus: [GPU]

    public init(parsing text: String) throws(FreightError) {
        guard text.utf8.count <= Limits.topologyInputBytesMax else {
            throw FreightError(
                .invalidArgument, "nvidia-smi nvlink --status: output is over \(Limits.topologyInputBytesMax) bytes")
        }
        var gpus: [GPU] = []
        for (number, raw) in stripEscapes(text).split(separator: "\n").enumerated() {
            let line = raw.trimmingCharacters()
            if line.isEmpty { continue }
            if line.hasPrefix("GPU ") {
                guard let colon = line.firstIndex(of: ":"),
                    let index = Int(line[line.index(line.startIndex, offsetBy: 4)..<colon])
                else {
                    throw FreightError(
                        .invalidArgument, "nvidia-smi nvlink --status line \(number + 1): cannot read '\(line)'")
                }
                var model = String(line[line.index(after: colon)...])
                if let paren = model.firstIndex(of: "(") { model = String(model[..<paren]) }
                guard gpus.count < Limits.topologyGPUsMax else {
                    throw FreightError(
                        .invalidArgument, "nvidia-smi nvlink --status: more than \(Limits.topologyGPUsMax) GPUs")
                }
                gpus.append(
                    GPU(index: index, model: model.trimmingCharacters(), linkGigabytesPerSecond: [:], inactiveLinks: 0))
            } else if line.hasPrefix("Link ") {
                guard !gpus.isEmpty, let colon = line.firstIndex(of: ":"),
                    let link = Int(line[line.index(line.startIndex, offsetBy: 5)..<colon]), (0..<64).contains(link)
                else {
                    throw FreightError(
                        .invalidArgument, "nvidia-smi nvlink --status line \(number + 1): cannot read '\(line)'")
                }
                let value = line[line.index(after: colon)...].trimmingCharacters()
                if value.hasSuffix("GB/s"), let speed = Double(value.dropLast(4).trimmingCharacters()), speed.isFinite,
                    (0...10_000).contains(speed)
                {
                    gpus[gpus.count - 1].linkGigabytesPerSecond[link] = speed
                } else if value.lowercased().contains("inactive") {
                    gpus[gpus.count - 1].inactiveLinks += 1
                } else {
                    throw FreightError(
                        .invalidArgument, "nvidia-smi nvlink --status line \(number + 1): unknown link state '\(value)'"
                    )
                }
            }
            // Other lines (warnings, blank) say nothing about links.
        }
        self.gpus = gpus
    }
}

extension Topology {
    /// What nvidia-smi says about node `node`: GPUs joined by NVLink form one node-local domain; GPUs and NICs
    /// behind one PCIe switch (PIX/PXB) share a switch group, and the k-th NIC of a group is the rail of the k-th
    /// GPU in it; a NIC's NUMA node is that of the nearest GPU.
    public static func discovered(matrix: NvidiaTopoMatrix, nvlink: NvlinkStatus?, node: String) -> Topology {
        let devices = matrix.devices
        // Switch groups (PIX/PXB) and NVLink domains (NV#): two partitions of the devices.
        var switches = Partition(count: devices.count)
        var nvlinks = Partition(count: devices.count)
        for row in devices.indices {
            for column in devices.indices where column != row {
                let relation = matrix.relations[row][column]
                if relation.sharesPCIeSwitch { switches.join(row, column) }
                if case .nvlink = relation { nvlinks.join(row, column) }
            }
        }
        func find(_ i: Int) -> Int { switches.root(i) }
        func nvFind(_ i: Int) -> Int { nvlinks.root(i) }
        var groupNames: [Int: String] = [:]
        for index in devices.indices {
            let root = find(index)
            let members = devices.indices.filter { find($0) == root }
            if members.count > 1, groupNames[root] == nil { groupNames[root] = "pcie\(groupNames.count)" }
        }
        var domainNames: [Int: String] = [:]
        for index in devices.indices where NvidiaTopoMatrix.isGPU(devices[index]) {
            let root = nvFind(index)
            let joined = devices.indices.contains { $0 != index && nvFind($0) == root }
            if joined, domainNames[root] == nil { domainNames[root] = "\(node)/nvlink\(domainNames.count)" }
        }
        var gpus: [GPU] = []
        for (position, device) in devices.enumerated() where NvidiaTopoMatrix.isGPU(device) {
            let index = Int(device.dropFirst(3))!
            let status = nvlink?.gpus.first { $0.index == index }
            gpus.append(
                GPU(
                    index: index, model: status?.model ?? "", numa: matrix.numaAffinity[device],
                    pcieSwitch: groupNames[find(position)], nvlinkDomain: domainNames[nvFind(position)],
                    nvlinkGbitPerSecond: status?.totalGbitPerSecond ?? 0))
        }
        var nics: [NIC] = []
        var railsTaken: [Int: Int] = [:]  // switch group -> NICs given a rail so far
        for (position, device) in devices.enumerated() where !NvidiaTopoMatrix.isGPU(device) {
            let group = find(position)
            let groupGPUs = devices.indices.filter { find($0) == group && NvidiaTopoMatrix.isGPU(devices[$0]) }
            var rail: Int?
            let taken = railsTaken[group, default: 0]
            if taken < groupGPUs.count {
                rail = Int(devices[groupGPUs[taken]].dropFirst(3))
                railsTaken[group] = taken + 1
            }
            // NUMA: the GPU with the closest relation.
            let order: [DeviceRelation] = [.pix, .pxb, .phb, .node]
            var numa: Int?
            for relation in order where numa == nil {
                if let gpu = devices.indices.first(where: {
                    NvidiaTopoMatrix.isGPU(devices[$0]) && matrix.relations[position][$0] == relation
                }) {
                    numa = matrix.numaAffinity[devices[gpu]]
                }
            }
            nics.append(
                NIC(
                    name: matrix.nicNames[device] ?? device, rail: rail, pcieSwitch: groupNames[group], numa: numa))
        }
        return Topology(gpus: gpus, nics: nics)
    }

    /// `file` over `discovered`, field by field: the file knows addresses, rails, multi-node domains and speeds.
    public static func merging(_ file: Topology, over discovered: Topology) -> Topology {
        var result = discovered
        for gpu in file.gpus {
            if let at = result.gpus.firstIndex(where: { $0.index == gpu.index }) {
                var merged = result.gpus[at]
                if !gpu.model.isEmpty { merged.model = gpu.model }
                merged.numa = gpu.numa ?? merged.numa
                merged.pcieSwitch = gpu.pcieSwitch ?? merged.pcieSwitch
                merged.nvlinkDomain = gpu.nvlinkDomain ?? merged.nvlinkDomain
                if gpu.nvlinkGbitPerSecond > 0 { merged.nvlinkGbitPerSecond = gpu.nvlinkGbitPerSecond }
                result.gpus[at] = merged
            } else {
                result.gpus.append(gpu)
            }
        }
        for nic in file.nics {
            if let at = result.nics.firstIndex(where: { $0.name == nic.name }) {
                var merged = result.nics[at]
                merged.address = nic.address ?? merged.address
                merged.rail = nic.rail ?? merged.rail
                merged.pcieSwitch = nic.pcieSwitch ?? merged.pcieSwitch
                merged.numa = nic.numa ?? merged.numa
                if nic.gbitPerSecond > 0 { merged.gbitPerSecond = nic.gbitPerSecond }
                result.nics[at] = merged
            } else {
                result.nics.append(nic)
            }
        }
        return result
    }
}

/// Disjoint sets over 0..<count (union-find with path halving).
struct Partition {
    private var parent: [Int]

    init(count: Int) { parent = Array(0..<count) }

    mutating func root(_ i: Int) -> Int {
        var i = i
        while parent[i] != i {
            parent[i] = parent[parent[i]]
            i = parent[i]
        }
        return i
    }

    mutating func join(_ a: Int, _ b: Int) { parent[root(a)] = root(b) }
}

/// Drops terminal escape sequences (`ESC [ … letter`), which nvidia-smi writes around headers on a terminal.
private func stripEscapes(_ text: String) -> String {
    guard text.contains("\u{1B}") else { return text }
    var out = String.UnicodeScalarView()
    var iterator = text.unicodeScalars.makeIterator()
    while let scalar = iterator.next() {
        guard scalar == "\u{1B}" else {
            out.append(scalar)
            continue
        }
        guard let next = iterator.next(), next == "[" else { continue }
        while let code = iterator.next() {
            if (0x40...0x7E).contains(code.value) { break }
        }
    }
    return String(out)
}

extension StringProtocol {
    fileprivate func trimmingCharacters() -> String {
        var slice = Substring(self)
        while let first = slice.first, first.isWhitespace { slice = slice.dropFirst() }
        while let last = slice.last, last.isWhitespace { slice = slice.dropLast() }
        return String(slice)
    }
}
