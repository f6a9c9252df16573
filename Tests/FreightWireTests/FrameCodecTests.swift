import Foundation
import FreightCore
import NIOCore
import NIOEmbedded
import Testing

@testable import FreightWire

@Suite struct FrameCodecTests {
    static func sampleFrames() -> [Frame] {
        var header = Freight_Wire_V1_MessageHeader()
        header.id = 0xDEAD_BEEF
        header.destination = "llm/decode/3"
        header.length = 123_456
        header.attributes = ["k": "v"]
        var open = Freight_Wire_V1_Open()
        open.header = header
        open.path = ["n1"]
        var hello = Freight_Wire_V1_Hello()
        hello.role = .node
        hello.name = "n1"
        var request = Freight_Wire_V1_Request()
        request.requestID = 9
        request.kind = .register(.with { $0.pattern = "a/**" })
        let body = ByteBuffer(bytes: (0..<1000).map { UInt8(truncatingIfNeeded: $0) })
        return [
            .hello(hello),
            .open(open),
            .data(DataChunk(messageID: 7, offset: 4096, crc32c: CRC32C.checksum(body), isLast: true, bytes: body)),
            .ack(7, acked: 10, credit: 20),
            .abort(7, FreightError(.noRoute, "no route to x")),
            .request(request),
            .done(.with { $0.messageID = 7 }),
            .endpoints(.with { $0.full = true }),
            .members(.with { $0.members = [.with { $0.name = "n2" }] }),
            .shared(
                SharedChunk(
                    messageID: 7, offset: 1 << 20, crc32c: 0xABCD, isLast: true,
                    region: SharedRegion(pool: 3, offset: 8192, length: 4096))),
            .shared(
                SharedChunk(
                    messageID: 8, offset: 0, crc32c: nil, isLast: false,
                    region: SharedRegion(pool: 4, offset: 0, length: 1 << 30))),
            .release([SharedRegion(pool: 3, offset: 8192, length: 4096), SharedRegion(pool: 4, offset: 0, length: 1)]),
        ]
    }

    static func stream(_ frames: [Frame]) throws -> ByteBuffer {
        var buffer = ByteBuffer(bytes: WireV1.preface)
        for frame in frames {
            var encoded = try FrameEncoder.encode(frame)
            buffer.writeBuffer(&encoded)
        }
        return buffer
    }

    static func describe(_ frame: Frame) -> String {
        if case .data(let chunk) = frame {
            return
                "data \(chunk.messageID) \(chunk.offset) \(chunk.crc32c) \(chunk.isLast) \(Array(chunk.joined.readableBytesView))"
        }
        return "\(frame)"
    }

