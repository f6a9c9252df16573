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
            guard case .unix(let socketPath) = fabric.socket(0) else {
                throw FreightError(.internalError, "no Unix socket")
            }
            // Its blocking reads take a thread of their own: on a pool thread they could hold, with other suites'
            // blocking work, every thread the receiving app needs to take the message and grant its credit.
            let bytes = body
            let outcome = try await Strangers.onThread {
                Result { try Self.sendOneChunk(bytes, crc: crc, to: address, socketPath: socketPath) }
            }.get()

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

    /// A hand-written app on n1 (``WireApp``) sends one message of one chunk with the CRC it is given, and returns
    /// the node's DONE or ABORT for it.
    static func sendOneChunk(_ body: [UInt8], crc: UInt32, to address: Address, socketPath: String) throws -> Frame {
        let app = try WireApp(socketPath: socketPath, label: "raw", readTimeoutSeconds: 60)
        defer { app.close() }
        let id = try app.open(address.description, length: UInt64(body.count), chunkBytes: UInt32(body.count))
        let ended: (Frame) -> Bool = {
            switch $0 {
            case .done(let done): done.messageID == id
            case .abort(let abort): abort.messageID == id
            default: false
            }
        }
        let credit = try app.next {
            if case .ack(let ack) = $0 { return ack.messageID == id && ack.creditOffset >= UInt64(body.count) }
            return ended($0)
        }
        guard case .ack = credit else { return credit }
        try app.data(id, offset: 0, bytes: body, crc32c: crc, last: true)
        return try app.next(where: ended)
    }
}
