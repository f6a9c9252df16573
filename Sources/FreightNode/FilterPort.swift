import Foundation
import FreightCore
import FreightDirectory
import FreightFlow
import FreightFunctions
import FreightWire
import NIOCore
import NIOPosix

/// A WebAssembly filter attached to a pattern at a node (`freight node --filter PATTERN=MODULE[?CONFIG]`,
/// docs/functions.md): every message to an address the pattern matches runs through it once at this node.
public struct FilterAttachment: Sendable {
    public let pattern: AddressPattern
    public let module: FunctionModule
    /// The string after `?`, given to the module's `begin`.
    public let config: String

    public init(pattern: AddressPattern, module: FunctionModule, config: String = "") {
        self.pattern = pattern
        self.module = module
        self.config = config
    }

    /// `PATTERN=PATH[?CONFIG]`: reads and checks the module at PATH, granting it `capabilities`.
    public static func parse(
        _ text: String, capabilities: FunctionModule.Capabilities = [],
        fuelPerCall: UInt64 = Limits.functionFuelPerCall
    ) throws(FreightError) -> FilterAttachment {
        guard let equals = text.firstIndex(of: "="), equals != text.startIndex else {
            throw FreightError(.invalidArgument, "--filter \(text): use PATTERN=MODULE.wasm[?CONFIG]")
        }
        let pattern = try AddressPattern(String(text[..<equals]))
        var path = String(text[text.index(after: equals)...])
        var config = ""
        if let question = path.firstIndex(of: "?") {
            config = String(path[path.index(after: question)...])
            path = String(path[..<question])
        }
        guard config.utf8.count <= Limits.functionConfigBytesMax else {
            throw FreightError(
                .invalidArgument, "--filter \(text): the config is over \(Limits.functionConfigBytesMax) bytes")
        }
        guard let bytes = FileManager.default.contents(atPath: path) else {
            throw FreightError(.invalidArgument, "--filter \(text): cannot read \(path)")
        }
        let file = (path as NSString).lastPathComponent
        let name = file.split(separator: ".").first.map(String.init) ?? file
        let module = try FunctionModule(
            name: name, bytes: Array(bytes), capabilities: capabilities, fuelPerCall: fuelPerCall)
        return FilterAttachment(pattern: pattern, module: module, config: config)
    }

    public var description: String {
        "\(pattern)=\(module.name)\(config.isEmpty ? "" : "?\(config)") (sha256 \(module.digest.prefix(16)))"
    }
}

/// The node's filters (docs/functions.md, "Where a filter sits in the node"): one port that the flow table sees as
/// the only receiver of a message to filter (its first flow) and as the sender of what the filters make of it (a
/// second flow, under an id of its own, sent to the receivers chosen for the message). Credit,
/// acknowledged offsets and outcomes cross from one flow to the other through ``FilterOffsets``. Each module call
/// runs on a thread pool, one at a time per message, never on the node's loop: a slow module holds up no link or app,
/// only filtered messages waiting for a thread.
final class FilterPort: LocalPort, @unchecked Sendable {  // confined to the node's event loop
    unowned let engine: NodeEngine
    let portID: UInt64
    /// By the id of the message that came in (the first flow), and that id by the id of the one going out.
    private var messages: [UInt64: FilteredMessage] = [:]
    private var inputOf: [UInt64: UInt64] = [:]
    private let pool: NIOThreadPool

    init(engine: NodeEngine, portID: UInt64, pool: NIOThreadPool) {
        self.engine = engine
        self.portID = portID
        self.pool = pool
    }

