import CFreightSystem
import FreightCUDA
import FreightCore
import FreightTransport
import FreightWire
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// A message body in GPU memory (docs/gpu.md): `count` bytes at `pointer` on `gpu`, sent with
/// ``OutgoingBody/device(_:)``. To an app of the same node that opens CUDA IPC handles on that GPU the body is
/// handed over in place: the allocation it lies in is lent to the node as a pool (its IPC handle, never its bytes),
/// and the receiver reads the same device memory. Do not write into it while a message that carries it is in flight.
public struct DeviceBuffer: Sendable {
    public let gpu: CUDAGPU
    public let pointer: UInt64
    public let count: Int

    public init(gpu: CUDAGPU, pointer: UInt64, count: Int) throws(FreightError) {
        guard count > 0, pointer != 0, pointer.addingReportingOverflow(UInt64(count)).overflow == false else {
            throw FreightError(.invalidArgument, "a device body needs a pointer and 1 byte or more")
        }
        self.gpu = gpu
        self.pointer = pointer
        self.count = count
    }
}

/// Where a received chunk lies in GPU memory (``BodyChunk/device``): valid until the chunk is dropped.
public struct DeviceRegion: Sendable, Hashable {
    /// The GPU, as `nvidia-smi -L` names it (`GPU-…`).
    public let gpu: String
    public let pointer: UInt64
    public let count: Int
}

/// A received chunk's device memory, lent to this app until the last reference goes (then released to its node,
/// as a shared region is).
final class DeviceBytes: Sendable {
    let region: DeviceRegion
    private let lent: SharedRegion
    private let released: @Sendable (SharedRegion) -> Void

    init(region: DeviceRegion, lent: SharedRegion, released: @escaping @Sendable (SharedRegion) -> Void) {
        self.region = region
        self.lent = lent
        self.released = released
    }

    deinit { released(lent) }

    func notInHostMemory(at offset: UInt64) -> FreightError {
        FreightError(
            .invalidArgument,
            "the chunk at offset \(offset) lies in the memory of \(region.gpu), not the host's: use BodyChunk.device")
    }
}

/// Another app's device allocation, opened in this process from its IPC handle.
struct OpenedDevice: Sendable {
    let gpu: CUDAGPU
    let pointer: UInt64
    let size: Int

    /// Opens `handle` on the GPU named by `gpu` (16 bytes of UUID), one of `gpus`. Blocking (it maps memory).
    static func open(gpu: [UInt8], handle: [UInt8], size: Int, among gpus: [CUDAGPU]) throws(FreightError)
        -> OpenedDevice
    {
        let name = GPUName.text(gpu)
        guard let found = gpus.first(where: { $0.uuid == name }) else {
            throw FreightError(.invalidArgument, "this app does not open CUDA IPC handles on \(name)")
        }
        let pointer = try found.open(try CUDAIPCHandle(checking: handle))
        return OpenedDevice(gpu: found, pointer: pointer, size: size)
    }
}

/// A device allocation this app lent its node: kept lent (a descriptor link of its own) for later messages from
/// the same allocation, since a receiver opens each handle once and opening costs far more than a message.
struct DeviceLendEntry {
    let gpu: CUDAGPU
    let pool: UInt32
    let link: Int32
    let base: UInt64
    let size: Int
    let handle: CUDAIPCHandle
    /// Regions named in SHARED frames and not yet released by the node.
    var loansOut = 0
    var lastUsed = NIODeadline.now()
}

extension ClientShared {
    /// Lends a device allocation (`size` bytes on GPU `gpu`, opened by `handle`) to the node over a descriptor link
    /// of its own, which stays open while it is lent. Blocking: call on a thread of its own.
    static func lendDevice(
        socketPath: String, token: UInt64, gpu: [UInt8], handle: CUDAIPCHandle, size: Int
    ) throws(FreightError) -> (pool: UInt32, link: Int32) {
        let link = DescriptorLink.connect(socketPath: socketPath)
        guard link >= 0 else {
            throw FreightError(.connectionFailed, "cannot open a descriptor link to lend device memory")
        }
        freight_set_receive_timeout(link, 5000)
        let attach = DescriptorLink.DeviceAttach(token: token, bytes: UInt64(size), gpu: gpu, handle: handle.bytes)
        guard DescriptorLink.send(DescriptorLink.encode(attach), on: link, wait: true),
            let answer = DescriptorLink.receive(on: link)
        else {
            Glibc.close(link)
            throw FreightError(.connectionFailed, "the node did not answer the device attach")
        }
        for received in answer.fds { Glibc.close(received) }
        switch try? DescriptorLink.decodeMessage(answer.bytes) {
        case .accepted(let pool, _)?:
            return (pool, link)
        case .refused(let reason)?:
            Glibc.close(link)
            throw FreightError(.resourceExhausted, reason)
        default:
            Glibc.close(link)
            throw FreightError(.protocolViolation, "unexpected answer to a device attach")
        }
    }
}

