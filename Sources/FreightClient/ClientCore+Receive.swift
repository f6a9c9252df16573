import FreightCore
import FreightTransport
import FreightWire
import NIOCore

/// A message arriving at this app.
struct Incoming {
    var window: ReceiveWindow
    var continuation: AsyncThrowingStream<BodyChunk, any Error>.Continuation
    var receivedBytes: UInt64 = 0
    var accepted = false
    var endpoints: [UInt64]
    /// What the app can read about the message besides its body (resumes).
    let notes: MessageNotes
    /// The acknowledgement last sent.
    var ackSent: UInt64 = 0
    /// Chunks that failed their checksum and were asked for again (``Limits/chunkResendsMax``).
    var resendRequests = 0
}

extension ClientCore {
    /// The most body bytes an app takes before it acknowledges them, whatever its window.
    static let ackStepBytesMax: UInt64 = 8 << 20

    func openReceived(_ open: Freight_Wire_V1_Open) {
        let header = open.header
        if open.resume {
            // The node says a link on the way broke and the message goes on from `resumed_at`.
            incoming[header.id]?.notes.resumed(at: open.resumedAt)
            return
        }
        // A body lent from one shared buffer is held by no node and costs this app no memory: take it whole.
        let window =
            open.shared && shared != nil
            ? max(header.length, 1)
            // A message across a WAN link: at least the window its gateway asked for (docs/wan.md, "Windows").
            : max(
                UInt64(max(windowBytes, 2 * Int(header.chunkBytes))),
                min(open.windowHint, UInt64(Limits.windowHintMax)))
        admitIncoming(header: header, targets: open.targets, path: open.path, window: window)
    }

    /// Hands a new message to the subscription of the endpoint it is for.
    private func admitIncoming(
        header: Freight_Wire_V1_MessageHeader, targets: [Freight_Wire_V1_EndpointRef], path: [String], window: UInt64
    ) {
        let endpoints = targets.map(\.id)
        let inbox = endpoints.lazy.compactMap { self.inboxes[$0] }.first
        let subscribed = endpoints.lazy.compactMap { id in self.subscriptions[id].map { (id, $0) } }.first
        guard incoming[header.id] == nil, inbox != nil || subscribed != nil else {
            connection?.send(
                .abort(header.id, FreightError(.receiverGone, "app \(label) no longer receives on this endpoint")))
            return
        }
        let (stream, continuation) = AsyncThrowingStream<BodyChunk, any Error>.makeStream()
        let notes = MessageNotes()
        incoming[header.id] = Incoming(
            window: ReceiveWindow(length: header.length, windowBytes: window),
            continuation: continuation,
            endpoints: endpoints,
            notes: notes
        )
        let id = header.id
        let gate = self.gate
        // An app that stops reading a message before its end (its task cancelled, the body dropped) fails it for
        // the sender at once, with what was acknowledged, instead of leaving it waiting.
        continuation.onTermination = { [self] termination in
            if case .cancelled = termination {
                gate.execute {
                    guard let message = self.incoming[id] else { return }
                    self.fail(
                        id,
                        FreightError(
                            .receiverGone,
                            "app \(self.label) stopped reading the message; \(message.window.ackedOffset) of \(message.window.length) bytes acknowledged"
                        ))
                }
            }
        }
        let body = MessageBody(stream: stream) { [self] offset in
            gate.execute { self.consumed(id, offset: offset) }
        }
        let message = IncomingMessage(
            id: id,
            source: header.source,
            destination: header.destination,
            length: header.length,
            contentType: header.contentType,
            attributes: header.attributes,
            path: path,
            replyTo: header.replyTo,
            traceparent: header.traceparent,
            tracestate: header.tracestate,
            filters: header.filters,
            body: body,
            notes: notes,
            failing: { [self] error in gate.execute { self.fail(id, error) } }
        )
        if let inbox {
            // The client's own endpoint (its requests' inbox) takes the message here, on the loop.
            inbox(message)
            return accepted(id)
        }
        guard let (_, refusal) = handOver([message], to: subscribed!.0).first else { return }
        incoming[id] = nil
        connection?.send(.abort(id, refusal))
    }

