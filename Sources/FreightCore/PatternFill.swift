/// A deterministic body: the bytes at any offset follow from a seed, so a receiver can check every byte of a
/// generated message without the sender keeping it. Used by `freight send --size`, the demo and benchmarks.
///
/// Byte `i` of message `seed` is byte `i % 8` (little-endian) of word `i / 8`, a splitmix64 of the word's index.
public enum PatternFill {
    /// Fills `buffer` with the bytes of message `seed` starting at `offset`.
    public static func fill(_ buffer: UnsafeMutableRawBufferPointer, seed: UInt64, offset: Int64) {
        var position = 0
        var at = UInt64(offset)
        while position < buffer.count && at % 8 != 0 {
            buffer[position] = byte(seed: seed, at: at)
            position += 1
            at += 1
        }
        while buffer.count - position >= 8 {
            buffer.storeBytes(of: word(seed: seed, index: at / 8).littleEndian, toByteOffset: position, as: UInt64.self)
            position += 8
            at += 8
        }
        while position < buffer.count {
            buffer[position] = byte(seed: seed, at: at)
            position += 1
            at += 1
        }
    }

    /// Whether `buffer` holds exactly the bytes of message `seed` at `offset`.
    public static func check(_ buffer: UnsafeRawBufferPointer, seed: UInt64, offset: Int64) -> Bool {
        var position = 0
        var at = UInt64(offset)
        while position < buffer.count && at % 8 != 0 {
            if buffer[position] != byte(seed: seed, at: at) { return false }
            position += 1
            at += 1
        }
        while buffer.count - position >= 8 {
            if UInt64(littleEndian: buffer.loadUnaligned(fromByteOffset: position, as: UInt64.self))
                != word(seed: seed, index: at / 8)
            {
                return false
            }
            position += 8
            at += 8
        }
        while position < buffer.count {
            if buffer[position] != byte(seed: seed, at: at) { return false }
            position += 1
            at += 1
        }
        return true
    }

    @inline(__always)
    static func byte(seed: UInt64, at: UInt64) -> UInt8 {
        UInt8(truncatingIfNeeded: word(seed: seed, index: at / 8) >> ((at % 8) * 8))
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
