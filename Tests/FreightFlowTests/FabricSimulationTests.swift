import Foundation
import FreightCore
import FreightDirectory
import FreightFlow
import FreightWire
import Testing

/// A seeded simulation of the node's parts across a path of three nodes (issue 16, point 5): a sending app at n1,
/// n2 relaying, a receiving app at n3, each node's `FlowTable` driven as the engine drives it, over simulated links
/// of several stripes under a manual clock. Each stripe keeps its order; stripes reorder against each other; links
/// lose a stripe, break whole and come back (within the hold time or past it). Every schedule checks that each
/// message ends exactly once at its source, DONE only when the receiver holds every byte exactly once, ABORT with a
/// reason; that no chunk is admitted past the credit granted; and that no node keeps a flow or a byte of budget
/// afterwards. A failure names its seed: `FREIGHT_FABRIC_SEED=N` replays it, `FREIGHT_FABRIC_SEEDS=N` runs N
/// (scripts/simulate.sh).
@Suite struct FabricSimulationTests {
    @Test func messagesOverBreakingLinksEndOnceAndLeaveNothingBehind() {
        runSeeds("FREIGHT_FABRIC", slice: 150, salt: 0xD1B5_4A32_D192_ED03, suite: "FabricSimulationTests") {
            var simulation = Simulation(seed: $0)
            return simulation.run()
        }
    }
}

/// One simulated run. Parties: the source app (session 1 at n1), nodes n1, n2, n3, the sink app (session 7 at n3).
struct Simulation {
    static let second: UInt64 = 1_000_000_000
    static let names = ["n1", "n2", "n3"]
    static let source = FlowPort.session(1)
    static let sink = FlowPort.session(7)
    static let sinkKey = EndpointKey(node: "n3", id: 7)
    static let holdSeconds = 5

    enum Packet {
        case frame(Frame)
        case data(id: UInt64, offset: UInt64, count: Int)
    }

    enum Party: Hashable {
        case app(FlowPort)
        case node(Int)
    }

    /// A packet on its way: where it goes, as whom it arrives there, and the stripe it rides (nil: app socket).
    struct InFlight {
        var at: UInt64
        var sequence: Int
        var to: Party
        var from: FlowPort
        var link: Int?
        var direction: Int
        var stripe: Int
        var packet: Packet
    }

    struct Sending {
        var window: SendWindow
        var outcome: String?
        var reason = ""
    }

    struct Receiving {
        var window: ReceiveWindow
        var complete = false
        var aborted = false
    }

    var random: SeededRandom
    var now: UInt64 = Simulation.second
    var sequence = 0
    var tables: [FlowTable]
    var actions: [FlowAction] = []
    var inFlight: [InFlight] = []
    /// Per link (n1–n2, n2–n3): whether packets pass, and when each stripe in each direction last delivers (order
    /// per stripe).
    var linkUp = [true, true]
    /// Each side's own connections on each link (index 0: the lower node's). A break leaves them dead until the side
    /// notices (at its own time: a timeout, or the reset its next write meets once the link is back); then they
    /// are down until its redial succeeds.
    enum Egress { case alive, dead, down }
    var egress: [[Egress]] = [[.alive, .alive], [.alive, .alive]]
    var detections: [(at: UInt64, link: Int, side: Int)] = []
    var redials: [(at: UInt64, link: Int, side: Int)] = []
    var stripeFree: [[[UInt64]]]
    let stripes: Int
    let windowBytes: Int
    var sending: [UInt64: Sending] = [:]
    var receiving: [UInt64: Receiving] = [:]
    var problems: [String] = []
    /// Scheduled link events: (time, link, up).
    var linkEvents: [(at: UInt64, link: Int, up: Bool)] = []

    init(seed: UInt64) {
        random = SeededRandom(seed: seed)
        stripes = Int(random.next(in: 1...3))
        windowBytes = Int(random.next(in: 2...8)) << 20
        stripeFree = Array(repeating: Array(repeating: Array(repeating: 0, count: 3), count: 2), count: 2)
        let window = windowBytes
        tables = Self.names.map { name in
            FlowTable(
                configuration: .init(
                    nodeName: name, windowBytes: window, memoryBudgetBytes: 16 * window, chunkBytesDefault: 1 << 20,
                    resumeHold: .seconds(Self.holdSeconds)))
        }
    }

