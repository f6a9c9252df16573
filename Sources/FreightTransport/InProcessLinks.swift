import FreightCore
import NIOCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Links between listeners and dialers of one process with no socket at all (`inproc://NAME`): two
/// ``InProcessChannel``s joined back to back, each on its own event loop. Bytes cross by reference (a `ByteBuffer`
/// written at one end is what the other end reads), a write completes when the far end has read it, and a far end
/// that stops reading stops the writer through `isWritable`, as a socket's buffers would. Tests run whole nodes
/// over it, and cut or take down its links at will (``cut(_:)``, ``setDown(_:_:)``).
public final class InProcessNetwork: Sendable {
    /// The network `inproc://` addresses name unless a ``Transport`` is given another.
    public static let shared = InProcessNetwork()

    struct Listener: Sendable {
        let id: UInt64
        let eventLoop: any EventLoop
        let initialize: @Sendable (Channel) -> EventLoopFuture<Void>
    }

    struct Pair: Sendable {
        let listener: String
        let dialer: String?
        let client: InProcessChannel
        let server: InProcessChannel
    }

    struct State: Sendable {
        var listeners: [String: Listener] = [:]
        var pairs: [UInt64: Pair] = [:]
        var down: Set<String> = []
        var dark: Set<String> = []
        /// Bytes the links of a name may still carry before they are cut (``cut(_:afterBytes:)``).
        var tripwires: [String: (bytes: Int, staysDown: Bool, darkens: Bool)] = [:]
        var nextID: UInt64 = 1
    }

    private let state = Mutex(State())

    public init() {}

    /// Listens on `name`; each link dialed there is set up by `initialize` on `eventLoop`.
    public func listen(
        name: String, eventLoop: any EventLoop, initialize: @escaping @Sendable (Channel) -> EventLoopFuture<Void>
    ) -> EventLoopFuture<any LinkListener> {
        let id: UInt64? = state.withLock { state in
            guard state.listeners[name] == nil else { return nil }
            let id = state.nextID
            state.nextID += 1
            state.listeners[name] = Listener(id: id, eventLoop: eventLoop, initialize: initialize)
            return id
        }
        guard let id else {
            return eventLoop.makeFailedFuture(IOError(errnoCode: EADDRINUSE, reason: "listen on inproc://\(name)"))
        }
        return eventLoop.makeSucceededFuture(
            InProcessListener(network: self, name: name, id: id, eventLoop: eventLoop))
    }

    /// Dials the listener `name`, as `dialer` (the dialing node's own in-process name, so that ``cut(_:)`` finds the
    /// link from either end). Nothing listening there refuses at once, as a socket would; either end down makes
    /// the dial time out after `timeout`, as a dark link would.
    public func connect(
        to name: String, from dialer: String?, timeout: TimeAmount = .seconds(Limits.dialTimeoutSeconds),
        eventLoop: any EventLoop,
        initialize: @escaping @Sendable (Channel) -> EventLoopFuture<Void>
    ) -> EventLoopFuture<Channel> {
        let isDown = state.withLock { state in
            state.down.contains(name) || (dialer.map(state.down.contains) ?? false)
        }
        if isDown {
            return eventLoop.scheduleTask(in: timeout) { () throws -> Channel in
                throw ChannelError.connectTimeout(timeout)
            }.futureResult
        }
        // Both ends are made only for a dial that goes ahead: an end that never opens would never close.
        let found: (Listener, InProcessChannel, InProcessChannel, UInt64)? = state.withLock { state in
            guard let listener = state.listeners[name] else { return nil }
            let server = InProcessChannel(eventLoop: listener.eventLoop)
            let client = InProcessChannel(eventLoop: eventLoop)
            let id = state.nextID
            state.nextID += 1
            state.pairs[id] = Pair(listener: name, dialer: dialer, client: client, server: server)
            return (listener, server, client, id)
        }
        guard let (listener, server, client, id) = found else {
            return eventLoop.makeFailedFuture(IOError(errnoCode: ECONNREFUSED, reason: "connect to inproc://\(name)"))
        }
        client.join(
            server, onClose: { [weak self] in self?.forget(id) },
            carried: { [weak self] bytes in self?.carried(bytes, on: id) })
        let serverReady = listener.eventLoop.flatSubmit {
            server.register()
            return listener.initialize(server)
        }
        let clientReady = eventLoop.flatSubmit {
            client.register()
            return initialize(client)
        }
        return clientReady.and(serverReady).flatMap { _ in
            listener.eventLoop.execute { server.activate() }
            client.activate()
            return eventLoop.makeSucceededFuture(client as Channel)
        }.flatMapError { error in
            client.eventLoop.execute { client.reset(IOError(errnoCode: ECONNABORTED, reason: "connect")) }
            server.eventLoop.execute { server.reset(IOError(errnoCode: ECONNABORTED, reason: "connect")) }
            return eventLoop.makeFailedFuture(error)
        }
    }

