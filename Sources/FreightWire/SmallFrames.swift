import FreightCore
import NIOCore

/// A whole message in a SMALL frame (docs/wire-protocol.md, "SMALL and OUTCOMES"): its header, the endpoint its
/// sender's node chose, the nodes it passed, and its body with the body's CRC32C.
///
/// The header is kept as the fields every message sets (id, source, destination; its length is the body's) and
/// the rest encoded once in a ``SmallExtras`` that the messages carrying the same ones share: a message is then
/// small to move and cheap to copy, and a node passes the rest on as the bytes it read (perf: copies and moves of
/// whole headers were 5% of a run of small messages).
public struct SmallMessage: Sendable {
    public var id: UInt64
    public var source: String
    public var destination: String
    /// The header's other fields (content type, attributes, trace context, reply address, filters); nil when it
    /// sets none.
    public var extras: SmallExtras?
    public var targetNode: String
    public var targetID: UInt64
    public var path: [String]
    public var body: ByteBuffer
    public var crc32c: UInt32

    /// `header.length` is taken to be the body's size; `chunk_bytes` is not carried.
    public init(
        header: Freight_Wire_V1_MessageHeader, targetNode: String = "", targetID: UInt64 = 0, path: [String] = [],
        body: ByteBuffer, crc32c: UInt32
    ) {
        self.init(
            id: header.id, source: header.source, destination: header.destination,
            extras: SmallExtras(header), targetNode: targetNode, targetID: targetID, path: path, body: body,
            crc32c: crc32c)
    }

    public init(
        id: UInt64, source: String, destination: String, extras: SmallExtras?, targetNode: String = "",
        targetID: UInt64 = 0, path: [String] = [], body: ByteBuffer, crc32c: UInt32
    ) {
        self.id = id
        self.source = source
        self.destination = destination
        self.extras = extras
        self.targetNode = targetNode
        self.targetID = targetID
        self.path = path
        self.body = body
        self.crc32c = crc32c
    }

    /// The body's size.
    public var length: UInt64 { UInt64(body.readableBytes) }

    /// The whole header, made from its parts.
    public var header: Freight_Wire_V1_MessageHeader {
        var header = extras?.header ?? Freight_Wire_V1_MessageHeader()
        header.id = id
        header.source = source
        header.destination = destination
        header.length = length
        return header
    }

    /// The trace context it carries, or "".
    public var traceparent: String { extras?.header.traceparent ?? "" }

    /// Bytes of the whole header encoded as protobuf (what an OPEN would carry of it): the extra fields' bytes and
    /// the fields every message sets.
    public var headerBytes: Int {
        func field(_ count: Int) -> Int { count == 0 ? 0 : 1 + SmallExtras.varintBytes(UInt64(count)) + count }
        return (extras?.bytes?.count ?? 0) + (id == 0 ? 0 : 9) + field(source.utf8.count)
            + field(destination.utf8.count) + (length == 0 ? 0 : 1 + SmallExtras.varintBytes(length))
    }
}

/// The header fields of a small message beyond id, source, destination and length, and their encoding: made once
/// for the messages of a sender (or of a frame) that carry the same ones, and shared by them.
public final class SmallExtras: Sendable {
    /// A header with only these fields set.
    public let header: Freight_Wire_V1_MessageHeader
    /// Their protobuf encoding, as SMALL carries it; nil when they could not be encoded (the message then fails to
    /// encode, with the reason).
    public let bytes: [UInt8]?

    /// The extra fields of `header`, or nil when it sets none.
    public convenience init?(_ header: Freight_Wire_V1_MessageHeader) {
        guard Self.hasExtras(header) else { return nil }
        var extra = header
        extra.id = 0
        extra.source = ""
        extra.destination = ""
        extra.length = 0
        extra.chunkBytes = 0
        self.init(header: extra, bytes: try? extra.serializedBytes())
    }

    init(header: Freight_Wire_V1_MessageHeader, bytes: [UInt8]?) {
        self.header = header
        self.bytes = bytes
    }

    /// `last` when it holds the same extra fields as `header` (a sender's messages mostly do), else new ones.
    public static func reusing(_ last: SmallExtras?, for header: Freight_Wire_V1_MessageHeader) -> SmallExtras? {
        guard hasExtras(header) else { return nil }
        if let last, same(last.header, header) { return last }
        return SmallExtras(header)
    }

