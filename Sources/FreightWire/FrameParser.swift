import FreightCore
import NIOCore
import SwiftProtobuf

/// Turns a byte stream into frames. Pure: it takes bytes and returns frames or an error, and never trusts a length
/// before checking it against its limits. Any error is final for the connection.
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

    private var prefaceSeen: Bool
    public let limits: FrameLimits

    public init(limits: FrameLimits = FrameLimits(), expectPreface: Bool = true) {
        self.limits = limits
        self.prefaceSeen = !expectPreface
    }

    /// Reads one frame from `buffer` if a whole one is there; leaves the reader index untouched otherwise.
    public mutating func next(from buffer: inout ByteBuffer) throws(ParseError) -> Frame? {
        if !prefaceSeen {
            guard buffer.readableBytes >= WireV1.preface.count else {
                // Reject early when the bytes so far already differ.
                let seen = buffer.readableBytesView
                if !seen.elementsEqual(WireV1.preface.prefix(seen.count)) { throw .badPreface }
                return nil
            }
            let bytes = buffer.readBytes(length: WireV1.preface.count)!
            guard bytes.prefix(4).elementsEqual(WireV1.preface.prefix(4)) else { throw .badPreface }
            let version = UInt16(bytes[4]) << 8 | UInt16(bytes[5])
            guard version == WireV1.version else { throw .unsupportedVersion(version) }
            prefaceSeen = true
        }
        guard buffer.readableBytes >= WireV1.frameHeaderBytes else { return nil }
        let start = buffer.readerIndex
        let length = Int(buffer.getInteger(at: start, as: UInt32.self)!)
        let rawType = buffer.getInteger(at: start + 4, as: UInt8.self)!
        let flags = buffer.getInteger(at: start + 5, as: UInt8.self)!
        let reserved = buffer.getInteger(at: start + 6, as: UInt16.self)!
        guard let type = WireV1.FrameType(rawValue: rawType) else { throw .unknownFrameType(rawType) }
        guard reserved == 0 else { throw .reservedBitsSet }
        let limit = type == .data ? limits.chunkBytesMax + WireV1.dataPrefixBytes : limits.controlFrameBytesMax
        guard length <= limit else { throw .frameTooLarge(type: rawType, bytes: length, limit: limit) }
        if type != .data && flags != 0 { throw .reservedBitsSet }
        guard buffer.readableBytes >= WireV1.frameHeaderBytes + length else { return nil }
        buffer.moveReaderIndex(forwardBy: WireV1.frameHeaderBytes)
        var payload = buffer.readSlice(length: length)!
        return try Self.decodePayload(type: type, flags: flags, payload: &payload)
    }

    static func decodePayload(type: WireV1.FrameType, flags: UInt8, payload: inout ByteBuffer) throws(ParseError) -> Frame {
        if type == .data {
            guard payload.readableBytes >= WireV1.dataPrefixBytes else { throw .dataFrameTooShort(payload.readableBytes) }
            guard flags & ~WireV1.flagLastChunk == 0 else { throw .reservedBitsSet }
            let id = payload.readInteger(as: UInt64.self)!
            let offset = payload.readInteger(as: UInt64.self)!
            let crc = payload.readInteger(as: UInt32.self)!
            guard offset <= UInt64(Int64.max) else {
                throw .malformedControlFrame(type: type.rawValue, reason: "offset \(offset) out of range")
            }
            return .data(
                DataChunk(messageID: id, offset: offset, crc32c: crc, isLast: flags & WireV1.flagLastChunk != 0, bytes: payload)
            )
        }
        do {
            return try payload.withUnsafeReadableBytes { raw in
                let bytes = [UInt8](raw)
                switch type {
                case .data: fatalError("handled above")
                case .hello: return .hello(try Freight_Wire_V1_Hello(serializedBytes: bytes))
                case .open: return .open(try Freight_Wire_V1_Open(serializedBytes: bytes))
                case .ack: return .ack(try Freight_Wire_V1_Ack(serializedBytes: bytes))
                case .done: return .done(try Freight_Wire_V1_Done(serializedBytes: bytes))
                case .abort: return .abort(try Freight_Wire_V1_Abort(serializedBytes: bytes))
                case .request: return .request(try Freight_Wire_V1_Request(serializedBytes: bytes))
                case .reply: return .reply(try Freight_Wire_V1_Reply(serializedBytes: bytes))
                case .endpoints: return .endpoints(try Freight_Wire_V1_Endpoints(serializedBytes: bytes))
                case .members: return .members(try Freight_Wire_V1_Members(serializedBytes: bytes))
                }
            }
        } catch {
            throw .malformedControlFrame(type: type.rawValue, reason: "\(error)")
        }
    }
}
