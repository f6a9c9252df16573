import CFreightSystem
import FreightCUDA
import FreightCore
import FreightTransport
import FreightWire
import Logging
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// The client's side of shared memory with its node (docs/shared-memory.md); confined to the client's loop but
/// for the descriptor link's reader thread, which only hands pools over to the loop.
final class ClientShared: @unchecked Sendable {
    let send: SharedMapping
    let receive: SharedMapping
    let sendPoolID: UInt32
    let receivePoolID: UInt32
    var allocator: RegionAllocator
    /// References to each allocated region of the send pool: the app's `SharedBuffer`s and the regions lent.
    var references: [Int: Int] = [:]
    /// Regions lent to the node (one entry per SHARED frame), with the allocation each lies in.
    var loans: [SharedRegion: [Int]] = [:]
    /// Messages waiting for room in the send pool, in the order they found none: a region that comes back goes to
    /// the one that waited longest, so that messages sent at once share the pool (and the link) evenly.
    var waiting: [UInt64] = []
    /// The message each chunk-sized allocation of the send pool was taken for (``ClientCore/pumpShared(_:)``).
    var owners: [Int: UInt64] = [:]
    /// Other apps' send pools, pushed by the node down the descriptor link.
    var foreign: [UInt32: SharedMapping] = [:]
    /// SHARED frames naming a pool whose descriptor has not arrived yet.
    var parked: [UInt32: [SharedChunk]] = [:]
    /// GPUs this app opens CUDA IPC handles on (docs/gpu.md); read by the link's reader thread too (immutable).
    let gpus: [CUDAGPU]
    /// Other apps' device allocations, opened from their IPC handles, by pool id.
    var devices: [UInt32: OpenedDevice] = [:]
    /// Device pools this app could not open, with the reason (their regions are refused).
    var unopened: [UInt32: String] = [:]
    /// Device allocations this app lent its node for sending, by pool id (``ClientCore/lendDevice(_:_:)``).
    var deviceLends: [UInt32: DeviceLendEntry] = [:]
    /// What staging device bodies through the send pool uses, by GPU UUID (``ClientCore/stage(_:at:into:)``).
    var staging: [String: DeviceStaging] = [:]
    let link: Int32
    let reader: NIOThreadPool
    let state: SharedSessionState
    /// Where the descriptor link listens, and the session's token: files are lent over links of their own.
    let socketPath: String
    let token: UInt64

    private init(
        send: SharedMapping, receive: SharedMapping, sendPoolID: UInt32, receivePoolID: UInt32, link: Int32,
        reader: NIOThreadPool, socketPath: String, token: UInt64, gpus: [CUDAGPU]
    ) {
        self.gpus = gpus
        self.socketPath = socketPath
        self.token = token
        self.send = send
        self.receive = receive
        self.sendPoolID = sendPoolID
        self.receivePoolID = receivePoolID
        self.allocator = RegionAllocator(range: 0..<send.size)
        self.state = SharedSessionState(receiveBase: receive.base, size: receive.size)
        self.link = link
        self.reader = reader
    }

    /// Creates the two pools, opens the descriptor link at `socketPath.fd` and lends them to the node, which
    /// accepts them or says why not. Blocking calls run on the link's own thread.
    static func attach(
        socketPath: String, token: UInt64, sendBytes: Int, receiveBytes: Int, gpus: [CUDAGPU] = []
    ) async throws -> ClientShared {
        for bytes in [sendBytes, receiveBytes] {
            guard bytes >= Limits.chunkBytesMin, bytes <= Limits.sharedPoolBytesMax else {
                throw FreightError(
                    .invalidArgument,
                    "a shared pool must hold \(Limits.chunkBytesMin)...\(Limits.sharedPoolBytesMax) bytes")
            }
        }
        let sendBytes = RegionAllocator.rounded(sendBytes)
        let receiveBytes = RegionAllocator.rounded(receiveBytes)
        let reader = NIOThreadPool(numberOfThreads: 1)
        reader.start()
        do {
            let send = try SharedMapping.create(size: sendBytes, name: "freight-send")
            let receive = try SharedMapping.create(size: receiveBytes, name: "freight-receive")
            let path = socketPath + DescriptorLink.suffix
            let (link, reply) = try await reader.runIfActive { () throws -> (Int32, DescriptorLink.Message) in
                let link = DescriptorLink.connect(socketPath: socketPath)
                guard link >= 0 else {
                    throw FreightError(
                        .connectionFailed,
                        "cannot open the descriptor link \(path): \(String(cString: strerror(errno)))")
                }
                freight_set_receive_timeout(link, 5000)
                let attach = DescriptorLink.Attach(token: token, sendBytes: sendBytes, receiveBytes: receiveBytes)
                guard
                    DescriptorLink.send(
                        DescriptorLink.encode(attach), fds: [send.fd, receive.fd], on: link, wait: true),
                    let answer = DescriptorLink.receive(on: link)
                else {
                    Glibc.close(link)
                    throw FreightError(.connectionFailed, "the node did not answer on the descriptor link")
                }
                for fd in answer.fds { Glibc.close(fd) }
                freight_set_receive_timeout(link, 0)
                do {
                    return (link, try DescriptorLink.decodeMessage(answer.bytes))
                } catch {
                    Glibc.close(link)
                    throw error
                }
            }
            guard case .accepted(let sendPoolID, let receivePoolID) = reply else {
                Glibc.close(link)
                if case .refused(let reason) = reply { throw FreightError(.resourceExhausted, reason) }
                throw FreightError(.protocolViolation, "unexpected answer on the descriptor link")
            }
            return ClientShared(
                send: send, receive: receive, sendPoolID: sendPoolID, receivePoolID: receivePoolID, link: link,
                reader: reader, socketPath: socketPath, token: token, gpus: gpus)
        } catch {
            try? await reader.shutdownGracefully()
            throw error
        }
    }

