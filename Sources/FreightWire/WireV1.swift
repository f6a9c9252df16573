import FreightCore
import NIOCore

/// Constants of wire protocol v1 (docs/wire-protocol.md).
public enum WireV1 {
    /// Every connection starts with this preface from each side: "FRGT", version 1 (u16), flags 0 (u16).
    public static let preface: [UInt8] = Array("FRGT".utf8) + [0, 1, 0, 0]
    public static let version: UInt16 = 1
    /// u32 payload length, u8 type, u8 flags, u16 reserved.
    public static let frameHeaderBytes = 8
    /// u64 message id, u64 offset, u32 crc32c, before the chunk bytes of a DATA frame.
    public static let dataPrefixBytes = 20

    public enum FrameType: UInt8, Sendable {
        case data = 1
        case hello = 2
        case open = 3
        case ack = 4
        case done = 5
        case abort = 6
        case request = 7
        case reply = 8
        case endpoints = 9
        case members = 10
        case shared = 11
        case release = 12
        case routes = 13
        case small = 14
        case outcomes = 15
        case functions = 16
    }

    /// HELLO capability: messages resume across a broken link (docs/core.md).
    public static let capabilityResume = "resume"
    /// HELLO capability: takes SMALL and answers with OUTCOMES, within the `eager_bytes` it advertises
    /// (docs/small-messages-and-files.md).
    public static let capabilitySmall = "small"
    /// HELLO capability: takes SMALL bodies up to `Limits.smallBodyBytesMax` (64 KiB) in SMALL frames up to
    /// `Limits.smallFrameBytesMax`; a party with "small" alone takes bodies up to 16 KiB in frames under the
    /// control-frame limit, as SMALL was first published.
    public static let capabilitySmallLarge = "small-64k"
    /// DATA flag: this chunk is the last of its message.
    public static let flagLastChunk: UInt8 = 0x1
    /// SHARED flag: the frame carries the region's CRC32C.
    public static let flagChecksum: UInt8 = 0x2
    /// SHARED payload: u64 message id, u64 offset, u32 crc32c, u32 pool, u64 region offset, u64 length.
    public static let sharedPayloadBytes = 40
    /// One RELEASE entry: u32 pool, u64 region offset, u64 length.
    public static let releaseEntryBytes = 20
}

/// Limits the decoder enforces on one connection.
public struct FrameLimits: Sendable, Hashable {
    public var chunkBytesMax: Int
    public var controlFrameBytesMax: Int
    /// SMALL frames carry whole messages, so they may be larger than other control frames.
    public var smallFrameBytesMax: Int
    /// Compute each chunk's CRC32C piece by piece as it is read, while the bytes are in cache, instead of once the
    /// whole chunk is there (measured: the later pass runs on bytes that left the cache and cost the receiving
    /// thread as much as the kernel's copy). Endpoints turn it on; relays that only forward leave it off.
    public var verifyChecksumsOnArrival: Bool
    /// Hand DATA frames on piece by piece (``ParserEvent/dataPiece(_:)``) instead of whole: what a relay wants,
    /// so that it writes each piece on while the bytes are in cache and the read buffer can be reused.
    public var streamsChunks: Bool

    public init(
        chunkBytesMax: Int = Limits.chunkBytesMax,
        controlFrameBytesMax: Int = Limits.controlFrameBytesMax,
        smallFrameBytesMax: Int = Limits.smallFrameBytesMax,
        verifyChecksumsOnArrival: Bool = false,
        streamsChunks: Bool = false
    ) {
        self.chunkBytesMax = chunkBytesMax
        self.controlFrameBytesMax = controlFrameBytesMax
        self.smallFrameBytesMax = smallFrameBytesMax
        self.verifyChecksumsOnArrival = verifyChecksumsOnArrival
        self.streamsChunks = streamsChunks
    }
}

/// What a party's HELLO says it takes of SMALL messages (docs/small-messages-and-files.md): its eager budget, the
/// largest body and the largest SMALL frame. A sender goes small to it only within these.
public struct SmallTerms: Sendable, Hashable {
    /// Bytes of small messages it takes before their outcomes; 0: it takes no SMALL.
    public var eagerBytes: UInt64
    public var bodyBytesMax: UInt64
    public var frameBytesMax: Int

    /// A party that takes no SMALL.
    public static let none = SmallTerms(eagerBytes: 0, bodyBytesMax: 0, frameBytesMax: Limits.controlFrameBytesMax)
    /// SMALL as first published: bodies up to 16 KiB, frames under the control-frame limit.
    public static let firstBodyBytesMax: UInt64 = 16 * 1024

    public init(eagerBytes: UInt64, bodyBytesMax: UInt64, frameBytesMax: Int) {
        self.eagerBytes = eagerBytes
        self.bodyBytesMax = bodyBytesMax
        self.frameBytesMax = frameBytesMax
    }

    public init(_ hello: Freight_Wire_V1_Hello) {
        guard hello.capabilities.contains(WireV1.capabilitySmall), hello.eagerBytes > 0 else {
            self = .none
            return
        }
        if hello.capabilities.contains(WireV1.capabilitySmallLarge) {
            self.init(
                eagerBytes: hello.eagerBytes, bodyBytesMax: UInt64(Limits.smallBodyBytesMax),
                frameBytesMax: Limits.smallFrameBytesMax)
        } else {
            self.init(
                eagerBytes: hello.eagerBytes, bodyBytesMax: Self.firstBodyBytesMax,
                frameBytesMax: Limits.controlFrameBytesMax)
        }
    }

    /// Where a sender closes a batch of small messages for this party: `Limits.smallBatchBytesMax`, or less when its
    /// frames are smaller, so that a batch mostly fits one frame.
    public var batchBytesMax: Int { min(Limits.smallBatchBytesMax, frameBytesMax * 3 / 4) }

    /// Where a node closes a batch for a peer node: most of a frame. A link between two nodes carries the messages
    /// of every app and flow between them, and each write of the sending node costs it the receiving kernel's work
    /// too on loopback and inside a host, so fewer, larger writes move more per CPU-second (measured:
    /// `freight bench --paths node --sizes 64KiB`, about 1.5 times the messages of batches closed at 256 KiB). An
    /// app takes turns with its node, and `batchBytesMax` keeps the four parties of app to app moving.
    public var linkBatchBytesMax: Int { frameBytesMax * 3 / 4 }

    /// Whether a message of `length` body bytes may go small, with `outstanding` bytes already sent.
    public func takes(length: UInt64, outstanding: UInt64) -> Bool {
        length <= bodyBytesMax && outstanding + Limits.smallCost(length: length) <= eagerBytes
    }
}
