import FreightCore
import FreightDirectory
import FreightFlow
import FreightRouting
import FreightWire

/// Where messages leave this cluster (docs/gateways.md, "The data path"): one port per gateway link, which the node's
/// flow table delivers a message to as to an in-process endpoint when routes it chose lead over that link (the
/// directory's route endpoints of this gateway stand on the port of their link). The port carries the message's
/// OPEN — one per link, naming every cluster it is bound for that way — DATA and ABORT over the link; the ACK, DONE and
/// ABORT that come back enter the flow table from here. Credit stays end to end: the table grants upstream only what
/// the far side granted.
final class GatewayEgress: LocalPort, @unchecked Sendable {  // confined to the node's event loop
    unowned let gateways: GatewayLinks
    let portID: UInt64
    let link: Int

    init(gateways: GatewayLinks, portID: UInt64, link: Int) {
        self.gateways = gateways
        self.portID = portID
        self.link = link
    }

    func deliver(_ frame: Frame) { gateways.egress(frame, from: self) }
}

/// Where messages from a gateway of another cluster enter this node: one port per gateway link, which the flow table
/// takes for the message's sender. Its ACK, DONE and ABORT go back on the link.
final class GatewayIngress: LocalPort, @unchecked Sendable {  // confined to the node's event loop
    unowned let gateways: GatewayLinks
    let portID: UInt64
    let link: Int
    /// The peer's cluster, as its certificate proved it.
    let cluster: String

    init(gateways: GatewayLinks, portID: UInt64, link: Int, cluster: String) {
        self.gateways = gateways
        self.portID = portID
        self.link = link
        self.cluster = cluster
    }

    func deliver(_ frame: Frame) { gateways.ingress(frame, to: link) }
}

/// A node of another cluster as this cluster's paths name it: `CLUSTER/NODE`.
enum ClusterPath {
    /// `names` with every name that has no cluster yet given `cluster`.
    static func qualified(_ names: [String], in cluster: String) -> [String] {
        names.map { qualified($0, in: cluster) }
    }

    static func qualified(_ name: String, in cluster: String) -> String {
        name.contains("/") ? name : "\(cluster)/\(name)"
    }

    /// The clusters a path names (its qualified names), in order of first appearance.
    static func clusters(in path: [String]) -> [String] {
        var seen: [String] = []
        for name in path {
            guard let slash = name.firstIndex(of: "/") else { continue }
            let cluster = String(name[..<slash])
            if !seen.contains(cluster) { seen.append(cluster) }
        }
        return seen
    }

    /// A path from another cluster: every name qualified, each part a valid name.
    static func isValid(_ path: [String]) -> Bool {
        path.allSatisfy { name in
            let parts = name.split(separator: "/", omittingEmptySubsequences: false)
            return parts.count == 2 && parts.allSatisfy { AddressGrammar.isName(String($0)) }
        }
    }
}

extension GatewayLinks {
    // MARK: egress

    /// The port for messages that leave on link `id` (made on first use).
    func egressPort(for id: Int) -> GatewayEgress {
        if let port = egressPorts[id] { return port }
        let port = engine.localPorts.add { GatewayEgress(gateways: self, portID: $0, link: id) }
        egressPorts[id] = port
        return port
    }

    /// Drops the ports of links that closed: their messages failed or moved already, and no route endpoint stands on
    /// them any more (called after the directory's route endpoints were brought up to date).
    func dropClosedPorts() {
        for (id, port) in egressPorts where links[id] == nil {
            engine.localPorts.remove(port.portID)
            egressPorts[id] = nil
        }
    }

