import FreightCore
import FreightDirectory
import FreightFlow
import FreightWire
import Testing

/// Broken links and resume in the flow table (docs/core.md), driven directly.
@Suite struct FlowResumeTests {
    static let second: UInt64 = 1_000_000_000
    static let app = FlowPort.session(1)
    static let peer = FlowPort.peer("n2")
    static let receiver = FlowPort.session(7)

    static func table(hold: Int = 30) -> FlowTable {
        FlowTable(
            configuration: .init(
                nodeName: "n1", windowBytes: 8 << 20, memoryBudgetBytes: 64 << 20, chunkBytesDefault: 1 << 20,
                resumeHold: .seconds(hold)))
    }

    /// A message from `upstream` to one branch at `branch`, with `acked` of it acknowledged there.
    static func started(
        _ table: inout FlowTable, from upstream: FlowPort = app, to branch: FlowPort = peer, acked: UInt64,
        resends: Bool = true
    ) {
        var actions: [FlowAction] = []
        table.open(FlowTableTests.open(id: 5, length: 64 << 20), from: upstream, actions: &actions) { _, _ in
            FlowTable.Plan(
                branches: [Flow.Branch(port: branch, targets: [EndpointKey(node: "n2", id: 3)])],
                upstreamResends: resends)
        }
        table.ack(ackFrame(5, acked: acked, credit: acked + (8 << 20)), from: branch, actions: &actions)
    }

    static func sent(_ actions: [FlowAction], to port: FlowPort) -> [Frame] {
        FlowTableTests.sent(actions).filter { $0.1 == port }.map(\.0)
    }

    @Test func aBrokenLinkSuspendsTheBranchAndItResumesFromWhereTheReceiverIs() {
        var table = Self.table()
        Self.started(&table, acked: 3 << 20)
        var actions: [FlowAction] = []
        table.advance(to: 10 * Self.second, actions: &actions)
        table.linkLost(Self.peer, error: FreightError(.nodeGone, "link broke"), actions: &actions)
        #expect(Self.sent(actions, to: Self.app).isEmpty, "the sender is not told of a failure")
        #expect(table[5]?.branches[0].isPending == true && table[5]?.branches[0].isOpen == false)
        #expect(table.admit(5, offset: 3 << 20, count: 1 << 20, from: Self.app, actions: &actions) != nil)
        actions = []
        table.linkRestored(Self.peer, actions: &actions)
        guard case .open(let open)? = Self.sent(actions, to: Self.peer).first else {
            Issue.record("expected OPEN resume: \(actions)")
            return
        }
        #expect(open.resume && open.header.id == 5 && open.targets.map(\.id) == [3])
        // The receiver's node answers with where it is; the source is told to send again from there.
        actions = []
        var answer = ackFrame(5, acked: 4 << 20, credit: 12 << 20)
        answer.resendFrom = 4 << 20
        table.ack(answer, from: Self.peer, actions: &actions)
        guard case .ack(let rewind)? = Self.sent(actions, to: Self.app).first else {
            Issue.record("expected a resend request upstream: \(actions)")
            return
        }
        #expect(rewind.hasResendFrom && rewind.resendFrom == 4 << 20 && rewind.ackedOffset == 4 << 20)
    }

    @Test func pastTheHoldTimeBothSidesFailNamingTheOffset() {
        // The sending side: its suspended branch fails, and the app hears the offset.
        var sender = Self.table(hold: 3)
        Self.started(&sender, acked: 3 << 20)
        var actions: [FlowAction] = []
        sender.advance(to: 1 * Self.second, actions: &actions)
        sender.linkLost(Self.peer, error: FreightError(.nodeGone, "link broke"), actions: &actions)
        sender.advance(to: 3 * Self.second, actions: &actions)
        #expect(sender.count == 1, "held within the hold time")
        sender.advance(to: 4 * Self.second, actions: &actions)
        guard case .abort(let abort)? = Self.sent(actions, to: Self.app).last else {
            Issue.record("expected ABORT upstream: \(actions)")
            return
        }
        #expect(abort.reason.contains("broke at offset 3145728 of 67108864") && abort.ackedOffset == 3 << 20)
        #expect(sender.count == 0 && sender.reservedBytes == 0)

        // The receiving side: the flow held for its upstream ends, and its receiver hears the offset.
        var receiving = Self.table(hold: 3)
        Self.started(&receiving, from: Self.peer, to: Self.receiver, acked: 2 << 20)
        actions = []
        receiving.advance(to: 1 * Self.second, actions: &actions)
        receiving.upstreamLost(Self.peer, actions: &actions)
        receiving.advance(to: 4 * Self.second, actions: &actions)
        guard case .abort(let held)? = Self.sent(actions, to: Self.receiver).last else {
            Issue.record("expected ABORT to the receiver: \(actions)")
            return
        }
        #expect(held.reason.contains("broke at offset 2097152"))
        #expect(receiving.count == 0 && receiving.reservedBytes == 0)
    }

