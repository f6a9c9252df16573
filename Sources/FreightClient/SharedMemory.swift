import FreightCUDA
import FreightCore
import FreightTransport
import FreightWire
import NIOCore
import Synchronization

/// Whether a client moves bodies through shared memory with its node (docs/shared-memory.md). Only a client
/// attached over the node's Unix socket can.
public enum SharedMemory: Sendable, Hashable {
    /// Bodies go through the socket.
    case off
    /// Shared memory when the node accepts the pools; otherwise the reason is logged and the socket is used.
    case automatic(
        sendBytes: Int = Limits.sharedPoolHalfBytesDefault, receiveBytes: Int = Limits.sharedPoolHalfBytesDefault)
    /// Shared memory or no connection: `connect` fails with the node's reason (a budget exhausted, say).
    case required(
        sendBytes: Int = Limits.sharedPoolHalfBytesDefault, receiveBytes: Int = Limits.sharedPoolHalfBytesDefault)

    public static var automatic: SharedMemory { .automatic() }

    var sizes: (send: Int, receive: Int)? {
        switch self {
        case .off: nil
        case .automatic(let send, let receive), .required(let send, let receive): (send, receive)
        }
    }
}

/// Whether the session that lent a region is still open; a region is readable only while it is. Buffers and
/// bytes dropped after the session closed have nothing to give back (and the client's loop may be gone).
final class SharedSessionState: Sendable {
    let closed = Atomic<Bool>(false)
    private let lock = Mutex(false)
    /// The receive pool's place in this process, and the GPUs it is registered with (``pinReceivePool(_:for:)``).
    private let receivePool: (base: UInt, size: Int)
    private let pinned = Mutex<[String: CUDAGPU]>([:])

    init(receiveBase: UnsafeMutableRawPointer, size: Int) {
        receivePool = (UInt(bitPattern: receiveBase), size)
    }

    /// Registers the receive pool with `gpu`'s driver (`cuMemHostRegister`), once, when `mapping` is that pool: the
    /// copy engine then reads staged chunks straight from it (``IncomingMessage/copy(toDevice:on:)``). A pool that
    /// cannot be registered is copied from all the same, more slowly.
    func pinReceivePool(_ mapping: SharedMapping, for gpu: CUDAGPU) {
        guard UInt(bitPattern: mapping.base) == receivePool.base, !closed.load(ordering: .acquiring) else { return }
        pinned.withLock { pinned in
            // Registered portable: once is enough for every GPU.
            guard pinned.isEmpty else { return }
            if (try? gpu.pin(mapping.base, count: receivePool.size)) != nil { pinned[gpu.uuid] = gpu }
        }
    }

    /// Runs `body` (which hands work to the client's loop) unless the session has ended.
    func ifOpen(_ body: () -> Void) {
        lock.withLock { ended in if !ended { body() } }
    }

    /// Marks the session ended; after this returns no `ifOpen` body runs.
    func end() {
        closed.store(true, ordering: .releasing)
        lock.withLock { $0 = true }
        // Unregistered before the pool is unmapped: a registration outliving its mapping would pin pages that are
        // no longer the pool's.
        let base = UnsafeMutableRawPointer(bitPattern: receivePool.base)
        for gpu in pinned.withLock({ pinned in
            defer { pinned = [:] }; return Array(pinned.values)
        }) {
            if let base { try? gpu.unpin(base) }
        }
    }
}

/// A buffer in this app's shared-memory send pool (``FreightClient/allocate(_:)``). Write the body into it and
/// send it with ``OutgoingBody/shared(_:)`` (or ``OutgoingBody/repeatingShared(block:length:)``): an app on the
/// same node reads the same bytes in place, and a node sends them on to its peers straight from the pool.
///
/// The region goes back to the pool when the buffer is dropped *and* every message that lent it has released it.
/// Do not write into a buffer while a message that carries it is in flight.
public final class SharedBuffer: @unchecked Sendable {  // the memory is the caller's to synchronise, as with any buffer
    let mapping: SharedMapping
    /// Where the region starts in the send pool.
    let offset: Int
    public let count: Int
    private let dropped: @Sendable (Int) -> Void

    init(mapping: SharedMapping, offset: Int, count: Int, dropped: @escaping @Sendable (Int) -> Void) {
        self.mapping = mapping
        self.offset = offset
        self.count = count
        self.dropped = dropped
    }

    deinit { dropped(offset) }

    public func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeMutableRawBufferPointer(start: mapping.base + offset, count: count))
    }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: mapping.base + offset, count: count))
    }
}

/// Bytes of a received message that lie in shared memory, read in place. The region is released back to its
/// owner when the last reference goes. A region of a session that has closed is revoked: reading it throws.
public final class SharedBytes: Sendable {
    let mapping: SharedMapping
    let region: SharedRegion
    let session: SharedSessionState
    private let released: @Sendable (SharedRegion) -> Void

    init(
        mapping: SharedMapping, region: SharedRegion, session: SharedSessionState,
        released: @escaping @Sendable (SharedRegion) -> Void
    ) {
        self.mapping = mapping
        self.region = region
        self.session = session
        self.released = released
    }

    deinit { released(region) }

    public var count: Int { Int(region.length) }

    var unsafeBytes: UnsafeRawBufferPointer { mapping.bytes(offset: region.offset, length: region.length)! }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        guard !session.closed.load(ordering: .acquiring) else {
            throw FreightError(.connectionFailed, "the session that lent these shared bytes has closed")
        }
        return try body(unsafeBytes)
    }
}