    /// Resets every link to or from `name` at once, as a cable pulled or `ss -K` would: what was in flight is lost,
    /// both ends see an error.
    public func cut(_ name: String) {
        let cut: [Pair] = state.withLock { state in
            let ids = state.pairs.filter { $0.value.listener == name || $0.value.dialer == name }.map(\.key)
            return ids.compactMap { state.pairs.removeValue(forKey: $0) }
        }
        for pair in cut {
            for end in [pair.client, pair.server] {
                end.eventLoop.execute { end.reset(IOError(errnoCode: ECONNRESET, reason: "in-process link cut")) }
            }
        }
    }

    /// Cuts every link to or from `name` once they have carried `bytes` more (counted as the far ends read them),
    /// and keeps `name` down after when `staysDown`: a break at an exact point of a transfer, whatever the speed of
    /// the machine.
    public func cut(_ name: String, afterBytes bytes: Int, staysDown: Bool = false) {
        state.withLock { state in state.tripwires[name] = (bytes, staysDown, false) }
    }

    /// Darkens the path to and from `name` (``darken(_:)``) once its links have carried `bytes` more.
    public func darken(_ name: String, afterBytes bytes: Int) {
        state.withLock { state in state.tripwires[name] = (bytes, false, true) }
    }

    private func carried(_ bytes: Int, on id: UInt64) {
        let tripped: (name: String, darkens: Bool)? = state.withLock { state in
            guard !state.tripwires.isEmpty, let pair = state.pairs[id] else { return nil }
            for name in [pair.listener, pair.dialer].compactMap({ $0 }) {
                guard let wire = state.tripwires[name] else { continue }
                if wire.bytes <= bytes {
                    state.tripwires[name] = nil
                    if wire.staysDown { state.down.insert(name) }
                    return (name, wire.darkens)
                }
                state.tripwires[name]?.bytes = wire.bytes - bytes
            }
            return nil
        }
        guard let tripped else { return }
        if tripped.darkens { darken(tripped.name) } else { cut(tripped.name) }
    }

    /// While `name` is down, dials to and from it time out; taking it down cuts the links it has.
    public func setDown(_ name: String, _ down: Bool) {
        let wasDark = state.withLock { state in
            _ = down ? state.down.insert(name).inserted : state.down.remove(name) != nil
            return state.dark.remove(name) != nil
        }
        if down || wasDark { cut(name) }
    }

    /// The path to and from `name` goes dark without either end hearing of it, as when an interface goes down
    /// under queued data and TCP never counts its timeout: every link of `name` stays open and carries nothing
    /// more either way (writes are taken until the far end's window is full, then the end stops being writable),
    /// and dials to and from `name` time out. ``setDown(_:_:)`` with false brings it back: the dark links are
    /// reset then, as the resets of the far ends would arrive.
    public func darken(_ name: String) {
        let dark: [Pair] = state.withLock { state in
            state.down.insert(name)
            state.dark.insert(name)
            return state.pairs.values.filter { $0.listener == name || $0.dialer == name }
        }
        for pair in dark {
            for end in [pair.client, pair.server] { end.eventLoop.execute { end.goDark() } }
        }
    }

    /// Resets, at `listener`'s end only, the links `dialer` dialed to it: `listener` hears an error, `dialer`
    /// hears nothing (what a timeout counted at one end of a dark path looks like).
    public func breakListenerEnds(listener: String, dialer: String) {
        let ends: [InProcessChannel] = state.withLock { state in
            state.pairs.values.filter { $0.listener == listener && $0.dialer == dialer }.map(\.server)
        }
        for end in ends {
            end.eventLoop.execute { end.reset(IOError(errnoCode: ETIMEDOUT, reason: "in-process link timed out")) }
        }
    }

