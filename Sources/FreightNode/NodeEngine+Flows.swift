import FreightCore
import FreightDirectory
import FreightRouting
import FreightTransport
import FreightWire
import NIOCore

/// Messages through this node: open, forward chunk by chunk, carry credits and acknowledgements back, finish.
extension NodeEngine {
    func flowFrame(_ frame: Frame, from port: Port) {
        switch frame {
        case .open(let open): openReceived(open, from: port)
        case .data(let chunk): dataReceived(chunk, from: port)
        case .ack(let ack): ackReceived(ack, from: port)
        case .done(let done): doneReceived(done, from: port)
        case .abort(let abort): abortReceived(abort, from: port)
        default: break
        }
    }

    // MARK: Open

    func openReceived(_ open: Freight_Wire_V1_Open, from port: Port) {
        var header = open.header
        let id = header.id
        do throws(FreightError) {
            guard id != 0 else { throw FreightError(.protocolViolation, "message id 0 is reserved") }
            guard flows[id] == nil else { throw FreightError(.duplicate, "message id \(id) is already in flight here") }
            let headerBytes = header.encodedSize
            guard headerBytes <= Limits.headerBytesMax else {
                throw FreightError(
                    .invalidArgument, "message header of \(headerBytes) bytes is over \(Limits.headerBytesMax)")
            }
            if header.chunkBytes == 0 { header.chunkBytes = UInt32(configuration.chunkBytes) }
            guard (Limits.chunkBytesMin...Limits.chunkBytesMax).contains(Int(header.chunkBytes)) else {
                throw FreightError(
                    .invalidArgument,
                    "chunk size \(header.chunkBytes) is out of range \(Limits.chunkBytesMin)...\(Limits.chunkBytesMax)")
            }
            guard header.length <= UInt64(Int64.max) else {
                throw FreightError(.invalidArgument, "length \(header.length) is too large")
            }
            guard header.attributes.count <= Limits.attributesMax else {
                throw FreightError(
                    .invalidArgument, "\(header.attributes.count) attributes, at most \(Limits.attributesMax)")
            }
            guard open.path.count < Limits.membersMax else { throw FreightError(.protocolViolation, "path too long") }

            let targets: [EndpointRecord]
            switch port {
            case .session, .local:
                let destination = try parsedAddress(header.destination)
                let matches = index.match(destination)
                tieBreak &+= 1
                targets = planner.plan(
                    matches: matches, load: { self.endpointLoad[$0, default: 0] }, tieBreak: tieBreak)
                guard !targets.isEmpty else { throw FreightError.noRoute(destination.description) }
            case .peer:
                targets = open.targets.filter { $0.node == name }.compactMap { localEndpoints[$0.id]?.record }
                guard !targets.isEmpty else {
                    throw FreightError(
                        .noRoute, "no route to \(header.destination): its endpoint on node \(name) is gone")
                }
            }

            guard flowsByUpstream[port, default: 0] < Limits.messagesPerConnectionMax else {
                throw FreightError(
                    .resourceExhausted,
                    "\(port) has \(Limits.messagesPerConnectionMax) messages in flight through node \(name), the most allowed"
                )
            }
            // A shared-buffer message between apps of this node holds no bytes here: only its regions are lent.
            let shared =
                open.shared && port.isLocal
                && targets.allSatisfy { target in
                    guard target.key.node == name, case .session(let id)? = localEndpoints[target.key.id]?.port else {
                        return false
                    }
                    return sessions[id]?.takesShared == true
                }
            // Every message reserves at least the smallest chunk, so the budget also bounds how many are open.
            let window = shared ? max(header.length, 1) : UInt64(configuration.windowBytes)
            let reserve =
                shared ? Limits.chunkBytesMin : Int(min(max(header.length, UInt64(Limits.chunkBytesMin)), window))
            guard reservedBytes + reserve <= configuration.memoryBudgetBytes else {
                throw FreightError(
                    .resourceExhausted,
                    "node \(name) is at its memory budget (\(ByteCount.format(Int64(configuration.memoryBudgetBytes))) in flight); try again"
                )
            }
            startFlow(
                id: id, header: header, upstream: port, targets: targets, path: open.path + [name], reserve: reserve,
                window: window, shared: shared)
        } catch {
            failed += 1
            send(.abort(id, error), to: port)
        }
    }

