import FreightCore
import FreightTransport
import FreightWire
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// A message this app is sending: its window and where its bytes come from.
final class Outgoing: @unchecked Sendable {  // confined to the client's event loop
    let id: UInt64
    let destination: String
    var window: SendWindow
    let body: OutgoingBody
    let completion: SendCompletion
    let onProgress: (@Sendable (UInt64) -> Void)?
    let started = NIODeadline.now()
    /// Reused chunk buffers: fresh buffers per chunk cost a page fault per page.
    var pool: [ByteBuffer] = []
    /// Buffers being written, by write: a chunk sent again after a broken link may be in flight twice.
    var inFlight: [UInt64: ByteBuffer] = [:]
    var nextWrite: UInt64 = 0
    let buffersMax: Int
    var fd: Int32 = -1
    /// A file body lent to the node, which sends it with `sendfile` (docs/small-messages-and-files.md).
    var lent = LentFile.none
    /// CRC32C of a repeated block's slices, by length: the bytes never change, so each is computed once.
    var repeatedChecksums: [Int: UInt32] = [:]
    /// Chunks go through shared memory (decided when the message starts; a pool too small for one chunk turns it
    /// off for this message).
    var usesShared = false
    /// A `.repeating` block copied once into the shared pool, or a long generated body's block
    /// (``PatternFill/blockBytes(chunkBytes:)``) filled there once: each chunk is lent as a window of it.
    var sharedBlock: SharedBuffer?
    /// A long generated body's block in memory, for a message through the socket: each chunk is a slice of it.
    var patternBlock: ByteBuffer?
    /// The pool had no room for the next chunk: pumped again when a region comes back.
    var waitingForRegion = false
    /// Chunk-sized regions of the send pool this message holds (lent to the node until the receivers have them).
    var regionsHeld = 0
    /// A streamed body's pieces sent and not yet acknowledged, in order (the writer cannot give them again): sent
    /// again from here when a link on the way broke. At most one window: nothing is sent past the credit.
    /// Made on first use: a CircularBuffer allocates its storage at once, and most messages never retain a piece.
    lazy var retained = CircularBuffer<(offset: UInt64, bytes: ByteBuffer)>()
    /// Sent as a small message: what it counts against the node's eager budget until its outcome, and its header
    /// (sent again as OPEN when the outcome says RESEND).
    var smallCost: UInt64 = 0
    var smallHeader: Freight_Wire_V1_MessageHeader?
    /// Why a device body could not be copied into host memory for staging (``ClientCore/fill(_:at:into:)``).
    var stageError: FreightError?
    /// A staged device body's chunks whose device → host copies are queued and not yet lent, in order
    /// (``ClientCore/queueStaged(_:_:start:next:)``), and whether a thread waits for the first of them.
    var stagedCopies: [StagedCopy] = []
    var watchingStaged = false

    /// Where the bytes taken from a streamed body's writer end.
    var retainedEnd: UInt64 { retained.last.map { $0.offset + UInt64($0.bytes.readableBytes) } ?? window.ackedOffset }

    /// Forgets retained pieces the receivers hold.
    func dropRetained(through acked: UInt64) {
        while let first = retained.first, first.offset + UInt64(first.bytes.readableBytes) <= acked {
            retained.removeFirst()
        }
    }

    /// At most `max` retained bytes from `offset`, when they were taken from the writer already.
    func retainedBytes(from offset: UInt64, max: Int) -> ByteBuffer? {
        guard offset < retainedEnd, let first = retained.first, offset >= first.offset else { return nil }
        // Pieces are in order and contiguous: find the one holding `offset` by halving.
        var low = retained.startIndex
        var count = retained.count
        while count > 1 {
            let half = count / 2
            let middle = retained.index(low, offsetBy: half)
            if retained[middle].offset <= offset {
                low = middle
                count -= half
            } else {
                count = half
            }
        }
        let piece = retained[low]
        let skip = Int(offset - piece.offset)
        return piece.bytes.getSlice(
            at: piece.bytes.readerIndex + skip, length: Swift.min(max, piece.bytes.readableBytes - skip))
    }

    init(
        id: UInt64, destination: String, window: SendWindow, body: OutgoingBody,
        completion: SendCompletion,
        onProgress: (@Sendable (UInt64) -> Void)?, buffersMax: Int
    ) {
        self.id = id
        self.destination = destination
        self.window = window
        self.body = body
        self.completion = completion
        self.onProgress = onProgress
        self.buffersMax = buffersMax
    }

