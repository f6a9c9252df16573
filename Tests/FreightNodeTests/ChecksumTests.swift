import Foundation
import FreightClient
import FreightCore
import FreightNode
import FreightTesting
import FreightTransport
import FreightWire
import NIOCore
import Testing

/// The last node checks each chunk's CRC32C as its bytes arrive (docs/wire-protocol.md): a chunk corrupted on the
/// way fails its message with `checksumMismatch` for every kind of receiver, and an intact one is delivered.
@Suite(.serialized) struct ChecksumTests {
    enum Receiver: String, CaseIterable { case sharedMemoryApp = "shm", inProcessSink = "sink" }

    @Test(arguments: Receiver.allCases, [true, false])
    func aCorruptedChunkFailsItsMessage(_ kind: Receiver, intact: Bool) async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "crc-\(kind.rawValue)") { fabric in
            let address = try Address("crc/\(kind.rawValue)")
            var receiver: FreightClient?
            var consuming: Task<(bytes: Int, failure: FreightError?), any Error>?
            switch kind {
            case .sharedMemoryApp:
                receiver = try await FreightClient.connect(to: fabric.socket(1), label: "rx", sharedMemory: .required())
                let inbox = try await receiver!.receive(address.description)
                // An app grants credit as it takes a message: it reads while the message is sent.
                consuming = Task {
                    var messages = inbox.makeAsyncIterator()
                    let message = try #require(try await messages.next())
                    var received = 0
                    do {
                        for try await chunk in message.body {
                            #expect(
                                try chunk.withUnsafeBytes {
                                    PatternFill.check($0, seed: 9, offset: Int64(chunk.offset))
                                })
                            received += chunk.count
                        }
                    } catch let error as FreightError {
                        return (received, error)
                    }
                    return (received, nil)
                }
            case .inProcessSink:
                _ = try await fabric.engines[1].attachSink(AddressPattern(address))
            }
            try await fabric.waitForEndpoints(address, count: 1)

            // A raw app on n1 whose one chunk carries the bytes' CRC32C, or that CRC with one bit flipped.
            let size = 3 << 20
            var body = [UInt8](repeating: 0, count: size)
            body.withUnsafeMutableBytes { PatternFill.fill($0, seed: 9, offset: 0) }
            let crc = CRC32C.checksum(body) ^ (intact ? 0 : 1)
            guard case .tcp(let host, let port) = fabric.tcp(0) else {
                throw FreightError(.internalError, "no TCP port")
            }
            let outcome = try await Task.detached {
                try RawApp.sendOneChunk(body, crc: crc, to: address, host: host, port: port)
            }.value

            if intact {
                guard case .done(let done) = outcome else {
                    throw FreightError(.internalError, "expected DONE: \(outcome)")
                }
                #expect(done.deliveries.count == 1)
            } else {
                guard case .abort(let abort) = outcome else {
                    throw FreightError(.internalError, "expected ABORT: \(outcome)")
                }
                #expect(abort.error.code == .checksumMismatch, "\(abort.error)")
            }
            if let received = try await consuming?.value {
                if intact {
                    #expect(received.failure == nil && received.bytes == size)
                } else {
                    #expect(received.failure?.code == .checksumMismatch, "\(String(describing: received.failure))")
                }
            }
            await receiver?.close()
        }
    }
}

/// An app written against the wire protocol by hand (blocking TCP): it sends one message of one chunk with the CRC
/// it is given, and returns the node's DONE or ABORT for it.
enum RawApp {
    static func sendOneChunk(_ body: [UInt8], crc: UInt32, to address: Address, host: String, port: Int) throws -> Frame
    {
        let fd = try BlockingSocket.connect(host: host, port: port, readTimeoutSeconds: 20)
        defer { close(fd) }

        func write(_ buffer: ByteBuffer) throws {
            var left = buffer
            while left.readableBytes > 0 {
                let count = left.withUnsafeReadableBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                guard count > 0 else { throw FreightError(.io, "write failed") }
                left.moveReaderIndex(forwardBy: count)
            }
        }
        var parser = FrameParser()
        var frames: [Frame] = []
        func next(where wanted: (Frame) -> Bool) throws -> Frame {
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                if let index = frames.firstIndex(where: wanted) { return frames.remove(at: index) }
                let count = read(fd, &chunk, chunk.count)
                guard count > 0 else { throw FreightError(.io, "the node closed the connection or did not answer") }
                try parser.feed(ByteBuffer(bytes: chunk[..<count])) { frames.append($0) }
            }
        }

        var hello = Freight_Wire_V1_Hello()
        hello.role = .app
        hello.name = "raw"
        try write(FrameEncoder.prefaceBuffer(allocator: ByteBufferAllocator()))
        try write(FrameEncoder.encode(.hello(hello)))
        _ = try next { if case .hello = $0 { true } else { false } }

        let id = UInt64.random(in: 1...UInt64.max)
        var open = Freight_Wire_V1_Open()
        open.header.id = id
        open.header.source = "raw"
        open.header.destination = address.description
        open.header.length = UInt64(body.count)
        open.header.chunkBytes = UInt32(body.count)
        try write(FrameEncoder.encode(.open(open)))
        let ended: (Frame) -> Bool = {
            switch $0 {
            case .done(let done): done.messageID == id
            case .abort(let abort): abort.messageID == id
            default: false
            }
        }
        let credit = try next {
            if case .ack(let ack) = $0 { return ack.messageID == id && ack.creditOffset >= UInt64(body.count) }
            return ended($0)
        }
        guard case .ack = credit else { return credit }
        let chunk = DataChunk(messageID: id, offset: 0, crc32c: crc, isLast: true, bytes: ByteBuffer(bytes: body))
        try write(FrameEncoder.encode(.data(chunk)))
        return try next(where: ended)
    }
}
