import FreightCUDA
import FreightCore
import FreightTransport
import FreightWire
import Logging
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// An app's handle on its Freight node: register addresses, receive, send, resolve.
///
/// ```swift
/// let client = try await FreightClient.connect(to: .unix(path: "/tmp/freight.sock"), label: "decoder")
/// let inbox = try await client.receive("llm/decode/3")
/// let report = try await client.send(to: "llm/decode/3", body: .file(path: "kv.bin"))
/// ```
public final class FreightClient: Sendable {
    let core: ClientCore
    let group: MultiThreadedEventLoopGroup?
    public let nodeName: String
    private let closed = Atomic<Bool>(false)
    /// Requests waiting for their replies, and the inbox they come to (FreightClient+Request).
    let requests = Requests()
    /// The address sent to last, parsed: apps send many messages to the same address.
    private let lastAddress = Mutex<(text: String, address: Address)?>(nil)

    /// The client's own thread as a task executor: tasks that send, request or receive many small messages run
    /// there without a hop between threads per message (``ClientExecutor``).
    public let executor: ClientExecutor

    private init(core: ClientCore, group: MultiThreadedEventLoopGroup?, nodeName: String) {
        self.core = core
        self.group = group
        self.nodeName = nodeName
        self.executor = ClientExecutor(gate: core.gate)
    }

    /// Attaches to a node over its Unix socket or TCP port.
    /// - Parameters:
    ///   - windowBytes: how many body bytes of one incoming message may be in flight to this app.
    ///   - sharedMemory: whether bodies move through shared memory with the node (Unix socket only;
    ///     docs/shared-memory.md).
    ///   - token: the secret of a token of the node's access list (docs/hardening.md): how an app over TCP says who
    ///     it is. Apps on the Unix socket are known by their process's credentials and need none.
    ///   - gpus: GPUs this app opens CUDA IPC handles on (docs/gpu.md): bodies that other apps of the node send
    ///     from device memory there are handed to it in place, as ``BodyChunk/device`` (needs shared memory).
    public static func connect(
        to address: NodeAddress,
        label: String = "app",
        token: String? = nil,
        windowBytes: Int = Limits.windowBytesDefault,
        sharedMemory: SharedMemory = .automatic,
        gpus: [CUDAGPU] = [],
        tuning: SocketTuning = .default,
        eventLoop: (any EventLoop)? = nil,
        logger: Logger = Logger(label: "freight.client")
    ) async throws -> FreightClient {
        guard (Limits.windowBytesMin...Limits.windowBytesMax).contains(windowBytes) else {
            throw FreightError(
                .invalidArgument,
                "window \(windowBytes) is out of range \(Limits.windowBytesMin)...\(Limits.windowBytesMax)")
        }
        let group = eventLoop == nil ? MultiThreadedEventLoopGroup(numberOfThreads: 1) : nil
        let loop = eventLoop ?? group!.next()
        let core = ClientCore(eventLoop: loop, label: label, windowBytes: windowBytes)
        // Taken now: a node that closes the connection before this task runs again (a loaded machine) fails the
        // promise and lets go of it, and the failure must still reach this call.
        let answered = core.helloPromise!.futureResult
        let transport = Transport(
            eventLoop: loop, tuning: tuning, limits: FrameLimits(verifyChecksumsOnArrival: true), logger: logger
        )
        do {
            let connection = try await transport.connect(to: address) { channel in
                let connection = FrameConnection(channel: channel, id: 1)
                connection.delegate = core
                connection.isDialed = true
                return connection
            }.get()
            let hello = try await loop.flatSubmit {
                core.connection = connection
                connection.sendPreface()
                var hello = Freight_Wire_V1_Hello()
                hello.role = .app
                hello.name = label
                hello.capabilities =
                    [WireV1.capabilityResume, WireV1.capabilitySmall, WireV1.capabilitySmallLarge]
                    + gpus.prefix(Limits.gpusPerAppMax).map { GPUName.capabilityPrefix + $0.uuid }
                hello.eagerBytes = UInt64(Limits.eagerBytesApp)
                if let token { hello.token = token }
                connection.send(.hello(hello))
                return answered
            }.get()
            try await attachShared(
                core, address: address, hello: hello, sharedMemory: sharedMemory, gpus: gpus, logger: logger)
            return FreightClient(core: core, group: group, nodeName: hello.name)
        } catch {
            let failure =
                error as? FreightError ?? FreightError(.connectionFailed, "cannot reach node at \(address): \(error)")
            // A connect that failed never reached the core: its hello promise is let go of here, failed.
            try? await loop.submit {
                core.helloPromise?.fail(failure)
                core.helloPromise = nil
            }.get()
            try? await group?.shutdownGracefully()
            throw failure
        }
    }

