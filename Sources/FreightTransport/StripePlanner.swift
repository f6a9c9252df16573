import FreightCore

/// How many TCP connections a gateway link stripes over, and which congestion control they use (docs/wan.md,
/// "Stripes"). Pure: the link feeds it its round trip and, each second, what it carried and whether it had bytes
/// waiting the whole time (busy: the link, not the senders, held the messages back).
///
/// One TCP stream carries at most its window per round trip (a few MiB: `tcp_wmem`), so across a WAN one stream
/// fills a fraction of the path; several fill it. The planner starts from what a `assumedBytesPerSecond` path would
/// need at the measured round trip, then, from its second busy second on, adds stripes while each addition raised a
/// busy link's rate by at least `gain`, and stops at the first that did not (or at `stripesMax`).
public struct StripePlanner: Sendable, Equatable {
    /// Connections one gateway link has at most.
    public static let stripesMax = Limits.gatewayStripesMax
    /// Below this round trip a link is of the LAN class: one stripe, Reno (what measures best inside a site).
    public static let lanRTTNanos: UInt64 = 2_000_000
    /// What one stripe carries per round trip, as far as the planner assumes before it measures.
    public static let stripeWindowBytes: UInt64 = 1_536 << 10
    /// The path's rate assumed before the link was busy once (1 Gbit/s).
    public static let assumedBytesPerSecond: UInt64 = 125_000_000
    /// An addition pays off when the busy rate rose by this factor.
    public static let gain = 1.10

    public enum LinkClass: String, Sendable { case lan, wan }

    public private(set) var linkClass: LinkClass
    public private(set) var wanted: Int
    /// No further stripe paid off: the count stays.
    public private(set) var settled = false
    /// The busy rate measured with the count before the last addition.
    private var rateBefore: UInt64?
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
            wanted = min(Self.stripesMax, max(2, Int((bdp / Double(Self.stripeWindowBytes)).rounded(.up))))
            // The first count is judged, as every later one, once its stripes had time to grow: a first busy
            // second measures their start, and that would make any addition look as if it paid off.
            waiting = Self.judgeAfter(rttNanos: rttNanos)
        }
    }

    /// The congestion control of the link's connections: BBR across a WAN (it keeps its rate through random loss
    /// and does not fill the bottleneck's queue), Reno inside a site.
    public var congestionControl: String { linkClass == .wan ? "bbr" : "reno" }

    /// One second of the link: the body bytes it carried (the larger direction) and whether bytes waited to go the
    /// whole second. Returns the new count when it changed.
    public mutating func measured(bytesPerSecond rate: UInt64, busy: Bool) -> Int? {
        guard busy, !settled else { return nil }
        if waiting > 0 {
            waiting -= 1
            return nil
        }
        if let before = rateBefore, Double(rate) < Double(before) * Self.gain {
            settled = true
            return nil
        }
        guard wanted < Self.stripesMax else {
            settled = true
            return nil
        }
        rateBefore = rate
        wanted = min(Self.stripesMax, wanted + max(1, wanted / 2))
        waiting = Self.judgeAfter(rttNanos: rttNanos)
        return wanted
    }

    /// Busy seconds to let pass before judging a count: about twenty round trips (at least one second), for its
    /// stripes to grow.
    static func judgeAfter(rttNanos: UInt64) -> Int { max(1, Int((Double(rttNanos) * 20 / 1e9).rounded(.up))) }
}
