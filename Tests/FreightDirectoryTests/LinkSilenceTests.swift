import FreightDirectory
import Testing

/// When a link counts as dark (``LinkSilence``): silence past the limit closes it, anything heard restarts the
/// clock, and a peer whose own stripes are down gets the redial grace once, not for ever.
struct LinkSilenceTests {
    static let second: UInt64 = 1_000_000_000
    static let limit = 11 * second
    static let grace = 5 * second

    /// One check at `seconds`, with what the link shows then.
    static func check(
        _ watch: inout LinkSilence, at seconds: UInt64, heard: UInt64, peerDown: Bool = false, resumes: Bool = true,
        connections: Bool = true
    ) -> UInt64? {
        watch.observe(
            heard: heard, peerStripesDown: peerDown, resumes: resumes, hasConnections: connections,
            nowNanos: seconds * second, limitNanos: limit, redialGraceNanos: grace)
    }

    @Test func aLinkSilentPastTheLimitIsClosedOnceAndHeardFramesKeepItOpen() {
        var watch = LinkSilence()
        #expect(Self.check(&watch, at: 1, heard: 10) == nil)
        // Heartbeats every 3 s: never silent for long.
        for (index, at) in stride(from: 4, through: 40, by: 3).enumerated() {
            #expect(Self.check(&watch, at: UInt64(at), heard: UInt64(11 + index)) == nil)
        }
        // Silent from 40 s: not at 51 (the limit itself), closed at 52, then the clock starts again.
        #expect(Self.check(&watch, at: 51, heard: 23) == nil)
        #expect(Self.check(&watch, at: 52, heard: 23) == 12 * Self.second)
        #expect(Self.check(&watch, at: 53, heard: 23) == nil)
    }

    /// The case a link taken down under a zero window showed: the peer's stripes here broke, this node's own did
    /// not, and nothing more came. The silence counts after the redial grace, so the link is closed and its
    /// messages are held and then fail, instead of waiting for ever.
    @Test func aPeerWhoseStripesAreDownGetsTheRedialGraceThenItsLinkCloses() {
        var watch = LinkSilence()
        #expect(Self.check(&watch, at: 1, heard: 5) == nil)
        #expect(Self.check(&watch, at: 2, heard: 5, peerDown: true) == nil, "the clock starts when its stripes go")
        #expect(Self.check(&watch, at: 13, heard: 5, peerDown: true) == nil, "past the limit, within the grace")
        #expect(Self.check(&watch, at: 18, heard: 5, peerDown: true) == nil)
        #expect(Self.check(&watch, at: 19, heard: 5, peerDown: true) == 17 * Self.second)
        // It dialed again: silence counts from then, without the grace.
        #expect(Self.check(&watch, at: 20, heard: 6) == nil)
        #expect(Self.check(&watch, at: 32, heard: 6) == 12 * Self.second)
    }

    /// Nothing is owed by a peer that sends no heartbeats (it does not resume), nor by a link with nothing left to
    /// close.
    @Test func nothingIsOwedWithoutHeartbeatsOrConnections() {
        var watch = LinkSilence()
        for at in stride(from: UInt64(1), through: 60, by: 5) {
            #expect(Self.check(&watch, at: at, heard: 1, resumes: false) == nil)
        }
        for at in stride(from: UInt64(61), through: 120, by: 5) {
            #expect(Self.check(&watch, at: at, heard: 1, connections: false) == nil)
        }
    }
}
