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
    let eventLoop: any EventLoop
    /// Whether the client's event loop may still take jobs; checked and set under the lock, so that no job is
    /// handed to a loop that is shutting down.
    private let open = Mutex(true)

    init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let taken = open.withLock { open in
            if open { eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) } }
            return open
        }
        if !taken { globalConcurrentExecutor.enqueue(job) }
    }

    /// The client is closing its event loop: jobs go to the default executor from now on.
    func close() { open.withLock { $0 = false } }
}
