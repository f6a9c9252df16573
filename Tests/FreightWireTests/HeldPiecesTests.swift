import FreightCore
import FreightWire
import NIOCore
import Testing

/// A body kept until its last piece has come (a chunk a node relays, a DATA frame that comes whole) holds its
/// pieces as slices of the reads they came in, and each slice keeps its whole read buffer alive.
struct HeldPiecesTests {
    /// A party that trickles a body a few bytes a read makes its receiver hold the body's bytes, not a read buffer
    /// for each few: past `Limits.readBuffersKeptAliveBytesMax`, pieces are copied onto a buffer of the list's own, and the
    /// bytes are the same.
    @Test func aTrickledBodyKeepsBoundedReadBuffersAlive() {
        let bodyBytes = 256 << 10
        var held = HeldPieces()
        var sent: [UInt8] = []
        var pieces = 0
        while sent.count < bodyBytes {
            let size = min(100 + pieces % 7, bodyBytes - sent.count)
            let bytes = (0..<size).map { UInt8(truncatingIfNeeded: sent.count * 31 + $0) }
            var read = ByteBufferAllocator().buffer(capacity: 1 << 20)
            read.writeBytes(bytes)
            sent += bytes
            pieces += 1
            held.append(read, remaining: bodyBytes - sent.count)
        }
        #expect(pieces > 2_000)
        #expect(held.keptAliveBytes <= Limits.readBuffersKeptAliveBytesMax)
        let storage = held.pieces.reduce(0) { $0 + $1.storageCapacity }
        #expect(
            storage <= Limits.readBuffersKeptAliveBytesMax + 2 * bodyBytes,
            "\(pieces) pieces of a body of \(bodyBytes) bytes hold \(storage) bytes of buffers")
        #expect(held.pieces.count < 16)
        var joined: [UInt8] = []
        for piece in held.pieces { joined += piece.readableBytesView }
        #expect(joined == sent)
    }

    /// Pieces that are most of their read buffers stay the slices they are: no copy on the usual path.
    @Test func largePiecesAreKeptAsTheyCame() {
        var held = HeldPieces()
        for index in 0..<4 {
            held.append(ByteBuffer(repeating: UInt8(index), count: 1 << 20), remaining: (3 - index) << 20)
        }
        #expect(held.pieces.count == 4 && held.keptAliveBytes == 0)
        #expect(held.pieces.map(\.readableBytes) == Array(repeating: 1 << 20, count: 4))
    }

    /// A DATA frame that comes whole (a gateway link's) and arrives a few bytes a read: the parser holds the chunk's
    /// bytes within the same bound, and they are the chunk's.
    @Test func aWholeDataFrameTrickledInIsHeldWithinTheBound() throws {
        let body = ByteBuffer(bytes: (0..<(128 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        let chunk = DataChunk(messageID: 9, offset: 0, crc32c: CRC32C.checksum(body), isLast: true, bytes: body)
        let bytes = try FrameEncoder.encode(.data(chunk))
        var parser = FrameParser(limits: FrameLimits(streamsChunks: false), expectPreface: false)
        var frames: [Frame] = []
        var from = 0
        while from < bytes.readableBytes {
            let size = min(97, bytes.readableBytes - from)
            var read = ByteBufferAllocator().buffer(capacity: 1 << 20)
            read.writeImmutableBuffer(bytes.getSlice(at: from, length: size)!)
            try parser.feed(read) { frames.append($0) }
            from += size
        }
        guard frames.count == 1, case .data(let arrived) = frames[0] else {
            Issue.record("one DATA frame, got \(frames.count)")
            return
        }
        let storage = arrived.pieces.reduce(0) { $0 + $1.storageCapacity }
        #expect(
            storage <= Limits.readBuffersKeptAliveBytesMax + 2 * body.readableBytes, "\(storage) bytes of buffers held")
        var joined = ByteBuffer()
        for var piece in arrived.pieces { joined.writeBuffer(&piece) }
        #expect(joined == body)
    }
}
