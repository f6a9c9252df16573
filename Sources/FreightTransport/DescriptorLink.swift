import CFreightSystem
import FreightCore
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The second connection between an app and its node, at `SOCKET.fd`: a `SOCK_SEQPACKET` Unix socket that carries
/// shared-memory pool descriptors (`SCM_RIGHTS`), which SwiftNIO's channels cannot. docs/shared-memory.md.
///
/// Messages, all integers big-endian:
/// - app → node, once: "FRGD", u16 version 1, u16 0, u64 session token (from the node's HELLO), u64 send-pool
///   bytes, u64 receive-pool bytes; two descriptors (send pool, receive pool).
/// - app → node, on a link of its own per file it sends (docs/small-messages-and-files.md): "FRGF", u16 version
///   1, u16 0, u64 session token, u64 file bytes; one descriptor (the file, open for reading). The file is lent
///   while the link is open: the app closes the link when its message ended.
/// - app → node, on a link of its own per device allocation it sends from (docs/gpu.md): "FRGV", u16 version 1,
///   u16 0, u64 session token, u64 allocation bytes, 16 bytes the GPU's UUID, 64 bytes the allocation's CUDA IPC
///   handle; no descriptor. Lent while the link is open, as a file is.
/// - node → app: u8 kind, 3 bytes 0, u32 pool, u64 bytes, u32 second pool, u32 text length, text.
///   kind 1 accepted (pool = the app's send pool id, second = its receive pool id; for a file or a device
///   allocation: pool = its id, second 0), 2 refused (text = reason), 3 another app's send pool (one descriptor),
///   sent before the first SHARED frame that names it, 4 another app's device allocation (text = 16 bytes GPU UUID
///   and 64 bytes IPC handle; no descriptor), sent likewise, 5 a device allocation withdrawn (its app took it
///   back or is gone: the receiver closes its handle).
public enum DescriptorLink {
    public static let suffix = ".fd"
    static let magic: [UInt8] = Array("FRGD".utf8)
    static let fileMagic: [UInt8] = Array("FRGF".utf8)
    static let attachBytes = 32
    static let headerBytes = 24
    static let textMax = 1000

    public struct Attach: Sendable, Hashable {
        public var token: UInt64
        public var sendBytes: Int
        public var receiveBytes: Int

        public init(token: UInt64, sendBytes: Int, receiveBytes: Int) {
            self.token = token
            self.sendBytes = sendBytes
            self.receiveBytes = receiveBytes
        }
    }

    /// A file lent for sending (`FRGF`): the session it belongs to and its size when the app opened it.
    public struct FileAttach: Sendable, Hashable {
        public var token: UInt64
        public var bytes: UInt64

        public init(token: UInt64, bytes: UInt64) {
            self.token = token
            self.bytes = bytes
        }
    }