    /// Whether a header sets any field beyond id, source, destination, length and chunk size.
    static func hasExtras(_ header: Freight_Wire_V1_MessageHeader) -> Bool {
        !(header.contentType.isEmpty && header.attributes.isEmpty && header.traceparent.isEmpty
            && header.tracestate.isEmpty && header.deadlineUnixNanos == 0 && header.priority == 0
            && header.replyTo.isEmpty && header.filters.isEmpty && header.unknownFields.data.isEmpty)
    }

    /// Whether two headers agree on every extra field.
    static func same(_ a: Freight_Wire_V1_MessageHeader, _ b: Freight_Wire_V1_MessageHeader) -> Bool {
        a.contentType == b.contentType && a.traceparent == b.traceparent && a.tracestate == b.tracestate
            && a.deadlineUnixNanos == b.deadlineUnixNanos && a.priority == b.priority && a.replyTo == b.replyTo
            && a.attributes == b.attributes && a.filters == b.filters && a.unknownFields == b.unknownFields
    }

    static func varintBytes(_ value: UInt64) -> Int { max(1, (64 - value.leadingZeroBitCount + 6) / 7) }
}

/// What became of a small message, flowing back the way it came in an OUTCOMES frame.
public struct SmallOutcome: Sendable {
    public enum Kind: UInt8, Sendable {
        /// The receiving app took the message whole and checked.
        case delivered = 0
        /// `code` and `reason` say why; nothing more comes of it.
        case failed = 1
        /// Not taken as a small message on some hop (no room in a budget, several receivers, a receiver that takes
        /// no SMALL): nothing was delivered, and the sender sends it again as OPEN and DATA.
        case resend = 2
    }

    public var messageID: UInt64
    public var kind: Kind
    public var code: UInt32 = 0
    public var reason: String = ""
    /// Who took it (when delivered): endpoint, the address it registered, the app, the nodes on the way.
    public var delivery = Freight_Wire_V1_Delivery()

    public init(_ messageID: UInt64, _ kind: Kind) {
        self.messageID = messageID
        self.kind = kind
    }

    public init(_ messageID: UInt64, failed error: FreightError) {
        self.init(messageID, .failed)
        code = error.code.rawValue
        reason = Self.bounded(error.message)
    }

    /// `text` cut to `Limits.outcomeReasonBytesMax` bytes, at a character's boundary.
    public static func bounded(_ text: String) -> String {
        guard text.utf8.count > Limits.outcomeReasonBytesMax else { return text }
        var cut = ""
        for character in text {
            guard cut.utf8.count + character.utf8.count <= Limits.outcomeReasonBytesMax else { break }
            cut.append(character)
        }
        return cut
    }

    public var error: FreightError { FreightError(.init(rawValue: code), reason) }
}

/// The binary layout of SMALL and OUTCOMES payloads: fixed-size fields big-endian; every string once per frame, in a
/// table at its start (u16 count, then each as a u16 length and UTF-8 bytes), which entries name by a u16 index.
/// Protobuf and a string per field cost more than the rest of a small message's trip through a node (perf), and the
/// messages of one batch mostly share their strings (source, destination, the nodes on the way). Like SHARED and
/// RELEASE, these two frames are plain binary.
///
///     SMALL entry:    u64 id, u32 crc32c, u32 body length, u64 target endpoint id, u16 extra header length,
///                     u8 path count, u16 source, u16 destination, u16 target node, u16 path node…,
///                     extra header (a MessageHeader protobuf of the fields besides id, source, destination and
///                     length: content type, attributes, trace context, deadline, priority, reply-to; empty when
///                     they are all unset), body
///     OUTCOMES entry: u64 id, u8 kind, u32 code, u64 endpoint id, u8 path count, u16 reason, u16 endpoint node,
///                     u16 address, u16 app, u16 path node…
public enum SmallFrames {
    /// Nodes named in one entry's path.
    public static let pathEntriesMax = 64

    /// Encodes a SMALL frame whose payload is at most `payloadBytesMax` (what the receiver takes), or throws.
    public static func encode(
        _ messages: [SmallMessage], into buffer: inout ByteBuffer, payloadBytesMax: Int = Limits.smallFrameBytesMax
    ) throws(FreightError) {
        var outOfLine: [OutOfLineBody]? = nil
        try encode(messages, into: &buffer, payloadBytesMax: payloadBytesMax, outOfLine: &outOfLine)
    }

