import Foundation
import FreightCore
import FreightTesting
import Testing

/// The emulated WAN (docs/wan.md): two network namespaces joined only by `freight-wan`, which delays, shapes, drops,
/// reorders and cuts their packets. iperf3 (installed by the test command) measures what TCP sees through it.
@Suite(.serialized) struct WANTests {
    static let iperf3 = "/usr/bin/iperf3"

    /// An iperf3 server in b for the test's length.
    static func iperfServer(_ lab: WANLab) async throws -> FreightProcess {
        let server = try lab.process(
            in: lab.namespaceB, ["-s", "-B", lab.address(link: 0, side: 2), "-p", "5201", "--forceflush"],
            executable: iperf3)
        _ = try await server.waitForLine(timeout: .seconds(10)) { $0.contains("Server listening") }
        return server
    }

    /// Runs an iperf3 client in a and returns its JSON report.
    static func iperf(_ lab: WANLab, _ arguments: [String]) async throws -> [String: Any] {
        let client = try lab.process(
            in: lab.namespaceA, ["-c", lab.address(link: 0, side: 2), "-p", "5201", "-J"] + arguments,
            executable: iperf3)
        let status = try await client.waitForExit(timeout: .seconds(60))
        let text = client.stdoutLines.joined(separator: "\n")
        let report = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        #expect(status == 0, "iperf3: \(client.stderr) \(text.suffix(400))")
        return try #require(report)
    }

    static func receivedBitsPerSecond(_ report: [String: Any]) -> Double {
        ((report["end"] as? [String: Any])?["sum_received"] as? [String: Any])?["bits_per_second"] as? Double ?? 0
    }