    /// Links to or from `name` that stand.
    public func linkCount(_ name: String) -> Int {
        state.withLock { state in state.pairs.values.filter { $0.listener == name || $0.dialer == name }.count }
    }

    fileprivate func stopListening(name: String, id: UInt64) {
        state.withLock { state in
            if state.listeners[name]?.id == id { state.listeners[name] = nil }
        }
    }

    private func forget(_ id: UInt64) {
        _ = state.withLock { state in state.pairs.removeValue(forKey: id) }
    }
}

/// In-process links as a ``LinkKind``: `inproc://NAME` addresses on one ``InProcessNetwork``. They carry frames
/// only: no file regions, no reads into pools (a body crosses by reference anyway).
public struct InProcessLinks: LinkKind {
    public let network: InProcessNetwork
    public var capabilities: LinkCapabilities { [] }

    public init(network: InProcessNetwork = .shared) { self.network = network }

    public func connect(
        to address: NodeAddress, from source: String?, timeout: TimeAmount, eventLoop: any EventLoop,
        initialize: @escaping @Sendable (Channel) -> EventLoopFuture<Void>
    ) -> EventLoopFuture<Channel> {
        guard case .inProcess(let name) = address else {
            return eventLoop.makeFailedFuture(FreightError(.invalidArgument, "\(address) is not an inproc:// address"))
        }
        return network.connect(
            to: name, from: source, timeout: timeout, eventLoop: eventLoop, initialize: initialize)
    }

    public func listen(
        on address: NodeAddress, eventLoop: any EventLoop,
        initialize: @escaping @Sendable (Channel) -> EventLoopFuture<Void>
    ) -> EventLoopFuture<any LinkListener> {
        guard case .inProcess(let name) = address else {
            return eventLoop.makeFailedFuture(FreightError(.invalidArgument, "\(address) is not an inproc:// address"))
        }
        return network.listen(name: name, eventLoop: eventLoop, initialize: initialize)
    }
}

final class InProcessListener: LinkListener {
    let network: InProcessNetwork
    let name: String
    let id: UInt64
    let eventLoop: any EventLoop
    var address: NodeAddress { .inProcess(name: name) }

    init(network: InProcessNetwork, name: String, id: UInt64, eventLoop: any EventLoop) {
        self.network = network
        self.name = name
        self.id = id
        self.eventLoop = eventLoop
    }

    func close() -> EventLoopFuture<Void> {
        network.stopListening(name: name, id: id)
        return eventLoop.makeSucceededVoidFuture()
    }
}

/// One end of an in-process link: a NIO `Channel` whose flushed writes are read, in order, by the other end's
/// pipeline on that end's event loop. Loop-confined but for `isActive` and `isWritable`.
final class InProcessChannel: Channel, ChannelCore, @unchecked Sendable {
    /// Bytes written and not yet read by the far end at which the writer stops being writable, and below which it
    /// is writable again (what a socket's buffers hold, roughly).
    static let highWaterBytes = 4 << 20
    static let lowWaterBytes = 1 << 20
    /// Bytes one read hands to the pipeline at most before other work of the loop gets a turn.
    static let bytesPerReadMax = 1 << 20

    enum Arrival {
        case bytes(ByteBuffer, EventLoopPromise<Void>?)
        case end
    }

    let eventLoop: any EventLoop
    let allocator = ByteBufferAllocator()
    private let closePromise: EventLoopPromise<Void>
    private var _pipeline: ChannelPipeline!
    private let active = Atomic<Bool>(false)
    private let writable = Atomic<Bool>(true)

