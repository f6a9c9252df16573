import Foundation
import FreightCore
import FreightTesting
import FreightWire
import NIOCore
import Testing

@testable import FreightClient

/// What an app may not do with shared memory (docs/threat-model.md, "Shared memory"), written as a careless or
/// hostile app would, with frames the client never sends: each costs that app its connection and no one else
/// anything; and a region whose bytes changed after their checksum was taken fails its message at the receiver
/// across a link, not silently.
@Suite struct SharedAbuseTests {
    static let mebibyte = 1 << 20

    /// Sends `frame` on `client`'s connection to its node, as the client itself never would.
    static func sendRaw(_ client: FreightClient, _ frame: Frame) async throws {
        let core = client.core
        try await core.eventLoop.submit { core.connection?.send(frame) }.get()
    }

    static func eventually(timeout: Duration = .seconds(10), _ condition: () async -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if await condition() { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    /// A SHARED frame naming a region outside the app's own send pool, and a RELEASE of a region never lent to it:
    /// each disconnects that app, and another app on the same node sends on.
    @Test func foreignRegionsAndReleasesDisconnectOnlyThatApp() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "shm-abuse") { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(1), label: "rx", sharedMemory: .required())
            let inbox = try await receiver.receive("shm/abuse")
            try await fabric.waitForEndpoints(try Address("shm/abuse"), count: 1)
            let honest = try await FreightClient.connect(
                to: fabric.socket(0), label: "honest", sharedMemory: .required())

            let beyond = try await FreightClient.connect(
                to: fabric.socket(0), label: "beyond", sharedMemory: .required())
            let pool = try #require(try await beyond.core.eventLoop.submit { beyond.core.shared?.sendPoolID }.get())
            let receivePool = try #require(
                try await beyond.core.eventLoop.submit { beyond.core.shared?.receivePoolID }.get())
            let foreignPool = try await FreightClient.connect(
                to: fabric.socket(0), label: "foreign-pool", sharedMemory: .required())
            let releaser = try await FreightClient.connect(
                to: fabric.socket(0), label: "releaser", sharedMemory: .required())
            // Past the end of its own send pool; in its receive pool (the node's to write); a region never lent.
            try await Self.sendRaw(
                beyond,
                .shared(
                    SharedChunk(
                        messageID: 1, offset: 0, crc32c: nil, isLast: true,
                        region: SharedRegion(pool: pool, offset: 1 << 40, length: 4096))))
            try await Self.sendRaw(
                foreignPool,
                .shared(
                    SharedChunk(
                        messageID: 1, offset: 0, crc32c: nil, isLast: true,
                        region: SharedRegion(pool: receivePool, offset: 0, length: 4096))))
            try await Self.sendRaw(releaser, .release([SharedRegion(pool: receivePool, offset: 0, length: 4096)]))
            for app in [beyond, foreignPool, releaser] {
                let gone = await Self.eventually { (try? await app.status()) == nil }
                #expect(gone, "the node kept an app that named a region not its own")
            }
            let sending = Task { try await honest.send(to: "shm/abuse", body: .pattern(seed: 5, length: 3 << 20)) }
            var messages = inbox.makeAsyncIterator()
            let message = try #require(try await messages.next())
            var received = 0
            for try await chunk in message.body { received += chunk.count }
            #expect(received == 3 << 20)
            #expect(try await sending.value.bytes == 3 << 20)
            for app in [honest, beyond, foreignPool, releaser, receiver] { await app.close() }
        }
    }

    /// An app lends a region whose bytes no longer match the checksum it gave (as when it rewrites a region while
    /// lent): the receiver on the other node finds the mismatch and the message fails there with
    /// `checksumMismatch`; the next message of the same app goes through.
    @Test func aRewrittenLentRegionIsCaughtAcrossTheLink() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "shm-rewrite") { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(1), label: "rx", sharedMemory: .required())
            let inbox = try await receiver.receive("shm/rewritten")
            try await fabric.waitForEndpoints(try Address("shm/rewritten"), count: 1)
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx", sharedMemory: .required())
            let buffer = try await sender.allocate(Self.mebibyte)
            buffer.withUnsafeMutableBytes { PatternFill.fill($0, seed: 9, offset: 0) }
            let checksum = buffer.withUnsafeMutableBytes { CRC32C.checksum(UnsafeRawBufferPointer($0)) }
            buffer.withUnsafeMutableBytes { $0[4096] ^= 0xFF }  // rewritten after its checksum was taken
            let pool = try #require(try await sender.core.eventLoop.submit { sender.core.shared?.sendPoolID }.get())
            let id = UInt64.random(in: 1...UInt64.max)
            var open = Freight_Wire_V1_Open()
            open.header.id = id
            open.header.source = "tx"
            open.header.destination = "shm/rewritten"
            open.header.length = UInt64(Self.mebibyte)
            open.header.chunkBytes = UInt32(Self.mebibyte)
            try await Self.sendRaw(sender, .open(open))
            var messages = inbox.makeAsyncIterator()
            let message = try #require(try await messages.next())
            let reading = Task {
                for try await _ in message.body {}
            }
            // The receiver asks again for a chunk that fails its check, a few times (a broken link is the usual
            // cause); the region still does not match, so past the limit the check is the verdict.
            let region = SharedRegion(pool: pool, offset: UInt64(buffer.offset), length: UInt64(Self.mebibyte))
            for _ in 0...Limits.chunkResendsMax {
                try await Task.sleep(for: .milliseconds(200))  // the receiver's credit, or its request to send again
                try await Self.sendRaw(
                    sender,
                    .shared(SharedChunk(messageID: id, offset: 0, crc32c: checksum, isLast: true, region: region)))
            }
            await #expect {
                try await reading.value
            } throws: { error in
                (error as? FreightError)?.code == .checksumMismatch
            }
            let sending = Task { try await sender.send(to: "shm/rewritten", body: .pattern(seed: 3, length: 2 << 20)) }
            let next = try #require(try await messages.next())
            var received = 0
            for try await chunk in next.body { received += chunk.count }
            #expect(received == 2 << 20)
            #expect(try await sending.value.bytes == 2 << 20)
            await sender.close()
            await receiver.close()
        }
    }
}
