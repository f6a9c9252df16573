import FreightCore
import FreightDirectory
import Testing

@testable import FreightRouting

typealias Placement = RoutePlanner.Placement
typealias NodeView = RoutePlanner.NodeView

/// Simulated clusters, built from the vendors' published layouts.
enum Simulated {
    static let gib = 1 << 30

    /// A DGX H100: 8 GPUs on one node-local NVSwitch domain (18 NVLink4 links, 450 GB/s one way), 8 ConnectX-7
    /// 400 Gbit/s NICs, NIC i on GPU i's PCIe switch and on rail i.
    static func dgxH100(_ node: String, number: Int) -> NodeView {
        let gpus = (0..<8).map {
            Topology.GPU(
                index: $0, model: "H100", numa: $0 / 4, pcieSwitch: "sw\($0)", nvlinkDomain: "\(node)/nvlink0",
                nvlinkGbitPerSecond: 3600)
        }
        let nics = (0..<8).map {
            Topology.NIC(
                name: "mlx5_\($0)", address: "198.18.\($0).\(number)", rail: $0, pcieSwitch: "sw\($0)", numa: $0 / 4,
                gbitPerSecond: 400)
        }
        return NodeView(
            topology: Topology(gpus: gpus, nics: nics),
            rails: (0..<8).map { .init(address: "198.18.\($0).\(number):7000") }, listen: "198.19.0.\(number):7000")
    }

    /// A 32-node DGX H100 pod: rail-optimised fabric, one NVLink domain per node.
    static let pod: [String: NodeView] = Dictionary(
        uniqueKeysWithValues: (0..<32).map { ("dgx\($0)", dgxH100("dgx\($0)", number: $0 + 1)) })

    /// A GB200 NVL72 rack: 18 compute trays of 4 GPUs, one NVLink domain over all 72 (900 GB/s one way per GPU),
    /// one 400 Gbit/s NIC per GPU.
    static let nvl72: [String: NodeView] = Dictionary(
        uniqueKeysWithValues: (0..<18).map { tray in
            let node = "tray\(tray)"
            let gpus = (0..<4).map {
                Topology.GPU(
                    index: $0, model: "GB200", numa: $0 / 2, pcieSwitch: "sw\($0)", nvlinkDomain: "nvl72-rack0",
                    nvlinkGbitPerSecond: 7200)
            }
            let nics = (0..<4).map {
                Topology.NIC(name: "mlx5_\($0)", rail: $0, pcieSwitch: "sw\($0)", numa: $0 / 2, gbitPerSecond: 400)
            }
            let view = NodeView(
                topology: Topology(gpus: gpus, nics: nics),
                rails: (0..<4).map { .init(address: "198.18.\($0).\(tray + 1):7000") })
            return (node, view)
        })

    /// Mixed: two DGX nodes, a CPU node with one 100G and one 25G NIC (and its twin), and a plain VM with no rails.
    static let mixed: [String: NodeView] = {
        var nodes: [String: NodeView] = ["dgx0": dgxH100("dgx0", number: 1), "dgx1": dgxH100("dgx1", number: 2)]
        for (name, number) in [("cpu0", 10), ("cpu1", 11)] {
            nodes[name] = NodeView(
                topology: Topology(nics: [
                    .init(name: "eth0", rail: 0, gbitPerSecond: 100), .init(name: "eth1", rail: 1, gbitPerSecond: 25),
                ]),
                rails: [.init(address: "198.18.0.\(number):7000"), .init(address: "198.18.1.\(number):7000")])
        }
        nodes["vm0"] = NodeView(listen: "198.19.1.1:7000")
        return nodes
    }()
}

@Suite struct RoutePlannerTests {
    let planner = RoutePlanner()
    let gpuPlanner = RoutePlanner(capabilities: [.sharedMemory, .nvlink, .gpuDirect])

    func checkConsistent(_ plan: RoutePlanner.RoutePlan, bytes: Int) {
        #expect(plan.paths.map(\.bytes).reduce(0, +) == bytes)
        #expect(plan.paths.allSatisfy { $0.bytes >= 0 && $0.expectedSeconds >= $0.latencySeconds })
        #expect(plan.expectedSeconds == plan.paths.map(\.expectedSeconds).max())
    }

    @Test func hostMemoryBetweenPodNodesStripesOverAllEightRails() {
        let plan = planner.plan(
            from: Placement(node: "dgx0"), to: Placement(node: "dgx17"), bytes: Simulated.gib, nodes: Simulated.pod)
        checkConsistent(plan, bytes: Simulated.gib)
        #expect(plan.paths.count == 8)
        #expect(plan.paths.allSatisfy { $0.kind == .railNIC })
        #expect(plan.paths.map(\.via).contains("rail 3 mlx5_3 198.18.3.1:7000 -> 198.18.3.18:7000"))
        let shares = plan.paths.map(\.bytes)
        #expect(shares.max()! - shares.min()! <= 1)
        // 1 GiB over 8 × 400 Gbit/s: 2.68 ms plus the NIC latency.
        #expect(abs(plan.expectedSeconds - (20e-6 + Double(Simulated.gib) / (3200e9 / 8))) < 1e-6)
    }