    private var peer: InProcessChannel?
    private var onClose: (@Sendable () -> Void)?
    /// Told how many bytes each read carried (the network's tripwires).
    private var carried: (@Sendable (Int) -> Void)?
    private var open = true
    /// The path went dark (``InProcessNetwork/darken(_:)``): what arrives is lost, and nothing is told.
    private var dark = false
    private var pending: [(ByteBuffer, EventLoopPromise<Void>?)] = []
    /// Bytes flushed to the far end that it has not read yet.
    private var inFlightBytes = 0
    private var inbound = CircularBuffer<Arrival>()
    private var autoRead = true
    private var readRequested = false
    private var deliveryScheduled = false

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        self.closePromise = eventLoop.makePromise()
        self._pipeline = ChannelPipeline(channel: self)
    }

    /// Joins two new ends; before either is shared with its loop.
    func join(
        _ other: InProcessChannel, onClose: @escaping @Sendable () -> Void,
        carried: @escaping @Sendable (Int) -> Void
    ) {
        peer = other
        other.peer = self
        self.onClose = onClose
        other.onClose = onClose
        self.carried = carried
        other.carried = carried
    }

    var pipeline: ChannelPipeline { _pipeline }
    var _channelCore: any ChannelCore { self }
    var localAddress: SocketAddress? { nil }
    var remoteAddress: SocketAddress? { nil }
    var parent: (any Channel)? { nil }
    var closeFuture: EventLoopFuture<Void> { closePromise.futureResult }
    var isWritable: Bool { writable.load(ordering: .relaxed) }
    var isActive: Bool { active.load(ordering: .relaxed) }
    var syncOptions: (any NIOSynchronousChannelOptions)? { SyncOptions(channel: self) }

    struct SyncOptions: NIOSynchronousChannelOptions {
        let channel: InProcessChannel
        func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) throws {
            channel.setOption0(option, value: value)
        }
        func getOption<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
            try channel.getOption0(option)
        }
    }

    func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) -> EventLoopFuture<Void> {
        if eventLoop.inEventLoop {
            setOption0(option, value: value)
            return eventLoop.makeSucceededVoidFuture()
        }
        let box = UnsafeTransfer((option, value))
        return eventLoop.submit { self.setOption0(box.value.0, value: box.value.1) }
    }

    func getOption<Option: ChannelOption>(_ option: Option) -> EventLoopFuture<Option.Value> {
        if eventLoop.inEventLoop {
            return eventLoop.makeCompletedFuture { try getOption0(option) }
        }
        let box = UnsafeTransfer(option)
        return eventLoop.submit { UnsafeTransfer(try self.getOption0(box.value)) }.map { $0.value }
    }

    /// Only `autoRead` means something here; socket options are accepted and have no effect.
    private func setOption0<Option: ChannelOption>(_ option: Option, value: Option.Value) {
        eventLoop.preconditionInEventLoop()
        if option is ChannelOptions.Types.AutoReadOption, let reading = value as? Bool {
            autoRead = reading
            if reading { scheduleDelivery() }
        }
    }

    private func getOption0<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
        eventLoop.preconditionInEventLoop()
        if option is ChannelOptions.Types.AutoReadOption, let value = autoRead as? Option.Value { return value }
        throw ChannelError.operationUnsupported
    }

    // MARK: Life

    func register() {
        eventLoop.preconditionInEventLoop()
        pipeline.syncOperations.fireChannelRegistered()
    }

    func activate() {
        eventLoop.preconditionInEventLoop()
        guard open else { return }
        active.store(true, ordering: .relaxed)
        pipeline.syncOperations.fireChannelActive()
        scheduleDelivery()
    }

    /// The link broke under this end: what was in flight is lost, the pipeline hears `error`, then the end closes.
    func reset(_ error: any Error) {
        eventLoop.preconditionInEventLoop()
        guard open else { return }
        peer = nil
        pipeline.syncOperations.fireErrorCaught(error)
        if open { finish(notifyingPeer: false) }
    }

    private func finish(notifyingPeer: Bool) {
        open = false
        active.store(false, ordering: .relaxed)
        for (_, promise) in pending { promise?.fail(ChannelError.ioOnClosedChannel) }
        pending = []
        while let arrival = inbound.popFirst() {
            if case .bytes(_, let promise) = arrival { promise?.fail(ChannelError.ioOnClosedChannel) }
        }
        if notifyingPeer, let peer {
            // After every byte flushed so far: the far end reads them, then sees the link end.
            peer.eventLoop.execute { peer.arrive([.end]) }
        }
        peer = nil
        pipeline.syncOperations.fireChannelInactive()
        pipeline.syncOperations.fireChannelUnregistered()
        onClose?()
        onClose = nil
        carried = nil
        eventLoop.execute { [self] in
            removeHandlers(pipeline: pipeline)
            closePromise.succeed()
        }
    }

    // MARK: Bytes

    /// From now on, what arrives is lost unread (the far end's writes stay in flight for ever).
    func goDark() {
        eventLoop.preconditionInEventLoop()
        dark = true
        while let arrival = inbound.popFirst() {
            if case .bytes(_, let promise) = arrival { promise?.succeed() }
        }
    }

    private func arrive(_ arrivals: [Arrival]) {
        eventLoop.preconditionInEventLoop()
        if dark {
            for case .bytes(_, let promise) in arrivals { promise?.succeed() }
            return
        }
        guard open else {
            for case .bytes(_, let promise) in arrivals { promise?.fail(ChannelError.ioOnClosedChannel) }
            return
        }
        inbound.append(contentsOf: arrivals)
        scheduleDelivery()
    }

    private func scheduleDelivery() {
        guard !deliveryScheduled, open, isActive, autoRead || readRequested, !inbound.isEmpty else { return }
        deliveryScheduled = true
        eventLoop.execute { [self] in
            deliveryScheduled = false
            deliver()
        }
    }

    /// One read: up to ``bytesPerReadMax`` bytes into the pipeline, as a socket's read would.
    private func deliver() {
        guard open, autoRead || readRequested else { return }
        readRequested = false
        var consumed = 0
        while open, consumed < Self.bytesPerReadMax, let arrival = inbound.popFirst() {
            switch arrival {
            case .bytes(let buffer, let promise):
                consumed += buffer.readableBytes
                pipeline.syncOperations.fireChannelRead(NIOAny(buffer))
                promise?.succeed()
            case .end:
                if consumed > 0 { pipeline.syncOperations.fireChannelReadComplete() }
                finish(notifyingPeer: false)
                return
            }
            if !autoRead { break }
        }
        guard open else { return }
        if consumed > 0 {
            pipeline.syncOperations.fireChannelReadComplete()
            if let peer { peer.eventLoop.execute { peer.wasRead(consumed) } }
            carried?(consumed)
        }
        scheduleDelivery()
    }

    /// The far end read `count` of the bytes this end wrote.
    private func wasRead(_ count: Int) {
        inFlightBytes -= count
        if !isWritable, inFlightBytes <= Self.lowWaterBytes, open {
            writable.store(true, ordering: .relaxed)
            pipeline.syncOperations.fireChannelWritabilityChanged()
        }
    }

    // MARK: ChannelCore

    func localAddress0() throws -> SocketAddress { throw ChannelError.operationUnsupported }
    func remoteAddress0() throws -> SocketAddress { throw ChannelError.operationUnsupported }
    func register0(promise: EventLoopPromise<Void>?) { promise?.succeed() }
    func registerAlreadyConfigured0(promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }
    func bind0(to: SocketAddress, promise: EventLoopPromise<Void>?) { promise?.fail(ChannelError.operationUnsupported) }
    func connect0(to: SocketAddress, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    func write0(_ data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard open else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        switch tryUnwrapData(data, as: IOData.self) {
        case .byteBuffer(let buffer):
            pending.append((buffer, promise))
        case .fileRegion, nil:
            // An in-process link declines `sendsFileRegions`: a node never hands it one.
            promise?.fail(ChannelError.operationUnsupported)
        }
    }

    func flush0() {
        guard open, let peer, !pending.isEmpty else { return }
        let batch = pending.map { Arrival.bytes($0.0, $0.1) }
        inFlightBytes += pending.reduce(0) { $0 + $1.0.readableBytes }
        pending.removeAll(keepingCapacity: true)
        peer.eventLoop.execute { peer.arrive(batch) }
        if isWritable, inFlightBytes > Self.highWaterBytes {
            writable.store(false, ordering: .relaxed)
            pipeline.syncOperations.fireChannelWritabilityChanged()
        }
    }

    func read0() {
        readRequested = true
        scheduleDelivery()
    }

    func close0(error: any Error, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard open else {
            promise?.fail(ChannelError.alreadyClosed)
            return
        }
        guard mode == .all else {
            promise?.fail(ChannelError.operationUnsupported)
            return
        }
        finish(notifyingPeer: true)
        promise?.succeed()
    }

    func triggerUserOutboundEvent0(_ event: Any, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    func channelRead0(_ data: NIOAny) {}
    func errorCaught0(error: any Error) {}
}

/// A value handed to another thread whose type is not `Sendable` (channel options): it is only ever used there.
struct UnsafeTransfer<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
