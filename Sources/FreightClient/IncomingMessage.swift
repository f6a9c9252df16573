import CFreightSystem
import FreightCore
import FreightWire
import NIOCore
import Synchronization
import Tracing

#if canImport(Glibc)
    import Glibc
#endif

/// One chunk of a message body starting at `offset`: bytes in a buffer, or in shared memory read in place.
/// Chunks of a striped message may arrive out of order.
public struct BodyChunk: Sendable {
    enum Storage: Sendable {
        case buffer(ByteBuffer)
        case shared(SharedBytes)
        case device(DeviceBytes)
    }

    public var offset: UInt64
    let storage: Storage

    init(offset: UInt64, bytes: ByteBuffer) {
        self.offset = offset
        self.storage = .buffer(bytes)
    }

    init(offset: UInt64, shared: SharedBytes) {
        self.offset = offset
        self.storage = .shared(shared)
    }

    init(offset: UInt64, device: DeviceBytes) {
        self.offset = offset
        self.storage = .device(device)
    }

    public var count: Int {
        switch storage {
        case .buffer(let buffer): buffer.readableBytes
        case .shared(let shared): shared.count
        case .device(let device): device.region.count
        }
    }

    /// True when the bytes are read in place from shared memory.
    public var isShared: Bool { if case .shared = storage { true } else { false } }

    /// Where the bytes lie in GPU memory, for a body another app of this node sent from device memory (docs/gpu.md):
    /// handed over in place, with nothing copied. Nil for bytes in host memory.
    public var device: DeviceRegion? { if case .device(let device) = storage { device.region } else { nil } }

    /// The bytes, where they lie: no copy. Throws when they were lent by a session that has closed, or lie in GPU
    /// memory (``device``).
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        switch storage {
        case .buffer(let buffer): try buffer.withUnsafeReadableBytes(body)
        case .shared(let shared): try shared.withUnsafeBytes(body)
        case .device(let device): throw device.notInHostMemory(at: offset)
        }
    }

    /// The bytes as a buffer: the buffer itself, or a copy of shared bytes.
    public func buffer() throws -> ByteBuffer {
        switch storage {
        case .buffer(let buffer): buffer
        case .shared(let shared): try shared.withUnsafeBytes { ByteBuffer(bytes: $0) }
        case .device(let device): throw device.notInHostMemory(at: offset)
        }
    }
}

/// A message delivered to this app. Read its body once; the sender is credited as the app is done with chunks (it
/// asks for the next), so an app that reads slowly slows its sender instead of filling memory, and the sender's
/// delivery report means that the app handled every byte (docs/small-messages-and-files.md).
public struct IncomingMessage: Sendable {
    /// Everything the message carries, in one object: an app's loop, a subscription's batch and the iterator hand
    /// a message on several times, and a copy is then one retain instead of one per field (perf: copies of the
    /// fields were 3.5% of a run of small messages).
    final class Fields: Sendable {
        let id: UInt64
        let source: String
        let destination: String
        let length: UInt64
        let contentType: String
        let attributes: [String: String]
        let path: [String]
        let replyTo: String
        let traceparent: String
        let tracestate: String
        let filters: [String]
        let body: MessageBody
        let notes: MessageNotes
        let failing: @Sendable (FreightError) -> Void

        init(
            id: UInt64, source: String, destination: String, length: UInt64, contentType: String,
            attributes: [String: String], path: [String], replyTo: String, traceparent: String, tracestate: String,
            filters: [String], body: MessageBody, notes: MessageNotes,
            failing: @escaping @Sendable (FreightError) -> Void
        ) {
            self.id = id
            self.source = source
            self.destination = destination
            self.length = length
            self.contentType = contentType
            self.attributes = attributes
            self.path = path
            self.replyTo = replyTo
            self.traceparent = traceparent
            self.tracestate = tracestate
            self.filters = filters
            self.body = body
            self.notes = notes
            self.failing = failing
        }

        /// The same fields with another body.
        func with(body: MessageBody) -> Fields {
            Fields(
                id: id, source: source, destination: destination, length: length, contentType: contentType,
                attributes: attributes, path: path, replyTo: replyTo, traceparent: traceparent, tracestate: tracestate,
                filters: filters, body: body, notes: notes, failing: failing)
        }
    }

    private var fields: Fields

