import FreightCore
import FreightDirectory
import FreightFlow
import FreightWire
import NIOCore

/// The in-process transport: an endpoint or a sender that lives inside the node's process and exchanges frames
/// with the node by hand-off on its event loop, with no socket between them.
protocol LocalPort: AnyObject, Sendable {
    /// A frame from the node to this port; on the node's loop.
    func deliver(_ frame: Frame)
}

/// The node's in-process ports (``InProcessSink``, ``InProcessSource``), and what its sources share: message ids,
/// pre-filled chunk buffers and their checksums. Loop-confined.
final class LocalPorts: @unchecked Sendable {
    private var ports: [UInt64: any LocalPort] = [:]
    private var nextID: UInt64 = 1
    /// Ids of the messages the node sends itself (``InProcessSource``).
    var messageIDs = IDSequence()
    /// Pre-filled chunk buffers of in-process sources, by chunk size (one size kept).
    var sourceBlocks: [Int: [(bytes: ByteBuffer, crc: UInt32)]] = [:]
    /// CRC32C of the first bytes of the first source block, by length (short last chunks; every such chunk starts
    /// at a multiple of the chunk size, so it is a prefix of block 0).
    var partialChecksums: [Int: UInt32] = [:]

    subscript(id: UInt64) -> (any LocalPort)? { ports[id] }

    /// A new port, made with its id.
    @discardableResult
    func add<Port: LocalPort>(_ make: (UInt64) -> Port) -> Port {
        let port = make(nextID)
        ports[nextID] = port
        nextID += 1
        return port
    }

    func remove(_ id: UInt64) { ports[id] = nil }
}

/// An in-process endpoint that checks each chunk's CRC32C, acknowledges it at once and drops the bytes: the far
/// end of a node-to-node measurement.
final class InProcessSink: LocalPort, @unchecked Sendable {  // confined to the node's event loop
    unowned let engine: NodeEngine
    let portID: UInt64
    var windows: [UInt64: ReceiveWindow] = [:]
    private(set) var bytesReceived: UInt64 = 0
    private(set) var checksumFailures = 0

    init(engine: NodeEngine, portID: UInt64) {
        self.engine = engine
        self.portID = portID
    }

    func deliver(_ frame: Frame) {
        switch frame {
        case .open(let open) where open.resume:
            // A link on the way broke and the message goes on where this sink's window says: nothing to do.
            break
        case .open(let open):
            let window = ReceiveWindow(
                length: open.header.length, windowBytes: UInt64(engine.configuration.windowBytes))
            windows[open.header.id] = window
            if window.length == 0 {
                finish(open.header.id)
            } else {
                engine.flowFrame(.ack(open.header.id, acked: 0, credit: window.creditOffset), from: .local(portID))
            }
        case .data(let chunk):
            guard var window = windows[chunk.messageID] else { return }
            let count = UInt64(chunk.count)
            do throws(FreightError) {
                // Bytes held already come again after a broken link: dropped quietly.
                guard try window.accept(chunk) else { return }
                guard chunk.checksumMatches else {
                    throw FreightError(.checksumMismatch, "chunk at offset \(chunk.offset) failed its CRC32C check")
                }
            } catch {
                checksumFailures += 1
                windows[chunk.messageID] = nil
                return engine.flowFrame(.abort(chunk.messageID, error), from: .local(portID))
            }
            bytesReceived += count
            var update: (acked: UInt64, credit: UInt64)?
            var offset = chunk.offset
            for piece in chunk.pieces {
                update = window.consume(offset: offset) ?? update
                offset += UInt64(piece.readableBytes)
            }
            windows[chunk.messageID] = window
            if window.isComplete {
                finish(chunk.messageID)
            } else if let update {
                engine.flowFrame(
                    .ack(chunk.messageID, acked: update.acked, credit: update.credit), from: .local(portID))
            }
        case .abort(let abort):
            windows[abort.messageID] = nil
        default:
            break
        }
    }

    /// Whole messages passed to this sink: each checked and counted, and answered at once (one that fails its
    /// check is sent again as OPEN and DATA, as an app asks).
    func deliverSmall(_ messages: [SmallMessage]) {
        var outcomes: [SmallOutcome] = []
        outcomes.reserveCapacity(messages.count)
        for index in messages.indices {
            if CRC32C.checksum(messages[index].body) == messages[index].crc32c {
                bytesReceived += messages[index].length
                outcomes.append(SmallOutcome(messages[index].id, .delivered))
            } else {
                checksumFailures += 1
                outcomes.append(SmallOutcome(messages[index].id, .resend))
            }
        }
        engine.outcomesReceived(outcomes, from: .local(portID))
    }

    private func finish(_ id: UInt64) {
        guard windows.removeValue(forKey: id) != nil else { return }
        // DONE says every byte is held: no final ACK before it.
        var done = Freight_Wire_V1_Done()
        done.messageID = id
        engine.flowFrame(.done(done), from: .local(portID))
    }
}