    public static func encode(_ file: FileAttach) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeBytes(fileMagic)
        buffer.writeInteger(UInt16(1))
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(file.token)
        buffer.writeInteger(file.bytes)
        return Array(buffer.readableBytesView)
    }

    public static func decodeFileAttach(_ bytes: [UInt8]) throws(FreightError) -> FileAttach {
        var buffer = ByteBuffer(bytes: bytes)
        guard bytes.count == fileAttachBytes, buffer.readBytes(length: 4) == fileMagic else {
            throw FreightError(.protocolViolation, "not a Freight file attach")
        }
        guard buffer.readInteger(as: UInt16.self) == 1, buffer.readInteger(as: UInt16.self) == 0 else {
            throw FreightError(.protocolViolation, "unsupported descriptor link version")
        }
        let token = buffer.readInteger(as: UInt64.self)!
        let size = buffer.readInteger(as: UInt64.self)!
        guard size > 0, size <= UInt64(Int64.max) else {
            throw FreightError(.invalidArgument, "a lent file must have 1 byte or more")
        }
        return FileAttach(token: token, bytes: size)
    }

    static let fileAttachBytes = 24

    /// A device allocation lent for sending (`FRGV`): the session, the allocation's size, its GPU and IPC handle.
    public struct DeviceAttach: Sendable, Hashable {
        public var token: UInt64
        public var bytes: UInt64
        /// The GPU's UUID, 16 bytes.
        public var gpu: [UInt8]
        /// The allocation's `CUipcMemHandle`, 64 bytes.
        public var handle: [UInt8]

        public init(token: UInt64, bytes: UInt64, gpu: [UInt8], handle: [UInt8]) {
            self.token = token
            self.bytes = bytes
            self.gpu = gpu
            self.handle = handle
        }
    }

    static let deviceMagic: [UInt8] = Array("FRGV".utf8)
    public static let gpuBytes = 16
    public static let handleBytes = 64
    static let deviceAttachBytes = 24 + gpuBytes + handleBytes

    public static func encode(_ device: DeviceAttach) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeBytes(deviceMagic)
        buffer.writeInteger(UInt16(1))
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(device.token)
        buffer.writeInteger(device.bytes)
        buffer.writeBytes(
            device.gpu.prefix(gpuBytes) + [UInt8](repeating: 0, count: max(0, gpuBytes - device.gpu.count)))
        buffer.writeBytes(
            device.handle.prefix(handleBytes) + [UInt8](repeating: 0, count: max(0, handleBytes - device.handle.count)))
        return Array(buffer.readableBytesView)
    }

    public static func decodeDeviceAttach(_ bytes: [UInt8]) throws(FreightError) -> DeviceAttach {
        var buffer = ByteBuffer(bytes: bytes)
        guard bytes.count == deviceAttachBytes, buffer.readBytes(length: 4) == deviceMagic else {
            throw FreightError(.protocolViolation, "not a Freight device attach")
        }
        guard buffer.readInteger(as: UInt16.self) == 1, buffer.readInteger(as: UInt16.self) == 0 else {
            throw FreightError(.protocolViolation, "unsupported descriptor link version")
        }
        let token = buffer.readInteger(as: UInt64.self)!
        let size = buffer.readInteger(as: UInt64.self)!
        guard size > 0, size <= UInt64(Int64.max) else {
            throw FreightError(.invalidArgument, "a lent device allocation must have 1 byte or more")
        }
        let gpu = buffer.readBytes(length: gpuBytes)!
        let handle = buffer.readBytes(length: handleBytes)!
        return DeviceAttach(token: token, bytes: size, gpu: gpu, handle: handle)
    }

    /// Whether `bytes` is a device attach (`FRGV`).
    static func isDeviceAttach(_ bytes: [UInt8]) -> Bool { bytes.starts(with: deviceMagic) }

    /// Whether `bytes` is a file attach (`FRGF`) rather than a pool attach.
    static func isFileAttach(_ bytes: [UInt8]) -> Bool { bytes.starts(with: fileMagic) }

    public enum Message: Sendable, Hashable {
        case accepted(sendPool: UInt32, receivePool: UInt32)
        case refused(String)
        case pool(id: UInt32, bytes: Int)
        /// Another app's device allocation: its GPU's UUID (16 bytes) and IPC handle (64 bytes).
        case devicePool(id: UInt32, bytes: Int, gpu: [UInt8], handle: [UInt8])
        case withdrawn(id: UInt32)
    }

    public static func encode(_ attach: Attach) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeBytes(magic)
        buffer.writeInteger(UInt16(1))
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(attach.token)
        buffer.writeInteger(UInt64(attach.sendBytes))
        buffer.writeInteger(UInt64(attach.receiveBytes))
        return Array(buffer.readableBytesView)
    }

    public static func decodeAttach(_ bytes: [UInt8]) throws(FreightError) -> Attach {
        var buffer = ByteBuffer(bytes: bytes)
        guard bytes.count == attachBytes, buffer.readBytes(length: 4) == magic else {
            throw FreightError(.protocolViolation, "not a Freight descriptor link")
        }
        guard buffer.readInteger(as: UInt16.self) == 1, buffer.readInteger(as: UInt16.self) == 0 else {
            throw FreightError(.protocolViolation, "unsupported descriptor link version")
        }
        let token = buffer.readInteger(as: UInt64.self)!
        let send = buffer.readInteger(as: UInt64.self)!
        let receive = buffer.readInteger(as: UInt64.self)!
        let max = UInt64(Limits.sharedPoolBytesMax)
        guard send > 0, receive > 0, send <= max, receive <= max else {
            throw FreightError(.invalidArgument, "shared pools must be 1...\(Limits.sharedPoolBytesMax) bytes")
        }
        return Attach(token: token, sendBytes: Int(send), receiveBytes: Int(receive))
    }

    public static func encode(_ message: Message) -> [UInt8] {
        var buffer = ByteBuffer()
        var text: [UInt8] = []
        switch message {
        case .accepted(let send, let receive):
            buffer.writeInteger(UInt8(1))
            buffer.writeBytes([0, 0, 0])
            buffer.writeInteger(send)
            buffer.writeInteger(UInt64(0))
            buffer.writeInteger(receive)
        case .refused(let reason):
            text = Array(reason.utf8.prefix(textMax))
            buffer.writeInteger(UInt8(2))
            buffer.writeBytes([0, 0, 0])
            buffer.writeInteger(UInt32(0))
            buffer.writeInteger(UInt64(0))
            buffer.writeInteger(UInt32(0))
        case .pool(let id, let bytes):
            buffer.writeInteger(UInt8(3))
            buffer.writeBytes([0, 0, 0])
            buffer.writeInteger(id)
            buffer.writeInteger(UInt64(bytes))
            buffer.writeInteger(UInt32(0))
        case .devicePool(let id, let bytes, let gpu, let handle):
            text = Array(gpu.prefix(gpuBytes)) + Array(handle.prefix(handleBytes))
            buffer.writeInteger(UInt8(4))
            buffer.writeBytes([0, 0, 0])
            buffer.writeInteger(id)
            buffer.writeInteger(UInt64(bytes))
            buffer.writeInteger(UInt32(0))
        case .withdrawn(let id):
            buffer.writeInteger(UInt8(5))
            buffer.writeBytes([0, 0, 0])
            buffer.writeInteger(id)
            buffer.writeInteger(UInt64(0))
            buffer.writeInteger(UInt32(0))
        }
        buffer.writeInteger(UInt32(text.count))
        buffer.writeBytes(text)
        return Array(buffer.readableBytesView)
    }

    public static func decodeMessage(_ bytes: [UInt8]) throws(FreightError) -> Message {
        var buffer = ByteBuffer(bytes: bytes)
        guard bytes.count >= headerBytes else { throw FreightError(.protocolViolation, "short descriptor message") }
        let kind = buffer.readInteger(as: UInt8.self)!
        buffer.moveReaderIndex(forwardBy: 3)
        let pool = buffer.readInteger(as: UInt32.self)!
        let size = buffer.readInteger(as: UInt64.self)!
        let second = buffer.readInteger(as: UInt32.self)!
        let textLength = Int(buffer.readInteger(as: UInt32.self)!)
        guard textLength <= textMax, buffer.readableBytes == textLength else {
            throw FreightError(.protocolViolation, "malformed descriptor message")
        }
        switch kind {
        case 1: return .accepted(sendPool: pool, receivePool: second)
        case 2: return .refused(buffer.readString(length: textLength) ?? "refused")
        case 3:
            guard size > 0, size <= UInt64(Limits.sharedPoolBytesMax) else {
                throw FreightError(.protocolViolation, "pool of \(size) bytes")
            }
            return .pool(id: pool, bytes: Int(size))
        case 4:
            guard size > 0, size <= UInt64(Int64.max), textLength == gpuBytes + handleBytes else {
                throw FreightError(.protocolViolation, "malformed device pool message")
            }
            let gpu = buffer.readBytes(length: gpuBytes)!
            return .devicePool(id: pool, bytes: Int(size), gpu: gpu, handle: buffer.readBytes(length: handleBytes)!)
        case 5: return .withdrawn(id: pool)
        default: throw FreightError(.protocolViolation, "unknown descriptor message kind \(kind)")
        }
    }

    /// Opens a descriptor link to the node whose Unix socket is `socketPath` (blocking); -1 on failure.
    public static func connect(socketPath: String) -> Int32 {
        freight_unix_connect_type(socketPath + suffix, 1)
    }

    /// Sends `bytes` with `fds` attached. Non-blocking when `wait` is false (a full link fails instead).
    public static func send(_ bytes: [UInt8], fds: [Int32] = [], on socket: Int32, wait: Bool) -> Bool {
        let sent = bytes.withUnsafeBytes { raw in
            fds.withUnsafeBufferPointer { fdPointer in
                freight_send_with_fds(
                    socket, raw.baseAddress, raw.count, fdPointer.baseAddress, Int32(fds.count),
                    wait ? 0 : Int32(MSG_DONTWAIT))
            }
        }
        return sent == bytes.count
    }

    /// Receives one message (blocking) with up to two descriptors; nil at the end of the link or on error.
    public static func receive(on socket: Int32) -> (bytes: [UInt8], fds: [Int32])? {
        var bytes = [UInt8](repeating: 0, count: headerBytes + textMax + 64)
        var fds: [Int32] = [-1, -1]
        var count: Int32 = 0
        let received = bytes.withUnsafeMutableBytes { raw in
            fds.withUnsafeMutableBufferPointer { fdPointer in
                freight_recv_with_fds(socket, raw.baseAddress, raw.count, fdPointer.baseAddress, 2, &count)
            }
        }
        let got = Array(fds.prefix(Int(count)))
        guard received > 0 else {
            for fd in got { close(fd) }
            return nil
        }
        return (Array(bytes.prefix(received)), got)
    }
}