    /// Lends this app's pools to its node, as `sharedMemory` asks; on failure, throws or logs the reason.
    private static func attachShared(
        _ core: ClientCore, address: NodeAddress, hello: Freight_Wire_V1_Hello, sharedMemory: SharedMemory,
        gpus: [CUDAGPU], logger: Logger
    ) async throws {
        guard let sizes = sharedMemory.sizes else { return }
        var required = false
        if case .required = sharedMemory { required = true }
        guard case .unix(let path) = address else {
            if required {
                throw FreightError(.invalidArgument, "shared memory needs the node's Unix socket, not TCP")
            }
            return
        }
        do {
            let shared = try await ClientShared.attach(
                socketPath: path, token: hello.sessionToken, sendBytes: sizes.send, receiveBytes: sizes.receive,
                gpus: gpus)
            try await core.eventLoop.submit {
                core.shared = shared
                shared.startReading(into: core)
            }.get()
        } catch {
            if required {
                try? await core.eventLoop.flatSubmit {
                    core.connection?.channel.close() ?? core.eventLoop.makeSucceededVoidFuture()
                }.get()
                throw error
            }
            logger.info("shared memory not used: \(error)")
        }
    }

    /// Whether bodies move through shared memory with the node.
    public var usesSharedMemory: Bool {
        get async { (try? await core.gate.submit { [core] in core.shared != nil }) ?? false }
    }

    /// A buffer of `count` bytes in this app's shared send pool: fill it, then send it with
    /// `.shared(buffer)` (docs/shared-memory.md). Throws when the client has no shared memory or the pool is full.
    public func allocate(_ count: Int) async throws -> SharedBuffer {
        let core = self.core
        return try await core.gate.submit { () throws -> SharedBuffer in try core.allocateShared(count) }
    }

    /// Registers an endpoint on `pattern` (an address or a pattern) and returns its messages as they arrive.
    /// Receivers with the same `group` on the same pattern share messages: each goes to one of them.
    public func receive(_ pattern: String, group: String? = nil) async throws -> Subscription {
        let parsed = try AddressPattern(pattern)
        // Bounded by the client: at most `Limits.messagesPerConnectionMax` messages wait untaken (``ClientCore/handOver(_:to:)``).
        let (stream, continuation) = AsyncThrowingStream<[IncomingMessage], any Error>.makeStream()
        let core = self.core
        let reply = try await core.gate.flatSubmit {
            core.request(
                .register(
                    .with {
                        $0.pattern = pattern
                        $0.group = group ?? ""
                    }))
        }
        let id = reply.endpointID
        try await core.gate.submit { core.subscribe(endpointID: id, continuation: continuation) }
        continuation.onTermination = { @Sendable _ in
            core.gate.execute { core.unsubscribe(endpointID: id) }
        }
        return Subscription(
            endpointID: id, pattern: parsed, stream: stream,
            accepted: { messageID in
                if core.eventLoop.inEventLoop {
                    core.accepted(messageID)
                } else {
                    core.gate.execute { core.accepted(messageID) }
                }
            },
            cancelled: { core.gate.execute { core.unsubscribe(endpointID: id) } })
    }

    /// Sends a message and waits until every chosen endpoint holds all of it, or until it fails.
    public func send(to address: String, body: OutgoingBody, options: SendOptions = SendOptions()) async throws
        -> DeliveryReport
    {
        let (destination, length) = try prepared(address, body: body, options: options)
        let core = self.core
        let options = options.withCurrentTrace()
        // On the client's thread already (a task that prefers ``executor``): no hop.
        if core.eventLoop.inEventLoop {
            // Resumed straight from the client's state when the report comes: no future, no callback.
            return try await withUnsafeThrowingContinuation { continuation in
                core.send(
                    to: destination, body: body, length: length, options: options,
                    completion: .continuation(continuation))
            }
        }
        return try await core.gate.flatSubmit {
            core.send(to: destination, body: body, length: length, options: options)
        }
    }