    func deliver(_ frame: Frame) {
        switch frame {
        case .open(let open) where !open.resume:
            opened(open)
        case .open:
            // The upstream's link broke and it goes on from what this port acknowledged: chunks it took already
            // come again and are dropped.
            break
        case .data(let chunk):
            guard let message = messages[chunk.messageID] else { return }
            guard chunk.offset + UInt64(chunk.count) > message.nextInput else { return }
            message.early[chunk.offset] = chunk
            runNext(message)
        case .ack(let ack):
            guard let input = inputOf[ack.messageID], let message = messages[input] else { return }
            try? message.output.ack(acked: ack.ackedOffset, credit: ack.creditOffset)
            let held = message.offsets.outputAcknowledged(ack.ackedOffset)
            message.held = message.held.filter { $0.key + UInt64($0.value.count) > held }
            // A link on the way broke: the receivers want the output again from `resendFrom`.
            if ack.hasResendFrom { return restart(message, from: ack.resendFrom) }
            pump(message)
            tellUpstream(message)
        case .done(var done):
            // Every receiver of the filtered message holds it: so the message that came in is delivered.
            guard let input = inputOf.removeValue(forKey: done.messageID) else { return }
            messages[input] = nil
            done.messageID = input
            engine.flowFrame(.done(done), from: .local(portID))
        case .abort(let abort):
            if let input = inputOf.removeValue(forKey: abort.messageID) {
                // The filtered message failed on its way: so does the one that came in, with its reason.
                messages[input] = nil
                engine.flowFrame(.abort(input, abort.error), from: .local(portID))
            } else if let message = messages.removeValue(forKey: abort.messageID) {
                // The message that came in ended early: the filtered one ends too.
                inputOf[message.outputID] = nil
                if message.outputOpened {
                    engine.flowFrame(.abort(message.outputID, abort.error), from: .local(portID))
                }
            }
        default:
            break
        }
    }

    // MARK: Open

    private func opened(_ open: Freight_Wire_V1_Open) {
        let id = open.header.id
        guard messages[id] == nil else { return }
        let filters = engine.filters(for: open.header)
        guard messages.count < Limits.filteredMessagesMax, !filters.isEmpty else {
            let reason =
                filters.isEmpty
                ? FreightError(.noRoute, "node \(engine.name) has no filter for \(open.header.destination) any more")
                : FreightError(
                    .resourceExhausted,
                    "node \(engine.name) runs \(Limits.filteredMessagesMax) filtered messages at once already")
            return engine.flowFrame(.abort(id, reason), from: .local(portID))
        }
        let message = FilteredMessage(
            open: open, outputID: engine.localPorts.messageIDs.next(), filters: filters,
            chunkBytes: Int(
                open.header.chunkBytes > 0 ? open.header.chunkBytes : UInt32(engine.configuration.chunkBytes)))
        messages[id] = message
        inputOf[message.outputID] = id
        begin(message) { [self] filtered in openOutput(message, filtered) }
    }

    /// Starts the message's filters (`begin` of each, on the pool) with a fresh runner.
    private func begin(_ message: FilteredMessage, then next: @escaping @Sendable (FilterHeader) -> Void) {
        let midBody = message.generation > 0
        message.generation += 1
        message.runner = FilterRunner()
        message.running = true
        let (runner, generation, filters, node) = (message.runner, message.generation, message.filters, engine.name)
        let header = FilterHeader(
            length: message.open.header.length, attributes: message.open.header.attributes,
            filters: message.open.header.filters)
        pool.runIfActive(eventLoop: engine.eventLoop) { () throws -> FilterHeader in
            try runner.begin(filters, node: node, header: header, midBody: midBody)
        }.whenComplete { [self] result in
            guard messages[message.open.header.id] === message, message.generation == generation else { return }
            message.running = false
            switch result {
            case .success(let filtered): next(filtered)
            case .failure(let error): fail(message, error)
            }
        }
    }

