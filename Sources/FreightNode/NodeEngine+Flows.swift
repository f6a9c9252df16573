import FreightCore
import FreightDirectory
import FreightFlow
import FreightRouting
import FreightTransport
import FreightWire
import NIOCore

typealias Port = FlowPort

/// Messages through this node: every flow frame becomes an event of the ``FlowTable`` (pure; docs/core.md), and the
/// actions it returns are carried out here. The bytes themselves move in `NodeEngine+Streaming` and
/// `NodeEngine+Shared`, after the table admitted them.
extension NodeEngine {
    func flowFrame(_ frame: Frame, from port: Port) {
        switch frame {
        // The flow's start and end times (FlowEnd) are read here, not per chunk.
        case .open, .done, .abort: flowTable.observe(now: nowNanos)
        default: break
        }
        switch frame {
        case .open(var open):
            if configuration.tracer != nil, !open.resume { traceOpened(&open, from: port) }
            openReceived(open, from: port)
            if !open.resume, flowTable[open.header.id] == nil { openRefused(open.header) }
        case .data(let chunk): dataReceived(chunk, from: port)
        case .ack(let ack): flowTable.ack(ack, from: port, actions: &flowActions)
        case .done(let done): flowTable.done(rewritten(done, from: port), from: port, actions: &flowActions)
        case .abort(let abort): flowTable.abort(abort, from: port, actions: &flowActions)
        default: break
        }
        performFlowActions()
        if tracedOpen != nil { traceAfterOpen() }
    }

    // MARK: Open

    func openReceived(_ open: Freight_Wire_V1_Open, from port: Port) {
        if open.resume, case .peer = port {
            if flowTable[open.header.id] == nil, isRerouted(open) {
                // A message that moved here from another gateway of this cluster that went away: opened here and
                // passed on with resume, so that the far cluster's gateway that holds it lets this one take over.
                flowTable.open(open, from: port, rerouted: true, actions: &flowActions) {
                    header, load throws(FreightError) in
                    try plan(header, open: open, from: port, load: load)
                }
                return
            }
            return flowTable.resume(
                open, from: port, mayAdopt: { mayAdoptRelayed($0, open: open, by: port) }, actions: &flowActions)
        }
        if open.resume, isGatewayPort(port), flowTable[open.header.id] == nil {
            // A message that moved to another gateway pair (its way through this cluster's other gateway broke):
            // opened here and passed on with resume to the node that holds it, which lets this gateway take over
            // (docs/wan.md, "Cuts").
            flowTable.open(open, from: port, rerouted: true, actions: &flowActions) {
                header, load throws(FreightError) in
                try plan(header, open: open, from: port, load: load)
            }
            return
        }
        if open.resume, isGatewayPort(port) {
            let before = flowTable[open.header.id]
            flowTable.resume(open, from: port, mayAdopt: { mayAdopt($0, by: port) }, actions: &flowActions)
            logger.debug(
                "message \(String(open.header.id, radix: 16)) resumes through another gateway link: \(before == nil ? "not held here" : "held at \(before!.upstreamAcked), from \(before!.upstream) to \(flowTable[open.header.id]?.upstream.description ?? "-")")"
            )
            return
        }
        if case .session(let id) = port, let session = sessions[id] {
            // The first node says who sent it: `node/label`, a label unique among the node's apps. Relays count a
            // message's reservation against that source (``FlowTable/Party``), so no app can pass as another.
            var stamped = open
            stamped.header.source = "\(name)/\(session.label)"
            flowTable.open(stamped, from: port, actions: &flowActions) { header, load throws(FreightError) in
                try plan(header, open: stamped, from: port, load: load)
            }
            if let gpu = open.header.attributes[Limits.deviceAttribute], let flow = flowTable[open.header.id] {
                answerDeviceBody(flow, gpu: gpu, to: session)
            }
            return
        }
        flowTable.open(open, from: port, actions: &flowActions) { header, load throws(FreightError) in
            try plan(header, open: open, from: port, load: load)
        }
    }