/// Accepts descriptor links on a node: one thread polls the listening socket and every link that has not sent its
/// attach message yet, so that attaches are served concurrently (docs/hardening.md): a link that sends nothing
/// keeps no one else waiting, and is closed when ``attachTimeoutMillis`` pass; at most ``pendingMax`` wait at once
/// (more are refused with the reason). Each attach is handed to `onAttach`. A file attach (`FRGF`) is handed to
/// `onFile`, and its link stays in the poll set until the app closes it (its message ended, or the app is gone),
/// which `onFileClosed` hears; at most ``filesMax`` files are lent at once. Stopped by ``stop()``.
public final class DescriptorListener: @unchecked Sendable {  // `socket` is set once; stop is idempotent by design
    public let path: String
    private let socket: Int32
    private let thread = NIOThreadPool(numberOfThreads: 1)
    private let stopped = StopFlag()
    /// How long a link has to send its attach message, and how many may be waiting to.
    public static let attachTimeoutMillis = 2000
    public static let pendingMax = 64
    /// Files lent at once, over every app (each holds a descriptor of the node's until its link closes).
    public static let filesMax = 1024
    /// The longest the thread sleeps in `poll`, so that it sees ``stop()`` soon.
    static let pollMillis = 200

    /// Called on the listener's thread with the attach message, its two descriptors and the link's socket; the
    /// callee owns all three from then on.
    public typealias AttachHandler =
        @Sendable (DescriptorLink.Attach, _ send: Int32, _ receive: Int32, _ link: Int32)
        -> Void

