import FreightCore
import Testing

@Suite struct AddressTests {
    @Test(arguments: ["llm", "llm/decode/3", "a.b_c-d/0", String(repeating: "a/", count: 15) + "a"])
    func validAddressesParse(_ text: String) throws {
        #expect(try Address(text).description == text)
    }

    /// Node addresses: each kind reads back as written, and `inproc://` needs a name.
    @Test func nodeAddressesOfEveryKind() throws {
        #expect(try NodeAddress("127.0.0.1:7400") == .tcp(host: "127.0.0.1", port: 7400))
        #expect(try NodeAddress("[fd00::1]:7400").description == "[fd00::1]:7400")
        #expect(try NodeAddress("/run/freight.sock") == .unix(path: "/run/freight.sock"))
        #expect(try NodeAddress("inproc://n1") == .inProcess(name: "n1"))
        #expect(NodeAddress.inProcess(name: "n1").description == "inproc://n1")
        #expect(throws: FreightError.self) { try NodeAddress("inproc://") }
        #expect(throws: FreightError.self) { try NodeAddress("host:99999") }
    }

    @Test func errorsNameTheSegmentAndTheReason() {
        func message(_ text: String) -> String {
            do {
                _ = try Address(text)
                return "parsed"
            } catch {
                #expect(error.code == .invalidAddress)
                return error.message
            }
        }
        #expect(message("llm/Decode/3").contains("segment 2 'Decode' has 'D'"))
        #expect(message("llm//3").contains("segment 2 is empty"))
        #expect(message("").contains("empty"))
        #expect(message("llm/*/3").contains("wildcards belong in patterns"))
        #expect(message(String(repeating: "a/", count: 16) + "a").contains("17 segments, at most 16"))
        #expect(message(String(repeating: "a", count: 256)).contains("256 bytes, at most 255"))
        #expect(message("llm/dé").contains("segment 2"))
        #expect(message("/llm").contains("segment 1 is empty"))
    }

    @Test func patternGrammar() throws {
        #expect(try AddressPattern("llm/*/3").description == "llm/*/3")
        #expect(try AddressPattern("llm/**").description == "llm/**")
        #expect(try AddressPattern("**").description == "**")
        #expect(throws: FreightError.self) { try AddressPattern("llm/**/3") }
        #expect(throws: FreightError.self) { try AddressPattern("llm/a*") }
        #expect(try AddressPattern("llm/x").isLiteral)
        #expect(try !AddressPattern("llm/*").isLiteral)
    }

    @Test(arguments: [
        ("llm/*/3", "llm/decode/3", true),
        ("llm/*/3", "llm/decode/4", false),
        ("llm/*/3", "llm/3", false),
        ("llm/**", "llm", true),
        ("llm/**", "llm/a/b/c", true),
        ("llm/**", "ll", false),
        ("**", "anything/at/all", true),
        ("a/*", "a/b/c", false),
        ("a/b", "a/b", true),
    ])
    func patternMatching(pattern: String, address: String, expected: Bool) throws {
        #expect(try AddressPattern(pattern).matches(Address(address)) == expected)
    }

    @Test func overlaps() throws {
        #expect(try AddressPattern("llm/**").overlaps(AddressPattern("llm/*/3")))
        #expect(try AddressPattern("llm/*/3").overlaps(AddressPattern("llm/x/*")))
        #expect(try !AddressPattern("llm/*/3").overlaps(AddressPattern("llm/x/4")))
        #expect(try !AddressPattern("a/b").overlaps(AddressPattern("a/b/c")))
    }

