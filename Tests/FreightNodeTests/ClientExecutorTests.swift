import FreightCore
import FreightTesting
import NIOCore
import Testing

@testable import FreightClient

/// Tasks that prefer a client's executor (docs/small-messages-and-files.md) run on the client's own thread and
/// send, receive and request as any other task does; once the client is closed they still run to their end.
@Suite(.serialized) struct ClientExecutorTests {
    @Test(.timeLimit(.minutes(2))) func tasksOnTheClientsThreadSendReceiveAndRequest() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "exec") { fabric in
            let responder = try await FreightClient.connect(to: fabric.socket(1), label: "responder")
            let requester = try await FreightClient.connect(to: fabric.socket(0), label: "requester")
            let inbox = try await responder.receive("svc/echo")
            try await fabric.waitForEndpoints(try Address("svc/echo"), count: 1)
            // The responder's loop on its client's thread: every reply sent from there.
            let serving = Task(executorPreference: responder.executor) {
                var served = 0
                for try await request in inbox {
                    #expect(responder.core.eventLoop.inEventLoop, "the responder runs on its client's thread")
                    let body = try await request.collect(upTo: 4096)
                    // Requests are answered; plain messages only read.
                    if !request.replyTo.isEmpty { try await responder.reply(to: request, body: .bytes(body)) }
                    served += 1
                }
                return served
            }
            let answered = try await withTaskExecutorPreference(requester.executor) {
                var answered = 0
                for index in 0..<200 {
                    #expect(requester.core.eventLoop.inEventLoop, "the requester runs on its client's thread")
                    let text = "request \(index)"
                    let reply = try await requester.request(to: "svc/echo", body: .bytes(ByteBuffer(string: text)))
                    if String(buffer: try await reply.collect(upTo: 4096)) == text { answered += 1 }
                }
                return answered
            }
            #expect(answered == 200, "each request got its own reply")
            // Sends in parallel from tasks on the client's thread, each with its delivery report.
            let delivered = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<8 {
                    group.addTask(executorPreference: requester.executor) {
                        var delivered = 0
                        for _ in 0..<50 {
                            let report = try await requester.send(
                                to: "svc/echo", body: .bytes(ByteBuffer(repeating: 1, count: 256)))
                            delivered += report.deliveries.count
                        }
                        return delivered
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(delivered == 400)
            serving.cancel()
            #expect(try await serving.value == 600, "every message read on the responder's thread")
            await requester.close()
            await responder.close()
        }
    }

    /// An app may close its client from a task on the client's own thread: the close completes, and the task goes
    /// on after it.
    @Test(.timeLimit(.minutes(1))) func aClientClosesFromItsOwnThread() async throws {
        try await InProcessFabric.with(nodes: 1, cluster: "exec") { fabric in
            let client = try await FreightClient.connect(to: fabric.socket(0), label: "self-closing")
            let inbox = try await client.receive("svc/self")  // kept: a subscription dropped unregisters
            let (found, after) = try await withTaskExecutorPreference(client.executor) {
                let found = try await client.resolve("svc/self").endpoints.count
                await client.close()
                return (found, client.core.eventLoop.inEventLoop)
            }
            #expect(found == 1)
            #expect(after == false, "after the close the task runs on the default executor")
            inbox.cancel()
        }
    }

    /// A task that still prefers the executor of a client that closed goes on, on the default executor: it is
    /// not left waiting for an event loop that is gone.
    @Test(.timeLimit(.minutes(1))) func aTaskOnAClosedClientsExecutorStillEnds() async throws {
        try await InProcessFabric.with(nodes: 1, cluster: "exec") { fabric in
            let client = try await FreightClient.connect(to: fabric.socket(0), label: "closing")
            let (started, closed) = (Flag(), Flag())
            let task = Task(executorPreference: client.executor) {
                started.set()
                // Resumed after the client closed: on a loop that is gone, were it not for the default executor.
                while !closed.isSet { try await Task.sleep(for: .milliseconds(20)) }
                return client.core.eventLoop.inEventLoop
            }
            while !started.isSet { try await Task.sleep(for: .milliseconds(10)) }
            await client.close()
            closed.set()
            #expect(try await task.value == false, "it ended on the default executor")
        }
    }

    /// What an app does with a client after closing it gets a clear error or nothing, never a hang: calls fail with
    /// the client's reason, and giving up a subscription or a message it still holds is a no-op.
    @Test(.timeLimit(.minutes(1))) func aClosedClientRefusesCallsAndDropsWhatItHeld() async throws {
        try await InProcessFabric.with(nodes: 1, cluster: "exec") { fabric in
            let client = try await FreightClient.connect(to: fabric.socket(0), label: "closed")
            let inbox = try await client.receive("svc/closed")
            try await fabric.waitForEndpoints(try Address("svc/closed"), count: 1)
            // Reported once the receiver is done with them: still waiting when the client closes.
            let sending = Task {
                try await client.send(
                    ["read", "failed"].map { OutgoingMessage(to: "svc/closed", body: .bytes(ByteBuffer(string: $0))) })
            }
            var messages = inbox.makeAsyncIterator()
            let read = try #require(try await messages.next())
            let failed = try #require(try await messages.next())
            await client.close()
            _ = try? await read.collect(upTo: 64)
            failed.fail(FreightError(.cancelled, "given up after the close"))
            inbox.cancel()
            let pending = try await sending.value
            #expect(pending.count == 2)
            for case .success(let report) in pending { Issue.record("reported delivered after the close: \(report)") }
            await #expect(throws: FreightError.self) {
                try await client.send(to: "svc/closed", body: .bytes(ByteBuffer(string: "after")))
            }
            let batch = try await client.send([OutgoingMessage(to: "svc/closed", body: .bytes(ByteBuffer()))])
            #expect(batch.count == 1)
            if case .success = batch[0] { Issue.record("a batch sent through a closed client succeeded") }
            await #expect(throws: FreightError.self) { try await client.resolve("svc/closed") }
            await #expect(throws: FreightError.self) { try await client.receive("svc/again") }
            await #expect(throws: FreightError.self) { try await client.status() }
        }
    }
}