    @Test func aGPUSendsOnItsRailAlignedNIC() {
        for gpu in 0..<8 {
            let plan = planner.plan(
                from: Placement(node: "dgx2", gpu: gpu), to: Placement(node: "dgx30", gpu: gpu), bytes: 64 << 20,
                nodes: Simulated.pod)
            checkConsistent(plan, bytes: 64 << 20)
            #expect(plan.paths.count == 1)
            #expect(plan.paths[0].kind == .railNIC)
            #expect(plan.paths[0].via.hasPrefix("rail \(gpu) mlx5_\(gpu) 198.18.\(gpu).3:7000"))
        }
    }

    @Test func insideANodeNVLinkOnlyWithAGPUTransport() {
        let from = Placement(node: "dgx4", app: 1, gpu: 1)
        let to = Placement(node: "dgx4", app: 2, gpu: 6)
        let gpu = gpuPlanner.plan(from: from, to: to, bytes: Simulated.gib, nodes: Simulated.pod)
        #expect(gpu.paths.map(\.kind) == [.nvlink])
        #expect(abs(gpu.expectedSeconds - (5e-6 + Double(Simulated.gib) / (3600e9 / 8))) < 1e-6)
        let host = planner.plan(from: from, to: to, bytes: Simulated.gib, nodes: Simulated.pod)
        #expect(host.paths.map(\.kind) == [.sharedMemory])
        #expect(host.notes.contains { $0.contains("no GPU transport") })
        let sameApp = planner.plan(
            from: Placement(node: "dgx4", app: 1), to: Placement(node: "dgx4", app: 1), bytes: 1, nodes: Simulated.pod)
        #expect(sameApp.paths.map(\.kind) == [.inProcess])
        let noShared = RoutePlanner(capabilities: []).plan(
            from: from, to: to, bytes: 1 << 20, nodes: Simulated.pod)
        #expect(noShared.paths.map(\.kind) == [.tcp])
    }

    /// CUDA IPC for two apps on one GPU of one node, and staging through pinned pools between nodes, only where the
    /// nodes found them (docs/gpu.md); elsewhere host memory, and a note that says why.
    @Test func gpuTransportsOnlyWhereTheNodesHaveThem() {
        let from = Placement(node: "dgx4", app: 1, gpu: 3)
        let to = Placement(node: "dgx4", app: 2, gpu: 3)
        let ipc = RoutePlanner(capabilities: [.sharedMemory, .cudaIPC]).plan(
            from: from, to: to, bytes: Simulated.gib, nodes: Simulated.pod)
        #expect(ipc.paths.map(\.kind) == [.cudaIPC])
        #expect(ipc.paths.first?.via == "CUDA IPC handle on GPU 3 of node dgx4")
        #expect(ipc.expectedSeconds == 20e-6, "a hand-over: no byte moves")
        let host = planner.plan(from: from, to: to, bytes: Simulated.gib, nodes: Simulated.pod)
        #expect(host.paths.map(\.kind) == [.sharedMemory])
        #expect(host.notes.contains { $0.contains("has no CUDA IPC") }, "\(host.notes)")
        // Another GPU of the same node is not CUDA IPC's (NVLink peer to peer would be).
        let otherGPU = RoutePlanner(capabilities: [.sharedMemory, .cudaIPC]).plan(
            from: from, to: Placement(node: "dgx4", app: 2, gpu: 4), bytes: 1 << 20, nodes: Simulated.pod)
        #expect(otherGPU.paths.map(\.kind) == [.sharedMemory])

        var slowCopies = RoutePlanner.CostModel()
        slowCopies.pinnedCopyGbitPerSecond = 100
        let across = (Placement(node: "dgx2", gpu: 5), Placement(node: "dgx30", gpu: 5))
        let staged = RoutePlanner(capabilities: [.sharedMemory, .gpuStaged], cost: slowCopies).plan(
            from: across.0, to: across.1, bytes: Simulated.gib, nodes: Simulated.pod)
        checkConsistent(staged, bytes: Simulated.gib)
        #expect(staged.paths.map(\.kind) == [.railNIC])
        #expect(staged.paths.first?.gbitPerSecond == 100, "the copy engine is the slower: it bounds the path")
        #expect(staged.notes.contains { $0.hasPrefix("staged GPU → pinned pool") }, "\(staged.notes)")
        let unstaged = planner.plan(from: across.0, to: across.1, bytes: Simulated.gib, nodes: Simulated.pod)
        #expect(unstaged.paths.first?.gbitPerSecond == 400)
        #expect(unstaged.notes.contains { $0.contains("no GPU transport at these nodes") }, "\(unstaged.notes)")
    }

