import FreightCore
import X509

/// Who a node certificate says its holder is: a node of `cluster`, named `node`, or any node of it when `node` is
/// nil. Carried in the certificate's subject alternative names as the URI `freight://CLUSTER/NODE`.
public struct NodeIdentity: Sendable, Hashable, CustomStringConvertible {
    public var cluster: String
    public var node: String?

    public static let scheme = "freight://"

    public init(cluster: String, node: String?) {
        self.cluster = cluster
        self.node = node
    }

    public var uri: String { "\(Self.scheme)\(cluster)/\(node ?? "")" }

    /// Parses `freight://CLUSTER/NODE` (NODE may be empty); nil for any other text.
    public init?(uri: String) {
        guard uri.hasPrefix(Self.scheme) else { return nil }
        let rest = uri.dropFirst(Self.scheme.count)
        guard let slash = rest.firstIndex(of: "/") else { return nil }
        let cluster = String(rest[..<slash])
        let node = String(rest[rest.index(after: slash)...])
        guard !cluster.isEmpty, !node.contains("/") else { return nil }
        self.init(cluster: cluster, node: node.isEmpty ? nil : node)
    }

    /// The identity a certificate names, or nil when it names none (or more than one).
    public init?(certificate: Certificate) {
        guard let names = try? certificate.extensions.subjectAlternativeNames else { return nil }
        let identities = names.compactMap { name -> NodeIdentity? in
            if case .uniformResourceIdentifier(let uri) = name { return NodeIdentity(uri: uri) }
            return nil
        }
        guard identities.count == 1 else { return nil }
        self = identities[0]
    }

    /// The identity of a DER-encoded certificate.
    public init?(derEncoded bytes: [UInt8]) {
        guard let certificate = try? Certificate(derEncoded: bytes) else { return nil }
        self.init(certificate: certificate)
    }

    /// Whether a node of this name may present this identity.
    public func admits(name: String) -> Bool { node == nil || node == name }

    public var description: String {
        node.map { "node \($0) of cluster \(cluster)" } ?? "any node of cluster \(cluster)"
    }
}
