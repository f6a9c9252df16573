import FreightCore
import NIOCore

/// One message of a batch sent with ``FreightClient/send(_:)``.
public struct OutgoingMessage: Sendable {
    public var address: String
    public var body: OutgoingBody
    public var options: SendOptions

    public init(to address: String, body: OutgoingBody, options: SendOptions = SendOptions()) {
        self.address = address
        self.body = body
        self.options = options
    }
}

extension FreightClient {
    /// Messages a batch may hold (``send(_:)``): as many as a client keeps in flight by default for small bodies.
    public static let batchMessagesMax = Limits.messagesPerConnectionMax

    /// Sends `messages` together and waits until each has its outcome: its delivery report, or why it failed. The
    /// outcomes are in the order of the messages. Each message is sent, delivered and confirmed as if it were sent
    /// alone with ``send(to:body:options:)`` (a failed one does not stop the others); the batch only saves the
    /// sending task a wake-up per message, which is most of what a small message costs its sender
    /// (docs/small-messages-and-files.md, "Batches of sends").
    ///
    /// At most ``batchMessagesMax`` messages; past the node's own limit of messages in flight from this app, the
    /// rest fail with the node's reason, as they would sent one by one.
    public func send(_ messages: [OutgoingMessage]) async throws -> [Result<DeliveryReport, FreightError>] {
        guard messages.count <= Self.batchMessagesMax else {
            throw FreightError(
                .invalidArgument, "a batch of \(messages.count) messages (at most \(Self.batchMessagesMax))")
        }
        guard !messages.isEmpty else { return [] }
        // Checked here, off the client's thread: a message that cannot be sent has its outcome at once.
        var sends: [(destination: Address, length: UInt64, options: SendOptions)?] = []
        var outcomes: [Result<DeliveryReport, FreightError>?] = Array(repeating: nil, count: messages.count)
        sends.reserveCapacity(messages.count)
        for (index, message) in messages.enumerated() {
            do {
                let options = message.options.withCurrentTrace()
                let (destination, length) = try prepared(message.address, body: message.body, options: options)
                sends.append((destination, length, options))
            } catch {
                sends.append(nil)
                outcomes[index] = .failure(
                    (error as? FreightError) ?? FreightError(.invalidArgument, "\(error)"))
            }
        }
        let core = self.core
        let (ready, planned) = (outcomes, sends)
        return await withUnsafeContinuation { continuation in
            let start: @Sendable () -> Void = {
                let batch = SendBatch(outcomes: ready, continuation: continuation)
                for (index, send) in planned.enumerated() {
                    guard let send else { continue }
                    core.send(
                        to: send.destination, body: messages[index].body, length: send.length, options: send.options,
                        completion: .batch(batch, index))
                }
                batch.started()
            }
            if core.eventLoop.inEventLoop {
                start()
            } else if !core.gate.execute(start) {
                let closed = FreightError(.cancelled, LoopGate.closedReason)
                continuation.resume(returning: ready.map { $0 ?? .failure(closed) })
            }
        }
    }
}

/// The outcomes of a batch of sends as they come, on the client's event loop; the task that sent it resumes once,
/// with all of them.
final class SendBatch: @unchecked Sendable {  // confined to the client's event loop
    private var outcomes: [Result<DeliveryReport, FreightError>?]
    private var waiting: Int
    private var starting = true
    private let continuation: UnsafeContinuation<[Result<DeliveryReport, FreightError>], Never>

    init(
        outcomes: [Result<DeliveryReport, FreightError>?],
        continuation: UnsafeContinuation<[Result<DeliveryReport, FreightError>], Never>
    ) {
        self.outcomes = outcomes
        self.waiting = outcomes.count(where: { $0 == nil })
        self.continuation = continuation
    }

    func finish(_ index: Int, _ outcome: Result<DeliveryReport, FreightError>) {
        guard outcomes[index] == nil else { return }
        outcomes[index] = outcome
        waiting -= 1
        if waiting == 0, !starting { resume() }
    }

    /// Every message was handed to the client (some may have ended meanwhile).
    func started() {
        starting = false
        if waiting == 0 { resume() }
    }

    private func resume() {
        // The outcomes stay: a second report for a message that has one is ignored above, not out of range.
        continuation.resume(returning: outcomes.map { $0! })
    }
}