    /// A send's destination, parsed, and its body's length, or why it cannot be sent.
    func prepared(_ address: String, body: OutgoingBody, options: SendOptions) throws -> (Address, UInt64) {
        let destination: Address
        if let last = lastAddress.withLock({ $0 }), last.text == address {
            destination = last.address
        } else {
            destination = try Address(address)
            lastAddress.withLock { $0 = (address, destination) }
        }
        guard (Limits.chunkBytesMin...Limits.chunkBytesMax).contains(options.chunkBytes) else {
            throw FreightError(
                .invalidArgument,
                "chunk size \(options.chunkBytes) is out of range \(Limits.chunkBytesMin)...\(Limits.chunkBytesMax)")
        }
        let length: UInt64
        switch body {
        case .bytes(let buffer): length = UInt64(buffer.readableBytes)
        case .pattern(_, let count):
            guard count >= 0 else { throw FreightError(.invalidArgument, "negative length") }
            length = UInt64(count)
        case .file(let path): length = try Self.fileSize(path)
        case .repeating(let block, let count):
            guard count >= 0, block.readableBytes >= options.chunkBytes else {
                throw FreightError(
                    .invalidArgument, "a repeated block must hold one chunk (\(options.chunkBytes) bytes)")
            }
            length = UInt64(count)
        case .shared(let buffer): length = UInt64(buffer.count)
        case .device(let buffer): length = UInt64(buffer.count)
        case .stream(_, let count):
            guard count >= 0 else { throw FreightError(.invalidArgument, "negative length") }
            length = UInt64(count)
        case .repeatingShared(let block, let count):
            guard count >= 0, block.count >= options.chunkBytes else {
                throw FreightError(
                    .invalidArgument, "a repeated block must hold one chunk (\(options.chunkBytes) bytes)")
            }
            length = UInt64(count)
        }
        return (destination, length)
    }

    /// Endpoints whose pattern matches `pattern` (or an address), across the cluster.
    /// At most `Limits.resolveResultsMax` are listed; `truncated` says when more matched.
    public func resolve(_ pattern: String) async throws -> (endpoints: [EndpointInfo], truncated: Bool) {
        _ = try AddressPattern(pattern)
        let core = self.core
        let reply = try await core.gate.flatSubmit { core.request(.resolve(.with { $0.pattern = pattern })) }
        let endpoints = reply.endpoints.map(EndpointInfo.init(wire:))
        return (endpoints, reply.truncated)
    }

    /// How the node would route a message of `bytes` to each endpoint `pattern` reaches (docs/topology.md): one
    /// plan per endpoint, in the order of `endpoints`, for at most `Limits.explainResultsMax` of them.
    public func explain(_ pattern: String, bytes: Int, fromGPU: Int? = nil, toGPU: Int? = nil) async throws -> (
        endpoints: [EndpointInfo], plans: [Freight_Wire_V1_RoutePlan]
    ) {
        _ = try AddressPattern(pattern)
        guard bytes > 0 else { throw FreightError(.invalidArgument, "--size must be at least 1 byte") }
        let request = Freight_Wire_V1_Resolve.with {
            $0.pattern = pattern
            $0.explainBytes = UInt64(bytes)
            if let fromGPU { $0.fromGpu = UInt32(clamping: fromGPU) }
            if let toGPU { $0.toGpu = UInt32(clamping: toGPU) }
        }
        let core = self.core
        let reply = try await core.gate.flatSubmit { core.request(.resolve(request)) }
        let endpoints = reply.endpoints.map(EndpointInfo.init(wire:))
        return (endpoints, reply.plans)
    }

    /// The node's view of itself and its peers.
    public func status() async throws -> Freight_Wire_V1_NodeStatus {
        let core = self.core
        return try await core.gate.flatSubmit { core.request(.status(.init())) }.status
    }

    /// Detaches from the node; messages in progress fail. Afterwards every call fails with "the client is closed"
    /// and what the app still holds (a subscription, a message, a body writer) may be dropped or given up: nothing
    /// waits on, or is queued to, the client's thread that is gone.
    public func close() async {
        guard !closed.exchange(true, ordering: .relaxed) else { return }
        requests.close(FreightError(.cancelled, "the client closed"))
        let core = self.core
        try? await core.eventLoop.flatSubmit {
            // What the app sent last (a DONE, a RELEASE, outcomes and small messages gathered this turn) leaves
            // before the connection closes.
            core.flushSmall()
            core.connection?.channel.flush()
            return core.connection?.channel.close() ?? core.eventLoop.makeSucceededVoidFuture()
        }.get()
        try? await core.eventLoop.submit { core.shared?.close() }.get()
        if let group {
            core.gate.close()
            try? await group.shutdownGracefully()
        }
    }

    static func fileSize(_ path: String) throws -> UInt64 {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw FreightError(.io, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        return UInt64(info.st_size)
    }
}
