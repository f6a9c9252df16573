import Foundation
import FreightCore
import FreightTesting
import FreightWire
import NIOCore
import Testing

@testable import FreightClient

#if canImport(Glibc)
    import Glibc
#endif

/// Files an app lends its node for sending (docs/small-messages-and-files.md, "Whole files"): the node sends them
/// with `sendfile` from the file itself, takes them back when the message ends, and treats a file that shrank, or
/// a descriptor that is not a file, as the app's failure alone.
@Suite struct LentFileTests {
    static let mebibyte = 1 << 20

    static func folder() throws -> String {
        let path = NSTemporaryDirectory() + "freight-lent-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Lends the open file `fd` over a descriptor link of its own, as the client does for `send --file`.
    static func lend(_ client: FreightClient, fd: Int32, bytes: UInt64) async throws -> Result<
        (pool: UInt32, link: Int32), FreightError
    > {
        let shared = try #require(try await client.core.eventLoop.submit { client.core.shared }.get())
        let (path, token) = (shared.socketPath, shared.token)
        return await Task.detached { ClientShared.lendFile(socketPath: path, token: token, fd: fd, bytes: bytes) }.value
    }

    /// `send --file` with shared memory: the sending node reads the file itself (every chunk sent from it by
    /// `sendfile`), the receiver gets every byte, and the node holds no file once the message is delivered.
    @Test func aFileIsSentByItsNodeFromTheFile() async throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = folder + "/weights.bin"
        let size = 24 * Self.mebibyte + 4321
        try await TestFiles.write(path, bytes: Int64(size), seed: 21)
        try await InProcessFabric.with(nodes: 2, cluster: "lent-file") { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(1), label: "rx")
            let inbox = try await receiver.receive("files/weights")
            try await fabric.waitForEndpoints(try Address("files/weights"), count: 1)
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx", sharedMemory: .required())
            let before = try await fabric.engines[0].bodyBytesSentFromPools()
            let sending = Task { try await sender.send(to: "files/weights", body: .file(path: path)) }
            var messages = inbox.makeAsyncIterator()
            let message = try #require(try await messages.next())
            #expect(try await message.checkPattern(seed: 21))
            let report = try await sending.value
            #expect(report.bytes == UInt64(size))
            #expect(report.failures.isEmpty)
            let sentFromFile = try await fabric.engines[0].bodyBytesSentFromPools() - before
            // Every whole chunk; the 4,321-byte tail goes as a copy, in one write with the frames around it.
            #expect(
                sentFromFile == UInt64(24 * Self.mebibyte),
                "the node sent \(sentFromFile) of \(size) bytes from the file")
            let taken = await SharedAbuseTests.eventually { (try? await fabric.engines[0].filesLent()) == 0 }
            #expect(taken, "the node still holds the file after its message was delivered")
            await sender.close()
            await receiver.close()
        }
    }

    /// A lent file that shrank before the node sent a region of it fails that message for both apps with the
    /// reason (the node never sends from past the file's end, which `sendfile` cannot); the app and the node go on,
    /// and a descriptor that is not a regular file is refused when lent.
    @Test func aFileThatShrankFailsItsMessageAndTheNodeServesOn() async throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = folder + "/shrinking.bin"
        try await TestFiles.write(path, bytes: Int64(8 * Self.mebibyte), seed: 5)
        try await InProcessFabric.with(nodes: 2, cluster: "lent-shrink") { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(1), label: "rx")
            let inbox = try await receiver.receive("files/shrink")
            try await fabric.waitForEndpoints(try Address("files/shrink"), count: 1)
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx", sharedMemory: .required())

            let fd = open(path, O_RDONLY)
            #expect(fd >= 0)
            defer { close(fd) }
            let lent = try await Self.lend(sender, fd: fd, bytes: UInt64(8 * Self.mebibyte)).get()
            defer { close(lent.link) }
            #expect(truncate(path, off_t(Self.mebibyte)) == 0)

            let id = UInt64.random(in: 1...UInt64.max)
            var open = Freight_Wire_V1_Open()
            open.header.id = id
            open.header.source = "tx"
            open.header.destination = "files/shrink"
            open.header.length = UInt64(8 * Self.mebibyte)
            open.header.chunkBytes = UInt32(Self.mebibyte)
            try await SharedAbuseTests.sendRaw(sender, .open(open))
            var messages = inbox.makeAsyncIterator()
            let message = try #require(try await messages.next())
            let reading = Task { for try await _ in message.body {} }
            try await Task.sleep(for: .milliseconds(200))  // the receiver's credit
            let region = SharedRegion(pool: lent.pool, offset: UInt64(4 * Self.mebibyte), length: UInt64(Self.mebibyte))
            try await SharedAbuseTests.sendRaw(
                sender, .shared(SharedChunk(messageID: id, offset: 0, crc32c: 0, isLast: false, region: region)))
            await #expect {
                try await reading.value
            } throws: { error in
                (error as? FreightError)?.message.contains("ends before offset") == true
            }

            // Not a regular file: refused, with the reason.
            var ends: [Int32] = [0, 0]
            #expect(pipe(&ends) == 0)
            defer { for end in ends { close(end) } }
            let refused = try await Self.lend(sender, fd: ends[0], bytes: 4096)
            #expect(throws: FreightError.self) { try refused.get() }
            if case .failure(let error) = refused { #expect(error.message.contains("regular file")) }

            // The same app sends on, through its node.
            let sending = Task { try await sender.send(to: "files/shrink", body: .pattern(seed: 3, length: 2 << 20)) }
            let next = try #require(try await messages.next())
            #expect(try await next.checkPattern(seed: 3))
            #expect(try await sending.value.bytes == 2 << 20)
            await sender.close()
            await receiver.close()
        }
    }
}