    /// An app's destination, parsed once: apps send many messages to the same few addresses. The cache is
    /// emptied when it holds `Self.parsedAddressesMax` of them.
    func parsedAddress(_ text: String) throws(FreightError) -> Address {
        if let address = parsedAddresses[text] { return address }
        let address = try Address(text)
        if parsedAddresses.count >= Self.parsedAddressesMax { parsedAddresses.removeAll(keepingCapacity: true) }
        parsedAddresses[text] = address
        return address
    }

    private func startFlow(
        id: UInt64,
        header: Freight_Wire_V1_MessageHeader,
        upstream: Port,
        targets: [EndpointRecord],
        path: [String],
        reserve: Int,
        window: UInt64,
        shared: Bool
    ) {
        var branches: [Flow.Branch] = []
        var remote: [String: [EndpointKey]] = [:]
        var local: [Port: [EndpointKey]] = [:]
        for target in targets {
            if target.key.node == name {
                if let port = localEndpoints[target.key.id]?.port { local[port, default: []].append(target.key) }
            } else {
                remote[target.key.node, default: []].append(target.key)
            }
        }
        for (port, keys) in local.sorted(by: { $0.key.description < $1.key.description }) {
            branches.append(Flow.Branch(port: port, targets: keys))
        }
        for (node, keys) in remote.sorted(by: { $0.key < $1.key }) {
            var branch = Flow.Branch(port: .peer(node), targets: keys)
            if members[node]?.isUp != true {
                branch.state = .failed(FreightError(.nodeGone, "node \(node) is not reachable"), acked: 0)
            } else {
                branch.rails = plannedRails(header, to: node)
            }
            branches.append(branch)
        }
        reservedBytes += reserve
        flowsByUpstream[upstream, default: 0] += 1
        for target in targets { endpointLoad[target.key, default: 0] += 1 }
        flows[id] = Flow(
            id: id, header: header, upstream: upstream, branches: branches, path: path, reservedBytes: reserve,
            windowBytes: window, shared: shared)

        for branch in branches where branch.isOpen {
            var open = Freight_Wire_V1_Open()
            open.header = header
            open.path = path
            open.shared = shared
            open.targets = branch.targets.map { key in
                var ref = Freight_Wire_V1_EndpointRef()
                ref.node = key.node
                ref.id = key.id
                return ref
            }
            send(.open(open), to: branch.port)
        }
        finishIfComplete(id)
    }

    // MARK: Data

    func dataReceived(_ chunk: DataChunk, from port: Port) {
        guard let flow = admit(messageID: chunk.messageID, offset: chunk.offset, count: chunk.count, from: port) else {
            return
        }
        for branch in flow.branches where branch.isOpen {
            sendData(chunk, to: branch.port)
        }
    }

    /// Checks a chunk against its flow before it is forwarded: the flow exists (chunks of a message that already
    /// ended are still in the pipe and are dropped), the port sends it, and the chunk lies within the credit.
    /// Returns the flow with the chunk counted, or nil to drop it.
    func admit(
        messageID: UInt64, offset: UInt64, count: Int, from port: Port, countLimit: Int = Limits.chunkBytesMax
    ) -> Flow? {
        guard let slot = flows.index(forKey: messageID) else { return nil }
        let flow = flows.values[slot]
        guard flow.upstream == port else {
            logger.warning("\(port) sent a chunk of message \(messageID) it does not send; dropped")
            return nil
        }
        let bytes = UInt64(count)
        let (end, overflow) = offset.addingReportingOverflow(bytes)
        guard !overflow, end <= flow.upstreamCredit, end <= flow.length, count <= countLimit else {
            abortFlow(
                messageID,
                FreightError(
                    .protocolViolation, "chunk [\(offset), +\(count)) is beyond the credit \(flow.upstreamCredit)"),
                notifyUpstream: true
            )
            return nil
        }
        bytesIn += bytes
        flows.values[slot].bytesForwarded += bytes
        return flow
    }