    /// A route narrowed by a gateway's export or import patterns (docs/gateways.md).
    @Test(
        arguments: [
            ("ckpt/**", "ckpt/eu/**", "ckpt/eu/**"),
            ("a/**", "*/b", "a/b"),
            ("a/*/c", "a/b/**", "a/b/c"),
            ("*/*", "**", "*/*"),
            ("a/**", "a", "a"),
            ("a/b", "a/c", nil),
            ("a/b", "a/b/c", nil),
            ("llm/*/3", "llm/x/*", "llm/x/3"),
        ] as [(String, String, String?)])
    func intersections(a: String, b: String, expected: String?) throws {
        let (first, second) = (try AddressPattern(a), try AddressPattern(b))
        #expect(first.intersection(second)?.description == expected)
        #expect(second.intersection(first)?.description == expected)
        // The intersection matches only what both match, and exists exactly when they overlap.
        #expect((first.intersection(second) != nil) == first.overlaps(second))
        if let both = first.intersection(second) {
            #expect(first.covers(both) && second.covers(both))
        }
    }

    @Test func sizesParseAndPrint() throws {
        #expect(try ByteCount.parse("4096") == 4096)
        #expect(try ByteCount.parse("64KiB") == 65536)
        #expect(try ByteCount.parse("1MiB") == 1 << 20)
        #expect(try ByteCount.parse("1GiB") == 1 << 30)
        #expect(try ByteCount.parse("1.5KiB") == 1536)
        #expect(throws: FreightError.self) { try ByteCount.parse("12XB") }
        #expect(throws: FreightError.self) { try ByteCount.parse("abc") }
        #expect(ByteCount.format(1 << 30) == "1 GiB")
        #expect(ByteCount.format(1536) == "1.5 KiB")
        #expect(ByteCount.format(17) == "17 B")
    }

    @Test func patternFillChecksEveryByte() {
        var bytes = [UInt8](repeating: 0, count: 1000)
        bytes.withUnsafeMutableBytes { PatternFill.fill($0, seed: 7, offset: 4096) }
        #expect(bytes.withUnsafeBytes { PatternFill.check($0, seed: 7, offset: 4096) })
        #expect(!bytes.withUnsafeBytes { PatternFill.check($0, seed: 8, offset: 4096) })
        #expect(!bytes.withUnsafeBytes { PatternFill.check($0, seed: 7, offset: 4104) })
        bytes[999] ^= 1
        #expect(!bytes.withUnsafeBytes { PatternFill.check($0, seed: 7, offset: 4096) })
    }

    /// A generated body repeats after `PatternFill.periodBytes` and only then (a sender lends every chunk of a long
    /// one from one block): bytes one period on are the same, a fill across the end of a period is the fills on
    /// either side of it, and a chunk checked at the offset of any other chunk in the period fails.
    @Test func patternFillRepeatsAfterItsPeriodOnly() {
        let period = PatternFill.periodBytes
        let chunk = 64 << 10
        func filled(_ count: Int, at offset: Int) -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: count)
            bytes.withUnsafeMutableBytes { PatternFill.fill($0, seed: 11, offset: Int64(offset)) }
            return bytes
        }
        #expect(filled(chunk, at: period - 1000) == filled(1000, at: period - 1000) + filled(chunk - 1000, at: 0))
        #expect(filled(chunk, at: 3 * period + 12345) == filled(chunk, at: 12345))
        #expect(PatternFill.phase(of: Int64(5 * period + 77)) == 77)
        let across = filled(chunk, at: 2 * period - 8)
        #expect(across.withUnsafeBytes { PatternFill.check($0, seed: 11, offset: Int64(2 * period - 8)) })
        #expect(!across.withUnsafeBytes { PatternFill.check($0, seed: 11, offset: Int64(2 * period)) })
        let chunks = (0..<(period / chunk)).map { filled(chunk, at: $0 * chunk) }
        for (index, bytes) in chunks.enumerated() {
            for other in 0..<(period / chunk) {
                let placed = bytes.withUnsafeBytes { PatternFill.check($0, seed: 11, offset: Int64(other * chunk)) }
                #expect(placed == (other == index), "chunk \(index) checked at chunk \(other)'s offset")
            }
        }
    }
}
