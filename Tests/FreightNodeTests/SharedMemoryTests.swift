import FreightClient
import FreightCore
import FreightNode
import FreightTesting
import FreightTransport
import NIOCore
import Testing

/// Shared memory between apps and their node (docs/shared-memory.md), with nodes and apps in one process over real
/// Unix sockets, descriptor links and memfd pools.
@Suite(.serialized) struct SharedMemoryTests {
    static let mebibyte = 1 << 20

    /// Waits until `condition` holds, polling; false on timeout.
    func eventually(timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async rethrows -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return try await condition()
    }

    /// Reads a message's whole body: how many bytes, whether every byte matches the pattern of `seed`, and whether
    /// every chunk was read in place from shared memory.
    static func read(_ message: IncomingMessage, seed: UInt64) async throws -> (
        total: Int, intact: Bool, allShared: Bool
    ) {
        var (total, intact, allShared) = (0, true, true)
        for try await chunk in message.body {
            allShared = allShared && chunk.isShared
            let ok = try chunk.withUnsafeBytes { PatternFill.check($0, seed: seed, offset: Int64(chunk.offset)) }
            intact = intact && ok
            total += chunk.count
        }
        return (total, intact, allShared)
    }

    /// Links that decline both zero-copy paths (as a TLS link will, ``LinkCapabilities``): the sender's node copies
    /// the regions into the link's writes, the receiver's node copies bodies into the pool after reading them; the
    /// apps see the same message, intact and read in place.
    @Test func linksThatDeclineZeroCopyFallBackToCopies() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "shm-copies", linkCapabilities: []) { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(1), label: "rx", sharedMemory: .required())
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx", sharedMemory: .required())
            let inbox = try await receiver.receive("shm/copies")
            try await fabric.waitForEndpoints(try Address("shm/copies"), count: 1)
            let sending = Task {
                try await sender.send(to: "shm/copies", body: .pattern(seed: 22, length: 32 << 20))
            }
            var messages = inbox.makeAsyncIterator()
            let message = try #require(try await messages.next())
            let (total, intact, allShared) = try await Self.read(message, seed: 22)
            let report = try await sending.value
            #expect(report.bytes == 32 << 20 && total == 32 << 20 && intact && allShared)
            #expect(try await fabric.engines[0].bodyBytesSentFromPools() == 0, "no sendfile")
            #expect(try await fabric.engines[1].bodyBytesReadIntoPools() == 0, "no reads into the pool")
            await sender.close()
            await receiver.close()
        }
    }

    /// Across two nodes: the sender's chunks leave its pool (sendfile), arrive in the receiver's pool, and the
    /// receiver reads every byte in place, intact; every region lent comes back.
    @Test func crossNodeBodiesMoveThroughSharedMemory() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "shm-cross") { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(1), label: "rx", sharedMemory: .required())
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx", sharedMemory: .required())
            let senderShares = await sender.usesSharedMemory
            let receiverShares = await receiver.usesSharedMemory
            #expect(senderShares && receiverShares)
            let inbox = try await receiver.receive("shm/cross")
            try await fabric.waitForEndpoints(try Address("shm/cross"), count: 1)

            let sending = Task {
                try await sender.send(to: "shm/cross", body: .pattern(seed: 21, length: 96 << 20))
            }
            var messages = inbox.makeAsyncIterator()
            let message = try #require(try await messages.next())
            let (total, intact, allShared) = try await Self.read(message, seed: 21)
            let report = try await sending.value
            #expect(report.bytes == 96 << 20 && total == 96 << 20)
            #expect(allShared, "every chunk was read in place from the receive pool")
            #expect(intact)
            // The receiving node read the bodies from its socket straight into the pool (no copy of its own) for all
            // but the start of each chunk, which comes in the read that holds its header.
            let direct = try await fabric.engines[1].bodyBytesReadIntoPools()
            #expect(direct >= 90 << 20, "read into the pool: \(direct) of \(96 << 20) bytes")
            let byReference = try await fabric.engines[0].bodyBytesSentFromPools()
            #expect(byReference == 96 << 20, "sent from the pool with sendfile: \(byReference) bytes")
            // Small chunks (at most 64 KiB) leave the sender's node copied into the link's writes, not with sendfile:
            // intact too, and their regions come back as well. Bodies of at most `Limits.smallBodyBytesMax` go whole
            // in SMALL frames, and arrive in the frame, not in the pool.

            for (index, length) in [1, 1000, 64 << 10, (64 << 10) + 1].enumerated() {
                let seed = UInt64(30 + index)
                let small = Task {
                    try await sender.send(to: "shm/cross", body: .pattern(seed: seed, length: Int64(length)))
                }
                let message = try #require(try await messages.next())
                var received = 0
                for try await chunk in message.body {
                    let ok = try chunk.withUnsafeBytes {
                        PatternFill.check($0, seed: seed, offset: Int64(chunk.offset))
                    }
                    #expect(
                        ok && chunk.isShared == (length > Limits.smallBodyBytesMax),
                        "message of \(length) bytes, chunk at \(chunk.offset)")
                    received += chunk.count
                }
                let report = try await small.value
                #expect(received == length && report.bytes == UInt64(length))
            }
            for engine in fabric.engines {
                let returned = try await eventually { try await engine.statusSnapshot().sharedRegionsLent == 0 }
                #expect(returned, "node \(engine.name) still has regions lent")
            }
            await sender.close()
            await receiver.close()
        }
        let released = await eventually { ReadTarget.outstanding == 0 }
        #expect(released, "read buffers still lent into pools after the fabric stopped")
    }

    /// A generated body longer than two of its blocks goes as windows of one block filled once
    /// (``PatternFill/blockBytes(chunkBytes:)``), lent from the pool or sliced for the socket: every chunk arrives
    /// with the bytes of its own offset, across the ends of the pattern's period, the short last one too.
    @Test func longGeneratedBodiesGoFromOneBlock() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "shm-pattern") { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(1), label: "rx", sharedMemory: .required())
            let lending = try await FreightClient.connect(
                to: fabric.socket(0), label: "tx-shm", sharedMemory: .required())
            let socket = try await FreightClient.connect(to: fabric.tcp(0), label: "tx-tcp")
            let inbox = try await receiver.receive("shm/pattern")
            try await fabric.waitForEndpoints(try Address("shm/pattern"), count: 1)
            let chunkBytes = 256 << 10
            let length = 2 * PatternFill.blockBytes(chunkBytes: chunkBytes) + 4099
            var messages = inbox.makeAsyncIterator()
            for (seed, sender) in [(UInt64(41), lending), (42, socket)] {
                let sending = Task {
                    try await sender.send(
                        to: "shm/pattern", body: .pattern(seed: seed, length: Int64(length)),
                        options: SendOptions(chunkBytes: chunkBytes))
                }
                let message = try #require(try await messages.next())
                let (total, intact, _) = try await Self.read(message, seed: seed)
                let report = try await sending.value
                #expect(total == length && report.bytes == UInt64(length))
                #expect(intact, "the body sent with seed \(seed) arrived changed")
            }
            let fromPools = try await fabric.engines[0].bodyBytesSentFromPools()
            // All but the short last chunk, which is copied into the link's writes as chunks of at most 64 KiB are.
            #expect(
                fromPools >= UInt64(length - (64 << 10)) && fromPools < UInt64(length),
                "the lending app's chunks left its pool: \(fromPools) of \(length) bytes")
            await lending.close()
            await socket.close()
            await receiver.close()
        }
    }

    /// Same node: a shared buffer is handed over, not copied. The receiver sees the sender's very memory (a byte
    /// the sender writes afterwards shows through), and the region is not reused while the receiver holds it.
    @Test func sameNodeHandsOverWithoutCopyingAndNeverReusesAHeldRegion() async throws {
        try await InProcessFabric.with(nodes: 1, cluster: "shm-local") { fabric in
            let size = 32 * Self.mebibyte
            let receiver = try await FreightClient.connect(to: fabric.socket(0), label: "rx", sharedMemory: .required())
            let sender = try await FreightClient.connect(
                to: fabric.socket(0), label: "tx", sharedMemory: .required(sendBytes: size))
            let inbox = try await receiver.receive("shm/local")
            try await fabric.waitForEndpoints(try Address("shm/local"), count: 1)

            var buffer: SharedBuffer? = try await sender.allocate(size)
            buffer!.withUnsafeMutableBytes { PatternFill.fill($0, seed: 3, offset: 0) }
            let sending = Task { [buffer] in try await sender.send(to: "shm/local", body: .shared(buffer!)) }
            var messages = inbox.makeAsyncIterator()
            let message = try #require(try await messages.next())
            var chunks: [BodyChunk] = []
            for try await chunk in message.body { chunks.append(chunk) }
            _ = try await sending.value
            #expect(chunks.count == 1 && chunks[0].isShared && chunks[0].count == size)
            #expect(try chunks[0].withUnsafeBytes { PatternFill.check($0, seed: 3, offset: 0) })

            // The same memory: a write by the sender is visible to the receiver.
            buffer!.withUnsafeMutableBytes { $0[12345] = ~$0[12345] }
            let seen = try chunks[0].withUnsafeBytes { $0[12345] }
            #expect(seen == buffer!.withUnsafeBytes { $0[12345] })

            // Dropped by the sender but held by the receiver: the pool has no room for it again.
            buffer = nil
            try await Task.sleep(for: .milliseconds(100))
            await #expect(throws: FreightError.self) { _ = try await sender.allocate(size) }
            // Released by the receiver: the region comes back.
            chunks = []
            let reusable = await eventually { (try? await sender.allocate(size)) != nil }
            #expect(reusable)
            await sender.close()
            await receiver.close()
        }
    }

    /// One shared buffer lent by several messages in flight at once (a tensor sent to many, or sent again before
    /// the last send finished): every message arrives whole in that very memory, and the region comes back to the
    /// pool only after the last receiver released it.
    @Test func oneBufferLentByMessagesInFlightAtOnce() async throws {
        try await InProcessFabric.with(nodes: 1, cluster: "shm-many") { fabric in
            let size = 4 * Self.mebibyte
            let messages = 8
            let receiver = try await FreightClient.connect(to: fabric.socket(0), label: "rx", sharedMemory: .required())
            let sender = try await FreightClient.connect(
                to: fabric.socket(0), label: "tx", sharedMemory: .required(sendBytes: size))
            let inbox = try await receiver.receive("shm/many")
            try await fabric.waitForEndpoints(try Address("shm/many"), count: 1)

            var buffer: SharedBuffer? = try await sender.allocate(size)
            buffer!.withUnsafeMutableBytes { PatternFill.fill($0, seed: 11, offset: 0) }
            let sending = Task { [buffer] in
                try await withThrowingTaskGroup(of: UInt64.self) { group in
                    for _ in 0..<messages {
                        group.addTask { try await sender.send(to: "shm/many", body: .shared(buffer!)).bytes }
                    }
                    return try await group.reduce(0, +)
                }
            }
            // Hold every message's chunks until all have arrived: all are lent at once.
            var held: [[BodyChunk]] = []
            for try await message in inbox {
                var chunks: [BodyChunk] = []
                for try await chunk in message.body { chunks.append(chunk) }
                held.append(chunks)
                if held.count == messages { break }
            }
            #expect(try await sending.value == UInt64(size * messages))
            for chunks in held {
                #expect(chunks.count == 1 && chunks[0].isShared && chunks[0].count == size)
                #expect(try chunks[0].withUnsafeBytes { PatternFill.check($0, seed: 11, offset: 0) })
            }
            // The sender's buffer is gone, but every message still holds the region: no room for it in the pool.
            buffer = nil
            held.removeLast(messages - 1)
            try await Task.sleep(for: .milliseconds(100))
            await #expect(throws: FreightError.self) { _ = try await sender.allocate(size) }
            // The last holder releases it: the region comes back.
            held = []
            let reusable = await eventually { (try? await sender.allocate(size)) != nil }
            #expect(reusable)
            await sender.close()
            await receiver.close()
        }
    }

    /// A receiver that goes away while holding regions has them reclaimed; so does a sender that goes away while
    /// its regions are held (its pool closes once they come back).
    @Test func departedAppsHaveTheirRegionsReclaimed() async throws {
        try await InProcessFabric.with(nodes: 1, cluster: "shm-crash") { fabric in
            let engine = fabric.engines[0]
            let size = 8 * Self.mebibyte
            let sender = try await FreightClient.connect(
                to: fabric.socket(0), label: "tx", sharedMemory: .required(sendBytes: size))
            let buffer = try await sender.allocate(size)
            buffer.withUnsafeMutableBytes { PatternFill.fill($0, seed: 4, offset: 0) }

            // 1. The receiver vanishes holding the chunk.
            do {
                let receiver = try await FreightClient.connect(
                    to: fabric.socket(0), label: "rx1", sharedMemory: .required())
                let inbox = try await receiver.receive("shm/crash")
                try await fabric.waitForEndpoints(try Address("shm/crash"), count: 1)
                let sending = Task { try await sender.send(to: "shm/crash", body: .shared(buffer)) }
                var messages = inbox.makeAsyncIterator()
                let message = try #require(try await messages.next())
                var held: [BodyChunk] = []
                for try await chunk in message.body { held.append(chunk) }
                _ = try await sending.value
                #expect(try await engine.statusSnapshot().sharedRegionsLent == 1)
                await receiver.close()
                let reclaimed = try await eventually { try await engine.statusSnapshot().sharedRegionsLent == 0 }
                #expect(reclaimed, "the departed receiver's hold was dropped")
                // Its bytes are revoked for the app that kept the view.
                #expect(throws: FreightError.self) { try held[0].withUnsafeBytes { $0.count } }
            }

            // 2. The sender vanishes while a receiver holds its region: the pool stays open until released.
            let receiver = try await FreightClient.connect(
                to: fabric.socket(0), label: "rx2", sharedMemory: .required())
            let inbox = try await receiver.receive("shm/crash2")
            try await fabric.waitForEndpoints(try Address("shm/crash2"), count: 1)
            let sending = Task { try await sender.send(to: "shm/crash2", body: .shared(buffer)) }
            var messages = inbox.makeAsyncIterator()
            let message = try #require(try await messages.next())
            var held: [BodyChunk] = []
            for try await chunk in message.body { held.append(chunk) }
            _ = try await sending.value
            let withSender = try await engine.statusSnapshot().sharedPoolBytes
            await sender.close()
            try await Task.sleep(for: .milliseconds(200))
            // Its receive pool (nothing lent from it) closes at once; its send pool stays open while held.
            let receiveHalf = UInt64(Limits.sharedPoolHalfBytesDefault)
            #expect(
                try await engine.statusSnapshot().sharedPoolBytes == withSender - receiveHalf, "held pool stays open")
            #expect(try held[0].withUnsafeBytes { PatternFill.check($0, seed: 4, offset: 0) })
            held = []
            let closed = try await eventually {
                try await engine.statusSnapshot().sharedPoolBytes == withSender - receiveHalf - UInt64(size)
            }
            #expect(closed, "the departed sender's pool closed once its region came back")
            #expect(try await engine.statusSnapshot().sharedRegionsLent == 0)
            await receiver.close()
        }
    }

    /// An app that keeps another app's region past the hold limit is disconnected and the region returned. The limit
    /// runs on the node's injected clock: held while the clock stands, closed once it passes the limit.
    @Test func holdingPastTheLimitDisconnects() async throws {
        let clock = ManualClock()
        try await InProcessFabric.with(
            nodes: 1, cluster: "shm-hold", sharedHoldSeconds: 30, environment: .manual(clock, seed: 1)
        ) { fabric in
            let size = 4 * Self.mebibyte
            let sender = try await FreightClient.connect(
                to: fabric.socket(0), label: "tx", sharedMemory: .required(sendBytes: size))
            let receiver = try await FreightClient.connect(
                to: fabric.socket(0), label: "hoarder", sharedMemory: .required())
            let inbox = try await receiver.receive("shm/hold")
            try await fabric.waitForEndpoints(try Address("shm/hold"), count: 1)
            var buffer: SharedBuffer? = try await sender.allocate(size)
            let sending = Task { [buffer] in try await sender.send(to: "shm/hold", body: .shared(buffer!)) }
            var messages = inbox.makeAsyncIterator()
            let message = try #require(try await messages.next())
            var held: [BodyChunk] = []
            for try await chunk in message.body { held.append(chunk) }
            _ = try await sending.value
            buffer = nil
            // Two of the node's once-a-second checks with the clock standing still: nothing is taken back.
            try await Task.sleep(for: .milliseconds(2500))
            #expect(try await receiver.status().name == "n1", "within the hold limit the hoarder stays")
            #expect(try held[0].withUnsafeBytes { $0.count } > 0)
            clock.advance(by: .seconds(31))
            let reclaimed = await eventually(timeout: .seconds(8)) { (try? await sender.allocate(size)) != nil }
            #expect(reclaimed, "the region came back after the hold limit")
            // The hoarder learns of its disconnection on its own loop, a moment after the node returned the region.
            let disconnected = await eventually(timeout: .seconds(8)) { (try? await receiver.status()) == nil }
            #expect(disconnected, "the hoarder was disconnected")
            #expect(throws: FreightError.self) { try held[0].withUnsafeBytes { $0.count } }
            await #expect(throws: FreightError.self) { _ = try await receiver.status() }
            await sender.close()
            await receiver.close()
        }
    }

    /// The node's shared-memory budget: pools over one app's share (half the budget), or over what is left of it,
    /// are refused with the reason; `.automatic` falls back to the socket and still delivers.
    @Test func budgetIsEnforcedWithAClearError() async throws {
        try await InProcessFabric.with(
            nodes: 1, cluster: "shm-budget", sharedMemoryBudgetBytes: 160 * Self.mebibyte
        ) { fabric in
            let greedy = await #expect(throws: FreightError.self) {
                _ = try await FreightClient.connect(
                    to: fabric.socket(0), label: "greedy",
                    sharedMemory: .required(sendBytes: 48 * Self.mebibyte, receiveBytes: 48 * Self.mebibyte))
            }
            #expect(greedy?.message.contains("over one app's share") == true, "\(String(describing: greedy))")
            let first = try await FreightClient.connect(
                to: fabric.socket(0), label: "first",
                sharedMemory: .required(sendBytes: 32 * Self.mebibyte, receiveBytes: 32 * Self.mebibyte))
            let second = try await FreightClient.connect(
                to: fabric.socket(0), label: "second",
                sharedMemory: .required(sendBytes: 32 * Self.mebibyte, receiveBytes: 32 * Self.mebibyte))
            let refused = await #expect(throws: FreightError.self) {
                _ = try await FreightClient.connect(
                    to: fabric.socket(0), label: "third",
                    sharedMemory: .required(sendBytes: 32 * Self.mebibyte, receiveBytes: 32 * Self.mebibyte))
            }
            #expect(refused?.code == .resourceExhausted)
            #expect(refused?.message.contains("shared-memory budget") == true, "\(String(describing: refused))")
            await second.close()

            let fallback = try await FreightClient.connect(to: fabric.socket(0), label: "fourth")
            let fallbackShares = await fallback.usesSharedMemory
            #expect(!fallbackShares)
            let inbox = try await fallback.receive("shm/budget")
            try await fabric.waitForEndpoints(try Address("shm/budget"), count: 1)
            let sending = Task { try await first.send(to: "shm/budget", body: .pattern(seed: 8, length: 8 << 20)) }
            var messages = inbox.makeAsyncIterator()
            let message = try #require(try await messages.next())
            #expect(try await message.checkPattern(seed: 8))
            _ = try await sending.value
            await first.close()
            await fallback.close()
        }
    }
}