    /// Called on the listener's thread with a file attach, the file's descriptor and the link's socket; the callee
    /// owns both, but for the link's closing, which ``FileClosedHandler`` reports: the callee closes the link then.
    public typealias FileHandler = @Sendable (DescriptorLink.FileAttach, _ file: Int32, _ link: Int32) -> Void
    /// Called on the listener's thread with a device attach and the link's socket, watched as a file's link is
    /// (``FileClosedHandler`` reports its end).
    public typealias DeviceHandler = @Sendable (DescriptorLink.DeviceAttach, _ link: Int32) -> Void
    /// The app closed a file's link (or the listener stopped watching it): the callee closes `link`.
    public typealias FileClosedHandler = @Sendable (_ link: Int32) -> Void

    public init(
        path: String, onAttach: @escaping AttachHandler,
        onFile: @escaping FileHandler = { _, file, link in
            close(file)
            close(link)
        },
        onFileClosed: @escaping FileClosedHandler = { _ in },
        onDevice: @escaping DeviceHandler = { _, link in close(link) }
    ) throws(FreightError) {
        self.path = path
        let fd = freight_unix_listen(path, 64, 1)
        guard fd >= 0 else {
            throw FreightError(.io, "cannot listen on \(path): \(String(cString: strerror(errno)))")
        }
        socket = fd
        thread.start()
        thread.submit { [socket, stopped] _ in
            Self.serve(
                socket, stopped: stopped,
                handlers: Handlers(attach: onAttach, file: onFile, closed: onFileClosed, device: onDevice))
        }
    }

    private static func nowMillis() -> Int {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return time.tv_sec * 1000 + time.tv_nsec / 1_000_000
    }

    struct Handlers {
        let attach: AttachHandler
        let file: FileHandler
        let closed: FileClosedHandler
        let device: DeviceHandler
    }