    /// Where a message goes from this node: for an app's message, the endpoints its destination matches, chosen by
    /// the delivery planner; for a peer's, the endpoints its OPEN names. One branch per local port, and one per next
    /// hop: the endpoint's own node, or the relay a route names for it (``NodeConfiguration/routes``), so that a
    /// message can pass several nodes (n1 → n2 → n3).
    ///
    /// A message that runs through this node's filters has one branch here, the filter port; what the filters make
    /// of it is planned as if it came from where the message did (``FilterPort``).
    func plan(
        _ header: Freight_Wire_V1_MessageHeader, open: Freight_Wire_V1_Open, from port: Port,
        load: (EndpointKey) -> Int
    ) throws(FreightError) -> FlowTable.Plan {
        if draining && !open.resume {
            throw FreightError(.nodeGone, "node \(name) is shutting down: it takes no new messages")
        }
        if open.hasPart { return try detourPlan(open, from: port) }
        var targets: [EndpointKey]
        switch port {
        case .local where isFilterPort(port):
            // What the filters made of a message goes to the receivers planned for the message.
            targets = open.targets.map { EndpointKey(node: $0.node, id: $0.id) }
            targets.removeAll { $0.node == name && localEndpoints[$0.id] == nil }
            guard !targets.isEmpty else {
                throw FreightError(.noRoute, "no route to \(header.destination): its receivers went away")
            }
        case .local where isGatewayPort(port):
            targets = try ingressTargets(header, open: open, load: load)
        case .session, .local:
            let destination = try parsedAddress(header.destination)
            if case .session(let id) = port, let session = sessions[id],
                let refusal = accessRefusal(session, .send, AddressPattern(destination))
            {
                logger.notice("app \(session.label): \(refusal.message)")
                throw refusal
            }
            tieBreak &+= 1
            targets = plannedTargets(index.match(destination), load: load, tieBreak: tieBreak).map(\.key)
            if targets.isEmpty, let node = inboxNode(of: destination) { targets = [EndpointKey(inboxOf: node)] }
            guard !targets.isEmpty else { throw FreightError.noRoute(destination.description) }
        case .peer:
            guard !open.path.contains(name) else {
                throw FreightError(.protocolViolation, "message \(header.id) came back to node \(name): \(open.path)")
            }
            // Hops inside this cluster: nodes of other clusters are named CLUSTER/NODE (docs/gateways.md).
            guard open.path.count(where: { !$0.contains("/") }) < Limits.pathHopsMax else {
                throw FreightError(
                    .noRoute, "no route to \(header.destination) within \(Limits.pathHopsMax) nodes: \(open.path)")
            }
            targets = open.targets.prefix(Limits.registrationsPerSessionMax).flatMap { target in
                let key = EndpointKey(node: target.node, id: target.id)
                return key == EndpointKey(inboxOf: name) ? localInboxTargets(header.destination) : [key]
            }
            targets.removeAll { $0.node == name && localEndpoints[$0.id] == nil }
            guard !targets.isEmpty else {
                throw FreightError(.noRoute, "no route to \(header.destination): its endpoint on node \(name) is gone")
            }
        }
        if !isFilterPort(port), !filters(for: header).isEmpty {
            return FlowTable.Plan(
                branches: [Flow.Branch(port: .local(filterPort.portID), targets: targets)],
                upstreamResends: resends(port))
        }
        // A shared-buffer message between apps of this node holds no bytes here: only its regions are lent.
        let shared =
            open.shared && port.isLocal
            && targets.allSatisfy { target in
                guard target.node == name, case .session(let id)? = localEndpoints[target.id]?.port else {
                    return false
                }
                return sessions[id]?.takesShared == true
            }
        var remote: [String: [EndpointKey]] = [:]
        var local: [Port: [EndpointKey]] = [:]
        for target in targets {
            if target.node == name {
                if let port = localEndpoints[target.id]?.port { local[port, default: []].append(target) }
            } else {
                remote[configuration.routes[target.node] ?? target.node, default: []].append(target)
            }
        }
        var branches: [Flow.Branch] = []
        for (port, keys) in local.sorted(by: { $0.key.description < $1.key.description }) {
            // A link of this gateway: what the branch carries, so that another gateway can take it over when the
            // link closes (docs/wan.md, "Cuts").
            branches.append(
                Flow.Branch(port: port, targets: keys, remote: isGatewayPort(port) ? self.remote(of: keys) : nil))
        }
        for (hop, keys) in remote.sorted(by: { $0.key < $1.key }) {
            if open.path.contains(hop) {
                branches.append(
                    .unreachable(
                        .peer(hop), targets: keys,
                        FreightError(.noRoute, "the route to node \(keys[0].node) through \(hop) makes a loop")))
            } else if members[hop]?.link.isUp == true {
                branches.append(
                    Flow.Branch(
                        port: .peer(hop), targets: keys, rails: plannedRails(header, to: hop),
                        remote: self.remote(of: keys)))
            } else {
                let through = hop == keys[0].node ? "" : " (through node \(hop))"
                branches.append(
                    .unreachable(
                        .peer(hop), targets: keys,
                        FreightError(.nodeGone, "node \(keys[0].node) is not reachable\(through)")))
            }
        }
        return FlowTable.Plan(branches: branches, shared: shared, upstreamResends: resends(port))
    }

