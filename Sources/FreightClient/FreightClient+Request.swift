import FreightCore
import NIOCore
import Synchronization

/// Request and reply (docs/small-messages-and-files.md, "Request and reply"): a request carries `reply_to`, an
/// address of its client's inbox (`_inbox/NODE/ID/N`, N counting the client's requests), which the client receives
/// on with one pattern endpoint (`_inbox/NODE/ID/*`) registered at its first request. The responder sends its reply
/// to that address as any message; the client's event loop hands it straight to the request waiting for number N.
/// A reply is a message like any other: a small one travels whole (SMALL), with its delivery reported to the
/// responder.
extension FreightClient {
    /// Sends `body` to `address` as a request and returns its first reply, or throws when the request fails or no
    /// reply came within `timeout` (``FreightError/Code/timedOut``).
    public func request(
        to address: String, body: OutgoingBody, options: SendOptions = SendOptions(),
        timeout: Duration = .seconds(10)
    ) async throws -> IncomingMessage {
        let inbox = try await requests.inbox(of: self)
        let number = requests.nextNumber()
        var asked = options
        asked.replyTo = "\(inbox)/\(number)"
        let sent = asked.withCurrentTrace()
        let (destination, length) = try prepared(address, body: body, options: sent)
        let (core, requests) = (self.core, self.requests)
        let nanos = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
        let deadline = NIODeadline.now() + .nanoseconds(nanos)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                guard requests.start(number, to: address, deadline: deadline, continuation) else { return }
                core.onLoop {
                    core.send(to: destination, body: body, length: length, options: sent).whenFailure { error in
                        requests.finish(number, .failure(error))
                    }
                }
            }
        } onCancel: {
            requests.finish(number, .failure(CancellationError()))
        }
    }

    /// Sends `body` as the reply to `message` (to its ``IncomingMessage/replyTo``); throws when it asked for none.
    @discardableResult
    public func reply(to message: IncomingMessage, body: OutgoingBody, options: SendOptions = SendOptions())
        async throws -> DeliveryReport
    {
        guard !message.replyTo.isEmpty else {
            throw FreightError(
                .invalidArgument, "message \(String(message.id, radix: 16)) from \(message.source) asks for no reply")
        }
        return try await send(to: message.replyTo, body: body, options: options)
    }
}

/// A client's requests waiting for replies, and its inbox.
final class Requests: Sendable {
    private struct Waiting {
        var continuation: CheckedContinuation<IncomingMessage, any Error>
        var address: String
        var deadline: NIODeadline
    }

    private struct State {
        var next: UInt64 = 1
        var waiting: [UInt64: Waiting] = [:]
        var inbox: Task<String, any Error>?
        var closed: FreightError?
    }

    /// How often requests past their time are failed.
    static let expiryInterval = TimeAmount.milliseconds(50)

    private let state = Mutex(State())

    /// The inbox prefix, registered at the first request.
    func inbox(of client: FreightClient) async throws -> String {
        let task = try state.withLock { state -> Task<String, any Error> in
            if let closed = state.closed { throw closed }
            if let inbox = state.inbox { return inbox }
            let task = Task { try await self.open(client) }
            state.inbox = task
            return task
        }
        return try await task.value
    }

    private func open(_ client: FreightClient) async throws -> String {
        let prefix = "\(Limits.inboxSegment)/\(client.nodeName)/\(String(UInt64.random(in: 1...UInt64.max), radix: 16))"
        let core = client.core
        let reply = try await core.gate.flatSubmit {
            core.request(.register(.with { $0.pattern = "\(prefix)/*" }))
        }
        try await core.gate.submit {
            core.inboxes[reply.endpointID] = { [weak self] message in self?.arrived(message) }
            core.eventLoop.scheduleRepeatedTask(initialDelay: Self.expiryInterval, delay: Self.expiryInterval) {
                [weak self] task in
                if self?.expire() != true { task.cancel() }
            }
        }
        return prefix
    }

    func nextNumber() -> UInt64 {
        state.withLock { state in
            defer { state.next += 1 }
            return state.next
        }
    }

    /// Waits for request `number`'s reply with `continuation`; false (the continuation resumed already) when the
    /// client is closed or the task cancelled.
    func start(
        _ number: UInt64, to address: String, deadline: NIODeadline,
        _ continuation: CheckedContinuation<IncomingMessage, any Error>
    ) -> Bool {
        let refusal: (any Error)? = state.withLock { state in
            if let closed = state.closed { return closed }
            if Task.isCancelled { return CancellationError() }
            state.waiting[number] = Waiting(continuation: continuation, address: address, deadline: deadline)
            return nil
        }
        if let refusal { continuation.resume(throwing: refusal) }
        return refusal == nil
    }

    /// Ends request `number` with `result`, when it still waits.
    func finish(_ number: UInt64, _ result: Result<IncomingMessage, any Error>) {
        let waiting = state.withLock { $0.waiting.removeValue(forKey: number) }
        waiting?.continuation.resume(with: result)
    }

    /// A message arrived in the inbox (on the client's loop): the reply to the request its address names. A late or
    /// stray one is read and dropped, so its sender's report says delivered.
    private func arrived(_ message: IncomingMessage) {
        let number = message.destination.split(separator: "/").last.flatMap { UInt64($0) }
        let waiting = number.flatMap { number in state.withLock { $0.waiting.removeValue(forKey: number) } }
        guard let waiting else {
            Task { _ = try? await message.drain() }
            return
        }
        waiting.continuation.resume(returning: message)
    }

    /// Fails requests past their time; false once the client is closed.
    private func expire() -> Bool {
        let now = NIODeadline.now()
        let (expired, open) = state.withLock { state -> ([Waiting], Bool) in
            let late = state.waiting.filter { $0.value.deadline <= now }
            for number in late.keys { state.waiting[number] = nil }
            return (Array(late.values), state.closed == nil)
        }
        for waiting in expired {
            waiting.continuation.resume(
                throwing: FreightError(.timedOut, "no reply to the request to \(waiting.address) in time"))
        }
        return open
    }

    /// Fails every request waiting, and any later one.
    func close(_ error: FreightError) {
        let waiting = state.withLock { state -> [Waiting] in
            if state.closed == nil { state.closed = error }
            state.inbox?.cancel()
            defer { state.waiting = [:] }
            return Array(state.waiting.values)
        }
        for entry in waiting { entry.continuation.resume(throwing: error) }
    }
}
