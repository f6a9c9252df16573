import FreightCore
import FreightDirectory
import FreightFlow
import FreightTransport
import FreightWire
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// Membership and the mesh directory: who is in the cluster, the links to them, and their endpoints.
extension NodeEngine {
    /// Runs every second: lets hold times pass, closes what stalled, and has the membership dial seeds and members
    /// whose links are missing stripes, send heartbeats, and forget members whose links stayed away.
    func maintain() {
        flowTable.advance(to: nowNanos, actions: &flowActions)
        performFlowActions()
        rerouteSuspended()
        moveOffLostRoutes()
        if !usesMesh { joinDirectoryNodes() }
        closeStalledStreams()
        closeLongHolds()
        closeSilentProbes()
        closeSilentLinks()
        // What the cluster serves and its other gateways reach, announced to other clusters once it changed.
        gateways?.directoryChanged(index)
        var links: [String: Membership.LinkState] = [:]
        for member in members.values {
            links[member.name] = .init(isUp: member.link.isUp, missingStripes: !member.link.missingStripes.isEmpty)
        }
        membership.tick(nowNanos: nowNanos, links: links, actions: &membershipActions)
        performMembershipActions()
    }

    /// A probe of a seed or of a node told of by a peer that connected and heard no HELLO within the handshake time
    /// is closed, and tried again as the membership says: an address that answers nothing holds nothing.
    func closeSilentProbes() {
        let limit = UInt64(Limits.handshakeSeconds) * 1_000_000_000
        for (address, started) in seedProbeStarted where nowNanos &- started > limit {
            seedProbeStarted[address] = nil
            if let probe = seedProbes[address] {
                logger.info("closing the probe of \(address): no hello within \(Limits.handshakeSeconds) s")
                probe.close()
            }
        }
    }

    /// A peer heard from on none of its connections for ``silenceLimitNanos`` (heartbeats included; longer while
    /// its own stripes are down and it redials) is cut off: every connection of its link is closed, and its messages
    /// are held and resumed as for any link that broke (``LinkSilence``).
    func closeSilentLinks() {
        let now = nowNanos
        let grace = UInt64(Limits.handshakeSeconds) * 1_000_000_000
        for member in members.values {
            let connections = member.link.allConnections
            let silent = member.silence.observe(
                heard: connections.reduce(0) { $0 &+ $1.eventsReceived }, peerStripesDown: member.link.ingress.isEmpty,
                resumes: membership.peers[member.name]?.resumes == true, hasConnections: !connections.isEmpty,
                nowNanos: now, limitNanos: silenceLimitNanos, redialGraceNanos: grace)
            guard let silent else { continue }
            logger.warning(
                "heard nothing from node \(member.name) for \(silent / 1_000_000_000) s, heartbeats included\(member.link.ingress.isEmpty ? " (its own stripes here are down and it did not dial them again)" : ""): closing its link"
            )
            for connection in connections { connection.close() }
        }
    }

    /// How long a peer whose stripes stand may go unheard: the link timeout (at least two seconds: the checks run
    /// once a second) and three heartbeat intervals.
    var silenceLimitNanos: UInt64 {
        let timeoutMillis = configuration.tuning.userTimeoutMillis ?? Limits.linkTimeoutSeconds * 1000
        return UInt64(max(timeoutMillis, 2000)) * 1_000_000 + 3 * membership.configuration.heartbeatIntervalNanos
    }