    /// The receivers of the filtered message resume from output offset `output` after a link on the way broke: a
    /// resumable chain starts again with fresh instances at the last boundary at or below it, from the input the
    /// port still holds, and the output below `output` is made again and dropped. A chain that keeps state cannot
    /// start in the middle: the message fails, naming the filter (docs/functions.md, "Resume through a filter").
    private func restart(_ message: FilteredMessage, from output: UInt64) {
        let names = message.filters.map(\.module.name).joined(separator: ", ")
        guard message.filters.allSatisfy(\.module.resumable) else {
            return fail(
                message,
                FreightError(
                    .functionFailed,
                    "a link broke at offset \(output) after filter \(names) at node \(engine.name), which keeps state across chunks: the message cannot resume through it; send it again"
                ))
        }
        // Exactly where the receivers resume, back or forward: an earlier resume (a stripe lost, then the whole link)
        // may have gone back further than they need, and output sent under wrong offsets would be wrong bytes.
        var window = message.output
        window.resend(from: output)
        let from = window.nextOffset
        guard let point = message.offsets.resumePoint(output: from),
            point.input == message.nextInput
                || message.held.contains(where: {
                    $0.key <= point.input && $0.key + UInt64($0.value.count) > point.input
                })
        else {
            return fail(
                message,
                FreightError(
                    .functionFailed,
                    "node \(engine.name) no longer holds the input to resume filter \(names) at output offset \(from)"
                ))
        }
        engine.logger.debug(
            "message \(String(message.open.header.id, radix: 16)) resumes through \(names) at output \(from) (input \(point.input))"
        )
        for (offset, chunk) in message.held where offset + UInt64(chunk.count) > point.input {
            message.early[offset] = chunk
        }
        message.held = [:]
        message.nextInput = point.input
        message.produced = point.output
        message.skipOutput = from - point.output
        message.ended = false
        message.pending.clear()
        message.offsets.rewind(to: point)
        message.output = window
        begin(message) { [self] filtered in
            guard filtered.length == message.output.length else {
                return fail(
                    message,
                    FreightError(
                        .functionFailed,
                        "filter \(names) at node \(engine.name) declared \(filtered.length.map(String.init) ?? "no length") on resuming, \(message.output.length) before"
                    ))
            }
            runNext(message)
        }
    }

    /// Opens the filtered message: the header the filters gave, the receivers the message that came in had.
    private func openOutput(_ message: FilteredMessage, _ filtered: FilterHeader) {
        guard let length = filtered.length else {
            return fail(
                message,
                FreightError(
                    .functionFailed,
                    "a filter at node \(engine.name) cannot say the length of its output up front, which filters at nodes do not support yet"
                ))
        }
        var out = Freight_Wire_V1_Open()
        out.header = message.open.header
        out.header.id = message.outputID
        out.header.length = length
        out.header.attributes = filtered.attributes
        out.header.filters = filtered.filters
        out.header.chunkBytes = UInt32(message.chunkBytes)
        out.targets = message.open.targets
        // The path as the message came in: the table adds this node again as the filtered message opens.
        out.path = message.open.path.last == engine.name ? Array(message.open.path.dropLast()) : message.open.path
        out.destinations = message.open.destinations
        out.windowHint = message.open.windowHint
        message.open.targets = []  // kept for the plan only
        message.output = SendWindow(length: length, chunkBytes: UInt64(message.chunkBytes))
        message.offsets = FilterOffsets(inputLength: message.open.header.length, outputLength: length)
        message.outputOpened = true
        let opened = engine.flowTable.open(out, from: .local(portID), actions: &engine.flowActions) {
            [engine, portID] header, load throws(FreightError) in
            try engine.plan(header, open: out, from: .local(portID), load: load)
        }
        engine.performFlowActions()
        guard opened != nil, messages[message.open.header.id] === message else { return }
        engine.logger.debug(
            "message \(String(message.open.header.id, radix: 16)) to \(out.header.destination) runs through \(filtered.filters.suffix(from: message.open.header.filters.count).joined(separator: ", ")) as \(String(message.outputID, radix: 16)): \(message.open.header.length) bytes in, \(length) out"
        )
        if message.open.header.length == 0 { runNext(message) }
    }

    // MARK: Chunks