    @Test func manyFramesInOneBuffer() throws {
        let frames = Self.sampleFrames()
        let buffer = try Self.stream(frames)
        var parser = FrameParser()
        var decoded: [Frame] = []
        try parser.feed(buffer) { decoded.append($0) }
        #expect(decoded.map(Self.describe) == frames.map(Self.describe))
        // A chunk read in one piece is a slice of the read, not a copy.
        if case .data(let chunk) = decoded[2] { #expect(chunk.pieces.count == 1) }
    }

    @Test func oneByteAtATime() throws {
        let frames = Self.sampleFrames()
        let all = try Self.stream(frames)
        var parser = FrameParser()
        var decoded: [Frame] = []
        for byte in all.readableBytesView {
            try parser.feed(ByteBuffer(bytes: [byte])) { decoded.append($0) }
        }
        #expect(decoded.map(Self.describe) == frames.map(Self.describe))
        if case .data(let chunk) = decoded[2] { #expect(chunk.checksumMatches) }
    }

    @Test func decoderInAChannel() throws {
        let channel = EmbeddedChannel(handler: FrameReader())
        try channel.writeInbound(try Self.stream(Self.sampleFrames()))
        var count = 0
        while try channel.readInbound(as: ParserEvent.self) != nil { count += 1 }
        #expect(count == Self.sampleFrames().count)
        _ = try channel.finish()
    }

    @Test func rejectsWhatBreaksTheRules() throws {
        func parse(_ bytes: [UInt8], limits: FrameLimits = FrameLimits()) -> FrameParser.ParseError? {
            var parser = FrameParser(limits: limits)
            do {
                try parser.feed(ByteBuffer(bytes: bytes)) { _ in }
                return nil
            } catch {
                return error
            }
        }
        let preface = WireV1.preface
        #expect(parse(Array("GET / HTTP/1.1\r\n".utf8)) == .badPreface)
        #expect(parse([70, 82, 71, 84, 0, 2, 0, 0]) == .unsupportedVersion(2))
        #expect(parse(preface + [0, 0, 0, 0, 99, 0, 0, 0]) == .unknownFrameType(99))
        #expect(parse(preface + [0, 0, 0, 0, 2, 0, 0, 1]) == .reservedBitsSet)
        // A control frame over 64 KiB is refused from its header alone, before its bytes arrive.
        #expect(parse(preface + [0, 1, 0, 1, 2, 0, 0, 0]) == .frameTooLarge(type: 2, bytes: 65537, limit: 65536))
        // A DATA frame over the chunk limit, likewise.
        let limits = FrameLimits(chunkBytesMax: 1024)
        #expect(
            parse(preface + [0, 0, 4, 21, 1, 0, 0, 0], limits: limits)
                == .frameTooLarge(type: 1, bytes: 1045, limit: 1044))
        #expect(parse(preface + [0, 0, 0, 3, 1, 0, 0, 0, 1, 2, 3]) == .dataFrameTooShort(3))
        if case .malformedControlFrame = parse(preface + [0, 0, 0, 2, 2, 0, 0, 0, 0xFF, 0xFF]) {
        } else {
            Issue.record("garbage protobuf must be refused")
        }
        // SHARED is exactly 40 bytes with only the last/checksum flags; RELEASE whole 20-byte entries.
        func isMalformed(_ error: FrameParser.ParseError?) -> Bool {
            if case .malformedControlFrame = error { true } else { false }
        }
        #expect(isMalformed(parse(preface + [0, 0, 0, 2, 11, 0, 0, 0, 1, 2])))
        #expect(parse(preface + [0, 0, 0, 40, 11, 4, 0, 0]) == .reservedBitsSet)
        #expect(isMalformed(parse(preface + [0, 0, 0, 19, 12, 0, 0, 0] + [UInt8](repeating: 0, count: 19))))
        #expect(parse(preface + [0, 0, 0, 20, 12, 1, 0, 0]) == .reservedBitsSet)
        // A truncated frame is not an error: the parser waits for the rest.
        #expect(parse(preface + [0, 0, 0, 10, 2, 0, 0, 0, 1]) == nil)
    }

    /// Random and mutated bytes, fed in random splits, end in frames, a wait for more, or a parse error: never a
    /// crash, and nothing decoded breaks a limit. The unmutated stream decodes to the sample frames in every split,
    /// and the mutations are strong enough that some streams are refused: a parser that refused everything, or
    /// accepted everything, fails here. Seeded: a failure names the seed (`FREIGHT_FUZZ_SEED=N` replays it).
    @Test func randomAndMutatedBytesStayWithinTheLimits() throws {
        let seed =
            ProcessInfo.processInfo.environment["FREIGHT_FUZZ_SEED"].flatMap(UInt64.init)
            ?? UInt64.random(in: 1...UInt64.max)
        var rng = SeededRandom(seed: seed)
        let limits = FrameLimits(chunkBytesMax: 64 * 1024)
        let frames = Self.sampleFrames()
        let valid = Array(try Self.stream(frames).readableBytesView)
        var refused = 0
        var decodedFrames = 0
        for round in 0..<3000 {
            var bytes: [UInt8]
            let mutated: Bool
            if round % 10 == 9 {
                bytes = valid
                mutated = false
            } else if round % 2 == 0 {
                bytes = valid
                for _ in 0..<Int.random(in: 1...8, using: &rng) {
                    let index = Int.random(in: 0..<bytes.count, using: &rng)
                    bytes[index] = UInt8.random(in: 0...255, using: &rng)
                }
                if round % 4 == 0 { bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng))) }
                mutated = true
            } else {
                bytes =
                    WireV1.preface
                    + (0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                mutated = true
            }
            var parser = FrameParser(limits: limits)
            var decoded: [Frame] = []
            do {
                var rest = bytes[...]
                while !rest.isEmpty {
                    let take = Int.random(in: 1...rest.count, using: &rng)
                    try parser.feed(ByteBuffer(bytes: rest.prefix(take))) { decoded.append($0) }
                    rest = rest.dropFirst(take)
                }
            } catch {
                refused += 1
                #expect(mutated, "seed \(seed) round \(round): the valid stream was refused: \(error)")
            }
            decodedFrames += decoded.count
            for frame in decoded {
                if let broken = Self.limitBroken(frame, limits) {
                    Issue.record("seed \(seed) round \(round): decoded \(frame.type) breaks a limit: \(broken)")
                }
            }
            if !mutated {
                #expect(
                    decoded.map(Self.describe) == frames.map(Self.describe),
                    "seed \(seed) round \(round): the valid stream decoded differently")
            }
        }
        #expect(refused > 100, "seed \(seed): only \(refused) of 3000 random streams were refused")
        #expect(decodedFrames > 1000, "seed \(seed): only \(decodedFrames) frames decoded")
    }

    /// What a decoded frame may never be, whatever bytes it came from.
    static func limitBroken(_ frame: Frame, _ limits: FrameLimits) -> String? {
        switch frame {
        case .data(let chunk):
            if chunk.count > limits.chunkBytesMax { return "chunk of \(chunk.count) bytes" }
            if chunk.offset > UInt64(Int64.max) { return "offset \(chunk.offset)" }
        case .shared(let chunk):
            if chunk.region.offset > UInt64(Int64.max) || chunk.region.length > UInt64(Int64.max)
                || chunk.offset > UInt64(Int64.max)
            {
                return "region \(chunk.region) at \(chunk.offset)"
            }
        case .release(let regions):
            if regions.isEmpty || regions.count > limits.controlFrameBytesMax / WireV1.releaseEntryBytes {
                return "\(regions.count) regions"
            }
        default:
            // A control frame's protobuf is at most the frame's payload: encoding it again cannot exceed the limit.
            guard let encoded = try? FrameEncoder.encode(frame) else { return "does not encode again" }
            if encoded.readableBytes > limits.controlFrameBytesMax + WireV1.frameHeaderBytes {
                return "\(encoded.readableBytes) bytes"
            }
        }
        return nil
    }
}

