import FreightCore
import FreightDirectory
import FreightFlow
import FreightWire
import Testing

/// The flow table driven directly: events in, actions out, no sockets.
@Suite struct FlowTableTests {
    static let mebibyte: UInt64 = 1 << 20

    static func table(window: Int = 8 << 20, budget: Int = 64 << 20) -> FlowTable {
        FlowTable(
            configuration: .init(
                nodeName: "n1", windowBytes: window, memoryBudgetBytes: budget, chunkBytesDefault: 1 << 20))
    }

    static func open(id: UInt64, length: UInt64, chunk: UInt32 = 1 << 20) -> Freight_Wire_V1_Open {
        var open = Freight_Wire_V1_Open()
        open.header.id = id
        open.header.destination = "a/b"
        open.header.length = length
        open.header.chunkBytes = chunk
        return open
    }

    static let app = FlowPort.session(1)
    static let peer = FlowPort.peer("n2")
    static let receiver = FlowPort.session(7)

    /// Two branches: a peer (node n2, endpoint 3) and a local app (endpoint 9).
    static func twoBranches(_ header: Freight_Wire_V1_MessageHeader, _ load: (EndpointKey) -> Int) -> FlowTable.Plan {
        FlowTable.Plan(branches: [
            Flow.Branch(port: peer, targets: [EndpointKey(node: "n2", id: 3)]),
            Flow.Branch(port: receiver, targets: [EndpointKey(node: "n1", id: 9)]),
        ])
    }

    /// The frames sent, by port, in order.
    static func sent(_ actions: [FlowAction]) -> [(Frame, FlowPort)] {
        actions.compactMap { if case .send(let frame, let port) = $0 { (frame, port) } else { nil } }
    }

    static func acks(_ actions: [FlowAction], to port: FlowPort) -> [(acked: UInt64, credit: UInt64)] {
        sent(actions).compactMap { frame, to in
            guard to == port, case .ack(let ack) = frame else { return nil }
            return (ack.ackedOffset, ack.creditOffset)
        }
    }

    static func done(_ id: UInt64) -> Freight_Wire_V1_Done {
        var done = Freight_Wire_V1_Done()
        done.messageID = id
        var delivery = Freight_Wire_V1_Delivery()
        delivery.endpoint.node = "n1"
        delivery.endpoint.id = 9
        done.deliveries = [delivery]
        return done
    }

    @Test func openSendsOneOpenPerBranchAndReservesAWindow() {
        var table = Self.table()
        var actions: [FlowAction] = []
        let flow = table.open(Self.open(id: 5, length: 100 * Self.mebibyte), from: Self.app, actions: &actions) {
            Self.twoBranches($0, $1)
        }
        #expect(flow != nil)
        let opens = Self.sent(actions).filter { if case .open = $0.0 { true } else { false } }
        #expect(opens.map(\.1) == [Self.peer, Self.receiver])
        if case .open(let open) = opens[0].0 {
            #expect(open.targets.map(\.id) == [3])
            #expect(open.path == ["n1"])
        }
        #expect(table.reservedBytes == 8 << 20)
        #expect(table.load(EndpointKey(node: "n2", id: 3)) == 1)
        #expect(table.messages(from: Self.app) == 1)
    }

    /// Upstream hears the minimum over open branches, capped at the node's window beyond what all acknowledged.
    @Test func creditIsTheMinimumOverBranchesCappedAtTheWindow() {
        var table = Self.table(window: 4 << 20)
        var actions: [FlowAction] = []
        table.open(Self.open(id: 5, length: 100 * Self.mebibyte), from: Self.app, actions: &actions) {
            Self.twoBranches($0, $1)
        }
        actions = []
        table.ack(ackFrame(5, acked: 0, credit: 32 << 20), from: Self.peer, actions: &actions)
        #expect(Self.acks(actions, to: Self.app).isEmpty, "the other branch has granted nothing yet")
        actions = []
        table.ack(ackFrame(5, acked: 0, credit: 16 << 20), from: Self.receiver, actions: &actions)
        #expect(Self.acks(actions, to: Self.app).map(\.credit) == [4 << 20], "capped at the node's window")
        actions = []
        table.ack(ackFrame(5, acked: 2 << 20, credit: 32 << 20), from: Self.peer, actions: &actions)
        table.ack(ackFrame(5, acked: 1 << 20, credit: 17 << 20), from: Self.receiver, actions: &actions)
        #expect(Self.acks(actions, to: Self.app).last.map { [$0.acked, $0.credit] } == [1 << 20, 5 << 20])
    }

