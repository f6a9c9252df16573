import FreightCore
import NIOCore

/// A whole message in a SMALL frame (docs/wire-protocol.md, "SMALL and OUTCOMES"): its header, the endpoint its
/// sender's node chose, the nodes it passed, and its body with the body's CRC32C.
public struct SmallMessage: Sendable {
    /// `header.length` is the body's size; `chunk_bytes` is not carried.
    public var header: Freight_Wire_V1_MessageHeader
    public var targetNode: String
    public var targetID: UInt64
    public var path: [String]
    public var body: ByteBuffer
    public var crc32c: UInt32

    public init(
        header: Freight_Wire_V1_MessageHeader, targetNode: String = "", targetID: UInt64 = 0, path: [String] = [],
        body: ByteBuffer, crc32c: UInt32
    ) {
        self.header = header
        self.targetNode = targetNode
        self.targetID = targetID
        self.path = path
        self.body = body
        self.crc32c = crc32c
    }

    public var id: UInt64 { header.id }
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

    public static func encode(_ messages: [SmallMessage], into buffer: inout ByteBuffer) throws(FreightError) {
        var strings = StringTable()
        var extras: [[UInt8]] = []
        extras.reserveCapacity(messages.count)
        // Each entry's string indices, in the order they are written.
        var refs: [UInt16] = []
        refs.reserveCapacity(messages.count * 4)
        var size = 0
        // Messages of one sender mostly carry the same attributes: their extra header is encoded once.
        var last: (header: Freight_Wire_V1_MessageHeader, bytes: [UInt8])?
        for message in messages {
            guard message.path.count <= pathEntriesMax else {
                throw FreightError(.resourceExhausted, "a small message names too many nodes")
            }
            refs.append(strings.add(message.header.source))
            refs.append(strings.add(message.header.destination))
            refs.append(strings.add(message.targetNode))
            for node in message.path { refs.append(strings.add(node)) }
            let extra: [UInt8]
            if let last, Self.sameExtras(last.header, message.header) {
                extra = last.bytes
            } else {
                extra = try extraHeader(message.header)
                last = (message.header, extra)
            }
            size += 32 + 2 * (3 + message.path.count) + extra.count + message.body.readableBytes
            extras.append(extra)
        }
        let start = try open(.small, strings, entryBytes: size, into: &buffer)
        var next = 0
        for (message, extra) in zip(messages, extras) {
            buffer.writeInteger(message.header.id)
            buffer.writeInteger(message.crc32c)
            buffer.writeInteger(UInt32(message.body.readableBytes))
            buffer.writeInteger(message.targetID)
            buffer.writeInteger(UInt16(extra.count))
            buffer.writeInteger(UInt8(message.path.count))
            for _ in 0..<(3 + message.path.count) {
                buffer.writeInteger(refs[next])
                next += 1
            }
            buffer.writeBytes(extra)
            buffer.writeImmutableBuffer(message.body)
        }
        try close(from: start, in: &buffer)
    }

    public static func encode(_ outcomes: [SmallOutcome], into buffer: inout ByteBuffer) throws(FreightError) {
        var strings = StringTable()
        var size = 0
        var refs: [UInt16] = []
        refs.reserveCapacity(outcomes.count * 4)
        for outcome in outcomes {
            guard outcome.delivery.path.count <= pathEntriesMax else {
                throw FreightError(.resourceExhausted, "an outcome names too many nodes")
            }
            refs.append(strings.add(outcome.reason))
            refs.append(strings.add(outcome.delivery.endpoint.node))
            refs.append(strings.add(outcome.delivery.address))
            refs.append(strings.add(outcome.delivery.app))
            for node in outcome.delivery.path { refs.append(strings.add(node)) }
            size += 22 + 2 * (4 + outcome.delivery.path.count)
        }
        let start = try open(.outcomes, strings, entryBytes: size, into: &buffer)
        var next = 0
        for outcome in outcomes {
            buffer.writeInteger(outcome.messageID)
            buffer.writeInteger(outcome.kind.rawValue)
            buffer.writeInteger(outcome.code)
            buffer.writeInteger(outcome.delivery.endpoint.id)
            buffer.writeInteger(UInt8(outcome.delivery.path.count))
            for _ in 0..<(4 + outcome.delivery.path.count) {
                buffer.writeInteger(refs[next])
                next += 1
            }
        }
        try close(from: start, in: &buffer)
    }

