import FreightClient
import FreightCore
import FreightDirectory
import FreightTesting
import NIOCore
import Synchronization
import Testing

@testable import FreightNode

/// Request and reply (docs/small-messages-and-files.md): a request names an address of its client's inbox, the
/// responder replies to it, and the client hands each reply to its own request.
@Suite(.serialized) struct RequestReplyTests {
    /// Many requests at once across two nodes: each gets its own reply (the responder answers with the request's
    /// bytes reversed), and both ways go as small messages.
    @Test func eachRequestGetsItsOwnReply() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "rr") { fabric in
            let responder = try await FreightClient.connect(to: fabric.socket(1), label: "responder")
            let requester = try await FreightClient.connect(to: fabric.socket(0), label: "requester")
            let inbox = try await responder.receive("svc/reverse")
            try await fabric.waitForEndpoints(try Address("svc/reverse"), count: 1)
            // Set once every request has its reply: the responder's last reports may then fail as it closes.
            let finished = Flag()
            // Each request answered in a task of its own, as a service does: a reply's delivery report takes a
            // round trip, and waiting for each in turn made 100 requests outlast their time on a loaded machine.
            let serving = Task {
                try await withThrowingDiscardingTaskGroup { group in
                    for try await request in inbox {
                        group.addTask {
                            do {
                                let body = try await request.collect(upTo: 4096)
                                try await responder.reply(
                                    to: request, body: .bytes(ByteBuffer(bytes: body.readableBytesView.reversed())))
                            } catch  where !finished.isSet {
                                Issue.record("the responder could not answer \(request.replyTo): \(error)")
                            }
                        }
                    }
                }
            }
            let before = try await fabric.engines[1].statusSnapshot().smallPassed
            let count = 100
            let started = ContinuousClock.now
            // Each request's outcome, with when it came: a failure says how far the others got.
            let outcomes = await withTaskGroup(of: (Bool, String?, Duration).self) { group in
                for index in 0..<count {
                    group.addTask {
                        let text = "request \(index)"
                        do {
                            let reply = try await requester.request(
                                to: "svc/reverse", body: .bytes(ByteBuffer(string: text)), timeout: .seconds(60))
                            let body = try await reply.collect(upTo: 4096)
                            return (String(buffer: body) == String(text.reversed()), nil, .now - started)
                        } catch {
                            return (false, "\(text): \(error)", .now - started)
                        }
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            finished.set()
            let matched = outcomes.count { $0.0 }
            let errors = outcomes.compactMap(\.1)
            let slowest = outcomes.filter { $0.0 }.map(\.2).max() ?? .zero
            #expect(
                matched == count,
                "\(matched) of \(count) replies matched, the last after \(slowest); \(errors.count) failed: \(errors.prefix(3))"
            )
            // Requests into n2's responder and replies out of it, each passed on whole.
            let passed = try await fabric.engines[1].statusSnapshot().smallPassed - before
            #expect(passed >= UInt64(2 * count), "\(passed) small messages passed by n2")
            serving.cancel()
            await requester.close()
            await responder.close()
        }
    }

    /// A reply can reach its inbox before the inbox's registration reaches the responder's node (they travel
    /// apart): an inbox address names its node, which the reply goes to and which matches it there, small or not.
    /// No app may register another node's inbox addresses.
    @Test func aReplyFindsAnInboxItsNodeHasNotAnnounced() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "rr-inbox") { fabric in
            let waiter = try await FreightClient.connect(to: fabric.socket(0), label: "waiter")
            let replier = try await FreightClient.connect(to: fabric.socket(1), label: "replier")
            let prefix = "_inbox/\(waiter.nodeName)/probe"
            let inbox = try await waiter.receive("\(prefix)/*")
            let address = try Address("\(prefix)/1")
            try await fabric.waitForEndpoints(address, count: 1)
            // n2 forgets the inbox, as if its registration had not arrived yet.
            let n2 = fabric.engines[1]
            try await n2.eventLoop.submit {
                for record in n2.index.match(address) { _ = n2.index.remove(record.key) }
            }.get()
            #expect(try await n2.matchCount(address) == 0)
            let large = ByteBuffer(repeating: 7, count: 256 * 1024)
            let reading = Task {
                var bodies: [ByteBuffer] = []
                for try await message in inbox {
                    bodies.append(try await message.collect(upTo: 1 << 20))
                    if bodies.count == 2 { break }
                }
                return bodies
            }
            let small = try await replier.send(to: "\(prefix)/1", body: .bytes(ByteBuffer(string: "small reply")))
            let regular = try await replier.send(to: "\(prefix)/2", body: .bytes(large))
            #expect(small.deliveries.count == 1 && regular.deliveries.count == 1)
            let bodies = try await reading.value
            #expect(bodies.map(\.readableBytes).sorted() == [11, large.readableBytes])
            // Nothing here may take n1's replies.
            await #expect {
                _ = try await replier.receive("_inbox/\(waiter.nodeName)/**")
            } throws: { ($0 as? FreightError)?.code == .permissionDenied }
            await replier.close()
            await waiter.close()
        }
    }

    /// A request nobody answers fails with timedOut once its time is up; a message that asked for no reply cannot
    /// be replied to.
    @Test func unansweredRequestsTimeOut() async throws {
        try await InProcessFabric.with(nodes: 1, cluster: "rr-silent") { fabric in
            let silent = try await FreightClient.connect(to: fabric.socket(0), label: "silent")
            let requester = try await FreightClient.connect(to: fabric.socket(0), label: "requester")
            let inbox = try await silent.receive("svc/silent")
            try await fabric.waitForEndpoints(try Address("svc/silent"), count: 1)
            let reading = Task {
                var reader = inbox.makeAsyncIterator()
                let first = try #require(try await reader.next())
                _ = try await first.drain()
                let second = try #require(try await reader.next())
                _ = try await second.drain()
                return second
            }
            let started = ContinuousClock.now
            await #expect {
                _ = try await requester.request(
                    to: "svc/silent", body: .bytes(ByteBuffer(string: "hello")), timeout: .milliseconds(300))
            } throws: { ($0 as? FreightError)?.code == .timedOut }
            #expect(ContinuousClock.now - started < .seconds(5))
            _ = try await requester.send(to: "svc/silent", body: .bytes(ByteBuffer(string: "no reply wanted")))
            let plain = try await reading.value
            #expect(plain.replyTo.isEmpty)
            await #expect {
                try await silent.reply(to: plain, body: .bytes(ByteBuffer(string: "?")))
            } throws: { ($0 as? FreightError)?.code == .invalidArgument }
            await requester.close()
            await silent.close()
        }
    }
}

/// A flag set once, read from any task.
final class Flag: Sendable {
    private let state = Mutex(false)
    var isSet: Bool { state.withLock { $0 } }
    func set() { state.withLock { $0 = true } }
}
