import FreightCore
import FreightTransport
import FreightWire
import NIOCore

/// The fuzz targets of Freight's parsers, as plain functions: libFuzzer calls them from Fuzz/ (scripts/fuzz.sh),
/// and a test replays the committed corpus through them. The first byte of the input picks the parser:
///   0: the frame parser (a connection's bytes, fed in splits the next bytes choose), with every decoded frame
///      checked against the limits;
///   1: the descriptor-link codec (attach and link messages);
///   2: a control payload, decoded as the frame type the second byte names.
/// A crash, a trap or a limit broken is a finding; errors thrown for bad input are the expected outcome.
public enum FuzzTargets {
    public static func run(_ bytes: [UInt8]) {
        guard bytes.count > 1 else { return }
        switch bytes[0] % 3 {
        case 0: fuzzFrames(Array(bytes.dropFirst()))
        case 1: fuzzDescriptorLink(Array(bytes.dropFirst()))
        default: fuzzControl(type: bytes[1], Array(bytes.dropFirst(2)))
        }
    }
}

let limits = FrameLimits(chunkBytesMax: 64 * 1024)

func fuzzFrames(_ bytes: [UInt8]) {
    var parser = FrameParser(limits: limits, expectPreface: bytes.first.map { $0 & 1 == 0 } ?? true)
    var input = bytes.dropFirst()
    var split = Int(bytes.first ?? 1) | 1
    do {
        while !input.isEmpty {
            let take = min(input.count, split)
            try parser.feed(ByteBuffer(bytes: input.prefix(take))) { check($0) }
            input = input.dropFirst(take)
            split = split &* 3 % 997 + 1
        }
    } catch {}
}

func check(_ frame: Frame) {
    switch frame {
    case .data(let chunk):
        precondition(chunk.count <= limits.chunkBytesMax && chunk.offset <= UInt64(Int64.max), "DATA past its limits")
    case .shared(let chunk):
        precondition(chunk.region.length <= UInt64(Int64.max) && chunk.region.offset <= UInt64(Int64.max))
    case .release(let regions):
        precondition(!regions.isEmpty && regions.count <= limits.controlFrameBytesMax / WireV1.releaseEntryBytes)
    default:
        // Whatever decoded encodes again within the control-frame limit.
        if let encoded = try? FrameEncoder.encode(frame) {
            precondition(encoded.readableBytes <= limits.controlFrameBytesMax + WireV1.frameHeaderBytes)
        }
    }
}

func fuzzDescriptorLink(_ bytes: [UInt8]) {
    if let attach = try? DescriptorLink.decodeAttach(bytes) {
        precondition((try? DescriptorLink.decodeAttach(DescriptorLink.encode(attach))) != nil, "attach round trip")
    }
    if let message = try? DescriptorLink.decodeMessage(bytes) {
        precondition((try? DescriptorLink.decodeMessage(DescriptorLink.encode(message))) != nil, "message round trip")
    }
}

func fuzzControl(type: UInt8, _ bytes: [UInt8]) {
    // A frame header for the payload, so the parser's own control path decodes it.
    let types: [WireV1.FrameType] = [
        .hello, .open, .ack, .done, .abort, .request, .reply, .endpoints, .members,
        .shared, .release, .small, .outcomes,
    ]
    let frameType = types[Int(type) % types.count]
    let payload = Array(bytes.prefix(limits.controlFrameBytesMax))
    var buffer = ByteBuffer(bytes: WireV1.preface)
    buffer.writeInteger(UInt32(payload.count))
    buffer.writeInteger(frameType.rawValue)
    buffer.writeInteger(UInt8(0))
    buffer.writeInteger(UInt16(0))
    buffer.writeBytes(payload)
    var parser = FrameParser(limits: limits)
    do { try parser.feed(buffer) { check($0) } } catch {}
    if frameType == .small { checkSmallPieces(payload) }
}

/// A SMALL payload decodes the same from the pieces of the reads it came in as from one buffer (the parser keeps a
/// large SMALL frame split by reads as its pieces): the same messages, or a refusal both ways.
func checkSmallPieces(_ payload: [UInt8]) {
    let whole = try? SmallFrames.decodeSmall(ByteBuffer(bytes: payload))
    var pieces: [ByteBuffer] = []
    var at = 0
    var step = Int(payload.first ?? 0) % 13 + 1
    while at < payload.count {
        let take = min(step, payload.count - at)
        pieces.append(ByteBuffer(bytes: payload[at..<(at + take)]))
        at += take
        step = step &* 5 % 61 + 1
    }
    let split = try? SmallFrames.decodeSmall(pieces: pieces)
    precondition((whole == nil) == (split == nil), "SMALL decoded one way and refused the other")
    guard let whole, let split else { return }
    precondition(whole.count == split.count, "SMALL decoded to different messages from pieces")
    for (a, b) in zip(whole, split) {
        precondition(
            a.id == b.id && a.body == b.body && a.crc32c == b.crc32c && a.path == b.path && a.header == b.header,
            "SMALL decoded to different messages from pieces")
    }
}
