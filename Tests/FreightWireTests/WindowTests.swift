import FreightCore
import FreightTransport
import FreightWire
import NIOCore
import Testing

@Suite struct WindowTests {
    @Test func senderStaysWithinCredit() throws {
        var window = SendWindow(length: 10, chunkBytes: 4)
        #expect(window.nextChunk() == nil)
        try window.ack(acked: 0, credit: 8)
        #expect(window.nextChunk()! == (0, 4, false))
        #expect(window.nextChunk()! == (4, 4, false))
        #expect(window.nextChunk() == nil)
        try window.ack(acked: 8, credit: 100)
        #expect(window.creditOffset == 10)
        #expect(window.nextChunk()! == (8, 2, true))
        #expect(window.allSent)
        #expect(throws: FreightError.self) { try window.ack(acked: 11, credit: 12) }
    }

    @Test func receiverAcknowledgesTheContiguousPrefix() throws {
        var window = ReceiveWindow(length: 12, windowBytes: 8)
        #expect(window.creditOffset == 8)
        try window.accept(offset: 4, count: 4)
        try window.accept(offset: 0, count: 4)
        #expect(window.consume(offset: 4) == nil)
        let update = window.consume(offset: 0)
        #expect(update?.acked == 8 && update?.credit == 12)
        try window.accept(offset: 8, count: 4)
        #expect(window.consume(offset: 8)?.acked == 12)
        #expect(window.isComplete)
    }

    @Test func receiverRefusesOverrunsAndRepeats() throws {
        var window = ReceiveWindow(length: 100, windowBytes: 10)
        #expect(throws: FreightError.self) { try window.accept(offset: 8, count: 4) }
        #expect(throws: FreightError.self) { try window.accept(offset: 98, count: 4) }
        #expect(throws: FreightError.self) { try window.accept(offset: UInt64.max - 1, count: 4) }
        try window.accept(offset: 0, count: 4)
        // Overlapping in part is refused; sent again whole (after a broken link) is dropped quietly.
        #expect(throws: FreightError.self) { try window.accept(offset: 0, count: 6) }
        #expect(throws: FreightError.self) { try window.accept(offset: 2, count: 4) }
        // Sent again cut differently, but every byte held: dropped quietly, from its start or from inside.
        #expect(try !window.accept(offset: 0, count: 2))
        #expect(try !window.accept(offset: 1, count: 3))
        try window.accept(offset: 4, count: 4)
        #expect(try !window.accept(offset: 2, count: 6), "across two held chunks")
        #expect(throws: FreightError.self) { try window.accept(offset: 6, count: 4) }
    }

    /// After a broken link a sender sends again from an offset: chunks the receiver holds (acknowledged, accepted,
    /// or consumed beyond a gap) are reported as held and accepted nowhere; the rest is accepted as usual.
    @Test func chunksSentAgainAreDroppedQuietly() throws {
        var window = ReceiveWindow(length: 16, windowBytes: 16)
        #expect(try window.accept(offset: 0, count: 4))
        #expect(try window.accept(offset: 8, count: 4))
        #expect(window.consume(offset: 0)?.acked == 4)
        _ = window.consume(offset: 8)
        #expect(try !window.accept(offset: 0, count: 4), "below the acknowledged offset")
        #expect(try !window.accept(offset: 8, count: 4), "consumed beyond the gap")
        #expect(try window.accept(offset: 4, count: 4), "the gap itself is new")
        #expect(try !window.accept(offset: 4, count: 4), "accepted, not yet consumed")
        _ = window.consume(offset: 4)
        #expect(window.ackedOffset == 12)
        var sender = SendWindow(length: 16, chunkBytes: 4)
        try sender.ack(acked: 0, credit: 16)
        while sender.nextChunk() != nil {}
        try sender.ack(acked: 4, credit: 16)
        let back = sender.rewind(to: 2)
        #expect(back && sender.nextOffset == 4, "never below the acknowledged offset")
        let forward = sender.rewind(to: 8)
        #expect(!forward, "never forward")
        #expect(sender.nextChunk()! == (4, 4, false))
    }