    @Test func tcpSeesTheDelayTheRateTheLossAndTheCut() async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.iperf3) else {
            Issue.record("iperf3 is not installed (the test command installs it: apt-get install iperf3)")
            return
        }
        let lab = try await WANLab(settings: ["rate=200mbit", "rtt=40ms"])
        defer { lab.remove() }
        let server = try await Self.iperfServer(lab)
        defer { server.stop() }

        // The rate and the round trip, as TCP sees them.
        let shaped = try await Self.iperf(lab, ["-t", "3", "-P", "4"])
        let rate = Self.receivedBitsPerSecond(shaped)
        let streams = (shaped["end"] as? [String: Any])?["streams"] as? [[String: Any]] ?? []
        let rtts = streams.compactMap { ($0["sender"] as? [String: Any])?["mean_rtt"] as? Int }
        print("WAN 200 Mbit/s, 40 ms: iperf3 \(Int(rate / 1e6)) Mbit/s, mean RTT \(rtts) µs")
        #expect((150e6...205e6).contains(rate), "\(rate) bit/s through a 200 Mbit/s link")
        #expect(!rtts.isEmpty && rtts.allSatisfy { (40_000...120_000).contains($0) }, "RTTs \(rtts) µs")
        let queued = try lab.counters()
        #expect(queued["packets_out", default: 0] > 1000)

        // Random loss: about its share of the packets.
        try lab.control("set loss=1%")
        let before = try lab.counters()
        _ = try await Self.iperf(lab, ["-t", "2"])
        let after = try lab.counters()
        let arrived = Double(after["packets_in", default: 0] - before["packets_in", default: 0])
        let lost = Double(after["dropped_loss", default: 0] - before["dropped_loss", default: 0])
        #expect((0.005...0.02).contains(lost / arrived), "\(lost) of \(arrived) packets lost at 1%")
        try lab.control("set loss=0")

        // A cut from 2 s to 4 s: nothing passes, then TCP goes on.
        let client = try lab.process(
            in: lab.namespaceA, ["-c", lab.address(link: 0, side: 2), "-p", "5201", "-J", "-t", "8"],
            executable: Self.iperf3)
        try await Task.sleep(for: .seconds(2))
        try lab.control("cut")
        let cutAt = try lab.counters()
        try await Task.sleep(for: .seconds(2))
        let whileCut = try lab.counters()
        try lab.control("restore")
        #expect(whileCut["packets_out"] == cutAt["packets_out"], "packets passed a cut link")
        #expect(whileCut["dropped_cut", default: 0] > cutAt["dropped_cut", default: 0])
        #expect(try await client.waitForExit(timeout: .seconds(30)) == 0)
        let report =
            try JSONSerialization.jsonObject(with: Data(client.stdoutLines.joined(separator: "\n").utf8))
            as? [String: Any] ?? [:]
        let intervals = (report["intervals"] as? [[String: Any]] ?? []).compactMap {
            ($0["sum"] as? [String: Any])?["bytes"] as? Int
        }
        print("cut from 2 s to 4 s: bytes per second \(intervals)")
        #expect(intervals.count >= 8)
        if intervals.count >= 8 {
            // The sender's writes (what iperf3 counts) stall once its socket buffer is full.
            #expect(intervals[2] + intervals[3] < intervals[0] / 2, "\(intervals)")
            #expect(intervals[6...].reduce(0, +) > 0, "TCP did not go on after the link was restored: \(intervals)")
        }
    }

    /// Sends `size` from an app of a (node `from`) to `address` in b and returns the delivery's JSON line.
    static func send(
        _ address: String, size: String, sites: WANSites, from node: String = "a1", binary: String
    ) async throws -> [String: Any] {
        let sender = try FreightProcess(
            ["send", address, "--size", size, "--via", sites.a.node(node).socket, "--json"], executable: binary)
        let status = try await sender.waitForExit(timeout: .seconds(180))
        #expect(status == 0, "send: \(sender.stderr)")
        return try #require(sender.jsonLines.first { $0["event"] as? String == "delivered" }, "\(sender.stderr)")
    }

    /// 1 GiB from a to b across 1 Gbit/s at 50 ms, against iperf3 with 8 streams through the same link in the same
    /// run; the gateways stripe the link and say so in their status.
    @Test func aLargeMessageFillsTheWANBetweenGateways() async throws {
        let binary = try #require(
            ProcessCluster.releaseBinary, "build the release node first: swift build -c release --product freight")
        let lab = try await WANLab(settings: ["rate=1gbit", "rtt=50ms"])
        defer { lab.remove() }
        let sites = try await WANSites.start(lab: lab, executable: binary, extraArguments: ["--window", "128MiB"])
        defer { sites.stop() }
        try await sites.waitForLinks()
        let receiver = try await sites.b.receiver(
            "ckpt/wan", at: "b1", ["--count", "1", "--check", "--window", "128MiB"], seenAt: "b1")
        defer { receiver.stop() }
        try await sites.waitForRoute("ckpt/wan")
        let before = try lab.counters()
        let delivered = try await Self.send("ckpt/wan", size: "1GiB", sites: sites, binary: binary)
        let after = try lab.counters()
        #expect(try await receiver.waitForExit(timeout: .seconds(30)) == 0, "receiver: \(receiver.stderr)")
        let freightBits = (delivered["mbps"] as? Double ?? 0) * 8e6
        let wire = after["bytes_out", default: 0] - before["bytes_out", default: 0]
        let status = try await sites.a.status("a1")
        let link = (status["gateway_links"] as? [[String: Any]])?.first ?? [:]

        let server = try await Self.iperfServer(lab)
        defer { server.stop() }
        let iperf = Self.receivedBitsPerSecond(try await Self.iperf(lab, ["-t", "8", "-P", "8"]))
        print(
            "WAN 1 Gbit/s, 50 ms: freight 1 GiB \(Int(freightBits / 1e6)) Mbit/s, iperf3 -P 8 \(Int(iperf / 1e6)) Mbit/s (\(Int(100 * freightBits / iperf))%); drops \(after["dropped_queue", default: 0] - before["dropped_queue", default: 0]) of \(after["packets_in", default: 0] - before["packets_in", default: 0]); wire bytes \(wire) (\(String(format: "%.3f", Double(wire) / Double(1 << 30)))x); gateway link \(link)"
        )
        // One stream reaches about half (49%): only stripes get a link this far.
        #expect(freightBits >= 0.7 * iperf, "freight \(freightBits) bit/s, iperf3 \(iperf) bit/s")
        #expect((link["stripes"] as? Int ?? 0) >= 2, "\(link)")
    }
}
