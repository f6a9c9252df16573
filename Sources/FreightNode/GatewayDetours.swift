import FreightCore
import FreightDirectory
import FreightFlow
import FreightWire
import NIOCore

/// The port that detours start from, at the gateway that sends a message on its own link, and rejoin their message
/// at, at the far gateway that takes it in: one per gateway, made on first use (docs/wan.md, "Over every gateway
/// pair"). The flow table sees it as a detour's sender at one end and as its receiver at the other.
final class GatewayDetourPort: LocalPort, @unchecked Sendable {  // confined to the node's event loop
    unowned let gateways: GatewayLinks
    let portID: UInt64

    init(gateways: GatewayLinks, portID: UInt64) {
        self.gateways = gateways
        self.portID = portID
    }

    func deliver(_ frame: Frame) { gateways.detourFrame(frame) }
}

/// A gateway's detours, by role (docs/wan.md, "Over every gateway pair").
struct Detours {
    /// A message this gateway sends on its link `link`, some of whose chunks go as detour `part` through another
    /// gateway of the cluster (`through`) and its own link to the same far cluster.
    struct Outgoing {
        let part: UInt64
        let link: Int
        let through: String
        /// Credit the detour was granted: an offset of the message (the far side's credit, passed back by every hop).
        var credit: UInt64 = 0
        /// Chunks the detour carried that the far side has not acknowledged yet (their ends, in the order sent).
        var inFlight = CircularBuffer<(end: UInt64, count: Int)>()
        var inFlightBytes = 0
        var bytes: UInt64 = 0
        /// What the detour may have in flight: from half the link's window (at least 4 MiB), doubled each time as
        /// much came home, up to the whole window. Its chunks count until the message's acknowledgement covers them.
        var cap = 4 << 20
        var homeSinceGrowth = 0
    }

    /// A detour whose chunks rejoin `message`, which came in on link `link` of this gateway.
    struct Rejoin {
        let message: UInt64
        let link: Int
    }

    var port: GatewayDetourPort?
    /// By message id, and each detour's message by the detour's id.
    var outgoing: [UInt64: Outgoing] = [:]
    var messageOf: [UInt64: UInt64] = [:]
    /// Messages whose detour was considered already (once each, while they are on a link).
    var considered: Set<UInt64> = []
    /// By detour id, and each message's detour by the message's id.
    var rejoins: [UInt64: Rejoin] = [:]
    var rejoinOf: [UInt64: UInt64] = [:]
}

extension GatewayLinks {
    /// A message smaller than this crosses on its own link alone: a detour pays off only once it fills a pipe.
    static let detourMessageBytesMin: UInt64 = 64 << 20
    /// The window of a message that may take a detour, in windows of its link: one for the link, one for the detour,
    /// and one for the detour's chunks that come home later than the link's and hold its acknowledgement back.
    /// Measured over two pairs at 50 ms (`freight bench --paths wan`): two moved 1,660-1,710 Mbit/s, three
    /// 1,740-1,800, four no more than three.
    static let detourWindowLinks: UInt64 = 3
    /// Detours a gateway keeps at most in each role.
    static let detoursMax = 256

    var detourPort: GatewayDetourPort {
        if let port = detours.port { return port }
        let port = engine.localPorts.add { GatewayDetourPort(gateways: self, portID: $0) }
        detours.port = port
        return port
    }

    /// The route endpoint of another gateway of this cluster that reaches the far cluster of link `id` over a link of
    /// its own (the cheapest), or nil: where a detour of a message sent on `id` goes.
    func companion(of id: Int) -> EndpointRecord? {
        guard let cluster = links[id]?.cluster else { return nil }
        var best: EndpointRecord?
        for other in engine.index.nodes where other != node && engine.members[other]?.link.isUp == true {
            for record in engine.index.endpoints(at: other) {
                guard let route = record.route, route.path.first == cluster, record.group == nil else { continue }
                if best == nil || route.cost < best!.route!.cost { best = record }
            }
        }
        return best
    }

    // MARK: the sending gateway

    /// The far side acknowledged message `messageID` on link `id` up to `acked`: the detour's chunks below it are
    /// home. On the first acknowledgement (the far gateway holds the message), a large message on a WAN link opens
    /// its detour, when another gateway pair reaches the same cluster.
    func detourAcknowledged(_ messageID: UInt64, through acked: UInt64, on id: Int) {
        guard var detour = detours.outgoing[messageID] else { return openDetour(messageID, on: id) }
        while let first = detour.inFlight.first, first.end <= acked {
            detour.inFlight.removeFirst()
            detour.inFlightBytes -= first.count
            detour.homeSinceGrowth += first.count
            if detour.homeSinceGrowth >= detour.cap {
                detour.homeSinceGrowth = 0
                detour.cap = min(2 * detour.cap, Int(windowHint(id) ?? 0))
            }
        }
        detours.outgoing[messageID] = detour
        spill(id)
    }

