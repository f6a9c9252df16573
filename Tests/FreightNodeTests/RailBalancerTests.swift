import FreightTransport
import Testing

/// The multi-rail chooser driven with simulated rails: each rail drains at its own rate, the balancer sees only
/// the counters a node sees (bytes the kernel took, bytes still queued).
@Suite struct RailBalancerTests {
    /// Sends `chunks` chunks over rails draining at `rates` bytes/s; returns bytes sent per rail and the time.
    func simulate(rates: [Double], nominal: [Double], chunks: Int, chunk: Int = 4 << 20, window: Int = 32 << 20)
        -> (bytes: [Int], seconds: Double)
    {
        var balancer = RailBalancer(nominalBytesPerSecond: nominal)
        var queued = Array(repeating: 0, count: rates.count)
        var drained = Array(repeating: UInt64(0), count: rates.count)
        var sent = Array(repeating: 0, count: rates.count)
        var now: UInt64 = 0
        let step: UInt64 = 1_000_000  // 1 ms
        var remaining = chunks
        while remaining > 0 || queued.contains(where: { $0 > 0 }) {
            // Drain for one step.
            for rail in rates.indices {
                let take = min(queued[rail], Int(rates[rail] * Double(step) / 1e9))
                queued[rail] -= take
                drained[rail] += UInt64(take)
            }
            now += step
            balancer.observe(nowNanos: now, drained: drained, pending: queued.map { Optional($0) })
            // Fill up to the window.
            while remaining > 0, queued.reduce(0, +) + chunk <= window {
                let rail = balancer.choose(pending: queued.map { Optional($0) }, chunkBytes: chunk)!
                queued[rail] += chunk
                sent[rail] += chunk
                remaining -= 1
            }
        }
        return (sent, Double(now) / 1e9)
    }

    @Test func equalRailsShareEqually() {
        let result = simulate(rates: [250e6, 250e6], nominal: [0, 0], chunks: 256)
        #expect(abs(result.bytes[0] - result.bytes[1]) <= 2 * (4 << 20))
        // 1 GiB at 500 MB/s: 2.15 s.
        #expect(result.seconds < 2.3)
    }

    @Test func aRailTwiceAsFastCarriesTwiceTheBytesEvenWhenToldOtherwise() {
        // Nominal speeds say the opposite of the truth; measurement corrects it.
        let result = simulate(rates: [250e6, 125e6], nominal: [1e9, 4e9], chunks: 256)
        let share = Double(result.bytes[0]) / Double(result.bytes.reduce(0, +))
        #expect((0.6...0.72).contains(share), "\(result.bytes)")
        #expect(result.seconds < Double(1 << 30) / 375e6 * 1.12)
    }

    @Test func measuredRatesFollowTheRails() {
        var balancer = RailBalancer(nominalBytesPerSecond: [0, 0])
        var drained: [UInt64] = [0, 0]
        for tick in 1...20 {
            drained[0] += 25_000_000  // 500 MB/s over 50 ms
            drained[1] += 5_000_000  // 100 MB/s
            balancer.observe(nowNanos: UInt64(tick) * 50_000_000, drained: drained, pending: [1, 1])
        }
        #expect(balancer.measured == [true, true])
        #expect(abs(balancer.rates[0] - 500e6) < 1e6 && abs(balancer.rates[1] - 100e6) < 1e6)
        // An idle rail (nothing queued) is not measured: its drain says nothing about its capacity.
        var idle = RailBalancer(nominalBytesPerSecond: [0, 0])
        idle.observe(nowNanos: 0, drained: [0, 0], pending: [0, 1])
        idle.observe(nowNanos: 100_000_000, drained: [1000, 1000], pending: [0, 1])
        #expect(idle.measured == [false, true])
        // A counter that goes back (a new connection) gives no sample.
        idle.observe(nowNanos: 200_000_000, drained: [0, 0], pending: [1, 1])
        #expect(idle.rates[1] == 10_000)
    }

    @Test func aRailWithoutConnectionsIsNeverChosen() {
        let balancer = RailBalancer(nominalBytesPerSecond: [1e9, 1e12])
        #expect(balancer.choose(pending: [0, nil], chunkBytes: 1) == 0)
        #expect(balancer.choose(pending: [nil, nil], chunkBytes: 1) == nil)
        #expect(balancer.choose(pending: [100 << 20, 0], chunkBytes: 1 << 20) == 1)
    }
}
