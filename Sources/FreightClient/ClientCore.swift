import FreightCore
import FreightTransport
import FreightWire
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

/// The client's state, confined to its event loop: requests waiting for replies, messages being sent and received.
final class ClientCore: FrameConnectionDelegate, @unchecked Sendable {
    let eventLoop: any EventLoop
    /// The loop while the client may use it: what an app starts at any time goes through here (``LoopGate``).
    let gate: LoopGate
    let label: String
    let windowBytes: Int
    var connection: FrameConnection?
    var nodeHello: Freight_Wire_V1_Hello? {
        didSet { source = "\(nodeHello?.name ?? "")/\(label)" }
    }
    /// What this app's messages say they come from: NODE/LABEL (made once, not per message).
    var source = ""
    var helloPromise: EventLoopPromise<Freight_Wire_V1_Hello>?
    var closedError: FreightError?
    /// Shared memory with the node, when it accepted this app's pools.
    var shared: ClientShared?

    var nextRequestID: UInt64 = 1
    var requests: [UInt64: EventLoopPromise<Freight_Wire_V1_Reply>] = [:]
    var subscriptions: [UInt64: Subscriber] = [:]
    var incoming: [UInt64: Incoming] = [:]
    var outgoing: [UInt64: Outgoing] = [:]
    /// Small messages (ClientCore+Small): bytes counted against the node's eager budget, and the SMALL and
    /// OUTCOMES frames being gathered this turn.
    var smallOutstanding: UInt64 = 0
    /// What the node takes of small messages from this app (its HELLO's eager budget and sizes).
    var nodeSmall = SmallTerms.none
    var pendingSmall: [SmallMessage] = []
    /// The extra header fields of the last small message sent, shared by the next ones that carry the same.
    var lastSmallExtras: SmallExtras?
    var pendingSmallBytes = 0
    var pendingOutcomes: [SmallOutcome] = []
    var smallFlushScheduled = false
    /// Endpoints of the client's own, whose messages a handler takes on the loop (its requests' inbox).
    var inboxes: [UInt64: (IncomingMessage) -> Void] = [:]
    /// Small messages handed to the app and not yet read or failed, with their lengths.
    var smallIncoming: [UInt64: UInt64] = [:]
    /// Messages (small or not) waiting in a subscription's stream for the app to take them, by endpoint: a
    /// subscription cancelled before the app took them fails them for their senders at once.
    var untaken: [UInt64: UInt64] = [:]
    var messageIDs = IDSequence()
    /// Where a lent file's chunks are read for their checksums (one chunk, reused).
    var checksumScratch = ByteBuffer()
    /// A chunk that failed its checksum, judged when the next frame arrives: a relay whose sender vanished
    /// mid-chunk completes that chunk with filler and sends the message's ABORT right behind it, and the ABORT's
    /// reason is the one to report.
    var checksumFailure: (messageID: UInt64, error: FreightError)?

    init(eventLoop: any EventLoop, label: String, windowBytes: Int) {
        self.eventLoop = eventLoop
        self.gate = LoopGate(eventLoop: eventLoop)
        self.label = label
        self.windowBytes = windowBytes
        self.helloPromise = eventLoop.makePromise()
        self.source = "/\(label)"
    }

    /// Runs `body` on the client's event loop: at once when the caller is on it already (a task that prefers
    /// ``FreightClient/executor``), queued otherwise.
    func onLoop(_ body: @escaping @Sendable () -> Void) {
        if eventLoop.inEventLoop { body() } else { gate.execute(body) }
    }

    // MARK: Requests

    func request(_ kind: Freight_Wire_V1_Request.OneOf_Kind) -> EventLoopFuture<Freight_Wire_V1_Reply> {
        eventLoop.assertInEventLoop()
        if let closedError { return eventLoop.makeFailedFuture(closedError) }
        var request = Freight_Wire_V1_Request()
        request.requestID = nextRequestID
        request.kind = kind
        nextRequestID += 1
        let promise = eventLoop.makePromise(of: Freight_Wire_V1_Reply.self)
        requests[request.requestID] = promise
        connection?.send(.request(request))
        return promise.futureResult.flatMapThrowing { reply in
            guard reply.errorCode == 0 else { throw FreightError(.init(rawValue: reply.errorCode), reply.error) }
            return reply
        }
    }

    // MARK: Frames from the node

