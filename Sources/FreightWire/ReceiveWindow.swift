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
    /// Accepted but not yet consumed, or consumed beyond a gap: start -> end, one entry per chunk.
    private var accepted: [UInt64: UInt64] = [:]
    /// A chunk that arrived in pieces is consumed piece by piece but counts as held only once every piece is: so
    /// the acknowledged offset stays on the sender's chunk boundaries, and bytes sent again from it after a broken
    /// link line up with what is held (never overlapping it in part). Piece start -> (its chunk's start, length);
    /// and per chunk, the bytes not yet consumed.
    private var pieces: [UInt64: (chunk: UInt64, count: UInt64)] = [:]
    private var unconsumed: [UInt64: UInt64] = [:]
    private var consumedAhead: [UInt64: UInt64] = [:]
    /// The end of the furthest byte that arrived.
    private var highestEnd: UInt64 = 0

    public init(length: UInt64, windowBytes: UInt64) {
        self.length = length
        self.windowBytes = windowBytes
        self.creditOffset = min(length, windowBytes)
    }

    public var isComplete: Bool { ackedOffset == length }

    /// Checks a chunk against what was granted and what already arrived. Returns false for a chunk whose bytes are
    /// all held already (a sender sends again from an offset after a broken link; docs/core.md): the caller drops
    /// it quietly. A chunk that overlaps what is held only in part, lies past the credit or past the message, is a
    /// protocol violation.
    @discardableResult
    public mutating func accept(offset: UInt64, count: UInt64) throws(FreightError) -> Bool {
        let end = try checkedEnd(offset: offset, count: count)
        if try isHeld(offset: offset, end: end) { return false }
        accepted[offset] = end
        highestEnd = max(highestEnd, end)
        return true
    }

    /// Checks every piece of a chunk (pieces are accepted, and later consumed, one by one). Returns false, accepting
    /// nothing, when the whole chunk is held already.
    @discardableResult
    public mutating func accept(_ chunk: DataChunk) throws(FreightError) -> Bool {
        let end = try checkedEnd(offset: chunk.offset, count: UInt64(chunk.count))
        if try isHeld(offset: chunk.offset, end: end) { return false }
        accepted[chunk.offset] = end
        if chunk.pieces.count > 1 {
            var offset = chunk.offset
            for piece in chunk.pieces where piece.readableBytes > 0 {
                pieces[offset] = (chunk.offset, UInt64(piece.readableBytes))
                offset += UInt64(piece.readableBytes)
            }
            unconsumed[chunk.offset] = end - chunk.offset
        }
        highestEnd = max(highestEnd, end)
        return true
    }

    /// Forgets a chunk accepted but found bad (its checksum failed): its bytes are expected again.
    public mutating func drop(_ chunk: DataChunk) {
        guard accepted[chunk.offset] == chunk.offset + UInt64(chunk.count) else { return }
        accepted[chunk.offset] = nil
        if unconsumed.removeValue(forKey: chunk.offset) != nil {
            var offset = chunk.offset
            for piece in chunk.pieces where piece.readableBytes > 0 {
                pieces[offset] = nil
                offset += UInt64(piece.readableBytes)
            }
        }
    }

    /// Forgets a range accepted whole with ``accept(offset:count:)`` but found bad.
    public mutating func drop(offset: UInt64, count: UInt64) {
        if accepted[offset] == offset + count { accepted[offset] = nil }
    }

    private func checkedEnd(offset: UInt64, count: UInt64) throws(FreightError) -> UInt64 {
        let (end, overflow) = offset.addingReportingOverflow(count)
        guard !overflow, end <= length else {
            throw FreightError(
                .protocolViolation, "chunk [\(offset), +\(count)) lies past the message's \(length) bytes")
        }
        guard end <= creditOffset else {
            throw FreightError(.protocolViolation, "chunk [\(offset), +\(count)) exceeds the credit \(creditOffset)")
        }
        return end
    }

    /// True when every byte of [offset, end) is held, whether it starts where a held chunk starts or inside one (a
    /// body sent again may be cut where it was not before); false when none of it is; throws on a partial overlap.
    private func isHeld(offset: UInt64, end: UInt64) throws(FreightError) -> Bool {
        if end <= ackedOffset && end > offset { return true }
        guard offset >= ackedOffset else {
            throw FreightError(
                .protocolViolation, "chunk [\(offset), \(end)) overlaps the acknowledged offset \(ackedOffset)")
        }
        // Past every byte that arrived (the usual case: chunks come mostly in order) nothing can be held.
        if offset >= highestEnd { return false }
        var position = offset
        while position < end, let next = heldEnd(containing: position) { position = next }
        if position >= end { return true }
        if position > offset {
            throw FreightError(
                .protocolViolation, "chunk [\(offset), \(end)) is held only up to \(position): it overlaps in part")
        }
        // None of its start is held: nor may the rest be. One pass over the ranges held past the acknowledgement (at
        // most a window's chunks).
        for (start, stop) in accepted where start < end && stop > offset { throw overlap(offset, end, start, stop) }
        for (start, stop) in consumedAhead where start < end && stop > offset {
            throw overlap(offset, end, start, stop)
        }
        return false
    }

    /// The end of the held range that holds `position`: one starting there, or (a resend cut elsewhere) one that
    /// starts before it.
    private func heldEnd(containing position: UInt64) -> UInt64? {
        if let end = accepted[position] ?? consumedAhead[position] { return end }
        for (start, stop) in accepted where start < position && position < stop { return stop }
        for (start, stop) in consumedAhead where start < position && position < stop { return stop }
        return nil
    }

    private func overlap(_ offset: UInt64, _ end: UInt64, _ start: UInt64, _ stop: UInt64) -> FreightError {
        FreightError(
            .protocolViolation, "chunk [\(offset), \(end)) overlaps bytes [\(start), \(stop)) that arrived before")
    }

    /// Every chunk that arrived is consumed: nothing waits for the app.
    public var isCaughtUp: Bool { accepted.isEmpty && pieces.isEmpty }

    /// Marks an accepted chunk as held by the app; returns the new (acked, credit) when the acknowledgement moved.
    public mutating func consume(offset: UInt64) -> (acked: UInt64, credit: UInt64)? {
        var offset = offset
        if !pieces.isEmpty, let piece = pieces.removeValue(forKey: offset) {
            // A piece: its chunk is consumed once its last piece is.
            let left = unconsumed[piece.chunk, default: 0] - min(piece.count, unconsumed[piece.chunk, default: 0])
            guard left == 0 else {
                unconsumed[piece.chunk] = left
                return nil
            }
            unconsumed[piece.chunk] = nil
            offset = piece.chunk
        }
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
