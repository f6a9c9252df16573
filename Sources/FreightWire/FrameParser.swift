import FreightCore
import NIOCore
import SwiftProtobuf

/// What the parser reads: whole frames, or a DATA frame in pieces when chunks are streamed.
public enum ParserEvent: Sendable {
    case frame(Frame)
    /// A DATA frame's header; `chunk.pieces` is empty and `bodyBytes` will follow in `dataPiece`s.
    case dataStart(DataChunk, bodyBytes: Int)
    case dataPiece(ByteBuffer)
    case dataEnd
}

/// Turns a byte stream into frames. Pure: it takes bytes and emits frames or throws, and never trusts a length before
/// checking it against its limits. Any error is final for the connection.
///
/// Chunk bytes are never copied: a DATA frame's body is handed on as slices of the buffers it arrived in (one slice
/// per read it spanned). Only headers and control frames split across reads are gathered into a small buffer.
public struct FrameParser: Sendable {
    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case badPreface
        case unsupportedVersion(UInt16)
        case unknownFrameType(UInt8)
        case reservedBitsSet
        case frameTooLarge(type: UInt8, bytes: Int, limit: Int)
        case dataFrameTooShort(Int)
        case malformedControlFrame(type: UInt8, reason: String)

        public var description: String {
            switch self {
            case .badPreface: "bad preface: not a Freight peer"
            case .unsupportedVersion(let v): "unsupported wire version \(v); this node speaks 1"
            case .unknownFrameType(let t): "unknown frame type \(t)"
            case .reservedBitsSet: "reserved header bits set"
            case .frameTooLarge(let t, let bytes, let limit): "frame of type \(t) has \(bytes) bytes, limit \(limit)"
            case .dataFrameTooShort(let n): "DATA frame of \(n) bytes is shorter than its prefix"
            case .malformedControlFrame(let t, let reason): "malformed control frame of type \(t): \(reason)"
            }
        }
    }

    enum State: Sendable {
        case preface
        case header
        case dataPrefix(length: Int, flags: UInt8)
        case dataBody(DataChunk, remaining: Int, crc: UInt32)
        case control(WireV1.FrameType, flags: UInt8, length: Int)
        /// A SMALL frame split by reads, kept as the slices it came in (decoded from them, not copied together).
        case smallPieces(length: Int, remaining: Int, pieces: [ByteBuffer])
    }

    private var state: State
    /// Whether the connection's HELLO has been read (or the parser starts past it, without a preface). Before it a
    /// SMALL frame is held to the control-frame limit: a stranger gets no more than one partial control frame held.
    private var helloRead: Bool
    /// Bytes of a header or control frame that arrived split across reads.
    private var pending = ByteBuffer()
    /// The body of a DATA frame that comes whole (not streamed), as the pieces its reads brought.
    private var held = HeldPieces()
    public let limits: FrameLimits

    public init(limits: FrameLimits = FrameLimits(), expectPreface: Bool = true) {
        self.limits = limits
        self.state = expectPreface ? .preface : .header
        self.helloRead = !expectPreface
    }

    /// Consumes all of `input`, calling `emit` for every frame completed (chunks assembled from their pieces).
    public mutating func feed(_ input: ByteBuffer, emit: (Frame) -> Void) throws(ParseError) {
        try feedEvents(input) { event in
            if case .frame(let frame) = event { emit(frame) }
        }
    }

    /// Consumes all of `input`. With ``FrameLimits/streamsChunks`` a DATA frame comes as `dataStart`, one
    /// `dataPiece` per read it spans, and `dataEnd`, so that a relay can pass each piece on as it arrives;
    /// otherwise every frame comes whole.
    public mutating func feedEvents(_ input: ByteBuffer, emit: (ParserEvent) -> Void) throws(ParseError) {
        var input = input
        while true {
            if case .smallPieces(let length, let remaining, var pieces) = state {
                guard input.readableBytes > 0 else { return }
                let take = min(remaining, input.readableBytes)
                pieces.append(input.readSlice(length: take)!)
                if take == remaining {
                    state = .header
                    emit(.frame(.small(try SmallFrames.decodeSmall(pieces: pieces))))
                } else if pieces.count >= Self.smallPiecesMax {
                    // A frame that comes in many reads is gathered from here on, holding no more of their buffers.
                    pending.reserveCapacity(length)
                    for var piece in pieces { pending.writeBuffer(&piece) }
                    state = .control(.small, flags: 0, length: length)
                } else {
                    state = .smallPieces(length: length, remaining: remaining - take, pieces: pieces)
                }
                continue
            }
            if case .dataBody(var chunk, let remaining, var crc) = state {
                guard input.readableBytes > 0 else { return }
                let take = min(remaining, input.readableBytes)
                let piece = input.readSlice(length: take)!
                if limits.verifyChecksumsOnArrival {
                    // While the bytes are still in cache from the socket read.
                    crc = piece.withUnsafeReadableBytes { CRC32C.checksum($0, continuing: crc) }
                }
                if limits.streamsChunks {
                    emit(.dataPiece(piece))
                } else {
                    held.append(piece, remaining: remaining - take)
                }
                if remaining == take {
                    if !limits.streamsChunks {
                        chunk.pieces = held.pieces
                        held = HeldPieces()
                    }
                    if limits.verifyChecksumsOnArrival { chunk.checksumVerified = crc == chunk.crc32c }
                    state = .header
                    emit(limits.streamsChunks ? .dataEnd : .frame(.data(chunk)))
                } else {
                    state = .dataBody(chunk, remaining: remaining - take, crc: crc)
                }
                continue
            }
            let needed: Int
            switch state {
            case .preface: needed = WireV1.preface.count
            case .header: needed = WireV1.frameHeaderBytes
            case .dataPrefix: needed = WireV1.dataPrefixBytes
            case .control(_, _, let length): needed = length
            case .dataBody, .smallPieces: preconditionFailure("handled above")
            }
            if case .preface = state { try checkPrefacePrefix(input) }
            // A SMALL frame of many messages that this read holds only the start of: its bodies are sliced from the
            // reads they come in, not copied together with the rest (perf, 64 KiB node to node: the copy was a
            // tenth of the receiving node's time), however little of it this read holds (a frame whose first read
            // brought under 64 KiB was gathered whole: a sixth of them, with reads of about 370 KiB). Only frames
            // past the control-frame limit, which only a party past its HELLO may send.
            if case .control(.small, _, let length) = state, pending.readableBytes == 0,
                input.readableBytes > 0, input.readableBytes < length, length > limits.controlFrameBytesMax
            {
                let first = input.readSlice(length: input.readableBytes)!
                state = .smallPieces(length: length, remaining: length - first.readableBytes, pieces: [first])
                continue
            }
            guard var block = gather(needed, from: &input) else { return }
            switch state {
            case .preface:
                let bytes = block.readBytes(length: WireV1.preface.count)!
                guard bytes.prefix(4).elementsEqual(WireV1.preface.prefix(4)) else { throw .badPreface }
                let version = UInt16(bytes[4]) << 8 | UInt16(bytes[5])
                guard version == WireV1.version else { throw .unsupportedVersion(version) }
                state = .header
            case .header:
                let length = Int(block.readInteger(as: UInt32.self)!)
                let rawType = block.readInteger(as: UInt8.self)!
                let flags = block.readInteger(as: UInt8.self)!
                let reserved = block.readInteger(as: UInt16.self)!
                guard let type = WireV1.FrameType(rawValue: rawType) else { throw .unknownFrameType(rawType) }
                guard reserved == 0 else { throw .reservedBitsSet }
                let limit =
                    switch type {
                    case .data: limits.chunkBytesMax + WireV1.dataPrefixBytes
                    case .small:
                        helloRead
                            ? limits.smallFrameBytesMax : min(limits.smallFrameBytesMax, limits.controlFrameBytesMax)
                    default: limits.controlFrameBytesMax
                    }
                guard length <= limit else { throw .frameTooLarge(type: rawType, bytes: length, limit: limit) }
                if type == .data {
                    guard length >= WireV1.dataPrefixBytes else { throw .dataFrameTooShort(length) }
                    guard flags & ~WireV1.flagLastChunk == 0 else { throw .reservedBitsSet }
                    state = .dataPrefix(length: length, flags: flags)
                } else {
                    let allowed = type == .shared ? WireV1.flagLastChunk | WireV1.flagChecksum : 0
                    guard flags & ~allowed == 0 else { throw .reservedBitsSet }
                    if length == 0 {
                        state = .header
                        if type == .hello { helloRead = true }
                        emit(.frame(try Self.decodeControl(type: type, flags: flags, payload: ByteBuffer())))
                    } else {
                        state = .control(type, flags: flags, length: length)
                    }
                }
            case .dataPrefix(let length, let flags):
                let id = block.readInteger(as: UInt64.self)!
                let offset = block.readInteger(as: UInt64.self)!
                let crc = block.readInteger(as: UInt32.self)!
                guard offset <= UInt64(Int64.max) else {
                    throw .malformedControlFrame(
                        type: WireV1.FrameType.data.rawValue, reason: "offset \(offset) out of range")
                }
                let chunk = DataChunk(
                    messageID: id, offset: offset, crc32c: crc, isLast: flags & WireV1.flagLastChunk != 0, pieces: []
                )
                let bodyBytes = length - WireV1.dataPrefixBytes
                if limits.streamsChunks { emit(.dataStart(chunk, bodyBytes: bodyBytes)) }
                if bodyBytes == 0 {
                    state = .header
                    emit(limits.streamsChunks ? .dataEnd : .frame(.data(chunk)))
                } else {
                    state = .dataBody(chunk, remaining: bodyBytes, crc: 0)
                }
            case .control(let type, let flags, _):
                state = .header
                if type == .hello { helloRead = true }
                emit(.frame(try Self.decodeControl(type: type, flags: flags, payload: block)))
            case .dataBody, .smallPieces:
                preconditionFailure("handled above")
            }
        }
    }

    /// Exactly `count` bytes: a slice of `input` when they are all there and nothing is pending, else gathered
    /// (copied) into `pending` across calls. Nil until all have arrived.
    private mutating func gather(_ count: Int, from input: inout ByteBuffer) -> ByteBuffer? {
        if pending.readableBytes == 0 && input.readableBytes >= count {
            return input.readSlice(length: count)!
        }
        let take = min(count - pending.readableBytes, input.readableBytes)
        if take > 0 {
            // A large frame split by a read (SMALL frames of many messages) is gathered into a buffer of its own
            // length, not one grown and moved by realloc as its pieces come (perf: a tenth of a receiving node's
            // copies at 64 KiB). Only once a first piece of some size is here: a stranger's header alone gets none.
            if pending.readableBytes == 0 && take >= Self.gatherReserveAfterBytes {
                pending.reserveCapacity(count)
            }
            var slice = input.readSlice(length: take)!
            pending.writeBuffer(&slice)
        }
        guard pending.readableBytes == count else { return nil }
        let block = pending
        pending = ByteBuffer()
        return block
    }

    /// Bytes of a split frame that must have come before its whole length is reserved, or a SMALL frame is kept as
    /// its pieces.
    static let gatherReserveAfterBytes = 64 * 1024
    /// Reads a SMALL frame is kept in at most before the rest is gathered: the read buffers it holds are bounded.
    static let smallPiecesMax = 4

    /// Rejects a wrong preface as soon as its first bytes differ, before all eight have arrived.
    private func checkPrefacePrefix(_ input: ByteBuffer) throws(ParseError) {
        let seen =
            pending.readableBytesView + input.readableBytesView.prefix(WireV1.preface.count - pending.readableBytes)
        let magic = Array(seen.prefix(4))
        if !magic.elementsEqual(WireV1.preface.prefix(magic.count)) { throw .badPreface }
    }

    static func decodeControl(type: WireV1.FrameType, flags: UInt8, payload: ByteBuffer) throws(ParseError) -> Frame {
        if type == .shared { return try decodeShared(flags: flags, payload: payload) }
        if type == .release { return try decodeRelease(payload) }
        if type == .small { return .small(try SmallFrames.decodeSmall(payload)) }
        if type == .outcomes { return .outcomes(try SmallFrames.decodeOutcomes(payload)) }
        do {
            let bytes = [UInt8](payload.readableBytesView)
            switch type {
            case .data: preconditionFailure("DATA is not a control frame")
            case .hello: return .hello(try Freight_Wire_V1_Hello(serializedBytes: bytes))
            case .open: return .open(try Freight_Wire_V1_Open(serializedBytes: bytes))
            case .ack: return .ack(try Freight_Wire_V1_Ack(serializedBytes: bytes))
            case .done: return .done(try Freight_Wire_V1_Done(serializedBytes: bytes))
            case .abort: return .abort(try Freight_Wire_V1_Abort(serializedBytes: bytes))
            case .request: return .request(try Freight_Wire_V1_Request(serializedBytes: bytes))
            case .reply: return .reply(try Freight_Wire_V1_Reply(serializedBytes: bytes))
            case .endpoints: return .endpoints(try Freight_Wire_V1_Endpoints(serializedBytes: bytes))
            case .members: return .members(try Freight_Wire_V1_Members(serializedBytes: bytes))
            case .routes: return .routes(try Freight_Wire_V1_Routes(serializedBytes: bytes))
            case .functions: return .functions(try Freight_Wire_V1_Functions(serializedBytes: bytes))
            case .shared, .release, .small, .outcomes: preconditionFailure("binary frames are decoded above")
            }
        } catch {
            throw .malformedControlFrame(type: type.rawValue, reason: "\(error)")
        }
    }

    static func decodeShared(flags: UInt8, payload: ByteBuffer) throws(ParseError) -> Frame {
        let type = WireV1.FrameType.shared.rawValue
        guard payload.readableBytes == WireV1.sharedPayloadBytes else {
            throw .malformedControlFrame(type: type, reason: "\(payload.readableBytes) bytes, expected 40")
        }
        var payload = payload
        let id = payload.readInteger(as: UInt64.self)!
        let offset = payload.readInteger(as: UInt64.self)!
        let crc = payload.readInteger(as: UInt32.self)!
        let pool = payload.readInteger(as: UInt32.self)!
        let regionOffset = payload.readInteger(as: UInt64.self)!
        let length = payload.readInteger(as: UInt64.self)!
        guard offset <= UInt64(Int64.max), regionOffset <= UInt64(Int64.max), length <= UInt64(Int64.max) else {
            throw .malformedControlFrame(type: type, reason: "offset or length out of range")
        }
        let hasChecksum = flags & WireV1.flagChecksum != 0
        return .shared(
            SharedChunk(
                messageID: id, offset: offset, crc32c: hasChecksum ? crc : nil,
                isLast: flags & WireV1.flagLastChunk != 0,
                region: SharedRegion(pool: pool, offset: regionOffset, length: length)))
    }

    static func decodeRelease(_ payload: ByteBuffer) throws(ParseError) -> Frame {
        let size = WireV1.releaseEntryBytes
        guard payload.readableBytes > 0, payload.readableBytes % size == 0 else {
            throw .malformedControlFrame(
                type: WireV1.FrameType.release.rawValue,
                reason: "\(payload.readableBytes) bytes is not a whole number of \(size)-byte entries")
        }
        var payload = payload
        var regions: [SharedRegion] = []
        regions.reserveCapacity(payload.readableBytes / size)
        while payload.readableBytes > 0 {
            let pool = payload.readInteger(as: UInt32.self)!
            let offset = payload.readInteger(as: UInt64.self)!
            let length = payload.readInteger(as: UInt64.self)!
            regions.append(SharedRegion(pool: pool, offset: offset, length: length))
        }
        return .release(regions)
    }
}
