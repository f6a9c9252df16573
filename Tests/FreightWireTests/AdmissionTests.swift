import FreightTransport
import Testing

/// The caps on links in their handshake (docs/hardening.md), without a socket.
struct AdmissionTests {
    let limits = AdmissionLimits(handshakesMax: 4, handshakesPerSourceMax: 2, connectionsMax: 6)

    @Test func eachCapRefusesWithItsName() {
        var counts = AdmissionCounts(limits: limits)
        #expect(counts.admit(source: "a") == nil)
        #expect(counts.admit(source: "a") == nil)
        #expect(counts.admit(source: "a")?.contains("handshakesPerSourceMax") == true)
        #expect(counts.admit(source: "b") == nil)
        #expect(counts.admit(source: "c") == nil)
        #expect(counts.admit(source: "d")?.contains("handshakesMax") == true)
        // Established links leave the handshake count but stay in the count of links.
        for source in ["a", "a", "b", "c"] { counts.established(source: source) }
        #expect(counts.handshakes == 0)
        #expect(counts.admit(source: "a") == nil)
        #expect(counts.admit(source: "a") == nil)
        #expect(counts.admit(source: "e")?.contains("connectionsMax") == true)
        #expect(counts.connections == 6)
    }

    @Test func closingReturnsWhatWasCounted() {
        var counts = AdmissionCounts(limits: limits)
        #expect(counts.admit(source: "a") == nil)
        #expect(counts.admit(source: "a") == nil)
        counts.established(source: "a")
        counts.closed(source: "a", established: true)
        counts.closed(source: "a", established: false)
        #expect(counts.handshakes == 0)
        #expect(counts.connections == 0)
        #expect(counts.handshakesBySource.isEmpty)
    }
}