    private static func serve(_ socket: Int32, stopped: StopFlag, handlers: Handlers) {
        var pending: [(link: Int32, deadline: Int)] = []
        // Links of lent files, watched for their end; each is the node's to close once reported.
        var files: [Int32] = []
        defer {
            for entry in pending { close(entry.link) }
            for link in files { handlers.closed(link) }
        }
        while !stopped.value.load(ordering: .relaxed) {
            var polls = [pollfd(fd: socket, events: Int16(POLLIN), revents: 0)]
            polls += pending.map { pollfd(fd: $0.link, events: Int16(POLLIN), revents: 0) }
            polls += files.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let now = nowMillis()
            let wait = min(pollMillis, pending.map { max(0, $0.deadline - now) }.min() ?? pollMillis)
            let ready = poll(&polls, nfds_t(polls.count), Int32(wait))
            if ready < 0 && errno != EINTR { return }
            if stopped.value.load(ordering: .relaxed) { return }
            let after = nowMillis()
            var waiting: [(link: Int32, deadline: Int)] = []
            // A file's link says nothing after its attach: anything readable is its end (or a violation: ended too).
            var watched: [Int32] = []
            for (index, link) in files.enumerated() {
                if polls[1 + pending.count + index].revents != 0 {
                    handlers.closed(link)
                } else {
                    watched.append(link)
                }
            }
            files = watched
            for (index, entry) in pending.enumerated() {
                if polls[index + 1].revents != 0 {
                    if attach(entry.link, handlers: handlers, filesLent: files.count) { files.append(entry.link) }
                } else if after >= entry.deadline {
                    _ = DescriptorLink.send(
                        DescriptorLink.encode(.refused("no attach message within \(attachTimeoutMillis) ms")),
                        on: entry.link, wait: false)
                    close(entry.link)
                } else {
                    waiting.append(entry)
                }
            }
            pending = waiting
            if polls[0].revents != 0 {
                let link = freight_accept(socket)
                if link < 0 {
                    if errno == EAGAIN || errno == EMFILE || errno == ENFILE { continue }
                    return
                }
                guard pending.count < pendingMax else {
                    _ = DescriptorLink.send(
                        DescriptorLink.encode(.refused("\(pendingMax) attaches are in progress; try again")),
                        on: link, wait: false)
                    close(link)
                    continue
                }
                pending.append((link, after + attachTimeoutMillis))
            }
        }
    }

    /// Reads the attach message of a link that has one ready (or closed) and hands it on, or refuses it. Returns
    /// true for a file handed on, whose link is to be watched.
    private static func attach(_ link: Int32, handlers: Handlers, filesLent: Int) -> Bool {
        freight_set_receive_timeout(link, 100)  // the message is there: a read never waits for long
        guard let (bytes, fds) = DescriptorLink.receive(on: link) else {
            close(link)
            return false
        }
        if DescriptorLink.isDeviceAttach(bytes) {
            let refusal: String?
            var device: DescriptorLink.DeviceAttach?
            if !fds.isEmpty {
                refusal = "a device attach carries no descriptor"
            } else if filesLent >= filesMax {
                refusal = "\(filesMax) files and device allocations are lent to this node already"
            } else {
                do throws(FreightError) {
                    device = try DescriptorLink.decodeDeviceAttach(bytes)
                    refusal = nil
                } catch {
                    refusal = error.message
                }
            }
            guard let device, refusal == nil else {
                _ = DescriptorLink.send(
                    DescriptorLink.encode(.refused(refusal ?? "malformed device attach")), on: link, wait: false)
                for fd in fds { close(fd) }
                close(link)
                return false
            }
            handlers.device(device, link)
            return true
        }
        if DescriptorLink.isFileAttach(bytes) {
            let refusal: String?
            var file: DescriptorLink.FileAttach?
            if fds.count != 1 {
                refusal = "a file attach must carry one descriptor"
            } else if filesLent >= filesMax {
                refusal = "\(filesMax) files are lent to this node already; send through the pool"
            } else {
                do throws(FreightError) {
                    file = try DescriptorLink.decodeFileAttach(bytes)
                    refusal = nil
                } catch {
                    refusal = error.message
                }
            }
            guard let file, refusal == nil else {
                _ = DescriptorLink.send(
                    DescriptorLink.encode(.refused(refusal ?? "malformed file attach")), on: link, wait: false)
                for fd in fds { close(fd) }
                close(link)
                return false
            }
            handlers.file(file, fds[0], link)
            return true
        }
        guard fds.count == 2, let attach = try? DescriptorLink.decodeAttach(bytes) else {
            let reason = fds.count == 2 ? "malformed attach message" : "attach must carry two pools"
            _ = DescriptorLink.send(DescriptorLink.encode(.refused(reason)), on: link, wait: false)
            for fd in fds { close(fd) }
            close(link)
            return false
        }
        freight_set_receive_timeout(link, 0)
        handlers.attach(attach, fds[0], fds[1], link)
        return false
    }

    final class StopFlag: Sendable {
        let value = Atomic<Bool>(false)
    }

    /// Stops accepting and removes the socket file.
    public func stop() {
        stopped.value.store(true, ordering: .relaxed)
        shutdown(socket, Int32(SHUT_RDWR))
        try? thread.syncShutdownGracefully()
        close(socket)
        unlink(path)
    }
}