    /// Hands the next input chunk in order to the filters, once the call before it returned.
    private func runNext(_ message: FilteredMessage) {
        guard !message.running, message.outputOpened, !message.ended else { return }
        let length = message.open.header.length
        var found: DataChunk?
        if length > 0 {
            // The chunk that holds the next input byte: the one starting there, or one that a resend cut differently.
            guard
                let offset = message.early.keys.first(where: {
                    $0 <= message.nextInput && $0 + UInt64(message.early[$0]!.count) > message.nextInput
                })
            else { return }
            found = message.early.removeValue(forKey: offset)
            message.early = message.early.filter { $0.key + UInt64($0.value.count) > message.nextInput }
        }
        let chunk = found
        let skip = chunk.map { Int(message.nextInput - $0.offset) } ?? 0
        let end = chunk.map { $0.offset + UInt64($0.count) } ?? 0
        let last = end >= length
        // Kept until the receivers hold its output: a resume downstream may need it again, even while this call
        // runs (a resume drops what the call gives).
        if let chunk { message.held[chunk.offset] = chunk }
        message.running = true
        let (runner, generation) = (message.runner, message.generation)
        pool.runIfActive(eventLoop: engine.eventLoop) { () throws -> [UInt8] in
            try runner.handle(chunk, skipping: skip, last: last)
        }.whenComplete { [self] result in
            guard messages[message.open.header.id] === message, message.generation == generation else { return }
            message.running = false
            switch result {
            case .success(let output):
                message.nextInput = end
                message.produced += UInt64(output.count)
                guard message.produced <= message.output.length else {
                    return fail(
                        message,
                        FreightError(
                            .functionFailed,
                            "a filter at node \(engine.name) gave \(message.produced) bytes of output after declaring \(message.output.length)"
                        ))
                }
                // After a resume, output the receivers hold already is made again and dropped.
                let dropped = Int(min(UInt64(output.count), message.skipOutput))
                message.skipOutput -= UInt64(dropped)
                message.pending.writeBytes(output[dropped...])
                message.offsets.passed(input: end, output: message.produced)
                if last {
                    message.ended = true
                    guard message.produced == message.output.length else {
                        return fail(
                            message,
                            FreightError(
                                .functionFailed,
                                "a filter at node \(engine.name) gave \(message.produced) bytes of output after declaring \(message.output.length)"
                            ))
                    }
                }
                pump(message)
                tellUpstream(message)
                runNext(message)
            case .failure(let error):
                fail(message, error)
            }
        }
    }

    /// Sends the output the filters made, within the credit its receivers gave.
    private func pump(_ message: FilteredMessage) {
        // After a resume, acknowledgements of bytes sent before it can move the window past the output waiting here
        // (the receivers hold those bytes already): what they cover is dropped, so every byte goes out under its own
        // offset.
        let pendingStart = message.produced + message.skipOutput - UInt64(message.pending.readableBytes)
        if message.output.nextOffset > pendingStart {
            let ahead = message.output.nextOffset - pendingStart
            let dropped = min(Int(clamping: ahead), message.pending.readableBytes)
            message.pending.moveReaderIndex(forwardBy: dropped)
            message.skipOutput += ahead - UInt64(dropped)
        }
        while message.pending.readableBytes > 0 {
            let count = min(message.pending.readableBytes, message.chunkBytes, Int(message.output.available))
            let start = message.produced + message.skipOutput - UInt64(message.pending.readableBytes)
            guard count > 0, message.output.nextOffset == start, let next = message.output.take(UInt64(count)),
                let bytes = message.pending.readSlice(length: count)
            else { break }
            let chunk = DataChunk(
                messageID: message.outputID, offset: next.offset, crc32c: CRC32C.checksum(bytes), isLast: next.isLast,
                bytes: bytes)
            engine.flowFrame(.data(chunk), from: .local(portID))
            guard messages[message.open.header.id] === message else { return }
        }
        if message.pending.readableBytes == 0 { message.pending.clear() }
    }

    /// Acknowledges upstream the input whose output the receivers hold, and gives it credit for what the output's
    /// credit will take (``FilterOffsets``).
    private func tellUpstream(_ message: FilteredMessage) {
        let acked = message.offsets.acknowledged.input
        let credit = max(
            message.creditGiven,
            message.offsets.inputCredit(
                outputCredit: message.output.creditOffset, windowBytes: UInt64(engine.configuration.windowBytes)))
        guard acked > message.ackedGiven || credit > message.creditGiven else { return }
        message.ackedGiven = acked
        message.creditGiven = credit
        engine.flowFrame(.ack(message.open.header.id, acked: acked, credit: credit), from: .local(portID))
    }