    /// Across a WAN (docs/wan.md, "Windows"): an OPEN's window hint raises the node's window for that message and is
    /// passed on to its branches; a gateway widens a message it sends across such a link within the budget, and a
    /// hint the budget cannot cover leaves the window as it was.
    @Test func aWindowHintWidensTheWindowWithinTheBudget() {
        var table = Self.table(window: 4 << 20, budget: 64 << 20)
        var actions: [FlowAction] = []
        var hinted = Self.open(id: 5, length: 100 * Self.mebibyte)
        hinted.windowHint = 16 << 20
        table.open(hinted, from: Self.peer, actions: &actions) { header, _ in
            FlowTable.Plan(branches: [Flow.Branch(port: Self.receiver, targets: [EndpointKey(node: "n1", id: 9)])])
        }
        #expect(table.reservedBytes == 16 << 20)
        let opens = Self.sent(actions).compactMap { if case .open(let open) = $0.0 { open } else { nil } }
        #expect(opens.map(\.windowHint) == [16 << 20], "passed on to the receiver")
        actions = []
        table.ack(ackFrame(5, acked: 0, credit: 64 << 20), from: Self.receiver, actions: &actions)
        #expect(Self.acks(actions, to: Self.peer).map(\.credit) == [16 << 20])

        // A message from an app, widened as its gateway sends it across the WAN.
        actions = []
        table.open(Self.open(id: 6, length: 100 * Self.mebibyte), from: Self.app, actions: &actions) {
            Self.twoBranches($0, $1)
        }
        #expect(table.widen(6, window: 24 << 20) == 24 << 20)
        #expect(table.reservedBytes == 40 << 20)
        // Past the budget (64 MiB): the window stays.
        #expect(table.widen(6, window: 64 << 20) == 24 << 20)
        #expect(table.reservedBytes == 40 << 20)
        actions = []
        table.ack(ackFrame(6, acked: 0, credit: 64 << 20), from: Self.peer, actions: &actions)
        table.ack(ackFrame(6, acked: 0, credit: 64 << 20), from: Self.receiver, actions: &actions)
        #expect(Self.acks(actions, to: Self.app).last?.credit == 24 << 20)
        // Both end: the budget is whole again.
        actions = []
        table.done(Self.done(5), from: Self.receiver, actions: &actions)
        table.done(Self.done(6), from: Self.peer, actions: &actions)
        table.done(Self.done(6), from: Self.receiver, actions: &actions)
        #expect(table.reservedBytes == 0)
    }

    /// Every way a branch can fail takes one path: upstream hears the new minimum over the branches left (here the
    /// app's progress), and the message ends with the failed branch listed with the offset it reached.
    @Test(arguments: ["abort", "portGone", "failBranch"])
    func everyBranchFailureTakesOnePath(_ how: String) {
        var table = Self.table()
        var actions: [FlowAction] = []
        table.open(Self.open(id: 5, length: 10 * Self.mebibyte), from: Self.app, actions: &actions) {
            Self.twoBranches($0, $1)
        }
        table.ack(ackFrame(5, acked: 0, credit: 8 << 20), from: Self.receiver, actions: &actions)
        table.ack(ackFrame(5, acked: 1 << 20, credit: 4 << 20), from: Self.peer, actions: &actions)
        table.ack(ackFrame(5, acked: 3 << 20, credit: 10 << 20), from: Self.receiver, actions: &actions)
        actions = []
        let error = FreightError(.nodeGone, "node n2 went away")
        switch how {
        case "abort":
            table.abort(abortFrame(5, error, acked: 1 << 20), from: Self.peer, actions: &actions)
        case "portGone":
            table.portGone(Self.peer, error: error, actions: &actions)
        default:
            table.failBranch(5, port: Self.peer, error, tellBranch: true, actions: &actions)
        }
        // The app's branch alone now sets the pace.
        #expect(Self.acks(actions, to: Self.app).map { [$0.acked, $0.credit] } == [[3 << 20, 10 << 20]])
        #expect(actions.contains { if case .branchEnded(5, Self.peer) = $0 { true } else { false } })
        if how == "failBranch" {
            #expect(Self.sent(actions).contains { if case .abort = $0.0 { $0.1 == Self.peer } else { false } })
        }
        actions = []
        table.done(Self.done(5), from: Self.receiver, actions: &actions)
        guard case .done(let done)? = Self.sent(actions).first(where: { $0.1 == Self.app })?.0 else {
            Issue.record("expected DONE upstream: \(actions)")
            return
        }
        #expect(done.deliveries.map(\.endpoint.id) == [9])
        #expect(done.deliveries[0].path == ["n1"])
        #expect(done.failures.map(\.endpoint.id) == [3])
        #expect(done.failures[0].ackedOffset == 1 << 20)
        #expect(done.failures[0].code == FreightError.Code.nodeGone.rawValue)
        #expect(table.count == 0 && table.reservedBytes == 0 && table.delivered == 1)
        #expect(table.load(EndpointKey(node: "n2", id: 3)) == 0 && table.messages(from: Self.app) == 0)
        #expect(actions.contains { if case .finished(let end) = $0 { end.messageID == 5 } else { false } })
    }