/// An in-process sender of generated bytes: the near end of a node-to-node measurement. It cycles through a few
/// pre-filled chunk buffers, so the measurement is of the fabric, not of generating bytes.
final class InProcessSource: LocalPort, @unchecked Sendable {  // confined to the node's event loop
    unowned let engine: NodeEngine
    let portID: UInt64
    let id: UInt64
    var window: SendWindow
    let buffers: [(bytes: ByteBuffer, crc: UInt32)]
    let promise: EventLoopPromise<Freight_Wire_V1_Done>
    /// Pre-filled chunk buffers it cycles through.
    static let blocks = 4

    init(
        engine: NodeEngine, portID: UInt64, length: UInt64, chunkBytes: Int,
        promise: EventLoopPromise<Freight_Wire_V1_Done>
    ) {
        self.engine = engine
        self.portID = portID
        self.window = SendWindow(length: length, chunkBytes: UInt64(chunkBytes))
        self.promise = promise
        self.id = engine.localPorts.messageIDs.next()
        if let cached = engine.localPorts.sourceBlocks[chunkBytes] {
            self.buffers = cached
            return
        }
        let random = engine.configuration.environment.random
        self.buffers = (0..<Self.blocks).map { _ in
            var buffer = ByteBufferAllocator().buffer(capacity: chunkBytes)
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: chunkBytes) { raw in
                PatternFill.fill(
                    UnsafeMutableRawBufferPointer(rebasing: raw[..<chunkBytes]), seed: random(), offset: 0)
                return chunkBytes
            }
            return (buffer, CRC32C.checksum(buffer))
        }
        engine.localPorts.sourceBlocks = [chunkBytes: buffers]
        engine.localPorts.partialChecksums = [:]
    }

    func deliver(_ frame: Frame) {
        switch frame {
        case .ack(let ack):
            try? window.ack(acked: ack.ackedOffset, credit: ack.creditOffset)
            if ack.hasResendFrom { window.rewind(to: ack.resendFrom) }
            pump()
        case .done(let done):
            engine.localPorts.remove(portID)
            promise.succeed(done)
        case .abort(let abort):
            engine.localPorts.remove(portID)
            promise.fail(abort.error)
        default:
            break
        }
    }

    func pump() {
        while let next = window.nextChunk() {
            let full = next.count == window.chunkBytes
            // A short (last) chunk is always a prefix of block 0, so its checksum can be kept by length.
            let source = full ? buffers[Int(next.offset / window.chunkBytes) % buffers.count] : buffers[0]
            let bytes = full ? source.bytes : source.bytes.getSlice(at: 0, length: Int(next.count))!
            let crc: UInt32
            if full {
                crc = source.crc
            } else if let known = engine.localPorts.partialChecksums[Int(next.count)] {
                crc = known
            } else {
                crc = CRC32C.checksum(bytes)
                engine.localPorts.partialChecksums[Int(next.count)] = crc
            }
            let chunk = DataChunk(messageID: id, offset: next.offset, crc32c: crc, isLast: next.isLast, bytes: bytes)
            engine.flowFrame(.data(chunk), from: .local(portID))
        }
    }
}

extension NodeEngine {
    /// Registers an in-process sink endpoint on `pattern`; returns its endpoint id.
    public func attachSink(_ pattern: AddressPattern, label: String = "sink") async throws -> UInt64 {
        try await eventLoop.submit { [self] in
            let portID = localPorts.add { InProcessSink(engine: self, portID: $0) }.portID
            let record = localEndpoints.add(pattern: pattern, group: nil, app: label, port: .local(portID))
            index.upsert(record)
            announce(added: [record], removed: [])
            return record.key.id
        }.get()
    }

    /// Sends `length` generated bytes from inside this node to `address`; returns when delivered.
    public func sendFromNode(to address: Address, length: UInt64, chunkBytes: Int? = nil) async throws
        -> Freight_Wire_V1_Done
    {
        try await eventLoop.flatSubmit { [self] in
            startSource(to: address, length: length, chunkBytes: chunkBytes ?? configuration.chunkBytes)
        }.get()
    }

    /// Sends `count` messages of `length` generated bytes from inside this node to `address`, keeping `inFlight` of
    /// them open at once; returns when all were delivered, or with the first failure. The next message starts on
    /// the event loop as one ends, so that a measurement of the node's own traffic measures the node, not a task
    /// hop per message.
    public func sendFromNode(
        to address: Address, length: UInt64, count: Int, inFlight: Int, chunkBytes: Int? = nil
    ) async throws {
        try await eventLoop.flatSubmit { [self] in
            let driver = SourceDriver(
                engine: self, address: address, length: length, count: count,
                chunkBytes: chunkBytes ?? configuration.chunkBytes)
            for _ in 0..<max(1, min(inFlight, count)) { driver.startNext() }
            return driver.all.futureResult
        }.get()
    }

    /// Opens one message from an in-process source; on loop.
    func startSource(to address: Address, length: UInt64, chunkBytes: Int) -> EventLoopFuture<
        Freight_Wire_V1_Done
    > {
        let promise = eventLoop.makePromise(of: Freight_Wire_V1_Done.self)
        let source = localPorts.add {
            InProcessSource(engine: self, portID: $0, length: length, chunkBytes: chunkBytes, promise: promise)
        }
        let portID = source.portID
        var open = Freight_Wire_V1_Open()
        open.header.id = source.id
        open.header.source = "\(name)/node"
        open.header.destination = address.description
        open.header.length = length
        open.header.chunkBytes = UInt32(chunkBytes)
        flowFrame(.open(open), from: .local(portID))
        return promise.futureResult
    }
}

