import Foundation
import FreightSecurity
import NIOCore
import NIOPosix
import Synchronization
import Testing
import X509

/// Which gateways of other clusters a gateway accepts (docs/gateways.md, "Identity"): each refusal has its own
/// reason, checked on the certificates themselves and over a real TLS 1.3 handshake on loopback.
@Suite struct GatewayTrustTests {
    let folder = NSTemporaryDirectory() + "freight-gateway-trust-\(UInt32.random(in: 0...UInt32.max))"

    /// Authorities of clusters A and B and a stranger's, with certificates of gateways they issued.
    func authorities() throws -> (a: CertificateAuthority, b: CertificateAuthority, stranger: CertificateAuthority) {
        let (a, b, stranger) = (
            try CertificateAuthority.create(name: "A"), try CertificateAuthority.create(name: "B"),
            try CertificateAuthority.create(name: "stranger")
        )
        try a.write(to: "\(folder)/a-ca")
        try b.write(to: "\(folder)/b-ca")
        try a.issue(NodeIdentity(cluster: "A", node: "gw1"), into: "\(folder)/a-gw1")
        try b.issue(NodeIdentity(cluster: "B", node: "gw1"), into: "\(folder)/b-gw1")
        // A gateway of A as a stranger made it, and one that A's authority made for cluster B.
        try stranger.issue(NodeIdentity(cluster: "A", node: "gw1"), into: "\(folder)/forged")
        try a.issue(NodeIdentity(cluster: "B", node: "gw9"), into: "\(folder)/a-for-b")
        return (a, b, stranger)
    }

    func certificate(_ name: String) throws -> Certificate {
        try Certificate(pemEncoded: String(contentsOfFile: "\(folder)/\(name)/node.pem", encoding: .utf8))
    }

    @Test func eachRefusalHasItsReason() async throws {
        defer { try? FileManager.default.removeItem(atPath: folder) }
        _ = try authorities()
        // B's gateway trusts A's authority for its peers.
        let trust = try GatewayTrust(cluster: "B", authorityFiles: ["\(folder)/a-ca/authority.pem"])
        #expect(await trust.verify(chain: [try certificate("a-gw1")]) == .success("A"))
        guard case .failure(.untrusted) = await trust.verify(chain: [try certificate("forged")]) else {
            Issue.record("a certificate of another authority")
            return
        }
        let later = Date().addingTimeInterval(400 * 86_400)
        guard case .failure(.expired) = await trust.verify(chain: [try certificate("a-gw1")], now: later) else {
            Issue.record("an expired certificate")
            return
        }
        let earlier = Date().addingTimeInterval(-86_400)
        guard case .failure(.notYetValid) = await trust.verify(chain: [try certificate("a-gw1")], now: earlier) else {
            Issue.record("a certificate not valid yet")
            return
        }
        #expect(await trust.verify(chain: [try certificate("a-for-b")]) == .failure(.namesOwnCluster("B")))
        #expect(await trust.verify(chain: []) == .failure(.noCertificate))
        #expect(trust.check(claimed: "C", proven: "A") == .claimsAnotherCluster(certificate: "A", claimed: "C"))
        #expect(trust.check(claimed: "A", proven: "A") == nil)
        #expect(GatewayRefusal.expired(notValidAfter: later).description.contains("expired"))
    }

    /// Gateways of A and B, each given the other's authority, prove their clusters to each other over TLS 1.3; a
    /// gateway with a stranger's certificate is refused by B, whose log names why.
    @Test func gatewaysProveTheirClustersOverTLS() async throws {
        defer { try? FileManager.default.removeItem(atPath: folder) }
        _ = try authorities()
        let a = try GatewaySecurity(
            cluster: "A", certificate: "\(folder)/a-gw1/node.pem", key: "\(folder)/a-gw1/node-key.pem",
            peerAuthorities: ["\(folder)/b-ca/authority.pem"])
        let b = try GatewaySecurity(
            cluster: "B", certificate: "\(folder)/b-gw1/node.pem", key: "\(folder)/b-gw1/node-key.pem",
            peerAuthorities: ["\(folder)/a-ca/authority.pem"])
        let forged = try GatewaySecurity(
            cluster: "A", certificate: "\(folder)/forged/node.pem", key: "\(folder)/forged/node-key.pem",
            peerAuthorities: ["\(folder)/b-ca/authority.pem"])

        let (bSaw, aSaw) = try await Self.handshake(server: b, client: a)
        #expect(bSaw == .success("A"))
        #expect(aSaw == .success("B"))
        let (refused, _) = try await Self.handshake(server: b, client: forged)
        guard case .failure(.untrusted) = refused else {
            Issue.record("B accepted a stranger's certificate: \(String(describing: refused))")
            return
        }
    }

    /// One TLS handshake over loopback: what the server and the client decided of each other (nil: never asked).
    static func handshake(server: GatewaySecurity, client: GatewaySecurity) async throws
        -> (server: Result<String, GatewayRefusal>?, client: Result<String, GatewayRefusal>?)
    {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let result = try await handshake(server: server, client: client, on: group)
            try await group.shutdownGracefully()
            return result
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    static func handshake(server: GatewaySecurity, client: GatewaySecurity, on group: MultiThreadedEventLoopGroup)
        async throws -> (server: Result<String, GatewayRefusal>?, client: Result<String, GatewayRefusal>?)
    {
        let serverSaw = Mutex<Result<String, GatewayRefusal>?>(nil)
        let clientSaw = Mutex<Result<String, GatewayRefusal>?>(nil)
        let listener = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        server.tlsHandler(accepted: true) { result in
                            serverSaw.withLock { $0 = result }
                        })
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        client.tlsHandler(accepted: false) { result in
                            clientSaw.withLock { $0 = result }
                        })
                }
            }
            .connect(host: "127.0.0.1", port: listener.localAddress!.port!).get()
        // The handshake ends (or fails) within moments; both sides decide during it.
        let deadline = ContinuousClock.now + .seconds(10)
        while serverSaw.withLock({ $0 }) == nil && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        try await Task.sleep(for: .milliseconds(100))
        try? await channel.close()
        try? await listener.close()
        return (serverSaw.withLock { $0 }, clientSaw.withLock { $0 })
    }
}
