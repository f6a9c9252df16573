import FreightCore
import FreightDirectory
import FreightFlow
import FreightTransport
import FreightWire

/// Apps attached to this node: their requests, and their messages in and out.
extension NodeEngine {
    func sessionReceived(_ frame: Frame, on connection: FrameConnection) {
        guard let session = sessions[connection.id] else { return connection.close() }
        switch frame {
        case .request(let request):
            if case .register(let register) = request.kind, let directory = configuration.directory {
                return registerThroughDirectory(register, request: request, session: session, directory: directory)
            }
            if let error = connection.send(.reply(handle(request, from: session))) {
                // A reply over the control-frame limit: answer with the reason instead of leaving the app waiting.
                var reply = Freight_Wire_V1_Reply()
                reply.requestID = request.requestID
                reply.errorCode = error.code.rawValue
                reply.error = error.message
                connection.send(.reply(reply))
            }
        case .open, .data, .ack, .done, .abort:
            flowFrame(frame, from: .session(session.id))
        case .shared(let chunk):
            sharedReceived(chunk, from: session)
        case .release(let regions):
            releaseReceived(regions, from: session)
        case .small(let batch):
            smallReceived(batch, from: .session(session.id), on: connection)
        case .outcomes(let outcomes):
            outcomesReceived(outcomes, from: .session(session.id))
        case .hello, .reply, .endpoints, .members, .routes, .functions:
            reject(connection, "unexpected \(frame.type) frame from app \(session.label)")
        }
    }

    func handle(_ request: Freight_Wire_V1_Request, from session: AppSession) -> Freight_Wire_V1_Reply {
        var reply = Freight_Wire_V1_Reply()
        reply.requestID = request.requestID
        do throws(FreightError) {
            switch request.kind {
            case .register(let register):
                reply.endpointID = try registerEndpoint(register, for: session)
            case .unregister(let unregister):
                unregisterEndpoint(unregister.endpointID, for: session)
            case .resolve(let resolve):
                let found = try self.resolve(resolve.pattern)
                reply.endpoints = found.prefix(Limits.resolveResultsMax).map(\.wire)
                reply.truncated = found.count > Limits.resolveResultsMax
                if resolve.explainBytes > 0 { reply.plans = try explain(resolve, endpoints: found) }
            case .status:
                reply.status = status()
            case nil:
                throw FreightError(.invalidArgument, "empty request")
            }
        } catch {
            reply.errorCode = error.code.rawValue
            reply.error = error.message
        }
        return reply
    }

    func registerEndpoint(_ register: Freight_Wire_V1_Register, for session: AppSession) throws(FreightError) -> UInt64
    {
        let pattern = try AddressPattern(register.pattern)
        if pattern.segments.count >= 2, pattern.segments[0] == .literal(Limits.inboxSegment),
            pattern.segments[1] != .literal(name)
        {
            // Replies to another node's inboxes go to that node: no app here may take them.
            let inbox = Limits.inboxSegment
            throw FreightError(.permissionDenied, "the \(inbox)/ addresses of node \(name) are \(inbox)/\(name)/...")
        }
        if let refusal = accessRefusal(session, .receive, pattern) {
            logger.notice("app \(session.label): \(refusal.message)")
            throw refusal
        }
        if !register.group.isEmpty {
            guard AddressGrammar.isName(register.group) else {
                throw FreightError(
                    .invalidArgument,
                    "invalid group '\(register.group.prefix(Limits.nameBytesMax))': use up to 64 of a-z 0-9 . _ -")
            }
        }
        guard session.endpoints.count < Limits.registrationsPerSessionMax else {
            throw FreightError(
                .resourceExhausted, "an app may register at most \(Limits.registrationsPerSessionMax) endpoints")
        }
        let record = localEndpoints.add(
            pattern: pattern, group: register.group.isEmpty ? nil : register.group, app: session.label,
            port: .session(session.id))
        let id = record.key.id
        index.upsert(record)
        session.endpoints.insert(id)
        announce(added: [record], removed: [])
        logger.debug("endpoint \(id) \(pattern) registered by \(session.label)")
        return id
    }

    /// With a directory backend an endpoint exists once the backend holds it: the app is answered then, or told
    /// why not (the directory is unreachable) and the endpoint is dropped.
    private func registerThroughDirectory(
        _ register: Freight_Wire_V1_Register, request: Freight_Wire_V1_Request, session: AppSession,
        directory: any DirectoryBackend
    ) {
        var reply = Freight_Wire_V1_Reply()
        reply.requestID = request.requestID
        let id: UInt64
        do throws(FreightError) {
            id = try registerEndpoint(register, for: session)
        } catch {
            reply.errorCode = error.code.rawValue
            reply.error = error.message
            session.connection.send(.reply(reply))
            return
        }
        guard let record = localEndpoints[id]?.record else { return }
        directory.publish([record]) { [self, reply] error in
            eventLoop.execute { [self] in
                var reply = reply
                if let error {
                    unregisterEndpoint(id, for: session)
                    reply.errorCode = error.code.rawValue
                    reply.error = error.message
                } else {
                    reply.endpointID = id
                }
                session.connection.send(.reply(reply))
            }
        }
    }

    func unregisterEndpoint(_ id: UInt64, for session: AppSession) {
        guard session.endpoints.remove(id) != nil else { return }
        localEndpoints.remove(id)
        index.remove(EndpointKey(node: name, id: id))
        announce(added: [], removed: [id])
    }

    func resolve(_ text: String) throws(FreightError) -> [EndpointRecord] {
        let pattern = try AddressPattern(text)
        let found: [EndpointRecord]
        if pattern.isLiteral {
            found = index.match(try Address(text))
        } else {
            found = index.overlapping(pattern)
        }
        return found.sorted { ($0.key.node, $0.key.id) < ($1.key.node, $1.key.id) }
    }

    func sessionClosed(_ session: AppSession) {
        sessions.remove(session.id)
        sharedSessionClosed(session)
        let ids = Array(session.endpoints)
        for id in ids {
            localEndpoints.remove(id)
            index.remove(EndpointKey(node: name, id: id))
        }
        if !ids.isEmpty { announce(added: [], removed: ids) }
        logger.debug("app \(session.label) detached; \(ids.count) endpoints removed")
        portGone(
            .session(session.id), error: FreightError(.receiverGone, "app \(session.label) on node \(name) went away"))
    }
}
