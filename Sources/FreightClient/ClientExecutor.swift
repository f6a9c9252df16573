import FreightCore
import NIOCore
import Synchronization

/// The client's event loop as a Swift task executor (``FreightClient/executor``). A task that prefers it
/// (`withTaskExecutorPreference(client.executor) { … }`, `Task(executorPreference: client.executor) { … }`) runs
/// its code on the client's own thread, where the client does its work: a send, a request or the next message of a
/// subscription then resumes it without a hop between threads, which costs more than the rest of a small
/// message's work in the app (docs/small-messages-and-files.md). What such a task does between its awaits holds up
/// the client's thread, so long computations and blocking calls belong on the default executor.
///
/// Once the client is closed, jobs run on the default executor: a task that still prefers a closed client's
/// executor goes on, and ends.
public final class ClientExecutor: TaskExecutor {
    let gate: LoopGate

    init(gate: LoopGate) { self.gate = gate }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        if !gate.execute({ job.runSynchronously(on: self.asUnownedTaskExecutor()) }) {
            globalConcurrentExecutor.enqueue(job)
        }
    }
}

/// The client's event loop while the client may still use it. Work an app starts at any time (a subscription or a
/// message given up, a body writer woken, a shared buffer dropped, a task's next job) goes through here: once the
/// client closed a loop of its own, that work is dropped (or, for a task, run elsewhere) instead of being handed
/// to a loop that is shutting down, which NIO refuses.
final class LoopGate: Sendable {
    let eventLoop: any EventLoop
    /// Checked and set under the lock, so that nothing is queued on the loop once its shutdown began.
    private let open = Mutex(true)

    init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    /// Queues `body` on the loop; false, and `body` dropped, once the client closed it.
    @discardableResult
    func execute(_ body: @escaping @Sendable () -> Void) -> Bool {
        open.withLock { open in
            if open { eventLoop.execute(body) }
            return open
        }
    }

    /// The client is shutting its own event loop down: nothing is queued on it from now on.
    func close() { open.withLock { $0 = false } }

    static let closedReason = "the client is closed"

    /// Runs `body` on the loop and waits for the future it returns; fails with the client's reason once it closed
    /// (a future of a loop that is gone would never complete).
    func flatSubmit<T: Sendable>(_ body: @escaping @Sendable () -> EventLoopFuture<T>) async throws -> T {
        try await withUnsafeThrowingContinuation { continuation in
            if !execute({ body().whenComplete { continuation.resume(with: $0) } }) {
                continuation.resume(throwing: FreightError(.cancelled, Self.closedReason))
            }
        }
    }

    /// Runs `body` on the loop and returns what it returns; fails with the client's reason once it closed.
    func submit<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        let loop = eventLoop
        return try await flatSubmit {
            do { return loop.makeSucceededFuture(try body()) } catch { return loop.makeFailedFuture(error) }
        }
    }
}