    /// After a rewind (a lost stripe), bytes sent before it on other stripes may still arrive and be acknowledged:
    /// that is no violation, and they are not sent again; an acknowledgement past everything ever sent still is.
    @Test func acknowledgementsPastARewindAreBytesSentBefore() throws {
        var sender = SendWindow(length: 16, chunkBytes: 4)
        try sender.ack(acked: 0, credit: 16)
        while sender.nextChunk() != nil {}
        sender.rewind(to: 4)
        #expect(sender.nextOffset == 4)
        try sender.ack(acked: 12, credit: 16)
        #expect(sender.nextOffset == 12 && sender.nextChunk()! == (12, 4, true))
        var fresh = SendWindow(length: 16, chunkBytes: 4)
        try fresh.ack(acked: 0, credit: 16)
        _ = fresh.nextChunk()
        #expect(throws: FreightError.self) { try fresh.ack(acked: 8, credit: 16) }
    }

    /// A receiver that resumes names exactly where: a sender that went back further for an earlier break (a lost
    /// stripe) moves forward to it, never past what it ever sent nor below what is acknowledged.
    @Test func aResendStartsExactlyWhereTheReceiverResumes() throws {
        var sender = SendWindow(length: 16, chunkBytes: 4)
        try sender.ack(acked: 0, credit: 16)
        _ = sender.nextChunk()
        _ = sender.nextChunk()
        _ = sender.nextChunk()
        sender.rewind(to: 4)
        sender.resend(from: 10)
        #expect(sender.nextOffset == 10 && sender.take(2)! == (10, 2, false))
        sender.resend(from: 15)
        #expect(sender.nextOffset == 12, "never past what was sent")
        try sender.ack(acked: 8, credit: 16)
        sender.resend(from: 2)
        #expect(sender.nextOffset == 8, "never below what is acknowledged")
    }

    /// A chunk that arrives in pieces is acknowledged once every piece is consumed, so acknowledgements stay on the
    /// sender's chunk boundaries and a chunk sent again from one is held whole (dropped), never in part.
    @Test func piecesAreAcknowledgedByWholeChunks() throws {
        var window = ReceiveWindow(length: 16, windowBytes: 16)
        let pieces = [ByteBuffer(bytes: [1, 2, 3]), ByteBuffer(bytes: [4, 5, 6, 7, 8])]
        let chunk = DataChunk(messageID: 1, offset: 0, crc32c: 0, isLast: false, pieces: pieces)
        #expect(try window.accept(chunk))
        #expect(window.consume(offset: 0) == nil, "the first piece alone moves nothing")
        #expect(window.ackedOffset == 0)
        #expect(try !window.accept(offset: 0, count: 8), "sent again whole while half consumed: held")
        #expect(window.consume(offset: 3)?.acked == 8)
        #expect(try window.accept(offset: 8, count: 8))
    }

    /// A chunk that failed its checksum is forgotten: sent again, it is new, not a repeat.
    @Test func aDroppedChunkIsExpectedAgain() throws {
        var window = ReceiveWindow(length: 16, windowBytes: 16)
        #expect(try window.accept(offset: 0, count: 4))
        window.drop(offset: 0, count: 4)
        #expect(try window.accept(offset: 0, count: 4), "expected again")
        #expect(window.consume(offset: 0)?.acked == 4)
        window.drop(offset: 4, count: 4)
        #expect(try window.accept(offset: 4, count: 4), "dropping what never came changes nothing")
    }
}

@Suite struct StripeChooserTests {
    @Test func fillsTheFirstStripeThenSpills() {
        #expect(StripeChooser.choose(pending: [0, 0, 0], spillBytes: 8) == 0)
        #expect(StripeChooser.choose(pending: [8, 0, 0], spillBytes: 8) == 1)
        #expect(StripeChooser.choose(pending: [9, 8, 3], spillBytes: 8) == 2)
        #expect(StripeChooser.choose(pending: [nil, 5, 0], spillBytes: 8) == 1)
        #expect(StripeChooser.choose(pending: [20, 9, 30], spillBytes: 8) == 1, "all full: the least queued")
        #expect(StripeChooser.choose(pending: [nil, nil], spillBytes: 8) == nil)
    }
}