extension ClientCore {
    // MARK: Sending from device memory

    /// Lends the allocation `buffer` lies in to the node (or finds it lent already), then sends the message's
    /// regions of it. The driver's calls and the link are blocking: they run on a thread.
    func lendDevice(_ transfer: Outgoing, _ buffer: DeviceBuffer, shared: ClientShared) {
        transfer.lent = .attaching
        let loop = eventLoop
        NIOThreadPool.singleton.runIfActive(eventLoop: loop) { () throws -> (UInt64, Int, CUDAIPCHandle) in
            let (base, size) = try buffer.gpu.allocation(containing: buffer.pointer)
            return (base, size, try buffer.gpu.ipcHandle(of: base))
        }.flatMap { [self] (base, size, handle) -> EventLoopFuture<DeviceLendEntry> in
            guard buffer.pointer + UInt64(buffer.count) <= base + UInt64(size) else {
                return loop.makeFailedFuture(
                    FreightError(
                        .invalidArgument,
                        "the device body's \(buffer.count) bytes run past the end of its allocation (\(size) bytes)"))
            }
            if let known = shared.deviceLends.values.first(where: {
                $0.base == base && $0.size == size && $0.handle == handle
            }) {
                return loop.makeSucceededFuture(known)
            }
            do {
                try makeRoomForDeviceLend(shared)
            } catch {
                return loop.makeFailedFuture(error)
            }
            let (path, token) = (shared.socketPath, shared.token)
            let gpu = GPUName.bytes(buffer.gpu.uuid) ?? []
            return NIOThreadPool.singleton.runIfActive(eventLoop: loop) {
                try ClientShared.lendDevice(socketPath: path, token: token, gpu: gpu, handle: handle, size: size)
            }.map { (pool, link) in
                let entry = DeviceLendEntry(
                    gpu: buffer.gpu, pool: pool, link: link, base: base, size: size, handle: handle)
                shared.deviceLends[pool] = entry
                return entry
            }
        }.whenComplete { [self] result in
            guard case .attaching = transfer.lent, outgoing[transfer.id] === transfer else { return }
            switch result {
            case .success(let entry):
                transfer.lent = .device(pool: entry.pool, start: buffer.pointer - entry.base)
                pump(transfer)
            case .failure(let error):
                let failure =
                    error as? FreightError ?? FreightError(.io, "cannot lend the device body: \(error)")
                outgoing[transfer.id] = nil
                connection?.send(.abort(transfer.id, failure))
                transfer.fail(failure)
            }
        }
    }

    /// Keeps at most ``Limits/deviceLendsPerAppMax`` allocations lent: the one used longest ago with no region
    /// out and no message sending from it goes back to the app (its link closed: the node withdraws it from the
    /// apps that opened it).
    private func makeRoomForDeviceLend(_ shared: ClientShared) throws(FreightError) {
        guard shared.deviceLends.count >= Limits.deviceLendsPerAppMax else { return }
        // In use: a region out, or a message that sends from it.
        let sending = Set(
            outgoing.values.compactMap { transfer -> UInt32? in
                if case .device(let pool, _) = transfer.lent { pool } else { nil }
            })
        guard
            let idle = shared.deviceLends.values.filter({ $0.loansOut == 0 && !sending.contains($0.pool) })
                .min(by: { $0.lastUsed < $1.lastUsed })
        else {
            throw FreightError(
                .resourceExhausted,
                "this app has \(Limits.deviceLendsPerAppMax) device allocations lent, each with regions out; send again when a message from one has ended"
            )
        }
        shared.deviceLends[idle.pool] = nil
        Glibc.close(idle.link)
    }