    /// Where a detour goes from this node (docs/wan.md, "Over every gateway pair"): at a gateway of the sender's
    /// cluster, onto its link (the route endpoint its OPEN names, as for any message); from the far cluster's gateway
    /// it entered, to the gateway where it rejoins its message; there, to the detour port. Its upstream never sends
    /// again: a detour that breaks ends, and its sender's gateway sends what it carried over its own link.
    private func detourPlan(_ open: Freight_Wire_V1_Open, from port: Port) throws(FreightError) -> FlowTable.Plan {
        let part = open.part
        guard let gateways else { throw FreightError(.noRoute, "node \(name) is not a gateway and takes no detour") }
        if isGatewayPort(port) {
            if part.gateway == name {
                return FlowTable.Plan(
                    branches: [Flow.Branch(port: .local(gateways.detourPort.portID), targets: [])],
                    upstreamResends: false)
            }
            guard members[part.gateway]?.link.isUp == true else {
                throw FreightError(
                    .noRoute, "gateway \(part.gateway) of cluster \(configuration.cluster) is not reachable")
            }
            return FlowTable.Plan(
                branches: [Flow.Branch(port: .peer(part.gateway), targets: [])], upstreamResends: false)
        }
        guard case .peer = port, !open.path.contains(name) else {
            throw FreightError(.protocolViolation, "a detour comes from a node or a gateway link, once")
        }
        guard let target = open.targets.first else {
            guard part.gateway == name else {
                throw FreightError(
                    .noRoute, "detour \(open.header.id) rejoins its message at \(part.gateway), not here")
            }
            return FlowTable.Plan(
                branches: [Flow.Branch(port: .local(gateways.detourPort.portID), targets: [])], upstreamResends: false)
        }
        guard open.targets.count == 1, target.node == name, let local = localEndpoints[target.id]?.port,
            isGatewayPort(local)
        else { throw FreightError(.noRoute, "detour \(open.header.id) names no gateway link of node \(name)") }
        return FlowTable.Plan(
            branches: [Flow.Branch(port: local, targets: [EndpointKey(node: name, id: target.id)])],
            upstreamResends: false)
    }

