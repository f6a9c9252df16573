import CFreightSystem
import FreightCore

#if canImport(Glibc)
    import Glibc
#endif

/// The emulator's control protocol (docs/wan.md): over its Unix socket, one command line in and one answer line out
/// per connection. `freight-wan control` and the tests' `WANLab` speak it through ``send(_:to:)``.
public enum WANControl {
    /// A command line the emulator reads at most, and an answer line a client reads at most (`stats` of 8 links
    /// is about 4 KiB).
    public static let commandBytesMax = 4096
    public static let answerBytesMax = 64 << 10

    /// One line from `fd`, without its newline, at most `max` bytes.
    public static func readLine(_ fd: Int32, max: Int) -> String {
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while bytes.count < max, read(fd, &byte, 1) == 1, byte != UInt8(ascii: "\n") { bytes.append(byte) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Sends `command` to the emulator listening at `path` and returns its answer (5 s at most).
    public static func send(_ command: String, to path: String) throws(FreightError) -> String {
        let fd = freight_unix_connect_type(path, 0)
        guard fd >= 0 else {
            throw FreightError(
                .internalError, "the WAN emulator does not answer at \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        _ = freight_set_receive_timeout(fd, 5000)
        let line = command + "\n"
        _ = line.withCString { write(fd, $0, strlen($0)) }
        return readLine(fd, max: answerBytesMax)
    }
}
