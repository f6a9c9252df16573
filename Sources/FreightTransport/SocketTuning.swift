import FreightCore
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// Socket settings of Freight's links. On loopback and inside a rack Reno with large buffers moves 2-4 times more
/// than the kernel's default BBR; on WAN links BBR is usually right, so the algorithm is a setting.
public struct SocketTuning: Sendable, Hashable {
    /// TCP congestion control by name (`reno`, `cubic`, `bbr`), or nil for the system's default.
    public var congestionControl: String?
    public var sendBufferBytes: Int
    public var receiveBufferBytes: Int
    public var writeLowWaterMark: Int
    public var writeHighWaterMark: Int
    /// A TCP connection whose sent bytes go unacknowledged this long is closed (TCP_USER_TIMEOUT): a link that
    /// went dark (a cable, a route, a peer's machine) is found broken and its messages held for resume, instead of
    /// hanging until the kernel's retries give up after many minutes. Nil: the kernel's default.
    public var userTimeoutMillis: Int?

    public init(
        congestionControl: String? = "reno",
        sendBufferBytes: Int = 4 * 1024 * 1024,
        receiveBufferBytes: Int = 4 * 1024 * 1024,
        writeLowWaterMark: Int = 2 * 1024 * 1024,
        writeHighWaterMark: Int = 4 * 1024 * 1024,
        userTimeoutMillis: Int? = Limits.linkTimeoutSeconds * 1000
    ) {
        self.userTimeoutMillis = userTimeoutMillis
        self.congestionControl = congestionControl
        self.sendBufferBytes = sendBufferBytes
        self.receiveBufferBytes = receiveBufferBytes
        self.writeLowWaterMark = writeLowWaterMark
        self.writeHighWaterMark = writeHighWaterMark
    }

    public static let `default` = SocketTuning()

    /// Reads of up to 1 MiB: a relay forwards what it read while the bytes are still in the core's L2 cache (1 MiB per core here).
    /// (Measured with `freight bench`, 1 GiB messages: 1 MiB reads matched or beat 4 MiB reads on both paths.)
    public static let receiveAllocator = AdaptiveRecvByteBufferAllocator(
        minimum: 64 * 1024, initial: 1024 * 1024, maximum: 1024 * 1024)

    /// Reads of a link still in its handshake (docs/hardening.md): a stranger gets no large buffer before it has said
    /// who it is.
    public static let handshakeAllocator = AdaptiveRecvByteBufferAllocator(
        minimum: handshakeReadBytes, initial: handshakeReadBytes, maximum: handshakeReadBytes)
    public static let handshakeReadBytes = 2048

    /// Options for a TCP channel (client or accepted child), applied before connect. An accepted link keeps the
    /// read allocator ``Transport/configure(_:capabilities:accepted:make:)`` gave it (small until it is established).
    public func apply(to channel: Channel, isTCP: Bool, accepted: Bool = false) -> EventLoopFuture<Void> {
        let allocator =
            accepted
            ? channel.eventLoop.makeSucceededVoidFuture()
            : channel.setOption(ChannelOptions.recvAllocator, value: Self.receiveAllocator)
        var future =
            allocator
            .flatMap {
                channel.setOption(
                    ChannelOptions.writeBufferWaterMark,
                    value: .init(low: writeLowWaterMark, high: writeHighWaterMark)
                )
            }
        guard isTCP else { return future }
        future = future.flatMap { channel.setOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1) }
            .flatMap { channel.setOption(ChannelOptions.socketOption(.so_sndbuf), value: .init(sendBufferBytes)) }
            .flatMap { channel.setOption(ChannelOptions.socketOption(.so_rcvbuf), value: .init(receiveBufferBytes)) }
        if let congestionControl {
            future = future.flatMap { setCongestionControl(congestionControl, on: channel) }
        }
        if let userTimeoutMillis {
            future = future.flatMap {
                channel.setOption(
                    ChannelOptions.tcpOption(NIOBSDSocket.Option(rawValue: Self.tcpUserTimeout)),
                    value: .init(userTimeoutMillis))
            }
        }
        return future
    }

    /// TCP_USER_TIMEOUT (linux/tcp.h).
    static let tcpUserTimeout: Int32 = 18

    private func setCongestionControl(_ name: String, on channel: Channel) -> EventLoopFuture<Void> {
        guard let provider = channel as? SocketOptionProvider else {
            return channel.eventLoop.makeSucceededVoidFuture()
        }
        var bytes = Array(name.utf8) + [0]
        while bytes.count < 16 { bytes.append(0) }
        let value = (
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
            bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]
        )
        // A kernel without the algorithm refuses it; the link then runs with the system's default.
        return provider.unsafeSetSocketOption(
            level: .tcp, name: NIOBSDSocket.Option(rawValue: TCP_CONGESTION), value: value
        ).recover { _ in }
    }
}
