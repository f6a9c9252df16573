/// A deterministic body: the bytes at any offset follow from a seed, so a receiver can check every byte of a
/// generated message without the sender keeping it. Used by `freight send --size`, the demo and benchmarks.
public enum PatternFill {
    /// Fills `buffer` with the bytes of the message `seed` starting at `offset` (which must be a multiple of 8).
    public static func fill(_ buffer: UnsafeMutableRawBufferPointer, seed: UInt64, offset: Int64) {
        precondition(offset % 8 == 0, "pattern offsets are multiples of 8")
        let words = buffer.count / 8
        var index = UInt64(offset / 8)
        if words > 0 {
            let typed = buffer.baseAddress!.bindMemory(to: UInt64.self, capacity: words)
            for i in 0..<words {
                typed[i] = word(seed: seed, index: index)
                index &+= 1
            }
        }
        let tail = buffer.count - words * 8
        if tail > 0 {
            var last = word(seed: seed, index: index)
            withUnsafeBytes(of: &last) { bytes in
                for i in 0..<tail { buffer[words * 8 + i] = bytes[i] }
            }
        }
    }

    /// Whether `buffer` holds exactly the bytes of message `seed` at `offset`.
    public static func check(_ buffer: UnsafeRawBufferPointer, seed: UInt64, offset: Int64) -> Bool {
        precondition(offset % 8 == 0, "pattern offsets are multiples of 8")
        let words = buffer.count / 8
        var index = UInt64(offset / 8)
        for i in 0..<words {
            if buffer.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) != word(seed: seed, index: index) {
                return false
            }
            index &+= 1
        }
        let tail = buffer.count - words * 8
        if tail > 0 {
            var last = word(seed: seed, index: index)
            let equal = withUnsafeBytes(of: &last) { bytes in
                (0..<tail).allSatisfy { buffer[words * 8 + $0] == bytes[$0] }
            }
            if !equal { return false }
        }
        return true
    }

    /// splitmix64 of the word index, keyed by the seed.
    @inline(__always)
    static func word(seed: UInt64, index: UInt64) -> UInt64 {
        var z = (seed ^ 0x5DEE_CE66_D1CE_4E5B) &+ index &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
