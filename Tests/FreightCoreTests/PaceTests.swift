import FreightCore
import Testing

/// `freight recv --rate`: a reader kept to its rate on average since its first byte.
struct PaceTests {
    @Test func aReaderAheadOfItsRateWaitsAndOneBehindDoesNot() {
        var pace = Pace(bytesPerSecond: 1 << 20)
        let start = ContinuousClock.now
        // The first MiB is due one second after the first byte.
        #expect(pace.delay(taking: 1 << 20, at: start) == .seconds(1))
        // Half a second later, the second MiB is due at two seconds: 1.5 s from now.
        #expect(pace.delay(taking: 1 << 20, at: start + .milliseconds(500)) == .milliseconds(1500))
        // A reader that fell behind (ten seconds in, 2 MiB taken) takes the next MiB at once.
        #expect(pace.delay(taking: 1 << 20, at: start + .seconds(10)) == .zero)
    }
}
