import FreightCore
import FreightDirectory
import FreightFlow
import FreightTransport
import FreightWire
import NIOCore

/// Small messages (docs/small-messages-and-files.md): whole messages in SMALL frames, passed on at once to the one
/// endpoint they go to, their outcomes back in OUTCOMES frames, both batched per port and turn. A node holds no
/// small message: it passes it on within the next hop's eager budget or answers RESEND, and the sender sends it
/// again as OPEN and DATA (a message for several receivers, a gateway, an in-process port, a full budget).
extension NodeEngine {
    /// What this node advertises to apps and peers: small-message bytes it takes from each before their outcomes.
    var eagerBytesGiven: UInt64 { UInt64(Limits.eagerBytesNode) }

    /// What `port` advertised: none when it takes no SMALL (or is not there).
    func smallTerms(of port: Port) -> SmallTerms {
        switch port {
        case .session(let id): sessions[id]?.small ?? .none
        case .peer(let node): members[node].map { $0.link.isUp ? $0.small : .none } ?? .none
        // An in-process sink takes whole messages as any app of this version does.
        case .local(let id): localPorts[id] is InProcessSink ? Self.localSmallTerms : .none
        }
    }

    static let localSmallTerms = SmallTerms(
        eagerBytes: UInt64(Limits.eagerBytesNode), bodyBytesMax: UInt64(Limits.smallBodyBytesMax),
        frameBytesMax: Limits.smallFrameBytesMax)

    /// A message the node sends itself (``InProcessSmallSource``): passed on whole when it can go small from here,
    /// its outcome then coming back to `port`; false when it cannot (the source sends it as OPEN and DATA).
    func sendSmallFromNode(_ message: consuming SmallMessage, from port: Port) -> Bool {
        let id = message.id
        let length = message.length
        guard length <= UInt64(Limits.smallBodyBytesMax), flowTable[id] == nil else { return false }
        do throws(SmallLedger.Refusal) {
            try small.take(id, length: length, from: port, budget: eagerBytesGiven)
        } catch {
            return false
        }
        var route = SmallRoute()
        guard passSmall(message, from: port, &route) else {
            _ = small.finish(id)
            return false
        }
        counters.bytesIn += length
        return true
    }

    /// Passes a message this node took on to the one endpoint it goes to (queued for that port's next SMALL frame);
    /// false when it cannot go small from here.
    private func passSmall(_ message: consuming SmallMessage, from port: Port, _ route: inout SmallRoute) -> Bool {
        var message = message
        guard let (target, next) = smallTarget(&message, from: port, &route) else { return false }
        message.path.append(name)
        message.targetNode = target.node
        message.targetID = target.id
        let local = target.node == name
        let terms = route.terms(of: next, self)
        guard message.length <= terms.bodyBytesMax,
            small.pass(
                message.id, to: next, budget: terms.eagerBytes, endpoint: local ? target.id : nil,
                path: local ? message.path : [])
        else { return false }
        let batchBytesMax = if case .peer = next { terms.linkBatchBytesMax } else { terms.batchBytesMax }
        queueSmall(message, to: next, batchBytesMax: batchBytesMax)
        return true
    }

