import FreightCore

/// How many TCP connections a gateway link stripes over, and which congestion control they use (docs/wan.md,
/// "Stripes"). Pure: the link feeds it its round trip and, each second, what it carried and whether it had bytes
/// waiting the whole time (busy: the link, not the senders, held the messages back).
///
/// One TCP stream carries at most its window per round trip (a few MiB: `tcp_wmem`), so across a WAN one stream
/// fills a fraction of the path; several fill it. The planner starts from what a `assumedBytesPerSecond` path would
/// need at the measured round trip, then, from its second busy second on, adds stripes while each addition raised a
/// busy link's rate by at least `gain`; at the first that did not it goes back to the count before it (more
/// connections than pay off only overfill the path's queue: more losses), and stays (or stays at `stripesMax`).
public struct StripePlanner: Sendable, Equatable {
    /// Connections one gateway link has at most.
    public static let stripesMax = Limits.gatewayStripesMax
    /// Below this round trip a link is of the LAN class: one stripe, Reno (what measures best inside a site).
    public static let lanRTTNanos: UInt64 = 2_000_000
    /// What one stripe carries per round trip, as far as the planner assumes before it measures: about two thirds
    /// of what one stream moved through the WAN emulator (2.9 MB per round trip at 50 ms, `tcp_wmem` of 4 MiB).
    /// Measured with `freight bench --paths wan`: 3 stripes at 50 ms (from this) moved 98% of 1 Gbit/s where 5
    /// (from 1.5 MiB) moved 91%, and 12 at 200 ms as much as 16.
    public static let stripeWindowBytes: UInt64 = 2 << 20
    /// The path's rate assumed before the link was busy once (1 Gbit/s).
    public static let assumedBytesPerSecond: UInt64 = 125_000_000
    /// An addition pays off when the busy rate rose by this factor.
    public static let gain = 1.10

    public enum LinkClass: String, Sendable { case lan, wan }

    public private(set) var linkClass: LinkClass
    public private(set) var wanted: Int
    /// No further stripe paid off: the count stays.
    public private(set) var settled = false
    /// The busy rate measured with the count before the last addition, and that count.
    private var rateBefore: UInt64?
    private var countBefore = 0
    /// Busy seconds to let pass after an addition before judging it (new stripes need a few round trips to open).
    private var waiting = 0
    private let rttNanos: UInt64

    public init(rttNanos: UInt64) {
        self.rttNanos = rttNanos
        if rttNanos < Self.lanRTTNanos {
            linkClass = .lan
            wanted = 1
            settled = true
        } else {
            linkClass = .wan
            let bdp = Double(Self.assumedBytesPerSecond) * Double(rttNanos) / 1e9
            wanted = min(Self.stripesMax, max(2, Int((bdp / Double(Self.stripeWindowBytes)).rounded())))
            // The first count is judged, as every later one, once its stripes had time to grow: a first busy
            // second measures their start, and that would make any addition look as if it paid off.
            waiting = Self.judgeAfter(rttNanos: rttNanos)
        }
    }

    /// The congestion control of the link's connections: BBR across a WAN (it keeps its rate through random loss
    /// and does not fill the bottleneck's queue), Reno inside a site.
    public var congestionControl: String { linkClass == .wan ? "bbr" : "reno" }

    /// One second of the link: the body bytes it carried (the larger direction) and whether bytes waited to go the
    /// whole second. Returns the new count when it changed: more after an addition that paid off, the count before
    /// it after one that did not.
    public mutating func measured(bytesPerSecond rate: UInt64, busy: Bool) -> Int? {
        guard busy, !settled else { return nil }
        if waiting > 0 {
            waiting -= 1
            return nil
        }
        if let before = rateBefore, Double(rate) < Double(before) * Self.gain {
            settled = true
            wanted = countBefore
            return wanted
        }
        guard wanted < Self.stripesMax else {
            settled = true
            return nil
        }
        rateBefore = rate
        countBefore = wanted
        wanted = min(Self.stripesMax, wanted + max(1, wanted / 2))
        waiting = Self.judgeAfter(rttNanos: rttNanos)
        return wanted
    }

    /// Busy seconds to let pass before judging a count: about twenty round trips (at least one second), for its
    /// stripes to grow.
    static func judgeAfter(rttNanos: UInt64) -> Int { max(1, Int((Double(rttNanos) * 20 / 1e9).rounded(.up))) }
}