    /// What the membership decided to do, done in order (an action may lead to more).
    func performMembershipActions() {
        guard !membershipActions.isEmpty, !performingMembershipActions else { return }
        performingMembershipActions = true
        var next = 0
        while next < membershipActions.count {
            let action = membershipActions[next]
            next += 1
            switch action {
            case .dialSeed(let address):
                dialSeed(address)
            case .dial(let name):
                if let member = members[name] { dial(member) }
            case .forget(let name, let reason):
                peerDown(name, reason: reason)
            case .holdMessages(let name, let reason):
                logger.info(
                    "link to node \(name) broke (\(reason)); holding its messages for \(configuration.resumeHoldSeconds) s"
                )
                flowTable.advance(to: nowNanos, actions: &flowActions)
                flowTable.linkLost(
                    .peer(name), error: FreightError(.nodeGone, "the link to node \(name) broke (\(reason))"),
                    actions: &flowActions)
                performFlowActions()
                rerouteSuspended()
            case .holdUpstream(let name):
                // Nothing the peer sends can arrive: its messages wait here for it to re-open them.
                flowTable.advance(to: nowNanos, actions: &flowActions)
                flowTable.upstreamLost(.peer(name), actions: &flowActions)
                performFlowActions()
            case .resume(let name):
                logger.info("link to node \(name) is back: resuming its messages")
                flowTable.linkRestored(.peer(name), actions: &flowActions)
                performFlowActions()
            case .heartbeat(let name):
                for stripe in members[name]?.link.egress ?? [] { stripe?.send(.ack(0, acked: 0, credit: 0)) }
            case .settleStripeLoss(let name):
                // What the stripe carried goes again a moment later: when the whole link is breaking (its other
                // stripes close within the moment), the resume sends it once instead of twice.
                eventLoop.scheduleTask(in: .milliseconds(Int64(Limits.stripeLossSettleMillis))) { [self] in
                    membership.stripeLossSettled(
                        name, linkUp: members[name]?.link.isUp == true, actions: &membershipActions)
                    performMembershipActions()
                }
            case .resend(let name, let control):
                flowTable.stripeLost(.peer(name), actions: &flowActions)
                if control { flowTable.controlLost(.peer(name), actions: &flowActions) }
                performFlowActions()
            }
        }
        membershipActions.removeAll(keepingCapacity: true)
        performingMembershipActions = false
    }

    func dialSeed(_ address: NodeAddress) {
        transport.connect(to: address) { [self] channel in
            let connection = makeConnection(channel)
            connection.isDialed = true
            return connection
        }.whenComplete { [self] result in
            switch result {
            case .success(let connection):
                seedProbes[address] = connection
                seedProbeStarted[address] = nowNanos
                membership.seedProbing(address, true)
                connection.sendPreface()
                connection.send(helloFrame(role: .node, stream: 0))
            case .failure(let error):
                guard membership.seeds[address] != nil else {
                    return logger.debug("node \(address), told of by a peer, not reachable: \(error)")
                }
                let attempts = membership.seeds[address]?.attempts ?? 0
                if attempts <= Self.seedFailuresLoggedFirst || attempts % Self.seedFailuresLoggedEvery == 0 {
                    logger.info("seed \(address) not reachable yet: \(error)")
                }
            }
        }
    }

    /// Dials every missing stripe of the egress link to `member`, each on its rail.
    func dial(_ member: Member) {
        for stripe in member.link.missingStripes {
            let rail = member.link.target(ofStripe: stripe)
            transport.connect(to: rail.target, from: rail.source) { [self] channel in
                let connection = makeConnection(channel)
                connection.isDialed = true
                return connection
            }.whenComplete { [self] result in
                switch result {
                case .success(let connection):
                    guard let current = members[member.name], current === member,
                        member.link.attach(connection, stripe: stripe)
                    else {
                        connection.close()
                        return
                    }
                    connection.sendPreface()
                    connection.send(helloFrame(role: .node, stream: stripe))
                    if stripe == 0 { linkUp(member) }
                    membership.stripeUp(member.name, actions: &membershipActions)
                    performMembershipActions()
                case .failure(let error):
                    logger.debug("dial \(member.name) stripe \(stripe) at \(rail.target) failed: \(error)")
                    guard members[member.name] === member else { return }
                    membership.dialFailed(
                        member.name, refused: Self.isRefused(error), linkUp: member.link.isUp,
                        actions: &membershipActions)
                    performMembershipActions()
                }
            }
        }
    }

    /// The reply hello on a connection this node dialed.
    func dialedHelloReceived(_ hello: Freight_Wire_V1_Hello, on connection: FrameConnection) {
        guard hello.cluster == configuration.cluster else {
            return reject(connection, "peer \(hello.name) is in cluster \(hello.cluster), not \(configuration.cluster)")
        }
        if let refusal = provenRefusal(hello, on: connection) { return reject(connection, refusal) }
        // A seed probe: now its name is known.
        if let (address, _) = seedProbes.first(where: { $0.value === connection }) {
            seedProbes[address] = nil
            seedProbeStarted[address] = nil
            membership.seedAnswered(address)
            if hello.name == name {
                connection.close()
                return
            }
            let member = learn(
                name: hello.name, listen: (try? NodeAddress(hello.listen)) ?? address, incarnation: hello.incarnation)
            if let member, member.link.attach(connection, stripe: 0) {
                linkUp(member)
                dial(member)
            } else {
                connection.close()
            }
        }
    }