    func smallReceived(_ messages: consuming [SmallMessage], from port: Port, on connection: FrameConnection) {
        // Each message moved out of the frame's list rather than copied from it: a copy costs a retain and a
        // release of its header, path and body.
        var messages = messages
        messages.reverseByMoving()
        // What this batch's messages resolved to, for the next ones that go to the same place.
        var route = SmallRoute()
        while var message = messages.popLast() {
            let id = message.id
            let length = message.length
            guard length <= UInt64(Limits.smallBodyBytesMax) else {
                return reject(
                    connection,
                    "SMALL message \(String(id, radix: 16)) has \(length) body bytes (at most \(Limits.smallBodyBytesMax))"
                )
            }
            if case .session = port,
                small.heldCount(from: port) + flowTable.messages(from: port) >= Limits.messagesPerConnectionMax
            {
                queueOutcome(SmallOutcome(id, failed: flowTable.tooManyMessages(from: port)), to: port)
                continue
            }
            // A header past what a small message's cost allows goes as OPEN, whose own limits then apply. So does a
            // message its app traces, at a node that traces: its span is the flow's (docs/observability.md).
            guard message.headerBytes <= Limits.smallHeaderAllowanceBytes,
                configuration.tracer == nil || !Self.sampled(message.traceparent)
            else {
                counters.smallResent += 1
                queueOutcome(SmallOutcome(id, .resend), to: port)
                continue
            }
            do throws(SmallLedger.Refusal) {
                try small.take(id, length: length, from: port, budget: eagerBytesGiven)
            } catch .overBudget(let held, let budget) {
                return reject(
                    connection, "\(held) bytes of small messages in flight, past the \(budget) this node advertised")
            } catch {
                queueOutcome(
                    SmallOutcome(
                        id, failed: FreightError(.protocolViolation, "message \(String(id, radix: 16)) is in flight")),
                    to: port)
                continue
            }
            guard flowTable[id] == nil else {
                finishSmall(
                    id,
                    SmallOutcome(
                        id, failed: FreightError(.protocolViolation, "message \(String(id, radix: 16)) is in flight")))
                continue
            }
            counters.bytesIn += length
            if !passSmall(message, from: port, &route) { finishSmall(id, resendOutcome(id)) }
        }
    }

    /// The one endpoint a small message goes to and the port it leaves by, or nil when it cannot go small from
    /// here: not exactly one receiver, a receiver or a hop that takes no SMALL, a gateway, a filter, a refusal (the message
    /// then goes as OPEN and DATA, which says why where it fails).
    private func smallTarget(_ message: inout SmallMessage, from port: Port, _ route: inout SmallRoute)
        -> (EndpointKey, Port)?
    {
        // A node that is stopping takes no new message: as OPEN, it is refused with the reason.
        if draining { return nil }
        // A message this node filters goes through the filter port, as OPEN and DATA.
        guard filters(for: message.destination, passed: message.extras?.header.filters ?? []).isEmpty else {
            return nil
        }
        let target: EndpointKey
        switch port {
        case .session, .local:
            // An app's messages carry the source its session says; the node's own (an in-process source) its own.
            var source = message.source
            var session: AppSession?
            if case .session(let id) = port {
                guard let known = sessions[id] else { return nil }
                session = known
                source = known.source
            }
            if let known = route.resolved(message.destination) {
                message.source = source
                message.path = []
                return known
            }
            guard let destination = try? parsedAddress(message.destination),
                session.map({ accessRefusal($0, .send, destination) == nil }) ?? true
            else { return nil }
            message.source = source
            message.path = []
            let matches = smallMatches(message.destination, destination)
            var settled = true
            if matches.count == 1, matches[0].route == nil {
                target = matches[0].key
            } else if matches.isEmpty, let node = inboxNode(of: destination) {
                target = EndpointKey(inboxOf: node)
            } else {
                // Spread over a group: chosen again for each message.
                settled = false
                tieBreak &+= 1
                let planned = plannedTargets(matches, load: { flowTable.load($0) }, tieBreak: tieBreak)
                guard planned.count == 1, planned[0].route == nil else { return nil }
                target = planned[0].key
            }
            let found = smallPort(of: target, for: message)
            if settled, let found { route.keep(message.destination, found) }
            return found
        case .peer:
            guard !message.targetNode.isEmpty, !message.path.contains(name),
                message.path.count(where: { !$0.utf8.contains(UInt8(ascii: "/")) }) < Limits.pathHopsMax
            else { return nil }
            let named = EndpointKey(node: message.targetNode, id: message.targetID)
            if named == EndpointKey(inboxOf: name) {
                guard let local = localInboxTargets(message.destination).first else { return nil }
                target = local
            } else {
                target = named
            }
        }
        return smallPort(of: target, for: message)
    }

    /// The port a small message for `target` leaves by, or nil when it cannot go small from here.
    private func smallPort(of target: EndpointKey, for message: SmallMessage) -> (EndpointKey, Port)? {
        if target.node == name {
            guard let local = localEndpoints[target.id], local.record.route == nil else { return nil }
            switch local.port {
            case .session: return (target, local.port)
            case .local(let id) where localPorts[id] is InProcessSink: return (target, local.port)
            default: return nil
            }
        }
        let hop = configuration.routes[target.node] ?? target.node
        guard !message.path.contains(hop), hop != name else { return nil }
        return (target, .peer(hop))
    }

