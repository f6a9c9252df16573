import Foundation
import FreightCore
import FreightNode
import FreightRouting
import FreightSecurity

/// Several clusters in one process, joined in a chain by their gateways (docs/gateways.md): cluster `i` has nodes
/// `NAME1`… and a gateway `NAME-gw` on 127.0.`i + 1`.x, its own authority, and its gateway dials the previous
/// cluster's over mutual TLS. Used by `freight demo` and `freight bench --paths gateway`.
public final class ClusterChain: Sendable {
    public let clusters: [String]
    public let fabrics: [InProcessFabric]
    public let directory: String

    private init(clusters: [String], fabrics: [InProcessFabric], directory: String) {
        self.clusters = clusters
        self.fabrics = fabrics
        self.directory = directory
    }

    /// Starts `clusters` in a chain, each of `nodes` nodes (the last its gateway) that exports `exports[cluster]`
    /// (default: nothing) and imports everything; its gateway links close after `gatewayHold` of silence.
    public static func start(
        clusters: [String], nodes: Int = 3, exports: [String: [String]] = [:], streams: Int = Limits.streamsDefault,
        windowBytes: Int = Limits.windowBytesDefault, gatewayHold: Duration = Limits.gatewayHoldDefault
    ) async throws -> ClusterChain {
        let directory = NSTemporaryDirectory() + "freight-chain-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var fabrics: [InProcessFabric] = []
        do {
            for cluster in clusters {
                let authority = try CertificateAuthority.create(name: "\(cluster) authority")
                try authority.write(to: "\(directory)/\(cluster)-ca")
                try authority.issue(
                    NodeIdentity(cluster: cluster, node: "\(cluster)-gw"), into: "\(directory)/\(cluster)")
            }
            for (index, cluster) in clusters.enumerated() {
                let neighbours = [index - 1, index + 1].filter(clusters.indices.contains).map { clusters[$0] }
                let files = "\(directory)/\(cluster)"
                let gateway = GatewayConfiguration(
                    listen: .tcp(host: "127.0.\(index + 1).\(nodes)", port: 0),
                    peers: index == 0 ? [] : [try NodeAddress(fabrics[index - 1].engines.last!.gatewayAddress ?? "")],
                    filters: RouteFilters(
                        exports: try (exports[cluster] ?? []).map { try AddressPattern($0) },
                        imports: [try AddressPattern("**")]),
                    security: try GatewaySecurity(
                        cluster: cluster, certificate: "\(files)/node.pem", key: "\(files)/node-key.pem",
                        peerAuthorities: neighbours.map { "\(directory)/\($0)-ca/authority.pem" }),
                    holdTime: gatewayHold)
                fabrics.append(
                    try await InProcessFabric.start(
                        nodes: nodes, cluster: cluster, streams: streams, windowBytes: windowBytes,
                        naming: .init(prefix: cluster, hostPrefix: "127.0.\(index + 1)."), gateway: gateway))
            }
        } catch {
            for fabric in fabrics { await fabric.stop() }
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        return ClusterChain(clusters: clusters, fabrics: fabrics, directory: directory)
    }

    /// Waits until every node of cluster `from` resolves `address` to a route into cluster `to` (to its pattern
    /// receivers, or with `group`, to that `any` group).
    public func waitForRoute(
        _ address: Address, from: Int, to cluster: String, group: String? = nil, timeout: Duration = .seconds(20)
    ) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            var seen = true
            for engine in fabrics[from].engines where try await !engine.reaches(address, in: cluster, group: group) {
                seen = false
            }
            if seen { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw FreightError(.internalError, "cluster \(clusters[from]) learned no route to \(address) in \(cluster)")
    }

    /// The gateway identity of cluster `index`, trusting its neighbours' authorities (for a measurement of TLS alone).
    public func security(_ index: Int) throws -> GatewaySecurity {
        let neighbours = [index - 1, index + 1].filter(clusters.indices.contains).map { clusters[$0] }
        let files = "\(directory)/\(clusters[index])"
        return try GatewaySecurity(
            cluster: clusters[index], certificate: "\(files)/node.pem", key: "\(files)/node-key.pem",
            peerAuthorities: neighbours.map { "\(directory)/\($0)-ca/authority.pem" })
    }

    public func stop() async {
        for fabric in fabrics.reversed() { await fabric.stop() }
        try? FileManager.default.removeItem(atPath: directory)
    }
}
