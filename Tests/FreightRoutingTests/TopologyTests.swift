import Foundation
import FreightCore
import FreightDirectory
import FreightRouting
import Testing

enum Fixtures {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    static func names() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [])
            .filter { !$0.hasSuffix(".md") }.sorted()
    }

    static func text(_ name: String, _ file: String) throws -> String {
        try String(
            decoding: Data(contentsOf: folder.appendingPathComponent(name).appendingPathComponent(file)), as: UTF8.self)
    }

    static func topology(_ name: String, node: String = "n1") throws -> Topology {
        let matrix = try NvidiaTopoMatrix(parsing: try text(name, "topo-m.txt"))
        let nvlink = try NvlinkStatus(parsing: try text(name, "nvlink-status.txt"))
        return Topology.discovered(matrix: matrix, nvlink: nvlink, node: node)
    }
}

/// Every fixture folder parses into a topology that passes the limits a network peer's would be held to.
@Suite struct TopologyFixtureTests {
    @Test func thereAreFixtures() {
        #expect(Fixtures.names().count >= 3)
    }

    @Test(arguments: Fixtures.names()) func everyFixtureParses(_ name: String) throws {
        let topology = try Fixtures.topology(name)
        try topology.validate()
        #expect(!topology.gpus.isEmpty)
        let matrix = try NvidiaTopoMatrix(parsing: try Fixtures.text(name, "topo-m.txt"))
        // The matrix is symmetric, as nvidia-smi prints it.
        for a in matrix.devices { for b in matrix.devices { #expect(matrix.relation(a, b) == matrix.relation(b, a)) } }
        // Every GPU a rail NIC names shares that NIC's PCIe switch.
        for nic in topology.nics {
            guard let rail = nic.rail else { continue }
            #expect(topology.gpu(rail)?.pcieSwitch == nic.pcieSwitch)
        }
    }
}

@Suite struct TopologyTests {
    @Test func dgxH100RailsFollowThePCIeSwitchNotTheNumbering() throws {
        let topology = try Fixtures.topology("constructed-dgx-h100")
        #expect(topology.gpus.map(\.index) == Array(0..<8))
        #expect(topology.nics.count == 12)
        #expect(Set(topology.gpus.compactMap(\.nvlinkDomain)) == ["n1/nvlink0"])
        #expect(topology.gpus.allSatisfy { $0.model == "NVIDIA H100 80GB HBM3" })
        // 18 links of 26.562 GB/s, one direction: 3824.9 Gbit/s.
        #expect(abs(topology.gpus[0].nvlinkGbitPerSecond - 18 * 26.562 * 8) < 0.01)
        #expect(topology.gpus.map(\.numa) == [0, 0, 0, 0, 1, 1, 1, 1])
        let expected = [
            0: "mlx5_0", 1: "mlx5_3", 2: "mlx5_4", 3: "mlx5_5", 4: "mlx5_6", 5: "mlx5_9", 6: "mlx5_10", 7: "mlx5_11",
        ]
        for (gpu, nic) in expected {
            #expect(topology.railNIC(forGPU: gpu)?.name == nic)
            #expect(topology.nics.first { $0.name == nic }?.rail == gpu)
        }
        // Storage ports: no rail; NUMA from the nearest GPU.
        let storage = topology.nics.filter { $0.rail == nil }
        #expect(storage.map(\.name) == ["mlx5_1", "mlx5_2", "mlx5_7", "mlx5_8"])
        #expect(storage.map(\.numa) == [0, 0, 1, 1])
    }

    @Test func hgxA100SwitchesHoldTwoGPUsAndTwoNICs() throws {
        let topology = try Fixtures.topology("constructed-hgx-a100")
        #expect(topology.gpus.count == 8)
        for pair in stride(from: 0, to: 8, by: 2) {
            #expect(topology.gpu(pair)?.pcieSwitch == topology.gpu(pair + 1)?.pcieSwitch)
            #expect(topology.railNIC(forGPU: pair)?.name == "mlx5_\(pair)")
            #expect(topology.railNIC(forGPU: pair + 1)?.name == "mlx5_\(pair + 1)")
        }
        #expect(Set(topology.gpus.compactMap(\.pcieSwitch)).count == 4)
        // GPU 5 has two inactive links: 10 × 25 GB/s.
        #expect(topology.gpu(5).map { Int($0.nvlinkGbitPerSecond) } == 10 * 25 * 8)
        #expect(topology.gpu(4).map { Int($0.nvlinkGbitPerSecond) } == 12 * 25 * 8)
        #expect(topology.gpus.map(\.numa) == [0, 0, 0, 0, 1, 1, 1, 1])
    }

    @Test func aSingleGPUHasNoDomainAndNoRail() throws {
        let topology = try Fixtures.topology("constructed-single-gpu")
        #expect(topology.gpus == [Topology.GPU(index: 0, numa: 0)])
        #expect(topology.nics.isEmpty)
    }

    @Test func tabsAndSpacesGiveTheSameMatrix() throws {
        let tabbed = try Fixtures.text("constructed-dgx-h100", "topo-m.txt")
        let spaced = tabbed.replacingOccurrences(of: "\t", with: "    ")
        #expect(try NvidiaTopoMatrix(parsing: tabbed) == NvidiaTopoMatrix(parsing: spaced))
    }

    @Test func malformedOutputsAreRefusedWithTheLine() {
        let header = "\tGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\n"
        #expect(throws: FreightError.self) { try NvidiaTopoMatrix(parsing: "") }
        #expect(throws: FreightError.self) { try NvidiaTopoMatrix(parsing: "No devices were found\n") }
        do {
            _ = try NvidiaTopoMatrix(parsing: header + "GPU0\t X \tQQ\t0-3\t0\nGPU1\tNV4\t X \t0-3\t0\n")
            Issue.record("unknown link accepted")
        } catch {
            #expect(error.message.contains("line 2") && error.message.contains("'QQ'"))
        }
        #expect(throws: FreightError.self) { try NvidiaTopoMatrix(parsing: header + "GPU0\t X \tNV4\t0-3\t0\n") }
        #expect(throws: FreightError.self) { try NvidiaTopoMatrix(parsing: header + "GPU0\t X \n") }
        #expect(throws: FreightError.self) {
            try NvlinkStatus(parsing: "GPU 0: H100 (UUID: x)\n\t Link 0: fast\n")
        }
        #expect(throws: FreightError.self) { try NvlinkStatus(parsing: "\t Link 0: 25 GB/s\n") }
        let huge = String(repeating: "x", count: Limits.topologyInputBytesMax + 1)
        #expect(throws: FreightError.self) { try NvidiaTopoMatrix(parsing: huge) }
    }

    @Test func theFileIsReadStrictlyAndWinsOverDiscovery() throws {
        let file = """
            {"gpus": [{"index": 0, "nvlink_domain": "rack-7", "nvlink_gbit_per_s": 14400}],
             "nics": [{"name": "mlx5_0", "address": "198.18.0.1", "rail": 0, "gbit_per_s": 400},
                      {"name": "eth9", "address": "198.18.9.1", "gbit_per_s": 25}]}
            """
        let fromFile = try Topology(json: Array(file.utf8))
        let merged = Topology.merging(fromFile, over: try Fixtures.topology("constructed-dgx-h100"))
        #expect(merged.gpu(0)?.nvlinkDomain == "rack-7")
        #expect(merged.gpu(0)?.nvlinkGbitPerSecond == 14400)
        #expect(merged.gpu(1)?.nvlinkDomain == "n1/nvlink0")
        #expect(merged.gpu(0)?.model == "NVIDIA H100 80GB HBM3")
        #expect(merged.nics.first { $0.name == "mlx5_0" }?.address == "198.18.0.1")
        #expect(merged.nics.first { $0.name == "mlx5_0" }?.pcieSwitch == merged.gpu(0)?.pcieSwitch)
        #expect(merged.nics.count == 13)
        let roundTrip = try Topology(json: Array(merged.json().utf8))
        #expect(roundTrip == merged)

        for (bad, says) in [
            (#"{"gpus": [{"index": 0, "nvlink_gpbs": 1}]}"#, "unknown key 'nvlink_gpbs'"),
            (#"{"gpus": [{"index": 0}, {"index": 0}]}"#, "repeated"),
            (#"{"nics": [{"name": ""}]}"#, "NIC name"),
            (#"{"nics": [{"name": "a", "gbit_per_s": -1}]}"#, "gbit_per_s"),
            (#"{"gpus": "#, "topology file"),
        ] {
            do {
                _ = try Topology(json: Array(bad.utf8))
                Issue.record("accepted \(bad)")
            } catch {
                #expect(error.message.contains(says), "\(error.message)")
            }
        }
        let many =
            "{\"gpus\": [" + (0...Limits.topologyGPUsMax).map { "{\"index\": \($0)}" }.joined(separator: ",") + "]}"
        #expect(throws: FreightError.self) { try Topology(json: Array(many.utf8)) }
    }
}