    /// Why a node's HELLO on `connection` is not proved by the link's TLS handshake, or nil when it is (or when this
    /// node has no certificates: a trusted network).
    func provenRefusal(_ hello: Freight_Wire_V1_Hello, on connection: FrameConnection) -> String? {
        guard case .tcp = boundListen, transport.security != nil else { return nil }
        guard let identity = connection.peerIdentity else {
            return
                "node \(hello.name.prefix(64)) came without TLS: this cluster's nodes prove who they are with mutual TLS (--tls-cert)"
        }
        guard identity.admits(name: hello.name) else {
            return "node \(hello.name.prefix(64)) presented the certificate of \(identity)"
        }
        return nil
    }

    /// A peer's stripe arrived. Nothing is told to it (not even this node's HELLO) before it proved who it is.
    func acceptedPeerHello(_ hello: Freight_Wire_V1_Hello, on connection: FrameConnection) {
        guard hello.cluster == configuration.cluster else {
            return reject(connection, "peer \(hello.name) is in cluster \(hello.cluster), not \(configuration.cluster)")
        }
        if let refusal = provenRefusal(hello, on: connection) { return reject(connection, refusal) }
        connection.sendPreface()
        connection.send(helloFrame(role: .node))
        guard hello.name != name else {
            // Our own seed probe, when a node is told to join itself.
            return
        }
        guard let listen = try? NodeAddress(hello.listen) else {
            return reject(connection, "peer \(hello.name) sent listen address '\(hello.listen)'")
        }
        // A name held by a live member is not taken by another party: a new incarnation (a restart) is accepted
        // only once every link of the old one is gone (docs/hardening.md).
        if let holder = members[hello.name], holder.incarnation != hello.incarnation, hello.incarnation != 0,
            !holder.link.allConnections.isEmpty
        {
            return reject(
                connection,
                "node \(hello.name) is held by a live member (incarnation \(String(holder.incarnation, radix: 16)) at \(holder.listen)); a new incarnation is taken once its links are gone"
            )
        }
        guard let member = learn(name: hello.name, listen: listen, incarnation: hello.incarnation) else {
            return reject(connection, "too many members")
        }
        // The peer dials a stripe again only once it counts the old one broken; what the old one still shows here
        // (a chunk cut off by a link that went dark, so its close never arrived) is gone, and the peer sends it
        // again: waiting for that connection's own timeout would hold the partial chunk for nothing.
        for stale in member.link.accept(connection, stripe: hello.streamIndex) {
            logger.info("node \(member.name) dialed stripe \(hello.streamIndex) again: closing \(stale)")
            stale.close()
        }
        connection.established()
        if !member.link.isUp { dial(member) }
    }

    /// Records a member from its directory record (rails and topology included).
    @discardableResult
    func learn(_ record: NodeRecord) -> Member? {
        let member = learn(name: record.name, listen: record.listen, incarnation: record.incarnation)
        member?.apply(record, localRails: railHosts)  // the caller dials the new member's stripes
        return member
    }

    /// Takes what a node's record says (rails, topology) and dials the stripes of rails it added.
    func adopt(_ record: NodeRecord, for member: Member) {
        if member.apply(record, localRails: railHosts) { dial(member) }
    }

    /// Records a member, replacing an earlier incarnation of the same name. Returns nil past the member limit.
    @discardableResult
    func learn(name: String, listen: NodeAddress, incarnation: UInt64) -> Member? {
        let admission = membership.learn(
            name: name, listen: listen, incarnation: incarnation, actions: &membershipActions)
        performMembershipActions()
        switch admission {
        case .known: return members[name]
        case .full: return nil
        case .admitted: break
        }
        let member = Member(name: name, listen: listen, incarnation: incarnation, streams: configuration.streams)
        members[name] = member
        logger.info("member \(name) at \(listen)")
        return member
    }