    /// Whether `port` sends a message's bytes again from an offset when asked (its HELLO says "resume"; in-process
    /// sources always do): only then may a broken link below it suspend a branch rather than fail it.
    func resends(_ port: Port) -> Bool {
        switch port {
        case .session(let id): sessions[id]?.resends == true
        // A gateway link passes a request to send again on to its far side, which passes it to the source.
        // The filter port makes its output again from the input it holds (docs/functions.md).
        case .local(let id):
            localPorts[id] is InProcessSource || localPorts[id] is GatewayIngress || localPorts[id] is FilterPort
        case .peer(let node): membership.peers[node]?.resumes == true
        }
    }

    /// An app's destination, parsed once: apps send many messages to the same few addresses. The cache is
    /// emptied when it holds `Self.parsedAddressesMax` of them.
    /// The node an inbox address (`_inbox/NODE/...`, docs/small-messages-and-files.md) belongs to, when it is a
    /// reachable member other than this node: a reply goes there even before the directory here has learned of the
    /// inbox, since its registration and the request travel apart (the control link, a data stripe; or etcd).
    func inboxNode(of destination: Address) -> String? {
        guard destination.segments.count >= 3, destination.segments[0] == Limits.inboxSegment else { return nil }
        let node = destination.segments[1]
        guard node != name, members[configuration.routes[node] ?? node] != nil else { return nil }
        return node
    }

    /// The endpoints of this node an inbox address sent here by its node name matches (at most one: an inbox is
    /// one client's).
    func localInboxTargets(_ destination: String) -> [EndpointKey] {
        guard let address = try? parsedAddress(destination) else { return [] }
        return index.match(address).lazy.filter { $0.key.node == self.name && $0.route == nil }.prefix(1).map(\.key)
    }

    func parsedAddress(_ text: String) throws(FreightError) -> Address {
        if let address = parsedAddresses[text] { return address }
        let address = try Address(text)
        if parsedAddresses.count >= Self.parsedAddressesMax { parsedAddresses.removeAll(keepingCapacity: true) }
        parsedAddresses[text] = address
        return address
    }

    /// An app speaks for its own endpoints only: its DONE is rewritten to name them.
    private func rewritten(_ done: Freight_Wire_V1_Done, from port: Port) -> Freight_Wire_V1_Done {
        guard port.isLocal, !isGatewayPort(port), !isFilterPort(port),
            let targets = flowTable[done.messageID]?.branches.first(where: { $0.port == port })?.targets,
            !targets.isEmpty
        else { return done }
        var done = done
        let label = localEndpoints[targets[0].id]?.record.app ?? ""
        done.deliveries = targets.map { key in
            var delivery = Freight_Wire_V1_Delivery()
            delivery.endpoint.node = key.node
            delivery.endpoint.id = key.id
            delivery.address = localEndpoints[key.id]?.record.pattern.description ?? ""
            delivery.app = label
            return delivery
        }
        done.failures = []
        return done
    }

    // MARK: Data

    func dataReceived(_ chunk: DataChunk, from port: Port) {
        guard let flow = admit(messageID: chunk.messageID, offset: chunk.offset, count: chunk.count, from: port) else {
            return
        }
        let end = chunk.offset + UInt64(chunk.count)
        // A branch that acknowledged these bytes already (they come again after a broken link) does not get them.
        for branch in flow.branches where branch.isOpen && end > branch.ackedOffset {
            sendData(chunk, to: branch.port)
        }
    }

    /// Asks the table whether a chunk may go on (see ``FlowTable/admit(_:offset:count:from:countLimit:actions:)``);
    /// counts its bytes when it may.
    func admit(
        messageID: UInt64, offset: UInt64, count: Int, from port: Port, countLimit: Int = Limits.chunkBytesMax
    ) -> Flow? {
        let flow = flowTable.admit(
            messageID, offset: offset, count: count, from: port, countLimit: countLimit, actions: &flowActions)
        if flow != nil { counters.bytesIn += UInt64(count) }
        performFlowActions()
        return flow
    }

