import FreightWire
import Testing

@Suite struct CRC32CTests {
    /// Bit by bit, straight from the definition: slow, obviously right.
    static func reference(_ bytes: [UInt8], continuing start: UInt32 = 0) -> UInt32 {
        var crc: UInt32 = ~start
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        }
        return ~crc
    }

    @Test func knownVector() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(Self.reference(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }

    /// Every implementation this CPU has, against the definition: sizes around the carry-less fold's 256-byte steps
    /// and 512-byte threshold and the crc32 instruction's 3 x 8 KiB interleave, unaligned starts, a continued
    /// checksum; with and without a copy, which must be exact and write nothing past its end.
    @Test(arguments: [
        0, 1, 7, 8, 63, 255, 256, 511, 512, 513, 1023, 1031, 4096, 24_575, 24_576, 24_577, 49_152 + 13, 100_003,
    ])
    func matchesTheDefinition(size: Int) {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<size + 3).map { _ in UInt8.random(in: 0...255, using: &rng) }
        #expect(CRC32C.Method.table.isAvailable)
        for method in CRC32C.Method.allCases where method.isAvailable {
            for (start, seed) in [(0, UInt32(0)), (1, 0x1234_5678), (3, 0xFFFF_FFFF)] {
                let slice = Array(bytes[start..<start + size])
                let expected = Self.reference(slice, continuing: seed)
                let plain = slice.withUnsafeBytes { CRC32C.checksum($0, method: method, continuing: seed) }
                #expect(plain == expected, "\(method), \(size) bytes from \(start)")
                var target = [UInt8](repeating: 0xA5, count: size + 11)
                let copied = slice.withUnsafeBytes { source in
                    target.withUnsafeMutableBytes {
                        CRC32C.checksum(source, method: method, copyingTo: $0.baseAddress! + 5, continuing: seed)
                    }
                }
                #expect(copied == expected, "\(method) with a copy, \(size) bytes from \(start)")
                #expect(Array(target[5..<5 + size]) == slice)
                #expect(target[..<5].allSatisfy { $0 == 0xA5 } && target[(5 + size)...].allSatisfy { $0 == 0xA5 })
            }
        }
        // The default entry points use the fastest of them.
        let slice = Array(bytes[1..<1 + size])
        #expect(CRC32C.checksum(slice) == Self.reference(slice, continuing: 0))
        var target = [UInt8](repeating: 0, count: size)
        let copied = slice.withUnsafeBytes { source in
            target.withUnsafeMutableBytes { CRC32C.copy(source, to: $0.baseAddress!) }
        }
        #expect(copied == Self.reference(slice, continuing: 0) && target == slice)
    }

    @Test func continuesAcrossPieces() {
        let bytes = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let whole = CRC32C.checksum(bytes)
        let first = bytes[..<30_001].withUnsafeBytes { CRC32C.checksum($0) }
        let both = bytes[30_001...].withUnsafeBytes { CRC32C.checksum($0, continuing: first) }
        #expect(whole == both)
    }
}
