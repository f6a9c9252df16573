import FreightClient
import GRPCCore
import GRPCProtobuf
import NIOCore
import SwiftProtobuf

/// The protobuf messages of the API that carry body bytes, coded without the copies generated code makes
/// (`freight bench --paths grpc-send` profiled: decoding `bytes` into `Data` and then into a `ByteBuffer` copied
/// each byte twice, and writing a chunk copied it into `Data`, zero-filled the output and copied it again). The
/// bytes on the wire are the same protobuf: any client sees `SendRequest` and `ReceiveResponse` as before.

/// One `SendRequest` as the server reads it: the header, or body bytes already in a buffer.
enum SendPart: Sendable {
    case header(Freight_V1_SendHeader)
    case data(ByteBuffer)
    /// A request with neither (an empty `oneof`).
    case empty
}

/// Decodes `SendRequest`: a request that is exactly one `data` field (each body part a client sends) is copied
/// once, straight into a buffer; anything else goes through the generated decoder.
struct SendPartDeserializer: MessageDeserializer {
    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> SendPart {
        let fast: ByteBuffer? = serializedMessageBytes.withUnsafeBytes { raw in
            // Field 2, length-delimited: tag 0x12.
            guard raw.first == 0x12, let (length, start) = ProtobufBytes.varint(raw, at: 1),
                UInt64(raw.count - start) == length
            else { return nil }
            return ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: raw[start...]))
        }
        if let fast { return .data(fast) }
        let request: Freight_V1_SendRequest = try ProtobufDeserializer().deserialize(serializedMessageBytes)
        switch request.part {
        case .header(let header): return .header(header)
        case .data(let data): return .data(ByteBuffer(bytes: data))
        case nil: return .empty
        }
    }
}

/// One `ReceiveResponse` as the server writes it: an event, or a piece of a body chunk written from where the
/// chunk lies (the receiving node's buffer or shared memory) into the output in one copy.
enum ReceiveEvent: Sendable {
    case event(Freight_V1_ReceiveResponse)
    case piece(messageID: UInt64, chunk: BodyChunk, range: Range<Int>)
}

struct ReceiveEventSerializer: MessageSerializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: ReceiveEvent) throws -> Bytes {
        switch message {
        case .event(let event):
            return try ProtobufSerializer().serialize(event)
        case .piece(let messageID, let chunk, let range):
            // ReceiveResponse.chunk (field 3) holding BodyChunk { message_id = 1 (fixed64), offset = 2 (varint),
            // data = 3 (bytes) }, fields at their defaults left out as protobuf does.
            let offset = chunk.offset + UInt64(range.lowerBound)
            let count = range.count
            var inner = 0
            if messageID != 0 { inner += 1 + 8 }
            if offset != 0 { inner += 1 + ProtobufBytes.varintSize(offset) }
            if count != 0 { inner += 1 + ProtobufBytes.varintSize(UInt64(count)) + count }
            let total = 1 + ProtobufBytes.varintSize(UInt64(inner)) + inner
            var bytes = Bytes(repeating: 0, count: total)
            try bytes.withUnsafeMutableBytes { output in
                var at = 0
                func put(_ byte: UInt8) {
                    output[at] = byte
                    at += 1
                }
                func putVarint(_ value: UInt64) {
                    var value = value
                    while value >= 0x80 {
                        put(UInt8(truncatingIfNeeded: value) | 0x80)
                        value >>= 7
                    }
                    put(UInt8(value))
                }
                put(0x1a)
                putVarint(UInt64(inner))
                if messageID != 0 {
                    put(0x09)
                    for shift in stride(from: 0, to: 64, by: 8) { put(UInt8(truncatingIfNeeded: messageID >> shift)) }
                }
                if offset != 0 {
                    put(0x10)
                    putVarint(offset)
                }
                if count != 0 {
                    put(0x1a)
                    putVarint(UInt64(count))
                    try chunk.withUnsafeBytes { body in
                        UnsafeMutableRawBufferPointer(rebasing: output[at..<(at + count)])
                            .copyMemory(from: UnsafeRawBufferPointer(rebasing: body[range]))
                    }
                    at += count
                }
                guard at == total else {
                    throw RPCError(code: .internalError, message: "a BodyChunk of \(total) bytes was written as \(at)")
                }
            }
            return bytes
        }
    }
}

/// The two pieces of protobuf's wire format the coders above need.
enum ProtobufBytes {
    /// The varint at `index` and the index after it; nil when it is cut short or longer than 10 bytes.
    static func varint(_ raw: UnsafeRawBufferPointer, at index: Int) -> (UInt64, Int)? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        var at = index
        while at < raw.count, shift < 64 {
            let byte = raw[at]
            value |= UInt64(byte & 0x7f) << shift
            at += 1
            if byte & 0x80 == 0 { return (value, at) }
            shift += 7
        }
        return nil
    }

    static func varintSize(_ value: UInt64) -> Int {
        var size = 1
        var value = value >> 7
        while value != 0 {
            size += 1
            value >>= 7
        }
        return size
    }
}
