import FreightCore
import FreightDirectory
import FreightFlow
import FreightWire
import Testing

/// A message that moves to another gateway mid-way (docs/gateways.md, "Resume through another gateway"), in the flow
/// table: the sender's node moves a suspended branch, the new gateway opens a message it never held and gates its
/// chunks until the far side says where to send from, and the far gateway lets a link from the same cluster take it
/// over.
@Suite struct FlowRerouteTests {
    static let app = FlowPort.session(1)
    static let first = FlowPort.peer("gw1")
    static let second = FlowPort.peer("gw2")

    static func branch(_ port: FlowPort, cluster: String? = "b") -> Flow.Branch {
        Flow.Branch(
            port: port, targets: [EndpointKey(node: port.description, id: 1)],
            remote: cluster.map { Flow.Remote(cluster: $0) })
    }

    /// The sender's node: the branch to the first gateway is suspended when its link breaks; moved to the second,
    /// it opens there with resume and keeps what the first way acknowledged; the second way's answer has the app send
    /// again from where the far receiver is.
    @Test func aSuspendedBranchMovesToAnotherGatewayAndResumesWhereTheReceiverIs() {
        var table = FlowResumeTests.table()
        var actions: [FlowAction] = []
        table.open(FlowTableTests.open(id: 5, length: 64 << 20), from: Self.app, actions: &actions) { _, _ in
            FlowTable.Plan(branches: [Self.branch(Self.first)], upstreamResends: true)
        }
        table.ack(ackFrame(5, acked: 3 << 20, credit: 11 << 20), from: Self.first, actions: &actions)
        // A live branch does not move.
        #expect(!table.reroute(5, from: Self.first, to: Self.branch(Self.second), actions: &actions))
        table.linkLost(Self.first, error: FreightError(.nodeGone, "gw1 died"), actions: &actions)
        actions = []
        #expect(table.reroute(5, from: Self.first, to: Self.branch(Self.second), actions: &actions))
        guard case .open(let open)? = FlowResumeTests.sent(actions, to: Self.second).first else {
            Issue.record("expected OPEN resume to the second gateway: \(actions)")
            return
        }
        #expect(open.resume && open.targets.map(\.node) == ["node gw2"])
        let moved = table[5]?.branches.first
        #expect(moved?.port == Self.second && moved?.isOpen == true && moved?.ackedOffset == 3 << 20)
        #expect(table.load(EndpointKey(node: "node gw1", id: 1)) == 0)
        #expect(table.load(EndpointKey(node: "node gw2", id: 1)) == 1)
        actions = []
        var answer = ackFrame(5, acked: 5 << 20, credit: 13 << 20)
        answer.resendFrom = 5 << 20
        table.ack(answer, from: Self.second, actions: &actions)
        guard case .ack(let rewind)? = FlowResumeTests.sent(actions, to: Self.app).first else {
            Issue.record("expected a resend request to the app: \(actions)")
            return
        }
        #expect(rewind.resendFrom == 5 << 20 && rewind.ackedOffset == 5 << 20)
    }

    /// The new gateway: a resume OPEN for a message it never held opens it with resume downstream; chunks are dropped
    /// quietly until the answer says from where, then let through from there within the credit, and chunks past it
    /// (sent on the old way's credit) are dropped without failing the message.
    @Test func aReroutedMessageGatesItsChunksUntilTheFarSideAnswers() {
        var table = FlowResumeTests.table()
        var actions: [FlowAction] = []
        var open = FlowTableTests.open(id: 6, length: 64 << 20)
        open.resume = true
        table.open(open, from: Self.app, rerouted: true, actions: &actions) { _, _ in
            FlowTable.Plan(branches: [Self.branch(Self.second, cluster: nil)], upstreamResends: true)
        }
        guard case .open(let downstream)? = FlowResumeTests.sent(actions, to: Self.second).first else {
            Issue.record("expected OPEN downstream: \(actions)")
            return
        }
        #expect(downstream.resume)
        #expect(table[6]?.gate == .awaitingOffset)
        #expect(table.admit(6, offset: 9 << 20, count: 1 << 20, from: Self.app, actions: &actions) == nil)
        #expect(table.count == 1, "a chunk before the answer is dropped, not a failure")
        var answer = ackFrame(6, acked: 4 << 20, credit: 12 << 20)
        answer.resendFrom = 4 << 20
        table.ack(answer, from: Self.second, actions: &actions)
        #expect(table[6]?.gate == .resending(from: 4 << 20))
        #expect(table.admit(6, offset: 3 << 20, count: 1 << 20, from: Self.app, actions: &actions) == nil)
        #expect(table.admit(6, offset: 5 << 20, count: 1 << 20, from: Self.app, actions: &actions) != nil)
        #expect(table.admit(6, offset: 4 << 20, count: 1 << 20, from: Self.app, actions: &actions) != nil)
        actions = []
        #expect(table.admit(6, offset: 20 << 20, count: 1 << 20, from: Self.app, actions: &actions) == nil)
        #expect(table.count == 1 && FlowResumeTests.sent(actions, to: Self.app).isEmpty, "past the credit: dropped")
    }

    /// The far gateway: a message held for a link that closed is taken over by another link when the owner allows
    /// it; its reservation moves to the new upstream, which is told to send from what this node acknowledged. Without
    /// leave, the other link is refused.
    @Test func anotherLinkTakesAHeldMessageOverOnlyWithLeave() {
        let oldLink = FlowPort.local(1)
        let newLink = FlowPort.local(2)
        var table = FlowResumeTests.table()
        FlowResumeTests.started(&table, from: oldLink, to: FlowResumeTests.receiver, acked: 6 << 20)
        var actions: [FlowAction] = []
        table.upstreamLost(oldLink, actions: &actions)
        var open = FlowTableTests.open(id: 5, length: 64 << 20)
        open.resume = true
        table.resume(open, from: newLink, actions: &actions)
        #expect(table[5]?.upstream == oldLink)
        guard case .abort? = FlowResumeTests.sent(actions, to: newLink).first else {
            Issue.record("expected a refusal: \(actions)")
            return
        }
        actions = []
        let reserved = table.reserved(by: oldLink)
        table.resume(open, from: newLink, mayAdopt: { _ in true }, actions: &actions)
        #expect(table[5]?.upstream == newLink && table[5]?.upstreamLostNanos == nil)
        #expect(table.reserved(by: newLink) == reserved && table.reserved(by: oldLink) == 0)
        #expect(table.messages(from: newLink) == 1 && table.messages(from: oldLink) == 0)
        guard case .ack(let answer)? = FlowResumeTests.sent(actions, to: newLink).first else {
            Issue.record("expected the resume's answer: \(actions)")
            return
        }
        #expect(answer.resendFrom == 6 << 20)
        #expect(table.admit(5, offset: 7 << 20, count: 1 << 20, from: oldLink, actions: &actions) == nil)
        #expect(table.admit(5, offset: 6 << 20, count: 1 << 20, from: newLink, actions: &actions) != nil)
    }
}