    /// A frame the flow table sends toward other clusters on the port's link.
    func egress(_ frame: Frame, from port: GatewayEgress) {
        switch frame {
        case .open(let open):
            let id = open.header.id
            guard let link = links[port.link], link.up != nil else {
                let refusal = FreightError(
                    .noRoute,
                    "no route to \(open.header.destination): gateway \(node)'s link to cluster \(links[port.link]?.cluster ?? "?") is down"
                )
                return engine.flowFrame(.abort(id, refusal), from: .local(port.portID))
            }
            // A resume OPEN for a message this link carries already changes nothing here.
            guard !link.egressMessages.contains(id) else { return }
            // The routes the sender's node chose: each endpoint it named stands for the pattern receivers of one
            // cluster or one of its groups.
            var destinations: [String: Freight_Wire_V1_Destination] = [:]
            for target in open.targets {
                guard let record = engine.localEndpoints[target.id]?.record, let route = record.route else { continue }
                var destination = destinations[route.cluster] ?? Freight_Wire_V1_Destination()
                if destinations[route.cluster] == nil {
                    destination.cluster = route.cluster
                    destination.groupsOnly = true
                }
                if let group = record.anyGroup {
                    destination.groups.append(group.wire)
                } else {
                    destination.groupsOnly = false
                }
                destinations[route.cluster] = destination
            }
            var out = Freight_Wire_V1_Open()
            out.header = open.header
            out.path = ClusterPath.qualified(open.path, in: cluster)
            out.destinations = destinations.keys.sorted().map { destinations[$0]! }
            out.resume = open.resume
            out.windowHint = open.windowHint
            if open.hasPart { out.part = open.part }
            // Across a WAN the window must cover the round trip: this node's own, and every one after it.
            // A large message that may take a detour over another gateway pair needs the window of both paths, and
            // more: the detour's chunks come home later than the link's (docs/wan.md, "Over every gateway pair").
            if var hint = windowHint(port.link) {
                if !open.hasPart, open.header.length >= Self.detourMessageBytesMin, companion(of: port.link) != nil {
                    hint = min(UInt64(Limits.windowHintMax), Self.detourWindowLinks * hint)
                }
                if hint > open.windowHint {
                    out.windowHint = engine.flowTable.widen(id, window: hint) ?? open.windowHint
                }
            }
            links[port.link]!.egressMessages.insert(id)
            link.connection.send(.open(out))
            logger.debug(
                "message \(String(id, radix: 16)) to \(destinations.keys.sorted().map { "cluster \($0)" }.joined(separator: ", ")) on gateway link \(link.address)\(open.resume ? " (resumes here)" : "")"
            )
        case .data(let chunk):
            guard links[port.link]?.egressMessages.contains(chunk.messageID) == true else { return }
            // DATA waits its message's turn, then goes on the link's stripe with the fewest bytes waiting
            // (docs/wan.md, "Stripes" and "Many messages").
            enqueue(chunk, on: port.link)
        case .abort(let abort):
            guard links[port.link]?.egressMessages.remove(abort.messageID) != nil else { return }
            dropQueued(abort.messageID, on: port.link)
            endDetour(of: abort.messageID, reason: nil)
            links[port.link]?.connection.send(.abort(abort))
        default:
            break
        }
    }

    /// ACK, DONE or ABORT from the peer: for a message this gateway sent on the link, back into the flow table
    /// through its egress port; an ABORT of a message the peer sent, into the flow table through the link's ingress.
    func returned(_ frame: Frame, on id: Int) {
        guard let link = links[id], let peer = link.cluster else { return }
        let messageID: UInt64
        switch frame {
        case .ack(let ack): messageID = ack.messageID
        case .done(let done): messageID = done.messageID
        case .abort(let abort): messageID = abort.messageID
        default: return
        }
        guard link.egressMessages.contains(messageID), let portID = egressPorts[id]?.portID else {
            if case .abort = frame, let ingress = link.ingress {
                engine.flowFrame(frame, from: .local(ingress.portID))
            }
            return
        }
        switch frame {
        case .done(var done):
            forget(messageID, on: id)
            // The far cluster's nodes as this cluster names them.
            for index in done.deliveries.indices {
                done.deliveries[index].path = ClusterPath.qualified(done.deliveries[index].path, in: peer)
                done.deliveries[index].endpoint.node = ClusterPath.qualified(
                    done.deliveries[index].endpoint.node, in: peer)
            }
            for index in done.failures.indices {
                done.failures[index].endpoint.node = ClusterPath.qualified(done.failures[index].endpoint.node, in: peer)
            }
            engine.flowFrame(.done(done), from: .local(portID))
        case .abort:
            forget(messageID, on: id)
            engine.flowFrame(frame, from: .local(portID))
        case .ack(let ack):
            engine.flowFrame(frame, from: .local(portID))
            detourAcknowledged(messageID, through: ack.ackedOffset, on: id)
        default:
            engine.flowFrame(frame, from: .local(portID))
        }
    }

    private func forget(_ messageID: UInt64, on id: Int) {
        links[id]?.egressMessages.remove(messageID)
        dropQueued(messageID, on: id)
        endDetour(of: messageID, reason: nil)
    }

    // MARK: ingress

