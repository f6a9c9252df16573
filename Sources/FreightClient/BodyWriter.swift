import FreightCore
import NIOCore
import Synchronization

/// A body written while it is being sent: bytes that arrive from elsewhere (a gRPC stream, a pipe) and go out as
/// the receiver's credit allows. ``write(_:)`` suspends while more than `limitBytes` are queued, so a slow
/// receiver slows the writer instead of growing a queue. Send it with ``OutgoingBody/stream(_:length:)``.
public final class BodyWriter: Sendable {
    struct State {
        var queue: [ByteBuffer] = []
        var queuedBytes = 0
        var finished = false
        var failure: FreightError?
        var waiting: CheckedContinuation<Void, any Error>?
        var wake: (@Sendable () -> Void)?
    }

    let state = Mutex(State())
    public let limitBytes: Int

    public init(limitBytes: Int = 8 << 20) {
        self.limitBytes = max(limitBytes, 1)
    }

    /// Queues `bytes`; suspends while the queue is over its limit. Throws once the message has failed.
    public func write(_ bytes: ByteBuffer) async throws {
        let wake: (@Sendable () -> Void)? = try state.withLock { state throws(FreightError) in
            if let failure = state.failure { throw failure }
            guard !state.finished else { throw FreightError(.invalidArgument, "write after finish") }
            if bytes.readableBytes > 0 {
                state.queue.append(bytes)
                state.queuedBytes += bytes.readableBytes
            }
            defer { state.wake = nil }
            return state.wake
        }
        wake?()
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let resume: Result<Void, FreightError>? = state.withLock { state in
                if let failure = state.failure { return .failure(failure) }
                if state.queuedBytes <= limitBytes { return .success(()) }
                state.waiting = continuation
                return nil
            }
            if let resume { continuation.resume(with: resume.mapError { $0 as any Error }) }
        }
    }

    /// No more bytes follow.
    public func finish() {
        let wake = state.withLock { state in
            state.finished = true
            defer { state.wake = nil }
            return state.wake
        }
        wake?()
    }

    /// Ends the body with an error: the message is aborted with it, and writers are resumed with it.
    public func fail(_ error: FreightError) {
        let (waiting, wake) = state.withLock { state in
            if state.failure == nil { state.failure = error }
            state.queue = []
            state.queuedBytes = 0
            defer {
                state.waiting = nil
                state.wake = nil
            }
            return (state.waiting, state.wake)
        }
        waiting?.resume(throwing: error)
        wake?()
    }

    enum Take {
        case bytes(ByteBuffer)
        /// Nothing queued yet; `wake` runs when there is.
        case empty
        case finished
        case failed(FreightError)
    }

    /// At most `max` queued bytes, in order; when nothing is queued, `wake` is kept to run on the next write.
    func take(max: Int, wake: @escaping @Sendable () -> Void) -> Take {
        let (result, resume) = state.withLock { state -> (Take, CheckedContinuation<Void, any Error>?) in
            if let failure = state.failure { return (.failed(failure), nil) }
            guard !state.queue.isEmpty else {
                if state.finished { return (.finished, nil) }
                state.wake = wake
                return (.empty, nil)
            }
            var first = state.queue[0]
            let piece: ByteBuffer
            if first.readableBytes <= max {
                piece = state.queue.removeFirst()
            } else {
                piece = first.readSlice(length: max)!
                state.queue[0] = first
            }
            state.queuedBytes -= piece.readableBytes
            var resume: CheckedContinuation<Void, any Error>?
            if state.queuedBytes <= limitBytes, let waiting = state.waiting {
                state.waiting = nil
                resume = waiting
            }
            return (.bytes(piece), resume)
        }
        resume?.resume()
        return result
    }
}
