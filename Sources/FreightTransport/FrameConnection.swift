import FreightCore
import FreightWire
import Logging
import NIOCore

/// Receives what a ``FrameConnection`` reads, on the connection's event loop.
public protocol FrameConnectionDelegate: AnyObject, Sendable {
    func connection(_ connection: FrameConnection, didReceive frame: Frame)
    /// The connection is gone; `error` says why when it did not close cleanly.
    func connectionDidClose(_ connection: FrameConnection, error: (any Error)?)
}

/// One connection that speaks wire protocol v1. Loop-confined: every method is called on `channel.eventLoop`.
public final class FrameConnection: @unchecked Sendable, Hashable, CustomStringConvertible {
    public let channel: Channel
    public let id: UInt64
    /// Body bytes written but not yet handed to the kernel; used to pick the least-loaded stripe.
    public private(set) var pendingBytes = 0
    public weak var delegate: (any FrameConnectionDelegate)?
    /// What the peer said in its Hello, once it did.
    public var hello: Freight_Wire_V1_Hello?
    public var closeError: (any Error)?
    /// True when this side opened the connection.
    public var isDialed = false
    public private(set) var isClosed = false
    private let allocator: ByteBufferAllocator

    public init(channel: Channel, id: UInt64) {
        self.channel = channel
        self.id = id
        self.allocator = channel.allocator
    }

    public var description: String { "connection \(id) (\(channel.remoteAddress.map { "\($0)" } ?? "local"))" }

    public static func == (lhs: FrameConnection, rhs: FrameConnection) -> Bool { lhs === rhs }
    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }

    public func sendPreface() {
        channel.writeAndFlush(FrameEncoder.prefaceBuffer(allocator: allocator), promise: nil)
    }

    /// Writes a control frame. An encoding failure (a frame over its limit) is returned, nothing is written.
    @discardableResult
    public func send(_ frame: Frame, flush: Bool = true) -> FreightError? {
        channel.eventLoop.assertInEventLoop()
        if case .data(let chunk) = frame {
            sendData(chunk, promise: nil)
            return nil
        }
        var buffer = allocator.buffer(capacity: 128)
        do {
            try FrameEncoder.control(frame, into: &buffer)
        } catch {
            return error
        }
        if flush {
            channel.writeAndFlush(buffer, promise: nil)
        } else {
            channel.write(buffer, promise: nil)
        }
        return nil
    }

    /// Writes a chunk without copying its bytes; `promise` completes when the kernel took them.
    public func sendData(_ chunk: DataChunk, promise: EventLoopPromise<Void>?) {
        channel.eventLoop.assertInEventLoop()
        var header = allocator.buffer(capacity: WireV1.frameHeaderBytes + WireV1.dataPrefixBytes)
        FrameEncoder.dataHeader(chunk, into: &header)
        let count = chunk.count
        pendingBytes += count
        channel.write(header, promise: nil)
        for piece in chunk.pieces.dropLast() { channel.write(piece, promise: nil) }
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenComplete { [self] result in
            pendingBytes -= count
            switch result {
            case .success: promise?.succeed()
            case .failure(let error): promise?.fail(error)
            }
        }
        if let last = chunk.pieces.last {
            channel.writeAndFlush(last, promise: written)
        } else {
            channel.flush()
            written.succeed()
        }
    }

    public func close() {
        channel.close(promise: nil)
    }

    /// Called by the handler.
    func markClosed() -> Bool {
        if isClosed { return false }
        isClosed = true
        return true
    }
}

/// Carries frames from the decoder to the connection's delegate; closes the connection on a decode error with a
/// logged reason. Nothing it reads can crash the process: errors end this one connection.
public final class FrameConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    public typealias InboundIn = Frame
    public let connection: FrameConnection
    private let logger: Logger

    public init(connection: FrameConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
    }

    public func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !connection.isClosed else { return }
        connection.delegate?.connection(connection, didReceive: unwrapInboundIn(data))
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if connection.closeError == nil { connection.closeError = error }
        if let parse = error as? FrameParser.ParseError {
            logger.warning("closing \(connection): \(parse)")
        } else {
            logger.debug("closing \(connection): \(error)")
        }
        context.close(promise: nil)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        if connection.markClosed() {
            connection.delegate?.connectionDidClose(connection, error: connection.closeError)
        }
        context.fireChannelInactive()
    }
}
