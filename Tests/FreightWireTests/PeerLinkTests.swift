import FreightCore
import FreightTransport
import FreightWire
import NIOEmbedded
import Testing

/// The link to one peer: its stripes, what losing one does, and which one takes a chunk.
@Suite struct PeerLinkTests {
    private func connection(_ id: UInt64, stripe: UInt32? = nil) -> FrameConnection {
        let connection = FrameConnection(channel: EmbeddedChannel(), id: id)
        if let stripe {
            var hello = Freight_Wire_V1_Hello()
            hello.streamIndex = stripe
            connection.hello = hello
        }
        return connection
    }

    @Test func losingOneStripeShrinksTheLinkAndOnlyTheLastTakesItDown() throws {
        let link = PeerLink(listen: try NodeAddress("127.0.0.2:7400"), streams: 4)
        #expect(!link.isUp && link.missingStripes == [0, 1, 2, 3])
        let stripes = (0..<4).map { connection(UInt64($0)) }
        for (index, stripe) in stripes.enumerated() { #expect(link.attach(stripe, stripe: index)) }
        #expect(!link.attach(connection(9), stripe: 2), "a stripe that stands is not replaced")
        #expect(link.isUp && link.stripesUp == 4 && link.control === stripes[0])

        // The control stripe goes: control frames move to the next stripe that stands, and only it is redialed.
        let first = link.remove(stripes[0])
        #expect(first.egress && first.control && !first.ingress)
        #expect(link.isUp && link.control === stripes[1] && link.missingStripes == [0])
        let second = link.remove(stripes[2])
        #expect(second.egress && !second.control)
        #expect(link.missingStripes == [0, 2] && link.stripesUp == 2)
        _ = link.remove(stripes[1])
        _ = link.remove(stripes[3])
        #expect(!link.isUp && link.control == nil && link.missingStripes == [0, 1, 2, 3])
        #expect(link.stripeForData(spillBytes: 1 << 20, policy: .fill, chunkBytes: 1 << 20, nowNanos: 0) == nil)
    }

    @Test func aStripeThePeerDialsAgainReplacesTheStaleOne() throws {
        let link = PeerLink(listen: try NodeAddress("127.0.0.2:7400"), streams: 2)
        let old = connection(1, stripe: 1)
        let other = connection(2, stripe: 0)
        #expect(link.accept(old, stripe: 1).isEmpty)
        #expect(link.accept(other, stripe: 0).isEmpty)
        let again = connection(3, stripe: 1)
        let stale = link.accept(again, stripe: 1)
        #expect(stale.count == 1 && stale.first === old)
        #expect(link.owns(again) && link.owns(other) && !link.owns(old))
        // With no stripe of its own, frames for the peer go on a connection it dialed.
        #expect(link.anyConnection != nil && !link.isUp)
        let loss = link.remove(other)
        #expect(loss.ingress && !loss.egress)
    }

    @Test func railsGrowTheLinkAndNeverShrinkIt() throws {
        let link = PeerLink(listen: try NodeAddress("127.0.0.2:7400"), streams: 2)
        let targets: [PeerLink.RailTarget] = [
            ("198.18.0.1", try NodeAddress("198.18.0.2:7400")), ("198.18.1.1", try NodeAddress("198.18.1.2:7400")),
        ]
        #expect(link.useRails(targets, nominalBytesPerSecond: [1e9, 1e9]))
        #expect(link.railCount == 2 && link.missingStripes == [0, 1, 2, 3])
        #expect(link.target(ofStripe: 3).target == targets[1].target)
        #expect(!link.useRails(Array(targets.prefix(1)), nominalBytesPerSecond: [1e9]))
        #expect(link.railCount == 2)
        let stripe = connection(1)
        link.attach(stripe, stripe: 3)
        link.sent(1000, on: 3)
        #expect(link.stripeBytes == [0, 0, 0, 1000])
        // Only stripe 3 stands: every chunk goes there, whichever rail was asked for.
        #expect(
            link.stripeForData(spillBytes: 1 << 20, policy: .fill, chunkBytes: 1 << 20, nowNanos: 1, rails: [0]) == 3)
    }
}
