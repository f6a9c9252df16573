import CFreightSystem
import FreightCore
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

/// One shared-memory file (a sealed memfd) mapped into this process, or a file an app lent its node for sending
/// (``lentFile(fd:size:)``: not mapped, since the app may shrink it; read with `sendfile` and `pread` only). Owns
/// its descriptor and mapping: both are released when the last reference goes, so bytes handed out as views keep
/// their mapping alive.
public final class SharedMapping: @unchecked Sendable {  // immutable after init but for the lazily made handle
    public let fd: Int32
    public let size: Int
    private let mapped: UnsafeMutableRawPointer?
    public let writable: Bool
    private var handle: NIOFileHandle?

    /// The first byte of the mapping; only for a mapped one (never a lent file's).
    public var base: UnsafeMutableRawPointer { mapped! }
    /// False for a lent file, whose bytes are never touched through a mapping.
    public var isMapped: Bool { mapped != nil }

    /// A file an app lent for sending (docs/small-messages-and-files.md), `size` bytes when it was lent: kept as a
    /// descriptor, never mapped (a file may be truncated under a mapping, and touching it then kills the process).
    /// Takes ownership of `fd`.
    public static func lentFile(fd: Int32, size: Int) -> SharedMapping {
        SharedMapping(unmapped: fd, size: size)
    }

    /// Memory that is not this process's to map (a device allocation lent by an app, docs/gpu.md): its size only,
    /// so that regions are checked against it; no descriptor, nothing to read.
    public static func unmapped(size: Int) -> SharedMapping {
        SharedMapping(unmapped: -1, size: size)
    }

    /// Creates a new pool file of `size` bytes and maps it for reading and writing.
    public static func create(size: Int, name: String) throws(FreightError) -> SharedMapping {
        let fd = freight_memfd(name, off_t(size))
        guard fd >= 0 else {
            throw FreightError(.io, "cannot create shared memory of \(size) bytes: \(String(cString: strerror(errno)))")
        }
        return try SharedMapping(fd: fd, size: size, writable: true)
    }

    /// Maps a pool file received from another process, after checking that it is sealed against shrinking and
    /// has exactly `size` bytes (so touching the mapping can never fault past the end). Takes ownership of `fd`
    /// whatever happens.
    public static func adopt(fd: Int32, size: Int, writable: Bool) throws(FreightError) -> SharedMapping {
        guard size > 0, size <= Limits.sharedPoolBytesMax, freight_memfd_check(fd, off_t(size)) == 0 else {
            close(fd)
            throw FreightError(
                .invalidArgument, "shared memory must be a sealed memfd of the declared \(size) bytes")
        }
        return try SharedMapping(fd: fd, size: size, writable: writable)
    }

    private init(fd: Int32, size: Int, writable: Bool) throws(FreightError) {
        let protection = writable ? PROT_READ | PROT_WRITE : PROT_READ
        let address = mmap(nil, size, protection, MAP_SHARED, fd, 0)
        guard let address, address != MAP_FAILED else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw FreightError(.io, "cannot map \(size) bytes of shared memory: \(reason)")
        }
        self.fd = fd
        self.size = size
        self.mapped = address
        self.writable = writable
    }

    private init(unmapped fd: Int32, size: Int) {
        self.fd = fd
        self.size = size
        self.mapped = nil
        self.writable = false
    }

    deinit {
        if let mapped { munmap(mapped, size) }
        if let handle {
            try? handle.close()
        } else if fd >= 0 {
            close(fd)
        }
    }

    /// Whether `[offset, offset + length)` lies inside the mapping.
    public func contains(offset: UInt64, length: UInt64) -> Bool {
        let (end, overflow) = offset.addingReportingOverflow(length)
        return !overflow && end <= UInt64(size)
    }

    /// The bytes of a region; nil when it is not inside the mapping (or nothing is mapped).
    public func bytes(offset: UInt64, length: UInt64) -> UnsafeRawBufferPointer? {
        guard let mapped, contains(offset: offset, length: length) else { return nil }
        return UnsafeRawBufferPointer(start: mapped + Int(offset), count: Int(length))
    }

    /// A copy of a region's bytes: from the mapping, or read from the file (`pread`) when nothing is mapped; nil
    /// when the region is outside, or the file no longer holds it (a lent file shrank).
    public func read(offset: UInt64, length: UInt64) -> ByteBuffer? {
        if isMapped { return bytes(offset: offset, length: length).map { ByteBuffer(bytes: $0) } }
        guard contains(offset: offset, length: length) else { return nil }
        var buffer = ByteBufferAllocator().buffer(capacity: Int(length))
        var complete = false
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Int(length)) { raw in
            var done = 0
            while done < Int(length) {
                let n = pread(fd, raw.baseAddress! + done, Int(length) - done, off_t(offset) + off_t(done))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return 0 }
                done += n
            }
            complete = true
            return done
        }
        return complete ? buffer : nil
    }

    /// Whether the file still holds `[offset, offset + length)` (a lent file may have been truncated since).
    public func stillHolds(offset: UInt64, length: UInt64) -> Bool {
        var status = stat()
        guard fstat(fd, &status) == 0 else { return false }
        return UInt64(status.st_size) >= offset + length
    }

    /// A region as a `FileRegion`, for the kernel to send with `sendfile`. Loop-confined (one handle per mapping,
    /// made on first use).
    public func fileRegion(offset: Int, length: Int) -> FileRegion {
        if handle == nil { handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: fd) }
        return FileRegion(fileHandle: handle!, readerIndex: offset, endIndex: offset + length)
    }
}
