import Foundation
import FreightCore
import FreightTesting
import Testing

/// Multi-rail striping (docs/topology.md) over real links: two network namespaces joined by two veth pairs, each
/// shaped by `tc tbf` to 2 Gbit/s in both directions. Node processes run inside the namespaces; apps reach them
/// over their Unix sockets. Throughput is compared as a ratio within one run.
///
/// The nodes are the release build (`swift build -c release --product freight`, done by the test command): the
/// debug build's node cannot itself move the 500 MB/s that two such rails carry, and a deployment runs release.
@Suite(.serialized) struct MultiRailTests {
    static let gib = 1 << 30

    struct Run {
        var megabytesPerSecond: Double
        var stripeBytes: [Int]
        var railGbit: [Double]
    }

    static var releaseBinary: String? { ProcessCluster.releaseBinary }

    @Test func aLargeMessageStripesOverBothRails() async throws {
        let binary = try #require(
            Self.releaseBinary, "build the release node first: swift build -c release --product freight")
        let lab = try NetworkLab(rails: 2, rateMbit: 2000)
        defer { lab.remove() }
        let folder = NSTemporaryDirectory() + "freight-rails-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }

        let one = try await measure(lab: lab, rails: 1, binary: binary, folder: folder)
        let two = try await measure(lab: lab, rails: 2, binary: binary, folder: folder)
        let ratio = two.megabytesPerSecond / one.megabytesPerSecond
        print(
            "multi-rail: one rail \(Int(one.megabytesPerSecond)) MB/s, two rails \(Int(two.megabytesPerSecond)) MB/s (\(String(format: "%.2f", ratio))x); stripe bytes \(two.stripeBytes); measured Gbit/s \(two.railGbit)"
        )
        #expect(ratio >= 1.7, "two rails \(two.megabytesPerSecond) MB/s vs one \(one.megabytesPerSecond) MB/s")
        // Stripes 0..<4 are rail 0, 4..<8 rail 1: both carried a fair share.
        let rail0 = two.stripeBytes.prefix(4).reduce(0, +)
        let rail1 = two.stripeBytes.dropFirst(4).reduce(0, +)
        #expect(rail0 + rail1 >= Self.gib)
        #expect(min(rail0, rail1) >= Self.gib * 35 / 100, "rail 0 \(rail0) bytes, rail 1 \(rail1) bytes")
        // Only ratios within this run mean something on a shared 2-core machine: the two equally shaped rails
        // measure alike, and each measures about what one rail alone moved in the same run.
        let oneGbit = one.megabytesPerSecond * 8 / 1000
        #expect(two.railGbit.count == 2, "\(two.railGbit)")
        if two.railGbit.count == 2, let low = two.railGbit.min(), let high = two.railGbit.max(), high > 0 {
            #expect(low / high >= 0.75, "rails measured \(two.railGbit) Gbit/s")
            #expect(
                two.railGbit.allSatisfy { (0.7...1.4).contains($0 / oneGbit) },
                "rails measured \(two.railGbit) Gbit/s; one rail alone moved \(oneGbit) Gbit/s")
        }
    }

    /// Starts a node in each namespace with `rails` rails, sends 1 GiB from an app of a to an app of b, and stops them.
    func measure(lab: NetworkLab, rails: Int, binary: String, folder: String) async throws -> Run {
        let streams = 4
        func arguments(_ name: String, side: Int) -> [String] {
            var list = [
                "node", "--cluster", "lab", "--name", name, "--listen", "\(lab.address(rail: 0, side: side)):7400",
                "--socket", "\(folder)/\(name).sock", "--streams", "\(streams)", "--nvidia-smi", "off", "--json",
            ]
            if rails > 1 { for rail in 0..<rails { list += ["--rail", lab.address(rail: rail, side: side)] } }
            return list
        }
        let a = try lab.freight(in: lab.namespaceA, arguments("a", side: 1), binary: binary)
        defer { a.stop() }
        let b = try lab.freight(
            in: lab.namespaceB, arguments("b", side: 2) + ["--join", "\(lab.address(rail: 0, side: 1)):7400"],
            binary: binary)
        defer { b.stop() }
        _ = try await a.waitForLine { $0.contains("\"listening\"") }
        _ = try await b.waitForLine { $0.contains("\"listening\"") }
        // Every stripe of every rail up, both ways.
        let deadline = ContinuousClock.now + .seconds(20)
        while true {
            let up = try await [status("a", folder, binary), status("b", folder, binary)].map { status in
                ((status["peers"] as? [[String: Any]])?.first?["streams_up"] as? Int) ?? 0
            }
            if up.allSatisfy({ $0 == streams * rails }) { break }
            guard ContinuousClock.now < deadline else {
                throw FreightError(.internalError, "links not up: \(up) of \(streams * rails) stripes; a: \(a.stderr)")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let receiver = try FreightProcess(
            ["recv", "rails/big", "--via", "\(folder)/b.sock", "--count", "1", "--json"], executable: binary)
        defer { receiver.stop() }
        _ = try await receiver.waitForLine { $0.contains("\"ready\"") }
        while try await FreightProcess(
            ["resolve", "rails/big", "--via", "\(folder)/a.sock"], executable: binary
        ).waitForExit() != 0 {
            guard ContinuousClock.now < deadline + .seconds(10) else {
                throw FreightError(.internalError, "a never saw the receiver")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let sender = try FreightProcess(
            ["send", "rails/big", "--size", "1GiB", "--via", "\(folder)/a.sock", "--json"], executable: binary)
        #expect(try await sender.waitForExit(timeout: .seconds(60)) == 0, "\(sender.stderr)")
        let delivered = try #require(sender.jsonLines.first { $0["event"] as? String == "delivered" })
        #expect(try await receiver.waitForExit(timeout: .seconds(20)) == 0)
        let peer = try #require((try await status("a", folder, binary)["peers"] as? [[String: Any]])?.first)
        return Run(
            megabytesPerSecond: try #require(delivered["mbps"] as? Double),
            stripeBytes: (peer["stripe_bytes"] as? [Int]) ?? [],
            railGbit: (peer["rail_gbit_per_s"] as? [Double]) ?? [])
    }

    func status(_ node: String, _ folder: String, _ binary: String) async throws -> [String: Any] {
        let process = try FreightProcess(["status", "--via", "\(folder)/\(node).sock", "--json"], executable: binary)
        guard try await process.waitForExit() == 0, let line = process.stdoutLines.first,
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        else { throw FreightError(.internalError, "status of \(node) failed: \(process.stderr)") }
        return object
    }
}
