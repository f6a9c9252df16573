import Foundation
import FreightCore
import FreightSecurity

/// Two clusters, `a` in namespace a and `b` in namespace b of a ``WANLab``, joined only through its emulated WAN
/// (docs/wan.md): one gateway node per link on each side (`a1`, `a2`… on 198.18.(100 + n).1, `b1`, `b2`… on
/// …2), the nodes of a cluster meshed over their namespace's loopback, each cluster with its own authority; b's
/// gateways dial a's and both export everything. Apps reach the nodes through their Unix sockets from anywhere.
public final class WANSites: Sendable {
    public let lab: WANLab
    public let a: ProcessCluster
    public let b: ProcessCluster
    public let folder: String
    public static let gatewayPort = 7400

    private init(lab: WANLab, a: ProcessCluster, b: ProcessCluster, folder: String) {
        self.lab = lab
        self.a = a
        self.b = b
        self.folder = folder
    }

    /// Starts both clusters across `lab` (its links' count of gateways each) with `executable` (default: the
    /// `freight` beside the tests) and `extraArguments` for every node; waits until a's first node has a route to
    /// `b`'s patterns (once a receiver registers them).
    public static func start(lab: WANLab, executable: String? = nil, extraArguments: [String] = []) async throws
        -> WANSites
    {
        let folder = NSTemporaryDirectory() + "freight-wan-sites-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        var started: [ProcessCluster] = []
        do {
            for cluster in ["a", "b"] {
                let authority = try CertificateAuthority.create(name: "\(cluster) authority")
                try authority.write(to: "\(folder)/\(cluster)-ca")
                for link in 0..<lab.links {
                    try authority.issue(
                        NodeIdentity(cluster: cluster, node: "\(cluster)\(link + 1)"),
                        into: "\(folder)/\(cluster)\(link + 1)")
                }
            }
            for (side, cluster) in [(1, "a"), (2, "b")] {
                let other = cluster == "a" ? "b" : "a"
                let processes = try ProcessCluster(
                    cluster: cluster, executable: executable, namespace: side == 1 ? lab.namespaceA : lab.namespaceB)
                started.append(processes)
                var first: String?
                for link in 0..<lab.links {
                    let name = "\(cluster)\(link + 1)"
                    var arguments = [
                        "--tls-authority", "\(folder)/\(name)/authority.pem", "--tls-cert",
                        "\(folder)/\(name)/node.pem",
                        "--tls-key", "\(folder)/\(name)/node-key.pem", "--nvidia-smi", "off",
                        "--gateway", "\(lab.address(link: link, side: side)):\(gatewayPort)",
                        "--peer-authority", "\(folder)/\(other)-ca/authority.pem", "--export", "**",
                    ]
                    if side == 2 {
                        arguments += ["--gateway-peer", "\(lab.address(link: link, side: 1)):\(gatewayPort)"]
                    }
                    let node = try await processes.startNode(
                        name: name, host: "127.0.0.\(link + 1)", join: first.map { [$0] } ?? [],
                        extraArguments: arguments + extraArguments)
                    if first == nil { first = node.listen }
                }
                if lab.links > 1 { try await processes.waitForMesh() }
            }
            return WANSites(lab: lab, a: started[0], b: started[1], folder: folder)
        } catch {
            for cluster in started { cluster.stop() }
            try? FileManager.default.removeItem(atPath: folder)
            throw error
        }
    }

    /// Waits until every gateway of a has a gateway link up to b.
    public func waitForLinks(timeout: Duration = .seconds(20)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            var up = 0
            for node in a.nodes {
                let links = try await a.status(node.name)["gateway_links"] as? [[String: Any]] ?? []
                if !links.isEmpty { up += 1 }
            }
            if up == a.nodes.count { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw FreightError(.internalError, "the gateways of a did not link to b within \(timeout)")
    }

    /// Waits until a's node `node` resolves `address` (a receiver's pattern in b) to a route into b.
    public func waitForRoute(_ address: String, at node: String = "a1", timeout: Duration = .seconds(20)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let result = try await FreightProcess.run(["resolve", address, "--via", a.node(node).socket, "--json"])
            if result.status == 0, result.stdout.contains(where: { $0.contains("\"b\"") || $0.contains("b/") }) {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw FreightError(.internalError, "a learned no route to \(address) in b within \(timeout)")
    }

    public func stop() {
        a.stop()
        b.stop()
        try? FileManager.default.removeItem(atPath: folder)
    }
}