    /// Stripe 0 is up: tell the peer who we know and what we serve.
    func linkUp(_ member: Member) {
        guard usesMesh, let control = member.link.control else { return }
        // This node's own record first (rails, topology), then every member it knows.
        var list = Freight_Wire_V1_Members()
        list.members.append(ownRecord.wire)
        for known in members.values where known.name != member.name {
            if list.members.count >= Limits.membersMax { break }
            list.members.append(known.record.wire)
        }
        // In frames under the control-frame limit (a record with a large topology is tens of KiB).
        var part = Freight_Wire_V1_Members()
        var bytes = 0
        for entry in list.members {
            let size = (try? entry.serializedBytes() as [UInt8])?.count ?? 0
            if bytes + size > Limits.controlFrameBytesMax - Self.controlFrameHeadroomBytes, !part.members.isEmpty {
                control.send(.members(part))
                part = Freight_Wire_V1_Members()
                bytes = 0
            }
            part.members.append(entry)
            bytes += size + Self.listEntryOverheadBytes
        }
        if !part.members.isEmpty { control.send(.members(part)) }
        sendFunctions(Array(functionTable.records.values), to: [member])
        let records = localEndpoints.records
        for (index, batch) in Self.batches(records).enumerated() {
            var update = Freight_Wire_V1_Endpoints()
            update.full = index == 0
            update.added = batch.map(\.wire)
            control.send(.endpoints(update))
        }
        if records.isEmpty {
            var update = Freight_Wire_V1_Endpoints()
            update.full = true
            control.send(.endpoints(update))
        }
    }

    /// Splits endpoint announcements so that each frame stays under the control-frame limit.
    static func batches(_ records: [EndpointRecord]) -> [[EndpointRecord]] {
        var result: [[EndpointRecord]] = []
        var current: [EndpointRecord] = []
        var bytes = 0
        for record in records {
            let size =
                record.pattern.description.utf8.count + (record.group?.utf8.count ?? 0) + record.app.utf8.count
                + record.key.node.utf8.count + Self.endpointRecordOverheadBytes
            if bytes + size > Limits.controlFrameBytesMax / 2, !current.isEmpty {
                result.append(current)
                current = []
                bytes = 0
            }
            current.append(record)
            bytes += size
        }
        if !current.isEmpty { result.append(current) }
        return result
    }

    /// Sends an endpoint change to every peer that has a link.
    func announce(added: [EndpointRecord], removed: [UInt64]) {
        if let directory = configuration.directory {
            // A backend publishes registrations itself (the app waits for it); withdrawals go from here.
            if !removed.isEmpty { directory.withdraw(removed.map { EndpointKey(node: name, id: $0) }) }
            return
        }
        for batch in Self.batches(added) {
            var update = Freight_Wire_V1_Endpoints()
            update.added = batch.map(\.wire)
            for member in members.values { member.link.control?.send(.endpoints(update)) }
        }
        if !removed.isEmpty {
            for start in stride(from: 0, to: removed.count, by: Self.removalsPerFrameMax) {
                var update = Freight_Wire_V1_Endpoints()
                update.removed = Array(removed[start..<min(removed.count, start + Self.removalsPerFrameMax)])
                for member in members.values { member.link.control?.send(.endpoints(update)) }
            }
        }
    }

    func peerReceived(_ frame: Frame, from peer: String, on connection: FrameConnection) {
        guard let member = members[peer], member.link.owns(connection) else {
            // A stripe of a peer that was dropped; nothing it says can be trusted any more.
            return connection.close()
        }
        switch frame {
        case .endpoints(let update):
            if usesMesh { applyEndpoints(update, from: member) }
        case .members(let list):
            guard usesMesh else { return }
            for entry in list.members.prefix(Limits.membersMax) where entry.name != name {
                let record: NodeRecord
                do {
                    record = try NodeRecord(wire: entry)
                } catch {
                    logger.warning("node \(peer) sent a member record that is not valid: \(error.message)")
                    continue
                }
                if let known = members[entry.name] {
                    // What a node says about itself counts; gossip about others only fills gaps.
                    if entry.name == peer || known.record.rails.isEmpty && known.record.topology.isEmpty {
                        adopt(record, for: known)
                    }
                } else if membership.propose(name: record.name, listen: record.listen) {
                    // Told of by a peer: probed at its address, and a member only once it answers as a node of
                    // this cluster (docs/hardening.md).
                    dialSeed(record.listen)
                }
            }
        case .functions(let list):
            if usesMesh { functionsReceived(list, from: member) }
        case .open, .data, .ack, .done, .abort:
            flowFrame(frame, from: .peer(peer))
        case .small(let batch):
            smallReceived(batch, from: .peer(peer), on: connection)
        case .outcomes(let outcomes):
            outcomesReceived(outcomes, from: .peer(peer))
        case .hello, .request, .reply, .shared, .release, .routes:
            reject(connection, "unexpected \(frame.type) frame from node \(peer)")
        }
    }

