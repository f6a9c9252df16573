import Foundation
import GRPCCore
import NIOCore
import SwiftProtobuf
import Testing

@testable import FreightClient
@testable import FreightGRPC

/// The gRPC API's own coders for body bytes (BodyCoding.swift) write and read exactly the protobuf that generated
/// code does, and refuse what is not protobuf instead of trapping.
@Suite struct BodyCodingTests {
    /// A piece of a chunk is the bytes SwiftProtobuf writes for the same ReceiveResponse, whatever the id, offset
    /// and length (defaults left out), and decodes to it.
    @Test(arguments: [
        (UInt64(0), UInt64(0), 0..<0), (1, 0, 0..<1), (0xfeed_f00d_dead_beef, 5, 3..<300),
        (7, UInt64.max - 1_000_000, 0..<1000), (9, 1 << 40, 100..<70_000),
    ])
    func aPieceIsTheProtobufOfItsChunk(id: UInt64, offset: UInt64, range: Range<Int>) throws {
        var body = ByteBuffer()
        for index in 0..<70_000 { body.writeInteger(UInt8(truncatingIfNeeded: index &* 31)) }
        let chunk = BodyChunk(offset: offset, bytes: body)
        let written: [UInt8] = try ReceiveEventSerializer().serialize(
            .piece(messageID: id, chunk: chunk, range: range))
        let expected = Freight_V1_ReceiveResponse.with {
            $0.chunk = .with {
                $0.messageID = id
                $0.offset = offset + UInt64(range.lowerBound)
                $0.data = Data(body.readableBytesView[range])
            }
        }
        #expect(written == (try expected.serializedBytes() as [UInt8]))
        #expect(try Freight_V1_ReceiveResponse(serializedBytes: written) == expected)
    }

    /// Body parts come out as buffers holding their bytes; a header or an empty request as generated code reads
    /// them; bytes that are not a SendRequest fail with an error.
    @Test func sendRequestsDecodeAsGeneratedCodeReadsThem() throws {
        let decoder = SendPartDeserializer()
        for count in [0, 1, 127, 128, 16_384, 1 << 20] {
            let data = Data((0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7) })
            let bytes: [UInt8] = try Freight_V1_SendRequest.with { $0.data = data }.serializedBytes()
            switch try decoder.deserialize(bytes) {
            case .data(let buffer): #expect(Data(buffer.readableBytesView) == data)
            case .empty: #expect(count == 0, "an empty data part reads as an empty request")
            default: Issue.record("\(count) bytes of data did not decode as data")
            }
        }
        let header = Freight_V1_SendHeader.with {
            $0.destination = "a/b"
            $0.length = 42
        }
        let headerBytes: [UInt8] = try Freight_V1_SendRequest.with { $0.header = header }.serializedBytes()
        guard case .header(let decoded) = try decoder.deserialize(headerBytes) else {
            Issue.record("the header did not decode as a header")
            return
        }
        #expect(decoded == header)
        // Data with an unknown field after it: not the fast path, still the data.
        let mixed: [UInt8] = [0x12, 0x02, 0xaa, 0xbb, 0x28, 0x01]
        if case .data(let buffer) = try decoder.deserialize(mixed) {
            #expect(Array(buffer.readableBytesView) == [0xaa, 0xbb])
        } else {
            Issue.record("data followed by an unknown field did not decode as data")
        }
        for broken: [UInt8] in [
            [0x12], [0x12, 0x05, 0x01], [0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ] {
            #expect(throws: (any Error).self) { _ = try decoder.deserialize(broken) }
        }
    }
}