    func connection(_ connection: FrameConnection, didReceive frame: Frame) {
        if let failure = checksumFailure {
            checksumFailure = nil
            if case .abort(let abort) = frame, abort.messageID == failure.messageID {
                return abortReceived(abort)
            }
            fail(failure.messageID, failure.error)
        }
        switch frame {
        case .hello(let hello):
            nodeHello = hello
            nodeSmall = SmallTerms(hello)
            connection.smallFrameBytesMax = nodeSmall.frameBytesMax
            helloPromise?.succeed(hello)
            helloPromise = nil
        case .reply(let reply):
            requests.removeValue(forKey: reply.requestID)?.succeed(reply)
        case .open(let open):
            openReceived(open)
        case .data(let chunk):
            dataReceived(chunk)
        case .ack(let ack):
            ackReceived(ack)
        case .done(let done):
            doneReceived(done)
        case .abort(let abort):
            // Message 0 before the node's hello: the node refused this app, and says why.
            if abort.messageID == 0, let promise = helloPromise {
                helloPromise = nil
                return promise.fail(abort.error)
            }
            abortReceived(abort)
        case .shared(let chunk):
            sharedChunkReceived(chunk)
        case .release(let regions):
            releaseReceived(regions)
        case .small(let batch):
            smallReceived(batch)
        case .outcomes(let outcomes):
            outcomesReceived(outcomes)
        case .request, .endpoints, .members, .routes, .functions:
            connection.close()
        }
    }

    func connectionDidClose(_ connection: FrameConnection, error: (any Error)?) {
        let reason = FreightError(
            .connectionFailed,
            "connection to node \(nodeHello?.name ?? "") lost\(error.map { ": \($0)" } ?? "")"
        )
        closedError = reason
        shared?.close()
        helloPromise?.fail(reason)
        helloPromise = nil
        for promise in requests.values { promise.fail(reason) }
        requests = [:]
        for subscriber in subscriptions.values { subscriber.continuation.finish(throwing: reason) }
        subscriptions = [:]
        for message in incoming.values { message.continuation.finish(throwing: reason) }
        incoming = [:]
        smallIncoming = [:]
        untaken = [:]
        for transfer in outgoing.values { transfer.fail(reason) }
        outgoing = [:]
    }

    // MARK: Subscriptions

    func subscribe(endpointID: UInt64, continuation: Subscriber.Continuation) {
        subscriptions[endpointID] = Subscriber(continuation: continuation)
    }

    func unsubscribe(endpointID: UInt64) {
        guard let subscriber = subscriptions.removeValue(forKey: endpointID) else { return }
        subscriber.continuation.finish()
        _ = request(.unregister(.with { $0.endpointID = endpointID }))
        // What waits in the stream would wait for ever (no credit goes to its sender until it is taken): it fails
        // now, with the reason, for its sender.
        let reason = FreightError(
            .receiverGone, "app \(label) stopped receiving on this endpoint before it took the message")
        for id in untaken.filter({ $0.value == endpointID }).map(\.key) {
            untaken[id] = nil
            if smallIncoming[id] != nil {
                smallHandled(id, reason)
            } else {
                fail(id, reason)
            }
        }
    }

    /// `id` waits in the stream of the subscription of `endpointID` until the app takes it.
    /// Hands messages to a subscription in one batch (a frame's worth: one wake-up of the app's task, not one per
    /// message), within ``Limits/messagesPerConnectionMax`` waiting untaken; returns those it did not take, each
    /// with the reason.
    func handOver(_ messages: [IncomingMessage], to endpointID: UInt64) -> [(IncomingMessage, FreightError)] {
        guard let index = subscriptions.index(forKey: endpointID) else {
            return messages.map { ($0, FreightError(.receiverGone, "app \(label) stopped receiving")) }
        }
        let room = max(0, Limits.messagesPerConnectionMax - subscriptions.values[index].waiting)
        var refused: [(IncomingMessage, FreightError)] = []
        var batch = messages
        if batch.count > room {
            let full = FreightError(
                .resourceExhausted, "app \(label) has \(Limits.messagesPerConnectionMax) messages waiting to be read")
            refused = batch[room...].map { ($0, full) }
            batch.removeSubrange(room...)
        }
        guard !batch.isEmpty else { return refused }
        switch subscriptions.values[index].continuation.yield(batch) {
        case .enqueued:
            subscriptions.values[index].waiting += batch.count
            for message in batch { untaken[message.id] = endpointID }
            return refused
        default:
            return refused + batch.map { ($0, FreightError(.receiverGone, "app \(label) stopped receiving")) }
        }
    }
}

/// A subscription as the client keeps it: the stream its messages go into, in batches, and how many of them wait
/// there untaken.
struct Subscriber {
    typealias Continuation = AsyncThrowingStream<[IncomingMessage], any Error>.Continuation
    let continuation: Continuation
    var waiting = 0
}