    @Test func chunksAreAdmittedOnlyWithinTheCreditFromTheirUpstream() {
        var table = Self.table()
        var actions: [FlowAction] = []
        table.open(Self.open(id: 5, length: 10 * Self.mebibyte), from: Self.app, actions: &actions) {
            Self.twoBranches($0, $1)
        }
        table.ack(ackFrame(5, acked: 0, credit: 2 << 20), from: Self.peer, actions: &actions)
        table.ack(ackFrame(5, acked: 0, credit: 2 << 20), from: Self.receiver, actions: &actions)
        actions = []
        #expect(table.admit(5, offset: 0, count: 1 << 20, from: Self.app, actions: &actions) != nil)
        #expect(table.admit(99, offset: 0, count: 1 << 20, from: Self.app, actions: &actions) == nil)
        #expect(actions.isEmpty, "a chunk of a message that ended is dropped quietly")
        #expect(table.admit(5, offset: 1 << 20, count: 1 << 20, from: Self.peer, actions: &actions) == nil)
        #expect(actions.contains { if case .warning = $0 { true } else { false } })
        actions = []
        #expect(table.admit(5, offset: 1 << 20, count: (1 << 20) + 1, from: Self.app, actions: &actions) == nil)
        let aborts = Self.sent(actions).filter { if case .abort = $0.0 { true } else { false } }.map(\.1)
        #expect(Set(aborts) == [Self.app, Self.peer, Self.receiver], "past the credit: aborted both ways")
        #expect(table.count == 0 && table.failed == 1)
    }