    @Test func anUpstreamThatCannotSendAgainFailsAsBefore() {
        var table = Self.table()
        Self.started(&table, acked: 1 << 20, resends: false)
        var actions: [FlowAction] = []
        table.linkLost(Self.peer, error: FreightError(.nodeGone, "the link to node n2 broke"), actions: &actions)
        guard case .abort(let abort)? = Self.sent(actions, to: Self.app).last else {
            Issue.record("expected ABORT upstream: \(actions)")
            return
        }
        #expect(abort.reason.contains("1048576 of 67108864 bytes acknowledged"))
        #expect(table.count == 0)
    }

    /// The receiving node: the flow held for its upstream goes on when the upstream re-opens it; the sender is told
    /// where to send from, the receiving app where it resumed, and the delivery report carries the offset.
    @Test func theReceivingSideResumesAHeldFlow() {
        var table = Self.table()
        Self.started(&table, from: Self.peer, to: Self.receiver, acked: 2 << 20)
        var actions: [FlowAction] = []
        table.upstreamLost(Self.peer, actions: &actions)
        var open = FlowTableTests.open(id: 5, length: 64 << 20)
        open.resume = true
        actions = []
        table.resume(open, from: Self.peer, actions: &actions)
        guard case .ack(let ack)? = Self.sent(actions, to: Self.peer).first else {
            Issue.record("expected ACK: \(actions)")
            return
        }
        #expect(ack.resendFrom == 2 << 20 && ack.ackedOffset == 2 << 20)
        guard case .open(let notice)? = Self.sent(actions, to: Self.receiver).first else {
            Issue.record("expected a resume notice to the app: \(actions)")
            return
        }
        #expect(notice.resume && notice.resumedAt == 2 << 20)
        actions = []
        table.done(FlowTableTests.done(5), from: Self.receiver, actions: &actions)
        guard case .done(let done)? = Self.sent(actions, to: Self.peer).first else {
            Issue.record("expected DONE: \(actions)")
            return
        }
        #expect(done.deliveries.first?.resumedAt == [2 << 20])
        // The DONE was lost with the link: asked again, it is sent again; an unknown message is refused.
        actions = []
        table.resume(open, from: Self.peer, actions: &actions)
        #expect(Self.sent(actions, to: Self.peer).contains { if case .done = $0 { true } else { false } })
        actions = []
        var unknown = FlowTableTests.open(id: 6, length: 1)
        unknown.resume = true
        table.resume(unknown, from: Self.peer, actions: &actions)
        #expect(Self.sent(actions, to: Self.peer).contains { if case .abort = $0 { true } else { false } })
    }

    /// The answer to OPEN resume can be lost (this node's own stripes were still down, or broke again): until a chunk
    /// from the asked offset arrives, every resend of acknowledgements asks again, or the sender would wait for
    /// credit and this node for bytes, each for ever.
    @Test func aResendRequestGoesAgainUntilAChunkAnswersIt() {
        var table = Self.table()
        Self.started(&table, from: Self.peer, to: Self.receiver, acked: 2 << 20)
        var actions: [FlowAction] = []
        table.linkLost(Self.peer, error: FreightError(.nodeGone, "link broke"), actions: &actions)
        var open = FlowTableTests.open(id: 5, length: 64 << 20)
        open.resume = true
        table.resume(open, from: Self.peer, actions: &actions)
        actions = []  // lost with the link
        table.linkRestored(Self.peer, actions: &actions)
        guard case .ack(let again)? = Self.sent(actions, to: Self.peer).first else {
            Issue.record("expected ACK: \(actions)")
            return
        }
        #expect(again.hasResendFrom && again.resendFrom == 2 << 20, "asked again")
        #expect(table.admit(5, offset: 2 << 20, count: 1 << 20, from: Self.peer, actions: &actions) != nil)
        actions = []
        table.controlLost(Self.peer, actions: &actions)
        guard case .ack(let answered)? = Self.sent(actions, to: Self.peer).first else {
            Issue.record("expected ACK: \(actions)")
            return
        }
        #expect(!answered.hasResendFrom, "a chunk from the offset answered it: not asked again")
    }

