import FreightCore
import FreightDirectory
import FreightFlow
import FreightRouting
import FreightWire

/// Where messages leave this cluster (docs/gateways.md, "The data path"): the node's flow table delivers a message
/// bound for `cluster` to this port as to an in-process endpoint, and the port carries its OPEN, DATA and ABORT over
/// the gateway link of the route chosen for it; the ACK, DONE and ABORT that come back enter the flow table from
/// here. Credit stays end to end: the table grants upstream only what the far side granted.
final class GatewayEgress: LocalPort, @unchecked Sendable {  // confined to the node's event loop
    unowned let gateways: GatewayLinks
    let portID: UInt64
    let cluster: String

    init(gateways: GatewayLinks, portID: UInt64, cluster: String) {
        self.gateways = gateways
        self.portID = portID
        self.cluster = cluster
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

    /// The port for messages bound for `cluster` (made on first use).
    func egressPort(for cluster: String) -> GatewayEgress {
        if let port = egressPorts[cluster] { return port }
        let port = engine.localPorts.add { GatewayEgress(gateways: self, portID: $0, cluster: cluster) }
        egressPorts[cluster] = port
        return port
    }

    /// A frame the flow table sends toward another cluster.
    func egress(_ frame: Frame, from port: GatewayEgress) {
        switch frame {
        case .open(let open):
            // A resume OPEN for a message new here (it moved from another gateway) goes on as a resume.
            guard egressOf[open.header.id] == nil else { return }
            let id = open.header.id
            // The route the sender's node chose: the endpoint it named stands for one route key.
            let key = open.targets.first.flatMap { engine.localEndpoints[$0.id]?.record }.map {
                RouteKey($0.pattern, origin: port.cluster)
            }
            guard let key, let linkID = table.chosen[key]?.link, let link = links[linkID], link.up != nil else {
                let refusal = FreightError(
                    .noRoute,
                    "no route to \(open.header.destination): gateway \(node) reaches no gateway of cluster \(port.cluster) now"
                )
                return engine.flowFrame(.abort(id, refusal), from: .local(port.portID))
            }
            var out = Freight_Wire_V1_Open()
            out.header = open.header
            out.path = ClusterPath.qualified(open.path, in: cluster)
            out.toCluster = port.cluster
            out.resume = open.resume
            egressOf[id] = (linkID, port.portID)
            links[linkID]!.egressMessages.insert(id)
            link.connection.send(.open(out))
            logger.debug(
                "message \(String(id, radix: 16)) to cluster \(port.cluster) on gateway link \(link.address)\(open.resume ? " (resumes here)" : "")"
            )
        case .data(let chunk):
            guard let (linkID, _) = egressOf[chunk.messageID], let link = links[linkID] else { return }
            links[linkID]!.bytesOut += UInt64(chunk.count)
            link.connection.sendData(chunk, promise: nil)
        case .abort(let abort):
            guard let (linkID, _) = egressOf.removeValue(forKey: abort.messageID) else { return }
            links[linkID]?.egressMessages.remove(abort.messageID)
            links[linkID]?.connection.send(.abort(abort))
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
        guard link.egressMessages.contains(messageID), let (_, portID) = egressOf[messageID] else {
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
        default:
            engine.flowFrame(frame, from: .local(portID))
        }
    }

    private func forget(_ messageID: UInt64, on id: Int) {
        egressOf[messageID] = nil
        links[id]?.egressMessages.remove(messageID)
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
        } else if !ClusterPath.isValid(open.path) || !AddressGrammar.isName(open.toCluster) {
            refusal = FreightError(.protocolViolation, "an OPEN between gateways names every node CLUSTER/NODE")
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
            logger.notice("gateway link \(link.address): message \(open.header.id) refused: \(refusal.message)")
            link.connection.send(.abort(open.header.id, refusal))
            return
        }
        engine.flowFrame(.open(open), from: .local(ingress.portID))
    }

    func ingressData(_ chunk: DataChunk, on id: Int) {
        guard let ingress = links[id]?.ingress else { return }
        links[id]!.bytesIn += UInt64(chunk.count)
        engine.flowFrame(.data(chunk), from: .local(ingress.portID))
    }

    /// A frame the flow table sends back to a message's sender in another cluster.
    func ingress(_ frame: Frame, to id: Int) {
        links[id]?.connection.send(frame)
    }

    // MARK: a link's end

    /// Messages on a link that closed: those sent on it fail at their egress; those that came in on it lose their
    /// sender, and the link's ingress port goes.
    func trafficEnded(on link: Link) {
        let reason = FreightError(
            .nodeGone, "the gateway link to cluster \(link.cluster ?? "?") (\(link.address)) closed")
        for messageID in link.egressMessages.sorted() {
            guard let (_, portID) = egressOf.removeValue(forKey: messageID) else { continue }
            engine.flowFrame(.abort(messageID, reason), from: .local(portID))
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