    /// A credit stall is counted when the upstream sends the last byte of its credit before the message's end; the
    /// flow's end names its upstream and each branch with what it acknowledged and whether it delivered.
    @Test func creditStallsAndTheLinksAnEndIsCountedOn() {
        var table = Self.table()
        var actions: [FlowAction] = []
        table.open(Self.open(id: 5, length: 3 * Self.mebibyte), from: Self.app, actions: &actions) {
            Self.twoBranches($0, $1)
        }
        table.ack(ackFrame(5, acked: 0, credit: 2 << 20), from: Self.peer, actions: &actions)
        table.ack(ackFrame(5, acked: 0, credit: 2 << 20), from: Self.receiver, actions: &actions)
        #expect(table.admit(5, offset: 0, count: 1 << 20, from: Self.app, actions: &actions) != nil)
        #expect(table.creditStalls == 0, "credit left")
        #expect(table.admit(5, offset: 1 << 20, count: 1 << 20, from: Self.app, actions: &actions) != nil)
        #expect(table.creditStalls == 1, "all the credit used, the message not whole")
        table.ack(ackFrame(5, acked: 2 << 20, credit: 3 << 20), from: Self.peer, actions: &actions)
        table.ack(ackFrame(5, acked: 2 << 20, credit: 3 << 20), from: Self.receiver, actions: &actions)
        #expect(table.admit(5, offset: 2 << 20, count: 1 << 20, from: Self.app, actions: &actions) != nil)
        #expect(table.creditStalls == 1, "the last byte of the message is no stall")
        actions = []
        table.failBranch(5, port: Self.peer, FreightError(.nodeGone, "gone"), actions: &actions)
        table.done(Self.done(5), from: Self.receiver, actions: &actions)
        let end = actions.compactMap { if case .finished(let end) = $0 { end } else { nil } }.first
        #expect(end?.upstream == Self.app && end?.failure == nil)
        #expect(
            end?.branches == [
                FlowEnd.BranchEnd(port: Self.peer, bytes: 2 << 20, delivered: false),
                FlowEnd.BranchEnd(port: Self.receiver, bytes: 3 << 20, delivered: true),
            ])
    }

    /// Memory pressure shrinks windows before it refuses messages (docs/wan.md, "Many messages"): a message that
    /// finds less left than its window opens with what is left, in whole chunks; one that finds not even a chunk
    /// left makes the messages under the same limit (its party's share, or the budget) shrink to an even share, and
    /// takes that share. Credit already granted stays reserved until it is acknowledged.
    @Test func memoryPressureShrinksWindowsBeforeItRefuses() {
        var table = Self.table(window: 8 << 20, budget: 20 << 20)
        var actions: [FlowAction] = []
        func open(_ id: UInt64, from port: FlowPort) -> FreightError? {
            actions = []
            table.open(Self.open(id: id, length: 64 << 20), from: port, actions: &actions) { _, _ in
                FlowTable.Plan(branches: [Flow.Branch(port: Self.receiver, targets: [EndpointKey(node: "n1", id: 9)])])
            }
            guard case .abort(let abort)? = Self.sent(actions).first?.0 else { return nil }
            return abort.error
        }
        let mebibyte = Int(Self.mebibyte)
        // One party may hold half the budget (10 MiB): a whole window, then the 2 MiB left.
        #expect(open(1, from: Self.app) == nil)
        #expect(open(2, from: Self.app) == nil)
        #expect(table[2]?.windowBytes == 2 << 20)
        // Message 1 is granted its 8 MiB: they stay reserved, so a third finds no chunk to take.
        actions = []
        table.ack(ackFrame(1, acked: 0, credit: 64 << 20), from: Self.receiver, actions: &actions)
        #expect(Self.acks(actions, to: Self.app).map(\.credit) == [8 << 20])
        #expect(open(3, from: Self.app)?.message.contains("one party may have") == true)
        #expect(table[1]?.windowBytes == 3 << 20, "shrunk to a third of the share, in whole chunks")
        #expect(table.reserved(by: Self.app) == 10 * mebibyte)
        // Acknowledged, message 1 gives back what its smaller window does not need, and a fourth gets a share.
        actions = []
        table.ack(ackFrame(1, acked: 8 << 20, credit: 64 << 20), from: Self.receiver, actions: &actions)
        #expect(Self.acks(actions, to: Self.app).last?.credit == 11 << 20, "credit within the smaller window")
        #expect(table.reserved(by: Self.app) == 5 * mebibyte)
        #expect(open(4, from: Self.app) == nil)
        #expect(table[4]?.windowBytes == 5 << 20, "what is left of the share")
        // Other parties: a whole window, what is left of the budget, then an even share of the budget for all.
        #expect(open(5, from: .session(2)) == nil)
        #expect(open(6, from: .session(3)) == nil)
        #expect(table[6]?.windowBytes == 2 << 20)
        #expect(table.reservedBytes == 20 * mebibyte)
        #expect(open(7, from: .session(4)) == nil)
        #expect([1, 2, 4, 5, 6, 7].map { table[$0]?.windowBytes } == [3, 2, 3, 3, 2, 3].map { $0 << 20 })
        #expect(table.reservedBytes == 16 * mebibyte)
    }

    @Test func headerLimitsBudgetAndMessagesPerUpstreamRefuseWithAReason() {
        var table = Self.table(window: 8 << 20, budget: 16 << 20)
        var actions: [FlowAction] = []
        func refusal(_ open: Freight_Wire_V1_Open, from port: FlowPort = Self.app) -> FreightError? {
            actions = []
            table.open(open, from: port, actions: &actions) { Self.twoBranches($0, $1) }
            guard case .abort(let abort)? = Self.sent(actions).first?.0 else { return nil }
            return abort.error
        }
        #expect(refusal(Self.open(id: 0, length: 1))?.code == .protocolViolation)
        #expect(refusal(Self.open(id: 1, length: 1, chunk: 1000))?.message.contains("chunk size") == true)
        #expect(refusal(Self.open(id: 2, length: 64 << 20)) == nil)
        #expect(refusal(Self.open(id: 2, length: 64 << 20))?.code == .duplicate)
        // Granted in full, message 2's window cannot shrink to make room (memoryPressureShrinksWindowsBeforeItRefuses).
        func grant(_ id: UInt64) {
            for port in [Self.peer, Self.receiver] {
                table.ack(ackFrame(id, acked: 0, credit: 64 << 20), from: port, actions: &actions)
            }
        }
        grant(2)
        // Half the budget is one party's share (docs/hardening.md): a second party takes the rest.
        #expect(refusal(Self.open(id: 3, length: 64 << 20))?.message.contains("one party may have") == true)
        #expect(refusal(Self.open(id: 3, length: 64 << 20), from: .session(2)) == nil)
        grant(3)
        let full = refusal(Self.open(id: 4, length: 64 << 20), from: .session(3))
        #expect(full?.code == .resourceExhausted && full?.message.contains("memory budget") == true)
        var many = Self.table(budget: 1 << 40)
        for id in 1...UInt64(Limits.messagesPerConnectionMax) {
            many.open(Self.open(id: id, length: 1), from: Self.app, actions: &actions) { Self.twoBranches($0, $1) }
        }
        actions = []
        many.open(Self.open(id: 1 << 40, length: 1), from: Self.app, actions: &actions) { Self.twoBranches($0, $1) }
        guard case .abort(let abort)? = Self.sent(actions).first?.0 else {
            Issue.record("expected a refusal")
            return
        }
        #expect(abort.error.message.contains("messages in flight"))
        // Refusals in the plan (no route) are answered too.
        actions = []
        let noRoute = table.open(Self.open(id: 77, length: 1), from: Self.app, actions: &actions) {
            _, _ throws(FreightError) in
            throw FreightError.noRoute("a/b")
        }
        #expect(noRoute == nil)
        #expect(Self.sent(actions).first.map { "\($0.0)" }?.contains("no route to a/b") == true)
    }

    /// Upstream gone: every open branch is told why and how far the message got; the flow leaves the table.
    @Test(arguments: [FlowPort.session(1), FlowPort.peer("n0")])
    func upstreamGoneAbortsEveryBranch(_ upstream: FlowPort) {
        var table = Self.table()
        var actions: [FlowAction] = []
        table.open(Self.open(id: 5, length: 10 * Self.mebibyte), from: upstream, actions: &actions) {
            Self.twoBranches($0, $1)
        }
        table.ack(ackFrame(5, acked: 0, credit: 4 << 20), from: Self.peer, actions: &actions)
        table.ack(ackFrame(5, acked: 0, credit: 4 << 20), from: Self.receiver, actions: &actions)
        _ = table.admit(5, offset: 0, count: 3 << 20, from: upstream, actions: &actions)
        actions = []
        table.portGone(upstream, error: FreightError(.receiverGone, "unused"), actions: &actions)
        let aborts: [(FreightError, FlowPort)] = Self.sent(actions).compactMap { frame, port in
            if case .abort(let abort) = frame { (abort.error, port) } else { nil }
        }
        #expect(aborts.map(\.1) == [Self.peer, Self.receiver])
        let expected: FreightError.Code = upstream.isLocal ? .senderGone : .nodeGone
        #expect(aborts.allSatisfy { $0.0.code == expected && $0.0.message.contains("after 3145728 of 10485760") })
        #expect(table.count == 0 && table.reservedBytes == 0 && table.failed == 1)
    }
}

func ackFrame(_ id: UInt64, acked: UInt64, credit: UInt64) -> Freight_Wire_V1_Ack {
    var ack = Freight_Wire_V1_Ack()
    ack.messageID = id
    ack.ackedOffset = acked
    ack.creditOffset = credit
    return ack
}

func abortFrame(_ id: UInt64, _ error: FreightError, acked: UInt64) -> Freight_Wire_V1_Abort {
    var abort = Freight_Wire_V1_Abort()
    abort.messageID = id
    abort.code = error.code.rawValue
    abort.reason = error.message
    abort.ackedOffset = acked
    return abort
}