    /// Names the message's regions of its lent allocation as the credit allows: SHARED frames without checksums
    /// (the bytes stay in the GPU's memory; nothing copies them).
    func pumpDevice(_ transfer: Outgoing, pool: UInt32, start: UInt64) {
        guard let shared, let connection else { return }
        guard shared.deviceLends[pool] != nil else {
            let error = FreightError(
                .internalError, "the device allocation of message \(transfer.id) is no longer lent")
            outgoing[transfer.id] = nil
            connection.send(.abort(transfer.id, error))
            return transfer.fail(error)
        }
        while let span = transfer.window.nextSpan() {
            shared.deviceLends[pool]?.loansOut += 1
            shared.deviceLends[pool]?.lastUsed = .now()
            let region = SharedRegion(pool: pool, offset: start + span.offset, length: span.count)
            connection.send(
                .shared(
                    SharedChunk(
                        messageID: transfer.id, offset: span.offset, crc32c: nil, isLast: span.isLast, region: region)))
        }
    }

    /// The node gave back a region of a lent allocation; false when `region` is not one.
    func deviceRegionReleased(_ region: SharedRegion) -> Bool {
        guard let shared, shared.deviceLends[region.pool] != nil else { return false }
        shared.deviceLends[region.pool]?.loansOut -= 1
        return true
    }

    // MARK: Staging through host memory

    /// Copies `raw.count` bytes of a device body from `offset` into `raw` (a region of the send pool, or a chunk
    /// buffer), for a message its node stages (docs/gpu.md): device → host on a stream of the client's own for that
    /// GPU, into the send pool registered with the driver once (`cuMemHostRegister`), so the copy engine writes it
    /// directly. On the client's loop; the chunk's CRC32C is computed from the host copy after.
    func stage(_ buffer: DeviceBuffer, at offset: UInt64, into raw: UnsafeMutableRawBufferPointer)
        throws(FreightError)
    {
        guard let shared else { throw FreightError(.invalidArgument, "staging a device body needs shared memory") }
        let staging = try staging(for: buffer.gpu, shared)
        try buffer.gpu.copy(
            toHost: raw.baseAddress!, from: buffer.pointer + offset, count: raw.count, on: staging.stream)
        try buffer.gpu.synchronize(staging.stream)
    }

    /// The staging state for `gpu`: a stream of its own, the send pool registered with its driver (once).
    func staging(for gpu: CUDAGPU, _ shared: ClientShared) throws(FreightError) -> DeviceStaging {
        if let known = shared.staging[gpu.uuid] { return known }
        let staging = try DeviceStaging(gpu: gpu, pool: shared.send)
        shared.staging[gpu.uuid] = staging
        return staging
    }

    /// Queues the device → host copy of the chunk `next` of a staged body into the send pool's region at `start`,
    /// with an event that says when it is done (docs/gpu.md, "Everywhere else"): the region is held by the message
    /// until then. False when the driver refused (the message failed, with the driver's reason).
    func queueStaged(
        _ transfer: Outgoing, _ buffer: DeviceBuffer, start: Int,
        next: (offset: UInt64, count: UInt64, isLast: Bool)
    ) -> Bool {
        guard let shared else { return false }
        shared.references[start] = 1
        shared.owners[start] = transfer.id
        transfer.regionsHeld += 1
        do throws(FreightError) {
            let staging = try staging(for: buffer.gpu, shared)
            try buffer.gpu.copy(
                toHost: shared.send.base + start, from: buffer.pointer + next.offset, count: Int(next.count),
                on: staging.stream)
            let event = try buffer.gpu.makeEvent()
            transfer.stagedCopies.append(
                StagedCopy(start: start, offset: next.offset, count: next.count, isLast: next.isLast, event: event))
            do {
                try buffer.gpu.record(event, on: staging.stream)
            } catch {
                transfer.stagedCopies.removeLast()
                try? buffer.gpu.destroy(event)
                throw error
            }
            return true
        } catch {
            dropReference(start)
            outgoing[transfer.id] = nil
            connection?.send(.abort(transfer.id, error))
            transfer.fail(error)
            return false
        }
    }

    /// Has a thread wait for the first queued copy of `transfer` (one waiter at a time), then lends every copy that
    /// is done and pumps the message again; a message that ended meanwhile has its regions freed instead.
    func watchStaged(_ transfer: Outgoing, _ gpu: CUDAGPU) {
        guard !transfer.watchingStaged, let first = transfer.stagedCopies.first else { return }
        transfer.watchingStaged = true
        NIOThreadPool.singleton.runIfActive(eventLoop: eventLoop) {
            try gpu.synchronize(first.event)
        }.whenComplete { [self] result in
            transfer.watchingStaged = false
            let failure: FreightError? =
                switch result {
                case .success: nil
                case .failure(let error): error as? FreightError ?? FreightError(.internalError, "\(error)")
                }
            settleStaged(transfer, gpu, failure: failure)
            if outgoing[transfer.id] === transfer {
                pump(transfer)
                watchStaged(transfer, gpu)
            }
        }
    }