    /// The app took the message from its subscription: grant the first credit.
    func accepted(_ id: UInt64) {
        if let endpointID = untaken.removeValue(forKey: id) { subscriptions[endpointID]?.waiting -= 1 }
        if let length = smallIncoming[id] {
            // An empty small message is handled once taken.
            if length == 0 { smallIncoming[id] = nil; queueOutcome(id, .delivered) }
            return
        }
        guard var message = incoming[id], !message.accepted else { return }
        message.accepted = true
        incoming[id] = message
        if message.window.length == 0 {
            message.continuation.finish()
            complete(id)
            return
        }
        connection?.send(.ack(id, acked: 0, credit: message.window.creditOffset))
    }

    func dataReceived(_ chunk: DataChunk) {
        guard var message = incoming[chunk.messageID] else { return }
        let count = UInt64(chunk.count)
        do throws(FreightError) {
            // Bytes this app holds already come again after a broken link: dropped quietly.
            guard try message.window.accept(chunk) else { return }
        } catch {
            return fail(chunk.messageID, error)
        }
        guard chunk.checksumMatches else {
            let id = chunk.messageID
            message.window.drop(chunk)
            if askAgain(id, &message) { return }
            checksumFailure = (
                id, FreightError(.checksumMismatch, "chunk at offset \(chunk.offset) failed its CRC32C check")
            )
            // With no frame behind it, the checksum failure is the verdict.
            eventLoop.scheduleTask(in: .milliseconds(200)) { [self] in
                if let failure = checksumFailure, failure.messageID == id {
                    checksumFailure = nil
                    fail(id, failure.error)
                }
            }
            return
        }
        message.receivedBytes += count
        incoming[chunk.messageID] = message
        var offset = chunk.offset
        for piece in chunk.pieces {
            message.continuation.yield(BodyChunk(offset: offset, bytes: piece))
            offset += UInt64(piece.readableBytes)
        }
        if message.receivedBytes == message.window.length {
            message.continuation.finish()
        }
    }

    /// A chunk failed its checksum: a chunk cut mid-stream by a broken link reaches a socket receiver completed with
    /// filler, and comes again once the link resumes. So the sender is asked to send again from what this app holds
    /// (up to ``Limits/chunkResendsMax`` times per message; a sender that cannot fails the message with its reason).
    /// False past the limit: the checksum failure is the verdict.
    func askAgain(_ id: UInt64, _ message: inout Incoming) -> Bool {
        guard message.resendRequests < Limits.chunkResendsMax else { return false }
        message.resendRequests += 1
        incoming[id] = message
        var ack = Freight_Wire_V1_Ack()
        ack.messageID = id
        ack.ackedOffset = message.window.ackedOffset
        ack.creditOffset = message.window.creditOffset
        ack.resendFrom = message.window.ackedOffset
        ack.resendCode = FreightError.Code.checksumMismatch.rawValue
        connection?.send(.ack(ack))
        return true
    }

    /// The app is done with a chunk: acknowledge what is now contiguous, and finish when all is handled.
    func consumed(_ id: UInt64, offset: UInt64) {
        guard var message = incoming[id] else { return }
        let update = message.window.consume(offset: offset)
        incoming[id] = message
        guard let update else { return }
        if message.window.isComplete {
            complete(id)
        } else if update.acked - message.ackSent >= min(message.window.windowBytes / 4, Self.ackStepBytesMax)
            || message.window.isCaughtUp
        {
            // Acknowledging every piece costs a frame on every hop; a quarter window at a time keeps the sender
            // three quarters of a window ahead and the pipe full. A window sized for a WAN (100 MB) acknowledges
            // every 8 MiB: a detour's bytes count in flight until the message's acknowledgement covers them
            // (docs/wan.md, "Over every gateway pair"). An app that has taken everything that arrived
            // acknowledges at once: a node on the way may grant less than this app's window (a message opened
            // under memory pressure, docs/wan.md), and its sender waits for this acknowledgement to send more.
            incoming[id]?.ackSent = update.acked
            connection?.send(.ack(id, acked: update.acked, credit: update.credit))
        }
    }

    private func complete(_ id: UInt64) {
        guard incoming.removeValue(forKey: id) != nil else { return }
        var done = Freight_Wire_V1_Done()
        done.messageID = id
        // DONE says every byte is held: no final ACK before it (one frame fewer on every hop, per message).
        connection?.send(.done(done))
    }

    func fail(_ id: UInt64, _ error: FreightError) {
        guard let message = incoming.removeValue(forKey: id) else { return }
        message.continuation.finish(throwing: error)
        connection?.send(.abort(id, error, ackedOffset: message.window.ackedOffset))
    }
}
