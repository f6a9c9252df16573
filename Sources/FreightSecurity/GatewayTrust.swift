import Foundation
import FreightCore
import NIOCore
import NIOSSL
import SwiftASN1
import X509

/// Why a gateway of another cluster was refused (docs/gateways.md, "Identity"): each reason is logged as it is.
public enum GatewayRefusal: Error, Equatable, Sendable, CustomStringConvertible {
    /// No certificate came, or it could not be read.
    case noCertificate
    /// Not signed by any authority this gateway trusts for its peers.
    case untrusted(issuer: String)
    case expired(notValidAfter: Date)
    case notYetValid(notValidBefore: Date)
    /// The certificate names no Freight cluster (no `freight://CLUSTER/…` URI SAN).
    case namesNoCluster
    /// The certificate is for this gateway's own cluster: gateways of one cluster meet through its directory.
    case namesOwnCluster(String)
    /// The peer's HELLO claims a cluster other than the one its certificate names.
    case claimsAnotherCluster(certificate: String, claimed: String)

    public var description: String {
        switch self {
        case .noCertificate: "it presented no readable certificate"
        case .untrusted(let issuer):
            "its certificate is not signed by an authority this gateway trusts (issuer \(issuer))"
        case .expired(let date): "its certificate expired on \(date)"
        case .notYetValid(let date): "its certificate is not valid before \(date)"
        case .namesNoCluster: "its certificate names no Freight cluster (freight cert issue makes one)"
        case .namesOwnCluster(let cluster): "its certificate is for this gateway's own cluster \(cluster)"
        case .claimsAnotherCluster(let certificate, let claimed):
            "its certificate is for cluster \(certificate) but it claims to be cluster \(claimed)"
        }
    }
}

/// Which gateways of other clusters a gateway accepts: those whose certificate is signed by one of `authorities`
/// (each organisation keeps its own; by default the gateway's own cluster authority), is valid now, and names a
/// cluster other than this one. Used on both sides of a gateway link, in place of BoringSSL's own checks, so that
/// the log can say which check failed.
public struct GatewayTrust: Sendable {
    public let cluster: String
    public let authorities: [Certificate]

    public init(cluster: String, authorities: [Certificate]) {
        self.cluster = cluster
        self.authorities = authorities
    }

    /// The authorities' PEM files (each may hold several certificates).
    public init(cluster: String, authorityFiles: [String]) throws {
        var authorities: [Certificate] = []
        for file in authorityFiles {
            let text = try CertificateAuthority.read(file)
            let documents = try PEMDocument.parseMultiple(pemString: text)
            guard !documents.isEmpty else { throw FreightError(.invalidArgument, "\(file) holds no certificate") }
            for document in documents { authorities.append(try Certificate(pemDocument: document)) }
        }
        self.init(cluster: cluster, authorities: authorities)
    }

    /// The cluster the peer's chain (leaf first, as it was presented) proves, or why it proves none.
    public func verify(chain: [Certificate], now: Date = Date()) async -> Result<String, GatewayRefusal> {
        guard let leaf = chain.first else { return .failure(.noCertificate) }
        if now > leaf.notValidAfter { return .failure(.expired(notValidAfter: leaf.notValidAfter)) }
        if now < leaf.notValidBefore { return .failure(.notYetValid(notValidBefore: leaf.notValidBefore)) }
        guard await signed(leaf, intermediates: Array(chain.dropFirst()), now: now) else {
            return .failure(.untrusted(issuer: leaf.issuer.description))
        }
        guard let identity = NodeIdentity(certificate: leaf) else { return .failure(.namesNoCluster) }
        guard identity.cluster != cluster else { return .failure(.namesOwnCluster(cluster)) }
        return .success(identity.cluster)
    }

    /// The HELLO's claim against what the certificate proved.
    public func check(claimed: String, proven: String) -> GatewayRefusal? {
        claimed == proven ? nil : .claimsAnotherCluster(certificate: proven, claimed: claimed)
    }