    public static func decodeSmall(_ payload: ByteBuffer) throws(FrameParser.ParseError) -> [SmallMessage] {
        var payload = payload
        let strings = try readTable(&payload, .small)
        var messages: [SmallMessage] = []
        // The extra header decoded last, by its bytes: the next message's is most often the same.
        var last: (bytes: ByteBuffer, header: Freight_Wire_V1_MessageHeader)?
        while payload.readableBytes > 0 {
            guard let id = payload.readInteger(as: UInt64.self), let crc = payload.readInteger(as: UInt32.self),
                let length = payload.readInteger(as: UInt32.self),
                let targetID = payload.readInteger(as: UInt64.self),
                let extraLength = payload.readInteger(as: UInt16.self),
                let pathCount = payload.readInteger(as: UInt8.self)
            else { throw malformed(.small, "an entry is cut short") }
            guard pathCount <= pathEntriesMax else { throw malformed(.small, "\(pathCount) nodes in a path") }
            let source = try string(&payload, strings, .small)
            let destination = try string(&payload, strings, .small)
            let targetNode = try string(&payload, strings, .small)
            var path: [String] = []
            path.reserveCapacity(Int(pathCount) + 1)
            for _ in 0..<pathCount { path.append(try string(&payload, strings, .small)) }
            var header = Freight_Wire_V1_MessageHeader()
            if extraLength > 0 {
                guard let extra = payload.readSlice(length: Int(extraLength)) else {
                    throw malformed(.small, "a header is cut short")
                }
                if let last, last.bytes == extra {
                    header = last.header
                } else {
                    do {
                        header = try Freight_Wire_V1_MessageHeader(serializedBytes: [UInt8](extra.readableBytesView))
                    } catch {
                        throw malformed(.small, "a header does not decode: \(error)")
                    }
                    last = (extra, header)
                }
            }
            guard let body = payload.readSlice(length: Int(length)) else {
                throw malformed(.small, "a body is cut short")
            }
            header.id = id
            header.source = source
            header.destination = destination
            header.length = UInt64(length)
            header.chunkBytes = 0
            messages.append(
                SmallMessage(
                    header: header, targetNode: targetNode, targetID: targetID, path: path, body: body, crc32c: crc))
        }
        guard !messages.isEmpty else { throw malformed(.small, "no message") }
        return messages
    }

