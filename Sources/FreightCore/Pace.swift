/// A reading rate kept on average since the first byte: how long to wait before taking the next `count` bytes so
/// that no more than `bytesPerSecond` have been taken by then. Pure; the caller sleeps.
public struct Pace: Sendable {
    public let bytesPerSecond: Int
    private var started: ContinuousClock.Instant?
    private var taken = 0

    public init(bytesPerSecond: Int) {
        precondition(bytesPerSecond > 0, "a pace is a positive rate")
        self.bytesPerSecond = bytesPerSecond
    }

    /// The wait before `count` more bytes may be taken at `now` (zero when the reader is behind its rate), and
    /// counts them as taken.
    public mutating func delay(taking count: Int, at now: ContinuousClock.Instant) -> Duration {
        let start = started ?? now
        started = start
        taken += count
        let due = start + .seconds(Double(taken) / Double(bytesPerSecond))
        return due > now ? due - now : .zero
    }
}