    func sendData(_ chunk: DataChunk, to port: Port) {
        if case .local(let id) = port {
            bytesOut += UInt64(chunk.count)
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
            let several = member.railCount > 1
            guard
                let stripe = member.stripeForData(
                    spillBytes: configuration.windowBytes / 2, policy: configuration.striping, chunkBytes: bytes,
                    nowNanos: several ? NIODeadline.now().uptimeNanoseconds : 0,
                    rails: several ? flows[messageID]?.branches.first { $0.port == port }?.rails : nil)
            else { return nil }
            member.stripeBytes[stripe] += UInt64(bytes)
            connection = member.egress[stripe]
        case .local:
            preconditionFailure("in-process ports take chunks whole")
        }
        if connection != nil { bytesOut += UInt64(bytes) }
        return connection
    }

    // MARK: Acknowledgements and outcomes

    func ackReceived(_ ack: Freight_Wire_V1_Ack, from port: Port) {
        // The flow is changed in place (`flows.values[slot]`): a copy would copy its branches on every ACK.
        guard let slot = flows.index(forKey: ack.messageID),
            let index = flows.values[slot].branches.firstIndex(where: { $0.port == port && $0.isOpen })
        else { return }
        let length = flows.values[slot].length
        guard ack.ackedOffset <= length, ack.ackedOffset <= ack.creditOffset || ack.creditOffset == 0 else {
            return abortFlow(
                ack.messageID, FreightError(.protocolViolation, "\(port) acknowledged past the message"),
                notifyUpstream: true)
        }
        func apply(_ flow: inout Flow) -> (acked: UInt64, credit: UInt64)? {
            flow.branches[index].ackedOffset = max(flow.branches[index].ackedOffset, ack.ackedOffset)
            flow.branches[index].creditOffset = max(flow.branches[index].creditOffset, min(ack.creditOffset, length))
            return flow.upstreamUpdate()
        }
        let update = apply(&flows.values[slot])
        let upstream = flows.values[slot].upstream
        settleLoans(ack.messageID)
        if let update {
            send(.ack(ack.messageID, acked: update.acked, credit: update.credit), to: upstream)
        }
    }

    func doneReceived(_ done: Freight_Wire_V1_Done, from port: Port) {
        guard let slot = flows.index(forKey: done.messageID),
            let index = flows.values[slot].branches.firstIndex(where: { $0.port == port && $0.isOpen })
        else { return }
        var done = done
        if port.isLocal {
            // An app speaks for its own endpoints only.
            let targets = flows.values[slot].branches[index].targets
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
        }
        func apply(_ flow: inout Flow) -> (acked: UInt64, credit: UInt64)? {
            flow.branches[index].ackedOffset = flow.length
            flow.branches[index].state = .done(done)
            // Other branches still open: upstream hears how far they all are now (DONE is this branch's final
            // ACK).
            return flow.allBranchesFinished ? nil : flow.upstreamUpdate()
        }
        let update = apply(&flows.values[slot])
        let upstream = flows.values[slot].upstream
        settleLoans(done.messageID)
        if let update {
            send(.ack(done.messageID, acked: update.acked, credit: update.credit), to: upstream)
        }
        finishIfComplete(done.messageID)
    }

