import CFreightCRC32C
import NIOCore

/// CRC32C (Castagnoli), with the CPU's crc32 instruction where present.
public enum CRC32C {
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

    /// Whether the hardware instruction is in use.
    public static var isHardwareAccelerated: Bool { freight_crc32c_hardware() != 0 }
}
