import FreightCore
import FreightSecurity
import FreightWire
import Logging
import NIOCore

/// Receives what a ``FrameConnection`` reads, on the connection's event loop.
public protocol FrameConnectionDelegate: AnyObject, Sendable {
    func connection(_ connection: FrameConnection, didReceive frame: Frame)
    /// A DATA frame in pieces, when the connection streams chunks (``FrameLimits/streamsChunks``).
    func connection(_ connection: FrameConnection, didStream event: ParserEvent)
    /// The connection's write queue crossed a water mark (`channel.isWritable` says which way).
    func connectionWritabilityChanged(_ connection: FrameConnection)
    /// The connection is gone; `error` says why when it did not close cleanly.
    func connectionDidClose(_ connection: FrameConnection, error: (any Error)?)
}

extension FrameConnectionDelegate {
    public func connection(_ connection: FrameConnection, didStream event: ParserEvent) {}
    public func connectionWritabilityChanged(_ connection: FrameConnection) {}
}

/// One connection that speaks wire protocol v1. Loop-confined: every method is called on `channel.eventLoop`.
///
/// Every frame is written whole, in one go: no frame waits on a party that has not finished sending it (a node
/// relays a chunk onto a connection only once the chunk is complete).
public final class FrameConnection: @unchecked Sendable, Hashable, CustomStringConvertible {
    public let channel: Channel
    public let id: UInt64
    /// Body bytes written but not yet handed to the kernel; used to pick a stripe.
    public private(set) var pendingBytes = 0
    /// Body bytes the kernel has taken, ever; a rail's drain rate is measured from it.
    public private(set) var drainedBytes: UInt64 = 0
    /// Frames and pieces of chunks read from the peer, ever: whether it was heard from since a moment ago.
    public internal(set) var eventsReceived: UInt64 = 0
    public weak var delegate: (any FrameConnectionDelegate)?
    /// What the peer said in its Hello, once it did.
    public var hello: Freight_Wire_V1_Hello?
    /// The largest SMALL frame the other side takes (``SmallTerms``); larger batches are split.
    public var smallFrameBytesMax = Limits.smallFrameBytesMax
    public var closeError: (any Error)?
    /// True when this side opened the connection.
    public var isDialed = false
    public private(set) var isClosed = false
    /// Where the next read lands when it is the rest of a chunk bound for an app's receive pool (node connections).
    public internal(set) var readTarget: ReadTarget?
    /// What this link can do beyond carrying frames (set by ``Transport`` when it is made).
    public internal(set) var capabilities: LinkCapabilities = []
    /// The node its TLS handshake proved is at the other end (links of nodes with certificates), set before any
    /// frame arrives; nil on links without TLS.
    public internal(set) var peerIdentity: NodeIdentity?
    /// Completes when a dialed TLS link may carry frames (its handshake over, and TLS left when not encrypted).
    var secured: EventLoopFuture<Void>?
    /// Set by ``Transport`` on an accepted link: leaves the handshake (docs/hardening.md).
    var onEstablished: (() -> Void)?
    private let allocator: ByteBufferAllocator

    private var flushScheduled = false
    /// Flush frames once per event-loop turn instead of one by one. Nodes and apps both do: a frame written in a
    /// turn leaves at its end, and ``close()`` (as `FreightClient.close()`) flushes first, so an app's last frame
    /// (its DONE) leaves before the connection does.
    public var coalescesFlushes = true
    /// Body bytes written since the last flush past which the connection flushes at once, even when it coalesces. Set
    /// on TLS links: a flush hands everything written to the TLS handler, which encrypts it into one buffer, and a
    /// window's worth at once is a fresh allocation that faults in page by page (perf: a tenth of a gateway link's
    /// time). Nil: no limit.
    public var flushBytesMax: Int?
    private var unflushedBytes = 0
    /// Storage that bodies written out of line keep alive beyond their own bytes until the kernel takes them
    /// (``HeldPieces/keptAliveBytes(of:)``: a body sliced from a read keeps the whole read buffer), counted per
    /// body. At most `Limits.readBuffersKeptAliveBytesMax`: past it, bodies are copied into their frames, so that a
    /// reader that stalls holds what the budgets count (the bodies sent to it), not the read buffers they came in.
    public private(set) var keptAliveBytes = 0