    /// Issued by one of the authorities directly, or through the intermediates presented (an existing PKI).
    private func signed(_ leaf: Certificate, intermediates: [Certificate], now: Date) async -> Bool {
        for authority in authorities
        where authority.subject == leaf.issuer && authority.publicKey.isValidSignature(leaf.signature, for: leaf) {
            return true
        }
        guard !intermediates.isEmpty else { return false }
        var verifier = Verifier(rootCertificates: CertificateStore(authorities)) {
            RFC5280Policy(validationTime: now)
        }
        let result = await verifier.validate(leaf: leaf, intermediates: CertificateStore(intermediates))
        if case .validCertificate = result { return true }
        return false
    }
}

/// The TLS side of gateway links: mutual TLS 1.3 with ALPN `freight-gateway`, the gateway's own certificate, and
/// ``GatewayTrust`` deciding which peers are accepted.
public struct GatewaySecurity: Sendable {
    public static let protocolName = "freight-gateway"
    public let trust: GatewayTrust
    /// This gateway's identity, as its certificate names it.
    public let identity: NodeIdentity
    let server: NIOSSLContext
    let client: NIOSSLContext

    /// This gateway's certificate and key (those it uses as a node of `cluster`), and the authorities it trusts for
    /// its peers.
    public init(cluster: String, certificate: String, key: String, peerAuthorities: [String]) throws {
        let own = try Certificate(pemEncoded: try CertificateAuthority.read(certificate))
        let ownKey = try Certificate.PrivateKey(pemEncoded: try CertificateAuthority.read(key))
        guard ownKey.publicKey == own.publicKey else {
            throw FreightError(.invalidArgument, "\(key) is not the key of \(certificate)")
        }
        guard let identity = NodeIdentity(certificate: own), identity.cluster == cluster else {
            throw FreightError(.invalidArgument, "\(certificate) is not a certificate of cluster \(cluster)")
        }
        self.identity = identity
        self.trust = try GatewayTrust(cluster: cluster, authorityFiles: peerAuthorities)
        let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
        let privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
        var serverConfiguration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain, privateKey: .privateKey(privateKey))
        // Ask for the peer's certificate; the checks are GatewayTrust's (the verification callback).
        serverConfiguration.certificateVerification = .noHostnameVerification
        serverConfiguration.minimumTLSVersion = .tlsv13
        serverConfiguration.applicationProtocols = [Self.protocolName]
        var clientConfiguration = TLSConfiguration.makeClientConfiguration()
        clientConfiguration.certificateChain = chain
        clientConfiguration.privateKey = .privateKey(privateKey)
        clientConfiguration.certificateVerification = .noHostnameVerification
        clientConfiguration.minimumTLSVersion = .tlsv13
        clientConfiguration.applicationProtocols = [Self.protocolName]
        self.server = try NIOSSLContext(configuration: serverConfiguration)
        self.client = try NIOSSLContext(configuration: clientConfiguration)
    }

    /// The TLS handler of one gateway link. `decided` is told the cluster the peer proved, or why it was refused,
    /// before the handshake ends (a refused peer's handshake fails). A dialed link with `serverName` names it in its
    /// handshake (SNI), for a proxy that routes by it; the certificate is checked for its cluster, not that name.
    public func tlsHandler(
        accepted: Bool, serverName: String? = nil,
        decided: @escaping @Sendable (Result<String, GatewayRefusal>) -> Void
    ) throws -> NIOSSLHandler {
        let trust = self.trust
        let callback: NIOSSLCustomVerificationCallback = { certificates, promise in
            let chain = certificates.compactMap { try? Certificate(derEncoded: $0.toDERBytes()) }
            promise.completeWithTask {
                let result = await trust.verify(chain: chain)
                decided(result)
                if case .success = result { return .certificateVerified }
                return .failed
            }
        }
        return accepted
            ? NIOSSLServerHandler(context: server, customVerificationCallback: callback)
            : try NIOSSLClientHandler(context: client, serverHostname: serverName, customVerificationCallback: callback)
    }
}