    /// Lends, in order, the staged chunks whose copies are done, each with the CRC32C of its host copy; after a
    /// driver failure, or once the message ended, their regions go back unlent.
    private func settleStaged(_ transfer: Outgoing, _ gpu: CUDAGPU, failure: FreightError?) {
        if let failure, outgoing[transfer.id] === transfer {
            outgoing[transfer.id] = nil
            connection?.send(.abort(transfer.id, failure))
            transfer.fail(failure)
        }
        let live = outgoing[transfer.id] === transfer
        while let copy = transfer.stagedCopies.first {
            // A message that ended waits for nothing: its copies finish before its regions are written again,
            // since every copy of the client's stream for this GPU runs in order.
            if live, (try? gpu.isComplete(copy.event)) != true { break }
            if !live { try? gpu.synchronize(copy.event) }
            transfer.stagedCopies.removeFirst()
            try? gpu.destroy(copy.event)
            if live, let shared {
                let raw = UnsafeRawBufferPointer(start: shared.send.base + copy.start, count: Int(copy.count))
                lend(
                    transfer, start: copy.start, offset: copy.start, length: copy.count, bodyOffset: copy.offset,
                    crc: CRC32C.checksum(raw), isLast: copy.isLast)
            }
            dropReference(copy.start)
        }
    }

    // MARK: Receiving into device memory

    /// The node pushed another app's device allocation, opened on the reader thread (or not, with the reason).
    func devicePoolArrived(_ id: UInt32, _ opened: Result<OpenedDevice, FreightError>) {
        guard let shared else {
            if case .success(let device) = opened { try? device.gpu.close(opened: device.pointer) }
            return
        }
        switch opened {
        case .success(let device): shared.devices[id] = device
        case .failure(let error): shared.unopened[id] = error.message
        }
        for chunk in shared.parked.removeValue(forKey: id) ?? [] { sharedChunkReceived(chunk) }
    }

    /// A device allocation was withdrawn (its app took it back, and no region of it is out): its handle closes.
    func deviceWithdrawn(_ id: UInt32) {
        guard let shared else { return }
        shared.unopened[id] = nil
        guard let device = shared.devices.removeValue(forKey: id) else { return }
        try? device.gpu.close(opened: device.pointer)
    }

    /// A region of a device allocation lent to this app: a chunk of a message, in GPU memory.
    func deviceChunkReceived(_ chunk: SharedChunk, shared: ClientShared) {
        let region = chunk.region
        // Another app's allocation, opened here; or this app's own, sent to itself: its own pointer.
        let opened = shared.devices[region.pool]
        let own = shared.deviceLends[region.pool].map { OpenedDevice(gpu: $0.gpu, pointer: $0.base, size: $0.size) }
        guard let device = opened ?? own else {
            connection?.send(.release([region]))
            return fail(
                chunk.messageID,
                FreightError(
                    .invalidArgument,
                    "cannot open the message's device memory: \(shared.unopened[region.pool] ?? "unknown pool")"))
        }
        let (end, overflow) = region.offset.addingReportingOverflow(region.length)
        guard !overflow, end <= UInt64(device.size), region.length > 0 else {
            connection?.send(.release([region]))
            return fail(chunk.messageID, FreightError(.protocolViolation, "device region \(region) is out of bounds"))
        }
        let loop = eventLoop
        let state = shared.state
        let bytes = DeviceBytes(
            region: DeviceRegion(
                gpu: device.gpu.uuid, pointer: device.pointer + region.offset, count: Int(region.length)),
            lent: region
        ) { [self] region in
            state.ifOpen { loop.execute { self.releaseLent(region) } }
        }
        guard var message = incoming[chunk.messageID] else { return }
        do throws(FreightError) {
            guard try message.window.accept(offset: chunk.offset, count: region.length) else { return }
        } catch {
            return fail(chunk.messageID, error)
        }
        message.receivedBytes += region.length
        incoming[chunk.messageID] = message
        message.continuation.yield(BodyChunk(offset: chunk.offset, device: bytes))
        if message.receivedBytes == message.window.length {
            message.continuation.finish()
        }
    }
}

/// A staged chunk whose device → host copy into the send pool's region at `start` is queued, and the event that
/// completes with it.
struct StagedCopy {
    let start: Int
    let offset: UInt64
    let count: UInt64
    let isLast: Bool
    let event: CUDAEvent
}

