import FreightDirectory

/// Chooses the path(s) one message takes and how its bytes split over them (docs/topology.md). Pure: topology,
/// rails, measured rates and capabilities come in as values; nothing here touches a socket or a clock.
public struct RoutePlanner: Sendable {
    /// Where a message starts or ends: a node, optionally one app on it, optionally a GPU the app is placed on.
    public struct Placement: Sendable, Hashable {
        public var node: String
        public var app: UInt64?
        public var gpu: Int?

        public init(node: String, app: UInt64? = nil, gpu: Int? = nil) {
            self.node = node
            self.app = app
            self.gpu = gpu
        }
    }

    /// A node as the planner sees it: its hardware and the rails it stripes over.
    public struct NodeView: Sendable, Hashable {
        public struct Rail: Sendable, Hashable {
            /// `HOST:PORT` peers dial for this rail.
            public var address: String
            /// Nominal speed (the NIC's), 0 when unknown.
            public var nominalGbitPerSecond: Double
            /// What this node measured on its way to the peer, when it has; preferred over nominal.
            public var measuredGbitPerSecond: Double?

            public init(address: String, nominalGbitPerSecond: Double = 0, measuredGbitPerSecond: Double? = nil) {
                self.address = address
                self.nominalGbitPerSecond = nominalGbitPerSecond
                self.measuredGbitPerSecond = measuredGbitPerSecond
            }
        }

        public var topology: Topology
        public var rails: [Rail]
        /// Where peers reach this node when they share no rail.
        public var listen: String

        public init(topology: Topology = Topology(), rails: [Rail] = [], listen: String = "") {
            self.topology = topology
            self.rails = rails
            self.listen = listen
        }

        /// Nominal speed of rail `index`: the rail's, else its NIC's from the topology.
        func railGbitPerSecond(_ index: Int) -> Double? {
            let rail = rails[index]
            if rail.nominalGbitPerSecond > 0 { return rail.nominalGbitPerSecond }
            return topology.nics.first { $0.rail == index && $0.gbitPerSecond > 0 }?.gbitPerSecond
        }
    }