    func fail(_ error: FreightError) {
        closeFile()
        if case .stream(let writer, _) = body { writer.fail(error) }
        completion.fail(error)
    }

    func closeFile() {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
        if case .ready(_, let link) = lent { close(link) }
        lent = .over
    }
}

/// Where a send's report goes: a promise (``ClientCore/send(to:body:length:options:)``), or the continuation of
/// the task that awaits it on the client's own thread.
enum SendCompletion {
    case promise(EventLoopPromise<DeliveryReport>)
    case continuation(UnsafeContinuation<DeliveryReport, any Error>)
    /// One message of a batch (``FreightClient/send(_:)``), at this index.
    case batch(SendBatch, Int)

    func succeed(_ report: DeliveryReport) {
        switch self {
        case .promise(let promise): promise.succeed(report)
        case .continuation(let continuation): continuation.resume(returning: report)
        case .batch(let batch, let index): batch.finish(index, .success(report))
        }
    }

    func fail(_ error: FreightError) {
        switch self {
        case .promise(let promise): promise.fail(error)
        case .continuation(let continuation): continuation.resume(throwing: error)
        case .batch(let batch, let index): batch.finish(index, .failure(error))
        }
    }
}

/// Where a file body stands with the node: lent (the node reads it), being lent, or sent through the pool.
enum LentFile {
    /// Not lent: the app reads the file into its pool (a device body: copies it there, staging it).
    case none
    case attaching
    /// A device body waiting for its node to say whether it is handed over or staged (docs/gpu.md).
    case planning
    /// Lent as pool `pool`; closing `link` takes the file back.
    case ready(pool: UInt32, link: Int32)
    /// A device body: its allocation is lent as pool `pool` (kept lent by the client for later messages), and the
    /// body starts `start` bytes into it (docs/gpu.md).
    case device(pool: UInt32, start: UInt64)
    /// The message ended.
    case over
}

extension ClientCore {
    /// Body bytes put into the send pool in one go after which their SHARED frames leave at once, not at the end of
    /// the turn: a window of 100 MiB or more takes tens of milliseconds to prepare, and the node forwards the first
    /// chunks meanwhile.
    static let flushFilledBytes = 4 << 20

    func send(
        to destination: Address,
        body: OutgoingBody,
        length: UInt64,
        options: SendOptions
    ) -> EventLoopFuture<DeliveryReport> {
        let promise = eventLoop.makePromise(of: DeliveryReport.self)
        send(to: destination, body: body, length: length, options: options, completion: .promise(promise))
        return promise.futureResult
    }

