import FreightNode
import FreightTransport
import Testing

@Suite struct StripePlannerTests {
    static let ms: UInt64 = 1_000_000

    @Test func aLinkInsideASiteKeepsOneRenoStripe() {
        var planner = StripePlanner(rttNanos: 300_000)
        #expect(planner.linkClass == .lan && planner.congestionControl == "reno" && planner.wanted == 1)
        for _ in 0..<10 { #expect(planner.measured(bytesPerSecond: 1 << 30, busy: true) == nil) }
        #expect(planner.wanted == 1)
    }

    @Test func aWANLinkStartsFromItsRoundTripWithBBR() {
        let fifty = StripePlanner(rttNanos: 50 * Self.ms)
        #expect(fifty.linkClass == .wan && fifty.congestionControl == "bbr")
        // 1 Gbit/s × 50 ms = 6.25 MB, at 2 MiB per stripe: 3; at 200 ms, 12.
        #expect(fifty.wanted == 3)
        #expect(StripePlanner(rttNanos: 5 * Self.ms).wanted == 2)
        #expect(StripePlanner(rttNanos: 200 * Self.ms).wanted == 12)
        // The nearest count: a round trip a little over 50 ms (as measured) is still 3.
        #expect(StripePlanner(rttNanos: 54 * Self.ms).wanted == 3)
    }

    @Test func stripesAreAddedWhileTheyPayOffAndTheLastThatDidNotIsTakenBack() {
        var planner = StripePlanner(rttNanos: 50 * Self.ms)
        // Not busy (the senders, not the link, held the rate): nothing changes.
        #expect(planner.measured(bytesPerSecond: 10_000_000, busy: false) == nil)
        // The first busy second is the stripes' start: not judged.
        #expect(planner.measured(bytesPerSecond: 20_000_000, busy: true) == nil)
        // Busy: one more is tried, then judged after a second of it.
        #expect(planner.measured(bytesPerSecond: 60_000_000, busy: true) == 4)
        #expect(planner.measured(bytesPerSecond: 61_000_000, busy: true) == nil)
        // It raised the rate by more than a tenth: more are tried (half again).
        #expect(planner.measured(bytesPerSecond: 90_000_000, busy: true) == 6)
        #expect(planner.measured(bytesPerSecond: 90_000_000, busy: true) == nil)
        // The last did not pay off: back to the count before it, which stays, whatever comes.
        #expect(planner.measured(bytesPerSecond: 95_000_000, busy: true) == 4)
        #expect(planner.settled && planner.wanted == 4)
        #expect(planner.measured(bytesPerSecond: 300_000_000, busy: true) == nil)
    }

    @Test func theCountStopsAtTheLimit() {
        var planner = StripePlanner(rttNanos: 100 * Self.ms)
        var rate: UInt64 = 10_000_000
        for _ in 0..<40 {
            rate *= 2
            _ = planner.measured(bytesPerSecond: rate, busy: true)
        }
        #expect(planner.wanted == StripePlanner.stripesMax && planner.settled)
    }
}

@Suite struct GatewayPeerNameTests {
    /// `--gateway-peer NAME@HOST:PORT`: NAME goes in SNI, so it must be a DNS name, never an address.
    @Test func serverNamesAreDNSNames() {
        for good in ["gw-a.freight.test", "a1", "east-west.cluster-a.example.com"] {
            #expect(GatewayConfiguration.isServerName(good), "\(good)")
        }
        for bad in ["", "127.0.0.1", "-a.b", "a-.b", "a..b", "a b", "ä.b", String(repeating: "a", count: 64)] {
            #expect(!GatewayConfiguration.isServerName(bad), "\(bad)")
        }
    }
}
