import CFreightSystem
import FreightCore
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

/// One shared-memory file (a sealed memfd) mapped into this process. Owns its descriptor and mapping: both are
/// released when the last reference goes, so bytes handed out as views keep their mapping alive.
public final class SharedMapping: @unchecked Sendable {  // immutable after init but for the lazily made handle
    public let fd: Int32
    public let size: Int
    public let base: UnsafeMutableRawPointer
    public let writable: Bool
    private var handle: NIOFileHandle?

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
        self.base = address
        self.writable = writable
    }

    deinit {
        munmap(base, size)
        if let handle {
            try? handle.close()
        } else {
            close(fd)
        }
    }

    /// Whether `[offset, offset + length)` lies inside the mapping.
    public func contains(offset: UInt64, length: UInt64) -> Bool {
        let (end, overflow) = offset.addingReportingOverflow(length)
        return !overflow && end <= UInt64(size)
    }

    /// The bytes of a region; nil when it is not inside the mapping.
    public func bytes(offset: UInt64, length: UInt64) -> UnsafeRawBufferPointer? {
        guard contains(offset: offset, length: length) else { return nil }
        return UnsafeRawBufferPointer(start: base + Int(offset), count: Int(length))
    }

    /// A region as a `FileRegion`, for the kernel to send with `sendfile`. Loop-confined (one handle per mapping,
    /// made on first use).
    public func fileRegion(offset: Int, length: Int) -> FileRegion {
        if handle == nil { handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: fd) }
        return FileRegion(fileHandle: handle!, readerIndex: offset, endIndex: offset + length)
    }
}
