import Foundation
import FreightCore
import FreightDirectory
import FreightTesting
import Testing

/// `freight topology` and the node read nvidia-smi where it is on PATH: here a stand-in that prints a fixture, so
/// that the discovery path (running the tool, parsing, merging with the file) is exercised end to end.
@Suite struct TopologyCommandTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("FreightRoutingTests/Fixtures/constructed-dgx-h100").path

    /// A folder with an executable `nvidia-smi` that prints the fixture for `topo -m` and `nvlink --status`.
    static func fakeTool(exitCode: Int = 0) throws -> String {
        let folder = NSTemporaryDirectory() + "freight-smi-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let script = """
            #!/bin/sh
            case "$1" in
              topo) cat '\(fixtures)/topo-m.txt' ;;
              nvlink) cat '\(fixtures)/nvlink-status.txt' ;;
            esac
            exit \(exitCode)
            """
        let path = "\(folder)/nvidia-smi"
        try Data(script.utf8).write(to: URL(fileURLWithPath: path))
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: path)
        return folder
    }

    @Test func discoversFromNvidiaSMIAndTheFileWins() async throws {
        let folder = try Self.fakeTool()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let file = "\(folder)/topology.json"
        try Data(#"{"nics": [{"name": "mlx5_3", "address": "198.18.1.1", "gbit_per_s": 400}]}"#.utf8)
            .write(to: URL(fileURLWithPath: file))
        let path = "\(folder):\(ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")"
        let process = try FreightProcess(
            ["topology", "--name", "dgx7", "--topology", file], environment: ["PATH": path])
        #expect(try await process.waitForExit() == 0, "\(process.stderr)")
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(process.stdoutLines.joined(separator: "\n").utf8))
                as? [String: Any])
        let gpus = try #require(object["gpus"] as? [[String: Any]])
        let nics = try #require(object["nics"] as? [[String: Any]])
        #expect(gpus.count == 8)
        #expect(Set(gpus.compactMap { $0["nvlink_domain"] as? String }) == ["dgx7/nvlink0"])
        let rail1 = try #require(nics.first { $0["name"] as? String == "mlx5_3" })
        #expect(rail1["rail"] as? Int == 1)
        #expect(rail1["address"] as? String == "198.18.1.1")
        #expect(rail1["gbit_per_s"] as? Double == 400)

        // Without nvidia-smi (off), only the file.
        let off = try FreightProcess(
            ["topology", "--topology", file, "--nvidia-smi", "off"], environment: ["PATH": path])
        #expect(try await off.waitForExit() == 0)
        let fileOnly = try #require(
            try JSONSerialization.jsonObject(with: Data(off.stdoutLines.joined(separator: "\n").utf8))
                as? [String: Any])
        #expect((fileOnly["gpus"] as? [Any])?.count == 0)
        #expect((fileOnly["nics"] as? [[String: Any]])?.map { $0["name"] as? String } == ["mlx5_3"])
    }

    @Test func aFailingToolOrABadFileIsReportedNotFatal() async throws {
        let folder = try Self.fakeTool(exitCode: 9)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = "\(folder):\(ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")"
        let failing = try FreightProcess(["topology"], environment: ["PATH": path])
        #expect(try await failing.waitForExit() == 0)
        #expect(failing.stderr.contains("nvidia-smi") && failing.stderr.contains("exited with 9"))
        let bad = "\(folder)/bad.json"
        try Data(#"{"gpus": [{"index": 0, "nvlink_gpbs": 1}]}"#.utf8).write(to: URL(fileURLWithPath: bad))
        let refused = try FreightProcess(["topology", "--topology", bad, "--nvidia-smi", "off"])
        #expect(try await refused.waitForExit() != 0)
        #expect(refused.stderr.contains("unknown key 'nvlink_gpbs'"))
    }

    @Test func aNodeRefusesBadRailsWithTheFlag() async throws {
        for (rails, says) in [
            (["--rail", "eth0"], "--rail 'eth0' is not an IP address"),
            (["--rail", "127.0.0.1", "--rail", "127.0.0.1"], "--rail: at most"),
            (
                (0...Limits.railsMax).flatMap { ["--rail", "127.0.2.\($0)"] },
                "--rail: at most"
            ),
        ] {
            let node = try FreightProcess(
                ["node", "--name", "x", "--listen", "127.0.0.1:0", "--socket", "", "--nvidia-smi", "off"] + rails)
            #expect(try await node.waitForExit(timeout: .seconds(20)) != 0)
            #expect(node.stderr.contains(says), "\(node.stderr)")
        }
    }

    /// A node process listens and joins over TCP: an in-process name or a socket path there is refused, naming the
    /// flag.
    @Test func aNodeRefusesAddressesItCannotListenOrJoinOn() async throws {
        for (flags, says) in [
            (["--listen", "inproc://x"], "--listen must be HOST:PORT, not 'inproc://x'"),
            (["--listen", "127.0.0.1:0", "--join", "/tmp/x.sock"], "--join must be HOST:PORT, not '/tmp/x.sock'"),
        ] {
            let node = try FreightProcess(["node", "--name", "x", "--socket", "", "--nvidia-smi", "off"] + flags)
            #expect(try await node.waitForExit(timeout: .seconds(20)) != 0)
            #expect(node.stderr.contains(says), "\(node.stderr)")
        }
    }
}