    func abortReceived(_ abort: Freight_Wire_V1_Abort, from port: Port) {
        guard var flow = flows[abort.messageID] else { return }
        if flow.upstream == port {
            return abortFlow(abort.messageID, abort.error, notifyUpstream: false)
        }
        guard let index = flow.branches.firstIndex(where: { $0.port == port && $0.isOpen }) else { return }
        flow.branches[index].state = .failed(abort.error, acked: abort.ackedOffset)
        let update = flow.upstreamUpdate()
        flows[abort.messageID] = flow
        settleLoans(abort.messageID)
        if let update, !flow.allBranchesFinished {
            send(.ack(abort.messageID, acked: update.acked, credit: update.credit), to: flow.upstream)
        }
        finishIfComplete(abort.messageID)
    }

    /// Reports the outcome upstream once every branch has finished, and releases the flow.
    func finishIfComplete(_ id: UInt64) {
        guard let flow = flows[id], flow.allBranchesFinished else { return }
        let outcome = flow.outcome(nodeName: name)
        if case .abort = outcome { failed += 1 } else { delivered += 1 }
        release(flow)
        send(outcome, to: flow.upstream)
    }

    /// Ends a flow everywhere: its open branches are told, and upstream too when `notifyUpstream`.
    func abortFlow(_ id: UInt64, _ error: FreightError, notifyUpstream: Bool) {
        guard let flow = flows[id] else { return }
        failed += 1
        release(flow)
        for branch in flow.branches where branch.isOpen {
            send(.abort(id, error, ackedOffset: branch.ackedOffset), to: branch.port)
        }
        if notifyUpstream {
            send(.abort(id, error, ackedOffset: flow.upstreamAcked), to: flow.upstream)
        }
    }

    private func release(_ flow: Flow) {
        settleLoans(flow.id, all: true)
        flows[flow.id] = nil
        reservedBytes -= flow.reservedBytes
        if let count = flowsByUpstream[flow.upstream], count > 1 {
            flowsByUpstream[flow.upstream] = count - 1
        } else {
            flowsByUpstream[flow.upstream] = nil
        }
        for branch in flow.branches {
            for target in branch.targets {
                if let load = endpointLoad[target], load > 1 {
                    endpointLoad[target] = load - 1
                } else {
                    endpointLoad[target] = nil
                }
            }
        }
    }

    /// An app or a peer is gone: flows it sent are aborted downstream; branches to it fail.
    func portGone(_ port: Port, error: FreightError) {
        for id in Array(flows.keys) {
            guard var flow = flows[id] else { continue }
            if flow.upstream == port {
                let upstreamError: FreightError
                switch port {
                case .session, .local: upstreamError = FreightError(.senderGone, "the sending app went away")
                case .peer(let node):
                    upstreamError = FreightError(.nodeGone, "node \(node), which relayed the message, went away")
                }
                abortFlow(
                    id,
                    FreightError(
                        upstreamError.code,
                        "\(upstreamError.message) after \(flow.bytesForwarded) of \(flow.length) bytes"),
                    notifyUpstream: false)
                continue
            }
            var changed = false
            for index in flow.branches.indices where flow.branches[index].port == port && flow.branches[index].isOpen {
                let acked = flow.branches[index].ackedOffset
                flow.branches[index].state = .failed(
                    FreightError(error.code, "\(error.message); \(acked) of \(flow.length) bytes acknowledged"),
                    acked: acked
                )
                changed = true
            }
            guard changed else { continue }
            let update = flow.upstreamUpdate()
            flows[id] = flow
            settleLoans(id)
            if let update, !flow.allBranchesFinished {
                send(.ack(id, acked: update.acked, credit: update.credit), to: flow.upstream)
            }
            finishIfComplete(id)
        }
    }

    /// Sends a control frame to a port; a port that is gone drops it.
    func send(_ frame: Frame, to port: Port) {
        switch port {
        case .session(let id):
            sessions[id]?.connection.send(frame)
        case .local(let id):
            if let local = localPorts[id] { eventLoop.execute { local.deliver(frame) } }
        case .peer(let node):
            members[node]?.control?.send(frame)
        }
    }
}
