import FreightCore
import NIOCore
import NIOPosix

/// Where a kind of link accepts: closing it stops new links; those already made go on.
public protocol LinkListener: AnyObject, Sendable {
    /// The address it listens on, as peers dial it (a TCP port resolved when port 0 was asked for).
    var address: NodeAddress { get }
    func close() -> EventLoopFuture<Void>
}

/// One kind of link: how it dials and listens, and what its links can do beyond carrying frames.
///
/// A link is a NIO `Channel` that carries wire-v1 bytes; ``Transport`` puts the frame reader and a
/// ``FrameConnection`` on it, whatever its kind. TCP and the Unix socket are ``SocketLinks``; ``InProcessLinks``
/// joins two ends in one process with no socket. Mutual TLS between nodes is no kind of its own: ``Transport`` puts
/// it on the TCP links of a node with certificates (docs/hardening.md).
public protocol LinkKind: Sendable {
    /// What its links can do (a node may decline some: ``Transport/capabilities``).
    var capabilities: LinkCapabilities { get }
    /// Dials `address`, from the local address or name `source` when given; `initialize` sets the new link up before
    /// it carries a byte.
    func connect(
        to address: NodeAddress, from source: String?, timeout: TimeAmount, eventLoop: any EventLoop,
        initialize: @escaping @Sendable (Channel) -> EventLoopFuture<Void>
    ) -> EventLoopFuture<Channel>
    /// Listens on `address`; every link accepted there is set up by `initialize` on `eventLoop`.
    func listen(
        on address: NodeAddress, eventLoop: any EventLoop,
        initialize: @escaping @Sendable (Channel) -> EventLoopFuture<Void>
    ) -> EventLoopFuture<any LinkListener>
}

/// TCP and Unix-socket links, through NIO's bootstraps.
public struct SocketLinks: LinkKind {
    public let tuning: SocketTuning
    public var capabilities: LinkCapabilities { .socket }
    /// Pending connections a listener queues before it accepts them.
    public static let listenBacklog: Int32 = 256

    public init(tuning: SocketTuning) { self.tuning = tuning }

    static func isTCP(_ address: NodeAddress) -> Bool {
        if case .tcp = address { return true }
        return false
    }

    public func connect(
        to address: NodeAddress, from source: String?, timeout: TimeAmount, eventLoop: any EventLoop,
        initialize: @escaping @Sendable (Channel) -> EventLoopFuture<Void>
    ) -> EventLoopFuture<Channel> {
        let isTCP = Self.isTCP(address)
        let tuning = self.tuning
        var bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                tuning.apply(to: channel, isTCP: isTCP).flatMap { initialize(channel) }
            }
        if let source {
            do {
                bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: source, port: 0))
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
        }
        switch address {
        case .unix(let path): return bootstrap.connect(unixDomainSocketPath: path)
        case .tcp(let host, let port): return bootstrap.connect(host: host, port: port)
        case .inProcess:
            return eventLoop.makeFailedFuture(
                FreightError(.invalidArgument, "\(address) is not a socket address"))
        }
    }

    public func listen(
        on address: NodeAddress, eventLoop: any EventLoop,
        initialize: @escaping @Sendable (Channel) -> EventLoopFuture<Void>
    ) -> EventLoopFuture<any LinkListener> {
        let isTCP = Self.isTCP(address)
        let tuning = self.tuning
        let bootstrap = ServerBootstrap(group: eventLoop, childGroup: eventLoop)
            .serverChannelOption(ChannelOptions.backlog, value: Self.listenBacklog)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                // The link is admitted (or refused) and set up first: a refused link costs no socket options.
                initialize(channel).flatMap { tuning.apply(to: channel, isTCP: isTCP, accepted: true) }
            }
        let bound: EventLoopFuture<Channel>
        switch address {
        case .unix(let path):
            bound = bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true)
        case .tcp(let host, let port):
            bound = bootstrap.bind(host: host, port: port)
        case .inProcess:
            return eventLoop.makeFailedFuture(
                FreightError(.invalidArgument, "\(address) is not a socket address"))
        }
        return bound.map { channel in
            var resolved = address
            if case .tcp(let host, _) = address, let port = channel.localAddress?.port {
                resolved = .tcp(host: host, port: port)
            }
            return SocketListener(channel: channel, address: resolved)
        }
    }
}

/// A listening socket.
final class SocketListener: LinkListener {
    let channel: Channel
    let address: NodeAddress

    init(channel: Channel, address: NodeAddress) {
        self.channel = channel
        self.address = address
    }

    func close() -> EventLoopFuture<Void> { channel.close() }
}