    // MARK: The run

    mutating func run() -> String? {
        let messages = Int(random.next(in: 1...3))
        for index in 0..<messages {
            let id = UInt64(index + 1)
            let length = random.next(in: 1...24) << 20 - random.next(in: 0...1000)
            sending[id] = Sending(window: SendWindow(length: length, chunkBytes: 1 << 20))
            var open = Freight_Wire_V1_Open()
            open.header.id = id
            open.header.destination = "sim/sink"
            open.header.length = length
            open.header.chunkBytes = 1 << 20
            appSends(.frame(.open(open)), from: Self.source)
        }
        // Faults in the first seconds: whole links broken (most back within the hold time), stripes lost.
        for _ in 0..<random.next(in: 0...3) {
            let at = now + random.next(in: 0...(3 * Self.second))
            let link = Int(random.next(in: 0...1))
            let down = random.next(in: 0...9) < 8 ? random.next(in: 1...4) : UInt64(Self.holdSeconds + 3)
            linkEvents.append((at, link, false))
            linkEvents.append((at + down * Self.second / 2 + Self.second / 2, link, true))
        }
        var stripeLosses: [(at: UInt64, link: Int, direction: Int, stripe: Int)] = (0..<random.next(in: 0...2)).map {
            _ in
            (
                now + random.next(in: 0...(3 * Self.second)), Int(random.next(in: 0...1)), Int(random.next(in: 0...1)),
                Int(random.next(in: 0...UInt64(stripes - 1)))
            )
        }
        var nextTick = now + Self.second
        let end = now + 120 * Self.second
        var steps = 0
        while now < end && steps < 200_000 {
            steps += 1
            let nextPacket = inFlight.indices.min {
                (inFlight[$0].at, inFlight[$0].sequence) < (inFlight[$1].at, inFlight[$1].sequence)
            }
            let nextLink = linkEvents.indices.min { linkEvents[$0].at < linkEvents[$1].at }
            let nextLoss = stripeLosses.indices.min { stripeLosses[$0].at < stripeLosses[$1].at }
            let nextDetection = detections.indices.min { detections[$0].at < detections[$1].at }
            let nextRedial = redials.indices.min { redials[$0].at < redials[$1].at }
            var next = nextTick
            if let i = nextDetection { next = min(next, detections[i].at) }
            if let i = nextRedial { next = min(next, redials[i].at) }
            if let i = nextPacket { next = min(next, inFlight[i].at) }
            if let i = nextLink { next = min(next, linkEvents[i].at) }
            if let i = nextLoss { next = min(next, stripeLosses[i].at) }
            now = max(now, next)
            if let i = nextDetection, detections[i].at == next {
                let detection = detections.remove(at: i)
                detect(detection.link, side: detection.side)
            } else if let i = nextRedial, redials[i].at == next {
                let redial = redials.remove(at: i)
                redialed(redial.link, side: redial.side)
            } else if let i = nextLink, linkEvents[i].at == next {
                let event = linkEvents.remove(at: i)
                event.up ? restore(event.link) : breakLink(event.link)
            } else if let i = nextLoss, stripeLosses[i].at == next {
                let loss = stripeLosses.remove(at: i)
                loseStripe(loss.link, direction: loss.direction, stripe: loss.stripe)
            } else if let i = nextPacket, inFlight[i].at == next {
                deliver(inFlight.remove(at: i))
            } else {
                nextTick = now + Self.second
                for node in tables.indices {
                    tables[node].advance(to: now, actions: &actions)
                    perform(at: node)
                }
                if inFlight.isEmpty && linkEvents.isEmpty && detections.isEmpty && redials.isEmpty
                    && sending.values.allSatisfy({ $0.outcome != nil })
                {
                    break
                }
            }
        }
        // Past every hold time: nothing may stay.
        for _ in 0..<(2 * Self.holdSeconds + 2) {
            now += Self.second
            for node in tables.indices {
                tables[node].advance(to: now, actions: &actions)
                perform(at: node)
            }
            while !inFlight.isEmpty {
                let i = inFlight.indices.min { inFlight[$0].sequence < inFlight[$1].sequence }!
                deliver(inFlight.remove(at: i))
            }
        }
        check()
        return problems.isEmpty ? nil : problems.prefix(3).joined(separator: "; ")
    }

