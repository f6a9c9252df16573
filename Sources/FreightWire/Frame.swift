import FreightCore
import NIOCore

/// One body chunk of message `messageID` starting at `offset`, with the CRC32C of all its bytes.
///
/// The bytes are `pieces`: slices of the buffers they arrived in, never copied. A chunk read from one socket read
/// has one piece; one that spanned several reads has several.
public struct DataChunk: Sendable {
    public var messageID: UInt64
    public var offset: UInt64
    public var crc32c: UInt32
    public var isLast: Bool
    public var pieces: [ByteBuffer]
    /// Set when the CRC was computed as the bytes arrived (``FrameLimits/verifyChecksumsOnArrival``).
    public var checksumVerified: Bool?

    public init(messageID: UInt64, offset: UInt64, crc32c: UInt32, isLast: Bool, pieces: [ByteBuffer]) {
        self.messageID = messageID
        self.offset = offset
        self.crc32c = crc32c
        self.isLast = isLast
        self.pieces = pieces
    }

    public init(messageID: UInt64, offset: UInt64, crc32c: UInt32, isLast: Bool, bytes: ByteBuffer) {
        self.init(messageID: messageID, offset: offset, crc32c: crc32c, isLast: isLast, pieces: [bytes])
    }

    /// Body bytes in the chunk.
    public var count: Int { pieces.reduce(0) { $0 + $1.readableBytes } }

    /// Whether the bytes still have the checksum they were sent with.
    public var checksumMatches: Bool {
        if let checksumVerified { return checksumVerified }
        var crc: UInt32 = 0
        for piece in pieces { crc = piece.withUnsafeReadableBytes { CRC32C.checksum($0, continuing: crc) } }
        return crc == crc32c
    }

    /// The bytes in one buffer (copies when there are several pieces; for tests and small chunks).
    public var joined: ByteBuffer {
        if pieces.count == 1 { return pieces[0] }
        var buffer = ByteBuffer()
        for var piece in pieces { buffer.writeBuffer(&piece) }
        return buffer
    }
}

/// A region of a shared-memory pool: `length` bytes at `offset` of pool `pool` (docs/shared-memory.md).
public struct SharedRegion: Sendable, Hashable, CustomStringConvertible {
    public var pool: UInt32
    public var offset: UInt64
    public var length: UInt64

    public init(pool: UInt32, offset: UInt64, length: UInt64) {
        self.pool = pool
        self.offset = offset
        self.length = length
    }

    public var description: String { "pool \(pool) [\(offset), +\(length))" }
}

/// A body chunk that lies in shared memory: message `messageID`'s bytes from `offset`, in `region`.
/// The frame lends the region; exactly one RELEASE of it answers each SHARED frame.
public struct SharedChunk: Sendable, Hashable {
    public var messageID: UInt64
    public var offset: UInt64
    /// CRC32C of the bytes, when `hasChecksum` (an app handing over its own buffer may leave it out; a node that
    /// sends the bytes on over a link computes it).
    public var crc32c: UInt32
    public var hasChecksum: Bool
    public var isLast: Bool
    public var region: SharedRegion

    public init(messageID: UInt64, offset: UInt64, crc32c: UInt32?, isLast: Bool, region: SharedRegion) {
        self.messageID = messageID
        self.offset = offset
        self.crc32c = crc32c ?? 0
        self.hasChecksum = crc32c != nil
        self.isLast = isLast
        self.region = region
    }

    public var count: Int { Int(region.length) }
}

/// A decoded frame of wire protocol v1.
public enum Frame: Sendable {
    case data(DataChunk)
    case hello(Freight_Wire_V1_Hello)
    case open(Freight_Wire_V1_Open)
    case ack(Freight_Wire_V1_Ack)
    case done(Freight_Wire_V1_Done)
    case abort(Freight_Wire_V1_Abort)
    case request(Freight_Wire_V1_Request)
    case reply(Freight_Wire_V1_Reply)
    case endpoints(Freight_Wire_V1_Endpoints)
    case members(Freight_Wire_V1_Members)
    case routes(Freight_Wire_V1_Routes)
    case shared(SharedChunk)
    case release([SharedRegion])
    case small([SmallMessage])
    case outcomes([SmallOutcome])
    case functions(Freight_Wire_V1_Functions)

    public var type: WireV1.FrameType {
        switch self {
        case .data: .data
        case .hello: .hello
        case .open: .open
        case .ack: .ack
        case .done: .done
        case .abort: .abort
        case .request: .request
        case .reply: .reply
        case .endpoints: .endpoints
        case .members: .members
        case .routes: .routes
        case .shared: .shared
        case .release: .release
        case .small: .small
        case .outcomes: .outcomes
        case .functions: .functions
        }
    }
}

extension Frame {
    public static func abort(_ messageID: UInt64, _ error: FreightError, ackedOffset: UInt64 = 0) -> Frame {
        var abort = Freight_Wire_V1_Abort()
        abort.messageID = messageID
        abort.code = error.code.rawValue
        abort.reason = error.message
        abort.ackedOffset = ackedOffset
        return .abort(abort)
    }

    public static func ack(_ messageID: UInt64, acked: UInt64, credit: UInt64, resendFrom: UInt64? = nil) -> Frame {
        var ack = Freight_Wire_V1_Ack()
        ack.messageID = messageID
        ack.ackedOffset = acked
        ack.creditOffset = credit
        if let resendFrom { ack.resendFrom = resendFrom }
        return .ack(ack)
    }
}

extension Freight_Wire_V1_Abort {
    public var error: FreightError { FreightError(.init(rawValue: code), reason) }
}
