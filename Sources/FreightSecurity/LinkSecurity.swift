import Foundation
import FreightCore
import NIOSSL
import X509

/// How a node's links to other nodes prove who is at the other end (docs/hardening.md, "Nodes prove who they
/// are"): mutual TLS 1.3 against the cluster's authority on every stripe, then either plain wire v1
/// (`authenticated`) or TLS to the end (`encrypted`). Made once per node from its files; the TLS contexts are
/// shared by all its links.
public struct LinkSecurity: Sendable {
    public let cluster: String
    /// This node's identity, as its certificate names it.
    public let identity: NodeIdentity
    /// Whether links stay encrypted after the handshake (the cluster's choice; every node of it must agree).
    public let encrypts: Bool
    let server: NIOSSLContext
    let client: NIOSSLContext

    /// The ALPN protocol that carries this node's choice; a peer that chose otherwise fails its handshake.
    public var protocolName: String { Self.protocolName(encrypts: encrypts) }

    static func protocolName(encrypts: Bool) -> String { encrypts ? "freight-encrypted" : "freight-authenticated" }

    /// What `freight status` and the start-up log say of a node's links.
    public var summary: String {
        encrypts ? "mutual TLS, encrypted (\(identity))" : "mutual TLS, authenticated, not encrypted (\(identity))"
    }

    /// What a node without certificates says instead.
    public static let trustedNetworkSummary = "none: links between nodes are not authenticated (trusted network only)"

    /// Loads the authority's certificate, this node's certificate and key; checks that they belong together and
    /// name node `name` of `cluster`.
    public init(
        cluster: String, name: String, authority: String, certificate: String, key: String, encrypts: Bool
    ) throws {
        let authorityCertificate = try Certificate(pemEncoded: try CertificateAuthority.read(authority))
        let own = try Certificate(pemEncoded: try CertificateAuthority.read(certificate))
        let ownKey = try Certificate.PrivateKey(pemEncoded: try CertificateAuthority.read(key))
        guard ownKey.publicKey == own.publicKey else {
            throw FreightError(.invalidArgument, "\(key) is not the key of \(certificate)")
        }
        guard own.issuer == authorityCertificate.subject,
            authorityCertificate.publicKey.isValidSignature(own.signature, for: own)
        else {
            throw FreightError(.invalidArgument, "\(certificate) was not issued by the authority \(authority)")
        }
        guard let identity = NodeIdentity(certificate: own) else {
            throw FreightError(.invalidArgument, "\(certificate) names no Freight node (freight cert issue makes one)")
        }
        guard identity.cluster == cluster, identity.admits(name: name) else {
            throw FreightError(
                .invalidArgument, "\(certificate) is for \(identity), not node \(name) of cluster \(cluster)")
        }
        self.cluster = cluster
        self.identity = identity
        self.encrypts = encrypts
        let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
        let privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
        let roots = NIOSSLTrustRoots.certificates(try NIOSSLCertificate.fromPEMFile(authority))
        let alpn = Self.protocolName(encrypts: encrypts)
        var serverConfiguration = TLSConfiguration.makeServerConfigurationWithMTLS(
            certificateChain: chain, privateKey: .privateKey(privateKey), trustRoots: roots)
        serverConfiguration.minimumTLSVersion = .tlsv13
        serverConfiguration.applicationProtocols = [alpn]
        var clientConfiguration = TLSConfiguration.makeClientConfiguration()
        clientConfiguration.certificateChain = chain
        clientConfiguration.privateKey = .privateKey(privateKey)
        clientConfiguration.trustRoots = roots
        clientConfiguration.certificateVerification = .noHostnameVerification
        clientConfiguration.minimumTLSVersion = .tlsv13
        clientConfiguration.applicationProtocols = [alpn]
        self.server = try NIOSSLContext(configuration: serverConfiguration)
        self.client = try NIOSSLContext(configuration: clientConfiguration)
    }

    /// The TLS handler of one link: the server's side on an accepted link, the client's on a dialed one.
    public func tlsHandler(accepted: Bool) throws -> NIOSSLHandler {
        accepted ? NIOSSLServerHandler(context: server) : try NIOSSLClientHandler(context: client, serverHostname: nil)
    }

    /// The files `freight cert issue` wrote into `directory`.
    public init(cluster: String, name: String, directory: String, encrypts: Bool) throws {
        try self.init(
            cluster: cluster, name: name, authority: "\(directory)/\(CertificateAuthority.certificateFile)",
            certificate: "\(directory)/\(CertificateAuthority.nodeCertificateFile)",
            key: "\(directory)/\(CertificateAuthority.nodeKeyFile)", encrypts: encrypts)
    }
}
