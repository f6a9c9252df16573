/// Message ids that never repeat within one sequence and look random across sequences: a random 64-bit start,
/// counted up by an odd constant and passed through the SplitMix64 finaliser (a bijection), so two processes'
/// ids collide no more often than random ones would, without a `getrandom(2)` call per message.
public struct IDSequence: Sendable {
    private var state: UInt64

    /// A sequence with a random start.
    public init() {
        var generator = SystemRandomNumberGenerator()
        self.init(seed: generator.next())
    }

    /// A sequence with a given start (tests).
    public init(seed: UInt64) {
        state = seed
    }

    /// The next id; never 0 (0 means "none" on the wire).
    public mutating func next() -> UInt64 {
        while true {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            if z != 0 { return z }
        }
    }
}
