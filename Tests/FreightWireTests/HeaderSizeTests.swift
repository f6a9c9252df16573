import FreightCore
import Testing

@testable import FreightWire

/// The header limit is checked against a bound found without encoding; the bound must never be under the encoded
/// size, and the check must refuse exactly the headers whose encoding is over the limit.
@Suite struct HeaderSizeTests {
    static func randomText(_ generator: inout SystemRandomNumberGenerator, maxCount: Int) -> String {
        let alphabet: [Character] = ["a", "Z", "/", "é", "→", "🚀", "0"]
        return String((0..<Int.random(in: 0...maxCount, using: &generator)).map { _ in alphabet.randomElement()! })
    }

    @Test func boundIsNeverUnderTheEncodedSize() throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            var header = Freight_Wire_V1_MessageHeader()
            header.id = UInt64.random(in: 0...UInt64.max, using: &generator)
            header.length = Bool.random() ? UInt64.max : UInt64.random(in: 0...1 << 40, using: &generator)
            header.deadlineUnixNanos = Bool.random() ? UInt64.max : 0
            header.priority = UInt32.random(in: 0...UInt32.max, using: &generator)
            header.chunkBytes = UInt32.max
            header.source = Self.randomText(&generator, maxCount: 40)
            header.destination = Self.randomText(&generator, maxCount: 300)
            header.contentType = Self.randomText(&generator, maxCount: 20)
            header.traceparent = Self.randomText(&generator, maxCount: 60)
            header.tracestate = Self.randomText(&generator, maxCount: 200)
            for _ in 0..<Int.random(in: 0...20, using: &generator) {
                header.attributes[Self.randomText(&generator, maxCount: 30)] = Self.randomText(
                    &generator, maxCount: 600)
            }
            let exact = try header.serializedBytes() as [UInt8]
            #expect(header.encodedSizeBound >= exact.count)
            #expect(header.encodedSize(ifOver: exact.count) == nil)
            #expect(header.encodedSize(ifOver: exact.count - 1) == exact.count)
        }
    }

    @Test func headersAtTheLimitPassAndOneByteMoreDoesNot() throws {
        var header = Freight_Wire_V1_MessageHeader()
        header.id = 1
        header.destination = "a/b"
        header.length = 5
        header.attributes["k"] = ""
        let base = (try header.serializedBytes() as [UInt8]).count
        // Grow the attribute until the encoded header is exactly at the limit (the length prefix grows with it).
        var fill = Limits.headerBytesMax - base
        while true {
            header.attributes["k"] = String(repeating: "x", count: fill)
            let count = (try header.serializedBytes() as [UInt8]).count
            if count <= Limits.headerBytesMax { break }
            fill -= count - Limits.headerBytesMax
        }
        #expect((try header.serializedBytes() as [UInt8]).count == Limits.headerBytesMax)
        #expect(header.encodedSizeBound > Limits.headerBytesMax)  // the bound alone would refuse it
        #expect(header.encodedSize(ifOver: Limits.headerBytesMax) == nil)
        header.attributes["k"]! += "x"
        #expect(header.encodedSize(ifOver: Limits.headerBytesMax) == Limits.headerBytesMax + 1)
    }
}