    /// The filters failed on this message (a trap, fuel or memory spent, a broken promise): it fails on both sides,
    /// with the module's reason, and the node goes on.
    private func fail(_ message: FilteredMessage, _ error: any Error) {
        let reason =
            (error as? FreightError)
            ?? FreightError(.functionFailed, "a filter at node \(engine.name) failed: \(error)")
        let id = message.open.header.id
        messages[id] = nil
        inputOf[message.outputID] = nil
        engine.logger.notice(
            "message \(String(id, radix: 16)) to \(message.open.header.destination): \(reason.message)")
        if message.outputOpened {
            engine.flowFrame(.abort(message.outputID, reason), from: .local(portID))
        }
        engine.flowFrame(.abort(id, reason), from: .local(portID))
    }
}

/// One message through the node's filters: the message that came in, the one going out, and what joins them.
final class FilteredMessage: @unchecked Sendable {  // confined to the node's event loop
    var open: Freight_Wire_V1_Open
    let outputID: UInt64
    let filters: [FilterAttachment]
    let chunkBytes: Int
    /// The instances of the filters now; a resume starts a fresh runner, and results of an older one (a newer
    /// generation began since) are dropped.
    var runner = FilterRunner()
    var generation = 0
    var offsets = FilterOffsets(inputLength: 0, outputLength: 0)
    var output = SendWindow(length: 0, chunkBytes: 1)
    var outputOpened = false
    /// Input chunks not yet handed to the filters, by offset (a striped message's come out of order).
    var early: [UInt64: DataChunk] = [:]
    /// Input chunks the filters took whose output the receivers do not hold yet, by offset.
    var held: [UInt64: DataChunk] = [:]
    var nextInput: UInt64 = 0
    var produced: UInt64 = 0
    /// Output still to drop after a resume: the receivers hold it.
    var skipOutput: UInt64 = 0
    /// Output made and not yet sent: what the receivers' credit does not cover yet.
    var pending = ByteBuffer()
    var running = false
    var ended = false
    var ackedGiven: UInt64 = 0
    var creditGiven: UInt64 = 0

    init(open: Freight_Wire_V1_Open, outputID: UInt64, filters: [FilterAttachment], chunkBytes: Int) {
        self.open = open
        self.outputID = outputID
        self.filters = filters
        self.chunkBytes = chunkBytes
    }
}

/// The filters of one message, called on the thread pool: one call at a time, the next only after the one before
/// returned to the node's loop.
final class FilterRunner: @unchecked Sendable {
    private var chain = FilterChain([])

    /// Begins the filters; `midBody` after a resume (``MessageFilter/goesOnMidBody()``).
    func begin(_ filters: [FilterAttachment], node: String, header: FilterHeader, midBody: Bool) throws
        -> FilterHeader
    {
        chain = FilterChain(
            try filters.map { attachment throws(FreightError) in
                try WasmFilter(attachment.module, node: node, config: attachment.config)
            })
        var header = header
        try chain.begin(&header)
        if midBody { chain.goesOnMidBody() }
        return header
    }

    /// Checks the chunk's CRC32C, passes its bytes from `skipping` on through the filters, and ends them after
    /// the last: the output they gave.
    func handle(_ chunk: DataChunk?, skipping: Int, last: Bool) throws -> [UInt8] {
        var output: [UInt8] = []
        if let chunk {
            guard chunk.checksumMatches else {
                throw FreightError(
                    .checksumMismatch, "the chunk at offset \(chunk.offset) failed its CRC32C check before the filter")
            }
            let joined = chunk.joined
            let input = Array(joined.readableBytesView.dropFirst(skipping))
            try chain.handle(input) { bytes throws(FreightError) in output.append(contentsOf: bytes) }
        }
        if last { try chain.end { bytes throws(FreightError) in output.append(contentsOf: bytes) } }
        return output
    }
}