    func applyEndpoints(_ update: Freight_Wire_V1_Endpoints, from member: Member) {
        var dropped = update.full ? index.removeAll(at: member.name) : 0
        for key in update.removed where index.remove(EndpointKey(node: member.name, id: key)) != nil { dropped += 1 }
        if dropped >= MemoryTuning.trimAfterDroppedEntries { MemoryTuning.returnFreeMemory() }
        for endpoint in update.added {
            guard index.count(at: member.name) < Limits.endpointsPerPeerMax else {
                logger.warning(
                    "node \(member.name) announced over \(Limits.endpointsPerPeerMax) endpoints; ignoring the rest")
                break
            }
            // Every peer's endpoints together are bounded too: many peers cannot do what one may not.
            guard index.count - localEndpoints.count < Limits.remoteEndpointsMax else {
                logger.warning(
                    "node \(name) holds \(Limits.remoteEndpointsMax) endpoints of other nodes, the most it keeps; ignoring the rest from \(member.name)"
                )
                break
            }
            guard let record = EndpointRecord(key: EndpointKey(node: member.name, id: endpoint.id), wire: endpoint)
            else {
                logger.warning(
                    "node \(member.name) announced an invalid endpoint '\(endpoint.pattern.prefix(Limits.addressBytesMax))'"
                )
                continue
            }
            index.upsert(record)
        }
    }

    /// One connection of the link to `member` closed. A peer that cannot resume is gone with it (as before
    /// resume existed). Otherwise, for what this node sends (its egress stripes): with stripes left, the bytes in
    /// flight on the lost one are sent again; with none left, the link is down, branches to the peer are suspended
    /// for it to come back (docs/core.md), and it is redialed at once (a peer whose process is gone refuses, and its
    /// messages fail then). For what the peer sends (its stripes here): with none left, its messages are held.
    func linkConnectionLost(_ member: Member, _ connection: FrameConnection, reason: String) {
        let loss = member.link.remove(connection)
        if !member.link.isUp { smallPortGone(.peer(member.name), reason: "the link to node \(member.name) broke") }
        if loss.egress, member.link.isUp, membership.peers[member.name]?.resumes == true, !stopping {
            logger.info("a stripe to node \(member.name) broke (\(reason)); sending what it carried again")
        }
        membership.connectionLost(
            member.name,
            .init(
                egress: loss.egress, ingress: loss.ingress, control: loss.control, linkUp: member.link.isUp,
                ingressLeft: !member.link.ingress.isEmpty),
            reason: reason, nowNanos: nowNanos, actions: &membershipActions)
        performMembershipActions()
    }

    /// The node's monotonic clock (``NodeEnvironment``): hold times, stall and hold limits, heartbeats.
    var nowNanos: UInt64 { configuration.environment.nowNanos() }

    /// A dial that failed because nothing listens there.
    static func isRefused(_ error: any Error) -> Bool {
        if let error = error as? IOError { return error.errnoCode == ECONNREFUSED }
        if let error = error as? NIOConnectionError {
            return !error.connectionErrors.isEmpty
                && error.connectionErrors.allSatisfy { ($0.error as? IOError)?.errnoCode == ECONNREFUSED }
        }
        return false
    }

    /// A peer went away (or restarted): drop its endpoints, fail the flows through it, close its links.
    func peerDown(_ peer: String, reason: String) {
        guard let member = members.removeValue(forKey: peer) else { return }
        // With a backend the directory says when its endpoints are gone (its lease ends); until then sends to them
        // fail at once because the node is not up.
        let dropped = usesMesh ? index.removeAll(at: peer) : 0
        logger.info("node \(peer) left (\(reason)); dropped \(dropped) endpoints")
        if dropped >= MemoryTuning.trimAfterDroppedEntries { MemoryTuning.returnFreeMemory() }
        for connection in member.link.allConnections { connection.close() }
        portGone(.peer(peer), error: FreightError(.nodeGone, "node \(peer) went away (\(reason))"))
    }
}
