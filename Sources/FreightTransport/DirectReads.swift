import CFreightSystem
@_spi(CustomByteBufferAllocator) import NIOCore

/// Where the next socket read of a connection should land: the rest of a chunk's body, straight into the region of
/// an app's receive pool that the node gave the chunk, so that the kernel's copy out of the socket is the only copy
/// (docs/performance.md, "Reading into the receive pool"). Loop-confined: set by the node between reads, read by
/// ``DirectReadAllocator`` when SwiftNIO asks for the next read buffer.
public final class ReadTarget: @unchecked Sendable {
    /// The first byte of the body still to come, and how many bytes of it.
    public private(set) var pointer: UnsafeMutableRawPointer?
    public private(set) var count = 0
    /// Bytes of the same mapping before `pointer` (a read buffer may start up to this far before it).
    private var headroom = 0
    /// The last chunk went to a pool: read the next header alone (with a little of what follows) rather than a
    /// whole read buffer, so that the next chunk's body comes in by direct reads too.
    public var expectsChunks = false
    /// The last buffer handed out was a direct one (its size does not teach the adaptive allocator anything).
    var lastReadWasDirect = false

    /// Reads smaller than this are not worth a read of their own: they come with the next header.
    public static let minimumBytes = 4096
    /// What a read between chunks takes while ``expectsChunks``: a header and the start of the next body.
    public static let headerReadBytes = 4096

    public init() {}

    /// The next read should fill `count` bytes at `pointer`, which lies `headroom` bytes into a mapping.
    public func set(_ pointer: UnsafeMutableRawPointer, count: Int, headroom: Int) {
        guard count >= Self.minimumBytes else { return clear() }
        self.pointer = pointer
        self.count = count
        self.headroom = headroom
    }

    public func clear() {
        pointer = nil
        count = 0
    }

    /// A buffer whose writable bytes are exactly the target's (or a prefix of them), or nil when none can be made.
    func buffer() -> ByteBuffer? {
        guard let pointer else { return nil }
        // ByteBuffer rounds a capacity up to a power of two: the buffer starts that many bytes before the target,
        // inside the mapping, and its indices skip them; where there is no such room, the read takes the largest
        // power of two that fits.
        var length = count
        var start = pointer
        let capacity = count.nextPowerOfTwo
        if capacity - count <= headroom {
            start = pointer - (capacity - count)
        } else {
            length = 1 << (Int.bitWidth - 1 - count.leadingZeroBitCount)
        }
        guard freight_direct_arm(start) != 0 else { return nil }
        var buffer = Self.allocator.buffer(capacity: length)
        freight_direct_disarm()
        let skip = buffer.capacity - length
        guard buffer.withVeryUnsafeBytes({ $0.baseAddress }) == UnsafeRawPointer(start), skip == pointer - start
        else { return nil }  // not where it was asked for (nothing was written to it): an ordinary read instead
        buffer.moveWriterIndex(forwardBy: skip)
        buffer.moveReaderIndex(forwardBy: skip)
        return buffer
    }

    /// True when `piece` lies where this target pointed (its bytes were read into the pool).
    public func landed(_ piece: ByteBuffer, at expected: UnsafeMutableRawPointer) -> Bool {
        piece.withUnsafeReadableBytes { $0.baseAddress } == UnsafeRawPointer(expected)
    }

    static let allocator = ByteBufferAllocator(
        allocate: freight_direct_allocate, reallocate: freight_direct_reallocate,
        deallocate: { freight_direct_free($0) }, copy: { freight_direct_copy($0, $1, $2) })

    /// Regions lent to read buffers and not yet given back, over the whole process (tests).
    public static var outstanding: Int { Int(freight_direct_outstanding()) }
}

extension Int {
    fileprivate var nextPowerOfTwo: Int { self <= 1 ? 1 : 1 << (Int.bitWidth - (self - 1).leadingZeroBitCount) }
}

/// The receive allocator of a node's connections: reads of up to 1 MiB as ``SocketTuning/receiveAllocator``, or
/// into the ``ReadTarget`` when it has one.
///
/// SwiftNIO keeps read buffers in a pool and reuses one when it is uniquely owned. A buffer in an app's pool must
/// never be reused for a later read, so: this allocator gives no size hint while a target is set (the pool then
/// asks it for a new buffer) and always reports that it may grow (so the pool never reuses a buffer without a
/// hint), and the channel reads one buffer per wake-up (`maxMessagesPerRead` 1), with which the pool keeps only
/// its first buffer, a normal one, and hands new ones out without keeping them.
public struct DirectReadAllocator: RecvByteBufferAllocator {
    public let target: ReadTarget
    private var normal: AdaptiveRecvByteBufferAllocator

    /// `handshake`: the link has not said who it is yet, and reads into small buffers
    /// (``SocketTuning/handshakeAllocator``).
    public init(target: ReadTarget, handshake: Bool = false) {
        self.target = target
        self.normal = handshake ? SocketTuning.handshakeAllocator : SocketTuning.receiveAllocator
    }

    public func nextBufferSize() -> Int? {
        target.pointer != nil || target.expectsChunks ? nil : normal.nextBufferSize()
    }

    public func buffer(allocator: ByteBufferAllocator) -> ByteBuffer {
        if let direct = target.buffer() {
            target.lastReadWasDirect = true
            return direct
        }
        target.lastReadWasDirect = false
        if target.expectsChunks { return allocator.buffer(capacity: ReadTarget.headerReadBytes) }
        return normal.buffer(allocator: allocator)
    }

    public mutating func record(actualReadBytes: Int) -> Bool {
        if !target.lastReadWasDirect && !target.expectsChunks { _ = normal.record(actualReadBytes: actualReadBytes) }
        return true
    }
}