    private func openDetour(_ messageID: UInt64, on id: Int) {
        guard detours.outgoing.count < Self.detoursMax, detours.considered.insert(messageID).inserted,
            let link = links[id], link.planner?.linkClass == .wan, let far = link.peerName,
            let egress = egressPorts[id], let flow = engine.flowTable[messageID], flow.part == nil,
            flow.length >= Self.detourMessageBytesMin,
            flow.branches.contains(where: { $0.port == .local(egress.portID) && $0.isOpen }),
            let companion = companion(of: id)
        else { return }
        let part = engine.localPorts.messageIDs.next()
        var open = Freight_Wire_V1_Open()
        open.header = flow.header
        open.header.id = part
        open.windowHint = flow.windowHint
        open.part.messageID = messageID
        open.part.gateway = far
        open.part.link = link.nonce
        let target = companion.key
        let opened = engine.flowTable.open(open, from: .local(detourPort.portID), actions: &engine.flowActions) {
            _, _ throws(FreightError) in
            FlowTable.Plan(branches: [Flow.Branch(port: .peer(target.node), targets: [target])], upstreamResends: false)
        }
        engine.performFlowActions()
        guard opened != nil else { return }
        var outgoing = Detours.Outgoing(part: part, link: id, through: target.node)
        outgoing.cap = max(outgoing.cap, Int(windowHint(id) ?? 0) / 2)
        detours.outgoing[messageID] = outgoing
        detours.messageOf[part] = messageID
        logger.info(
            "message \(String(messageID, radix: 16)) on gateway link \(link.address) also goes through \(target.node) (detour \(String(part, radix: 16)))"
        )
    }

    /// Hands chunks waiting on link `id` to their messages' detours while none of the link's own connections has
    /// room: the link takes what it can drain, and a detour what is left, within its credit and one window of the
    /// link in flight.
    func spill(_ id: Int) {
        guard !detours.outgoing.isEmpty, let window = windowHint(id), let port = detours.port else { return }
        var unmoved = links[id]?.turns.count ?? 0
        let waitingOnLink = links[id]?.connections.reduce(0) { $0 + $1.pendingBytes } ?? 0
        while unmoved > 0, let messageID = links[id]?.turns.first {
            unmoved -= 1
            links[id]!.turns.removeFirst()
            // Near the message's end both paths should finish together: the detour takes a chunk only while what it
            // holds, with this chunk, is less than what the link still has to send without it (both paths move at
            // about the same rate; what the detour holds counts until acknowledged, so it ends a little early).
            guard let detour = detours.outgoing[messageID], detour.link == id,
                let chunk = links[id]!.outbox[messageID]?.first,
                chunk.offset + UInt64(chunk.count) <= detour.credit,
                detour.inFlightBytes < min(detour.cap, Int(window)),
                detour.inFlightBytes + 2 * chunk.count <= waitingOnLink + links[id]!.outboxBytes[messageID, default: 0]
            else {
                links[id]!.turns.append(messageID)
                continue
            }
            _ = links[id]!.popChunk(messageID)
            if links[id]!.outbox[messageID] != nil { links[id]!.turns.append(messageID) }
            detours.outgoing[messageID]!.inFlight.append((chunk.offset + UInt64(chunk.count), chunk.count))
            detours.outgoing[messageID]!.inFlightBytes += chunk.count
            detours.outgoing[messageID]!.bytes += UInt64(chunk.count)
            var part = chunk
            part.messageID = detour.part
            engine.flowFrame(.data(part), from: .local(port.portID))
            unmoved = links[id]?.turns.count ?? 0
        }
    }

    /// Message `messageID` ended, moved or failed on its link: its detour, if any, ends too. With `reason`, the
    /// detour failed on its way: what it carried and the far side did not acknowledge is sent again over the link.
    func endDetour(of messageID: UInt64, reason: FreightError?) {
        detours.considered.remove(messageID)
        guard let detour = detours.outgoing.removeValue(forKey: messageID), let port = detours.port else { return }
        detours.messageOf[detour.part] = nil
        logger.info(
            "message \(String(messageID, radix: 16)): \(ByteCount.format(Int64(detour.bytes))) went through \(detour.through)\(reason.map { "; the detour failed: \($0.message)" } ?? "")"
        )
        // Ends the detour on its way, if it still stands (an outcome that crossed this is dropped).
        engine.flowFrame(
            .abort(detour.part, reason ?? FreightError(.cancelled, "message \(messageID) ended")),
            from: .local(port.portID))
        guard reason != nil, detour.inFlightBytes > 0, let egress = egressPorts[detour.link],
            let branch = engine.flowTable[messageID]?.branches.first(where: {
                $0.port == .local(egress.portID) && $0.isOpen
            })
        else { return }
        // As for a lost stripe: the source sends again from what the far side holds.
        dropQueued(messageID, on: detour.link)
        var ack = Freight_Wire_V1_Ack()
        ack.messageID = messageID
        ack.ackedOffset = branch.ackedOffset
        ack.creditOffset = branch.creditOffset
        ack.resendFrom = branch.ackedOffset
        engine.flowFrame(.ack(ack), from: .local(egress.portID))
    }

