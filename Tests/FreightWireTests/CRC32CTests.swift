import FreightWire
import Testing

@Suite struct CRC32CTests {
    /// Bit by bit, straight from the definition: slow, obviously right.
    static func reference(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        }
        return ~crc
    }

    @Test func knownVector() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }

    /// Sizes around the 3-way interleave's block (3 x 8 KiB) and unaligned starts.
    @Test(arguments: [1, 7, 8, 63, 4096, 24_575, 24_576, 24_577, 49_152 + 13, 100_003])
    func matchesTheDefinition(size: Int) {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<size + 3).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for start in 0..<3 {
            let slice = Array(bytes[start..<start + size])
            #expect(CRC32C.checksum(slice) == Self.reference(slice))
        }
    }

    @Test func continuesAcrossPieces() {
        let bytes = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let whole = CRC32C.checksum(bytes)
        let first = bytes[..<30_001].withUnsafeBytes { CRC32C.checksum($0) }
        let both = bytes[30_001...].withUnsafeBytes { CRC32C.checksum($0, continuing: first) }
        #expect(whole == both)
    }

    /// Copying and checksumming in one pass gives the same checksum and an exact copy, for sizes on both sides of
    /// the interleaved blocks, unaligned ends, and a continued checksum; nothing past the end is written.
    @Test(arguments: [0, 1, 7, 8, 4096, 24_575, 24_576, 24_577, 49_152 + 13, 100_003])
    func copiesAndChecksumsInOnePass(size: Int) {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<size + 3).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for (start, seed) in [(0, UInt32(0)), (1, 0x1234_5678), (3, 0)] {
            let slice = Array(bytes[start..<start + size])
            var target = [UInt8](repeating: 0xA5, count: size + 11)
            let crc = slice.withUnsafeBytes { source in
                target.withUnsafeMutableBytes { CRC32C.copy(source, to: $0.baseAddress! + 5, continuing: seed) }
            }
            #expect(crc == slice.withUnsafeBytes { CRC32C.checksum($0, continuing: seed) })
            #expect(Array(target[5..<5 + size]) == slice)
            #expect(target[..<5].allSatisfy { $0 == 0xA5 } && target[(5 + size)...].allSatisfy { $0 == 0xA5 })
        }
    }
}
