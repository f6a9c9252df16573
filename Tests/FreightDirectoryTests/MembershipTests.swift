import FreightCore
import FreightDirectory
import Testing

/// The membership state machine alone: events in, actions out, no sockets and no clock.
@Suite struct MembershipTests {
    static let second: UInt64 = 1_000_000_000
    let seed = try! NodeAddress("127.0.0.2:7400")

    func membership(seeds: [NodeAddress] = []) throws -> Membership {
        Membership(
            configuration: .init(
                nodeName: "n1", listen: try NodeAddress("127.0.0.1:7400"), membersMax: 3, dialAttemptsMax: 2,
                resumeHoldNanos: 30 * Self.second, forgetAfterHoldNanos: 2 * Self.second,
                heartbeatIntervalNanos: 3 * Self.second),
            seeds: seeds)
    }

    /// Up, with every stripe.
    let up = Membership.LinkState(isUp: true, missingStripes: false)
    let down = Membership.LinkState(isUp: false, missingStripes: true)

    /// A peer that dialed in between the listener's bind and the node's start is kept when the node learns its
    /// bound address and seeds: its link breaking is held and then forgotten like any other (it once stayed a
    /// member the membership no longer knew, so a message to it was held for ever: LinkDownTests in CI).
    @Test func aPeerLearnedBeforeTheListenerIsBoundIsKept() throws {
        var membership = Membership(
            configuration: .init(
                nodeName: "n1", listen: try NodeAddress("127.0.0.1:0"), resumeHoldNanos: 2 * Self.second,
                forgetAfterHoldNanos: 2 * Self.second))
        var actions: [Membership.Action] = []
        #expect(membership.learn(name: "n2", listen: seed, incarnation: 7, actions: &actions) == .admitted)
        membership.peerResumes("n2", true)
        membership.bound(listen: try NodeAddress("127.0.0.1:7400"), seeds: [seed])
        #expect(membership.peers["n2"] != nil)
        #expect(membership.configuration.listen == (try NodeAddress("127.0.0.1:7400")))
        #expect(membership.seeds[seed] != nil)
        membership.connectionLost(
            "n2", .init(egress: true, ingress: false, control: true, linkUp: false, ingressLeft: true),
            reason: "dark", nowNanos: 10 * Self.second, actions: &actions)
        #expect(actions.contains(.holdMessages("n2", reason: "dark")))
        actions = []
        membership.tick(nowNanos: 15 * Self.second, links: ["n2": down], actions: &actions)
        #expect(actions.contains { if case .forget("n2", _) = $0 { true } else { false } })
    }

    /// Nodes told of by gossip are candidates, not members: as many as the member table holds, each probed at
    /// most `dialAttemptsMax` times, and a member only once it answered; invented ones fill no member table.
    @Test func gossipedNodesAreCandidatesUntilTheyAnswer() throws {
        var membership = try membership()
        var actions: [Membership.Action] = []
        let addresses = try (2...6).map { try NodeAddress("127.0.0.\($0):7400") }
        let proposed = addresses.enumerated().map { membership.propose(name: "g\($0.offset)", listen: $0.element) }
        #expect(proposed == [true, true, true, false, false], "at most membersMax candidates")
        #expect(membership.peers.isEmpty, "no member yet")
        let again = membership.propose(name: "again", listen: addresses[0])
        #expect(!again, "an address is proposed once")
        // Each was probed once when proposed; one more tick probes them again, then they are dropped.
        membership.tick(nowNanos: Self.second, links: [:], actions: &actions)
        #expect(actions == addresses.prefix(3).map { .dialSeed($0) })
        actions = []
        membership.tick(nowNanos: 2 * Self.second, links: [:], actions: &actions)
        #expect(actions.isEmpty && membership.candidates.isEmpty, "\(actions)")
        // One that answers is a member; its candidacy ends.
        let real = membership.propose(name: "real", listen: addresses[4])
        #expect(real)
        membership.seedAnswered(addresses[4])
        #expect(membership.candidates.isEmpty)
        let admission = membership.learn(name: "real", listen: addresses[4], incarnation: 9, actions: &actions)
        #expect(admission == .admitted)
    }

