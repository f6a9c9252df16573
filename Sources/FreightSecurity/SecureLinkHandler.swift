import FreightCore
import NIOCore
import NIOSSL
import NIOTLS

/// Why a link's TLS handshake did not prove a node of the cluster.
public struct LinkSecurityError: Error, CustomStringConvertible {
    public let description: String
    /// The peer failed to prove itself (a certificate, a choice, a handshake refused), as opposed to a link that
    /// closed or a node that shut down during the handshake.
    public let isRefusal: Bool
    public init(_ description: String, isRefusal: Bool = true) {
        self.description = description
        self.isRefusal = isRefusal
    }
}

/// Sits after the TLS handler of a node link until the handshake is over: checks that the peer's certificate names
/// a node of this cluster and that the peer made the same choice of encryption, then either leaves TLS
/// (`authenticated`: both sides send `close_notify`, and wire v1 goes on in the clear) or leaves it in place
/// (`encrypted`), and removes itself. `verified` is told the peer's identity as soon as it is checked, before any
/// frame can arrive; `finished` once the link may carry frames (or why it may not: the link is then closed).
public final class SecureLinkHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    private let security: LinkSecurity
    private let verified: (NodeIdentity) -> Void
    private let finished: (Result<NodeIdentity, any Error>) -> Void
    private var done = false

    public init(
        security: LinkSecurity, verified: @escaping (NodeIdentity) -> Void,
        finished: @escaping (Result<NodeIdentity, any Error>) -> Void
    ) {
        self.security = security
        self.verified = verified
        self.finished = finished
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted(let negotiated) = tls, !done {
            return handshakeCompleted(context: context, negotiated: negotiated)
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func handshakeCompleted(context: ChannelHandlerContext, negotiated: String?) {
        let identity: NodeIdentity
        let tls: NIOSSLHandler
        do {
            tls = try context.pipeline.syncOperations.handler(type: NIOSSLHandler.self)
            guard let certificate = tls.peerCertificate,
                let named = NodeIdentity(derEncoded: try certificate.toDERBytes())
            else { throw LinkSecurityError("the peer's certificate names no Freight node") }
            guard named.cluster == security.cluster else {
                throw LinkSecurityError("the peer's certificate is for \(named), not cluster \(security.cluster)")
            }
            guard negotiated == security.protocolName else {
                throw LinkSecurityError(
                    "the peer chose otherwise: this node's links are \(security.encrypts ? "encrypted (--encrypt-links)" : "authenticated, not encrypted (no --encrypt-links)"); a cluster's nodes must agree"
                )
            }
            identity = named
        } catch {
            return fail(context: context, error)
        }
        verified(identity)
        guard !security.encrypts else { return succeed(context: context, identity) }
        // Authenticated only: leave TLS. The peer does the same at its own handshake's end; whatever it sends after
        // its close_notify is passed on in the clear.
        let left = context.eventLoop.makePromise(of: Void.self)
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        left.futureResult.whenComplete { result in
            let (handler, context) = loopBound.value
            switch result {
            case .success: handler.succeed(context: context, identity)
            case .failure(let error): handler.fail(context: context, error)
            }
        }
        tls.stopTLS(promise: left)
    }

    private func succeed(context: ChannelHandlerContext, _ identity: NodeIdentity) {
        guard !done else { return }
        done = true
        finished(.success(identity))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    private func fail(context: ChannelHandlerContext, _ error: any Error) {
        guard !done else { return }
        done = true
        finished(.failure(Self.describe(error)))
        context.close(promise: nil)
    }

    /// A TLS failure in a few words: BoringSSL's reason codes (`CERTIFICATE_VERIFY_FAILED`: not issued by this
    /// cluster's authority), without the library's source locations.
    static func describe(_ error: any Error) -> LinkSecurityError {
        if let known = error as? LinkSecurityError { return known }
        if case NIOSSLError.handshakeFailed(.sslError(let errors)) = error {
            let codes = errors.map { "\($0)" }.compactMap { text -> String? in
                guard let colon = text.range(of: ":OPENSSL_internal:") else { return nil }
                return String(text[colon.upperBound...].prefix { $0 != " " && $0 != "," && $0 != "]" })
            }
            if !codes.isEmpty { return LinkSecurityError("TLS handshake failed: \(codes.joined(separator: ", "))") }
        }
        if error is NIOSSLError { return LinkSecurityError("TLS handshake failed: \(error)") }
        return LinkSecurityError("closed during the TLS handshake: \(error)", isRefusal: false)
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done { return fail(context: context, error) }
        context.fireErrorCaught(error)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        if !done {
            done = true
            finished(.failure(LinkSecurityError("closed during the TLS handshake", isRefusal: false)))
        }
        context.fireChannelInactive()
    }
}

/// The first handler of a link accepted on a node with certificates: its first byte tells a TLS handshake (a
/// record of type 22) from plain wire v1 (an app, which proves itself with a token; or a node that will be refused
/// for coming without TLS). On TLS it puts the handlers `tls` makes after itself; either way it then leaves.
public final class TLSSniffer: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    /// The content type of a TLS handshake record.
    public static let handshakeRecord: UInt8 = 22
    private let tls: () throws -> [any ChannelHandler]

    public init(tls: @escaping () throws -> [any ChannelHandler]) { self.tls = tls }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return }
        if first == Self.handshakeRecord {
            do {
                try context.pipeline.syncOperations.addHandlers(try tls(), position: .after(self))
            } catch {
                context.close(promise: nil)
                return
            }
        }
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
