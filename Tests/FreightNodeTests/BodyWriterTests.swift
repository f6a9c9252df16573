import FreightClient
import FreightCore
import FreightTesting
import NIOCore
import Synchronization
import Testing

/// Streamed bodies (``BodyWriter``): bounded, ordered, and checked against the declared length.
@Suite(.serialized) struct BodyWriterTests {
    @Test func streamedBodyArrivesWholeAndWritersWaitForTheReceiver() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "stream") { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(1), label: "rx")
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx")
            let inbox = try await receiver.receive("stream/in")
            try await fabric.waitForEndpoints(try Address("stream/in"), count: 1)

            let length = 48 << 20
            let writer = BodyWriter(limitBytes: 1 << 20)
            let sending = Task {
                try await sender.send(to: "stream/in", body: .stream(writer, length: Int64(length)))
            }
            let written = Atomic<Int>(0)
            let writing = Task {
                var offset = 0
                while offset < length {
                    // Odd-sized pieces, so chunks are cut across them.
                    let count = min(777_777, length - offset)
                    var piece = ByteBufferAllocator().buffer(capacity: count)
                    piece.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
                        PatternFill.fill(
                            UnsafeMutableRawBufferPointer(rebasing: raw[..<count]), seed: 6, offset: Int64(offset))
                        return count
                    }
                    try await writer.write(piece)
                    offset += count
                    written.store(offset, ordering: .relaxed)
                }
                writer.finish()
            }
            // Nobody reads yet: the writer is held near the window plus its own limit, not the whole body.
            var messages = inbox.makeAsyncIterator()
            let message = try #require(try await messages.next())
            // Wait until the writer is held (nothing moves), then check how far it ran ahead.
            let ahead = try #require(
                try await settled { written.load(ordering: .relaxed) }, "the writer never stopped while nobody read")
            #expect(ahead < 40 << 20, "the writer ran \(ahead) bytes ahead")
            #expect(try await message.checkPattern(seed: 6))
            try await writing.value
            let report = try await sending.value
            #expect(report.bytes == UInt64(length))
            await sender.close()
            await receiver.close()
        }
    }

    @Test func aBodyShorterThanDeclaredFailsTheMessage() async throws {
        try await InProcessFabric.with(nodes: 1, cluster: "short") { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(0), label: "rx")
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx")
            let inbox = try await receiver.receive("stream/short")
            try await fabric.waitForEndpoints(try Address("stream/short"), count: 1)
            let writer = BodyWriter()
            let sending = Task { try await sender.send(to: "stream/short", body: .stream(writer, length: 1 << 20)) }
            var messages = inbox.makeAsyncIterator()
            let message = try #require(try await messages.next())
            try await writer.write(ByteBuffer(repeating: 1, count: 1000))
            writer.finish()
            let error = await #expect(throws: FreightError.self) { _ = try await sending.value }
            #expect(
                error?.message.contains("ended after 1000 of 1048576 bytes") == true, "\(String(describing: error))")
            await #expect(throws: FreightError.self) { _ = try await message.drain() }
            await sender.close()
            await receiver.close()
        }
    }
}
