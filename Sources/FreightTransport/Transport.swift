import FreightCore
import FreightSecurity
import FreightWire
import Logging
import NIOCore
import NIOPosix
import NIOSSL

/// Opens and accepts wire-protocol links on one event loop, of whichever kind an address names: TCP and Unix sockets
/// (``SocketLinks``) or in-process links (``InProcessLinks``). Every link gets the same frame reader and
/// ``FrameConnection``, and the capabilities its kind has, less what the node declines.
public struct Transport: Sendable {
    public let eventLoop: any EventLoop
    public let tuning: SocketTuning
    public let limits: FrameLimits
    public let logger: Logger
    /// What the node lets its links do; each link may do less (``LinkKind/capabilities``).
    public let capabilities: LinkCapabilities
    public let sockets: SocketLinks
    public let inProcess: InProcessLinks
    /// The node's own in-process name, given as the source of the in-process links it dials.
    public var inProcessName: String?
    /// Counts and caps the links this transport accepts while they are in their handshake (docs/hardening.md); nil
    /// admits every link and gives it no handshake deadline.
    public var admission: Admission?
    /// Mutual TLS on every TCP link to or from a node (docs/hardening.md, "Nodes prove who they are"); nil: links
    /// between nodes are not authenticated (a trusted network).
    public var security: LinkSecurity?

    public init(
        eventLoop: any EventLoop, tuning: SocketTuning = .default, limits: FrameLimits = FrameLimits(),
        capabilities: LinkCapabilities = .socket, inProcessNetwork: InProcessNetwork = .shared, logger: Logger
    ) {
        self.capabilities = capabilities
        self.eventLoop = eventLoop
        self.tuning = tuning
        self.limits = limits
        self.logger = logger
        self.sockets = SocketLinks(tuning: tuning)
        self.inProcess = InProcessLinks(network: inProcessNetwork)
    }

    /// The kind of link that reaches `address`.
    public func kind(of address: NodeAddress) -> any LinkKind {
        if case .inProcess = address { return inProcess }
        return sockets
    }