    /// Lends the open file `fd` of `bytes` bytes to the node for sending (its own descriptor link, which stays open
    /// while the file is lent: closing it takes the file back). Blocking: call on a thread of its own. Returns the
    /// file's pool id and the link, or the node's reason for refusing.
    static func lendFile(
        socketPath: String, token: UInt64, fd: Int32, bytes: UInt64
    ) -> Result<(pool: UInt32, link: Int32), FreightError> {
        let link = DescriptorLink.connect(socketPath: socketPath)
        guard link >= 0 else {
            return .failure(FreightError(.connectionFailed, "cannot open a descriptor link to lend a file"))
        }
        freight_set_receive_timeout(link, 5000)
        guard
            DescriptorLink.send(
                DescriptorLink.encode(DescriptorLink.FileAttach(token: token, bytes: bytes)), fds: [fd], on: link,
                wait: true),
            let answer = DescriptorLink.receive(on: link)
        else {
            Glibc.close(link)
            return .failure(FreightError(.connectionFailed, "the node did not answer the file attach"))
        }
        for received in answer.fds { Glibc.close(received) }
        switch try? DescriptorLink.decodeMessage(answer.bytes) {
        case .accepted(let pool, _)?:
            return .success((pool, link))
        case .refused(let reason)?:
            Glibc.close(link)
            return .failure(FreightError(.resourceExhausted, reason))
        default:
            Glibc.close(link)
            return .failure(FreightError(.protocolViolation, "unexpected answer to a file attach"))
        }
    }

    /// Reads pools pushed by the node until the link closes, handing each to the loop.
    func startReading(into core: ClientCore) {
        reader.submit { [link, gpus] _ in
            while let (bytes, fds) = DescriptorLink.receive(on: link) {
                switch try? DescriptorLink.decodeMessage(bytes) {
                case .devicePool(let id, let size, let gpu, let handle)? where fds.isEmpty:
                    // Opened here, off the loop: opening a handle maps the allocation, which takes a while.
                    let opened = Result { () throws(FreightError) in
                        try OpenedDevice.open(gpu: gpu, handle: handle, size: size, among: gpus)
                    }
                    core.gate.execute { core.devicePoolArrived(id, opened) }
                    continue
                case .withdrawn(let id)? where fds.isEmpty:
                    core.gate.execute { core.deviceWithdrawn(id) }
                    continue
                default:
                    break
                }
                guard case .pool(let id, let size)? = try? DescriptorLink.decodeMessage(bytes), fds.count == 1,
                    let mapping = try? SharedMapping.adopt(fd: fds[0], size: size, writable: false)
                else {
                    if fds.count != 1 { for fd in fds { Glibc.close(fd) } }
                    continue
                }
                core.gate.execute { core.poolArrived(id, mapping) }
            }
        }
    }

    /// Ends the link; the reader thread stops.
    func close() {
        guard !state.closed.load(ordering: .acquiring) else { return }
        state.end()
        // Device allocations go back (the node withdraws them), and this app's opened handles close.
        for lend in deviceLends.values { Glibc.close(lend.link) }
        deviceLends = [:]
        for device in devices.values { try? device.gpu.close(opened: device.pointer) }
        devices = [:]
        for entry in staging.values { entry.end(send) }
        staging = [:]
        shutdown(link, Int32(SHUT_RDWR))
        reader.shutdownGracefully { [link] _ in Glibc.close(link) }
    }
}

extension ClientCore {
    // MARK: The send pool

    /// A region of the send pool for the app to fill; on loop.
    func allocateShared(_ count: Int) throws(FreightError) -> SharedBuffer {
        guard let shared else {
            throw FreightError(
                .invalidArgument, "this client has no shared memory (attach over the node's Unix socket)")
        }
        guard count > 0, let offset = shared.allocator.allocate(count) else {
            throw FreightError(
                .resourceExhausted,
                "the shared send pool has \(ByteCount.format(Int64(shared.allocator.freeBytes))) free of \(ByteCount.format(Int64(shared.allocator.capacity))); \(count) bytes asked"
            )
        }
        shared.references[offset] = 1
        let loop = eventLoop
        let state = shared.state
        return SharedBuffer(mapping: shared.send, offset: offset, count: count) { [self] offset in
            state.ifOpen { loop.execute { self.dropReference(offset) } }
        }
    }

