import FreightCore
import FreightTransport
import FreightWire
import NIOCore

/// Small messages (docs/small-messages-and-files.md): a body of at most `Limits.smallBodyBytesMax` goes whole in a
/// SMALL frame with its header, gathered with the others sent in the same turn, while the node's eager budget has
/// room; its outcome comes back in an OUTCOMES frame. A RESEND outcome sends it again as OPEN and DATA.
extension ClientCore {
    /// Whether a message goes small: a body in memory (bytes, generated, a repeated block) of at most the node's
    /// largest small body (`Limits.smallBodyBytesMax`, 16 KiB for a node that predates it), to a node that takes
    /// SMALL and has budget left.
    func goesSmall(_ body: OutgoingBody, length: UInt64) -> Bool {
        guard nodeSmall.takes(length: length, outstanding: smallOutstanding) else { return false }
        switch body {
        // A shared buffer is handed to the node as it is (the app gets it back when the receivers hold it): a
        // repeated block only lends its bytes, so it may be copied.
        case .bytes, .pattern, .repeating, .repeatingShared: return true
        case .file, .stream, .shared, .device: return false
        }
    }

    func sendSmall(_ transfer: Outgoing, header: Freight_Wire_V1_MessageHeader) {
        let length = Int(header.length)
        var body = connection?.channel.allocator.buffer(capacity: length) ?? ByteBuffer()
        var readError: Int32 = 0
        body.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { whole in
            let raw = UnsafeMutableRawBufferPointer(rebasing: whole[..<length])
            switch transfer.body {
            case .bytes(let buffer):
                buffer.withUnsafeReadableBytes { raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[..<length])) }
            case .repeating(let block, _):
                block.withUnsafeReadableBytes { raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[..<length])) }
            case .repeatingShared(let block, _):
                block.withUnsafeBytes { raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[..<length])) }
            default:
                readError = fill(transfer, at: 0, into: raw)
            }
            return length
        }
        guard readError == 0 else { return failRead(transfer, at: 0, readError) }
        // A sender's messages mostly carry the same extra fields (content type, attributes): encoded once.
        let extras = SmallExtras.reusing(lastSmallExtras, for: header)
        if let extras { lastSmallExtras = extras }
        let small = SmallMessage(
            id: header.id, source: header.source, destination: header.destination, extras: extras, body: body,
            crc32c: CRC32C.checksum(body))
        transfer.smallHeader = header
        transfer.smallCost = Limits.smallCost(length: header.length)
        smallOutstanding += transfer.smallCost
        pendingSmall.append(small)
        pendingSmallBytes += length + Self.smallEntryAllowanceBytes
        if pendingSmallBytes >= nodeSmall.batchBytesMax { flushSmall() }
        scheduleSmallFlush()
    }

    /// Entry bytes beyond the body a batch counts before it is closed (header, framing).
    static let smallEntryAllowanceBytes = 256
    static let outcomesPerFrameMax = 256

    func outcomesReceived(_ outcomes: [SmallOutcome]) {
        // By index: a copy of each outcome costs a retain and a release of each of its strings.
        for index in outcomes.indices {
            let id = outcomes[index].messageID
            guard let transfer = outgoing[id], transfer.smallCost > 0 else { continue }
            smallOutstanding -= min(smallOutstanding, transfer.smallCost)
            transfer.smallCost = 0
            switch outcomes[index].kind {
            case .delivered:
                outgoing[id] = nil
                transfer.onProgress?(transfer.window.length)
                let delivery = outcomes[index].delivery
                transfer.completion.succeed(
                    DeliveryReport(
                        messageID: id, destination: transfer.destination, bytes: transfer.window.length,
                        seconds: Double((NIODeadline.now() - transfer.started).nanoseconds) / 1e9,
                        deliveries: [
                            DeliveryReport.Delivery(
                                node: delivery.endpoint.node, endpointID: delivery.endpoint.id,
                                address: delivery.address, app: delivery.app, path: delivery.path)
                        ], failures: []))
            case .resend:
                // Not taken as a small message on the way (nothing was delivered): as OPEN and DATA.
                guard let header = transfer.smallHeader else { continue }
                transfer.smallHeader = nil
                var open = Freight_Wire_V1_Open()
                open.header = header
                if let error = connection?.send(.open(open)) {
                    outgoing[id] = nil
                    transfer.fail(error)
                }
            case .failed:
                outgoing[id] = nil
                transfer.fail(outcomes[index].error)
            }
        }
    }

    /// A SMALL frame from the node: each message is checked and handed to its subscription whole; its outcome
    /// goes back once the app took its body (or failed it).
    func smallReceived(_ messages: consuming [SmallMessage]) {
        // Each moved out of the frame's list, not copied.
        var messages = messages
        messages.reverseByMoving()
        // Each subscription's messages of this frame, handed over together at its end.
        var batches: [(endpointID: UInt64, messages: [IncomingMessage])] = []
        while let small = messages.popLast() {
            let id = small.id
            guard CRC32C.checksum(small.body) == small.crc32c else {
                // Nothing was taken: the sender sends it again as OPEN and DATA, whose chunks are asked for again
                // if they fail too.
                queueOutcome(id, .resend)
                continue
            }
            let inbox = inboxes[small.targetID]
            guard smallIncoming[id] == nil, incoming[id] == nil, inbox != nil || subscriptions[small.targetID] != nil
            else {
                queueOutcome(
                    id, .failed, FreightError(.receiverGone, "app \(label) no longer receives on this endpoint"))
                continue
            }
            let chunk =
                small.length == 0
                // A copy of its own: a slice would keep the whole read buffer it arrived in.
                ? nil : BodyChunk(offset: 0, bytes: ByteBuffer(buffer: small.body))
            // The extra fields read one by one from the shared ones: no copy of a whole header.
            let extras = small.extras
            let message = IncomingMessage(
                id: id, source: small.source, destination: small.destination, length: small.length,
                contentType: extras?.header.contentType ?? "", attributes: extras?.header.attributes ?? [:],
                path: small.path, replyTo: extras?.header.replyTo ?? "", traceparent: extras?.header.traceparent ?? "",
                tracestate: extras?.header.tracestate ?? "", filters: extras?.header.filters ?? [],
                body: MessageBody(whole: chunk) { [self] _ in
                    if eventLoop.inEventLoop {
                        smallHandled(id, nil)
                    } else {
                        gate.execute { self.smallHandled(id, nil) }
                    }
                },
                // A small message is never resumed: nothing is ever noted.
                notes: MessageNotes.none,
                failing: { [self] error in gate.execute { self.smallHandled(id, error) } })
            smallIncoming[id] = small.length
            if let inbox {
                inbox(message)
                accepted(id)
                continue
            }
            if let index = batches.firstIndex(where: { $0.endpointID == small.targetID }) {
                batches[index].messages.append(message)
            } else {
                batches.append((small.targetID, [message]))
            }
        }
        for batch in batches {
            for (message, refusal) in handOver(batch.messages, to: batch.endpointID) {
                smallHandled(message.id, refusal)
            }
        }
    }

    /// The app read a small message's body (nil), or failed it: its outcome goes to the node.
    func smallHandled(_ id: UInt64, _ error: FreightError?) {
        guard smallIncoming.removeValue(forKey: id) != nil else { return }
        if let error {
            queueOutcome(id, .failed, error)
        } else {
            queueOutcome(id, .delivered)
        }
    }

    func queueOutcome(_ id: UInt64, _ kind: SmallOutcome.Kind, _ error: FreightError? = nil) {
        pendingOutcomes.append(error.map { SmallOutcome(id, failed: $0) } ?? SmallOutcome(id, kind))
        if pendingOutcomes.count >= Self.outcomesPerFrameMax { flushSmall() }
        scheduleSmallFlush()
    }

    private func scheduleSmallFlush() {
        guard !smallFlushScheduled else { return }
        smallFlushScheduled = true
        eventLoop.execute { [self] in
            smallFlushScheduled = false
            flushSmall()
        }
    }

    func flushSmall() {
        guard !pendingOutcomes.isEmpty || !pendingSmall.isEmpty else { return }
        if !pendingOutcomes.isEmpty {
            let outcomes = pendingOutcomes
            pendingOutcomes = []
            _ = connection?.sendSplitting(outcomes, as: Frame.outcomes)
        }
        if !pendingSmall.isEmpty {
            let batch = pendingSmall
            pendingSmall = []
            pendingSmallBytes = 0
            write(batch)
        }
        // At once: the batch is the turn's messages already, and the node starts on it while this app goes on.
        connection?.flushNow()
    }

    /// SMALL frames, split where headers make one too large; a message no frame takes fails.
    private func write(_ messages: [SmallMessage]) {
        guard let connection else { return }
        let error = FreightError(.resourceExhausted, "a small message does not fit a SMALL frame")
        for message in connection.sendSplitting(messages, as: Frame.small) {
            guard let transfer = outgoing.removeValue(forKey: message.id) else { continue }
            smallOutstanding -= min(smallOutstanding, transfer.smallCost)
            transfer.fail(error)
        }
    }
}