    mutating func check() {
        for (id, message) in sending.sorted(by: { $0.key < $1.key }) {
            switch message.outcome {
            case nil:
                problems.append("message \(id) never ended at its source")
            case "done"?:
                if receiving[id]?.complete != true {
                    problems.append("message \(id): DONE at the source, but the receiver does not hold every byte")
                }
            default:
                if message.reason.isEmpty { problems.append("message \(id) failed with no reason") }
            }
            if receiving[id].map({ !$0.complete && !$0.aborted }) == true {
                problems.append("message \(id): the receiver was left with part of it and no outcome")
            }
        }
        for (index, table) in tables.enumerated() where table.count != 0 || table.reservedBytes != 0 {
            problems.append("\(Self.names[index]) keeps \(table.count) flows and \(table.reservedBytes) bytes")
        }
    }

    // MARK: Links

    /// The link between node `a` and node `b`, with the direction a packet from `a` takes on it.
    static func link(_ a: Int, _ b: Int) -> (link: Int, direction: Int) { (min(a, b), a < b ? 0 : 1) }

    /// The node on `side` of `link`, and the one across.
    static func nodes(_ link: Int, side: Int) -> (node: Int, peer: Int) {
        side == 0 ? (link, link + 1) : (link + 1, link)
    }

    mutating func breakLink(_ link: Int) {
        guard linkUp[link] else { return }
        trace("link \(link) breaks")
        linkUp[link] = false
        inFlight.removeAll { $0.link == link }
        for side in 0...1 where egress[link][side] == .alive {
            egress[link][side] = .dead
            detections.append((now + random.next(in: (Self.second / 5)...(5 * Self.second / 2)), link, side))
        }
    }

    mutating func restore(_ link: Int) {
        guard !linkUp[link] else { return }
        trace("link \(link) is back")
        linkUp[link] = true
        for side in 0...1 where egress[link][side] == .down {
            redials.append((now + random.next(in: 1_000_000...300_000_000), link, side))
        }
    }

    /// A side finds its connections broken: its branches over the link are suspended and its flows from across
    /// held (the engine's `linkConnectionLost`), and it dials again.
    mutating func detect(_ link: Int, side: Int) {
        guard egress[link][side] == .dead else { return }
        egress[link][side] = .down
        let (node, peer) = Self.nodes(link, side: side)
        trace("\(Self.names[node]) finds its link to \(Self.names[peer]) broken")
        tables[node].advance(to: now, actions: &actions)
        tables[node].linkLost(
            .peer(Self.names[peer]), error: FreightError(.nodeGone, "the link broke"), actions: &actions)
        perform(at: node)
        if linkUp[link] { redials.append((now + random.next(in: 1_000_000...300_000_000), link, side)) }
    }

    /// A side's redial succeeded: what it suspended resumes (``FlowTable/linkRestored(_:actions:)``).
    mutating func redialed(_ link: Int, side: Int) {
        guard linkUp[link], egress[link][side] == .down else { return }
        egress[link][side] = .alive
        let (node, peer) = Self.nodes(link, side: side)
        trace("\(Self.names[node]) dialed \(Self.names[peer]) again")
        tables[node].advance(to: now, actions: &actions)
        tables[node].linkRestored(.peer(Self.names[peer]), actions: &actions)
        perform(at: node)
    }

    /// One stripe of one direction closes while the link stands: what it carried is lost; its sender asks for it
    /// again (a moment later, as the engine does), and for the control stripe, repeats its acknowledgements.
    mutating func loseStripe(_ link: Int, direction: Int, stripe: Int) {
        guard linkUp[link], stripes > 1, egress[link][direction] == .alive else { return }
        trace("link \(link) direction \(direction) loses stripe \(stripe)")
        inFlight.removeAll { $0.link == link && $0.direction == direction && $0.stripe == stripe }
        let (node, peer) = direction == 0 ? (link, link + 1) : (link + 1, link)
        let port = FlowPort.peer(Self.names[peer])
        tables[node].stripeLost(port, actions: &actions)
        if stripe == 0 { tables[node].controlLost(port, actions: &actions) }
        perform(at: node)
    }

