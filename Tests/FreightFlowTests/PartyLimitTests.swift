import FreightCore
import FreightDirectory
import FreightFlow
import FreightWire
import Testing

/// No party stalls or starves the others (docs/hardening.md), on the flow table alone.
@Suite struct PartyLimitTests {
    typealias T = FlowTableTests
    static let second: UInt64 = 1_000_000_000

    static func table(budget: Int = 64 << 20, share: Int? = nil) -> FlowTable {
        FlowTable(
            configuration: .init(
                nodeName: "n1", windowBytes: 8 << 20, memoryBudgetBytes: budget, chunkBytesDefault: 1 << 20,
                partyShareBytes: share, idle: .seconds(30), slowReceiver: .seconds(10)))
    }

    static func oneBranch(_ header: Freight_Wire_V1_MessageHeader, _ load: (EndpointKey) -> Int) -> FlowTable.Plan {
        FlowTable.Plan(branches: [Flow.Branch(port: T.receiver, targets: [EndpointKey(node: "n1", id: 9)])])
    }

    static func aborts(_ actions: [FlowAction], to port: FlowPort) -> [String] {
        T.sent(actions).compactMap { frame, to in
            guard to == port, case .abort(let abort) = frame else { return nil }
            return abort.error.message
        }
    }

    /// One party reserves at most its share, which its messages divide among them (docs/wan.md, "Many messages");
    /// once all of it is granted, the next is refused; another party still gets in.
    @Test func onePartyReservesAtMostItsShare() {
        var table = Self.table(budget: 64 << 20, share: 32 << 20)
        var actions: [FlowAction] = []
        for id in 1...6 {
            table.open(T.open(id: UInt64(id), length: 64 << 20), from: T.app, actions: &actions) {
                Self.oneBranch($0, $1)
            }
        }
        #expect(table.reserved(by: T.app) == 32 << 20)
        #expect(Self.aborts(actions, to: T.app).isEmpty)
        #expect((1...6).map { table[UInt64($0)]?.windowBytes } == [6, 6, 6, 6, 6, 2].map { $0 << 20 })
        for id in 1...6 {
            table.ack(ackFrame(UInt64(id), acked: 0, credit: 64 << 20), from: T.receiver, actions: &actions)
        }
        actions = []
        table.open(T.open(id: 7, length: 64 << 20), from: T.app, actions: &actions) { Self.oneBranch($0, $1) }
        let refused = Self.aborts(actions, to: T.app)
        #expect(refused.count == 1)
        #expect(refused.allSatisfy { $0.contains("one party may have 32 MiB") }, "\(refused)")
        #expect(table.reserved(by: T.app) == 32 << 20)
        actions = []
        let other = table.open(T.open(id: 9, length: 64 << 20), from: .session(2), actions: &actions) {
            Self.oneBranch($0, $1)
        }
        #expect(other != nil, "another party still gets in")
        #expect(table.reservedBytes == 40 << 20)
    }

    /// A relayed message (from a peer) whose party's share is all granted credit opens with one chunk while the
    /// node's budget has room, instead of being refused: the hop before it admitted it (docs/wan.md, "Many
    /// messages"). The whole budget still refuses.
    @Test func aRelayedMessagePastItsPartysShareOpensWithOneChunk() {
        var table = Self.table(budget: 64 << 20, share: 32 << 20)
        var actions: [FlowAction] = []
        for id in 1...4 {
            table.open(T.open(id: UInt64(id), length: 8 << 20), from: T.peer, actions: &actions) {
                Self.oneBranch($0, $1)
            }
            table.ack(ackFrame(UInt64(id), acked: 0, credit: 8 << 20), from: T.receiver, actions: &actions)
        }
        #expect(table.reservedBytes == 32 << 20)
        actions = []
        let relayed = table.open(T.open(id: 5, length: 8 << 20), from: T.peer, actions: &actions) {
            Self.oneBranch($0, $1)
        }
        #expect(Self.aborts(actions, to: T.peer).isEmpty, "\(Self.aborts(actions, to: T.peer))")
        #expect(relayed?.windowBytes == 1 << 20)
        #expect(table.reservedBytes == 33 << 20)
        // Up to the whole budget, and no further.
        for id in 6...36 {
            table.open(T.open(id: UInt64(id), length: 8 << 20), from: T.peer, actions: &actions) {
                Self.oneBranch($0, $1)
            }
        }
        #expect(table.reservedBytes == 64 << 20)
        actions = []
        table.open(T.open(id: 37, length: 8 << 20), from: T.peer, actions: &actions) { Self.oneBranch($0, $1) }
        #expect(Self.aborts(actions, to: T.peer).first?.contains("memory budget") == true)
    }

