import FreightCore

/// Flow control at the sender of one message: which chunk may go next, given the credit the receiver granted.
public struct SendWindow: Sendable {
    public let length: UInt64
    public let chunkBytes: UInt64
    public private(set) var nextOffset: UInt64 = 0
    public private(set) var creditOffset: UInt64 = 0
    public private(set) var ackedOffset: UInt64 = 0
    /// The furthest byte ever sent: after a rewind, bytes sent before it may still arrive and be acknowledged.
    public private(set) var sentOffset: UInt64 = 0

    public init(length: UInt64, chunkBytes: UInt64) {
        precondition(chunkBytes > 0)
        self.length = length
        self.chunkBytes = chunkBytes
    }

    public var allSent: Bool { nextOffset >= length }
    public var isAcknowledged: Bool { ackedOffset == length }

    /// The next chunk to send, when the credit allows all of it.
    public mutating func nextChunk() -> (offset: UInt64, count: UInt64, isLast: Bool)? {
        guard nextOffset < length else { return nil }
        let count = min(chunkBytes, length - nextOffset)
        guard nextOffset + count <= creditOffset else { return nil }
        let offset = nextOffset
        nextOffset += count
        sentOffset = max(sentOffset, nextOffset)
        return (offset, count, nextOffset == length)
    }

    /// How many bytes the credit allows from the next offset.
    public var available: UInt64 { min(creditOffset, length) - min(nextOffset, min(creditOffset, length)) }

    /// Takes the next `count` bytes (within the credit); for bodies whose pieces are not cut at the chunk size.
    public mutating func take(_ count: UInt64) -> (offset: UInt64, count: UInt64, isLast: Bool)? {
        guard count > 0, count <= available else { return nil }
        let offset = nextOffset
        nextOffset += count
        sentOffset = max(sentOffset, nextOffset)
        return (offset, count, nextOffset == length)
    }

    /// Every byte the credit allows from the next offset, as one span (a body that is already in shared memory
    /// is lent in spans, not chunks: no bytes are copied, so there is nothing to cut).
    public mutating func nextSpan() -> (offset: UInt64, count: UInt64, isLast: Bool)? {
        let end = min(creditOffset, length)
        guard nextOffset < end else { return nil }
        let offset = nextOffset
        nextOffset = end
        sentOffset = max(sentOffset, nextOffset)
        return (offset, end - offset, end == length)
    }

    /// Sends again from `offset` (bytes past it were lost with a broken link): never below what is acknowledged,
    /// never forward. Returns true when the next offset moved back.
    @discardableResult
    public mutating func rewind(to offset: UInt64) -> Bool {
        let target = max(offset, ackedOffset)
        guard target < nextOffset else { return false }
        nextOffset = target
        return true
    }

    /// Sends again from exactly `offset`, where a receiver resumes after a broken link: back (bytes past it were lost)
    /// or forward (an earlier rewind went further back than this receiver needs, so the bytes between were sent
    /// already), never below what is acknowledged nor past what was ever sent.
    public mutating func resend(from offset: UInt64) {
        nextOffset = min(max(offset, ackedOffset), sentOffset)
    }

    /// Applies an acknowledgement. Offsets never go backwards; an acknowledgement past what was sent is a protocol error.
    public mutating func ack(acked: UInt64, credit: UInt64) throws(FreightError) {
        guard acked <= sentOffset, acked <= length else {
            throw FreightError(.protocolViolation, "acknowledged offset \(acked) is past the \(sentOffset) bytes sent")
        }
        ackedOffset = max(ackedOffset, acked)
        // Sent before a rewind and acknowledged after it: not sent again.
        nextOffset = max(nextOffset, ackedOffset)
        creditOffset = max(creditOffset, min(credit, length))
    }
}