    // MARK: Moving packets

    mutating func transmit(_ packet: Packet, from node: Int, to port: FlowPort) {
        sequence += 1
        switch port {
        case .session, .local:
            inFlight.append(
                InFlight(
                    at: now + random.next(in: 0...200_000), sequence: sequence, to: .app(port),
                    from: .peer(Self.names[node]), link: nil, direction: 0, stripe: 0, packet: packet))
        case .peer(let name):
            guard let peer = Self.names.firstIndex(of: name) else { return }
            let (link, direction) = Self.link(node, peer)
            guard linkUp[link] else { return }  // into a dark link: lost
            var isData = false
            if case .data = packet { isData = true }
            switch egress[link][direction] {
            case .alive:
                break
            case .dead:
                // Written on a connection the peer closed: lost, and the reset that answers it shows the break.
                detections.append((now + 1_000_000, link, direction))
                return
            case .down:
                // No connection of its own: control frames go on the peer's (the engine's fallback); data waits
                // for its own, as the engine's data goes only on its own stripes.
                guard !isData, egress[link][1 - direction] == .alive else { return }
            }
            let stripe = isData ? Int(random.next(in: 0...UInt64(stripes - 1))) : 0
            // In order on its stripe; stripes overtake each other.
            let at = max(now + random.next(in: 50_000...3_000_000), stripeFree[link][direction][stripe])
            stripeFree[link][direction][stripe] = at
            inFlight.append(
                InFlight(
                    at: at, sequence: sequence, to: .node(peer), from: .peer(Self.names[node]), link: link,
                    direction: direction, stripe: stripe, packet: packet))
        }
    }

    mutating func appSends(_ packet: Packet, from port: FlowPort) {
        sequence += 1
        let node = port == Self.source ? 0 : 2
        inFlight.append(
            InFlight(
                at: now + random.next(in: 0...100_000), sequence: sequence, to: .node(node), from: port, link: nil,
                direction: 0, stripe: 0, packet: packet))
    }

    static let tracing = ProcessInfo.processInfo.environment["FREIGHT_FABRIC_TRACE"] != nil

    func trace(_ text: @autoclosure () -> String) {
        if Self.tracing { print(String(format: "%9.4f ", Double(now) / 1e9) + text()) }
    }

    mutating func deliver(_ packet: InFlight) {
        switch packet.packet {
        case .data(let id, let offset, let count):
            trace("\(packet.from) -> \(packet.to): data \(id) [\(offset), +\(count)) stripe \(packet.stripe)")
        case .frame(let frame):
            trace("\(packet.from) -> \(packet.to): \(frame)")
        }
        switch packet.to {
        case .node(let node): nodeReceives(packet.packet, at: node, from: packet.from)
        case .app(let port) where port == Self.source: sourceReceives(packet.packet)
        case .app: sinkReceives(packet.packet)
        }
    }

    // MARK: Nodes, as the engine drives their flow tables

    mutating func nodeReceives(_ packet: Packet, at node: Int, from port: FlowPort) {
        tables[node].advance(to: now, actions: &actions)
        switch packet {
        case .frame(.open(let open)) where open.resume:
            tables[node].resume(open, from: port, actions: &actions)
        case .frame(.open(let open)):
            let next: FlowPort = node == 2 ? Self.sink : .peer(Self.names[node + 1])
            // As the engine plans: a next node this node has no link to (it found its link broken and has not
            // dialed it again) is not reachable, and that branch fails at once.
            let reachable = node == 2 || egress[node][0] != .down
            tables[node].open(open, from: port, actions: &actions) { _, _ in
                let branch =
                    reachable
                    ? Flow.Branch(port: next, targets: [Self.sinkKey])
                    : .unreachable(next, targets: [Self.sinkKey], FreightError(.nodeGone, "\(next) is not reachable"))
                return FlowTable.Plan(branches: [branch], upstreamResends: true)
            }
        case .frame(.ack(let ack)):
            tables[node].ack(ack, from: port, actions: &actions)
        case .frame(.done(let done)):
            tables[node].done(done, from: port, actions: &actions)
        case .frame(.abort(let abort)):
            tables[node].abort(abort, from: port, actions: &actions)
        case .frame:
            break
        case .data(let id, let offset, let count):
            if let flow = tables[node].admit(id, offset: offset, count: count, from: port, actions: &actions) {
                let end = offset + UInt64(count)
                for branch in flow.branches where branch.isOpen && end > branch.ackedOffset {
                    transmit(packet, from: node, to: branch.port)
                }
            }
        }
        perform(at: node)
    }

