import Foundation
import FreightCore
import FreightWire
import NIOCore

/// An app or a node written against the wire protocol by hand, with blocking reads: what a careless or hostile
/// party does that Freight's own code never would (OPENs it never feeds, chunks past its credit, a flood of
/// endpoints). Used by one thread at a time (a test hands it from one blocking block to the next).
public final class WireApp: @unchecked Sendable {
    private let fd: Int32
    private var parser = FrameParser()
    /// Frames read and not yet taken.
    public private(set) var frames: [Frame] = []
    /// The node's HELLO.
    public private(set) var nodeHello = Freight_Wire_V1_Hello()

    /// Attaches to the node at `socketPath` as an app labelled `label`, saying it can do `capabilities` and takes
    /// `eagerBytes` of small messages; its parser enforces `limits`.
    public convenience init(
        socketPath: String, label: String = "wire-app", capabilities: [String] = [], eagerBytes: UInt64 = 0,
        limits: FrameLimits = FrameLimits(), readTimeoutSeconds: Int = 10
    ) throws {
        var hello = Freight_Wire_V1_Hello()
        hello.role = .app
        hello.name = label
        hello.capabilities = capabilities
        hello.eagerBytes = eagerBytes
        try self.init(
            fd: try Self.connectUnix(socketPath), hello: hello, limits: limits, readTimeoutSeconds: readTimeoutSeconds)
    }

    /// Joins the node at `host:port` as node `name` of `cluster`, as stripe 0 of a one-stripe link, listening
    /// (it says) at `listen`.
    public convenience init(
        peerOf host: String, port: Int, name: String, cluster: String, listen: String, incarnation: UInt64,
        readTimeoutSeconds: Int = 10
    ) throws {
        let fd = try BlockingSocket.connect(host: host, port: port, readTimeoutSeconds: readTimeoutSeconds)
        try self.init(
            fd: fd, hello: Self.nodeHello(name: name, cluster: cluster, listen: listen, incarnation: incarnation),
            readTimeoutSeconds: readTimeoutSeconds)
    }

    /// Takes the next connection a node dials into `listener` (the first stripe of its link to this node) and
    /// answers it as node `name`: what the node sends its peer (credits, outcomes, ABORTs) arrives here.
    public convenience init(
        acceptingOn listener: Int32, name: String, cluster: String, listen: String, incarnation: UInt64,
        readTimeoutSeconds: Int = 10
    ) throws {
        let fd = accept(listener, nil, nil)
        guard fd >= 0 else { throw FreightError(.io, "accept failed") }
        try self.init(
            fd: fd, hello: Self.nodeHello(name: name, cluster: cluster, listen: listen, incarnation: incarnation),
            readTimeoutSeconds: readTimeoutSeconds)
    }

    static func nodeHello(name: String, cluster: String, listen: String, incarnation: UInt64)
        -> Freight_Wire_V1_Hello
    {
        var hello = Freight_Wire_V1_Hello()
        hello.role = .node
        hello.name = name
        hello.cluster = cluster
        hello.listen = listen
        hello.streamIndex = 0
        hello.streamCount = 1
        hello.incarnation = incarnation
        return hello
    }

    private init(
        fd: Int32, hello: Freight_Wire_V1_Hello, limits: FrameLimits = FrameLimits(), readTimeoutSeconds: Int
    ) throws {
        self.fd = fd
        parser = FrameParser(limits: limits)
        var timeout = timeval(tv_sec: readTimeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        try write(FrameEncoder.prefaceBuffer(allocator: ByteBufferAllocator()))
        try write(try FrameEncoder.encode(.hello(hello)))
        guard case .hello(let answer) = try next(where: { if case .hello = $0 { true } else { false } }) else {
            throw FreightError(.internalError, "no hello")
        }
        nodeHello = answer
    }

    private static func connectUnix(_ socketPath: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw FreightError(.io, "socket failed") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = Array(socketPath.utf8)
        guard path.count < MemoryLayout.size(ofValue: address.sun_path) else {
            Foundation.close(fd)
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
            Foundation.close(fd)
            throw FreightError(.io, "cannot connect to \(socketPath)")
        }
        return fd
    }

    private var closed = false

    deinit { close() }

    /// Closes the connection (once).
    public func close() {
        guard !closed else { return }
        closed = true
        Foundation.close(fd)
    }

    public func write(_ buffer: ByteBuffer) throws {
        var left = buffer
        while left.readableBytes > 0 {
            // MSG_NOSIGNAL: a node that closed the connection is an error here, not a SIGPIPE for the whole process.
            let count = left.withUnsafeReadableBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw FreightError(.io, "write failed") }
            left.moveReaderIndex(forwardBy: count)
        }
    }