    /// Installs the reader and handler on a new link; `make` creates the connection object and sets its delegate.
    /// `accepted`: the link was accepted, not dialed. It is admitted (``admission``) and reads into small buffers
    /// until the node calls ``FrameConnection/established()``.
    @preconcurrency
    public func configure(
        _ channel: Channel,
        capabilities: LinkCapabilities,
        accepted: Bool = false,
        overTCP: Bool = false,
        make: @escaping @Sendable (Channel) -> FrameConnection
    ) -> EventLoopFuture<Void> {
        let security = overTCP ? self.security : nil
        // An encrypted link carries frames through TLS: no sendfile, no reads into pools.
        let capabilities = security?.encrypts == true ? [] : capabilities
        let target = limits.streamsChunks && capabilities.contains(.readsIntoPools) ? ReadTarget() : nil
        let dataPath: @Sendable (Channel) -> Void = { channel in
            let allocator: any RecvByteBufferAllocator =
                target.map { DirectReadAllocator(target: $0) } ?? SocketTuning.receiveAllocator
            channel.setOption(ChannelOptions.recvAllocator, value: allocator).whenComplete { _ in }
        }
        let gate: HandshakeGate?
        if accepted, let admission {
            // A refused link is closed before anything is set up for it.
            gate = HandshakeGate.admit(channel, admission: admission, onEstablished: dataPath)
            if gate == nil { return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel) }
        } else {
            gate = nil
        }
        let prepared: EventLoopFuture<Void>
        if let target {
            // A node's connections may read chunk bodies straight into apps' receive pools (DirectReads.swift).
            prepared = channel.setOption(
                ChannelOptions.recvAllocator, value: DirectReadAllocator(target: target, handshake: accepted)
            )
            .flatMap { channel.setOption(ChannelOptions.maxMessagesPerRead, value: 1) }
        } else if accepted {
            prepared = channel.setOption(ChannelOptions.recvAllocator, value: SocketTuning.handshakeAllocator)
        } else {
            prepared = channel.eventLoop.makeSucceededVoidFuture()
        }
        let configured = prepared.flatMapThrowing { [limits, logger] in
            let connection = make(channel)
            connection.readTarget = target
            connection.capabilities = capabilities
            let sync = channel.pipeline.syncOperations
            if let gate {
                connection.onEstablished = { gate.established() }
            } else if accepted {
                connection.onEstablished = { [weak channel] in if let channel { dataPath(channel) } }
            }
            if let security {
                try secure(channel, connection, security: security, accepted: accepted)
            }
            let handler = FrameConnectionHandler(connection: connection, logger: logger)
            try sync.addHandler(FrameReader(limits: limits, deliver: handler.handle))
            try sync.addHandler(handler)
        }
        configured.whenFailure { _ in gate?.release() }
        return configured
    }

    /// Puts TLS on a node link: at once on a dialed one; on an accepted one when its first byte starts a TLS
    /// handshake (apps over TCP speak plain wire v1 and prove themselves with tokens).
    private func secure(
        _ channel: Channel, _ connection: FrameConnection, security: LinkSecurity, accepted: Bool
    ) throws {
        let logger = self.logger
        let admission = self.admission
        let handlers: () throws -> [any ChannelHandler] = {
            let tls = try security.tlsHandler(accepted: accepted)
            let secured = channel.eventLoop.makePromise(of: Void.self)
            // A link closed before its handshake finished (or never connected) fails it.
            channel.closeFuture.whenComplete { _ in secured.fail(ChannelError.ioOnClosedChannel) }
            if !accepted { connection.secured = secured.futureResult }
            let checker = SecureLinkHandler(
                security: security,
                verified: { connection.peerIdentity = $0 },
                finished: { result in
                    switch result {
                    case .success: secured.succeed()
                    case .failure(let error):
                        let line =
                            "closing TLS link \(accepted ? "from" : "to") \(channel.remoteAddress.map { "\($0)" } ?? "?"): \(error)"
                        if (error as? LinkSecurityError)?.isRefusal == false {
                            logger.debug("\(line)")
                        } else if let admission, accepted {
                            admission.note(line)
                        } else {
                            logger.warning("\(line)")
                        }
                        secured.fail(error)
                    }
                })
            return [tls, checker]
        }
        let sync = channel.pipeline.syncOperations
        if accepted {
            try sync.addHandler(TLSSniffer(tls: handlers))
        } else {
            try sync.addHandlers(try handlers())
        }
    }

    /// Connects to `address`, from the local IP address `source` when given (a rail's NIC); the connection has its
    /// delegate set by `make` before any frame is read.
    public func connect(
        to address: NodeAddress,
        from source: String? = nil,
        timeout: TimeAmount = .seconds(Limits.dialTimeoutSeconds),
        make: @escaping @Sendable (Channel) -> FrameConnection
    ) -> EventLoopFuture<FrameConnection> {
        let kind = kind(of: address)
        let capabilities = kind.capabilities.intersection(self.capabilities)
        let from: String?
        if case .inProcess = address { from = inProcessName } else { from = source }
        return kind.connect(to: address, from: from, timeout: timeout, eventLoop: eventLoop) { [self] channel in
            configure(channel, capabilities: capabilities, overTCP: SocketLinks.isTCP(address), make: make)
        }.flatMap { channel in
            channel.pipeline.handler(type: FrameConnectionHandler.self).map { $0.connection }
        }.flatMap { connection in
            // A TLS link carries frames once its handshake proved the peer.
            connection.secured.map { $0.map { connection } }
                ?? connection.channel.eventLoop.makeSucceededFuture(connection)
        }
    }

    /// Listens on `address`; each accepted connection gets a delegate from `make`.
    public func listen(
        on address: NodeAddress,
        make: @escaping @Sendable (Channel) -> FrameConnection
    ) -> EventLoopFuture<any LinkListener> {
        let kind = kind(of: address)
        let capabilities = kind.capabilities.intersection(self.capabilities)
        return kind.listen(on: address, eventLoop: eventLoop) { [self] channel in
            configure(
                channel, capabilities: capabilities, accepted: true, overTCP: SocketLinks.isTCP(address), make: make)
        }
    }
}