    /// Transports this build (or a simulation) can use. Freight today moves host memory only.
    public struct Capabilities: OptionSet, Sendable, Hashable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }
        /// Apps of one node share memory regions with their node.
        public static let sharedMemory = Capabilities(rawValue: 1)
        /// GPU memory moves over NVLink between GPUs of one NVLink domain (CUDA IPC / NVLink transport).
        public static let nvlink = Capabilities(rawValue: 2)
        /// A NIC reads and writes GPU memory directly (GPUDirect RDMA).
        public static let gpuDirect = Capabilities(rawValue: 4)
        /// Apps of one node on one GPU hand device memory over by CUDA IPC handle, no byte moved (docs/gpu.md).
        public static let cudaIPC = Capabilities(rawValue: 8)
        /// A body in device memory is staged GPU → pinned pool → link → pinned pool → GPU (docs/gpu.md).
        public static let gpuStaged = Capabilities(rawValue: 16)
        /// What this build of Freight has.
        public static let thisBuild: Capabilities = [.sharedMemory]
    }

    public enum PathKind: String, Sendable, Hashable, CaseIterable {
        case inProcess = "in-process"
        case sharedMemory = "shared-memory"
        case nvlink
        case cudaIPC = "cuda-ipc"
        case railNIC = "rail-nic"
        case tcp
    }

    public struct PlannedPath: Sendable, Hashable {
        public var kind: PathKind
        /// The rail, for a rail-aligned NIC path.
        public var rail: Int? = nil
        /// What it goes through, for people: `rail 3 mlx5_3 10.0.3.1:7000 -> 10.0.3.2:7000`.
        public var via: String
        public var bytes: Int
        /// Bandwidth assumed; infinite for a hand-over that copies nothing.
        public var gbitPerSecond: Double
        public var latencySeconds: Double
        public var expectedSeconds: Double
    }

    public struct RoutePlan: Sendable, Hashable {
        public var paths: [PlannedPath]
        /// When the last byte is expected to arrive.
        public var expectedSeconds: Double
        /// Why this plan and not a faster-looking one, when that matters (e.g. no GPU transport in this build).
        public var notes: [String]
    }

    /// The cost model's constants: fixed latency of each kind, and the bandwidth assumed when nothing better is
    /// known. Values in seconds and Gbit/s.
    public struct CostModel: Sendable, Hashable {
        public var inProcessLatency = 1e-6
        public var sharedMemoryLatency = 10e-6
        public var nvlinkLatency = 5e-6
        /// Opening (or finding open) an IPC handle and the loan's round trip through the node.
        public var cudaIPCLatency = 20e-6
        /// A copy engine's rate between a GPU and pinned host memory when nothing better is known (PCIe Gen5 x16
        /// moves about 50 GB/s; the staging copies overlap the network, so the slower of the two bounds a path).
        public var pinnedCopyGbitPerSecond = 400.0
        public var nicLatency = 20e-6
        public var tcpLatency = 50e-6
        /// Bandwidth of a rail or TCP path whose speed nobody stated or measured.
        public var unknownGbitPerSecond = 10.0
        /// NVLink per GPU when nvidia-smi gave no link speeds.
        public var unknownNvlinkGbitPerSecond = 1000.0
        public init() {}
    }

    public var capabilities: Capabilities
    public var cost: CostModel

    public init(capabilities: Capabilities = .thisBuild, cost: CostModel = CostModel()) {
        self.capabilities = capabilities
        self.cost = cost
    }

    /// The plan for `bytes` from `source` to `destination`, given every node's view.
    public func plan(from source: Placement, to destination: Placement, bytes: Int, nodes: [String: NodeView])
        -> RoutePlan
    {
        let bytes = max(0, bytes)
        var notes: [String] = []
        if source.node == destination.node {
            if source.app != nil, source.app == destination.app {
                return single(
                    .inProcess, via: "same app", bytes: bytes, gbit: .infinity, latency: cost.inProcessLatency)
            }
            if let gpu = source.gpu, gpu == destination.gpu {
                if capabilities.contains(.cudaIPC) {
                    return single(
                        .cudaIPC, via: "CUDA IPC handle on GPU \(gpu) of node \(source.node)", bytes: bytes,
                        gbit: .infinity, latency: cost.cudaIPCLatency)
                }
                notes.append(
                    "both ends are on GPU \(gpu), but node \(source.node) has no CUDA IPC: the body goes through host memory"
                )
            }
            if let gpus = gpuPair(source, destination, nodes), let path = nvlinkPath(gpus, bytes: bytes, notes: &notes)
            {
                return RoutePlan(paths: [path], expectedSeconds: path.expectedSeconds, notes: notes)
            }
            if capabilities.contains(.sharedMemory) {
                var plan = single(
                    .sharedMemory, via: "region lent on node \(source.node)", bytes: bytes, gbit: .infinity,
                    latency: cost.sharedMemoryLatency)
                plan.notes = notes
                return plan
            }
            var plan = single(
                .tcp, via: "node \(source.node) loopback", bytes: bytes, gbit: cost.unknownGbitPerSecond,
                latency: cost.tcpLatency)
            plan.notes = notes
            return plan
        }
        if let gpus = gpuPair(source, destination, nodes), let path = nvlinkPath(gpus, bytes: bytes, notes: &notes) {
            return RoutePlan(paths: [path], expectedSeconds: path.expectedSeconds, notes: notes)
        }
        let here = nodes[source.node] ?? NodeView()
        let there = nodes[destination.node] ?? NodeView()
        var candidates: [Candidate] = []
        let shared = min(here.rails.count, there.rails.count)
        if shared > 0 {
            var rails = Array(0..<shared)
            if let gpu = source.gpu, let nic = here.topology.railNIC(forGPU: gpu), let rail = nic.rail, rail < shared {
                rails = [rail]
                notes.append("GPU \(gpu) sends on its rail-aligned NIC \(nic.name) (rail \(rail))")
            }
            for rail in rails {
                // A rate measured on this link wins; else the slower NIC of the two.
                let measured = [here.rails[rail].measuredGbitPerSecond, there.rails[rail].measuredGbitPerSecond]
                    .compactMap { $0 }.filter { $0 > 0 }
                let nominal = [here.railGbitPerSecond(rail), there.railGbitPerSecond(rail)].compactMap { $0 }
                let gbit = measured.min() ?? nominal.min() ?? cost.unknownGbitPerSecond
                let nic = here.topology.nics.first { $0.rail == rail }.map { " \($0.name)" } ?? ""
                candidates.append(
                    Candidate(
                        kind: .railNIC,
                        via: "rail \(rail)\(nic) \(here.rails[rail].address) -> \(there.rails[rail].address)",
                        gbit: gbit, latency: cost.nicLatency, rail: rail))
            }
        } else {
            let to = there.listen.isEmpty ? "node \(destination.node)" : there.listen
            candidates.append(
                Candidate(kind: .tcp, via: "tcp to \(to)", gbit: cost.unknownGbitPerSecond, latency: cost.tcpLatency))
        }
        if source.gpu != nil || destination.gpu != nil {
            if capabilities.contains(.gpuStaged) {
                // The copies overlap the network: each path is as fast as the slower of the link and the copy engine.
                for index in candidates.indices {
                    candidates[index].gbit = min(candidates[index].gbit, cost.pinnedCopyGbitPerSecond)
                }
                notes.append("staged GPU → pinned pool → link → pinned pool → GPU, the copies overlapping the network")
            } else {
                notes.append("no GPU transport at these nodes: the app copies the body between GPU and host memory")
            }
        }
        let paths = split(bytes, over: candidates)
        return RoutePlan(paths: paths, expectedSeconds: paths.map(\.expectedSeconds).max() ?? 0, notes: notes)
    }

    struct Candidate {
        var kind: PathKind
        var via: String
        var gbit: Double
        var latency: Double
        var rail: Int? = nil
    }

    /// Splits `bytes` so that every path used ends at the same time: with bandwidth bᵢ (bytes/s) and latency lᵢ,
    /// T = (bytes + Σ bᵢ·lᵢ) / Σ bᵢ over the paths with lᵢ < T, and path i carries bᵢ·(T − lᵢ).
    func split(_ bytes: Int, over candidates: [Candidate]) -> [PlannedPath] {
        guard !candidates.isEmpty else { return [] }
        var used = candidates.sorted { $0.latency < $1.latency }
        var finish = 0.0
        while true {
            let rates = used.map { $0.gbit * 1e9 / 8 }
            finish = (Double(bytes) + zip(rates, used).map { $0 * $1.latency }.reduce(0, +)) / rates.reduce(0, +)
            guard used.count > 1, let last = used.last, last.latency >= finish else { break }
            used.removeLast()
        }
        var paths: [PlannedPath] = []
        var assigned = 0
        for (index, candidate) in used.enumerated() {
            let rate = candidate.gbit * 1e9 / 8
            var share =
                index == used.count - 1 ? bytes - assigned : Int((rate * (finish - candidate.latency)).rounded())
            share = max(0, min(share, bytes - assigned))
            assigned += share
            paths.append(
                PlannedPath(
                    kind: candidate.kind, rail: candidate.rail, via: candidate.via, bytes: share,
                    gbitPerSecond: candidate.gbit,
                    latencySeconds: candidate.latency, expectedSeconds: candidate.latency + Double(share) / rate))
        }
        return paths
    }

    private func single(_ kind: PathKind, via: String, bytes: Int, gbit: Double, latency: Double) -> RoutePlan {
        let seconds = latency + (gbit.isInfinite ? 0 : Double(bytes) / (gbit * 1e9 / 8))
        return RoutePlan(
            paths: [
                PlannedPath(
                    kind: kind, via: via, bytes: bytes, gbitPerSecond: gbit, latencySeconds: latency,
                    expectedSeconds: seconds)
            ], expectedSeconds: seconds, notes: [])
    }

    /// Both ends placed on GPUs whose topologies are known.
    private func gpuPair(_ source: Placement, _ destination: Placement, _ nodes: [String: NodeView]) -> (
        Topology.GPU, Topology.GPU
    )? {
        guard let a = source.gpu, let b = destination.gpu, let from = nodes[source.node]?.topology.gpu(a),
            let to = nodes[destination.node]?.topology.gpu(b)
        else { return nil }
        return (from, to)
    }

    /// The NVLink path between two GPUs of one domain, when this build can move GPU memory over it.
    private func nvlinkPath(_ gpus: (Topology.GPU, Topology.GPU), bytes: Int, notes: inout [String]) -> PlannedPath? {
        let (from, to) = gpus
        guard let domain = from.nvlinkDomain, domain == to.nvlinkDomain else { return nil }
        guard capabilities.contains(.nvlink) else {
            notes.append(
                "GPUs \(from.index) and \(to.index) share NVLink domain \(domain), but this build has no GPU transport")
            return nil
        }
        let speeds = [from.nvlinkGbitPerSecond, to.nvlinkGbitPerSecond].filter { $0 > 0 }
        let gbit = speeds.min() ?? cost.unknownNvlinkGbitPerSecond
        let rate = gbit * 1e9 / 8
        return PlannedPath(
            kind: .nvlink, via: "NVLink domain \(domain): GPU \(from.index) -> GPU \(to.index)", bytes: bytes,
            gbitPerSecond: gbit, latencySeconds: cost.nvlinkLatency,
            expectedSeconds: cost.nvlinkLatency + Double(bytes) / rate)
    }
}