    init(
        id: UInt64, source: String, destination: String, length: UInt64, contentType: String,
        attributes: [String: String], path: [String], replyTo: String, traceparent: String, tracestate: String,
        filters: [String], body: MessageBody, notes: MessageNotes, failing: @escaping @Sendable (FreightError) -> Void
    ) {
        fields = Fields(
            id: id, source: source, destination: destination, length: length, contentType: contentType,
            attributes: attributes, path: path, replyTo: replyTo, traceparent: traceparent, tracestate: tracestate,
            filters: filters, body: body, notes: notes, failing: failing)
    }

    public var id: UInt64 { fields.id }
    public var source: String { fields.source }
    public var destination: String { fields.destination }
    public var length: UInt64 { fields.length }
    public var contentType: String { fields.contentType }
    public var attributes: [String: String] { fields.attributes }
    /// The nodes the message passed.
    public var path: [String] { fields.path }
    /// Where the sender wants a reply (``FreightClient/reply(to:body:options:)``); empty when it wants none.
    public var replyTo: String { fields.replyTo }
    /// The W3C trace context the message carries: the span of the last node it passed (docs/observability.md).
    public var traceparent: String { fields.traceparent }
    public var tracestate: String { fields.tracestate }
    /// The filters that ran on the body on its way, in order (`NODE/MODULE@SHA256-PREFIX`, docs/functions.md): its
    /// encoding, when a filter changed it.
    public var filters: [String] { fields.filters }
    public internal(set) var body: MessageBody {
        get { fields.body }
        set { fields = fields.with(body: newValue) }
    }
    var notes: MessageNotes { fields.notes }
    var failing: @Sendable (FreightError) -> Void { fields.failing }

    /// Fails the message for its sender with `error` (its reason, and the bytes this app acknowledged) and ends its
    /// body here: for an app that cannot handle what it reads, such as a write to a full disk.
    public func fail(_ error: FreightError) { failing(error) }

    /// The same message whose body is read at most `bytesPerSecond` on average (``MessageBody/paced(bytesPerSecond:)``).
    public func paced(bytesPerSecond: Int) -> IncomingMessage {
        var message = self
        message.body = body.paced(bytesPerSecond: bytesPerSecond)
        return message
    }

    /// Offsets at which the message resumed after a link on its way broke (docs/core.md); read it once the body is
    /// read.
    public var resumedAt: [UInt64] { notes.resumes }

    /// The name a body has while ``write(toFile:)`` writes it: hidden, in the same folder, so that the rename at the
    /// end is atomic and a file under its own name is always whole.
    public static func partialPath(for path: String) -> String {
        let slash = path.lastIndex(of: "/")
        let folder = slash.map { String(path[...$0]) } ?? ""
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        return "\(folder).\(name).freight-partial"
    }

