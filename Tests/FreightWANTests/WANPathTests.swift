import FreightCore
import Testing

@testable import FreightWAN

@Suite struct WANPathTests {
    static let ms: UInt64 = 1_000_000

    static func settings(_ words: String) throws -> WANSettings {
        var settings = WANSettings()
        try settings.apply(words.split(separator: " ").map(String.init))
        return settings
    }

    /// Sends `count` packets of `bytes` every `gap` nanoseconds from time 0 and returns each one's departure time.
    static func run(_ path: inout WANPath<Int>, count: Int, bytes: Int, gap: UInt64) -> [Int: UInt64] {
        var departures: [Int: UInt64] = [:]
        var now: UInt64 = 0
        for packet in 0..<count {
            now = UInt64(packet) * gap
            path.depart(until: now) { departures[$0] = now }
            path.arrive(packet, bytes: bytes, at: now)
        }
        while let next = path.nextDeparture {
            path.depart(until: next) { departures[$0] = next }
        }
        return departures
    }

    @Test func packetsLeaveAfterTheOneWayDelayInOrder() throws {
        var path = WANPath<Int>(settings: try Self.settings("rtt=50ms"), seed: 1)
        let departures = Self.run(&path, count: 100, bytes: 1500, gap: Self.ms)
        #expect(departures.count == 100)
        for (packet, time) in departures { #expect(time == UInt64(packet) * Self.ms + 25 * Self.ms) }
        #expect(path.counters.packetsOut == 100 && path.counters.bytesOut == 150_000)
        #expect(path.bytesInFlight == 0)
    }

    @Test func theRateLimitSpacesPacketsAndTheQueueDropsTheTail() throws {
        // 80 Mbit/s: a 10,000-byte packet takes 1 ms; a queue of 50,000 bytes holds 5 of them.
        var path = WANPath<Int>(settings: try Self.settings("rate=80mbit delay=10ms queue=50000"), seed: 1)
        let departures = Self.run(&path, count: 20, bytes: 10_000, gap: 0)
        // The first leaves the queue at once (1 ms to send); four more fit behind it; the rest are dropped.
        #expect(departures.count == 5)
        #expect(path.counters.droppedQueue == 15)
        for packet in 0..<5 { #expect(departures[packet] == UInt64(packet + 1) * Self.ms + 10 * Self.ms) }
    }

    @Test func aSteadyStreamAtTheRatePassesWhole() throws {
        var path = WANPath<Int>(settings: try Self.settings("rate=1gbit rtt=50ms"), seed: 1)
        // 1 Gbit/s is 125,000 bytes per millisecond: 64,000-byte packets every 0.512 ms.
        let departures = Self.run(&path, count: 2000, bytes: 64_000, gap: 512_000)
        #expect(departures.count == 2000 && path.counters.droppedQueue == 0)
        let last = departures[1999]!
        #expect(last >= 1999 * 512_000 + 25 * Self.ms)
    }

    @Test func lossDropsAboutItsShareAndReplaysFromTheSeed() throws {
        let settings = try Self.settings("loss=1%")
        var first = WANPath<Int>(settings: settings, seed: 7)
        var second = WANPath<Int>(settings: settings, seed: 7)
        let a = Self.run(&first, count: 100_000, bytes: 100, gap: 1000)
        let b = Self.run(&second, count: 100_000, bytes: 100, gap: 1000)
        #expect(Set(a.keys) == Set(b.keys))
        #expect((800...1200).contains(first.counters.droppedLoss))
    }

    @Test func reorderedPacketsArePassedByLaterOnes() throws {
        var path = WANPath<Int>(settings: try Self.settings("delay=5ms reorder=10% reorder-delay=3ms"), seed: 3)
        let departures = Self.run(&path, count: 1000, bytes: 100, gap: Self.ms)
        let order = departures.sorted { ($0.value, $0.key) < ($1.value, $1.key) }.map(\.key)
        #expect(order != Array(0..<1000))
        #expect(departures.count == 1000)
        #expect((50...150).contains(path.counters.reordered))
    }

    @Test func aCutDropsWhatIsOnTheWireAndEverythingAfterUntilRestored() throws {
        var settings = try Self.settings("rtt=50ms")
        var path = WANPath<Int>(settings: settings, seed: 1)
        for packet in 0..<10 { path.arrive(packet, bytes: 1000, at: UInt64(packet) * Self.ms) }
        settings.cut = true
        path.apply(settings)
        #expect(path.nextDeparture == nil && path.counters.droppedCut == 10)
        path.arrive(10, bytes: 1000, at: 20 * Self.ms)
        #expect(path.counters.droppedCut == 11)
        try settings.apply(["restore"])
        path.apply(settings)
        path.arrive(11, bytes: 1000, at: 30 * Self.ms)
        var out: [Int] = []
        path.depart(until: 60 * Self.ms) { out.append($0) }
        #expect(out == [11])
    }

    @Test func settingsAreParsedOrRefusedWithTheirForms() throws {
        let settings = try Self.settings("rate=1.5gbit rtt=200ms queue=4MiB loss=0.1% reorder=0.5")
        #expect(settings.bitsPerSecond == 1_500_000_000)
        #expect(settings.oneWayDelayNanos == 100 * Self.ms)
        #expect(settings.queueLimit == 4 << 20)
        #expect(abs(settings.loss - 0.001) < 1e-12 && settings.reorder == 0.5)
        // Without a queue size: one bandwidth-delay product of the round trip.
        #expect(try Self.settings("rate=1gbit rtt=50ms").queueLimit == 6_250_000)
        for bad in ["rate=fast", "loss=150%", "delay=5", "speed=1", "cut=1", "rtt=-5ms"] {
            #expect(throws: FreightError.self) { try Self.settings(bad) }
        }
    }
}
