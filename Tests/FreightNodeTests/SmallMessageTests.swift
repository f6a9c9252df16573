import FreightClient
import FreightCore
import FreightNode
import FreightTesting
import FreightWire
import NIOCore
import Testing

/// Small messages (docs/small-messages-and-files.md): whole in SMALL frames, their outcomes in OUTCOMES frames, and
/// OPEN and DATA again for what cannot go small.
@Suite(.serialized) struct SmallMessageTests {
    /// Small bodies cross two nodes with no flow on either (no OPEN, ACK, DATA or DONE), every byte checked, each
    /// with a delivery report that names the same route, endpoint and app as a large message's.
    @Test func smallMessagesCrossTwoNodesWholeWithTheirReports() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "small") { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(1), label: "rx")
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx")
            let inbox = try await receiver.receive("small/x")
            try await fabric.waitForEndpoints(try Address("small/x"), count: 1)
            let lengths = [0, 1, 256, 4096, Limits.smallBodyBytesMax]
            let count = 200
            let reading = Task {
                var intact = 0
                var reader = inbox.makeAsyncIterator()
                for _ in 0..<count {
                    guard let message = try await reader.next() else { break }
                    let seed = UInt64(message.attributes["seed"] ?? "") ?? 0
                    var ok = true
                    var total = 0
                    for try await chunk in message.body {
                        total += chunk.count
                        ok = try ok && chunk.withUnsafeBytes { PatternFill.check($0, seed: seed, offset: 0) }
                    }
                    if ok && UInt64(total) == message.length && message.path == ["n1", "n2"] && message.body.isWhole {
                        intact += 1
                    }
                }
                return intact
            }
            let before = try await fabric.engines[0].statusSnapshot()
            let reports = try await withThrowingTaskGroup(of: DeliveryReport.self) { group in
                for index in 0..<count {
                    group.addTask {
                        try await sender.send(
                            to: "small/x", body: .pattern(seed: UInt64(index), length: Int64(lengths[index % 5])),
                            options: SendOptions(attributes: ["seed": "\(index)"]))
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(try await reading.value == count, "every small message arrived whole and checked")
            let after = try await fabric.engines[0].statusSnapshot()
            #expect(after.smallPassed - before.smallPassed == UInt64(count))
            #expect(after.messagesDelivered == before.messagesDelivered, "no flow carried a small message")
            // A message past the small limit goes as OPEN and DATA: the same route and endpoint in its report.
            let large = Task {
                try await sender.send(
                    to: "small/x", body: .pattern(seed: 9, length: Int64(Limits.smallBodyBytesMax + 1)))
            }
            var reader = inbox.makeAsyncIterator()
            let chunked = try #require(try await reader.next())
            #expect(!chunked.body.isWhole, "a message that comes in chunks is not whole when it arrives")
            _ = try await chunked.drain()
            let reference = try await large.value
            #expect(try await fabric.engines[0].statusSnapshot().messagesDelivered == after.messagesDelivered + 1)
            for report in reports {
                #expect(report.route == reference.route && report.route == "n1 → n2")
                #expect(report.deliveries.map(\.endpointID) == reference.deliveries.map(\.endpointID))
                #expect(report.deliveries.first?.app == "rx" && report.deliveries.first?.address == "small/x")
            }
            #expect(try await fabric.engines[0].statusSnapshot().smallInFlight == 0)
            await sender.close()
            await receiver.close()
        }
    }

    /// The node's own messages of up to 64 KiB (an in-process source, what `freight bench --paths node` sends) cross
    /// to an in-process sink on another node whole, as an app's do: no flow on either node, each delivered; larger
    /// ones as OPEN and DATA.
    @Test func aNodesOwnSmallMessagesGoWhole() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "own") { fabric in
            let address = try Address("own/sink")
            _ = try await fabric.engines[1].attachSink(AddressPattern(address))
            try await fabric.waitForEndpoints(address, count: 1)
            let sending = try await fabric.engines[0].statusSnapshot()
            let receiving = try await fabric.engines[1].statusSnapshot()
            try await fabric.engines[0].sendFromNode(
                to: address, length: UInt64(Limits.smallBodyBytesMax), count: 200, inFlight: 32)
            let sent = try await fabric.engines[0].statusSnapshot()
            let received = try await fabric.engines[1].statusSnapshot()
            #expect(sent.smallPassed - sending.smallPassed == 200)
            #expect(received.smallPassed - receiving.smallPassed == 200, "the sink took every one whole")
            #expect(sent.messagesDelivered == sending.messagesDelivered, "no flow carried a small message")
            try await fabric.engines[0].sendFromNode(
                to: address, length: UInt64(Limits.smallBodyBytesMax + 1), count: 3, inFlight: 3)
            let large = try await fabric.engines[0].statusSnapshot()
            #expect(large.messagesDelivered == sent.messagesDelivered + 3)
            #expect(large.smallPassed == sent.smallPassed)
            #expect(large.smallInFlight == 0)
            #expect(try await fabric.engines[1].statusSnapshot().smallInFlight == 0)
        }
    }

    /// A party that takes SMALL as first published (capability "small" without "small-64k") is sent bodies of up to
    /// 16 KiB whole, in SMALL frames its parser takes (under the control-frame limit), and larger ones as OPEN and
    /// DATA: a node and an app of this version work with one of the version before.
    @Test func bodiesGoSmallOnlyAsLargeAsTheReceiverTakes() async throws {
        try await InProcessFabric.with(nodes: 1, cluster: "legacy") { fabric in
            let path = try #require(fabric.engines[0].configuration.socketPath)
            let legacy = try WireApp(
                socketPath: path, label: "legacy", capabilities: [WireV1.capabilitySmall], eagerBytes: 4 << 20,
                limits: FrameLimits(smallFrameBytesMax: Limits.controlFrameBytesMax))
            _ = try legacy.register("legacy/x")
            try await fabric.waitForEndpoints(try Address("legacy/x"), count: 1)
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx")
            // Twelve 12 KiB bodies in one batch: more than one frame of the size the legacy party takes.
            let bodyBytes = 12 << 10
            let batch = (0..<12).map {
                OutgoingMessage(to: "legacy/x", body: .pattern(seed: UInt64($0), length: Int64(bodyBytes)))
            }
            let sending = Task { try await sender.send(batch) }
            var received = 0
            var intact = 0
            while received < batch.count {
                // The legacy parser throws on a SMALL frame past 64 KiB.
                guard
                    case .small(let messages) = try legacy.next(where: { if case .small = $0 { true } else { false } })
                else { break }
                for message in messages {
                    received += 1
                    if message.body.readableBytes == bodyBytes, CRC32C.checksum(message.body) == message.crc32c {
                        intact += 1
                    }
                }
                try legacy.write(try FrameEncoder.encode(.outcomes(messages.map { SmallOutcome($0.id, .delivered) })))
            }
            #expect(intact == batch.count, "every 12 KiB body arrived whole as a small message")
            let results = try await sending.value
            #expect(results.allSatisfy { (try? $0.get()) != nil }, "\(results)")
            // 32 KiB goes small to a party of this version, not to this one: it gets an OPEN.
            let large = Task {
                try await sender.send(to: "legacy/x", body: .pattern(seed: 1, length: 32 << 10))
            }
            let open = try legacy.next { if case .open = $0 { true } else { false } }
            guard case .open(let opened) = open else { return }
            #expect(opened.header.length == 32 << 10)
            legacy.close()
            await #expect(throws: FreightError.self) { try await large.value }
            #expect(try await within(.seconds(10)) { try await fabric.engines[0].statusSnapshot().smallInFlight == 0 })
            await sender.close()
        }
    }

    /// A message for several receivers (an address, and another app's pattern that matches it) cannot go small: the
    /// sender's node answers RESEND, and the client sends it as OPEN and DATA, which every receiver gets.
    @Test func aMessageForSeveralReceiversIsSentAgainAsOpenAndData() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "fan") { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(1), label: "rx")
            let watcher = try await FreightClient.connect(to: fabric.socket(1), label: "watch")
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx")
            let exact = try await receiver.receive("fan/x")
            let pattern = try await watcher.receive("fan/*")
            try await fabric.waitForEndpoints(try Address("fan/x"), count: 2)
            let sending = Task { try await sender.send(to: "fan/x", body: .pattern(seed: 3, length: 100)) }
            // Two apps, each reading its own messages as they come.
            let readers = [exact, pattern].map { inbox in
                Task {
                    var reader = inbox.makeAsyncIterator()
                    let message = try #require(try await reader.next())
                    let body = try await message.collect(upTo: 1000)
                    return body.withUnsafeReadableBytes { PatternFill.check($0, seed: 3, offset: 0) }
                }
            }
            for reader in readers { #expect(try await reader.value) }
            let report = try await sending.value
            #expect(Set(report.deliveries.map(\.address)) == ["fan/x", "fan/*"])
            let status = try await fabric.engines[0].statusSnapshot()
            #expect(status.smallResent >= 1 && status.messagesDelivered >= 1)
            await sender.close()
            await receiver.close()
            await watcher.close()
        }
    }

    /// A receiving app that goes away before it read its small messages fails them for their sender, with the
    /// reason and the warning that they may have been delivered (its node cannot know).
    @Test func aReceiverThatGoesAwayFailsWhatItHeld() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "gone") { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(1), label: "rx")
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx")
            let inbox = try await receiver.receive("gone/x")
            try await fabric.waitForEndpoints(try Address("gone/x"), count: 1)
            let sends = (0..<10).map { index in
                Task { try await sender.send(to: "gone/x", body: .pattern(seed: UInt64(index), length: 64)) }
            }
            #expect(try await within(.seconds(10)) { try await fabric.engines[1].statusSnapshot().smallInFlight == 10 })
            await receiver.close()
            for send in sends {
                await #expect {
                    _ = try await send.value
                } throws: { error in
                    "\(error)".contains("went away before the message's outcome came back")
                }
            }
            withExtendedLifetime(inbox) {}
            #expect(try await fabric.engines[0].statusSnapshot().smallInFlight == 0)
            #expect(try await fabric.engines[1].statusSnapshot().smallInFlight == 0)
            await sender.close()
        }
    }

    /// An app that sends more small messages than the budget its node advertised, without waiting for their
    /// outcomes, is disconnected with the reason; the node goes on serving everyone else, and gives back what the
    /// app's messages held once their receivers are gone.
    @Test func anAppPastItsEagerBudgetIsDisconnected() async throws {
        try await InProcessFabric.with(nodes: 1, cluster: "budget") { fabric in
            // Receivers that never read: each holds up to its own budget of small messages, so together they take
            // more than one sender may have outstanding.
            let holders = Limits.eagerBytesNode / Limits.eagerBytesApp + 1
            var clients: [FreightClient] = []
            var inboxes: [Subscription] = []
            for index in 0..<holders {
                let client = try await FreightClient.connect(to: fabric.socket(0), label: "hold\(index)")
                inboxes.append(try await client.receive("hold/\(index)"))
                clients.append(client)
            }
            let reader = try await FreightClient.connect(to: fabric.socket(0), label: "reader")
            let inbox = try await reader.receive("ok/x")
            try await fabric.waitForEndpoints(try Address("ok/x"), count: 1)
            let path = try #require(fabric.engines[0].configuration.socketPath)
            let rogue = try WireApp(socketPath: path, label: "rogue")
            let body = ByteBuffer(repeating: 7, count: Limits.smallBodyBytesMax)
            let crc = CRC32C.checksum(body)
            let perHolder = Limits.eagerBytesApp / Int(Limits.smallCost(length: UInt64(body.readableBytes)))
            // Twice what the holders take: past the rogue's budget, the node closes the connection and a write fails.
            var closed = false
            for index in 0..<(2 * holders * perHolder) where !closed {
                var header = Freight_Wire_V1_MessageHeader()
                header.id = UInt64.random(in: 1...UInt64.max)
                header.destination = "hold/\(index % holders)"
                header.length = UInt64(body.readableBytes)
                do {
                    try rogue.write(
                        try FrameEncoder.encode(.small([SmallMessage(header: header, body: body, crc32c: crc)])))
                } catch {
                    closed = true
                }
            }
            #expect(closed, "the node kept taking small messages past the budget it advertised")
            // The node closed the rogue's connection: a read sees the end.
            #expect(throws: FreightError.self) {
                _ = try rogue.next { _ in false }
            }
            // Everyone else is served as before.
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx")
            let sending = Task { try await sender.send(to: "ok/x", body: .pattern(seed: 1, length: 10)) }
            var messages = inbox.makeAsyncIterator()
            _ = try await #require(try await messages.next()).drain()
            #expect(try await sending.value.deliveries.count == 1)
            for client in clients { await client.close() }
            #expect(try await within(.seconds(10)) { try await fabric.engines[0].statusSnapshot().smallInFlight == 0 })
            withExtendedLifetime(inboxes) {}
            rogue.close()
            await sender.close()
            await reader.close()
        }
    }
}

/// Whether `condition` holds within `timeout`, polled every 20 ms.
private func within(_ timeout: Duration, _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}