    /// The endpoints an address matches, kept per address while the directory stays as it was: apps send many
    /// small messages to the same few addresses.
    private func smallMatches(_ key: String, _ destination: Address) -> [EndpointRecord] {
        if let cached = smallMatchCache[key], cached.version == index.version { return cached.records }
        let records = index.match(destination)
        if smallMatchCache.count >= Self.parsedAddressesMax { smallMatchCache.removeAll(keepingCapacity: true) }
        smallMatchCache[key] = (index.version, records)
        return records
    }

    /// An outcome came back from `port`: passed to the message's upstream (with the delivery filled in when the
    /// receiving app is on this node).
    func outcomesReceived(_ outcomes: consuming [SmallOutcome], from port: Port) {
        var outcomes = outcomes
        outcomes.reverseByMoving()
        while var outcome = outcomes.popLast() {
            guard let entry = small.outcome(outcome.messageID, from: port) else { continue }
            outcome.reason = SmallOutcome.bounded(outcome.reason)
            let app: String? =
                switch port {
                case .session(let id): sessions[id]?.label ?? ""
                case .local: localEndpoints[entry.endpoint]?.record.app ?? ""
                case .peer: nil
                }
            if let app {
                // An app (or an in-process sink) speaks for its own endpoint only: the delivery is written here.
                outcome.delivery = Freight_Wire_V1_Delivery()
                if outcome.kind == .delivered {
                    outcome.delivery.endpoint.node = name
                    outcome.delivery.endpoint.id = entry.endpoint
                    outcome.delivery.address = localEndpoints.address(of: entry.endpoint) ?? ""
                    outcome.delivery.app = app
                    outcome.delivery.path = entry.path
                }
            }
            queueOutcome(outcome, to: entry.upstream)
        }
    }

    /// Small messages that went to or came from `port`, which is gone: those it sent are forgotten, and those sent
    /// to it fail for their senders (it may or may not have delivered them).
    func smallPortGone(_ port: Port, reason: String) {
        for (id, entry) in small.portGone(port) {
            queueOutcome(
                SmallOutcome(
                    id,
                    failed: FreightError(
                        .nodeGone, "\(reason) before the message's outcome came back (it may have been delivered)")),
                to: entry.upstream)
        }
        pendingSmall[port] = nil
        pendingOutcomes[port] = nil
    }

    private func finishSmall(_ id: UInt64, _ outcome: SmallOutcome) {
        guard let entry = small.finish(id) else { return }
        queueOutcome(outcome, to: entry.upstream)
    }

    private func resendOutcome(_ id: UInt64) -> SmallOutcome {
        counters.smallResent += 1
        return SmallOutcome(id, .resend)
    }

    // MARK: Batches

    private func queueSmall(_ message: consuming SmallMessage, to port: Port, batchBytesMax: Int) {
        let bytes = pendingSmall[port, default: PendingSmall()].add(message)
        if bytes >= batchBytesMax { flushSmall(to: port) }
        scheduleSmallFlush()
    }

    private func queueOutcome(_ outcome: consuming SmallOutcome, to port: Port) {
        let count = Self.appended(outcome, to: &pendingOutcomes[port, default: []])
        if count >= Self.outcomesPerFrameMax { flushOutcomes(to: port) }
        scheduleSmallFlush()
    }

    /// Appends in place (one lookup of the port); returns how many the list holds.
    private static func appended(_ outcome: consuming SmallOutcome, to list: inout [SmallOutcome]) -> Int {
        list.append(outcome)
        return list.count
    }

    /// Entry bytes beyond the body a batch counts before it is closed (header, path, framing).
    static let smallEntryAllowanceBytes = 256
    /// Outcomes per OUTCOMES frame (each at most a reason's length).
    static let outcomesPerFrameMax = 128

    private func scheduleSmallFlush() {
        guard !smallFlushScheduled else { return }
        smallFlushScheduled = true
        eventLoop.execute { [self] in
            smallFlushScheduled = false
            for port in Array(pendingOutcomes.keys) { flushOutcomes(to: port) }
            for port in Array(pendingSmall.keys) { flushSmall(to: port) }
        }
    }