    /// A branch may ask for bytes again (a chunk that failed its checksum at the receiver), a bounded number of times:
    /// past it the branch fails and is told, so no receiver can have a sender resend without end.
    @Test func askingAgainIsBoundedPerMessage() {
        var table = Self.table()
        Self.started(&table, to: Self.receiver, acked: 2 << 20)
        var actions: [FlowAction] = []
        var again = ackFrame(5, acked: 2 << 20, credit: 10 << 20)
        again.resendFrom = 2 << 20
        for _ in 0..<Limits.rewindsPerMessageMax { table.ack(again, from: Self.receiver, actions: &actions) }
        #expect(
            Self.sent(actions, to: Self.app).allSatisfy {
                if case .ack(let ack) = $0 { ack.hasResendFrom } else { false }
            })
        #expect(table[5]?.branches[0].isOpen == true)
        actions = []
        table.ack(again, from: Self.receiver, actions: &actions)
        #expect(table[5] == nil || table[5]?.branches[0].isOpen == false, "the branch failed")
        #expect(Self.sent(actions, to: Self.receiver).contains { if case .abort = $0 { true } else { false } })
    }

    /// An OPEN lost with a control stripe goes again to a branch that never answered; the peer that had it answers
    /// the repeat as a resume (not listed as one), one that had not opens it.
    @Test func anOpenLostWithTheControlStripeGoesAgain() {
        var sender = Self.table()
        var actions: [FlowAction] = []
        sender.open(FlowTableTests.open(id: 5, length: 64 << 20), from: Self.app, actions: &actions) { _, _ in
            FlowTable.Plan(
                branches: [Flow.Branch(port: Self.peer, targets: [EndpointKey(node: "n2", id: 3)])],
                upstreamResends: true)
        }
        guard case .open(let first)? = Self.sent(actions, to: Self.peer).first else {
            Issue.record("expected OPEN: \(actions)")
            return
        }
        actions = []
        sender.controlLost(Self.peer, actions: &actions)
        guard case .open(let again)? = Self.sent(actions, to: Self.peer).first else {
            Issue.record("expected the OPEN again: \(actions)")
            return
        }
        #expect(!again.resume && again.header.id == 5)
        // At the peer: the first arrived, so the repeat is answered with where it is and nothing is duplicated.
        var receiver = Self.table()
        actions = []
        receiver.open(first, from: .peer("n1"), actions: &actions) { _, _ in
            FlowTable.Plan(branches: [Flow.Branch(port: Self.receiver, targets: [])], upstreamResends: true)
        }
        receiver.ack(ackFrame(5, acked: 0, credit: 8 << 20), from: Self.receiver, actions: &actions)
        actions = []
        receiver.open(again, from: .peer("n1"), actions: &actions) { _, _ in
            Issue.record("a repeat must not be planned again")
            return FlowTable.Plan(branches: [])
        }
        guard case .ack(let answer)? = Self.sent(actions, to: .peer("n1")).first else {
            Issue.record("expected ACK: \(actions)")
            return
        }
        #expect(answer.hasResendFrom && answer.resendFrom == 0 && answer.creditOffset == 8 << 20)
        #expect(receiver.count == 1 && receiver[5]?.resumes.isEmpty == true)
        // Once the branch answered, a lost control stripe sends no OPEN again.
        sender.ack(ackFrame(5, acked: 0, credit: 8 << 20), from: Self.peer, actions: &actions)
        actions = []
        sender.controlLost(Self.peer, actions: &actions)
        #expect(!Self.sent(actions, to: Self.peer).contains { if case .open = $0 { true } else { false } })
    }

    @Test func aLostStripeHasTheSourceSendAgainFromTheBranchAcknowledgement() {
        var table = Self.table()
        Self.started(&table, acked: 5 << 20)
        var actions: [FlowAction] = []
        table.stripeLost(Self.peer, actions: &actions)
        guard case .ack(let ack)? = Self.sent(actions, to: Self.app).first else {
            Issue.record("expected a resend request: \(actions)")
            return
        }
        #expect(ack.resendFrom == 5 << 20)
        #expect(table[5]?.branches[0].isOpen == true, "the link stands: no resume needed")
    }
}
