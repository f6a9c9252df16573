import Foundation
import FreightClient
import FreightCore
import FreightNode
import FreightTesting
import NIOCore
import Synchronization
import Testing

/// The fabric in one process: real TCP between nodes on 127.0.0.x, apps on Unix sockets.
@Suite(.serialized) struct FabricTests {
    /// A receiver that does not read holds its sender at one window: nothing queues without bound.
    @Test func slowReceiverSlowsItsSender() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "slow", windowBytes: 8 << 20) { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(1), label: "slow", windowBytes: 8 << 20)
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "fast")
            let inbox = try await receiver.receive("slow/consumer")
            try await fabric.waitForEndpoints(try Address("slow/consumer"), count: 1)

            let acked = Atomic<UInt64>(0)
            let sending = Task {
                try await sender.send(
                    to: "slow/consumer", body: .pattern(seed: 5, length: 256 << 20),
                    options: SendOptions(chunkBytes: 1 << 20, onProgress: { acked.store($0, ordering: .relaxed) })
                )
            }
            var iterator = inbox.makeAsyncIterator()
            let message = try #require(try await iterator.next())
            var body = message.body.makeAsyncIterator()
            // Take 4 MiB, then stop reading for a while.
            var taken: UInt64 = 0
            while taken < 4 << 20, let chunk = try await body.next() { taken += UInt64(chunk.count) }
            // Wait until the sender is held (nothing moves), then check how far it got.
            let forwarded = try await settled { try await fabric.engines[0].statusSnapshot().bytesOut }
            let held = try #require(forwarded, "the sender never stopped while the receiver did not read")
            let stalled = acked.load(ordering: .relaxed)
            #expect(stalled <= 8 << 20, "acknowledged \(stalled) bytes while the receiver held only \(taken)")
            #expect(held <= (4 << 20) + (8 << 20) + (1 << 20), "node n1 forwarded \(held) bytes")
            #expect(held >= 4 << 20, "the bytes the receiver took went through n1")
            // Reading again lets the rest through, every byte intact.
            var intact = true
            while let chunk = try await body.next() {
                let ok = try chunk.withUnsafeBytes { PatternFill.check($0, seed: 5, offset: Int64(chunk.offset)) }
                intact = intact && ok
            }
            let report = try await sending.value
            #expect(intact)
            #expect(report.bytes == 256 << 20)
            await sender.close()
            await receiver.close()
        }
    }

    /// Apps write their frames and flush once per turn of their event loop, so a receiver's last frame (its DONE)
    /// may still be unwritten when the app is done with the message; closing flushes it first. A receiver that
    /// closes the moment it has read its last message still has it reported delivered, every time.
    @Test func receiverClosingRightAfterItsLastMessageStillDelivers() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "last-frame") { fabric in
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx")
            for round in 0..<30 {
                let address = "last/frame/\(round)"
                let receiver = try await FreightClient.connect(to: fabric.socket(1), label: "rx\(round)")
                let inbox = try await receiver.receive(address)
                try await fabric.waitForEndpoints(try Address(address), count: 1)
                // One chunk or several, alternately.
                let length: Int64 = round % 2 == 0 ? 1000 : 3 << 20
                let sending = Task {
                    try await sender.send(
                        to: address, body: .pattern(seed: UInt64(round), length: length),
                        options: SendOptions(chunkBytes: 1 << 20))
                }
                var messages = inbox.makeAsyncIterator()
                let message = try #require(try await messages.next())
                #expect(try await message.drain() == UInt64(length))
                await receiver.close()
                let report = try await sending.value
                #expect(report.deliveries.count == 1 && report.failures.isEmpty, "round \(round): \(report.failures)")
            }
            await sender.close()
        }
    }

    /// One message to an address that a plain receiver, a pattern receiver and a group match: each gets one copy,
    /// every byte checked, and the group member not chosen gets nothing.
    @Test func fanOutReportsEveryDelivery() async throws {
        try await InProcessFabric.with(nodes: 3, cluster: "fanout") { fabric in
            var clients: [FreightClient] = []
            var drains: [Task<Void, any Error>] = []
            // Per receiver: messages taken, and how many of them matched the pattern byte for byte.
            let received = Tally()
            for (node, pattern, group) in [
                (1, "model/out", nil), (2, "model/**", nil), (1, "model/out", "g"), (2, "model/out", "g"),
            ] as [(Int, String, String?)] {
                let index = clients.count
                let client = try await FreightClient.connect(to: fabric.socket(node), label: "rx\(index)")
                clients.append(client)
                let inbox = try await client.receive(pattern, group: group)
                drains.append(
                    Task {
                        for try await message in inbox {
                            let intact = try await message.checkPattern(seed: 9)
                            received.add(index, intact: intact)
                        }
                    })
            }
            try await fabric.waitForEndpoints(try Address("model/out"), count: 4)
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx")
            let report = try await sender.send(to: "model/out", body: .pattern(seed: 9, length: 10 << 20))
            #expect(report.deliveries.count == 3, "plain, pattern, and one group member: \(report.deliveries)")
            #expect(report.failures.isEmpty)
            #expect(Set(report.deliveries.map(\.path)) == [["n1", "n2"], ["n1", "n3"]])
            // DONE means every receiver holds every byte; its check of them is done when it hands the message back.
            let final = try #require(try await settled(quiet: .milliseconds(300)) { received.counts })
            #expect(final[0] == [1, 1] && final[1] == [1, 1], "the plain and the pattern receiver: \(final)")
            #expect(
                (final[2] ?? [0, 0]).first! + (final[3] ?? [0, 0]).first! == 1
                    && [final[2], final[3]].contains([1, 1]),
                "exactly one group member, intact: \(final)")
            await sender.close()
            for client in clients { await client.close() }
            for drain in drains { drain.cancel() }
        }
    }

    /// Messages beyond the node's memory budget (once every window in it was granted) are refused with a reason,
    /// never queued.
    @Test func memoryBudgetRefusesWithAReason() async throws {
        try await InProcessFabric.with(
            nodes: 1, cluster: "budget", windowBytes: 8 << 20, memoryBudgetBytes: 16 << 20
        ) { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(0), label: "rx", windowBytes: 8 << 20)
            let inbox = try await receiver.receive("budget/x")
            try await fabric.waitForEndpoints(try Address("budget/x"), count: 1)
            // Two messages the receiver takes but does not read hold 8 MiB each: the budget is full. They come from two
            // apps, each holding its share (half the budget; docs/hardening.md).
            var senders: [FreightClient] = []
            for label in ["tx1", "tx2", "tx3"] {
                senders.append(try await FreightClient.connect(to: fabric.socket(0), label: label))
            }
            let held = senders.prefix(2).map { sender in
                Task { try await sender.send(to: "budget/x", body: .pattern(seed: 1, length: 64 << 20)) }
            }
            let sender = senders[2]
            var iterator = inbox.makeAsyncIterator()
            let first = try #require(try await iterator.next())
            let second = try #require(try await iterator.next())
            // Both granted their windows and sent them: what a message was granted cannot shrink away to make room
            // for another (docs/wan.md, "Many messages"), so the third finds none.
            let deadline = ContinuousClock.now + .seconds(30)
            while try await fabric.engines[0].statusSnapshot().bytesIn < 16 << 20, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            await #expect {
                try await sender.send(to: "budget/x", body: .pattern(seed: 1, length: 64 << 20))
            } throws: { error in
                (error as? FreightError)?.code == .resourceExhausted && "\(error)".contains("memory budget")
            }
            _ = try await first.drain()
            _ = try await second.drain()
            for task in held { _ = try await task.value }
            for sender in senders { await sender.close() }
            await receiver.close()
        }
    }

    /// Starts `sends` sends at once (`send(index)`), expects the first `refused` outcomes to be refusals naming
    /// `reason` with nothing delivered yet (no message is delivered before its receiver takes it), reads the others
    /// from `inbox`, and expects each of them delivered. Each send's outcome is nil when delivered, the error's text
    /// when refused. Unstructured: a send that waits for a receiver that will never read (the test failed or timed
    /// out) must not hold the test up; closing the apps ends them.
    static func expectRefusalsThenDeliveries(
        sends: Int, refused: Int, reason: String, inbox: Subscription,
        send: @escaping @Sendable (Int) async throws -> Void
    ) async throws {
        let (outcomes, sink) = AsyncStream<String?>.makeStream()
        let tasks = (0..<sends).map { index in
            Task {
                do {
                    try await send(index)
                    sink.yield(nil)
                } catch {
                    sink.yield("\(error)")
                }
            }
        }
        defer { for task in tasks { task.cancel() } }
        var refusals: [String] = []
        var delivered = 0
        var results = outcomes.makeAsyncIterator()
        while refusals.count < refused, let outcome = await results.next() {
            if let outcome { refusals.append(outcome) } else { delivered += 1 }
        }
        #expect(refusals.count == refused && delivered == 0)
        #expect(refusals.allSatisfy { $0.contains(reason) }, "\(refusals.first ?? "")")
        // The accepted ones were waiting: all are delivered once read.
        var reader = inbox.makeAsyncIterator()
        for _ in 0..<(sends - refused) {
            guard let message = try await reader.next() else { break }
            _ = try await message.drain()
        }
        while delivered < sends - refused, let outcome = await results.next() {
            if let outcome { refusals.append(outcome) } else { delivered += 1 }
        }
        #expect(delivered == sends - refused && refusals.count == refused)
    }

    /// A loop over a subscription that stops after one message, and a later loop over the same subscription, take
    /// every message once between them, though the messages came in one frame (one batch of the subscription).
    @Test(.timeLimit(.minutes(1))) func aLaterLoopGoesOnWhereAnEarlierOneStopped() async throws {
        try await InProcessFabric.with(nodes: 1, cluster: "loops") { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(0), label: "rx")
            let subscription = try await receiver.receive("loops/x")
            try await fabric.waitForEndpoints(try Address("loops/x"), count: 1)
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx")
            let count = 10
            // Sent from the client's own thread in one turn: one SMALL frame, one batch at the receiver.
            let sends = Task(executorPreference: sender.executor) {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<count {
                        group.addTask(executorPreference: sender.executor) {
                            _ = try await sender.send(to: "loops/x", body: .bytes(ByteBuffer(string: "m\(index)")))
                        }
                    }
                    try await group.waitForAll()
                }
            }
            var bodies: [String] = []
            for try await message in subscription {
                bodies.append(String(buffer: try await message.collect(upTo: 64)))
                break
            }
            for try await message in subscription {
                bodies.append(String(buffer: try await message.collect(upTo: 64)))
                if bodies.count == count { break }
            }
            try await sends.value
            #expect(Set(bodies) == Set((0..<count).map { "m\($0)" }) && bodies.count == count, "\(bodies)")
            await sender.close()
            await receiver.close()
        }
    }

    /// A receiving app holds at most `Limits.messagesPerConnectionMax` messages waiting in a subscription it does not
    /// read: messages past that fail for their senders with the reason, and the waiting ones are delivered once read.
    /// Two senders, as one may have no more than that many in flight itself.
    @Test(.timeLimit(.minutes(3))) func messagesWaitingInASubscriptionAreBounded() async throws {
        try await InProcessFabric.with(nodes: 1, cluster: "waiting", idleSeconds: 150) { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(0), label: "slow")
            let inbox = try await receiver.receive("waiting/x")  // never read until the refusals are in
            try await fabric.waitForEndpoints(try Address("waiting/x"), count: 1)
            let senders = [
                try await FreightClient.connect(to: fabric.socket(0), label: "a"),
                try await FreightClient.connect(to: fabric.socket(0), label: "b"),
            ]
            try await Self.expectRefusalsThenDeliveries(
                sends: Limits.messagesPerConnectionMax + 40, refused: 40, reason: "messages waiting to be read",
                inbox: inbox
            ) { index in
                _ = try await senders[index % 2].send(to: "waiting/x", body: .pattern(seed: 1, length: 256))
            }
            for sender in senders { await sender.close() }
            await receiver.close()
        }
    }

    /// One app may have at most `Limits.messagesPerConnectionMax` messages in flight through its node; the next is
    /// refused with a reason while the others stay in flight. The idle time is long: with the whole test run beside
    /// it on two cores, a thousand sends may wait their turn for over the usual 30 s.
    @Test(.timeLimit(.minutes(3))) func messagesInFlightPerAppAreBounded() async throws {
        try await InProcessFabric.with(nodes: 1, cluster: "many", idleSeconds: 150) { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(0), label: "idle")
            let inbox = try await receiver.receive("many/x")  // never read until the refusals are in
            try await fabric.waitForEndpoints(try Address("many/x"), count: 1)
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "eager")
            try await Self.expectRefusalsThenDeliveries(
                sends: Limits.messagesPerConnectionMax + 8, refused: 8, reason: "messages in flight", inbox: inbox
            ) { _ in
                _ = try await sender.send(to: "many/x", body: .pattern(seed: 1, length: 1))
            }
            await sender.close()
            await receiver.close()
        }
    }

    /// A batch of sends (``FreightClient/send(_:)``) confirms each message on its own, in the batch's order: the
    /// deliverable ones arrive whole and in order, one with no receiver fails with the node's reason and one with a
    /// malformed address with the parser's, and neither stops the rest. Through two nodes, small and large bodies
    /// mixed, from a task off the client's thread and from one on it.
    @Test func aBatchOfSendsIsConfirmedMessageByMessage() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "batch") { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(1), label: "rx")
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx")
            let inbox = try await receiver.receive("batch/in")
            try await fabric.waitForEndpoints(try Address("batch/in"), count: 1)
            // Every 10th to no receiver, every 25th malformed, every 40th large (not a SMALL message). Each body's
            // pattern is seeded by its length, so the receiver can check it.
            func length(_ index: Int, _ round: Int) -> Int { index % 40 == 39 ? 300_000 : 256 + index + round }
            func address(_ index: Int) -> String {
                index % 25 == 24 ? "batch//bad" : index % 10 == 9 ? "batch/nobody" : "batch/in"
            }
            let deliverable = (0..<200).count(where: { address($0) == "batch/in" })
            func batch(_ round: Int) -> [OutgoingMessage] {
                (0..<200).map { index in
                    let length = length(index, round)
                    return OutgoingMessage(
                        to: address(index), body: .pattern(seed: UInt64(length), length: Int64(length)))
                }
            }
            let reading = Task {
                var arrived: [(length: UInt64, intact: Bool)] = []
                for try await message in inbox {
                    let body = try await message.collect(upTo: 1 << 20)
                    let intact = body.withUnsafeReadableBytes {
                        PatternFill.check($0, seed: UInt64(message.length), offset: 0)
                    }
                    arrived.append((message.length, intact))
                    if arrived.count == 2 * deliverable { break }
                }
                return arrived
            }
            for round in 0..<2 {
                let messages = batch(round)
                let outcomes =
                    round == 0
                    ? try await sender.send(messages)
                    : try await Task(executorPreference: sender.executor) { try await sender.send(messages) }.value
                #expect(outcomes.count == messages.count)
                var ids = Set<UInt64>()
                for (index, outcome) in outcomes.enumerated() {
                    switch (messages[index].address, outcome) {
                    case ("batch/in", .success(let report)):
                        ids.insert(report.messageID)
                        #expect(report.deliveries.map(\.address) == ["batch/in"])
                        #expect(report.bytes == UInt64(length(index, round)))
                    case ("batch/nobody", .failure(let error)):
                        #expect(error.code == .noRoute, "\(error)")
                    case ("batch//bad", .failure(let error)):
                        #expect(error.code == .invalidAddress, "\(error)")
                    default:
                        Issue.record("message \(index) to \(messages[index].address): \(outcome)")
                    }
                }
                #expect(ids.count == deliverable, "each delivered message has its own id")
            }
            let arrived = try await reading.value
            var expected: [UInt64] = []
            for round in 0..<2 {
                for index in 0..<200 where address(index) == "batch/in" {
                    expected.append(UInt64(length(index, round)))
                }
            }
            #expect(arrived.map(\.length).sorted() == expected.sorted())
            #expect(arrived.filter { !$0.intact }.isEmpty, "every body arrived as sent")
            await sender.close()
            await receiver.close()
        }
    }

    /// A batch past ``FreightClient/batchMessagesMax`` is refused whole, before anything is sent.
    @Test func aBatchPastItsLimitIsRefused() async throws {
        try await InProcessFabric.with(nodes: 1, cluster: "batch-max") { fabric in
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx")
            let messages = Array(
                repeating: OutgoingMessage(to: "batch/in", body: .pattern(seed: 1, length: 1)),
                count: FreightClient.batchMessagesMax + 1)
            await #expect(throws: FreightError.self) { try await sender.send(messages) }
            #expect(try await sender.send([]).isEmpty)
            await sender.close()
        }
    }

    /// `resolve` lists at most `Limits.resolveResultsMax` endpoints and says when more matched.
    @Test func resolveSaysWhenItTruncates() async throws {
        try await InProcessFabric.with(nodes: 1, cluster: "resolve") { fabric in
            let client = try await FreightClient.connect(to: fabric.socket(0), label: "many")
            var inboxes: [Subscription] = []
            for i in 0..<(Limits.resolveResultsMax + 10) { inboxes.append(try await client.receive("wide/e\(i)")) }
            let all = try await client.resolve("wide/**")
            #expect(all.endpoints.count == Limits.resolveResultsMax)
            #expect(all.truncated)
            let one = try await client.resolve("wide/e7")
            #expect(one.endpoints.count == 1 && !one.truncated)
            for inbox in inboxes { inbox.cancel() }
            await client.close()
        }
    }

    /// Messages waiting in a subscription that the app cancels before taking them fail for their senders at once,
    /// with the reason, small or not, while the app's other subscriptions go on; the app's connection stays up.
    @Test(.timeLimit(.minutes(1))) func aCancelledSubscriptionFailsWhatItHadNotTaken() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "cancel") { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(1), label: "rx")
            let dropped = try await receiver.receive("cancel/x")
            let kept = try await receiver.receive("cancel/y")
            try await fabric.waitForEndpoints(try Address("cancel/x"), count: 1)
            try await fabric.waitForEndpoints(try Address("cancel/y"), count: 1)
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx")
            let sends = [64, Limits.smallBodyBytesMax + 1, 4 << 20].map { length in
                Task { try await sender.send(to: "cancel/x", body: .pattern(seed: 1, length: Int64(length))) }
            }
            // All three wait in the stream, untaken: then the app stops receiving there.
            try await Task.sleep(for: .milliseconds(500))
            let cancelled = ContinuousClock.now
            dropped.cancel()
            for send in sends {
                await #expect {
                    _ = try await send.value
                } throws: { error in
                    "\(error)".contains("stopped receiving on this endpoint before it took the message")
                }
            }
            #expect(ContinuousClock.now - cancelled < .seconds(10), "failed at once, not by an idle timer")
            // The other subscription of the same app goes on.
            let sending = Task { try await sender.send(to: "cancel/y", body: .pattern(seed: 2, length: 1 << 20)) }
            var messages = kept.makeAsyncIterator()
            #expect(try await #require(try await messages.next()).checkPattern(seed: 2))
            #expect(try await sending.value.deliveries.count == 1)
            await sender.close()
            await receiver.close()
        }
    }

    /// A header over `Limits.headerBytesMax` is refused with a reason; a window outside its limits is refused at once.
    @Test func headerAndWindowLimits() async throws {
        try await InProcessFabric.with(nodes: 1, cluster: "limits") { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(0), label: "rx")
            let inbox = try await receiver.receive("limits/x")
            try await fabric.waitForEndpoints(try Address("limits/x"), count: 1)
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx")
            let big = String(repeating: "a", count: Limits.headerBytesMax)
            await #expect {
                try await sender.send(
                    to: "limits/x", body: .pattern(seed: 1, length: 1), options: SendOptions(attributes: ["k": big]))
            } throws: { error in
                (error as? FreightError)?.code == .invalidArgument && "\(error)".contains("header")
            }
            await #expect(throws: FreightError.self) {
                _ = try await FreightClient.connect(to: fabric.socket(0), windowBytes: Limits.windowBytesMin - 1)
            }
            _ = inbox
            await sender.close()
            await receiver.close()
        }
    }

    /// An app pointed at a socket where no node listens gets a clear error, and nothing is left behind (the hello it
    /// would have waited for was once dropped unanswered: a crash in debug builds).
    @Test func noNodeAtTheSocketIsAClearError() async throws {
        let path = NSTemporaryDirectory() + "freight-nobody-\(UInt32.random(in: 0...UInt32.max)).sock"
        await #expect {
            _ = try await FreightClient.connect(to: try NodeAddress(path), label: "lost")
        } throws: { error in
            (error as? FreightError)?.code == .connectionFailed && "\(error)".contains(path)
        }
    }
}

/// Messages taken per receiver, and how many of them were intact.
final class Tally: Sendable {
    private let state = Mutex<[Int: [Int]]>([:])
    func add(_ receiver: Int, intact: Bool) {
        state.withLock {
            $0[receiver, default: [0, 0]][0] += 1; if intact { $0[receiver]![1] += 1 }
        }
    }
    var counts: [Int: [Int]] { state.withLock { $0 } }
}