    /// An OPEN from a gateway of another cluster: checked (no loop, not too many clusters, a path of qualified
    /// names), then into the flow table as from a sender, planned there for this cluster's endpoints or a route on.
    func ingressOpen(_ open: Freight_Wire_V1_Open, on id: Int) {
        guard let link = links[id], let ingress = link.ingress else { return }
        let refusal: FreightError?
        let crossed = ClusterPath.clusters(in: open.path)
        if open.shared || !open.targets.isEmpty {
            refusal = FreightError(.protocolViolation, "an OPEN between gateways names no targets")
        } else if !ClusterPath.isValid(open.path) {
            refusal = FreightError(.protocolViolation, "an OPEN between gateways names every node CLUSTER/NODE")
        } else if let problem = Self.problem(with: open.destinations) {
            refusal = FreightError(.protocolViolation, "an OPEN between gateways \(problem)")
        } else if let back = open.destinations.first(where: { crossed.contains($0.cluster) }) {
            refusal = FreightError(
                .noRoute, "message \(open.header.id) is bound for cluster \(back.cluster), which it crossed already")
        } else if crossed.contains(cluster) {
            refusal = FreightError(
                .noRoute,
                "message \(open.header.id) came back to cluster \(cluster): \(open.path.joined(separator: " → "))")
        } else if crossed.count >= Limits.clusterPathMax {
            refusal = FreightError(
                .noRoute, "no route to \(open.header.destination) within \(Limits.clusterPathMax) clusters")
        } else {
            refusal = nil
        }
        if let refusal {
            engine.messageFailed(
                open.header.id, open.header.destination, size: open.header.length,
                traceparent: open.header.traceparent, code: refusal.code,
                reason: "refused from gateway link \(link.address): \(refusal.message)")
            link.connection.send(.abort(open.header.id, refusal))
            return
        }
        var open = open
        if open.hasPart {
            // A detour: it rejoins its message at a gateway of this cluster, which trusts the cluster named here only.
            guard AddressGrammar.isName(open.part.gateway), let cluster = link.cluster else {
                link.connection.send(
                    .abort(open.header.id, FreightError(.protocolViolation, "a detour names no valid gateway")))
                return
            }
            open.part.cluster = cluster
        }
        engine.flowFrame(.open(open), from: .local(ingress.portID))
    }

    /// What is wrong with the destinations of an OPEN between gateways, or nil: at least one, at most `linksMax`,
    /// each a valid cluster named once, with at most `groupsPerMessageMax` valid groups, and some group when for
    /// groups only.
    static func problem(with destinations: [Freight_Wire_V1_Destination]) -> String? {
        guard !destinations.isEmpty, destinations.count <= linksMax else {
            return "names 1 to \(linksMax) clusters it is bound for"
        }
        var seen = Set<String>()
        for destination in destinations {
            guard AddressGrammar.isName(destination.cluster), seen.insert(destination.cluster).inserted else {
                return "names a cluster it is bound for that is not a valid name, or twice"
            }
            guard destination.groups.count <= groupsPerMessageMax,
                destination.groups.allSatisfy({ (try? RouteGroup(wire: $0)) != nil })
            else { return "names at most \(groupsPerMessageMax) groups per cluster, each a valid name and pattern" }
            if destination.groupsOnly && destination.groups.isEmpty { return "is for groups only and names none" }
        }
        return nil
    }

    func ingressData(_ chunk: DataChunk, on id: Int) {
        guard let ingress = links[id]?.ingress else { return }
        links[id]!.bytesIn += UInt64(chunk.count)
        engine.flowFrame(.data(chunk), from: .local(ingress.portID))
    }

    /// A frame the flow table sends back to a message's sender in another cluster (and to the detour that carries
    /// some of its bytes, if any: docs/wan.md, "Over every gateway pair").
    func ingress(_ frame: Frame, to id: Int) {
        links[id]?.connection.send(frame)
        mirror(frame)
    }

    // MARK: a link's end

    /// Messages on a link that closed: those sent on it fail at their egress; those that came in on it lose their
    /// sender, and the link's ingress port goes.
    func trafficEnded(on link: Link, id: Int) {
        let reason = FreightError(
            .nodeGone, "the gateway link to cluster \(link.cluster ?? "?") (\(link.address)) closed")
        endDetours(on: link, id: id, reason: reason)
        if let port = egressPorts[id], !link.egressMessages.isEmpty {
            // Held as a branch to a node whose link broke is: moved to another gateway of this cluster that reaches
            // the same cluster (docs/wan.md, "Cuts"), or failed with the offset it reached after the hold time.
            engine.flowTable.linkLost(.local(port.portID), error: reason, actions: &engine.flowActions)
            engine.performFlowActions()
            engine.rerouteSuspended()
        }
        if let ingress = link.ingress {
            // Held for the hold time: another gateway of the same cluster may take them over (a resume OPEN).
            engine.flowTable.upstreamLost(.local(ingress.portID), actions: &engine.flowActions)
            engine.performFlowActions()
            engine.localPorts.remove(ingress.portID)
            closedIngress[ingress.portID] = ingress.cluster
            closedIngressOrder.append(ingress.portID)
            if closedIngressOrder.count > Self.linksMax {
                closedIngress[closedIngressOrder.removeFirst()] = nil
            }
        }
    }

    /// The cluster of the gateway link that an ingress port stood (or stands) for.
    func ingressCluster(_ portID: UInt64) -> String? {
        (engine.localPorts[portID] as? GatewayIngress)?.cluster ?? closedIngress[portID]
    }
}