    func dropReference(_ offset: Int) {
        guard let shared, let count = shared.references[offset] else { return }
        if count > 1 {
            shared.references[offset] = count - 1
            return
        }
        shared.references[offset] = nil
        shared.allocator.free(offset)
        if let owner = shared.owners.removeValue(forKey: offset) { outgoing[owner]?.regionsHeld -= 1 }
        let waiting = shared.waiting
        shared.waiting = []
        for id in waiting {
            guard let transfer = outgoing[id], transfer.waitingForRegion else { continue }
            transfer.waitingForRegion = false
            pump(transfer)
        }
    }

    /// Lends `length` bytes at `offset` of the allocation that starts at `start`: one SHARED frame.
    func lend(
        _ transfer: Outgoing, start: Int, offset: Int, length: UInt64, bodyOffset: UInt64, crc: UInt32?, isLast: Bool
    ) {
        guard let shared, let connection else { return }
        let region = SharedRegion(pool: shared.sendPoolID, offset: UInt64(offset), length: length)
        shared.references[start, default: 0] += 1
        shared.loans[region, default: []].append(start)
        connection.send(
            .shared(
                SharedChunk(messageID: transfer.id, offset: bodyOffset, crc32c: crc, isLast: isLast, region: region)))
    }

    /// The node returned regions this app lent.
    func releaseReceived(_ regions: [SharedRegion]) {
        guard let shared else { return }
        for region in regions {
            guard var starts = shared.loans[region], !starts.isEmpty else {
                _ = deviceRegionReleased(region)
                continue
            }
            let start = starts.removeFirst()
            shared.loans[region] = starts.isEmpty ? nil : starts
            dropReference(start)
        }
    }

    // MARK: Receiving

    func poolArrived(_ id: UInt32, _ mapping: SharedMapping) {
        guard let shared else { return }
        shared.foreign[id] = mapping
        for chunk in shared.parked.removeValue(forKey: id) ?? [] { sharedChunkReceived(chunk) }
    }

    /// A region lent to this app: a chunk of a message, read in place.
    func sharedChunkReceived(_ chunk: SharedChunk) {
        guard let shared else { return connection?.close() ?? () }
        let region = chunk.region
        let mapping: SharedMapping
        if region.pool == shared.receivePoolID {
            mapping = shared.receive
        } else if let known = shared.foreign[region.pool] {
            mapping = known
        } else if shared.devices[region.pool] != nil || shared.unopened[region.pool] != nil
            || shared.deviceLends[region.pool] != nil
        {
            // Device memory: looked for only once no host pool names the region, off the host pools' path.
            return deviceChunkReceived(chunk, shared: shared)
        } else {
            // The node sent the pool down the descriptor link before this frame; it is on its way.
            if shared.parked[region.pool] == nil {
                eventLoop.scheduleTask(in: .seconds(Int64(Limits.sharedPoolWaitSeconds))) { [self] in
                    poolNeverArrived(region.pool)
                }
            }
            shared.parked[region.pool, default: []].append(chunk)
            return
        }
        guard mapping.contains(offset: region.offset, length: region.length) else {
            connection?.send(.release([region]))
            return fail(chunk.messageID, FreightError(.protocolViolation, "shared region \(region) is out of bounds"))
        }
        let loop = eventLoop
        let state = shared.state
        let bytes = SharedBytes(mapping: mapping, region: region, session: shared.state) { [self] region in
            state.ifOpen { loop.execute { self.releaseLent(region) } }
        }
        guard var message = incoming[chunk.messageID] else { return }
        do throws(FreightError) {
            // Bytes this app holds already come again after a broken link: the region goes back at once (when
            // `bytes` goes).
            guard try message.window.accept(offset: chunk.offset, count: region.length) else { return }
        } catch {
            return fail(chunk.messageID, error)
        }
        if chunk.hasChecksum, CRC32C.checksum(bytes.unsafeBytes) != chunk.crc32c {
            message.window.drop(offset: chunk.offset, count: region.length)
            if askAgain(chunk.messageID, &message) { return }
            return fail(
                chunk.messageID,
                FreightError(.checksumMismatch, "chunk at offset \(chunk.offset) failed its CRC32C check"))
        }
        message.receivedBytes += region.length
        incoming[chunk.messageID] = message
        message.continuation.yield(BodyChunk(offset: chunk.offset, shared: bytes))
        if message.receivedBytes == message.window.length {
            message.continuation.finish()
        }
    }

    func releaseLent(_ region: SharedRegion) {
        guard let shared, !shared.state.closed.load(ordering: .relaxed) else { return }
        connection?.send(.release([region]))
    }

    private func poolNeverArrived(_ pool: UInt32) {
        guard let shared, let chunks = shared.parked.removeValue(forKey: pool) else { return }
        for chunk in chunks {
            connection?.send(.release([chunk.region]))
            fail(chunk.messageID, FreightError(.protocolViolation, "shared pool \(pool) never arrived"))
        }
    }
}