    /// A body a SMALL frame carries but `buffer` does not hold: it goes between `buffer`'s bytes before `offset` and
    /// those from `offset` on.
    public struct OutOfLineBody: Sendable {
        public var offset: Int
        public var body: ByteBuffer
    }

    /// Bodies from this size on stay out of line when the caller takes them so (``encode(_:into:payloadBytesMax:outOfLine:)``):
    /// a copy into the frame costs the writer more than a buffer of its own in the same writev (perf, 64 KiB node
    /// to node: the copy was a tenth of the sending node's time); smaller ones are cheaper copied.
    public static let outOfLineBodyBytesMin = 16 * 1024

    /// Encodes a SMALL frame as above; when `outOfLine` is not nil, bodies of `outOfLineBodyBytesMin` or more are
    /// not copied into `buffer` but listed there, in order, with where each goes, as long as the storage they keep
    /// alive beyond their own bytes (``HeldPieces/keptAliveBytes(of:)``) stays within `keptAliveBytesMax` in all;
    /// the others are copied.
    public static func encode(
        _ messages: [SmallMessage], into buffer: inout ByteBuffer, payloadBytesMax: Int,
        outOfLine: inout [OutOfLineBody]?, keptAliveBytesMax: Int = .max
    ) throws(FreightError) {
        // Through the list's storage: an element read from an Array is copied out (a retain and a release of its
        // header's strings, path and body), one read from its buffer is borrowed (perf: those copies cost more than
        // the encoding).
        try messages.withUnsafeBufferPointer { (messages) throws(FreightError) in
            try encode(
                messages, into: &buffer, payloadBytesMax: min(payloadBytesMax, Limits.smallFrameBytesMax),
                outOfLine: &outOfLine, keptAliveBytesMax: keptAliveBytesMax)
        }
    }

    /// The bytes of a frame encoded with bodies out of line, in the order they go on the wire: slices of `head`
    /// (no copy) with each body between them.
    public static func pieces(of head: ByteBuffer, _ outOfLine: [OutOfLineBody]) -> [ByteBuffer] {
        var pieces: [ByteBuffer] = []
        pieces.reserveCapacity(outOfLine.count * 2 + 1)
        var from = head.readerIndex
        for entry in outOfLine {
            if entry.offset > from { pieces.append(head.getSlice(at: from, length: entry.offset - from)!) }
            pieces.append(entry.body)
            from = entry.offset
        }
        if head.writerIndex > from { pieces.append(head.getSlice(at: from, length: head.writerIndex - from)!) }
        return pieces
    }

