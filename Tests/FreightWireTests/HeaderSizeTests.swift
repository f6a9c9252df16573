import FreightCore
import Testing

@testable import FreightWire

/// The header limit is checked against a size counted without encoding; it must equal the encoded size, unknown
/// fields included (a header from a newer or hostile sender may carry them).
@Suite struct HeaderSizeTests {
    static func randomText(_ generator: inout SystemRandomNumberGenerator, maxCount: Int) -> String {
        let alphabet: [Character] = ["a", "Z", "/", "é", "→", "🚀", "0"]
        return String((0..<Int.random(in: 0...maxCount, using: &generator)).map { _ in alphabet.randomElement()! })
    }

    /// `header` as decoded from bytes that also carry field 99 (length-delimited, unknown to this version).
    static func withUnknownField(_ header: Freight_Wire_V1_MessageHeader, bytes: Int) throws
        -> Freight_Wire_V1_MessageHeader
    {
        var encoded = try header.serializedBytes() as [UInt8]
        func varint(_ value: Int) {
            var value = value
            repeat {
                encoded.append(UInt8(value & 0x7F) | (value >= 0x80 ? 0x80 : 0))
                value >>= 7
            } while value > 0
        }
        varint(99 << 3 | 2)  // field 99, length-delimited
        varint(bytes)
        encoded += [UInt8](repeating: 7, count: bytes)
        return try Freight_Wire_V1_MessageHeader(serializedBytes: encoded)
    }

    @Test func countedSizeIsTheEncodedSize() throws {
        var generator = SystemRandomNumberGenerator()
        for round in 0..<300 {
            var header = Freight_Wire_V1_MessageHeader()
            header.id = Bool.random() ? 0 : UInt64.random(in: 1...UInt64.max, using: &generator)
            header.length = [0, 1, 127, 128, UInt64.max, UInt64.random(in: 0...1 << 40, using: &generator)]
                .randomElement()!
            header.deadlineUnixNanos = Bool.random() ? UInt64.max : 0
            header.priority = Bool.random() ? 0 : UInt32.random(in: 0...UInt32.max, using: &generator)
            header.chunkBytes = Bool.random() ? 0 : UInt32.max
            header.source = Self.randomText(&generator, maxCount: 40)
            header.destination = Self.randomText(&generator, maxCount: 300)
            header.contentType = Self.randomText(&generator, maxCount: 20)
            header.traceparent = Self.randomText(&generator, maxCount: 60)
            header.tracestate = Self.randomText(&generator, maxCount: 200)
            header.replyTo = Self.randomText(&generator, maxCount: 80)
            for _ in 0..<Int.random(in: 0...20, using: &generator) {
                header.attributes[Self.randomText(&generator, maxCount: 30)] = Self.randomText(
                    &generator, maxCount: 600)
            }
            if round % 3 == 0 { header = try Self.withUnknownField(header, bytes: Int.random(in: 0...300)) }
            #expect(header.encodedSize == (try header.serializedBytes() as [UInt8]).count)
        }
    }

    @Test func unknownFieldsCountTowardTheLimit() throws {
        var header = Freight_Wire_V1_MessageHeader()
        header.id = 1
        header.destination = "a/b"
        header = try Self.withUnknownField(header, bytes: Limits.headerBytesMax)
        #expect(header.encodedSize > Limits.headerBytesMax)
        #expect(header.encodedSize == (try header.serializedBytes() as [UInt8]).count)
    }
}