    /// Writes the body to `path` (each chunk at its offset) and returns the byte count. The bytes go to a hidden
    /// partial file (``partialPath(for:)``) that takes the name `path` once the body ended, so a message that fails
    /// or stops never leaves a file that looks complete. A write that fails (a full disk) fails the message for its
    /// sender with the reason, and the partial file is removed.
    public func write(toFile path: String) async throws -> UInt64 {
        let partial = Self.partialPath(for: path)
        let fd = open(partial, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else {
            let error = FreightError(.io, "cannot create \(partial): \(String(cString: strerror(errno)))")
            fail(error)
            throw error
        }
        var isOpen = true
        var whole = false
        defer {
            if isOpen { close(fd) }
            if !whole { unlink(partial) }
        }
        var total: UInt64 = 0
        var allocation = FileAllocation(length: length)
        for try await chunk in body {
            // The file's blocks are allocated ahead of the writes, a stretch at a time: a full disk is found
            // before the bytes that would not fit, and a disk's file is laid out in long extents
            // (docs/small-messages-and-files.md, "Receiving").
            let code = allocation.ensure(fd: fd, through: chunk.offset + UInt64(chunk.count))
            guard code == 0 else {
                let error = FreightError(
                    .io,
                    "cannot write \(path) at offset \(allocation.allocatedEnd): \(String(cString: strerror(code)))")
                fail(error)
                throw error
            }
            var failedAt: UInt64 = 0
            let written = try chunk.withUnsafeBytes { raw -> Int in
                var done = 0
                while done < raw.count {
                    let n = pwrite(fd, raw.baseAddress! + done, raw.count - done, off_t(chunk.offset) + off_t(done))
                    if n <= 0 {
                        failedAt = chunk.offset + UInt64(done)
                        return -1
                    }
                    done += n
                }
                return done
            }
            guard written >= 0 else {
                let error = FreightError(
                    .io, "cannot write \(path) at offset \(failedAt): \(String(cString: strerror(errno)))")
                fail(error)
                throw error
            }
            total += UInt64(written)
        }
        if length == 0 { ftruncate(fd, 0) }
        isOpen = false
        guard close(fd) == 0, rename(partial, path) == 0 else {
            throw FreightError(.io, "cannot finish \(path): \(String(cString: strerror(errno)))")
        }
        whole = true
        return total
    }

    /// Collects the body in order into one buffer; refuses bodies over `limit` bytes.
    public func collect(upTo limit: Int) async throws -> ByteBuffer {
        guard length <= UInt64(limit) else {
            throw FreightError(.resourceExhausted, "message of \(length) bytes is over the \(limit)-byte limit")
        }
        var buffer = ByteBufferAllocator().buffer(capacity: Int(length))
        buffer.writeRepeatingByte(0, count: Int(length))
        for try await chunk in body {
            _ = try chunk.withUnsafeBytes { buffer.setBytes($0, at: Int(chunk.offset)) }
        }
        return buffer
    }

    /// Reads the whole body and checks it against a generated pattern; returns whether every byte matched.
    public func checkPattern(seed: UInt64) async throws -> Bool {
        var matches = true
        for try await chunk in body {
            let ok = try chunk.withUnsafeBytes {
                PatternFill.check($0, seed: seed, offset: Int64(chunk.offset))
            }
            if !ok { matches = false }
        }
        return matches
    }

    /// Reads and discards the body (it was still checked chunk by chunk).
    public func drain() async throws -> UInt64 {
        var total: UInt64 = 0
        for try await chunk in body { total += UInt64(chunk.count) }
        return total
    }
}

/// Where an output file's blocks are allocated: ahead of its writes, ``stretch`` at a time (`fallocate`).
struct FileAllocation {
    static let stretch: UInt64 = 64 << 20
    let length: UInt64
    private(set) var allocatedEnd: UInt64 = 0
    /// The filesystem cannot allocate ahead: the writes allocate as they go.
    private var unsupported = false

    init(length: UInt64) { self.length = length }

    /// Allocates through `end` (and a stretch past it, within the body); returns 0 or the errno of a failure that
    /// stops the writes (a full disk).
    mutating func ensure(fd: Int32, through end: UInt64) -> Int32 {
        guard !unsupported, end > allocatedEnd else { return 0 }
        let target = min(length, max(end, allocatedEnd + Self.stretch))
        let code = freight_fallocate(fd, off_t(allocatedEnd), off_t(target - allocatedEnd))
        if code == EOPNOTSUPP || code == ENOSYS || code == EINVAL {
            unsupported = true
            return 0
        }
        if code == EINTR { return 0 }
        guard code == 0 else { return code }
        allocatedEnd = target
        return 0
    }
}

/// The chunks of a message body. Taking a chunk tells the client the app holds it, which acknowledges it and
/// grants the sender more credit.
public struct MessageBody: AsyncSequence, Sendable {
    public typealias Element = BodyChunk
    /// The chunks as they arrive, or, for a message that came whole (a small one), its one chunk.
    let stream: AsyncThrowingStream<BodyChunk, any Error>?
    let whole: BodyChunk?
    let consumed: @Sendable (UInt64) -> Void
    var pace: PaceGate?

    init(stream: AsyncThrowingStream<BodyChunk, any Error>, consumed: @escaping @Sendable (UInt64) -> Void) {
        self.stream = stream
        self.whole = nil
        self.consumed = consumed
    }

    init(whole: BodyChunk?, consumed: @escaping @Sendable (UInt64) -> Void) {
        self.stream = nil
        self.whole = whole
        self.consumed = consumed
    }

    /// Whether the whole body is already here (a message that came small): reading it never waits for the sender,
    /// so an app may read it at once instead of in a task of its own. A message of the same size may come as
    /// chunks (from a shared buffer or a file, or past a full budget), and those wait for their sender.
    public var isWhole: Bool { stream == nil }

