import Crypto
import Foundation
import FreightCore
import SwiftASN1
import X509

/// A cluster's certificate authority: it issues the certificates by which the cluster's nodes (and, later, its
/// gateways) prove who they are. Files: `authority.pem` and `authority-key.pem` in one directory; a node's are
/// `node.pem`, `node-key.pem` and a copy of `authority.pem`. Keys are P-256, written with mode 600.
public struct CertificateAuthority: Sendable {
    public static let certificateFile = "authority.pem"
    public static let keyFile = "authority-key.pem"
    public static let nodeCertificateFile = "node.pem"
    public static let nodeKeyFile = "node-key.pem"

    public let certificate: Certificate
    let key: Certificate.PrivateKey

    /// A new authority named `name`, valid for `days`.
    public static func create(name: String = "Freight cluster authority", days: Int = 3650) throws
        -> CertificateAuthority
    {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let subject = try DistinguishedName {
            OrganizationName("Freight")
            CommonName(name)
        }
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(Double(days) * 86_400),
            issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: key.publicKey)
            },
            issuerPrivateKey: key)
        return CertificateAuthority(certificate: certificate, key: key)
    }

    /// The authority kept in `directory`.
    public static func load(from directory: String) throws -> CertificateAuthority {
        let certificate = try Certificate(pemEncoded: try Self.read("\(directory)/\(certificateFile)"))
        let key = try Certificate.PrivateKey(pemEncoded: try Self.read("\(directory)/\(keyFile)"))
        guard key.publicKey == certificate.publicKey else {
            throw FreightError(.invalidArgument, "\(directory): \(keyFile) is not the key of \(certificateFile)")
        }
        return CertificateAuthority(certificate: certificate, key: key)
    }

    /// Writes the authority's certificate and key into `directory` (made if missing); refuses to overwrite a key.
    public func write(to directory: String) throws {
        try Self.makeDirectory(directory)
        let keyPath = "\(directory)/\(Self.keyFile)"
        guard !FileManager.default.fileExists(atPath: keyPath) else {
            throw FreightError(.invalidArgument, "\(keyPath) exists: an authority's key is never overwritten")
        }
        try Self.write(try key.serializeAsPEM().pemString, to: keyPath, secret: true)
        try Self.write(try certificate.serializeAsPEM().pemString, to: "\(directory)/\(Self.certificateFile)")
    }

    /// A certificate for `identity`, valid for `days`, with a fresh key: (certificate PEM, key PEM).
    public func issue(_ identity: NodeIdentity, days: Int = 365) throws -> (certificate: String, key: String) {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let subject = try DistinguishedName {
            OrganizationName(identity.cluster)
            CommonName(identity.node ?? "*")
        }
        let now = Date()
        let issued = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(Double(days) * 86_400),
            issuer: certificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                SubjectAlternativeNames([.uniformResourceIdentifier(identity.uri)])
            },
            issuerPrivateKey: self.key)
        return (try issued.serializeAsPEM().pemString, try key.serializeAsPEM().pemString)
    }

    /// Issues a certificate for `identity` into `directory`: `node.pem`, `node-key.pem` and `authority.pem`.
    public func issue(_ identity: NodeIdentity, days: Int = 365, into directory: String) throws {
        let (certificatePEM, keyPEM) = try issue(identity, days: days)
        try Self.makeDirectory(directory)
        try Self.write(keyPEM, to: "\(directory)/\(Self.nodeKeyFile)", secret: true)
        try Self.write(certificatePEM, to: "\(directory)/\(Self.nodeCertificateFile)")
        try Self.write(try certificate.serializeAsPEM().pemString, to: "\(directory)/\(Self.certificateFile)")
    }

    static func read(_ path: String) throws -> String {
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw FreightError(.invalidArgument, "cannot read \(path): \(error.localizedDescription)")
        }
    }

    static func makeDirectory(_ directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    /// Writes `text` to `path`, readable by its owner only when `secret`.
    static func write(_ text: String, to path: String, secret: Bool = false) throws {
        let created = FileManager.default.createFile(
            atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: secret ? 0o600 : 0o644])
        guard created else { throw FreightError(.invalidArgument, "cannot write \(path)") }
        if secret { try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path) }
    }
}
