import FreightCore
import FreightWire
import Logging
import NIOCore
import NIOPosix

/// Opens and accepts wire-protocol connections on one event loop.
public struct Transport: Sendable {
    public let eventLoop: any EventLoop
    public let tuning: SocketTuning
    public let limits: FrameLimits
    public let logger: Logger
    /// What the links it makes may do: a socket's capabilities, less what the node declines.
    public let capabilities: LinkCapabilities

    public init(
        eventLoop: any EventLoop, tuning: SocketTuning = .default, limits: FrameLimits = FrameLimits(),
        capabilities: LinkCapabilities = .socket, logger: Logger
    ) {
        self.capabilities = capabilities.intersection(.socket)
        self.eventLoop = eventLoop
        self.tuning = tuning
        self.limits = limits
        self.logger = logger
    }

    /// Installs the decoder and handler on a new channel; `make` creates the connection object and sets its delegate.
    @preconcurrency
    public func configure(
        _ channel: Channel,
        isTCP: Bool,
        make: @escaping @Sendable (Channel) -> FrameConnection
    ) -> EventLoopFuture<Void> {
        let capabilities = self.capabilities
        let target = limits.streamsChunks && capabilities.contains(.readsIntoPools) ? ReadTarget() : nil
        return tuning.apply(to: channel, isTCP: isTCP).flatMap {
            guard let target else { return channel.eventLoop.makeSucceededVoidFuture() }
            // A node's connections may read chunk bodies straight into apps' receive pools (DirectReads.swift).
            return channel.setOption(ChannelOptions.recvAllocator, value: DirectReadAllocator(target: target))
                .flatMap { channel.setOption(ChannelOptions.maxMessagesPerRead, value: 1) }
        }.flatMapThrowing {
            let connection = make(channel)
            connection.readTarget = target
            connection.capabilities = capabilities
            let sync = channel.pipeline.syncOperations
            let handler = FrameConnectionHandler(connection: connection, logger: logger)
            try sync.addHandler(FrameReader(limits: limits, deliver: handler.handle))
            try sync.addHandler(handler)
        }
    }

    /// Connects to `address`, from the local IP address `source` when given (a rail's NIC); the connection has its
    /// delegate set by `make` before any frame is read.
    public func connect(
        to address: NodeAddress,
        from source: String? = nil,
        timeout: TimeAmount = .seconds(5),
        make: @escaping @Sendable (Channel) -> FrameConnection
    ) -> EventLoopFuture<FrameConnection> {
        let isTCP: Bool
        if case .tcp = address { isTCP = true } else { isTCP = false }
        var bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelInitializer { [self] channel in
                configure(channel, isTCP: isTCP, make: make)
            }
        if let source {
            do {
                bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: source, port: 0))
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
        }
        let connected: EventLoopFuture<Channel>
        switch address {
        case .unix(let path): connected = bootstrap.connect(unixDomainSocketPath: path)
        case .tcp(let host, let port): connected = bootstrap.connect(host: host, port: port)
        }
        return connected.flatMap { channel in
            channel.pipeline.handler(type: FrameConnectionHandler.self).map { $0.connection }
        }
    }

    /// Listens on `address`; each accepted connection gets a delegate from `make`.
    public func listen(
        on address: NodeAddress,
        make: @escaping @Sendable (Channel) -> FrameConnection
    ) -> EventLoopFuture<Channel> {
        let isTCP: Bool
        if case .tcp = address { isTCP = true } else { isTCP = false }
        let bootstrap = ServerBootstrap(group: eventLoop, childGroup: eventLoop)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                configure(channel, isTCP: isTCP, make: make)
            }
        switch address {
        case .unix(let path):
            return bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true)
        case .tcp(let host, let port):
            return bootstrap.bind(host: host, port: port)
        }
    }
}
