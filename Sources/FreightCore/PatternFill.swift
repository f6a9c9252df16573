/// A deterministic body: the bytes at any offset follow from a seed, so a receiver can check every byte of a
/// generated message without the sender keeping it. Used by `freight send --size`, the demo and benchmarks.
///
/// Byte `i` of message `seed` is byte `j % 8` (little-endian) of word `w = j / 8`, where `j = i % periodBytes`:
/// the splitmix64 of `w % 1024` keyed by the seed, XORed with `w`. Within a period (1 MiB and 64 bytes) no word
/// repeats, since the word's index is in every word. The period, 64 × 16,385 bytes, shares no factor but 64 with a
/// chunk size that is a power of two, so a chunk put at the wrong offset fails the check unless it moved by a
/// multiple of 16,385 chunks (16 GiB of 1 MiB chunks). The period lets a sender lend every chunk of a long
/// generated message as a window of one block of ``periodBytes`` plus a chunk, filled once
/// (``blockBytes(chunkBytes:)``, ``phase(of:)``): no bytes made per chunk, and a block that stays in the cache, as
/// iperf3 repeats its buffer. Filling and checking are a table lookup and an XOR per word, near the speed of memory.
public enum PatternFill {
    static let tableWords = 1024
    /// The bytes after which a generated body repeats: a multiple of 8 (whole words) and of no power of two past 64.
    public static let periodBytes = (1 << 20) + 64

    /// Where the bytes at `offset` of a generated body start in its first period.
    public static func phase(of offset: Int64) -> Int { Int(offset % Int64(periodBytes)) }

    /// The length of a block (the body's bytes from offset 0) that holds every chunk of at most `chunkBytes` as a
    /// window: chunk at `offset` is the block's bytes from ``phase(of:)``.
    public static func blockBytes(chunkBytes: Int) -> Int { periodBytes + chunkBytes }

    /// Fills `buffer` with the bytes of message `seed` starting at `offset`.
    public static func fill(_ buffer: UnsafeMutableRawBufferPointer, seed: UInt64, offset: Int64) {
        var done = 0
        var at = offset
        while done < buffer.count {
            let phase = phase(of: at)
            let count = min(buffer.count - done, periodBytes - phase)
            fillWithinPeriod(
                UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + count)]), seed: seed, offset: Int64(phase)
            )
            done += count
            at += Int64(count)
        }
    }

    /// Whether `buffer` holds exactly the bytes of message `seed` at `offset`.
    public static func check(_ buffer: UnsafeRawBufferPointer, seed: UInt64, offset: Int64) -> Bool {
        var done = 0
        var at = offset
        while done < buffer.count {
            let phase = phase(of: at)
            let count = min(buffer.count - done, periodBytes - phase)
            guard
                checkWithinPeriod(
                    UnsafeRawBufferPointer(rebasing: buffer[done..<(done + count)]), seed: seed, offset: Int64(phase))
            else { return false }
            done += count
            at += Int64(count)
        }
        return true
    }

    /// ``fill(_:seed:offset:)`` for bytes that do not cross the end of a period.
    private static func fillWithinPeriod(_ buffer: UnsafeMutableRawBufferPointer, seed: UInt64, offset: Int64) {
        var position = 0
        var at = UInt64(offset)
        while position < buffer.count && at % 8 != 0 {
            buffer[position] = byte(seed: seed, at: at)
            position += 1
            at += 1
        }
        let words = (buffer.count - position) / 8
        if words >= tableWords {
            withTable(seed: seed) { table in
                var index = at / 8
                var done = 0
                while done < words {
                    let start = Int(index % UInt64(tableWords))
                    let run = min(tableWords - start, words - done)
                    let out = buffer.baseAddress! + position + done * 8
                    for j in 0..<run {
                        let w = index &+ UInt64(j)
                        out.storeBytes(of: (table[start + j] ^ w).littleEndian, toByteOffset: j * 8, as: UInt64.self)
                    }
                    done += run
                    index &+= UInt64(run)
                }
            }
        } else {
            for j in 0..<words {
                buffer.storeBytes(
                    of: word(seed: seed, index: at / 8 + UInt64(j)).littleEndian, toByteOffset: position + j * 8,
                    as: UInt64.self)
            }
        }
        position += words * 8
        at += UInt64(words * 8)
        while position < buffer.count {
            buffer[position] = byte(seed: seed, at: at)
            position += 1
            at += 1
        }
    }

    /// ``check(_:seed:offset:)`` for bytes that do not cross the end of a period.
    private static func checkWithinPeriod(_ buffer: UnsafeRawBufferPointer, seed: UInt64, offset: Int64) -> Bool {
        var position = 0
        var at = UInt64(offset)
        while position < buffer.count && at % 8 != 0 {
            if buffer[position] != byte(seed: seed, at: at) { return false }
            position += 1
            at += 1
        }
        let words = (buffer.count - position) / 8
        var matches = true
        if words >= tableWords {
            withTable(seed: seed) { table in
                var index = at / 8
                var done = 0
                while done < words && matches {
                    let start = Int(index % UInt64(tableWords))
                    let run = min(tableWords - start, words - done)
                    let base = buffer.baseAddress! + position + done * 8
                    var difference: UInt64 = 0
                    for j in 0..<run {
                        let w = index &+ UInt64(j)
                        difference |=
                            UInt64(littleEndian: base.loadUnaligned(fromByteOffset: j * 8, as: UInt64.self))
                            ^ table[start + j] ^ w
                    }
                    matches = difference == 0
                    done += run
                    index &+= UInt64(run)
                }
            }
        } else {
            for j in 0..<words {
                let found = UInt64(
                    littleEndian: buffer.loadUnaligned(fromByteOffset: position + j * 8, as: UInt64.self))
                if found != word(seed: seed, index: at / 8 + UInt64(j)) { return false }
            }
        }
        guard matches else { return false }
        position += words * 8
        at += UInt64(words * 8)
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

    /// Word `index` of message `seed`.
    @inline(__always)
    static func word(seed: UInt64, index: UInt64) -> UInt64 {
        noise(seed: seed, index: index % UInt64(tableWords)) ^ index
    }

    /// splitmix64 of `index`, keyed by the seed.
    @inline(__always)
    static func noise(seed: UInt64, index: UInt64) -> UInt64 {
        var z = (seed ^ 0x5DEE_CE66_D1CE_4E5B) &+ index &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The seed's 1024 words of noise, made on the stack for one call (8 KiB: a few microseconds, against the
    /// megabyte a call of this size fills).
    private static func withTable(seed: UInt64, _ body: (UnsafeBufferPointer<UInt64>) -> Void) {
        withUnsafeTemporaryAllocation(of: UInt64.self, capacity: tableWords) { table in
            for i in 0..<tableWords { table[i] = noise(seed: seed, index: UInt64(i)) }
            body(UnsafeBufferPointer(table))
        }
    }
}
