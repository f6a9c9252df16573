import FreightCore
import NIOCore

/// The pieces of a body kept until its last one has come, each at first the slice of the read it arrived in, which
/// keeps that whole read buffer (64 KiB to 1 MiB) alive. While what they keep alive beyond their own bytes stays
/// within `Limits.readBuffersKeptAliveBytesMax`, slices; past that, each piece is copied onto a buffer of the list's
/// own, so that a party that trickles a body a few bytes a read makes its receiver hold the body's bytes, not a read
/// buffer for each few (docs/hardening.md).
public struct HeldPieces: Sendable {
    public private(set) var pieces: [ByteBuffer] = []
    /// What the pieces keep alive beyond their own bytes.
    public private(set) var keptAliveBytes = 0
    /// Whether the last piece is a buffer of the list's own, which later pieces are copied onto.
    private var ownsLast = false

    public init() {}

    /// The storage `buffer` keeps alive beyond its own bytes while it is held: a slice of a read keeps that whole
    /// read buffer; a buffer of its own, nothing.
    public static func keptAliveBytes(of buffer: ByteBuffer) -> Int {
        max(0, buffer.storageCapacity - buffer.readableBytes)
    }

    /// Keeps `piece`; `remaining` is how much of the body is still to come after it (room for it is made at once
    /// when pieces begin to be copied, so the copy grows by no reallocation: the body is within what its receiver
    /// granted).
    public mutating func append(_ piece: ByteBuffer, remaining: Int) {
        let kept = Self.keptAliveBytes(of: piece)
        if keptAliveBytes + kept <= Limits.readBuffersKeptAliveBytesMax {
            keptAliveBytes += kept
            pieces.append(piece)
            ownsLast = false
            return
        }
        var piece = piece
        if ownsLast {
            pieces[pieces.count - 1].writeBuffer(&piece)
        } else {
            var own = ByteBufferAllocator().buffer(capacity: piece.readableBytes + max(0, remaining))
            own.writeBuffer(&piece)
            pieces.append(own)
            ownsLast = true
        }
    }
}