    @Test func podNodesAreSeparateNVLinkDomains() {
        let plan = gpuPlanner.plan(
            from: Placement(node: "dgx0", gpu: 5), to: Placement(node: "dgx1", gpu: 5), bytes: Simulated.gib,
            nodes: Simulated.pod)
        #expect(plan.paths.map(\.kind) == [.railNIC])
    }

    @Test func anNVL72RackIsOneNVLinkDomainAcrossTrays() {
        let from = Placement(node: "tray0", gpu: 0)
        let to = Placement(node: "tray17", gpu: 2)
        let gpu = gpuPlanner.plan(from: from, to: to, bytes: Simulated.gib, nodes: Simulated.nvl72)
        #expect(gpu.paths.map(\.kind) == [.nvlink])
        #expect(gpu.paths[0].gbitPerSecond == 7200)
        #expect(gpu.paths[0].via == "NVLink domain nvl72-rack0: GPU 0 -> GPU 2")
        // Without a GPU transport the same message takes GPU 0's rail.
        let host = planner.plan(from: from, to: to, bytes: Simulated.gib, nodes: Simulated.nvl72)
        #expect(host.paths.map(\.kind) == [.railNIC])
        #expect(host.paths[0].via.hasPrefix("rail 0 mlx5_0"))
    }

    @Test func neverAGPUPathWithoutAGPUTransport() {
        for nodes in [Simulated.pod, Simulated.nvl72, Simulated.mixed] {
            let names = nodes.keys.sorted()
            for a in names.prefix(6) {
                for b in names.suffix(6) {
                    for gpu in [nil, 0, 3] as [Int?] {
                        let plan = planner.plan(
                            from: Placement(node: a, app: 1, gpu: gpu), to: Placement(node: b, app: 2, gpu: gpu),
                            bytes: Simulated.gib, nodes: nodes)
                        checkConsistent(plan, bytes: Simulated.gib)
                        #expect(!plan.paths.contains { $0.kind == .nvlink })
                    }
                }
            }
        }
    }

    @Test func mixedClusterSplitsByExpectedCompletionTime() {
        let plan = planner.plan(
            from: Placement(node: "cpu0"), to: Placement(node: "cpu1"), bytes: 1_000_000_000, nodes: Simulated.mixed)
        checkConsistent(plan, bytes: 1_000_000_000)
        #expect(plan.paths.count == 2)
        // 100 : 25 Gbit/s carries 4 : 1, and both end together.
        #expect(abs(Double(plan.paths[0].bytes) / Double(plan.paths[1].bytes) - 4) < 0.001)
        #expect(abs(plan.paths[0].expectedSeconds - plan.paths[1].expectedSeconds) < 1e-9)
        // A DGX to the CPU node shares two rails; the slower side of each rail sets its speed.
        let toCPU = planner.plan(
            from: Placement(node: "dgx0"), to: Placement(node: "cpu0"), bytes: 1_000_000, nodes: Simulated.mixed)
        #expect(toCPU.paths.map(\.gbitPerSecond) == [100, 25])
        // No shared rail: plain TCP to the listen address.
        let toVM = planner.plan(
            from: Placement(node: "dgx0"), to: Placement(node: "vm0"), bytes: 1_000_000, nodes: Simulated.mixed)
        #expect(toVM.paths.map(\.kind) == [.tcp])
        #expect(toVM.paths[0].via == "tcp to 198.19.1.1:7000")
    }

    @Test func measuredRatesOverrideNominal() {
        var nodes = Simulated.mixed
        nodes["cpu0"]!.rails[0].measuredGbitPerSecond = 25
        let plan = planner.plan(
            from: Placement(node: "cpu0"), to: Placement(node: "cpu1"), bytes: 1_000_000, nodes: nodes)
        #expect(plan.paths.map(\.bytes) == [500_000, 500_000])
    }

    @Test func aSlowStartingPathIsLeftOutOfASmallMessage() {
        let candidates = [
            RoutePlanner.Candidate(kind: .railNIC, via: "near", gbit: 10, latency: 1e-6),
            RoutePlanner.Candidate(kind: .railNIC, via: "far", gbit: 100, latency: 1e-3),
        ]
        let small = planner.split(1000, over: candidates)
        #expect(small.map(\.via) == ["near"])
        #expect(small[0].bytes == 1000)
        let large = planner.split(1 << 30, over: candidates)
        #expect(large.count == 2)
        #expect(abs(large[0].expectedSeconds - large[1].expectedSeconds) < 1e-6)
        #expect(large.map(\.bytes).reduce(0, +) == 1 << 30)
        #expect(planner.split(0, over: candidates).map(\.bytes).reduce(0, +) == 0)
    }
}