    public static func decodeOutcomes(_ payload: ByteBuffer) throws(FrameParser.ParseError) -> [SmallOutcome] {
        var payload = payload
        let strings = try readTable(&payload, .outcomes)
        var outcomes: [SmallOutcome] = []
        while payload.readableBytes > 0 {
            guard let id = payload.readInteger(as: UInt64.self), let kindByte = payload.readInteger(as: UInt8.self),
                let code = payload.readInteger(as: UInt32.self),
                let endpointID = payload.readInteger(as: UInt64.self),
                let pathCount = payload.readInteger(as: UInt8.self)
            else { throw malformed(.outcomes, "an entry is cut short") }
            guard let kind = SmallOutcome.Kind(rawValue: kindByte) else {
                throw malformed(.outcomes, "unknown outcome \(kindByte)")
            }
            guard pathCount <= pathEntriesMax else { throw malformed(.outcomes, "\(pathCount) nodes in a path") }
            var outcome = SmallOutcome(id, kind)
            outcome.code = code
            outcome.reason = try string(&payload, strings, .outcomes)
            outcome.delivery.endpoint.id = endpointID
            outcome.delivery.endpoint.node = try string(&payload, strings, .outcomes)
            outcome.delivery.address = try string(&payload, strings, .outcomes)
            outcome.delivery.app = try string(&payload, strings, .outcomes)
            if pathCount > 0 {
                var path: [String] = []
                path.reserveCapacity(Int(pathCount))
                for _ in 0..<pathCount { path.append(try string(&payload, strings, .outcomes)) }
                outcome.delivery.path = path
            }
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

    /// Whether two headers agree on every field the extra header carries.
    private static func sameExtras(_ a: Freight_Wire_V1_MessageHeader, _ b: Freight_Wire_V1_MessageHeader) -> Bool {
        a.contentType == b.contentType && a.traceparent == b.traceparent && a.tracestate == b.tracestate
            && a.deadlineUnixNanos == b.deadlineUnixNanos && a.priority == b.priority && a.replyTo == b.replyTo
            && a.attributes == b.attributes && a.unknownFields == b.unknownFields
    }

    private static func extraHeader(_ header: Freight_Wire_V1_MessageHeader) throws(FreightError) -> [UInt8] {
        guard
            !(header.contentType.isEmpty && header.attributes.isEmpty && header.traceparent.isEmpty
                && header.tracestate.isEmpty && header.deadlineUnixNanos == 0 && header.priority == 0
                && header.replyTo.isEmpty && header.unknownFields.data.isEmpty)
        else { return [] }
        var extra = header
        extra.id = 0
        extra.source = ""
        extra.destination = ""
        extra.length = 0
        extra.chunkBytes = 0
        let bytes: [UInt8]
        do {
            bytes = try extra.serializedBytes()
        } catch {
            throw FreightError(.internalError, "cannot encode a small message's header: \(error)")
        }
        guard bytes.count <= Int(UInt16.max) else {
            throw FreightError(.resourceExhausted, "a small message's header is too large for a SMALL frame")
        }
        return bytes
    }

    /// Writes the frame header (its length set by ``close(from:in:)``) and the string table; returns where the
    /// frame starts.
    private static func open(
        _ type: WireV1.FrameType, _ strings: StringTable, entryBytes: Int, into buffer: inout ByteBuffer
    ) throws(FreightError) -> Int {
        let payload = strings.bytes + entryBytes
        guard payload <= Limits.controlFrameBytesMax, strings.strings.count <= Int(UInt16.max) else {
            throw FreightError(
                .resourceExhausted, "a frame of \(payload) bytes is over the \(Limits.controlFrameBytesMax)-byte limit")
        }
        buffer.reserveCapacity(minimumWritableBytes: WireV1.frameHeaderBytes + payload)
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

    private static func readTable(_ payload: inout ByteBuffer, _ type: WireV1.FrameType) throws(FrameParser.ParseError)
        -> [String]
    {
        guard let count = payload.readInteger(as: UInt16.self) else { throw malformed(type, "no string table") }
        var strings: [String] = []
        strings.reserveCapacity(Int(count))
        for _ in 0..<count {
            guard let length = payload.readInteger(as: UInt16.self),
                let text = payload.readString(length: Int(length))
            else { throw malformed(type, "a string is cut short") }
            strings.append(text)
        }
        return strings
    }

    private static func string(_ payload: inout ByteBuffer, _ strings: [String], _ type: WireV1.FrameType)
        throws(FrameParser.ParseError) -> String
    {
        guard let index = payload.readInteger(as: UInt16.self) else { throw malformed(type, "an entry is cut short") }
        guard Int(index) < strings.count else { throw malformed(type, "string \(index) of \(strings.count)") }
        return strings[Int(index)]
    }

    /// Writes the payload's length into the frame header at `start`, or throws when it is over the control-frame
    /// limit (the caller splits the batch).
    private static func close(from start: Int, in buffer: inout ByteBuffer) throws(FreightError) {
        let payload = buffer.writerIndex - start - WireV1.frameHeaderBytes
        guard payload <= Limits.controlFrameBytesMax else {
            buffer.moveWriterIndex(to: start)
            throw FreightError(
                .resourceExhausted, "a frame of \(payload) bytes is over the \(Limits.controlFrameBytesMax)-byte limit")
        }
        buffer.setInteger(UInt32(payload), at: start)
    }

    private static func malformed(_ type: WireV1.FrameType, _ reason: String) -> FrameParser.ParseError {
        .malformedControlFrame(type: type.rawValue, reason: reason)
    }
}
