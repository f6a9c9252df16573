import Foundation
import FreightCore
import FreightDirectory
import FreightFlow
import FreightWire
import Testing

/// Seeded random schedules of events against one flow table, checking its invariants after every event: memory
/// within the budget and equal to what the flows hold, credit never beyond what is reserved, at most one outcome per
/// message upstream and never both DONE and ABORT, and nothing left behind once every port is gone. A failure
/// names its seed; `FREIGHT_FLOW_SEED=N` replays one, `FREIGHT_FLOW_SEEDS=N` runs N (scripts/simulate.sh).
@Suite struct FlowTableSimulationTests {
    @Test func randomSchedulesKeepEveryInvariant() {
        runSeeds("FREIGHT_FLOW", slice: 300, salt: 0x9E37_79B9_7F4A_7C15, suite: "FlowTableSimulationTests") {
            Self.run(seed: $0)
        }
    }

    /// One schedule; returns what broke, or nil.
    static func run(seed: UInt64, steps: Int = 400) -> String? {
        var random = SeededRandom(seed: seed)
        let window = Int(random.next(in: 1...8)) << 20
        let budget = window * Int(random.next(in: 2...12))
        var table = FlowTable(
            configuration: .init(
                nodeName: "n1", windowBytes: window, memoryBudgetBytes: budget, chunkBytesDefault: 1 << 20))
        let ports: [FlowPort] = [.session(1), .session(2), .local(3), .peer("n2"), .peer("n3"), .peer("n4")]
        var actions: [FlowAction] = []
        // Kinds of outcome sent upstream, per message: a peer may be sent the same one again after a broken link
        // (resume), but never both.
        var outcomes: [UInt64: Set<String>] = [:]
        var clock: UInt64 = 0
        var endedByUpstream: Set<UInt64> = []
        var started: Set<UInt64> = []
        var nextID: UInt64 = 1
        var gone: Set<FlowPort> = []
        var upstreams: [UInt64: FlowPort] = [:]

        func record(_: UInt64?) {
            for action in actions {
                guard case .send(let frame, let port) = action else { continue }
                switch frame {
                case .done(let done):
                    // The table sends DONE only upstream, once every branch finished.
                    outcomes[done.messageID, default: []].insert("done")
                case .abort(let abort):
                    // An ABORT upstream is an outcome; one downstream is not.
                    if let upstream = upstreams[abort.messageID], upstream == port {
                        outcomes[abort.messageID, default: []].insert("abort")
                    }
                default: break
                }
            }
            actions.removeAll()
        }
        /// Time passes; a flow held for its upstream that expires is ended by its upstream's link, which cannot be
        /// told (the sending side fails at its own hold time).
        func advance(to now: UInt64) {
            let held = table.flows.filter { $0.value.upstreamLostNanos != nil }.map(\.key)
            table.advance(to: now, actions: &actions)
            for id in held where table[id] == nil { endedByUpstream.insert(id) }
            record(nil)
        }

        for step in 0..<steps {
            let live = Array(table.flows.keys).sorted()
            clock += random.next(in: 0...400) * 1_000_000
            advance(to: clock)
            switch random.next(in: 0...12) {
            case 10:
                // A peer's link breaks whole, or one of its stripes, or its sending side.
                let peer = ports[Int(random.next(in: 3...5))]
                switch random.next(in: 0...2) {
                case 0: table.linkLost(peer, error: FreightError(.nodeGone, "link broke"), actions: &actions)
                case 1: table.stripeLost(peer, actions: &actions)
                default: table.upstreamLost(peer, actions: &actions)
                }
                record(nil)
            case 11:
                // The link is back: suspended branches re-open; the peer re-opens its own (OPEN resume).
                let peer = ports[Int(random.next(in: 3...5))]
                table.linkRestored(peer, actions: &actions)
                record(nil)
                for (id, flow) in table.flows where flow.upstream == peer && flow.upstreamLostNanos != nil {
                    var open = Freight_Wire_V1_Open()
                    open.header = flow.header
                    open.resume = true
                    table.resume(open, from: peer, actions: &actions)
                    _ = id
                }
                record(nil)
            case 12:
                // A resume for a message that ended or never was (answered with its outcome, or refused).
                let peer = ports[Int(random.next(in: 3...5))]
                var open = Freight_Wire_V1_Open()
                open.header.id = random.next(in: 1...max(1, nextID))
                open.resume = true
                if table[open.header.id] == nil { table.resume(open, from: peer, actions: &actions) }
                // Refusals of unknown messages go to a peer that sent nothing: not outcomes of ours.
                actions.removeAll { action in
                    if case .send(.abort(let abort), _) = action { return upstreams[abort.messageID] != peer }
                    return false
                }
                record(nil)
            case 0, 1:
                // A new message from a random upstream, to 1-3 branches among the other ports.
                let upstream = ports[Int(random.next(in: 0...UInt64(ports.count - 1)))]
                gone.remove(upstream)  // a port that went away came back (a new session, a restarted node)
                let id = nextID
                nextID += 1
                var open = Freight_Wire_V1_Open()
                open.header.id = id
                open.header.destination = "sim/x"
                open.header.length = random.next(in: 0...64) << 20 | random.next(in: 0...1000)
                open.header.chunkBytes = 1 << 20
                let others = ports.filter { $0 != upstream }
                let fanOut = Int(random.next(in: 1...3))
                let resends = random.next(in: 0...3) > 0
                var branches: [Flow.Branch] = []
                for (index, port) in others.shuffled(using: &random).prefix(fanOut).enumerated() {
                    let key = EndpointKey(node: "x", id: UInt64(index) + 10 * id)
                    branches.append(
                        gone.contains(port)
                            ? .unreachable(port, targets: [key], FreightError(.nodeGone, "gone"))
                            : Flow.Branch(port: port, targets: [key]))
                }
                upstreams[id] = upstream
                if table.open(
                    open, from: upstream, actions: &actions,
                    plan: { _, _ in FlowTable.Plan(branches: branches, upstreamResends: resends) })
                    != nil
                {
                    started.insert(id)
                }
                record(id)
            case 2, 3:
                // A branch acknowledges some of what it was sent and grants credit (a well-behaved receiver).
                guard let id = live.randomElement(using: &random), let flow = table[id],
                    let branch = flow.branches.filter(\.isOpen).randomElement(using: &random)
                else { continue }
                let acked = min(flow.length, branch.ackedOffset + random.next(in: 0...UInt64(window)))
                let ack = Freight_Wire_V1_Ack.with {
                    $0.messageID = id
                    $0.ackedOffset = min(acked, max(flow.bytesForwarded, branch.ackedOffset))
                    $0.creditOffset = min(flow.length, $0.ackedOffset + UInt64(window))
                }
                table.ack(ack, from: branch.port, actions: &actions)
                record(id)
            case 4:
                guard let id = live.randomElement(using: &random), let flow = table[id],
                    let branch = flow.branches.filter(\.isOpen).randomElement(using: &random)
                else { continue }
                table.done(.with { $0.messageID = id }, from: branch.port, actions: &actions)
                record(id)
            case 5:
                guard let id = live.randomElement(using: &random), let flow = table[id],
                    let branch = flow.branches.filter(\.isOpen).randomElement(using: &random)
                else { continue }
                table.abort(
                    .with {
                        $0.messageID = id
                        $0.code = FreightError.Code.receiverGone.rawValue
                        $0.reason = "receiver stopped"
                        $0.ackedOffset = branch.ackedOffset
                    }, from: branch.port, actions: &actions)
                record(id)
            case 6, 7:
                // Upstream sends the next chunk, within its credit or (rarely) past it.
                guard let id = live.randomElement(using: &random), let flow = table[id] else { continue }
                let offset = flow.bytesForwarded
                let honest = random.next(in: 0...9) > 0
                let room = flow.upstreamCredit > offset ? flow.upstreamCredit - offset : 0
                let count = honest ? Int(min(room, 1 << 20)) : Int(room) + 1
                if count == 0 { continue }
                _ = table.admit(id, offset: offset, count: count, from: flow.upstream, actions: &actions)
                record(id)
            case 8:
                guard let id = live.randomElement(using: &random), let flow = table[id], random.next(in: 0...3) == 0
                else { continue }
                table.abort(
                    .with {
                        $0.messageID = id; $0.reason = "sender cancelled"
                    }, from: flow.upstream, actions: &actions)
                endedByUpstream.insert(id)
                record(id)
            default:
                guard random.next(in: 0...5) == 0 else { continue }
                let port = ports[Int(random.next(in: 0...UInt64(ports.count - 1)))]
                for (id, flow) in table.flows where flow.upstream == port { endedByUpstream.insert(id) }
                table.portGone(port, error: FreightError(.nodeGone, "\(port) went away"), actions: &actions)
                gone.insert(port)
                record(nil)
            }
            if let problem = check(table, budget: budget, outcomes: outcomes) { return "step \(step): \(problem)" }
        }
        // The hold time passes, then everyone leaves: nothing may stay behind.
        clock += 31_000_000_000
        advance(to: clock)
        for port in ports {
            for (id, flow) in table.flows where flow.upstream == port { endedByUpstream.insert(id) }
            table.portGone(port, error: FreightError(.nodeGone, "\(port) went away"), actions: &actions)
            record(nil)
        }
        if let problem = check(table, budget: budget, outcomes: outcomes) { return "at the end: \(problem)" }
        guard table.count == 0, table.reservedBytes == 0 else {
            return "\(table.count) flows and \(table.reservedBytes) bytes left behind"
        }
        for port in ports where table.messages(from: port) != 0 { return "messages from \(port) still counted" }
        for id in started where outcomes[id] == nil && !endedByUpstream.contains(id) {
            return "message \(id) ended with no outcome sent upstream"
        }
        return nil
    }

    static func check(_ table: FlowTable, budget: Int, outcomes: [UInt64: Set<String>]) -> String? {
        let held = table.flows.values.reduce(0) { $0 + $1.reservedBytes }
        guard held == table.reservedBytes, table.reservedBytes <= budget else {
            return "reserved \(table.reservedBytes), flows hold \(held), budget \(budget)"
        }
        // What a message was granted and not yet acknowledged may arrive: it stays reserved, even after its window
        // shrank under memory pressure.
        for flow in table.flows.values
        where !flow.shared && flow.upstreamCredit > flow.upstreamAcked + UInt64(flow.reservedBytes) {
            return
                "message \(flow.id) granted credit \(flow.upstreamCredit) past \(flow.upstreamAcked) + its reservation \(flow.reservedBytes)"
        }
        for (id, sent) in outcomes where sent.count > 1 { return "message \(id) was both delivered and aborted" }
        return nil
    }
}