    private func flushSmall(to port: Port) {
        guard let batch = pendingSmall.removeValue(forKey: port) else { return }
        write(batch.messages, to: port)
    }

    /// Writes messages in SMALL frames (split where their headers make one too large); what a port that is gone, or
    /// a frame, cannot take is answered RESEND.
    private func write(_ messages: [SmallMessage], to port: Port) {
        if case .local(let id) = port, let sink = localPorts[id] as? InProcessSink {
            counters.smallPassed += UInt64(messages.count)
            counters.bytesOut += messages.reduce(0) { $0 + UInt64($1.body.readableBytes) }
            return sink.deliverSmall(messages)
        }
        let connection = controlConnection(port)
        let unsent = connection?.sendSplitting(messages, as: Frame.small) ?? messages
        // At once, not at the end of the turn: a batch is already many messages in one frame, and the next party
        // starts on it while this node reads on (perf: a flush deferred behind further reads made the batches
        // bigger and fewer, and the four parties took turns waiting for each other).
        connection?.flushNow()
        let bodyBytes = { (list: [SmallMessage]) in list.reduce(0) { $0 + UInt64($1.body.readableBytes) } }
        counters.smallPassed += UInt64(messages.count - unsent.count)
        counters.bytesOut += bodyBytes(messages) - bodyBytes(unsent)
        for message in unsent { finishSmall(message.id, resendOutcome(message.id)) }
    }

    /// Writes outcomes in OUTCOMES frames (reasons are bounded, so every one fits); a port that is gone takes none.
    private func flushOutcomes(to port: Port) {
        guard let outcomes = pendingOutcomes.removeValue(forKey: port) else { return }
        if case .local(let id) = port { return localPorts[id]?.deliver(.outcomes(outcomes)) ?? () }
        guard let connection = controlConnection(port) else { return }
        _ = connection.sendSplitting(outcomes, as: Frame.outcomes)
        connection.flushNow()
    }

    private func controlConnection(_ port: Port) -> FrameConnection? {
        switch port {
        case .session(let id): sessions[id]?.connection
        case .peer(let node): members[node]?.link.anyConnection
        case .local: nil
        }
    }
}

extension NodeEngine {
    /// Whether a W3C `traceparent` (`00-TRACE-SPAN-FLAGS`) asks for the trace to be recorded (flag 01).
    static func sampled(_ traceparent: String) -> Bool {
        guard traceparent.utf8.count == 55, let flags = UInt8(traceparent.suffix(2), radix: 16) else { return false }
        return flags & 1 == 1
    }
}

/// What the messages of one SMALL frame resolved to so far: where the last destination went (messages of one
/// frame mostly go to the same address), and the last next hop's eager budget. Valid for that frame only: nothing
/// else runs on the node's loop meanwhile, so the directory, sessions and links stay as they were.
struct SmallRoute {
    private var destination: String?
    private var found: (EndpointKey, FlowPort)?
    private var termsPort: FlowPort?
    private var portTerms = SmallTerms.none

    /// Where `destination` went, when it was the last one resolved to one endpoint.
    func resolved(_ destination: String) -> (EndpointKey, FlowPort)? {
        self.destination == destination ? found : nil
    }

    mutating func keep(_ destination: String, _ found: (EndpointKey, FlowPort)) {
        self.destination = destination
        self.found = found
    }

    /// What `port` advertised (``NodeEngine/smallTerms(of:)``), looked up once per port and frame.
    mutating func terms(of port: FlowPort, _ engine: NodeEngine) -> SmallTerms {
        if termsPort != port {
            termsPort = port
            portTerms = engine.smallTerms(of: port)
        }
        return portTerms
    }
}

/// Small messages gathered for one port this turn, and the bytes they count towards closing the batch.
struct PendingSmall {
    /// Messages a batch makes room for when it starts.
    static let reserved = 64
    var messages: [SmallMessage] = []
    var bytes = 0

    /// Adds a message; returns the batch's bytes.
    mutating func add(_ message: consuming SmallMessage) -> Int {
        bytes += message.body.readableBytes + NodeEngine.smallEntryAllowanceBytes
        // Room for a batch at once: growing the list copies every message in it (perf).
        if messages.isEmpty { messages.reserveCapacity(Self.reserved) }
        messages.append(message)
        return bytes
    }
}
