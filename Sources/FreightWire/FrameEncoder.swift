import FreightCore
import NIOCore
import SwiftProtobuf

/// Writes frames of wire protocol v1. A DATA frame is written as a small header buffer followed by the chunk's own
/// buffer, so the body is never copied.
public enum FrameEncoder {
    public static func prefaceBuffer(allocator: ByteBufferAllocator) -> ByteBuffer {
        allocator.buffer(bytes: WireV1.preface)
    }

    /// The 28 bytes that precede a chunk's bytes.
    public static func dataHeader(_ chunk: DataChunk, into buffer: inout ByteBuffer) {
        dataHeader(chunk, bodyBytes: chunk.count, into: &buffer)
    }

    /// The header of a chunk whose `bodyBytes` are written after it (streamed, or from `chunk.pieces`).
    public static func dataHeader(_ chunk: DataChunk, bodyBytes: Int, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt32(WireV1.dataPrefixBytes + bodyBytes))
        buffer.writeInteger(WireV1.FrameType.data.rawValue)
        buffer.writeInteger(chunk.isLast ? WireV1.flagLastChunk : 0)
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(chunk.messageID)
        buffer.writeInteger(chunk.offset)
        buffer.writeInteger(chunk.crc32c)
    }

    /// Encodes a control frame. Throws when its payload would exceed the control-frame limit (a SMALL frame's:
    /// `smallFrameBytesMax`, what the receiver takes).
    public static func control(
        _ frame: Frame, into buffer: inout ByteBuffer, smallFrameBytesMax: Int = Limits.smallFrameBytesMax
    ) throws(FreightError) {
        switch frame {
        case .shared(let chunk):
            return shared(chunk, into: &buffer)
        case .release(let regions):
            return try release(regions, into: &buffer)
        case .small(let messages):
            return try SmallFrames.encode(messages, into: &buffer, payloadBytesMax: smallFrameBytesMax)
        case .outcomes(let outcomes):
            return try SmallFrames.encode(outcomes, into: &buffer)
        default:
            break
        }
        let payload: [UInt8]
        do {
            switch frame {
            case .data: preconditionFailure("DATA frames are written with dataHeader(_:into:)")
            case .hello(let m): payload = try m.serializedBytes()
            case .open(let m): payload = try m.serializedBytes()
            case .ack(let m): payload = try m.serializedBytes()
            case .done(let m): payload = try m.serializedBytes()
            case .abort(let m): payload = try m.serializedBytes()
            case .request(let m): payload = try m.serializedBytes()
            case .reply(let m): payload = try m.serializedBytes()
            case .endpoints(let m): payload = try m.serializedBytes()
            case .members(let m): payload = try m.serializedBytes()
            case .routes(let r): payload = try r.serializedBytes()
            case .functions(let m): payload = try m.serializedBytes()
            case .shared, .release, .small, .outcomes: preconditionFailure("binary frames are encoded above")
            }
        } catch {
            throw FreightError(.internalError, "cannot encode \(frame.type) frame: \(error)")
        }
        guard payload.count <= Limits.controlFrameBytesMax else {
            throw FreightError(
                .resourceExhausted,
                "\(frame.type) frame of \(payload.count) bytes is over the \(Limits.controlFrameBytesMax)-byte limit"
            )
        }
        buffer.writeInteger(UInt32(payload.count))
        buffer.writeInteger(frame.type.rawValue)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt16(0))
        buffer.writeBytes(payload)
    }

    static func shared(_ chunk: SharedChunk, into buffer: inout ByteBuffer) {
        var flags: UInt8 = chunk.isLast ? WireV1.flagLastChunk : 0
        if chunk.hasChecksum { flags |= WireV1.flagChecksum }
        buffer.writeInteger(UInt32(WireV1.sharedPayloadBytes))
        buffer.writeInteger(WireV1.FrameType.shared.rawValue)
        buffer.writeInteger(flags)
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(chunk.messageID)
        buffer.writeInteger(chunk.offset)
        buffer.writeInteger(chunk.crc32c)
        buffer.writeInteger(chunk.region.pool)
        buffer.writeInteger(chunk.region.offset)
        buffer.writeInteger(chunk.region.length)
    }

    static func release(_ regions: [SharedRegion], into buffer: inout ByteBuffer) throws(FreightError) {
        let bytes = regions.count * WireV1.releaseEntryBytes
        guard !regions.isEmpty, bytes <= Limits.controlFrameBytesMax else {
            throw FreightError(
                .invalidArgument, "a RELEASE frame holds 1...\(Limits.controlFrameBytesMax / 20) regions")
        }
        buffer.writeInteger(UInt32(bytes))
        buffer.writeInteger(WireV1.FrameType.release.rawValue)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt16(0))
        for region in regions {
            buffer.writeInteger(region.pool)
            buffer.writeInteger(region.offset)
            buffer.writeInteger(region.length)
        }
    }

    /// Whole frame as one buffer (copies DATA bytes; for tests and small frames).
    public static func encode(_ frame: Frame, allocator: ByteBufferAllocator = ByteBufferAllocator())
        throws(FreightError) -> ByteBuffer
    {
        var buffer = allocator.buffer(capacity: 64)
        if case .data(let chunk) = frame {
            dataHeader(chunk, into: &buffer)
            for var piece in chunk.pieces { buffer.writeBuffer(&piece) }
        } else {
            try control(frame, into: &buffer)
        }
        return buffer
    }
}