/// A GPU this client stages device bodies from: a stream of its own, and whether the send pool is registered with
/// the driver (pinned: the copy engine writes it directly; a pool that cannot be registered is copied into all the
/// same, more slowly).
struct DeviceStaging {
    let gpu: CUDAGPU
    let stream: CUDAStream
    let pinned: Bool

    init(gpu: CUDAGPU, pool: SharedMapping) throws(FreightError) {
        self.gpu = gpu
        self.stream = try gpu.makeStream()
        self.pinned = (try? gpu.pin(pool.base, count: pool.size)) != nil
    }

    func end(_ pool: SharedMapping) {
        try? gpu.destroy(stream)
        if pinned { try? gpu.unpin(pool.base) }
    }
}

/// How a body reached device memory (``IncomingMessage/copy(toDevice:on:)``): bytes handed over from another
/// app's allocation on the same node, and bytes staged through host memory (from another node, or from an app
/// whose node staged them).
public struct DeviceArrival: Sendable, Equatable {
    public var handedOverBytes: UInt64
    public var stagedBytes: UInt64

    public init(handedOverBytes: UInt64 = 0, stagedBytes: UInt64 = 0) {
        self.handedOverBytes = handedOverBytes
        self.stagedBytes = stagedBytes
    }
}

extension IncomingMessage {
    /// Bytes of copies queued before the copies of the batch before them are waited for: two batches in flight,
    /// so that the copy engine works while the next chunks arrive, and at most two batches of regions held.
    static let deviceCopyBatchBytes = 8 << 20

    /// Reads the whole body into device memory at `destination` on `gpu` (at least ``length`` bytes there),
    /// chunk by chunk as they arrive (docs/gpu.md): a staged chunk (host memory: the receive pool, registered with
    /// the driver once) is copied host → device, a handed-over one (another app's allocation, opened here) device →
    /// device, on a stream of its own. Each chunk's region goes back once its copy completed, so the network, the
    /// copy engine and the node overlap; its CRC32C was checked on the host side before it was delivered. Throws
    /// on the body's failure or a driver error, which fails the message for its sender too.
    public func copy(toDevice destination: UInt64, on gpu: CUDAGPU) async throws -> DeviceArrival {
        var arrival = DeviceArrival()
        do {
            let stream = try gpu.makeStream()
            defer { try? gpu.destroy(stream) }
            // The batch whose copies are queued, and the one before it, whose copies may still run.
            var current: [BodyChunk] = []
            var currentBytes = 0
            var previous: (chunks: [BodyChunk], event: CUDAEvent)?
            defer { if let previous { try? gpu.destroy(previous.event) } }
            var pinChecked = false
            for try await chunk in body {
                guard chunk.offset + UInt64(chunk.count) <= length else {
                    throw FreightError(
                        .protocolViolation, "a chunk at \(chunk.offset) runs past the body's \(length) bytes")
                }
                let target = destination + chunk.offset
                switch chunk.storage {
                case .device(let device):
                    try gpu.copy(deviceTo: target, from: device.region.pointer, count: chunk.count, on: stream)
                    arrival.handedOverBytes += UInt64(chunk.count)
                case .shared(let shared):
                    if !pinChecked {
                        shared.session.pinReceivePool(shared.mapping, for: gpu)
                        pinChecked = true
                    }
                    // The region stays lent (the chunk is kept below) until the copy that reads it completed.
                    try shared.withUnsafeBytes { raw in
                        try gpu.copy(toDevice: target, from: raw.baseAddress!, count: raw.count, on: stream)
                    }
                    arrival.stagedBytes += UInt64(chunk.count)
                case .buffer(let buffer):
                    // A chunk read from the socket: its storage lives while the chunk is kept below.
                    try buffer.withUnsafeReadableBytes { raw in
                        try gpu.copy(toDevice: target, from: raw.baseAddress!, count: raw.count, on: stream)
                    }
                    arrival.stagedBytes += UInt64(chunk.count)
                }
                current.append(chunk)
                currentBytes += chunk.count
                if currentBytes >= Self.deviceCopyBatchBytes {
                    let event = try gpu.makeEvent()
                    try gpu.record(event, on: stream)
                    if let previous {
                        try gpu.synchronize(previous.event)
                        try gpu.destroy(previous.event)
                    }
                    previous = (current, event)
                    current = []
                    currentBytes = 0
                }
            }
            try gpu.synchronize(stream)
            _ = current
        } catch let error as FreightError {
            fail(error)
            throw error
        }
        return arrival
    }
}
