import FreightCore
import FreightFlow
import Testing

/// The node's ledger of small messages (docs/small-messages-and-files.md): budgets each way, outcomes only from
/// where a message went, and nothing left behind when a port goes.
@Suite struct SmallLedgerTests {
    let app = FlowPort.session(1)
    let peer = FlowPort.peer("n2")
    let cost = Limits.smallCost(length: 100)

    @Test func budgetsCountEachWayUntilTheOutcome() throws {
        var ledger = SmallLedger()
        try ledger.take(1, length: 100, from: app, budget: 2 * cost)
        try ledger.take(2, length: 100, from: app, budget: 2 * cost)
        #expect(throws: SmallLedger.Refusal.overBudget(held: 3 * cost, budget: 2 * cost)) {
            try ledger.take(3, length: 100, from: app, budget: 2 * cost)
        }
        #expect(throws: SmallLedger.Refusal.duplicate) { try ledger.take(1, length: 100, from: app, budget: .max) }
        // The next party's budget holds one: the second is answered RESEND (not passed) and given back.
        let first = ledger.pass(1, to: peer, budget: cost)
        let second = ledger.pass(2, to: peer, budget: cost)
        #expect(first && !second)
        let given = ledger.finish(2)
        #expect(given?.upstream == app)
        #expect(ledger.held[app] == cost && ledger.heldCount[app] == 1 && ledger.outstanding[peer] == cost)
        // Only the port the message went to answers for it.
        let stranger = ledger.outcome(1, from: FlowPort.peer("n3"))
        let source = ledger.outcome(1, from: app)
        let answer = ledger.outcome(1, from: peer)
        #expect(stranger == nil && source == nil && answer?.upstream == app)
        #expect(ledger.count == 0 && ledger.held.isEmpty && ledger.heldCount.isEmpty && ledger.outstanding.isEmpty)
    }

    @Test func aPortGoneFailsWhatWentToItAndForgetsWhatCameFromIt() throws {
        var ledger = SmallLedger()
        let other = FlowPort.session(2)
        try ledger.take(1, length: 100, from: app, budget: .max)
        let one = ledger.pass(1, to: peer, budget: .max)
        try ledger.take(2, length: 100, from: peer, budget: .max)
        let two = ledger.pass(2, to: other, budget: .max)
        #expect(one && two)
        let lost = ledger.portGone(peer)
        // Message 1 went to the peer: its upstream hears of it. Message 2 came from it: nobody to tell.
        #expect(lost.map(\.id) == [1] && lost.first?.entry.upstream == app)
        #expect(ledger.count == 0 && ledger.held.isEmpty && ledger.outstanding.isEmpty)
    }
}