    /// Registers an endpoint for `pattern`; returns its id.
    public func register(_ pattern: String) throws -> UInt64 {
        var request = Freight_Wire_V1_Request()
        request.requestID = UInt64.random(in: 1...UInt64.max)
        request.register.pattern = pattern
        try write(try FrameEncoder.encode(.request(request)))
        let frame = try next { if case .reply(let reply) = $0 { reply.requestID == request.requestID } else { false } }
        guard case .reply(let reply) = frame, reply.errorCode == 0 else {
            throw FreightError(.internalError, "the node refused to register \(pattern)")
        }
        return reply.endpointID
    }

    /// Sends an OPEN of a message of `length` bytes to `destination` (as a node: to the endpoints `targets`), with
    /// `attributes` in its header; returns its id.
    @discardableResult
    public func open(
        _ destination: String, length: UInt64, chunkBytes: UInt32 = 1 << 20, targets: [(node: String, id: UInt64)] = [],
        attributes: [String: String] = [:]
    ) throws -> UInt64 {
        let id = UInt64.random(in: 1...UInt64.max)
        var open = Freight_Wire_V1_Open()
        open.header.attributes = attributes
        open.header.id = id
        open.header.source = "wire-app"
        open.header.destination = destination
        open.header.length = length
        open.header.chunkBytes = chunkBytes
        open.targets = targets.map { target in
            var ref = Freight_Wire_V1_EndpointRef()
            ref.node = target.node
            ref.id = target.id
            return ref
        }
        try write(try FrameEncoder.encode(.open(open)))
        return id
    }

    /// Sends a DATA frame of `count` pattern bytes of message `id` at `offset`, with their CRC32C.
    public func data(_ id: UInt64, offset: UInt64, count: Int, last: Bool = false) throws {
        var body = [UInt8](repeating: 0, count: count)
        body.withUnsafeMutableBytes { PatternFill.fill($0, seed: 1, offset: Int64(offset)) }
        try data(id, offset: offset, bytes: body, last: last)
    }

    /// Sends a DATA frame of `bytes` of message `id` at `offset`, with `crc32c` as their checksum (theirs unless
    /// given: a test may send a wrong one).
    public func data(_ id: UInt64, offset: UInt64, bytes: [UInt8], crc32c: UInt32? = nil, last: Bool) throws {
        let chunk = DataChunk(
            messageID: id, offset: offset, crc32c: crc32c ?? CRC32C.checksum(bytes), isLast: last,
            bytes: ByteBuffer(bytes: bytes))
        try write(try FrameEncoder.encode(.data(chunk)))
    }

    /// Starts a DATA frame of `count` bytes of message `id` at `offset` and sends only its header and the first
    /// `sending` bytes: a sender that stalls mid-chunk.
    public func beginChunk(_ id: UInt64, offset: UInt64, of count: Int, sending: Int) throws {
        var frame = try FrameEncoder.encode(
            .data(
                DataChunk(
                    messageID: id, offset: offset, crc32c: 0, isLast: false,
                    bytes: ByteBuffer(repeating: 7, count: count))))
        try write(frame.readSlice(length: WireV1.frameHeaderBytes + WireV1.dataPrefixBytes + sending)!)
    }

    /// Waits for credit for message `id` (an ACK granting some); returns the credit offset.
    @discardableResult
    public func credit(for id: UInt64, atLeast bytes: UInt64 = 1) throws -> UInt64 {
        let frame = try next {
            if case .ack(let ack) = $0 { ack.messageID == id && ack.creditOffset >= bytes } else { false }
        }
        guard case .ack(let ack) = frame else { return 0 }
        return ack.creditOffset
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
