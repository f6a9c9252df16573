import ArgumentParser
import FreightCore
import FreightNode
import FreightRouting
import FreightSecurity

/// The flags that make a node a gateway of its cluster (docs/gateways.md).
struct GatewayOptions: ParsableArguments {
    @Option(
        name: .customLong("gateway"),
        help: "HOST:PORT where this node, as a gateway of its cluster, links with gateways of other clusters.")
    var listen: String?
    @Option(
        name: .customLong("gateway-peer"),
        help:
            "[NAME@]HOST:PORT of a gateway of another cluster to link to; repeatable. With NAME the TLS handshake names it (SNI), for a proxy that routes by name to one of several gateways behind one port."
    )
    var peers: [String] = []
    @Option(
        name: .customLong("export"),
        help: "A pattern other clusters may reach through this gateway; repeatable (default: nothing).")
    var exports: [String] = []
    @Option(
        name: .customLong("import"),
        help: "A pattern this gateway takes routes for from other clusters; repeatable (default: all they export).")
    var imports: [String] = []
    @Option(
        name: .customLong("peer-authority"),
        help: "The authority of other clusters' gateways (authority.pem); repeatable (default: --tls-authority).")
    var peerAuthorities: [String] = []

    func load(cluster: String, tls: LinkSecurityOptions) throws -> GatewayConfiguration? {
        guard let listen else {
            if !peers.isEmpty || !exports.isEmpty || !imports.isEmpty || !peerAuthorities.isEmpty {
                throw FreightError(
                    .invalidArgument, "--gateway-peer, --export, --import and --peer-authority need --gateway")
            }
            return nil
        }
        guard let certificate = tls.certificate, let key = tls.key else {
            throw FreightError(
                .invalidArgument, "--gateway needs --tls-cert and --tls-key: gateways prove their cluster")
        }
        let authorities = peerAuthorities.isEmpty ? tls.authority.map { [$0] } ?? [] : peerAuthorities
        guard !authorities.isEmpty else {
            throw FreightError(.invalidArgument, "--gateway needs --peer-authority or --tls-authority")
        }
        func address(_ text: String, _ flag: String) throws(FreightError) -> NodeAddress {
            guard case .tcp = try NodeAddress(text) else {
                throw FreightError(.invalidArgument, "\(flag) \(text): use HOST:PORT")
            }
            return try NodeAddress(text)
        }
        let filters = RouteFilters(
            exports: try exports.map { try AddressPattern($0) },
            imports: imports.isEmpty ? [try AddressPattern("**")] : try imports.map { try AddressPattern($0) })
        var serverNames: [String?] = []
        var peerAddresses: [NodeAddress] = []
        for peer in peers {
            let parts = peer.split(separator: "@", maxSplits: 1).map(String.init)
            let target = try address(parts.last ?? peer, "--gateway-peer")
            if parts.count == 2 {
                guard GatewayConfiguration.isServerName(parts[0]) else {
                    throw FreightError(
                        .invalidArgument, "--gateway-peer \(peer): '\(parts[0])' is not a DNS name to send as SNI")
                }
            }
            serverNames.append(parts.count == 2 ? parts[0] : nil)
            peerAddresses.append(target)
        }
        return GatewayConfiguration(
            listen: try address(listen, "--gateway"), peers: peerAddresses, serverNames: serverNames,
            filters: filters,
            security: try GatewaySecurity(
                cluster: cluster, certificate: certificate, key: key, peerAuthorities: authorities))
    }
}