/// SMALL and OUTCOMES frames (docs/wire-protocol.md): binary, with one string table per frame.
@Suite struct SmallFrameTests {
    static func messages() -> [SmallMessage] {
        (0..<5).map { index in
            var header = Freight_Wire_V1_MessageHeader()
            header.id = UInt64(index) + 1
            header.source = "n1/tx"
            header.destination = "llm/tokens/\(index % 2)"
            // A header whose only extra field is the filters it passed: they travel too.
            if index == 2 { header.filters = ["scrub"] }
            if index == 3 {
                header.attributes = ["k": "v"]
                header.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            }
            let body = ByteBuffer(bytes: (0..<(index * 100)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
            return SmallMessage(
                header: header, targetNode: "n2", targetID: 9, path: index == 4 ? [] : ["n1"], body: body,
                crc32c: CRC32C.checksum(body))
        }
    }

    /// What a fresh parser reads back from `frame` encoded.
    static func decoded(_ frame: Frame) throws -> [Frame] {
        var parser = FrameParser(expectPreface: false)
        var frames: [Frame] = []
        try parser.feed(try FrameEncoder.encode(frame)) { frames.append($0) }
        return frames
    }

    /// SMALL frames carry whole messages of up to 64 KiB, so their limit is their own (1 MiB) while every other
    /// control frame keeps 64 KiB; a sender encodes within what its receiver takes, and past it the encoder throws,
    /// so that the batch is split.
    @Test func smallFramesHaveALimitOfTheirOwn() throws {
        let body = ByteBuffer(repeating: 3, count: Limits.smallBodyBytesMax)
        let messages = (0..<4).map { index in
            SmallMessage(
                id: UInt64(index + 1), source: "a/s", destination: "b/d", extras: nil, body: body,
                crc32c: CRC32C.checksum(body))
        }
        // 256 KiB of bodies in one frame, parsed back whole.
        guard case .small(let decoded) = try #require(try Self.decoded(.small(messages)).first) else {
            Issue.record("not a SMALL frame")
            return
        }
        #expect(decoded.map(\.id) == [1, 2, 3, 4] && decoded.allSatisfy { $0.body == body })
        // A receiver that takes SMALL as first published: the same batch is too large for it.
        var buffer = ByteBuffer()
        #expect(throws: FreightError.self) {
            try FrameEncoder.control(
                .small(messages), into: &buffer, smallFrameBytesMax: Limits.controlFrameBytesMax)
        }
        #expect(buffer.readableBytes == 0, "nothing of a refused frame is left in the buffer")
        // The parser refuses a SMALL frame past its limit from the header alone, and other control frames past 64 KiB.
        func header(_ length: Int, type: WireV1.FrameType) -> ByteBuffer {
            var bytes = ByteBuffer()
            bytes.writeInteger(UInt32(length))
            bytes.writeInteger(type.rawValue)
            bytes.writeInteger(UInt8(0))
            bytes.writeInteger(UInt16(0))
            return bytes
        }
        func refusal(_ bytes: ByteBuffer) -> FrameParser.ParseError? {
            var parser = FrameParser(expectPreface: false)
            do {
                try parser.feed(bytes) { _ in }
                return nil
            } catch {
                return error
            }
        }
        let smallMax = Limits.smallFrameBytesMax
        #expect(refusal(header(smallMax, type: .small)) == nil)
        #expect(
            refusal(header(smallMax + 1, type: .small))
                == .frameTooLarge(type: WireV1.FrameType.small.rawValue, bytes: smallMax + 1, limit: smallMax))
        let controlMax = Limits.controlFrameBytesMax
        #expect(
            refusal(header(controlMax + 1, type: .outcomes))
                == .frameTooLarge(type: WireV1.FrameType.outcomes.rawValue, bytes: controlMax + 1, limit: controlMax))
        // On a connection from its first byte, a SMALL frame before HELLO is held to the control-frame limit: a
        // stranger gets no more than one partial control frame held. After HELLO, SMALL's own limit.
        func afterPreface(hello: Bool, _ frame: ByteBuffer) -> FrameParser.ParseError? {
            var parser = FrameParser()
            do {
                try parser.feed(FrameEncoder.prefaceBuffer(allocator: ByteBufferAllocator())) { _ in }
                if hello { try parser.feed(try FrameEncoder.encode(.hello(Freight_Wire_V1_Hello()))) { _ in } }
                try parser.feed(frame) { _ in }
                return nil
            } catch {
                return error as? FrameParser.ParseError
            }
        }
        #expect(
            afterPreface(hello: false, header(controlMax + 1, type: .small))
                == .frameTooLarge(type: WireV1.FrameType.small.rawValue, bytes: controlMax + 1, limit: controlMax))
        #expect(afterPreface(hello: false, header(controlMax, type: .small)) == nil)
        #expect(afterPreface(hello: true, header(smallMax, type: .small)) == nil)
    }

    /// What a HELLO says a party takes of small messages: none without "small", 16 KiB bodies in 64 KiB frames with
    /// "small" alone (SMALL as first published), 64 KiB bodies in 1 MiB frames with "small-64k" too.
    @Test func smallTermsFollowTheHello() {
        var hello = Freight_Wire_V1_Hello()
        hello.eagerBytes = 4 << 20
        #expect(SmallTerms(hello) == .none)
        hello.capabilities = [WireV1.capabilitySmall]
        let first = SmallTerms(hello)
        #expect(first.bodyBytesMax == 16 << 10 && first.frameBytesMax == Limits.controlFrameBytesMax)
        #expect(first.takes(length: 16 << 10, outstanding: 0) && !first.takes(length: (16 << 10) + 1, outstanding: 0))
        #expect(first.batchBytesMax == 48 << 10, "a batch for it closes before its 64 KiB frames are full")
        hello.capabilities.append(WireV1.capabilitySmallLarge)
        let large = SmallTerms(hello)
        #expect(
            large.bodyBytesMax == UInt64(Limits.smallBodyBytesMax) && large.frameBytesMax == Limits.smallFrameBytesMax)
        #expect(large.takes(length: 64 << 10, outstanding: 0))
        #expect(large.batchBytesMax == Limits.smallBatchBytesMax)
        #expect(large.linkBatchBytesMax == 768 << 10, "a node closes a batch for a peer at most of a frame")
        #expect(first.linkBatchBytesMax == 48 << 10)
        #expect(!large.takes(length: 64 << 10, outstanding: (4 << 20) - Limits.smallCost(length: 64 << 10) + 1))
        hello.eagerBytes = 0
        #expect(SmallTerms(hello) == .none)
    }

    /// A writer leaves larger bodies out of the frame's buffer and writes them as their own; the bytes on the wire
    /// are the same as a frame with every body copied in.
    @Test func largerBodiesGoOutOfLineAsTheSameBytes() throws {
        let sizes = [256, SmallFrames.outOfLineBodyBytesMin - 1, SmallFrames.outOfLineBodyBytesMin, 64 << 10, 100]
        let messages = sizes.enumerated().map { index, size in
            let body = ByteBuffer(repeating: UInt8(index + 1), count: size)
            return SmallMessage(
                id: UInt64(index + 1), source: "a/s", destination: "b/d", extras: nil, body: body,
                crc32c: CRC32C.checksum(body))
        }
        var whole = ByteBuffer()
        try SmallFrames.encode(messages, into: &whole)
        var head = ByteBuffer()
        var outOfLine: [SmallFrames.OutOfLineBody]? = []
        try SmallFrames.encode(
            messages, into: &head, payloadBytesMax: Limits.smallFrameBytesMax, outOfLine: &outOfLine)
        let listed = try #require(outOfLine)
        #expect(listed.map(\.body.readableBytes) == [SmallFrames.outOfLineBodyBytesMin, 64 << 10])
        #expect(head.readableBytes == whole.readableBytes - listed.reduce(0) { $0 + $1.body.readableBytes })
        var joined = ByteBuffer()
        for var piece in SmallFrames.pieces(of: head, listed) { joined.writeBuffer(&piece) }
        #expect(joined == whole)
        // Bodies sliced from larger buffers go out of line only while what they keep alive fits the allowance, in
        // order; the others are copied, and the bytes are the same.
        let sliced = (0..<3).map { index in
            let body = ByteBuffer(repeating: UInt8(index), count: 4 * 32 << 10).getSlice(at: 0, length: 32 << 10)!
            return SmallMessage(
                id: UInt64(index + 1), source: "a/s", destination: "b/d", extras: nil, body: body,
                crc32c: CRC32C.checksum(body))
        }
        #expect(HeldPieces.keptAliveBytes(of: sliced[0].body) == 3 * 32 << 10)
        var wholeSliced = ByteBuffer()
        try SmallFrames.encode(sliced, into: &wholeSliced)
        var allowed: [SmallFrames.OutOfLineBody]? = []
        var headSliced = ByteBuffer()
        try SmallFrames.encode(
            sliced, into: &headSliced, payloadBytesMax: Limits.smallFrameBytesMax, outOfLine: &allowed,
            keptAliveBytesMax: 7 * 32 << 10)
        #expect(allowed?.map(\.body) == [sliced[0].body, sliced[1].body])
        var joinedSliced = ByteBuffer()
        for var piece in SmallFrames.pieces(of: headSliced, allowed ?? []) { joinedSliced.writeBuffer(&piece) }
        #expect(joinedSliced == wholeSliced)
        // A frame over the receiver's limit: nothing written, nothing listed.
        var refused = ByteBuffer()
        var none: [SmallFrames.OutOfLineBody]? = []
        #expect(throws: FreightError.self) {
            try SmallFrames.encode(messages, into: &refused, payloadBytesMax: 64 << 10, outOfLine: &none)
        }
        #expect(refused.readableBytes == 0 && none?.isEmpty == true)
    }

    /// A large SMALL frame split by reads is decoded from the pieces it came in, wherever the splits fall (in the
    /// string table, an entry's fields, its extra header or its body), and gathered once it comes in many pieces.
    @Test func smallFramesSplitByReadsDecodeFromTheirPieces() throws {
        var sent = Self.messages()
        for index in 0..<6 {
            let body = ByteBuffer(repeating: UInt8(index), count: 20_000 + index * 7_001)
            sent.append(
                SmallMessage(
                    header: sent[index % sent.count].header, targetNode: "n2", targetID: 9, path: ["n1", "n3"],
                    body: body, crc32c: CRC32C.checksum(body)))
        }
        let bytes = try FrameEncoder.encode(.small(sent))
        let total = bytes.readableBytes
        let first = FrameParser.gatherReserveAfterBytes
        let splits: [[Int]] = [
            [first + 1], [first + 4, first + 10], [total / 2], [total - 1], [first, first + 17, first + 19, total - 3],
            // A first read of little more than the header, or of the header alone.
            [WireV1.frameHeaderBytes + 1], [WireV1.frameHeaderBytes, 100], [5, 300, first * 2],
            // More pieces than a frame is kept in: the rest is gathered.
            [first + 1, first + 2, first + 3, first + 4, first + 5, first + 9],
            Array(stride(from: first, to: total, by: 997)),
        ]
        for cuts in splits {
            var parser = FrameParser(expectPreface: false)
            var frames: [Frame] = []
            var from = 0
            for cut in cuts + [total] {
                try parser.feed(bytes.getSlice(at: from, length: cut - from)!) { frames.append($0) }
                from = cut
            }
            guard frames.count == 1, case .small(let received) = frames[0] else {
                Issue.record("one SMALL frame for cuts \(cuts.prefix(6)), got \(frames.count)")
                continue
            }
            #expect(received.map(\.id) == sent.map(\.id))
            for (a, b) in zip(sent, received) {
                #expect(b.body == a.body && b.crc32c == a.crc32c && b.path == a.path && b.header == a.header)
            }
        }
        // Cut short inside its pieces: refused as malformed, not read past.
        var parser = FrameParser(expectPreface: false)
        var truncated = bytes.getSlice(at: 0, length: total)!
        truncated.setInteger(UInt32(total - WireV1.frameHeaderBytes - 5), at: 0)
        #expect(throws: FrameParser.ParseError.self) {
            try parser.feed(truncated.getSlice(at: 0, length: first + 3)!) { _ in }
            try parser.feed(truncated.getSlice(at: first + 3, length: total - first - 8)!) { _ in }
        }
    }

    @Test func smallMessagesRoundTrip() throws {
        let sent = Self.messages()
        let frames = try Self.decoded(.small(sent))
        guard frames.count == 1, case .small(let received) = frames[0] else {
            Issue.record("one SMALL frame, got \(frames.map(\.type))")
            return
        }
        #expect(received.count == sent.count)
        for (a, b) in zip(sent, received) {
            var expected = a.header
            expected.length = UInt64(a.body.readableBytes)
            #expect(b.header == expected)
            #expect(b.body == a.body && b.crc32c == a.crc32c && b.path == a.path)
            #expect(b.targetNode == "n2" && b.targetID == 9)
        }
    }

    @Test func outcomesRoundTrip() throws {
        var delivered = SmallOutcome(1, .delivered)
        delivered.delivery.endpoint.node = "n2"
        delivered.delivery.endpoint.id = 4
        delivered.delivery.address = "llm/**"
        delivered.delivery.app = "rx"
        delivered.delivery.path = ["n1", "n2"]
        let sent = [
            delivered, delivered, SmallOutcome(2, failed: FreightError(.receiverGone, "gone")),
            SmallOutcome(3, .resend),
        ]
        let frames = try Self.decoded(.outcomes(sent))
        guard frames.count == 1, case .outcomes(let received) = frames[0] else {
            Issue.record("one OUTCOMES frame, got \(frames.map(\.type))")
            return
        }
        #expect(received.map(\.messageID) == [1, 1, 2, 3])
        #expect(received.map(\.kind) == [.delivered, .delivered, .failed, .resend])
        #expect(received[0].delivery == delivered.delivery && received[1].delivery == delivered.delivery)
        #expect(received[2].error.code == .receiverGone && received[2].reason == "gone")
    }

    /// A frame naming more strings than its table finds by comparing (many senders, addresses and nodes) names
    /// each of them right, the first and the last alike.
    /// Entries that name the same path share one decoded list; one that names a prefix of the last path, a longer
    /// one, the same nodes in another order or none still reads back as sent, in messages and in outcomes.
    @Test func pathsThatRepeatAndChangeRoundTrip() throws {
        let paths: [[String]] = [
            ["a", "b"], ["a", "b"], ["a"], ["a", "b", "c"], [], ["a", "b"], ["b", "a"], ["b", "a"], ["a", "b", "c"],
        ]
        let sent = paths.enumerated().map { index, path in
            var header = Freight_Wire_V1_MessageHeader()
            header.id = UInt64(index) + 1
            header.source = "n1/tx"
            header.destination = "kv/block"
            return SmallMessage(
                header: header, targetNode: "n2", targetID: 1, path: path, body: ByteBuffer(), crc32c: 0)
        }
        let frames = try Self.decoded(.small(sent))
        guard frames.count == 1, case .small(let received) = frames[0] else {
            Issue.record("one SMALL frame, got \(frames.map(\.type))")
            return
        }
        #expect(received.map(\.path) == paths)
        let outcomes = paths.enumerated().map { index, path in
            var outcome = SmallOutcome(UInt64(index) + 1, .delivered)
            outcome.delivery.path = path
            return outcome
        }
        guard case .outcomes(let back) = try Self.decoded(.outcomes(outcomes)).first else {
            Issue.record("no OUTCOMES frame")
            return
        }
        #expect(back.map(\.delivery.path) == paths)
    }

    /// A sender may put any fields in a SMALL entry's extra header bytes: an id, a source or a destination there
    /// do not override the entry's own, and what a node passes on carries only the extra fields it decoded.
    @Test func anEntrysOwnFieldsWinOverItsExtraBytes() throws {
        var smuggled = Freight_Wire_V1_MessageHeader()
        smuggled.id = 666
        smuggled.source = "n9/impostor"
        smuggled.destination = "secret/place"
        smuggled.contentType = "text/plain"
        let forged = SmallExtras(header: smuggled, bytes: try smuggled.serializedBytes())
        let sent = SmallMessage(
            id: 7, source: "n1/tx", destination: "kv/block", extras: forged, targetNode: "n2", targetID: 1,
            body: ByteBuffer(bytes: [1, 2, 3]), crc32c: 0)
        // Extra bytes that set nothing but the entry's own fields, twice (the second shares the first's decoding).
        smuggled.contentType = ""
        let empty = SmallExtras(header: smuggled, bytes: try smuggled.serializedBytes())
        var bare = sent
        bare.extras = empty
        guard case .small(let received) = try Self.decoded(.small([sent, bare, bare])).first, received.count == 3
        else {
            Issue.record("no SMALL frame")
            return
        }
        #expect(received[1].extras == nil && received[2].extras == nil, "no extra field, no extras")
        #expect(received[2].id == 7 && received[2].header.contentType.isEmpty)
        #expect(received[0].id == 7 && received[0].source == "n1/tx" && received[0].destination == "kv/block")
        #expect(received[0].header.contentType == "text/plain")
        // Passed on: the extra bytes are what was decoded, without the smuggled fields.
        let passed = try #require(received[0].extras?.bytes)
        let again = try Freight_Wire_V1_MessageHeader(serializedBytes: passed)
        #expect(again.id == 0 && again.source.isEmpty && again.destination.isEmpty && again.contentType == "text/plain")
    }

    @Test func aFrameOfManyDistinctStringsRoundTrips() throws {
        let sent = (0..<40).map { index in
            var header = Freight_Wire_V1_MessageHeader()
            header.id = UInt64(index) + 1
            header.source = "n\(index % 7)/tx-\(index % 5)"
            header.destination = "kv/block/\(index)"
            return SmallMessage(
                header: header, targetNode: "n\(index % 11)", targetID: UInt64(index),
                path: (0..<(index % 4)).map { "hop-\(index)-\($0)" }, body: ByteBuffer(), crc32c: 0)
        }
        let frames = try Self.decoded(.small(sent))
        guard frames.count == 1, case .small(let received) = frames[0] else {
            Issue.record("one SMALL frame, got \(frames.map(\.type))")
            return
        }
        #expect(received.map(\.header.source) == sent.map(\.header.source))
        #expect(received.map(\.header.destination) == sent.map(\.header.destination))
        #expect(received.map(\.targetNode) == sent.map(\.targetNode))
        #expect(received.map(\.path) == sent.map(\.path))

        let outcomes = (0..<40).map { index in
            var outcome = SmallOutcome(UInt64(index), failed: FreightError(.receiverGone, "gone \(index % 23)"))
            outcome.delivery.app = "rx-\(index)"
            outcome.delivery.path = ["n\(index % 3)"]
            return outcome
        }
        let more = try Self.decoded(.outcomes(outcomes))
        guard more.count == 1, case .outcomes(let back) = more[0] else {
            Issue.record("one OUTCOMES frame, got \(more.map(\.type))")
            return
        }
        #expect(back.map(\.reason) == outcomes.map(\.reason))
        #expect(back.map(\.delivery.app) == outcomes.map(\.delivery.app))
        #expect(back.map(\.delivery.path) == outcomes.map(\.delivery.path))
    }

    /// A batch whose bodies would not fit one frame is refused with resourceExhausted (the sender splits it).
    @Test func aBatchOverAFrameIsRefused() throws {
        var header = Freight_Wire_V1_MessageHeader()
        header.destination = "a"
        let body = ByteBuffer(repeating: 1, count: Limits.smallBodyBytesMax)
        let batch = (0...(Limits.smallFrameBytesMax / Limits.smallBodyBytesMax)).map { _ in
            SmallMessage(header: header, body: body, crc32c: 0)
        }
        #expect {
            _ = try FrameEncoder.encode(.small(batch))
        } throws: { ($0 as? FreightError)?.code == .resourceExhausted }
    }

    /// Every cut of a valid payload, and every byte of it changed, either decodes or throws: never a crash, never
    /// a string or body read past the payload.
    @Test func damagedPayloadsThrow() throws {
        for frame in [
            Frame.small(Self.messages()), .outcomes([SmallOutcome(1, .delivered), SmallOutcome(2, .resend)]),
        ] {
            var encoded = try FrameEncoder.encode(frame)
            let type = encoded.getInteger(at: 4, as: UInt8.self)!
            encoded.moveReaderIndex(forwardBy: WireV1.frameHeaderBytes)
            let payload = [UInt8](encoded.readableBytesView)
            for cut in 0..<payload.count {
                _ = try? FrameParser.decodeControl(
                    type: WireV1.FrameType(rawValue: type)!, flags: 0, payload: ByteBuffer(bytes: payload[..<cut]))
            }
            for index in payload.indices {
                var damaged = payload
                damaged[index] ^= 0xFF
                _ = try? FrameParser.decodeControl(
                    type: WireV1.FrameType(rawValue: type)!, flags: 0, payload: ByteBuffer(bytes: damaged))
            }
            #expect(throws: FrameParser.ParseError.self) {
                _ = try FrameParser.decodeControl(
                    type: WireV1.FrameType(rawValue: type)!, flags: 0, payload: ByteBuffer(bytes: payload.dropLast()))
            }
        }
    }
}