    @Test func seedsAreDialedUntilTheyAnswerAndNeverOurOwnAddress() throws {
        var membership = try membership(seeds: [seed, try NodeAddress("127.0.0.1:7400")])
        var actions: [Membership.Action] = []
        membership.tick(nowNanos: 0, links: [:], actions: &actions)
        #expect(actions == [.dialSeed(seed)])
        membership.seedProbing(seed, true)
        actions = []
        membership.tick(nowNanos: Self.second, links: [:], actions: &actions)
        #expect(actions.isEmpty, "a seed being probed is not dialed again")
        membership.seedProbing(seed, false)
        actions = []
        membership.tick(nowNanos: 2 * Self.second, links: [:], actions: &actions)
        #expect(actions == [.dialSeed(seed)] && membership.seeds[seed]?.attempts == 2)
        membership.seedAnswered(seed)
        #expect(membership.learn(name: "n2", listen: seed, incarnation: 7, actions: &actions) == .admitted)
        actions = []
        membership.tick(nowNanos: 3 * Self.second, links: ["n2": up], actions: &actions)
        #expect(actions.isEmpty, "the node at the seed is linked: the seed is not dialed")
        // Its link down: the member's stripes are redialed, and no probe of the seed beside them (it would reach the
        // seed as a second stripe 0 and replace the member's own).
        actions = []
        membership.tick(
            nowNanos: 4 * Self.second, links: ["n2": .init(isUp: false, missingStripes: true)], actions: &actions)
        #expect(actions.contains(.dial("n2")) && !actions.contains(.dialSeed(seed)), "\(actions)")
    }

    @Test func aNewIncarnationReplacesTheOldAndTheLimitHolds() throws {
        var membership = try membership()
        var actions: [Membership.Action] = []
        #expect(membership.learn(name: "n2", listen: seed, incarnation: 1, actions: &actions) == .admitted)
        #expect(membership.learn(name: "n2", listen: seed, incarnation: 1, actions: &actions) == .known)
        #expect(membership.learn(name: "n2", listen: seed, incarnation: 0, actions: &actions) == .known)
        #expect(actions.isEmpty)
        #expect(membership.learn(name: "n2", listen: seed, incarnation: 2, actions: &actions) == .admitted)
        #expect(actions == [.forget("n2", reason: "restarted")])
        #expect(membership.peers["n2"]?.incarnation == 2)
        for name in ["n3", "n4"] {
            #expect(membership.learn(name: name, listen: seed, incarnation: 1, actions: &actions) == .admitted)
        }
        #expect(membership.learn(name: "n5", listen: seed, incarnation: 1, actions: &actions) == .full)
    }

    @Test func aPeerThatCannotResumeIsGoneAtItsFirstLostStripe() throws {
        var membership = try membership()
        var actions: [Membership.Action] = []
        _ = membership.learn(name: "n2", listen: seed, incarnation: 1, actions: &actions)
        let loss = Membership.Loss(egress: true, ingress: false, control: false, linkUp: true, ingressLeft: true)
        membership.connectionLost("n2", loss, reason: "reset", nowNanos: 0, actions: &actions)
        #expect(actions == [.forget("n2", reason: "reset")] && membership.peers.isEmpty)
    }

    @Test func aLostStripeSettlesIntoAResendAndTheLastOneHoldsAndRedials() throws {
        var membership = try membership()
        var actions: [Membership.Action] = []
        _ = membership.learn(name: "n2", listen: seed, incarnation: 1, actions: &actions)
        membership.peerResumes("n2", true)
        // One stripe of four (the control stripe) goes: what it carried goes again once the loss settled.
        membership.connectionLost(
            "n2", .init(egress: true, ingress: false, control: true, linkUp: true, ingressLeft: true), reason: "reset",
            nowNanos: 0, actions: &actions)
        #expect(actions == [.settleStripeLoss("n2")])
        actions = []
        membership.stripeLossSettled("n2", linkUp: true, actions: &actions)
        #expect(actions == [.resend("n2", control: true)])
        actions = []
        membership.stripeLossSettled("n2", linkUp: true, actions: &actions)
        #expect(actions.isEmpty, "settled once")

        // A stripe goes and then the rest within the moment: one resume, no resend.
        membership.connectionLost(
            "n2", .init(egress: true, ingress: false, control: false, linkUp: true, ingressLeft: true),
            reason: "reset", nowNanos: 0, actions: &actions)
        membership.connectionLost(
            "n2", .init(egress: true, ingress: true, control: true, linkUp: false, ingressLeft: false),
            reason: "reset", nowNanos: 5 * Self.second, actions: &actions)
        #expect(
            actions == [
                .settleStripeLoss("n2"), .holdUpstream("n2"), .holdMessages("n2", reason: "reset"), .dial("n2"),
            ])
        actions = []
        membership.stripeLossSettled("n2", linkUp: false, actions: &actions)
        #expect(actions.isEmpty)
        #expect(membership.peers["n2"]?.lostAtNanos == 5 * Self.second)