    /// Starts a send whose report (or failure) goes to `completion`: a promise, or the continuation of a task on
    /// the client's own thread, which then needs no future and no callback per message.
    func send(
        to destination: Address,
        body: OutgoingBody,
        length: UInt64,
        options: SendOptions,
        completion: SendCompletion
    ) {
        eventLoop.assertInEventLoop()
        if let closedError { return completion.fail(closedError) }
        var id = messageIDs.next()
        while outgoing[id] != nil { id = messageIDs.next() }
        let chunkBytes = UInt64(options.chunkBytes)
        let transfer = Outgoing(
            id: id,
            destination: destination.description,
            window: SendWindow(length: length, chunkBytes: chunkBytes),
            body: body,
            completion: completion,
            onProgress: options.onProgress,
            buffersMax: max(2, windowBytes / options.chunkBytes + 1)
        )
        if case .file(let path) = body {
            transfer.fd = open(path, O_RDONLY)
            guard transfer.fd >= 0 else {
                return completion.fail(FreightError(.io, "cannot open \(path): \(String(cString: strerror(errno)))"))
            }
            if let shared, length > 0 { lendFile(transfer, shared: shared) }
        }
        if case .device = body {
            guard shared != nil else {
                return completion.fail(
                    FreightError(
                        .invalidArgument,
                        "a body in device memory is lent to the node over shared memory: connect over its Unix socket"))
            }
            // Nothing moves before the node answers the OPEN: hand-over or staging (``ackReceived(_:)``).
            transfer.lent = .planning
        }
        if let shared {
            switch body {
            case .shared(let buffer), .repeatingShared(let buffer, _):
                guard buffer.mapping === shared.send else {
                    return completion.fail(
                        FreightError(.invalidArgument, "the shared buffer belongs to another client"))
                }
            default:
                break
            }
            transfer.usesShared = true
        } else {
            switch body {
            case .shared, .repeatingShared:
                return completion.fail(
                    FreightError(.invalidArgument, "this client has no shared memory for a shared buffer"))
            default:
                break
            }
        }
        // A long generated body goes from one block filled now: in the pool (one without room for it fills chunks
        // one by one), or in memory for the socket.
        if case .pattern(let seed, _) = body, let count = Self.patternBlockBytes(transfer) {
            if !transfer.usesShared {
                transfer.patternBlock = Self.patternBlock(seed: seed, count: count)
            } else if let block = try? allocateShared(count) {
                block.withUnsafeMutableBytes { PatternFill.fill($0, seed: seed, offset: 0) }
                transfer.sharedBlock = block
            }
        }
        outgoing[id] = transfer
        var header = Freight_Wire_V1_MessageHeader()
        header.id = id
        header.source = source
        header.destination = destination.description
        header.length = length
        header.contentType = options.contentType
        header.attributes = options.attributes
        if case .device(let buffer) = body { header.attributes[Limits.deviceAttribute] = buffer.gpu.uuid }
        header.chunkBytes = UInt32(chunkBytes)
        if let replyTo = options.replyTo { header.replyTo = replyTo }
        if let traceparent = options.traceparent { header.traceparent = traceparent }
        if let tracestate = options.tracestate { header.tracestate = tracestate }
        if transfer.fd < 0, goesSmall(body, length: length),
            header.encodedSize <= Limits.smallHeaderAllowanceBytes
        {
            return sendSmall(transfer, header: header)
        }
        var open = Freight_Wire_V1_Open()
        open.header = header
        switch body {
        case .shared, .device: open.shared = true
        default: break
        }
        if let error = connection?.send(.open(open)) {
            outgoing[id] = nil
            transfer.fail(error)
        }
    }

    func ackReceived(_ ack: Freight_Wire_V1_Ack) {
        guard let transfer = outgoing[ack.messageID] else { return }
        if ack.deviceTransfer != .unspecified, case .planning = transfer.lent, case .device(let buffer) = transfer.body,
            let shared
        {
            if ack.deviceTransfer == .handOver {
                lendDevice(transfer, buffer, shared: shared)
            } else {
                transfer.lent = .none
            }
        }
        let before = transfer.window.ackedOffset
        do throws(FreightError) {
            try transfer.window.ack(acked: ack.ackedOffset, credit: ack.creditOffset)
        } catch {
            outgoing[ack.messageID] = nil
            connection?.send(.abort(ack.messageID, error))
            return transfer.fail(error)
        }
        if transfer.window.ackedOffset > before { transfer.onProgress?(transfer.window.ackedOffset) }
        if case .stream = transfer.body { transfer.dropRetained(through: transfer.window.ackedOffset) }
        if ack.hasResendFrom {
            // A link on the way broke: the bytes past `resendFrom` go again (docs/core.md). A streamed body sends
            // them from what it retained.
            if case .stream = transfer.body,
                max(ack.resendFrom, transfer.window.ackedOffset)
                    < (transfer.retained.first?.offset ?? transfer.retainedEnd)
            {
                let error = FreightError(
                    .nodeGone,
                    "a link on the way broke at offset \(ack.resendFrom) of \(transfer.window.length), before what this streamed body retained"
                )
                outgoing[ack.messageID] = nil
                connection?.send(.abort(ack.messageID, error))
                return transfer.fail(error)
            }
            transfer.window.rewind(to: ack.resendFrom)
        }
        pump(transfer)
    }

    /// Lends a file body to the node (on a thread: the link is blocking); until it answers, the message sends
    /// nothing, and a refusal sends it through the pool instead.
    private func lendFile(_ transfer: Outgoing, shared: ClientShared) {
        transfer.lent = .attaching
        let fd = transfer.fd
        let length = transfer.window.length
        let (path, token) = (shared.socketPath, shared.token)
        NIOThreadPool.singleton.runIfActive(eventLoop: eventLoop) {
            ClientShared.lendFile(socketPath: path, token: token, fd: fd, bytes: length)
        }.whenComplete { [self] result in
            guard case .attaching = transfer.lent else {
                if case .success(.success(let lent)) = result { close(lent.link) }
                return
            }
            transfer.lent = .none
            if case .success(.success(let lent)) = result {
                transfer.lent = .ready(pool: lent.pool, link: lent.link)
            }
            pump(transfer)
        }
    }

