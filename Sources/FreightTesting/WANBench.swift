import Foundation
import FreightCore

/// Freight across an emulated WAN against iperf3 through the same link, in one run (docs/wan.md): what
/// `freight bench --paths wan` prints and the WAN tests check.
public enum WANBench {
    public static let iperf3 = "/usr/bin/iperf3"

    public struct Result {
        public var settings: [String]
        /// Bits per second: iperf3 with one stream, with `streams` streams, and Freight's message.
        public var iperfOne: Double
        public var iperfMany: Double
        public var streams: Int
        /// Freight's first message, on links just up (their stripes new: TCP and the stripe planner start), and
        /// the same message sent again at once over the links now established.
        public var freight: Double
        public var freightEstablished: Double
        /// Bytes that crossed the link a → b while Freight sent both messages, over their size.
        public var wireRatio: Double
        /// The stripes the sending gateway sends on (its planner's count: a count it took back leaves stripes up and
        /// idle), and the link's status line as JSON.
        public var stripes: Int
        public var link: [String: Any]
    }

    /// An iperf3 server in b of `lab` on link `link`, until stopped.
    public static func iperfServer(_ lab: WANLab, link: Int = 0, port: Int = 5201) async throws -> FreightProcess {
        let server = try lab.process(
            in: lab.namespaceB, ["-s", "-B", lab.address(link: link, side: 2), "-p", "\(port)", "--forceflush"],
            executable: iperf3)
        do {
            _ = try await server.waitForLine(timeout: .seconds(10)) { $0.contains("Server listening") }
        } catch {
            server.stop()
            throw error
        }
        return server
    }

    /// Runs an iperf3 client in a and returns its JSON report.
    public static func iperf(_ lab: WANLab, link: Int = 0, port: Int = 5201, _ arguments: [String]) async throws
        -> [String: Any]
    {
        let client = try lab.process(
            in: lab.namespaceA, ["-c", lab.address(link: link, side: 2), "-p", "\(port)", "-J"] + arguments,
            executable: iperf3)
        let status = try await client.waitForExit(timeout: .seconds(180))
        let text = client.stdoutLines.joined(separator: "\n")
        guard status == 0, let report = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        else {
            throw FreightError(.internalError, "iperf3 \(arguments.joined(separator: " ")): \(client.stderr)")
        }
        return report
    }

    /// What the receiving side of an iperf3 report got, in bits per second.
    public static func receivedBitsPerSecond(_ report: [String: Any]) -> Double {
        ((report["end"] as? [String: Any])?["sum_received"] as? [String: Any])?["bits_per_second"] as? Double ?? 0
    }

    /// Sends `size` from an app of a (node `from`) to `address` in b and returns the delivery's JSON line.
    public static func send(
        _ address: String, size: String, sites: WANSites, from node: String = "a1", binary: String? = nil
    ) async throws -> [String: Any] {
        let sender = try FreightProcess(
            ["send", address, "--size", size, "--via", sites.a.node(node).socket, "--json"], executable: binary)
        let status = try await sender.waitForExit(timeout: .seconds(300))
        guard status == 0, let line = sender.jsonLines.first(where: { $0["event"] as? String == "delivered" }) else {
            throw FreightError(.internalError, "freight send across the WAN failed: \(sender.stderr)")
        }
        return line
    }

    /// One measurement: a lab of `pairs` links with `settings` each, gateways a1 and b1 (and a2, b2… one pair per
    /// link; `binary`, each node and the receiver with `window`), a `size` message from an app of a1 to one of b1
    /// checked byte by byte, and the same again over the links now established, then iperf3 with one stream for
    /// `oneStreamSeconds` on the first link and with `streams` streams on every link at once, each for its share of
    /// the message's bytes.
    public static func measure(
        settings: [String], size: Int64, window: String, streams: Int = 8, oneStreamSeconds: Int = 8,
        pairs: Int = 1, binary: String? = nil
    ) async throws -> Result {
        let lab = try await WANLab(links: pairs, settings: settings)
        defer { lab.remove() }
        let sites = try await WANSites.start(lab: lab, executable: binary, extraArguments: ["--window", window])
        defer { sites.stop() }
        try await sites.waitForLinks()
        let receiver = try await sites.b.receiver(
            "bench/wan", at: "b1", ["--count", "2", "--check", "--window", window], seenAt: "b1")
        defer { receiver.stop() }
        for node in sites.a.nodes { try await sites.waitForRoute("bench/wan", at: node.name) }
        let before = try (0..<pairs).map { try lab.counters(link: $0)["bytes_out", default: 0] }
        let delivered = try await send("bench/wan", size: "\(size)", sites: sites, binary: binary)
        let again = try await send("bench/wan", size: "\(size)", sites: sites, binary: binary)
        let after = try (0..<pairs).map { try lab.counters(link: $0)["bytes_out", default: 0] }
        guard try await receiver.waitForExit(timeout: .seconds(30)) == 0 else {
            throw FreightError(.internalError, "the receiver in b failed: \(receiver.stderr)")
        }
        let status = try await sites.a.status("a1")
        let link = (status["gateway_links"] as? [[String: Any]])?.first ?? [:]
        var servers: [FreightProcess] = []
        defer { for server in servers { server.stop() } }
        for index in 0..<pairs { servers.append(try await iperfServer(lab, link: index)) }
        let many = try await withThrowingTaskGroup(of: Double.self) { group in
            for index in 0..<pairs {
                group.addTask {
                    receivedBitsPerSecond(
                        try await iperf(lab, link: index, ["-n", "\(size / Int64(pairs))", "-P", "\(streams)"]))
                }
            }
            return try await group.reduce(0, +)
        }
        let one = receivedBitsPerSecond(try await iperf(lab, ["-t", "\(oneStreamSeconds)"]))
        return Result(
            settings: settings, iperfOne: one, iperfMany: many, streams: streams,
            freight: (delivered["mbps"] as? Double ?? 0) * 8e6,
            freightEstablished: (again["mbps"] as? Double ?? 0) * 8e6,
            wireRatio: Double(zip(after, before).map { $0 - $1 }.reduce(0, +)) / Double(2 * size),
            stripes: link["stripes_wanted"] as? Int ?? 0, link: link)
    }
}