    /// The same body read at most `bytesPerSecond` on average: each chunk is taken (and so acknowledged and
    /// credited) once the rate allows, so the sender slows to it (`freight recv --rate`).
    public func paced(bytesPerSecond: Int) -> MessageBody {
        var body = self
        body.pace = PaceGate(Pace(bytesPerSecond: bytesPerSecond))
        return body
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<BodyChunk, any Error>.AsyncIterator?
        var whole: BodyChunk?
        let consumed: @Sendable (UInt64) -> Void
        let pace: PaceGate?
        /// The chunk the app took last: it is done with it when it asks for the next one (or for the end), and only
        /// then is it acknowledged, so the message's DONE means the app handled every byte.
        var taken: UInt64?

        public mutating func next() async throws -> BodyChunk? {
            if let taken {
                consumed(taken)
                self.taken = nil
            }
            let chunk: BodyChunk
            if var stream = base {
                guard let next = try await stream.next() else { return nil }
                base = stream
                chunk = next
            } else {
                guard let only = whole else { return nil }
                whole = nil
                chunk = only
            }
            if let pace { try await pace.wait(taking: chunk.count) }
            taken = chunk.offset
            return chunk
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: stream?.makeAsyncIterator(), whole: whole, consumed: consumed, pace: pace)
    }
}

/// A ``Pace`` shared by the iterators of one body.
final class PaceGate: Sendable {
    private let pace: Mutex<Pace>

    init(_ pace: Pace) { self.pace = Mutex(pace) }

    func wait(taking count: Int) async throws {
        let delay = pace.withLock { $0.delay(taking: count, at: .now) }
        if delay > .zero { try await Task.sleep(for: delay) }
    }
}

/// Messages arriving at one registered endpoint.
public struct Subscription: AsyncSequence, Sendable {
    public typealias Element = IncomingMessage
    public let endpointID: UInt64
    public let pattern: AddressPattern
    /// Messages come in batches (those of one frame): the stream's per-element work is paid per batch.
    let stream: AsyncThrowingStream<[IncomingMessage], any Error>
    let accepted: @Sendable (UInt64) -> Void
    let cancelled: @Sendable () -> Void

    /// Stops receiving: the endpoint is removed and the subscription ends.
    public func cancel() { cancelled() }

    /// What is left of the batch being taken, kept by the subscription rather than by one iterator: a loop that
    /// stops (`break`, `first(where:)`) and a later one go on from the same message, as with a stream of messages.
    let rest = Rest()

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<[IncomingMessage], any Error>.AsyncIterator
        let accepted: @Sendable (UInt64) -> Void
        let rest: Rest

        public mutating func next() async throws -> IncomingMessage? {
            var message = rest.next()
            while message == nil {
                guard let batch = try await base.next() else { return nil }
                message = rest.take(batch)
            }
            accepted(message!.id)
            return message
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: stream.makeAsyncIterator(), accepted: accepted, rest: rest)
    }

    /// The untaken messages of the last batch, in reverse (the next one last, so that each is moved out).
    final class Rest: Sendable {
        private let messages = Mutex<[IncomingMessage]>([])

        func next() -> IncomingMessage? { messages.withLock { $0.popLast() } }

        /// Keeps `batch` behind what is left and returns the next message.
        func take(_ batch: [IncomingMessage]) -> IncomingMessage? {
            messages.withLock { messages in
                messages.insert(contentsOf: batch.reversed(), at: 0)
                return messages.popLast()
            }
        }
    }
}

/// What the node tells an app about a message while its body arrives (it resumed after a broken link).
final class MessageNotes: Sendable {
    /// The notes of a message that is never resumed (a small one): never written.
    static let none = MessageNotes()

    private let state = Mutex<[UInt64]>([])
    /// A node's resume notice (at most `Limits.resumesRecordedMax` kept: notices come from the network).
    func resumed(at offset: UInt64) {
        state.withLock { if $0.count < Limits.resumesRecordedMax { $0.append(offset) } }
    }
    var resumes: [UInt64] { state.withLock { $0 } }
}

extension IncomingMessage {
    /// The message's trace context as a `ServiceContext`, through the bootstrapped instrument: start the span of
    /// handling it with it as the parent (`withSpan("...", context: message.serviceContext)`), and it joins the
    /// sender's trace.
    public var serviceContext: ServiceContext {
        var header = Freight_Wire_V1_MessageHeader()
        header.traceparent = traceparent
        header.tracestate = tracestate
        var context = ServiceContext.topLevel
        InstrumentationSystem.instrument.extract(header, into: &context, using: HeaderPropagation())
        return context
    }
}
