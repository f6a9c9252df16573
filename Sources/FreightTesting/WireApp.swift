import Foundation
import FreightCore
import FreightWire
import NIOCore

/// An app written against the wire protocol by hand, over a node's Unix socket with blocking reads: what a careless
/// or hostile app does that the Swift client never would (OPENs it never feeds, chunks it never finishes).
/// Used by one thread at a time (a test hands it from one blocking block to the next).
public final class WireApp: @unchecked Sendable {
    let fd: Int32
    private var parser = FrameParser()
    /// Frames read and not yet taken.
    public private(set) var frames: [Frame] = []

    /// Attaches to the node at `socketPath` as an app labelled `label`.
    public init(socketPath: String, label: String = "wire-app", readTimeoutSeconds: Int = 10) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw FreightError(.io, "socket failed") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = Array(socketPath.utf8)
        guard path.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            throw FreightError(.invalidArgument, "socket path too long")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.enumerated() { raw[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else {
            close(fd)
            throw FreightError(.io, "cannot connect to \(socketPath)")
        }
        var timeout = timeval(tv_sec: readTimeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var hello = Freight_Wire_V1_Hello()
        hello.role = .app
        hello.name = label
        try write(FrameEncoder.prefaceBuffer(allocator: ByteBufferAllocator()))
        try write(try FrameEncoder.encode(.hello(hello)))
        _ = try next { if case .hello = $0 { true } else { false } }
    }

    deinit { close(fd) }

    public func write(_ buffer: ByteBuffer) throws {
        var left = buffer
        while left.readableBytes > 0 {
            let count = left.withUnsafeReadableBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
            guard count > 0 else { throw FreightError(.io, "write failed") }
            left.moveReaderIndex(forwardBy: count)
        }
    }

    /// Sends an OPEN of a message of `length` bytes to `destination`; returns its id.
    @discardableResult
    public func open(_ destination: String, length: UInt64, chunkBytes: UInt32 = 1 << 20) throws -> UInt64 {
        let id = UInt64.random(in: 1...UInt64.max)
        var open = Freight_Wire_V1_Open()
        open.header.id = id
        open.header.source = "wire-app"
        open.header.destination = destination
        open.header.length = length
        open.header.chunkBytes = chunkBytes
        try write(try FrameEncoder.encode(.open(open)))
        return id
    }

    /// The first frame read (now or already) that `wanted` accepts; throws when the node closes or the read times
    /// out.
    public func next(where wanted: (Frame) -> Bool) throws -> Frame {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            if let index = frames.firstIndex(where: wanted) { return frames.remove(at: index) }
            let count = read(fd, &chunk, chunk.count)
            guard count > 0 else { throw FreightError(.io, "the node closed the connection or did not answer") }
            try parser.feed(ByteBuffer(bytes: chunk[..<count])) { frames.append($0) }
        }
    }
}
