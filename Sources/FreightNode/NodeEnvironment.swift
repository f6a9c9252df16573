import FreightCore
import NIOCore
import Synchronization

/// The time and chance a node reads, injected so that a run of the node's parts can replay: the system's by default;
/// a test or simulation gives a ``ManualClock`` and a seed. Hold times, stall and hold limits, heartbeats, the flow
/// table's clock and the node's incarnation read it. (The loop's own timers — the second-by-second `maintain` — still
/// fire on the system's time; a simulation calls what they call itself.) Secrets, such as the token that names an
/// app's descriptor link, always come from the system's generator.
public struct NodeEnvironment: Sendable {
    /// Monotonic nanoseconds.
    public var nowNanos: @Sendable () -> UInt64
    /// A random number, for what a node decides by chance.
    public var random: @Sendable () -> UInt64

    public init(nowNanos: @escaping @Sendable () -> UInt64, random: @escaping @Sendable () -> UInt64) {
        self.nowNanos = nowNanos
        self.random = random
    }

    public static let system = NodeEnvironment(
        nowNanos: { NIODeadline.now().uptimeNanoseconds }, random: { UInt64.random(in: 1...UInt64.max) })

    /// Time from `clock`, chance from a generator seeded with `seed`.
    public static func manual(_ clock: ManualClock, seed: UInt64) -> NodeEnvironment {
        let generator = Mutex(SeededRandom(seed: seed))
        return NodeEnvironment(
            nowNanos: { clock.nowNanos }, random: { generator.withLock { $0.next(in: 1...UInt64.max) } })
    }
}

/// A clock that moves only when told to.
public final class ManualClock: Sendable {
    private let nanos: Mutex<UInt64>

    public init(startNanos: UInt64 = 1_000_000_000) {
        nanos = Mutex(startNanos)
    }

    public var nowNanos: UInt64 { nanos.withLock { $0 } }

    public func advance(by duration: Duration) {
        let (seconds, attoseconds) = duration.components
        let delta = UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
        nanos.withLock { $0 &+= delta }
    }
}