/// The node's own messages of at most `Limits.smallBodyBytesMax`, sent whole as apps send theirs
/// (``NodeEngine/sendSmallFromNode(_:from:)``), all from one pre-filled body as iperf3 repeats its buffer; one that
/// cannot go small, or comes back RESEND, goes as OPEN and DATA (``InProcessSource``).
final class InProcessSmallSource: LocalPort, @unchecked Sendable {  // confined to the node's event loop
    unowned let engine: NodeEngine
    let portID: UInt64
    let address: Address
    let chunkBytes: Int
    let body: ByteBuffer
    let crc: UInt32
    /// Made once: every message names the same source and destination.
    private let source: String
    private let destination: String
    private var waiting: [UInt64: EventLoopPromise<Freight_Wire_V1_Done>] = [:]

    init(engine: NodeEngine, portID: UInt64, address: Address, length: Int, chunkBytes: Int) {
        self.engine = engine
        self.portID = portID
        self.address = address
        self.chunkBytes = chunkBytes
        var body = ByteBufferAllocator().buffer(capacity: length)
        let seed = engine.configuration.environment.random()
        body.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { raw in
            PatternFill.fill(UnsafeMutableRawBufferPointer(rebasing: raw[..<length]), seed: seed, offset: 0)
            return length
        }
        self.body = body
        self.crc = CRC32C.checksum(body)
        self.source = "\(engine.name)/node"
        self.destination = address.description
    }

    /// Sends one message; completes when it was delivered, or with why not.
    func send() -> EventLoopFuture<Freight_Wire_V1_Done> {
        let id = engine.localPorts.messageIDs.next()
        let message = SmallMessage(
            id: id, source: source, destination: destination, extras: nil, body: body, crc32c: crc)
        guard engine.sendSmallFromNode(message, from: .local(portID)) else { return sendAsFlow() }
        let promise = engine.eventLoop.makePromise(of: Freight_Wire_V1_Done.self)
        waiting[id] = promise
        return promise.futureResult
    }

    /// Fails what still waits for an outcome: the measurement ended (one message failed), and this port is gone.
    func abandon() {
        let left = waiting
        waiting = [:]
        for promise in left.values { promise.fail(FreightError(.cancelled, "the node's sender stopped")) }
    }

    private func sendAsFlow() -> EventLoopFuture<Freight_Wire_V1_Done> {
        engine.startSource(to: address, length: UInt64(body.readableBytes), chunkBytes: chunkBytes)
    }

    func deliver(_ frame: Frame) {
        guard case .outcomes(let outcomes) = frame else { return }
        for outcome in outcomes {
            guard let promise = waiting.removeValue(forKey: outcome.messageID) else { continue }
            switch outcome.kind {
            case .delivered:
                var done = Freight_Wire_V1_Done()
                done.messageID = outcome.messageID
                promise.succeed(done)
            case .resend:
                promise.completeWith(sendAsFlow())
            case .failed:
                promise.fail(outcome.error)
            }
        }
    }
}

/// Keeps a number of in-process messages open, starting the next as one ends (``NodeEngine/sendFromNode(to:length:count:inFlight:chunkBytes:)``).
final class SourceDriver: @unchecked Sendable {  // confined to the node's event loop
    unowned let engine: NodeEngine
    let address: Address
    let length: UInt64
    let count: Int
    let chunkBytes: Int
    let all: EventLoopPromise<Void>
    private var started = 0
    private var finished = 0
    private var failed = false

    /// Messages of at most `Limits.smallBodyBytesMax` go whole, as an app's do.
    let small: InProcessSmallSource?

    init(engine: NodeEngine, address: Address, length: UInt64, count: Int, chunkBytes: Int) {
        self.engine = engine
        self.address = address
        self.length = length
        self.count = count
        self.chunkBytes = chunkBytes
        self.all = engine.eventLoop.makePromise()
        if length <= UInt64(Limits.smallBodyBytesMax) {
            let small = engine.localPorts.add {
                InProcessSmallSource(
                    engine: engine, portID: $0, address: address, length: Int(length), chunkBytes: chunkBytes)
            }
            self.small = small
            all.futureResult.whenComplete { _ in
                engine.localPorts.remove(small.portID)
                small.abandon()
            }
        } else {
            self.small = nil
        }
        if count <= 0 { all.succeed() }
    }

    func startNext() {
        guard !failed, started < count else { return }
        started += 1
        let sent = small?.send() ?? engine.startSource(to: address, length: length, chunkBytes: chunkBytes)
        sent.whenComplete { [self] result in
            switch result {
            case .success:
                finished += 1
                if finished == count { all.succeed() } else { startNext() }
            case .failure(let error):
                if !failed { all.fail(error) }
                failed = true
            }
        }
    }
}
