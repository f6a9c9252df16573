import Foundation
import FreightSecurity
import Testing

/// The cluster's authority and the node certificates it issues (docs/hardening.md, "Nodes prove who they are"):
/// what a node refuses to start with, before any link is made.
@Suite struct CertificateTests {
    let folder = NSTemporaryDirectory() + "freight-cert-\(UInt32.random(in: 0...UInt32.max))"

    @Test func identitiesAreURIsOfClusterAndNode() {
        #expect(NodeIdentity(uri: "freight://c1/n1") == NodeIdentity(cluster: "c1", node: "n1"))
        #expect(NodeIdentity(uri: "freight://c1/") == NodeIdentity(cluster: "c1", node: nil))
        #expect(NodeIdentity(uri: "freight://c1") == nil)
        #expect(NodeIdentity(uri: "freight:///n1") == nil)
        #expect(NodeIdentity(uri: "freight://c1/n1/x") == nil)
        #expect(NodeIdentity(uri: "https://c1/n1") == nil)
        #expect(NodeIdentity(cluster: "c1", node: nil).admits(name: "anyone"))
        #expect(!NodeIdentity(cluster: "c1", node: "n1").admits(name: "n2"))
    }

    @Test func aNodeStartsOnlyWithACertificateOfItsAuthorityForItsName() throws {
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let authority = try CertificateAuthority.create()
        try authority.write(to: "\(folder)/ca")
        #expect(throws: (any Error).self) { try authority.write(to: "\(folder)/ca") }  // a key is never overwritten
        let key = try FileManager.default.attributesOfItem(atPath: "\(folder)/ca/\(CertificateAuthority.keyFile)")
        #expect((key[.posixPermissions] as? Int) == 0o600)

        let loaded = try CertificateAuthority.load(from: "\(folder)/ca")
        try loaded.issue(NodeIdentity(cluster: "c1", node: "n1"), into: "\(folder)/n1")
        try loaded.issue(NodeIdentity(cluster: "c1", node: nil), into: "\(folder)/any")
        let n1 = try LinkSecurity(cluster: "c1", name: "n1", directory: "\(folder)/n1", encrypts: false)
        #expect(n1.identity == NodeIdentity(cluster: "c1", node: "n1"))
        #expect(try LinkSecurity(cluster: "c1", name: "n7", directory: "\(folder)/any", encrypts: true).encrypts)

        // Another node's name, another cluster.
        #expect(throws: (any Error).self) {
            try LinkSecurity(cluster: "c1", name: "n2", directory: "\(folder)/n1", encrypts: false)
        }
        #expect(throws: (any Error).self) {
            try LinkSecurity(cluster: "c2", name: "n1", directory: "\(folder)/any", encrypts: false)
        }
        // A certificate of another authority, and a key that is not the certificate's.
        try CertificateAuthority.create().issue(NodeIdentity(cluster: "c1", node: "n1"), into: "\(folder)/other")
        #expect(throws: (any Error).self) {
            try LinkSecurity(
                cluster: "c1", name: "n1", authority: "\(folder)/n1/authority.pem",
                certificate: "\(folder)/other/node.pem", key: "\(folder)/other/node-key.pem", encrypts: false)
        }
        #expect(throws: (any Error).self) {
            try LinkSecurity(
                cluster: "c1", name: "n1", authority: "\(folder)/n1/authority.pem",
                certificate: "\(folder)/n1/node.pem",
                key: "\(folder)/other/node-key.pem", encrypts: false)
        }
    }
}