        // Redialed every tick while held; back: resumed once.
        membership.tick(nowNanos: 6 * Self.second, links: ["n2": down], actions: &actions)
        #expect(actions == [.dial("n2")])
        actions = []
        membership.stripeUp("n2", actions: &actions)
        membership.stripeUp("n2", actions: &actions)
        #expect(actions == [.resume("n2")])
    }

    @Test func aLinkAwayPastTheHoldTimeIsForgottenAfterItsMessagesFailed() throws {
        var membership = try membership()
        var actions: [Membership.Action] = []
        _ = membership.learn(name: "n2", listen: seed, incarnation: 1, actions: &actions)
        membership.peerResumes("n2", true)
        membership.connectionLost(
            "n2", .init(egress: true, ingress: false, control: true, linkUp: false, ingressLeft: true),
            reason: "timed out", nowNanos: 10 * Self.second, actions: &actions)
        actions = []
        // Far past the dial-attempt limit, but a broken link is redialed for its whole hold time.
        for second in UInt64(11)...41 {
            membership.tick(nowNanos: second * Self.second, links: ["n2": down], actions: &actions)
        }
        #expect(actions.allSatisfy { $0 == .dial("n2") } && actions.count == 31)
        actions = []
        membership.tick(nowNanos: 42 * Self.second, links: ["n2": down], actions: &actions)
        #expect(actions == [.forget("n2", reason: "the link broke and did not come back within 30 s")])
    }

    @Test func aRefusedRedialMeansThePeerIsGone() throws {
        var membership = try membership()
        var actions: [Membership.Action] = []
        _ = membership.learn(name: "n2", listen: seed, incarnation: 1, actions: &actions)
        membership.peerResumes("n2", true)
        membership.dialFailed("n2", refused: true, linkUp: false, actions: &actions)
        #expect(actions.isEmpty, "a link that never broke is not given up on a refusal")
        membership.connectionLost(
            "n2", .init(egress: true, ingress: false, control: true, linkUp: false, ingressLeft: true),
            reason: "reset", nowNanos: 0, actions: &actions)
        actions = []
        membership.dialFailed("n2", refused: false, linkUp: false, actions: &actions)
        #expect(actions.isEmpty, "a timeout may be a dark link: held")
        membership.dialFailed("n2", refused: true, linkUp: false, actions: &actions)
        #expect(actions == [.forget("n2", reason: "its link broke and it refuses connections")])
    }

    @Test func aMemberThatNeverLinkedIsForgottenAfterItsDialAttempts() throws {
        var membership = try membership()
        var actions: [Membership.Action] = []
        _ = membership.learn(name: "n2", listen: seed, incarnation: 1, actions: &actions)
        membership.tick(nowNanos: 1, links: ["n2": down], actions: &actions)
        membership.tick(nowNanos: 2, links: ["n2": down], actions: &actions)
        membership.tick(nowNanos: 3, links: ["n2": down], actions: &actions)
        #expect(actions == [.dial("n2"), .dial("n2"), .forget("n2", reason: "unreachable")])
    }

    @Test func heartbeatsGoOnLinksThatStandAtTheirInterval() throws {
        var membership = try membership()
        var actions: [Membership.Action] = []
        _ = membership.learn(name: "n2", listen: seed, incarnation: 1, actions: &actions)
        membership.tick(nowNanos: 4 * Self.second, links: ["n2": up], actions: &actions)
        #expect(actions.isEmpty, "a peer that cannot resume needs none")
        membership.peerResumes("n2", true)
        membership.tick(nowNanos: 5 * Self.second, links: ["n2": up], actions: &actions)
        membership.tick(nowNanos: 6 * Self.second, links: ["n2": up], actions: &actions)
        membership.tick(
            nowNanos: 8 * Self.second, links: ["n2": .init(isUp: true, missingStripes: true)], actions: &actions)
        #expect(actions == [.heartbeat("n2"), .dial("n2"), .heartbeat("n2")])
    }

    @Test func aStoppingNodeForgetsInsteadOfHolding() throws {
        var membership = try membership()
        var actions: [Membership.Action] = []
        _ = membership.learn(name: "n2", listen: seed, incarnation: 1, actions: &actions)
        membership.peerResumes("n2", true)
        membership.stopping = true
        membership.connectionLost(
            "n2", .init(egress: true, ingress: false, control: true, linkUp: false, ingressLeft: true),
            reason: "closed", nowNanos: 0, actions: &actions)
        #expect(actions == [.forget("n2", reason: "closed")])
    }
}