    /// Link `id` closed: detours of the messages sent on it end, and detours that rejoined messages that came in on
    /// it fail (their sender's gateway sends again what they carried, or the message moves).
    func endDetours(on link: Link, id: Int, reason: FreightError) {
        for messageID in link.egressMessages { detours.considered.remove(messageID) }
        for (messageID, detour) in detours.outgoing where detour.link == id {
            endDetour(of: messageID, reason: nil)
        }
        guard let port = detours.port else { return }
        for (part, rejoin) in detours.rejoins where rejoin.link == id {
            detours.rejoins[part] = nil
            detours.rejoinOf[rejoin.message] = nil
            engine.flowFrame(.abort(part, reason), from: .local(port.portID))
        }
    }

    // MARK: the port

    /// A frame of a detour for this gateway's detour port: at the sending gateway its credit and its outcome; at the
    /// far gateway its OPEN, its chunks (which rejoin their message there) and its end.
    func detourFrame(_ frame: Frame) {
        switch frame {
        case .ack(let ack):
            guard let messageID = detours.messageOf[ack.messageID], let detour = detours.outgoing[messageID] else {
                return
            }
            detours.outgoing[messageID]!.credit = max(detour.credit, ack.creditOffset)
            spill(detour.link)
        case .done(let done):
            if let messageID = detours.messageOf[done.messageID] { endDetour(of: messageID, reason: nil) }
        case .abort(let abort):
            if let messageID = detours.messageOf[abort.messageID] {
                endDetour(of: messageID, reason: abort.error)
            } else if let rejoin = detours.rejoins.removeValue(forKey: abort.messageID) {
                detours.rejoinOf[rejoin.message] = nil
            }
        case .open(let open) where !open.resume:
            rejoin(open)
        case .data(var chunk):
            guard let rejoin = detours.rejoins[chunk.messageID], let ingress = links[rejoin.link]?.ingress else {
                return
            }
            chunk.messageID = rejoin.message
            links[rejoin.link]!.bytesIn += UInt64(chunk.count)
            engine.flowFrame(.data(chunk), from: .local(ingress.portID))
        default:
            break
        }
    }

    /// A detour arrived to rejoin its message here: the message must have come in on the link it names, from the
    /// cluster that the detour's own gateway link proved. From now on the detour gets the message's credit.
    private func rejoin(_ open: Freight_Wire_V1_Open) {
        guard let port = detours.port else { return }
        let part = open.part
        let found = links.first { _, link in
            link.nonce == part.link && link.cluster == part.cluster && link.ingress != nil && link.stripeOf == nil
        }
        guard let (id, link) = found, let ingress = link.ingress, detours.rejoins.count < Self.detoursMax,
            detours.rejoinOf[part.messageID] == nil,
            let flow = engine.flowTable[part.messageID], flow.upstream == .local(ingress.portID)
        else {
            let refusal = FreightError(
                .noRoute,
                "gateway \(node) has no message \(String(part.messageID, radix: 16)) from cluster \(part.cluster) for detour \(String(open.header.id, radix: 16)) to rejoin"
            )
            return engine.flowFrame(.abort(open.header.id, refusal), from: .local(port.portID))
        }
        detours.rejoins[open.header.id] = Detours.Rejoin(message: part.messageID, link: id)
        detours.rejoinOf[part.messageID] = open.header.id
        engine.flowFrame(
            .ack(open.header.id, acked: flow.upstreamAcked, credit: flow.upstreamCredit), from: .local(port.portID))
    }

    /// What the far gateway sends a message's sender on its link goes to the message's detour too: the same credit
    /// and acknowledgement, and its end.
    func mirror(_ frame: Frame) {
        guard !detours.rejoinOf.isEmpty, let port = detours.port else { return }
        switch frame {
        case .ack(let ack):
            guard let part = detours.rejoinOf[ack.messageID] else { return }
            engine.flowFrame(
                .ack(part, acked: ack.ackedOffset, credit: ack.creditOffset), from: .local(port.portID))
        case .done(let done):
            guard let part = detours.rejoinOf.removeValue(forKey: done.messageID) else { return }
            detours.rejoins[part] = nil
            var delivered = Freight_Wire_V1_Done()
            delivered.messageID = part
            var delivery = Freight_Wire_V1_Delivery()
            delivery.endpoint.node = node
            delivered.deliveries = [delivery]
            engine.flowFrame(.done(delivered), from: .local(port.portID))
        case .abort(var abort):
            guard let part = detours.rejoinOf.removeValue(forKey: abort.messageID) else { return }
            detours.rejoins[part] = nil
            abort.messageID = part
            engine.flowFrame(.abort(abort), from: .local(port.portID))
        default:
            break
        }
    }
}
