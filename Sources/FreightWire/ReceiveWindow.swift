import FreightCore

/// Flow control at the receiving endpoint of one message: which bytes it may accept, which it holds, and the
/// acknowledgement (contiguous offset held) and credit (offset the sender may send up to) it reports.
///
/// Chunks may arrive out of order (a message is striped over several connections); memory stays bounded because
/// the sender never sends past the credit, which is at most `window` beyond the acknowledged offset.
public struct ReceiveWindow: Sendable {
    public let length: UInt64
    public let windowBytes: UInt64
    /// Every byte below this offset is held.
    public private(set) var ackedOffset: UInt64 = 0
    /// The sender may send bytes below this offset.
    public private(set) var creditOffset: UInt64
    /// Accepted but not yet consumed, or consumed beyond a gap: start -> end.
    private var accepted: [UInt64: UInt64] = [:]
    private var consumedAhead: [UInt64: UInt64] = [:]

    public init(length: UInt64, windowBytes: UInt64) {
        self.length = length
        self.windowBytes = windowBytes
        self.creditOffset = min(length, windowBytes)
    }

    public var isComplete: Bool { ackedOffset == length }

    /// Checks a chunk against what was granted and what already arrived.
    public mutating func accept(offset: UInt64, count: UInt64) throws(FreightError) {
        let (end, overflow) = offset.addingReportingOverflow(count)
        guard !overflow, end <= length else {
            throw FreightError(
                .protocolViolation, "chunk [\(offset), +\(count)) lies past the message's \(length) bytes")
        }
        guard end <= creditOffset else {
            throw FreightError(.protocolViolation, "chunk [\(offset), +\(count)) exceeds the credit \(creditOffset)")
        }
        guard offset >= ackedOffset, accepted[offset] == nil, consumedAhead[offset] == nil else {
            throw FreightError(.protocolViolation, "chunk at offset \(offset) arrived twice")
        }
        accepted[offset] = end
    }

    /// Checks every piece of a chunk (pieces are accepted, and later consumed, one by one).
    public mutating func accept(_ chunk: DataChunk) throws(FreightError) {
        var offset = chunk.offset
        for piece in chunk.pieces {
            try accept(offset: offset, count: UInt64(piece.readableBytes))
            offset += UInt64(piece.readableBytes)
        }
    }

    /// Marks an accepted chunk as held by the app; returns the new (acked, credit) when the acknowledgement moved.
    public mutating func consume(offset: UInt64) -> (acked: UInt64, credit: UInt64)? {
        guard let end = accepted.removeValue(forKey: offset) else { return nil }
        consumedAhead[offset] = end
        let before = ackedOffset
        while let next = consumedAhead.removeValue(forKey: ackedOffset) {
            ackedOffset = next
        }
        guard ackedOffset != before else { return nil }
        creditOffset = min(length, max(creditOffset, ackedOffset + windowBytes))
        return (ackedOffset, creditOffset)
    }
}