    /// Sends a lent file's chunks as the credit allows: SHARED frames naming the file's bytes, each with its
    /// checksum. The checksum is taken over a read into one reused buffer (`pread`), not a mapping of the file:
    /// a file truncated meanwhile is then a failed read, where a mapping would kill the app.
    private func pumpLentFile(_ transfer: Outgoing, pool: UInt32) {
        guard let connection else { return }
        var named = 0
        while let next = transfer.window.nextChunk() {
            let region = SharedRegion(pool: pool, offset: next.offset, length: next.count)
            if checksumScratch.capacity < Int(next.count) {
                checksumScratch = ByteBufferAllocator().buffer(capacity: Int(transfer.window.chunkBytes))
            }
            checksumScratch.clear()
            var code: Int32 = 0
            checksumScratch.writeWithUnsafeMutableBytes(minimumWritableBytes: Int(next.count)) { raw in
                code = fill(
                    transfer, at: next.offset, into: UnsafeMutableRawBufferPointer(rebasing: raw[..<Int(next.count)]))
                return code == 0 ? Int(next.count) : 0
            }
            guard code == 0 else { return failRead(transfer, at: next.offset, code) }
            let crc = CRC32C.checksum(checksumScratch)
            connection.send(
                .shared(
                    SharedChunk(
                        messageID: transfer.id, offset: next.offset, crc32c: crc, isLast: next.isLast, region: region)
                ))
            named += Int(next.count)
            if named >= Self.flushFilledBytes {
                named = 0
                connection.flushNow()
            }
        }
    }