    mutating func perform(at node: Int) {
        let pending = actions
        actions.removeAll()
        for action in pending {
            switch action {
            case .send(let frame, let port):
                if case .abort(let abort) = frame, abort.reason.contains("beyond the credit") {
                    problems.append("\(Self.names[node]) admitted a chunk past its credit: \(abort.reason)")
                }
                transmit(.frame(frame), from: node, to: port)
            case .warning(let text):
                problems.append("\(Self.names[node]) warned: \(text)")
            case .branchProgress, .branchEnded, .branchRewound, .finished:
                break
            }
        }
    }

    // MARK: Apps

    mutating func sourceReceives(_ packet: Packet) {
        guard case .frame(let frame) = packet else { return }
        switch frame {
        case .ack(let ack):
            guard var message = sending[ack.messageID], message.outcome == nil else { return }
            do throws(FreightError) {
                try message.window.ack(acked: ack.ackedOffset, credit: ack.creditOffset)
            } catch {
                problems.append("source: \(error.message)")
                return
            }
            if ack.hasResendFrom { message.window.rewind(to: ack.resendFrom) }
            while let chunk = message.window.nextChunk() {
                appSends(.data(id: ack.messageID, offset: chunk.offset, count: Int(chunk.count)), from: Self.source)
            }
            sending[ack.messageID] = message
        case .done(let done):
            guard sending[done.messageID] != nil else { return }
            if let earlier = sending[done.messageID]?.outcome, earlier != "done" {
                problems.append("message \(done.messageID) ended twice: \(earlier), then DONE")
            }
            sending[done.messageID]?.outcome = "done"
        case .abort(let abort):
            guard sending[abort.messageID] != nil else { return }
            if sending[abort.messageID]?.outcome == "done" {
                problems.append("message \(abort.messageID) ended twice: DONE, then ABORT (\(abort.reason))")
            }
            sending[abort.messageID]?.outcome = "abort"
            sending[abort.messageID]?.reason = abort.reason
        default:
            break
        }
    }

    mutating func sinkReceives(_ packet: Packet) {
        switch packet {
        case .frame(.open(let open)) where !open.resume:
            let id = open.header.id
            guard receiving[id] == nil else {
                return problems.append("message \(id) opened twice at the receiver")
            }
            let window = ReceiveWindow(length: open.header.length, windowBytes: UInt64(windowBytes))
            receiving[id] = Receiving(window: window)
            appSends(.frame(.ack(id, acked: 0, credit: window.creditOffset)), from: Self.sink)
        case .frame(.abort(let abort)):
            receiving[abort.messageID]?.aborted = true
        case .frame:
            break
        case .data(let id, let offset, let count):
            guard var message = receiving[id], !message.complete, !message.aborted else { return }
            do throws(FreightError) {
                guard try message.window.accept(offset: offset, count: UInt64(count)) else { return }
            } catch {
                return problems.append("receiver: \(error.message)")
            }
            let update = message.window.consume(offset: offset)
            if message.window.isComplete {
                message.complete = true
                var done = Freight_Wire_V1_Done()
                done.messageID = id
                var delivery = Freight_Wire_V1_Delivery()
                delivery.endpoint.node = Self.sinkKey.node
                delivery.endpoint.id = Self.sinkKey.id
                done.deliveries = [delivery]
                appSends(.frame(.done(done)), from: Self.sink)
            } else if let update {
                appSends(.frame(.ack(id, acked: update.acked, credit: update.credit)), from: Self.sink)
            }
            receiving[id] = message
        }
    }
}
