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
    /// Unsent bytes the kernel keeps of the connection at most (TCP_NOTSENT_LOWAT); the rest waits in the channel,
    /// where a sender that stripes can still send it on another connection. Nil: the kernel's default (no limit).
    public var notSentLowWaterBytes: Int?
    /// Send buffer of a Unix-socket link (an app and its node), 0 for the kernel's default; by default two batches
    /// of small messages (`Limits.smallBatchBytesMax`), four once the kernel doubles it (up to twice
    /// `net.core.wmem_max`). The kernel's default (`net.core.wmem_default`, 208 KiB) holds less than one batch, so a
    /// writer stopped inside each batch and the two parties woke each other for each piece of it: app to app at
    /// 64 KiB through two nodes made two to three times the context switches and moved a fifth less
    /// (docs/small-messages-and-files.md §3f).
    public var unixSendBufferBytes: Int

    public init(
        congestionControl: String? = "reno",
        sendBufferBytes: Int = 4 * 1024 * 1024,
        receiveBufferBytes: Int = 4 * 1024 * 1024,
        writeLowWaterMark: Int = 2 * 1024 * 1024,
        writeHighWaterMark: Int = 4 * 1024 * 1024,
        userTimeoutMillis: Int? = Limits.linkTimeoutSeconds * 1000,
        notSentLowWaterBytes: Int? = nil,
        unixSendBufferBytes: Int = 2 * Limits.smallBatchBytesMax
    ) {
        self.notSentLowWaterBytes = notSentLowWaterBytes
        self.unixSendBufferBytes = unixSendBufferBytes
        self.userTimeoutMillis = userTimeoutMillis
        self.congestionControl = congestionControl
        self.sendBufferBytes = sendBufferBytes
        self.receiveBufferBytes = receiveBufferBytes
        self.writeLowWaterMark = writeLowWaterMark
        self.writeHighWaterMark = writeHighWaterMark
    }

    public static let `default` = SocketTuning()

    /// Gateway links (docs/wan.md): BBR until the link's round trip says it is of the LAN class, buffers the
    /// kernel sizes to the path itself (autotuning, up to `tcp_wmem`/`tcp_rmem`), and a link that goes dark is found
    /// broken after the link timeout.
    public static let gateway = SocketTuning(
        congestionControl: "bbr", sendBufferBytes: 0, receiveBufferBytes: 0, writeLowWaterMark: 32 << 10,
        writeHighWaterMark: 64 << 10)

    /// Unsent bytes a stripe of a WAN-class gateway link leaves in the kernel (docs/wan.md): the rest waits in the
    /// channel, so that a stripe held up by a loss takes no further chunks while the others go on.
    public static let wanNotSentLowWaterBytes = 256 << 10

    /// Sets TCP_NOTSENT_LOWAT on a live TCP channel.
    @discardableResult
    public static func setNotSentLowWater(_ bytes: Int, on channel: Channel) -> EventLoopFuture<Void> {
        channel.setOption(
            ChannelOptions.tcpOption(NIOBSDSocket.Option(rawValue: tcpNotSentLowWater)), value: .init(bytes)
        ).recover { _ in }
    }

    /// Reads of up to 1 MiB: a relay forwards what it read while the bytes are still in the core's L2 cache (1 MiB per core here).
    /// (Measured with `freight bench`, 1 GiB messages: 1 MiB reads matched or beat 4 MiB reads on both paths.)
    public static let receiveAllocator = AdaptiveRecvByteBufferAllocator(
        minimum: 64 * 1024, initial: 1024 * 1024, maximum: 1024 * 1024)

    /// Reads of a link still in its handshake (docs/hardening.md): a stranger gets no large buffer before it has said
    /// who it is.
    public static let handshakeAllocator = AdaptiveRecvByteBufferAllocator(
        minimum: handshakeReadBytes, initial: handshakeReadBytes, maximum: handshakeReadBytes)
    public static let handshakeReadBytes = 2048

    /// Options for a TCP or Unix-socket channel (client or accepted child), applied before connect. An accepted link
    /// keeps the read allocator ``Transport/configure(_:capabilities:accepted:make:)`` gave it (small until it is
    /// established).
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
        guard isTCP else {
            guard unixSendBufferBytes > 0 else { return future }
            return future.flatMap {
                channel.setOption(ChannelOptions.socketOption(.so_sndbuf), value: .init(unixSendBufferBytes))
            }
        }
        future = future.flatMap { channel.setOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1) }
        // 0: the kernel sizes the buffer (setting one turns its autotuning off).
        if sendBufferBytes > 0 {
            future = future.flatMap {
                channel.setOption(ChannelOptions.socketOption(.so_sndbuf), value: .init(sendBufferBytes))
            }
        }
        if receiveBufferBytes > 0 {
            future = future.flatMap {
                channel.setOption(ChannelOptions.socketOption(.so_rcvbuf), value: .init(receiveBufferBytes))
            }
        }
        if let congestionControl {
            future = future.flatMap { Self.setCongestionControl(congestionControl, on: channel) }
        }
        if let notSentLowWaterBytes {
            future = future.flatMap {
                channel.setOption(
                    ChannelOptions.tcpOption(NIOBSDSocket.Option(rawValue: Self.tcpNotSentLowWater)),
                    value: .init(notSentLowWaterBytes))
            }
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
    /// TCP_NOTSENT_LOWAT (linux/tcp.h).
    static let tcpNotSentLowWater: Int32 = 25

    /// Sets the congestion control of a TCP channel, also on a live connection; a kernel without the algorithm
    /// leaves it as it was.
    @discardableResult
    public static func setCongestionControl(_ name: String, on channel: Channel) -> EventLoopFuture<Void> {
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