    func sendData(_ chunk: DataChunk, to port: Port) {
        if case .local(let id) = port {
            counters.bytesOut += UInt64(chunk.count)
            if let local = localPorts[id] { eventLoop.execute { local.deliver(.data(chunk)) } }
        } else {
            dataConnection(for: port, bytes: chunk.count, messageID: chunk.messageID)?.sendData(chunk, promise: nil)
        }
    }

    /// The connection that carries `bytes` of body to an app session or a peer (a peer's stripe is chosen by the
    /// striping policy), with the bytes counted; nil when the port is gone.
    func dataConnection(for port: Port, bytes: Int, messageID: UInt64) -> FrameConnection? {
        let connection: FrameConnection?
        switch port {
        case .session(let id):
            connection = sessions[id]?.connection
        case .peer(let node):
            guard let member = members[node] else { return nil }
            // Only a link with several rails needs the clock (rate samples) and the message's planned rails.
            let several = member.link.railCount > 1
            guard
                let stripe = member.link.stripeForData(
                    spillBytes: configuration.windowBytes / 2, policy: configuration.striping, chunkBytes: bytes,
                    nowNanos: several ? nowNanos : 0,
                    rails: several ? flowTable[messageID]?.branches.first { $0.port == port }?.rails : nil)
            else { return nil }
            member.link.sent(bytes, on: stripe)
            connection = member.link.egress[stripe]
        case .local:
            preconditionFailure("in-process ports take chunks whole")
        }
        if connection != nil { counters.bytesOut += UInt64(bytes) }
        return connection
    }

    // MARK: Carrying out the table's actions

    /// An app or a peer is gone: flows it sent are aborted downstream; branches to it fail.
    func portGone(_ port: Port, error: FreightError) {
        smallPortGone(port, reason: error.message)
        flowTable.portGone(port, error: error, actions: &flowActions)
        performFlowActions()
    }

    /// Ends one branch of a flow with `error`, telling its receiver.
    func failBranch(_ id: UInt64, port: Port, _ error: FreightError) {
        flowTable.failBranch(id, port: port, error, tellBranch: true, actions: &flowActions)
        performFlowActions()
    }

    /// Carries out what the table asked, in order. Reentrant: an action that leads to another event appends to the
    /// same buffer, and this loop carries that out too.
    func performFlowActions() {
        guard !flowActions.isEmpty, !performingFlowActions else { return }
        performingFlowActions = true
        var next = 0
        while next < flowActions.count {
            let action = flowActions[next]
            next += 1
            switch action {
            case .send(let frame, let port):
                send(frame, to: port)
            case .branchProgress(let id, let port, let acked):
                shared.settle(id, port: port, through: acked)
            case .branchEnded(let id, let port), .branchRewound(let id, let port):
                shared.settle(id, port: port, through: .max)
            case .finished(let end):
                shared.finished(end.messageID)
                metrics?.ended(end)
                countOutcomes(end)
                if let code = end.failure {
                    messageFailed(
                        end.messageID, end.address, size: end.length, traceparent: end.traceparent, code: code,
                        reason: end.reason ?? "")
                }
                if !spans.isEmpty { traceEnded(end) }
            case .warning(let text):
                logger.warning("\(text)")
            }
        }
        flowActions.removeAll(keepingCapacity: true)
        performingFlowActions = false
    }

    /// Sends a control frame to a port; a port that is gone drops it. A peer's frames go on this node's control
    /// stripe to it, or, while this node's own stripes are down (its link broke and the peer dialed back first), on
    /// a stripe the peer dialed: an answer to its OPEN resume must not wait for this node's redial.
    func send(_ frame: Frame, to port: Port) {
        switch port {
        case .session(let id):
            sessions[id]?.connection.send(frame)
        case .local(let id):
            if let local = localPorts[id] { eventLoop.execute { local.deliver(frame) } }
        case .peer(let node):
            guard let member = members[node] else { return }
            member.link.anyConnection?.send(frame)
        }
    }
}