    private static func encode(
        _ messages: UnsafeBufferPointer<SmallMessage>, into buffer: inout ByteBuffer, payloadBytesMax: Int,
        outOfLine: inout [OutOfLineBody]?, keptAliveBytesMax: Int
    ) throws(FreightError) {
        var strings = StringTable()
        // Each entry's string indices, in the order they are written.
        var refs: [UInt16] = []
        refs.reserveCapacity(messages.count * 4)
        var size = 0
        for index in messages.indices {
            let pathCount = messages[index].path.count
            guard pathCount <= pathEntriesMax else {
                throw FreightError(.resourceExhausted, "a small message names too many nodes")
            }
            refs.append(strings.add(messages[index].source))
            refs.append(strings.add(messages[index].destination))
            refs.append(strings.add(messages[index].targetNode))
            for node in messages[index].path { refs.append(strings.add(node)) }
            var extraCount = 0
            if let extras = messages[index].extras {
                guard let bytes = extras.bytes else {
                    throw FreightError(.internalError, "cannot encode a small message's header")
                }
                guard bytes.count <= Int(UInt16.max) else {
                    throw FreightError(.resourceExhausted, "a small message's header is too large for a SMALL frame")
                }
                extraCount = bytes.count
            }
            size += 32 + 2 * (3 + pathCount) + extraCount + messages[index].body.readableBytes
        }
        let splits = outOfLine != nil
        var outOfLineBytes = 0
        // Which bodies go out of line: decided in order, the same way here and as the entries are written.
        var allowance = keptAliveBytesMax
        func goesOutOfLine(_ body: ByteBuffer, within allowance: inout Int) -> Bool {
            guard splits && body.readableBytes >= outOfLineBodyBytesMin else { return false }
            let kept = HeldPieces.keptAliveBytes(of: body)
            guard kept <= allowance else { return false }
            allowance -= kept
            return true
        }
        var outOfLineAhead = 0
        for index in messages.indices where goesOutOfLine(messages[index].body, within: &allowance) {
            outOfLineAhead += messages[index].body.readableBytes
        }
        allowance = keptAliveBytesMax
        let inLine = size - outOfLineAhead
        let start = try open(
            .small, strings, entryBytes: size, reserving: inLine, limit: payloadBytesMax, into: &buffer)
        let listed = outOfLine?.count ?? 0
        var next = 0
        for index in messages.indices {
            // The fixed fields and string indices in one write: each ByteBuffer.writeInteger pays a capacity check
            // and an exclusivity check, which together cost more than the bytes (perf).
            let pathCount = messages[index].path.count
            let fixed = smallEntryFixedBytes + 2 * (3 + pathCount)
            let extra = messages[index].extras?.bytes ?? []
            let extraCount = extra.count
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: fixed) { raw in
                var fields = FieldWriter(raw)
                fields.put(messages[index].id)
                fields.put(messages[index].crc32c)
                fields.put(UInt32(messages[index].body.readableBytes))
                fields.put(messages[index].targetID)
                fields.put(UInt16(extraCount))
                fields.put(UInt8(pathCount))
                for _ in 0..<(3 + pathCount) {
                    fields.put(refs[next])
                    next += 1
                }
                return fixed
            }
            if extraCount > 0 { buffer.writeBytes(extra) }
            let body = messages[index].body
            if goesOutOfLine(body, within: &allowance) {
                outOfLine!.append(OutOfLineBody(offset: buffer.writerIndex, body: body))
                outOfLineBytes += body.readableBytes
            } else {
                buffer.writeImmutableBuffer(body)
            }
        }
        do {
            try close(from: start, outOfLineBytes: outOfLineBytes, limit: payloadBytesMax, in: &buffer)
        } catch {
            outOfLine?.removeSubrange(listed...)
            throw error
        }
    }

    public static func encode(_ outcomes: [SmallOutcome], into buffer: inout ByteBuffer) throws(FreightError) {
        // Through the list's storage, as messages are (above).
        try outcomes.withUnsafeBufferPointer { (outcomes) throws(FreightError) in
            try encode(outcomes, into: &buffer)
        }
    }

    private static func encode(_ outcomes: UnsafeBufferPointer<SmallOutcome>, into buffer: inout ByteBuffer)
        throws(FreightError)
    {
        var strings = StringTable()
        var size = 0
        var refs: [UInt16] = []
        refs.reserveCapacity(outcomes.count * 4)
        for index in outcomes.indices {
            let pathCount = outcomes[index].delivery.path.count
            guard pathCount <= pathEntriesMax else {
                throw FreightError(.resourceExhausted, "an outcome names too many nodes")
            }
            refs.append(strings.add(outcomes[index].reason))
            refs.append(strings.add(outcomes[index].delivery.endpoint.node))
            refs.append(strings.add(outcomes[index].delivery.address))
            refs.append(strings.add(outcomes[index].delivery.app))
            for node in outcomes[index].delivery.path { refs.append(strings.add(node)) }
            size += 22 + 2 * (4 + pathCount)
        }
        let start = try open(
            .outcomes, strings, entryBytes: size, reserving: size, limit: Limits.controlFrameBytesMax, into: &buffer)
        var next = 0
        for index in outcomes.indices {
            let pathCount = outcomes[index].delivery.path.count
            let fixed = outcomeEntryFixedBytes + 2 * (4 + pathCount)
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: fixed) { raw in
                var fields = FieldWriter(raw)
                fields.put(outcomes[index].messageID)
                fields.put(outcomes[index].kind.rawValue)
                fields.put(outcomes[index].code)
                fields.put(outcomes[index].delivery.endpoint.id)
                fields.put(UInt8(pathCount))
                for _ in 0..<(4 + pathCount) {
                    fields.put(refs[next])
                    next += 1
                }
                return fixed
            }
        }
        try close(from: start, limit: Limits.controlFrameBytesMax, in: &buffer)
    }

    public static func decodeSmall(_ payload: ByteBuffer) throws(FrameParser.ParseError) -> [SmallMessage] {
        try decodeSmall(cursor: payload)
    }

    /// A SMALL frame's payload as the pieces it arrived in: bodies that lie in one piece are slices of it.
    public static func decodeSmall(pieces: [ByteBuffer]) throws(FrameParser.ParseError) -> [SmallMessage] {
        try decodeSmall(cursor: PieceCursor(pieces))
    }

    private static func decodeSmall<Payload: PayloadCursor>(cursor payload: Payload) throws(FrameParser.ParseError)
        -> [SmallMessage]
    {
        var payload = payload
        let strings = try readTable(&payload, .small)
        var messages: [SmallMessage] = []
        var lastPath = PathMemo()
        // The extra fields decoded last, by their bytes: the next message's are most often the same, and then share
        // them.
        var last: (bytes: ByteBuffer, extras: SmallExtras?)?
        while payload.readableBytes > 0 {
            guard let entry = payload.peek(smallEntryFixedBytes, { raw in SmallEntry(raw) }) ?? nil else {
                throw malformed(.small, "an entry is cut short")
            }
            payload.skip(smallEntryFixedBytes)
            let (id, crc, length, targetID) = (entry.id, entry.crc32c, entry.length, entry.targetID)
            let (extraLength, pathCount) = (entry.extraLength, entry.pathCount)
            guard pathCount <= pathEntriesMax else { throw malformed(.small, "\(pathCount) nodes in a path") }
            let named = try names(&payload, fixed: 3, pathCount: Int(pathCount), strings, &lastPath, .small)
            let (source, destination, targetNode, _) = named.fields
            var extras: SmallExtras?
            if extraLength > 0 {
                guard let extra = payload.nextSlice(length: Int(extraLength)) else {
                    throw malformed(.small, "a header is cut short")
                }
                if let last, last.bytes == extra {
                    extras = last.extras
                } else {
                    var header: Freight_Wire_V1_MessageHeader
                    do {
                        header = try Freight_Wire_V1_MessageHeader(serializedBytes: [UInt8](extra.readableBytesView))
                    } catch {
                        throw malformed(.small, "a header does not decode: \(error)")
                    }
                    // Only the extra fields: the others are the entry's own.
                    header.id = 0
                    header.source = ""
                    header.destination = ""
                    header.length = 0
                    header.chunkBytes = 0
                    // Bytes that set no extra field leave the message none.
                    extras =
                        SmallExtras.hasExtras(header)
                        ? SmallExtras(header: header, bytes: try? header.serializedBytes()) : nil
                    last = (extra, extras)
                }
            }
            guard let body = payload.nextSlice(length: Int(length)) else {
                throw malformed(.small, "a body is cut short")
            }
            messages.append(
                SmallMessage(
                    id: id, source: source, destination: destination, extras: extras, targetNode: targetNode,
                    targetID: targetID, path: named.path, body: body, crc32c: crc))
        }
        guard !messages.isEmpty else { throw malformed(.small, "no message") }
        return messages
    }

    public static func decodeOutcomes(_ payload: ByteBuffer) throws(FrameParser.ParseError) -> [SmallOutcome] {
        var payload = payload
        let strings = try readTable(&payload, .outcomes)
        var outcomes: [SmallOutcome] = []
        var lastPath = PathMemo()
        while payload.readableBytes > 0 {
            guard let entry = payload.withUnsafeReadableBytes({ raw in OutcomeEntry(raw) }) else {
                throw malformed(.outcomes, "an entry is cut short")
            }
            payload.moveReaderIndex(forwardBy: outcomeEntryFixedBytes)
            guard let kind = SmallOutcome.Kind(rawValue: entry.kind) else {
                throw malformed(.outcomes, "unknown outcome \(entry.kind)")
            }
            guard entry.pathCount <= pathEntriesMax else {
                throw malformed(.outcomes, "\(entry.pathCount) nodes in a path")
            }
            let named = try names(&payload, fixed: 4, pathCount: Int(entry.pathCount), strings, &lastPath, .outcomes)
            var outcome = SmallOutcome(entry.id, kind)
            outcome.code = entry.code
            outcome.reason = named.fields.0
            outcome.delivery.endpoint.id = entry.endpointID
            outcome.delivery.endpoint.node = named.fields.1
            outcome.delivery.address = named.fields.2
            outcome.delivery.app = named.fields.3
            if entry.pathCount > 0 { outcome.delivery.path = named.path }
            outcomes.append(outcome)
        }
        guard !outcomes.isEmpty else { throw malformed(.outcomes, "no outcome") }
        return outcomes
    }

    // MARK: Pieces

    /// The strings of one frame, each once, in the order first seen.
    /// A frame's strings, each once. A frame names few (its senders, addresses, nodes, reasons): up to
    /// ``scannedMax`` are found by comparing, which costs less than hashing each; past that, by a dictionary.
    struct StringTable {
        static let scannedMax = 16
        var strings: [String] = []
        var indices: [String: UInt16] = [:]
        var bytes = 2

        /// Adds `text` unless the table has it; returns its index.
        mutating func add(_ text: String) -> UInt16 {
            if strings.count <= Self.scannedMax {
                for index in strings.indices.reversed() where strings[index] == text { return UInt16(index) }
                if strings.count == Self.scannedMax {
                    for (index, known) in strings.enumerated() { indices[known] = UInt16(index) }
                }
            } else if let index = indices[text] {
                return index
            }
            let index = UInt16(truncatingIfNeeded: strings.count)
            if strings.count >= Self.scannedMax { indices[text] = index }
            strings.append(text)
            bytes += 2 + text.utf8.count
            return index
        }
    }

    /// Writes the frame header (its length set by ``close(from:outOfLineBytes:limit:in:)``) and the string table; returns where the
    /// frame starts.
    private static func open(
        _ type: WireV1.FrameType, _ strings: StringTable, entryBytes: Int, reserving inLineBytes: Int, limit: Int,
        into buffer: inout ByteBuffer
    ) throws(FreightError) -> Int {
        let payload = strings.bytes + entryBytes
        guard payload <= limit, strings.strings.count <= Int(UInt16.max) else {
            throw FreightError(.resourceExhausted, "a frame of \(payload) bytes is over the \(limit)-byte limit")
        }
        buffer.reserveCapacity(minimumWritableBytes: WireV1.frameHeaderBytes + strings.bytes + inLineBytes)
        let start = buffer.writerIndex
        buffer.writeInteger(UInt32(0))
        buffer.writeInteger(type.rawValue)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(UInt16(strings.strings.count))
        for text in strings.strings {
            guard text.utf8.count <= Int(UInt16.max) else {
                throw FreightError(.resourceExhausted, "a string of \(text.utf8.count) bytes in a \(type) frame")
            }
            buffer.writeInteger(UInt16(text.utf8.count))
            buffer.writeString(text)
        }
        return start
    }

    private static func readTable<Payload: PayloadCursor>(_ payload: inout Payload, _ type: WireV1.FrameType)
        throws(FrameParser.ParseError) -> [String]
    {
        guard let count = payload.nextInteger(as: UInt16.self) else { throw malformed(type, "no string table") }
        var strings: [String] = []
        strings.reserveCapacity(Int(count))
        for _ in 0..<count {
            guard let length = payload.nextInteger(as: UInt16.self),
                let text = payload.nextString(length: Int(length))
            else { throw malformed(type, "a string is cut short") }
            strings.append(text)
        }
        return strings
    }

    /// The path an entry of a frame named last, by its string indices: the entries of one frame have mostly passed
    /// the same nodes, and one list serves them all (no list made, and no name retained, per entry).
    private struct PathMemo {
        var indices: [UInt16] = []
        var path: [String] = []
    }

    /// The strings an entry names by index: `fixed` (at most 4) fields, then `pathCount` nodes.
    private static func names<Payload: PayloadCursor>(
        _ payload: inout Payload, fixed: Int, pathCount: Int, _ strings: [String], _ lastPath: inout PathMemo,
        _ type: WireV1.FrameType
    ) throws(FrameParser.ParseError) -> (fields: (String, String, String, String), path: [String]) {
        let count = fixed + pathCount
        var fields = ("", "", "", "")
        var path: [String] = []
        let outOfRange: Int? = payload.peek(2 * count) { raw in
            var reader = FieldReader(raw)
            for position in 0..<fixed {
                let index = Int(reader.take(UInt16.self))
                guard index < strings.count else { return index }
                switch position {
                case 0: fields.0 = strings[index]
                case 1: fields.1 = strings[index]
                case 2: fields.2 = strings[index]
                default: fields.3 = strings[index]
                }
            }
            guard pathCount > 0 else { return -1 }
            var same = pathCount == lastPath.indices.count
            var check = reader
            for position in 0..<pathCount where same {
                same = check.take(UInt16.self) == lastPath.indices[position]
            }
            if same {
                path = lastPath.path
                return -1
            }
            path.reserveCapacity(pathCount)
            lastPath.indices.removeAll(keepingCapacity: true)
            for _ in 0..<pathCount {
                let index = reader.take(UInt16.self)
                guard Int(index) < strings.count else { return Int(index) }
                path.append(strings[Int(index)])
                lastPath.indices.append(index)
            }
            lastPath.path = path
            return -1
        }
        guard let outOfRange else { throw malformed(type, "an entry is cut short") }
        guard outOfRange < 0 else {
            lastPath = PathMemo()
            throw malformed(type, "string \(outOfRange) of \(strings.count)")
        }
        payload.skip(2 * count)
        return (fields, path)
    }

    /// Bytes of a SMALL entry before its string indices: id, CRC32C, body length, target id, extra header length,
    /// path count.
    static let smallEntryFixedBytes = 8 + 4 + 4 + 8 + 2 + 1
    /// Bytes of an OUTCOMES entry before its string indices: id, kind, code, endpoint id, path count.
    static let outcomeEntryFixedBytes = 8 + 1 + 4 + 8 + 1

    private struct SmallEntry {
        var id: UInt64, crc32c: UInt32, length: UInt32, targetID: UInt64, extraLength: UInt16, pathCount: UInt8

        init?(_ raw: UnsafeRawBufferPointer) {
            guard raw.count >= SmallFrames.smallEntryFixedBytes else { return nil }
            var fields = FieldReader(raw)
            id = fields.take(UInt64.self)
            crc32c = fields.take(UInt32.self)
            length = fields.take(UInt32.self)
            targetID = fields.take(UInt64.self)
            extraLength = fields.take(UInt16.self)
            pathCount = fields.take(UInt8.self)
        }
    }

    private struct OutcomeEntry {
        var id: UInt64, kind: UInt8, code: UInt32, endpointID: UInt64, pathCount: UInt8

        init?(_ raw: UnsafeRawBufferPointer) {
            guard raw.count >= SmallFrames.outcomeEntryFixedBytes else { return nil }
            var fields = FieldReader(raw)
            id = fields.take(UInt64.self)
            kind = fields.take(UInt8.self)
            code = fields.take(UInt32.self)
            endpointID = fields.take(UInt64.self)
            pathCount = fields.take(UInt8.self)
        }
    }

    /// Big-endian integers read in turn from bytes the caller has checked are enough.
    private struct FieldReader {
        let raw: UnsafeRawBufferPointer
        var offset = 0

        init(_ raw: UnsafeRawBufferPointer) { self.raw = raw }

        mutating func take<T: FixedWidthInteger>(_: T.Type) -> T {
            let value = T(bigEndian: raw.loadUnaligned(fromByteOffset: offset, as: T.self))
            offset += MemoryLayout<T>.size
            return value
        }
    }

    /// Big-endian integers written in turn into room the caller has reserved.
    private struct FieldWriter {
        let raw: UnsafeMutableRawBufferPointer
        var offset = 0

        init(_ raw: UnsafeMutableRawBufferPointer) { self.raw = raw }

        mutating func put<T: FixedWidthInteger>(_ value: T) {
            raw.storeBytes(of: value.bigEndian, toByteOffset: offset, as: T.self)
            offset += MemoryLayout<T>.size
        }
    }

    /// Writes the payload's length into the frame header at `start`, or throws when it is over the control-frame
    /// limit (the caller splits the batch).
    private static func close(from start: Int, outOfLineBytes: Int = 0, limit: Int, in buffer: inout ByteBuffer)
        throws(FreightError)
    {
        let payload = buffer.writerIndex - start - WireV1.frameHeaderBytes + outOfLineBytes
        guard payload <= limit else {
            buffer.moveWriterIndex(to: start)
            throw FreightError(.resourceExhausted, "a frame of \(payload) bytes is over the \(limit)-byte limit")
        }
        buffer.setInteger(UInt32(payload), at: start)
    }

    private static func malformed(_ type: WireV1.FrameType, _ reason: String) -> FrameParser.ParseError {
        .malformedControlFrame(type: type.rawValue, reason: reason)
    }
}