    public init(channel: Channel, id: UInt64) {
        self.channel = channel
        self.id = id
        self.allocator = channel.allocator
    }

    public var description: String { "connection \(id) (\(channel.remoteAddress.map { "\($0)" } ?? "local"))" }

    public static func == (lhs: FrameConnection, rhs: FrameConnection) -> Bool { lhs === rhs }
    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }

    /// The node accepted this link's HELLO: it leaves the handshake count and its deadline, and reads as the data
    /// path does. Dialed links have nothing to do here.
    public func established() {
        channel.eventLoop.assertInEventLoop()
        guard let onEstablished else { return }
        self.onEstablished = nil
        onEstablished()
    }

    /// Flushes what was written now, not at the end of the event loop's turn: a sender that prepares many chunks
    /// in one turn lets the first ones go while it prepares the rest.
    public func flushNow() {
        channel.eventLoop.assertInEventLoop()
        unflushedBytes = 0
        channel.flush()
    }

    public func sendPreface() {
        channel.writeAndFlush(FrameEncoder.prefaceBuffer(allocator: allocator), promise: nil)
    }

    /// Writes a control frame. An encoding failure (a frame over its limit) is returned, nothing is written.
    @discardableResult
    public func send(_ frame: Frame) -> FreightError? {
        channel.eventLoop.assertInEventLoop()
        if case .data(let chunk) = frame {
            sendData(chunk, promise: nil)
            return nil
        }
        var buffer = allocator.buffer(capacity: 128)
        if case .small(let messages) = frame {
            // Larger bodies as buffers of their own in the same writev, not copied into the frame, while the read
            // buffers they keep alive until the kernel takes them stay within their limit.
            var outOfLine: [SmallFrames.OutOfLineBody]? = []
            do {
                try SmallFrames.encode(
                    messages, into: &buffer, payloadBytesMax: smallFrameBytesMax, outOfLine: &outOfLine,
                    keptAliveBytesMax: Limits.readBuffersKeptAliveBytesMax - keptAliveBytes)
            } catch {
                return error
            }
            let listed = outOfLine!
            let pieces = listed.isEmpty ? [buffer] : SmallFrames.pieces(of: buffer, listed)
            let kept = listed.reduce(0) { $0 + HeldPieces.keptAliveBytes(of: $1.body) }
            guard kept > 0 else {
                writeWhole(pieces.map { .byteBuffer($0) }, body: 0, promise: nil)
                return nil
            }
            keptAliveBytes += kept
            let written = channel.eventLoop.makePromise(of: Void.self)
            written.futureResult.whenComplete { [self] _ in keptAliveBytes -= kept }
            writeWhole(pieces.map { .byteBuffer($0) }, body: 0, promise: written)
            return nil
        }
        do {
            try FrameEncoder.control(frame, into: &buffer, smallFrameBytesMax: smallFrameBytesMax)
        } catch {
            return error
        }
        writeWhole([.byteBuffer(buffer)], body: 0, promise: nil)
        return nil
    }

    /// Sends `items` as one frame (`frame` builds it), or, when they make it larger than a control frame, as halves
    /// of them, and so on down to single items. Returns what could not be sent (one item alone over the limit, any
    /// other refusal), for the caller to answer for.
    public func sendSplitting<Item>(_ items: [Item], as frame: ([Item]) -> Frame) -> [Item] {
        guard !items.isEmpty, let error = send(frame(items)) else { return [] }
        guard items.count > 1, error.code == .resourceExhausted else { return items }
        let half = items.count / 2
        return sendSplitting(Array(items[..<half]), as: frame) + sendSplitting(Array(items[half...]), as: frame)
    }

    /// Writes a whole chunk without copying its bytes; `promise` completes when the kernel took them.
    public func sendData(_ chunk: DataChunk, promise: EventLoopPromise<Void>?) {
        channel.eventLoop.assertInEventLoop()
        var header = allocator.buffer(capacity: WireV1.frameHeaderBytes + WireV1.dataPrefixBytes)
        FrameEncoder.dataHeader(chunk, into: &header)
        writeWhole([.byteBuffer(header)] + chunk.pieces.map { .byteBuffer($0) }, body: chunk.count, promise: promise)
    }

    /// Writes a DATA frame whose body is a region of a file (a shared-memory pool), sent by the kernel with
    /// `sendfile`: no copy in user space. `promise` completes when the kernel took the bytes.
    public func sendData(
        _ chunk: DataChunk, fileRegion: FileRegion, promise: EventLoopPromise<Void>?
    ) {
        channel.eventLoop.assertInEventLoop()
        var header = allocator.buffer(capacity: WireV1.frameHeaderBytes + WireV1.dataPrefixBytes)
        FrameEncoder.dataHeader(chunk, bodyBytes: fileRegion.readableBytes, into: &header)
        writeWhole([.byteBuffer(header), .fileRegion(fileRegion)], body: fileRegion.readableBytes, promise: promise)
    }

    // MARK: Writing

    private func writeWhole(_ buffers: [IOData], body: Int, promise: EventLoopPromise<Void>?) {
        guard body > 0 else {
            for buffer in buffers.dropLast() { channel.write(buffer, promise: nil) }
            if let last = buffers.last { channel.write(last, promise: promise) } else { promise?.succeed() }
            flushAsConfigured()
            return
        }
        channel.write(buffers[0], promise: nil)
        for piece in buffers.dropFirst().dropLast() { writeBody(piece, flush: false, promise: nil) }
        if buffers.count > 1 {
            writeBody(buffers[buffers.count - 1], flush: true, promise: promise)
        } else {
            flushAsConfigured()
            promise?.succeed()
        }
    }

    /// Flushes at once, or, on a connection that coalesces (a node's), once per turn of the event loop: a node that
    /// answers a batch of frames (credits, acknowledgements, outcomes of many small messages) or sends the chunks a
    /// batch of credits let out makes one writev(2), not one per frame (perf, 64 KiB messages node to node: a third
    /// of the time went to a flush and a syscall per control frame, then a fifth to one per chunk).
    private func flushAsConfigured() {
        if let limit = flushBytesMax, unflushedBytes >= limit {
            unflushedBytes = 0
            return channel.flush()
        }
        guard coalescesFlushes else {
            unflushedBytes = 0
            return channel.flush()
        }
        guard !flushScheduled else { return }
        flushScheduled = true
        channel.eventLoop.execute { [self] in
            flushScheduled = false
            unflushedBytes = 0
            channel.flush()
        }
    }

    /// Writes body bytes, counting them as pending until the kernel takes them.
    private func writeBody(_ buffer: IOData, flush: Bool, promise: EventLoopPromise<Void>?) {
        let count = buffer.readableBytes
        pendingBytes += count
        unflushedBytes += count
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenComplete { [self] result in
            pendingBytes -= count
            drainedBytes &+= UInt64(count)
            switch result {
            case .success: promise?.succeed()
            case .failure(let error): promise?.fail(error)
            }
        }
        channel.write(buffer, promise: written)
        if flush {
            flushAsConfigured()
        }
    }

    /// Closes the connection once what was written has been handed to the kernel.
    public func close() {
        readTarget?.clear()
        channel.flush()
        channel.close(promise: nil)
    }

    /// Stops or resumes reading from this connection (backpressure onto the peer through TCP).
    public func setReading(_ reading: Bool) {
        try? channel.syncOptions?.setOption(ChannelOptions.autoRead, value: reading)
        if reading { channel.read() }
    }

    /// Called by the handler.
    func markClosed() -> Bool {
        if isClosed { return false }
        isClosed = true
        return true
    }
}

/// Carries frames from the reader to the connection's delegate; closes the connection on a decode error with a
/// logged reason. Nothing it reads can crash the process: errors end this one connection.
public final class FrameConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    public typealias InboundIn = ParserEvent
    public let connection: FrameConnection
    private let logger: Logger

    public init(connection: FrameConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        handle(unwrapInboundIn(data))
    }

    /// One event from the connection's ``FrameReader``, which calls this directly (no `NIOAny` in between).
    public func handle(_ event: ParserEvent) {
        guard !connection.isClosed else { return }
        connection.eventsReceived &+= 1
        switch event {
        case .frame(let frame):
            connection.delegate?.connection(connection, didReceive: frame)
        case let event:
            connection.delegate?.connection(connection, didStream: event)
        }
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        connection.delegate?.connectionWritabilityChanged(connection)
        context.fireChannelWritabilityChanged()
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