    /// A message whose sender holds credit and sends nothing fails when the idle time passes, and returns its
    /// reservation; one whose sender waits for credit does not.
    @Test func anIdleSenderLosesItsReservation() {
        var table = Self.table()
        var actions: [FlowAction] = []
        table.advance(to: 1 * Self.second, actions: &actions)
        table.open(T.open(id: 1, length: 64 << 20), from: T.app, actions: &actions) { Self.oneBranch($0, $1) }
        table.open(T.open(id: 2, length: 64 << 20), from: .session(2), actions: &actions) { Self.oneBranch($0, $1) }
        // Message 1's receiver grants credit, and its sender sends nothing; message 2's receiver grants none.
        table.ack(ackFrame(1, acked: 0, credit: 8 << 20), from: T.receiver, actions: &actions)
        actions = []
        table.advance(to: 30 * Self.second, actions: &actions)
        #expect(table.count == 2, "not yet")
        table.advance(to: 31 * Self.second, actions: &actions)
        #expect(table[1] == nil)
        #expect(table[2] != nil, "its sender waits for credit, through no fault of its own")
        #expect(table.reservedBytes == 8 << 20)
        #expect(Self.aborts(actions, to: T.app).first?.contains("sent no bytes") == true, "\(actions)")
        #expect(Self.aborts(actions, to: T.receiver).count == 1, "the receiver hears it too")
    }

    /// Bytes sent again after a resume do not count as credit used: a sender that sent part of a message twice and
    /// then stopped, credit in hand, still loses its reservation when the idle time passes.
    @Test func bytesSentAgainDoNotHideAnIdleSender() {
        var table = Self.table()
        var actions: [FlowAction] = []
        table.advance(to: 1 * Self.second, actions: &actions)
        table.open(T.open(id: 1, length: 64 << 20), from: T.app, actions: &actions) { _, _ in
            FlowTable.Plan(
                branches: [Flow.Branch(port: T.receiver, targets: [EndpointKey(node: "n1", id: 9)])],
                upstreamResends: true)
        }
        table.ack(ackFrame(1, acked: 0, credit: 8 << 20), from: T.receiver, actions: &actions)
        for mebibyte in 0..<8 {
            _ = table.admit(1, offset: UInt64(mebibyte) << 20, count: 1 << 20, from: T.app, actions: &actions)
        }
        // The receiver lost what came after 4 MiB and asks for it again, granting 4 MiB more credit.
        var again = ackFrame(1, acked: 4 << 20, credit: 12 << 20)
        again.resendFrom = 4 << 20
        table.ack(again, from: T.receiver, actions: &actions)
        for mebibyte in 4..<8 {
            _ = table.admit(1, offset: UInt64(mebibyte) << 20, count: 1 << 20, from: T.app, actions: &actions)
        }
        #expect(table[1]?.bytesForwarded == 12 << 20, "as much as its credit, counting the bytes sent twice")
        actions = []
        table.advance(to: 32 * Self.second, actions: &actions)
        #expect(table[1] == nil, "it used 8 MiB of 12 MiB of credit and sent nothing for 30 s")
        #expect(Self.aborts(actions, to: T.app).first?.contains("at offset 8388608") == true, "\(actions)")
    }

    /// Fan-out: a receiver that took nothing for the slow-receiver time while the other went on is cut with `slow
    /// receiver`; the other goes on and the message can still be delivered to it.
    @Test func aSlowReceiverIsCutAndTheOthersGoOn() {
        var table = Self.table()
        var actions: [FlowAction] = []
        table.open(T.open(id: 5, length: 32 << 20), from: T.app, actions: &actions) { T.twoBranches($0, $1) }
        // The peer branch never grants anything; the local receiver keeps taking bytes.
        for second in 1...12 {
            table.ack(
                ackFrame(5, acked: UInt64(second) << 20, credit: UInt64(second + 8) << 20), from: T.receiver,
                actions: &actions)
            table.advance(to: UInt64(second) * Self.second, actions: &actions)
        }
        let branches = table[5]?.branches ?? []
        let peer = branches.first { $0.port == T.peer }
        guard case .failed(let error, _)? = peer?.state else {
            Issue.record("the peer branch was not cut: \(String(describing: peer?.state))")
            return
        }
        #expect(error.message.hasPrefix("slow receiver"), "\(error.message)")
        #expect(branches.first { $0.port == T.receiver }?.isOpen == true)
        #expect(Self.aborts(actions, to: T.peer).count == 1, "the slow branch is told")
    }
}
