import CFreightCRC32C
import NIOCore

/// CRC32C (Castagnoli), with the fastest implementation the CPU has: carry-less folding (AVX-512 VPCLMULQDQ), the
/// SSE4.2 crc32 instruction, or a table.
public enum CRC32C {
    public enum Method: Int32, CaseIterable, Sendable {
        case table = 0
        case instruction = 1
        case carrylessFold = 2

        /// Whether this CPU can run it.
        public var isAvailable: Bool { freight_crc32c_methods() & (1 << rawValue) != 0 }
    }

    /// The checksum by one named implementation, copying the bytes to `destination` too when given: for tests
    /// that hold every implementation the CPU has against the definition.
    public static func checksum(
        _ bytes: UnsafeRawBufferPointer, method: Method, copyingTo destination: UnsafeMutableRawPointer? = nil,
        continuing crc: UInt32 = 0
    ) -> UInt32 {
        freight_crc32c_using(method.rawValue, crc, destination, bytes.baseAddress, bytes.count)
    }

    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        freight_crc32c(crc, bytes.baseAddress, bytes.count)
    }

    /// Copies `source` to `destination` (at least as large, not overlapping) and returns the bytes' checksum,
    /// continuing from `crc`, in one pass over them.
    public static func copy(
        _ source: UnsafeRawBufferPointer, to destination: UnsafeMutableRawPointer, continuing crc: UInt32 = 0
    ) -> UInt32 {
        freight_crc32c_copy(crc, destination, source.baseAddress, source.count)
    }

    public static func checksum(_ buffer: ByteBuffer) -> UInt32 {
        buffer.withUnsafeReadableBytes { checksum($0) }
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0) }
    }
}
