import NIOCore

/// Reads a frame's payload front to back, whether it lies in one buffer or in the several reads it arrived in
/// (``FrameParser`` hands a large SMALL frame on as its pieces instead of copying them together). What lies in one
/// buffer is read as a slice of it; only what spans two is copied.
protocol PayloadCursor {
    var readableBytes: Int { get }
    mutating func nextInteger<T: FixedWidthInteger>(as: T.Type) -> T?
    mutating func nextString(length: Int) -> String?
    mutating func nextSlice(length: Int) -> ByteBuffer?
    /// The next `count` bytes as one run of memory (copied when they span buffers), not consumed; nil when fewer
    /// remain.
    func peek<T>(_ count: Int, _ body: (UnsafeRawBufferPointer) -> T) -> T?
    /// Moves past `count` bytes, which must be there.
    mutating func skip(_ count: Int)
}

extension ByteBuffer: PayloadCursor {
    mutating func nextInteger<T: FixedWidthInteger>(as: T.Type) -> T? { readInteger(as: T.self) }
    mutating func nextString(length: Int) -> String? { readString(length: length) }
    mutating func nextSlice(length: Int) -> ByteBuffer? { readSlice(length: length) }

    func peek<T>(_ count: Int, _ body: (UnsafeRawBufferPointer) -> T) -> T? {
        withUnsafeReadableBytes { raw in
            raw.count >= count ? body(UnsafeRawBufferPointer(rebasing: raw[..<count])) : nil
        }
    }

    mutating func skip(_ count: Int) { moveReaderIndex(forwardBy: count) }
}

/// A payload in the buffers of the reads it spanned, in order.
struct PieceCursor: PayloadCursor {
    private var pieces: [ByteBuffer]
    private var index = 0
    private(set) var readableBytes: Int

    init(_ pieces: [ByteBuffer]) {
        self.pieces = pieces
        readableBytes = pieces.reduce(0) { $0 + $1.readableBytes }
    }

    mutating func nextSlice(length: Int) -> ByteBuffer? {
        guard length >= 0, length <= readableBytes else { return nil }
        guard length > 0 else { return ByteBuffer() }
        readableBytes -= length
        skipEmpty()
        if pieces[index].readableBytes >= length { return pieces[index].readSlice(length: length) }
        var joined = ByteBuffer()
        joined.reserveCapacity(length)
        var left = length
        while left > 0 {
            skipEmpty()
            var part = pieces[index].readSlice(length: min(left, pieces[index].readableBytes))!
            left -= part.readableBytes
            joined.writeBuffer(&part)
        }
        return joined
    }

    mutating func nextInteger<T: FixedWidthInteger>(as: T.Type) -> T? {
        guard var bytes = nextSlice(length: MemoryLayout<T>.size) else { return nil }
        return bytes.readInteger(as: T.self)
    }

    mutating func nextString(length: Int) -> String? {
        guard var bytes = nextSlice(length: length) else { return nil }
        return bytes.readString(length: length)
    }

    func peek<T>(_ count: Int, _ body: (UnsafeRawBufferPointer) -> T) -> T? {
        guard count <= readableBytes else { return nil }
        guard count > 0 else { return body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        var at = index
        while pieces[at].readableBytes == 0 { at += 1 }
        if let direct = pieces[at].peek(count, body) { return direct }
        var copy = self
        return copy.nextSlice(length: count)!.withUnsafeReadableBytes(body)
    }

    mutating func skip(_ count: Int) {
        var left = count
        readableBytes -= count
        while left > 0 {
            skipEmpty()
            let take = min(left, pieces[index].readableBytes)
            pieces[index].moveReaderIndex(forwardBy: take)
            left -= take
        }
    }

    private mutating func skipEmpty() {
        while pieces[index].readableBytes == 0 { index += 1 }
    }
}