    /// Sends every chunk the credit and the buffer pool allow.
    func pump(_ transfer: Outgoing) {
        guard let connection, outgoing[transfer.id] === transfer else { return }
        if case .stream(let writer, _) = transfer.body { return pumpStream(transfer, writer, on: connection) }
        if transfer.usesShared, pumpShared(transfer) { return }
        while !transfer.window.allSent {
            let needsBuffer: Bool
            switch transfer.body {
            case .bytes, .repeating, .shared, .repeatingShared, .stream: needsBuffer = false
            case .pattern: needsBuffer = transfer.patternBlock == nil
            case .file, .device: needsBuffer = true
            }
            if needsBuffer && transfer.pool.isEmpty && transfer.inFlight.count >= transfer.buffersMax { return }
            guard let next = transfer.window.nextChunk() else { return }
            let count = Int(next.count)
            var bytes: ByteBuffer
            switch transfer.body {
            case .bytes(let buffer):
                bytes = buffer.getSlice(at: buffer.readerIndex + Int(next.offset), length: count)!
            case .repeating(let block, _):
                bytes = block.getSlice(at: block.readerIndex, length: count)!
            case .pattern where transfer.patternBlock != nil:
                bytes = transfer.patternBlock!.getSlice(at: PatternFill.phase(of: Int64(next.offset)), length: count)!
            case .shared, .repeatingShared:
                preconditionFailure("shared bodies are lent by pumpShared")
            case .stream:
                preconditionFailure("streamed bodies are sent by pumpStream")
            case .pattern, .file, .device:
                bytes =
                    transfer.pool.popLast()
                    ?? connection.channel.allocator.buffer(capacity: Int(transfer.window.chunkBytes))
                bytes.clear()
                var readError: Int32 = 0
                bytes.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
                    readError = fill(
                        transfer, at: next.offset, into: UnsafeMutableRawBufferPointer(rebasing: raw[..<count]))
                    return readError == 0 ? count : 0
                }
                guard readError == 0 else { return failRead(transfer, at: next.offset, readError) }
            }
            let checksum: UInt32
            if case .repeating = transfer.body {
                if let known = transfer.repeatedChecksums[count] {
                    checksum = known
                } else {
                    checksum = CRC32C.checksum(bytes)
                    transfer.repeatedChecksums[count] = checksum
                }
            } else {
                checksum = CRC32C.checksum(bytes)
            }
            let chunk = DataChunk(
                messageID: transfer.id,
                offset: next.offset,
                crc32c: checksum,
                isLast: next.isLast,
                bytes: bytes
            )
            if needsBuffer {
                let write = transfer.nextWrite
                transfer.nextWrite &+= 1
                transfer.inFlight[write] = bytes
                let written = eventLoop.makePromise(of: Void.self)
                written.futureResult.whenComplete { [self] _ in
                    if let buffer = transfer.inFlight.removeValue(forKey: write) { transfer.pool.append(buffer) }
                    pump(transfer)
                }
                connection.sendData(chunk, promise: written)
            } else {
                connection.sendData(chunk, promise: nil)
            }
        }
    }

    /// Writes the body's bytes at `offset` into `raw` (generated, read from the file, or copied from memory);
    /// returns 0 or the errno of a failed read.
    func fill(_ transfer: Outgoing, at offset: UInt64, into raw: UnsafeMutableRawBufferPointer) -> Int32 {
        switch transfer.body {
        case .pattern(let seed, _):
            PatternFill.fill(raw, seed: seed, offset: Int64(offset))
        case .file:
            var done = 0
            while done < raw.count {
                let n = pread(transfer.fd, raw.baseAddress! + done, raw.count - done, off_t(offset) + off_t(done))
                if n <= 0 { return n == 0 ? EIO : errno }
                done += n
            }
        case .bytes(let buffer):
            buffer.withUnsafeReadableBytes { source in
                raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[Int(offset)..<(Int(offset) + raw.count)]))
            }
        case .repeating(let block, _):
            block.withUnsafeReadableBytes { raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[..<raw.count])) }
        case .shared(let buffer), .repeatingShared(let buffer, _):
            buffer.withUnsafeBytes { raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[..<raw.count])) }
        case .stream:
            preconditionFailure("streamed bodies are sent by pumpStream")
        case .device(let buffer):
            do {
                try stage(buffer, at: offset, into: raw)
            } catch {
                transfer.stageError = error
                return EIO
            }
        }
        return 0
    }

    func failRead(_ transfer: Outgoing, at offset: UInt64, _ code: Int32) {
        let path: String
        if case .file(let name) = transfer.body { path = name } else { path = "the body" }
        let error =
            transfer.stageError
            ?? FreightError(.io, "cannot read \(path) at \(offset): \(String(cString: strerror(code)))")
        outgoing[transfer.id] = nil
        connection?.send(.abort(transfer.id, error))
        transfer.fail(error)
    }

    /// Sends what the credit allows as SHARED frames. Returns false when this message cannot use the pool (too
    /// small for one chunk): it then goes through the socket.
    func pumpShared(_ transfer: Outgoing) -> Bool {
        guard let shared else { return false }
        switch transfer.lent {
        case .attaching, .planning: return true
        case .ready(let pool, _):
            pumpLentFile(transfer, pool: pool)
            return true
        case .device(let pool, let start):
            pumpDevice(transfer, pool: pool, start: start)
            return true
        case .none, .over: break
        }
        switch transfer.body {
        case .shared(let buffer):
            while let span = transfer.window.nextSpan() {
                lend(
                    transfer, start: buffer.offset, offset: buffer.offset + Int(span.offset), length: span.count,
                    bodyOffset: span.offset, crc: nil, isLast: span.isLast)
            }
            return true
        case .repeatingShared(let block, _):
            lendRepeated(transfer, block: block)
            return true
        case .repeating(let source, _):
            if transfer.sharedBlock == nil {
                let count = Int(min(transfer.window.chunkBytes, max(transfer.window.length, 1)))
                guard source.readableBytes >= count, let block = try? allocateShared(count) else {
                    transfer.usesShared = false
                    return false
                }
                block.withUnsafeMutableBytes { raw in
                    source.withUnsafeReadableBytes {
                        raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[..<count]))
                    }
                }
                transfer.sharedBlock = block
            }
            lendRepeated(transfer, block: transfer.sharedBlock!)
            return true
        case .pattern where transfer.sharedBlock != nil:
            lendPattern(transfer, block: transfer.sharedBlock!)
            return true
        case .stream:
            return false
        case .bytes, .file, .pattern, .device:
            // Whichever way this returns, the staged copies it queued are waited for and lent.
            defer { if case .device(let buffer) = transfer.body { watchStaged(transfer, buffer.gpu) } }
            var filled = 0
            while !transfer.window.allSent {
                let size = Int(transfer.window.chunkBytes)
                // Messages sent at once share the pool evenly: one that holds its share waits its turn like one
                // that found no room (the first to get credit would otherwise fill the pool and the link).
                let share = max(1, shared.allocator.capacity / size / max(1, outgoing.count))
                let start = transfer.regionsHeld < share ? shared.allocator.allocate(size) : nil
                guard let start else {
                    if shared.allocator.regionCount == 0 {
                        transfer.usesShared = false
                        return false
                    }
                    if !transfer.waitingForRegion {
                        transfer.waitingForRegion = true
                        shared.waiting.append(transfer.id)
                    }
                    return true
                }
                guard let next = transfer.window.nextChunk() else {
                    shared.allocator.free(start)
                    return true
                }
                if case .device(let buffer) = transfer.body {
                    // Queued on the GPU's copy engine; lent once its copy completed, while the loop queues more.
                    guard queueStaged(transfer, buffer, start: start, next: next) else { return true }
                    continue
                }
                let raw = UnsafeMutableRawBufferPointer(start: shared.send.base + start, count: Int(next.count))
                let code = fill(transfer, at: next.offset, into: raw)
                guard code == 0 else {
                    shared.allocator.free(start)
                    failRead(transfer, at: next.offset, code)
                    return true
                }
                let crc = CRC32C.checksum(UnsafeRawBufferPointer(raw))
                transfer.regionsHeld += 1
                shared.owners[start] = transfer.id
                lend(
                    transfer, start: start, offset: start, length: next.count, bodyOffset: next.offset, crc: crc,
                    isLast: next.isLast)
                filled += Int(next.count)
                if filled >= Self.flushFilledBytes {
                    filled = 0
                    connection?.flushNow()
                }
            }
            return true
        }
    }

    /// Sends what the writer has queued, as the credit allows, in pieces of at most one chunk (slices of the
    /// written buffers, not copies); when nothing is queued it waits for the next write.
    private func pumpStream(_ transfer: Outgoing, _ writer: BodyWriter, on connection: FrameConnection) {
        while !transfer.window.allSent {
            let room = min(transfer.window.available, transfer.window.chunkBytes)
            guard room > 0 else { return }
            if let again = transfer.retainedBytes(from: transfer.window.nextOffset, max: Int(room)) {
                // Sent before a link on the way broke: again, over the socket.
                let next = transfer.window.take(UInt64(again.readableBytes))!
                connection.sendData(
                    DataChunk(
                        messageID: transfer.id, offset: next.offset, crc32c: CRC32C.checksum(again),
                        isLast: next.isLast, bytes: again),
                    promise: nil)
                continue
            }
            let gate = self.gate
            switch writer.take(max: Int(room), wake: { [self] in gate.execute { self.pump(transfer) } }) {
            case .empty:
                return
            case .bytes(let piece):
                let next = transfer.window.take(UInt64(piece.readableBytes))!
                transfer.retained.append((next.offset, piece))
                // Through the pool when there is room: one copy into shared memory instead of the socket's two.
                if transfer.usesShared, let shared, let start = shared.allocator.allocate(piece.readableBytes) {
                    let crc = piece.withUnsafeReadableBytes { source in
                        let target = UnsafeMutableRawBufferPointer(start: shared.send.base + start, count: source.count)
                        target.copyMemory(from: source)
                        return CRC32C.checksum(UnsafeRawBufferPointer(target))
                    }
                    lend(
                        transfer, start: start, offset: start, length: next.count, bodyOffset: next.offset, crc: crc,
                        isLast: next.isLast)
                    continue
                }
                connection.sendData(
                    DataChunk(
                        messageID: transfer.id, offset: next.offset, crc32c: CRC32C.checksum(piece),
                        isLast: next.isLast,
                        bytes: piece),
                    promise: nil)
            case .finished:
                return abortStream(
                    transfer,
                    FreightError(
                        .invalidArgument,
                        "the body ended after \(transfer.window.nextOffset) of \(transfer.window.length) bytes"))
            case .failed(let error):
                return abortStream(transfer, error)
            }
        }
        // Everything declared was sent: more bytes after it are an error.
        if case .bytes(let extra) = writer.take(max: 1, wake: {}) {
            _ = extra
            abortStream(
                transfer,
                FreightError(.invalidArgument, "the body is longer than the \(transfer.window.length) bytes declared"))
        }
    }

    private func abortStream(_ transfer: Outgoing, _ error: FreightError) {
        guard outgoing.removeValue(forKey: transfer.id) != nil else { return }
        connection?.send(.abort(transfer.id, error))
        transfer.fail(error)
    }

    /// The length of a generated body's block (``PatternFill/blockBytes(chunkBytes:)``) when the message is long
    /// enough that filling it once costs at most half of filling every chunk; nil for a shorter one, whose chunks
    /// are filled one by one.
    static func patternBlockBytes(_ transfer: Outgoing) -> Int? {
        let count = PatternFill.blockBytes(chunkBytes: Int(transfer.window.chunkBytes))
        return transfer.window.length >= 2 * UInt64(count) ? count : nil
    }

    static func patternBlock(seed: UInt64, count: Int) -> ByteBuffer {
        var block = ByteBufferAllocator().buffer(capacity: count)
        block.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
            PatternFill.fill(UnsafeMutableRawBufferPointer(rebasing: raw[..<count]), seed: seed, offset: 0)
            return count
        }
        return block
    }

    /// Lends every chunk the credit allows of a generated body as the window of `block` at the chunk's phase:
    /// nothing is made per chunk but its checksum, read from a block that stays in the cache.
    private func lendPattern(_ transfer: Outgoing, block: SharedBuffer) {
        while let next = transfer.window.nextChunk() {
            let phase = PatternFill.phase(of: Int64(next.offset))
            let crc = block.withUnsafeBytes {
                CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[phase..<(phase + Int(next.count))]))
            }
            lend(
                transfer, start: block.offset, offset: block.offset + phase, length: next.count,
                bodyOffset: next.offset, crc: crc, isLast: next.isLast)
        }
    }

    /// Lends the first bytes of `block` for every chunk the credit allows (the same region each time).
    private func lendRepeated(_ transfer: Outgoing, block: SharedBuffer) {
        while let next = transfer.window.nextChunk() {
            let count = Int(next.count)
            let crc: UInt32
            if let known = transfer.repeatedChecksums[count] {
                crc = known
            } else {
                crc = block.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
                transfer.repeatedChecksums[count] = crc
            }
            lend(
                transfer, start: block.offset, offset: block.offset, length: next.count, bodyOffset: next.offset,
                crc: crc, isLast: next.isLast)
        }
    }

    func doneReceived(_ done: Freight_Wire_V1_Done) {
        guard let transfer = outgoing.removeValue(forKey: done.messageID) else { return }
        transfer.closeFile()
        transfer.onProgress?(transfer.window.length)
        let report = DeliveryReport(
            messageID: done.messageID,
            destination: transfer.destination,
            bytes: transfer.window.length,
            seconds: Double((NIODeadline.now() - transfer.started).nanoseconds) / 1e9,
            deliveries: done.deliveries.map {
                DeliveryReport.Delivery(
                    node: $0.endpoint.node, endpointID: $0.endpoint.id, address: $0.address, app: $0.app, path: $0.path,
                    resumedAt: $0.resumedAt)
            },
            failures: done.failures.map {
                DeliveryReport.Failure(
                    node: $0.endpoint.node,
                    endpointID: $0.endpoint.id,
                    error: FreightError(.init(rawValue: $0.code), $0.reason),
                    ackedBytes: $0.ackedOffset
                )
            }
        )
        transfer.completion.succeed(report)
    }

    func abortReceived(_ abort: Freight_Wire_V1_Abort) {
        if let transfer = outgoing.removeValue(forKey: abort.messageID) {
            // Where the message got to: what the receivers acknowledged, as far as the sender heard or the abort says.
            var error = abort.error
            let acked = max(abort.ackedOffset, transfer.window.ackedOffset)
            if transfer.window.nextOffset > 0, !error.message.contains("acknowledged") {
                error.message += "; \(acked) of \(transfer.window.length) bytes acknowledged"
            }
            transfer.fail(error)
        }
        smallIncoming[abort.messageID] = nil
        if let message = incoming.removeValue(forKey: abort.messageID) {
            message.continuation.finish(throwing: abort.error)
        }
    }
}
