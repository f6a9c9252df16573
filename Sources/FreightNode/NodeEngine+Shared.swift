import CFreightSystem
import FreightCore
import FreightFlow
import FreightTransport
import FreightWire
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

extension NodeEngine {
    // MARK: Attaching pools

    /// Starts accepting descriptor links next to the node's Unix socket; on loop.
    func startDescriptorListener() throws(FreightError) {
        guard let path = configuration.socketPath, configuration.sharedMemoryBudgetBytes > 0 else { return }
        let loop = eventLoop
        descriptorListener = try DescriptorListener(
            path: path + DescriptorLink.suffix,
            onAttach: { [weak self] attach, send, receive, link in
                guard let self else {
                    for fd in [send, receive, link] { close(fd) }
                    return
                }
                loop.execute { self.attachPools(attach, send: send, receive: receive, link: link) }
            },
            onFile: { [weak self] attach, file, link in
                guard let self else {
                    close(file)
                    shutdown(link, Int32(SHUT_RDWR))
                    return
                }
                loop.execute { self.fileLent(attach, file: file, link: link) }
            },
            onFileClosed: { [weak self] link in
                // The listener no longer watches `link`: it is the node's to close (after any answer on it).
                guard let self else {
                    close(link)
                    return
                }
                loop.execute { self.fileLinkClosed(link) }
            },
            onDevice: { [weak self] attach, link in
                guard let self else {
                    shutdown(link, Int32(SHUT_RDWR))
                    return
                }
                loop.execute { self.deviceLent(attach, link: link) }
            })
    }

    /// An app's descriptor link brought its pools: check them against the budget and map them.
    func attachPools(_ attach: DescriptorLink.Attach, send: Int32, receive: Int32, link: Int32) {
        func refuse(_ reason: String) {
            logger.info("refused shared memory: \(reason)")
            _ = DescriptorLink.send(DescriptorLink.encode(.refused(reason)), on: link, wait: false)
            for fd in [send, receive, link] { close(fd) }
        }
        guard let session = sessions.session(token: attach.token) else {
            return refuse("no app session with that token on node \(name)")
        }
        guard session.sendPool == nil, session.link < 0 else {
            return refuse("app \(session.label) already lent its pools")
        }
        let pools: (send: NodePool, receive: NodePool)
        do throws(FreightError) {
            pools = try shared.map(attach, send: send, receive: receive, owner: session.id)
        } catch {
            logger.info("refused shared memory: \(error.message)")
            _ = DescriptorLink.send(DescriptorLink.encode(.refused(error.message)), on: link, wait: false)
            close(link)
            return
        }
        let (sendPool, receivePool) = pools
        guard
            DescriptorLink.send(
                DescriptorLink.encode(.accepted(sendPool: sendPool.id, receivePool: receivePool.id)),
                on: link, wait: false)
        else {
            close(link)
            return
        }
        shared.register(sendPool, receivePool)
        session.sendPool = sendPool
        session.receivePool = receivePool
        session.link = link
        logger.debug(
            "app \(session.label) lent pools \(sendPool.id) (\(attach.sendBytes) B) and \(receivePool.id) (\(attach.receiveBytes) B)"
        )
    }

    /// An app lent a file for sending (docs/small-messages-and-files.md): a pool of its own, read with `sendfile`,
    /// until the app closes the file's link. Refused (the link shut, which the listener then reports) when the app
    /// has no session here, has lent its most files, or the descriptor is not a regular file of the declared size.
    func fileLent(_ attach: DescriptorLink.FileAttach, file: Int32, link: Int32) {
        func refuse(_ reason: String) {
            logger.info("refused a lent file: \(reason)")
            _ = DescriptorLink.send(DescriptorLink.encode(.refused(reason)), on: link, wait: false)
            close(file)
            shutdown(link, Int32(SHUT_RDWR))
        }
        guard let session = sessions.session(token: attach.token) else {
            return refuse("no app session with that token on node \(name)")
        }
        guard session.files.count < Limits.sharedFilesPerAppMax else {
            return refuse("app \(session.label) lent \(Limits.sharedFilesPerAppMax) files already")
        }
        var status = stat()
        guard fstat(file, &status) == 0, status.st_mode & S_IFMT == S_IFREG,
            UInt64(status.st_size) >= attach.bytes, attach.bytes <= UInt64(Int.max)
        else {
            return refuse("a lent file must be a regular file of at least its declared \(attach.bytes) bytes")
        }
        // `sendfile` needs a descriptor open for reading, through the page cache, and the node must not wait on a
        // network or user-space filesystem in its event loop (docs/threat-model.md).
        switch freight_lendable_file(file) {
        case 0: break
        case 1: return refuse("a lent file must be open for reading (not O_PATH or O_DIRECT)")
        default: return refuse("a lent file must be on a local filesystem (tmpfs, ext4, xfs, btrfs, f2fs or zfs)")
        }
        keepLent(shared.lendFile(fd: file, size: Int(attach.bytes), owner: session.id), by: session, over: link)
    }

    /// Answers a file or device lend with its pool id and keeps the pool lent while its link is open (the pool goes
    /// when the answer cannot be sent).
    @discardableResult
    private func keepLent(_ pool: NodePool, by session: AppSession, over link: Int32) -> Bool {
        guard
            DescriptorLink.send(
                DescriptorLink.encode(.accepted(sendPool: pool.id, receivePool: 0)), on: link, wait: false)
        else {
            shared.ownerGone(pool)
            shutdown(link, Int32(SHUT_RDWR))
            return false
        }
        session.files[pool.id] = (pool, link)
        fileLinks[link] = (session.id, pool.id)
        return true
    }

    /// An app lent a device allocation for sending (docs/gpu.md): a pool of its own that the node never reads, whose
    /// regions go only to apps on this node that open CUDA IPC handles on its GPU. Lent while its link is open, as a
    /// file is; refused (the link shut) when the app has no session here or has lent its most.
    func deviceLent(_ attach: DescriptorLink.DeviceAttach, link: Int32) {
        func refuse(_ reason: String) {
            logger.info("refused a lent device allocation: \(reason)")
            _ = DescriptorLink.send(DescriptorLink.encode(.refused(reason)), on: link, wait: false)
            shutdown(link, Int32(SHUT_RDWR))
        }
        guard let session = sessions.session(token: attach.token) else {
            return refuse("no app session with that token on node \(name)")
        }
        guard session.files.count < Limits.sharedFilesPerAppMax else {
            return refuse(
                "app \(session.label) lent \(Limits.sharedFilesPerAppMax) files and device allocations already")
        }
        let pool = shared.lendDevice(
            DeviceLend(gpu: attach.gpu, handle: attach.handle), size: Int(attach.bytes), owner: session.id)
        guard keepLent(pool, by: session, over: link) else { return }
        logger.debug(
            "app \(session.label) lent \(attach.bytes) bytes of device memory on \(GPUName.text(attach.gpu)) as pool \(pool.id)"
        )
    }

    /// A device pool closed (its app took it back or is gone, and every loan of it came back): the apps it was
    /// pushed to close their handles of it.
    func deviceWithdrawn(_ pool: NodePool) {
        for id in pool.pushedTo {
            guard let session = sessions[id], session.link >= 0 else { continue }
            _ = DescriptorLink.send(DescriptorLink.encode(.withdrawn(id: pool.id)), on: session.link, wait: false)
        }
        pool.pushedTo = []
    }

    /// A lent file's link closed (the app's message ended, or the app is gone): the file closes once every loan
    /// of it is back.
    func fileLinkClosed(_ link: Int32) {
        close(link)
        guard let (owner, id) = fileLinks.removeValue(forKey: link) else { return }
        if let pool = sessions[owner]?.files.removeValue(forKey: id)?.pool ?? shared.pools[id] {
            shared.ownerGone(pool)
        }
    }

    /// The app is gone: drop what it held, and close its pools once every loan of them is back.
    func sharedSessionClosed(_ session: AppSession) {
        for holds in session.holds.values {
            for hold in holds { shared.returnUse(hold.loan) }
        }
        session.holds = [:]
        session.holdCount = 0
        for pool in [session.sendPool, session.receivePool].compactMap({ $0 }) { shared.ownerGone(pool) }
        for (pool, link) in session.files.values {
            // The link is reported closed once shut; the file closes with its last loan.
            shared.ownerGone(pool)
            shutdown(link, Int32(SHUT_RDWR))
        }
        session.files = [:]
        shared.sessionGone(session.id)
        if session.link >= 0 {
            close(session.link)
            session.link = -1
        }
    }

    // MARK: Loans

    /// Lends a region to an app: a SHARED frame, and a hold until the app releases it.
    func lend(_ chunk: SharedChunk, loan: Loan, to session: AppSession, addingUse: Bool) {
        if addingUse { loan.uses += 1 }
        session.holds[loan.region, default: []].append((loan, nowNanos))
        session.holdCount += 1
        counters.bytesOut += UInt64(chunk.count)
        session.connection.send(.shared(chunk))
    }

    /// Makes sure the app's descriptor link has `pool`; false when it cannot take it now.
    func push(_ pool: NodePool, to session: AppSession) -> Bool {
        if pool.owner == session.id || pool.pushedTo.contains(session.id) { return true }
        guard session.link >= 0, session.holdCount < Limits.sharedHoldsMax else { return false }
        if let device = pool.device {
            // A device allocation goes as its IPC handle, to an app that said it opens handles on that GPU.
            guard session.gpus.contains(device.gpuName) else { return false }
            let message = DescriptorLink.encode(
                .devicePool(id: pool.id, bytes: pool.mapping.size, gpu: device.gpu, handle: device.handle))
            guard DescriptorLink.send(message, on: session.link, wait: false) else { return false }
            pool.pushedTo.insert(session.id)
            return true
        }
        let message = DescriptorLink.encode(.pool(id: pool.id, bytes: pool.mapping.size))
        guard DescriptorLink.send(message, fds: [pool.mapping.fd], on: session.link, wait: false) else { return false }
        pool.pushedTo.insert(session.id)
        return true
    }

    /// Disconnects apps that held a region past the hold limit (their holds are dropped when they close).
    func closeLongHolds() {
        let now = nowNanos
        let limit = UInt64(configuration.sharedHoldSeconds) * 1_000_000_000
        for session in sessions.all where session.holdCount > 0 {
            guard session.holds.values.contains(where: { $0.first.map { now &- $0.since > limit } ?? false }) else {
                continue
            }
            logger.warning(
                "closing app \(session.label): it held a shared region for over \(configuration.sharedHoldSeconds) s"
            )
            session.connection.close()
        }
    }

    // MARK: Frames from apps

    /// An app lent a region of its send pool, or of a file it lent, for a message's bytes.
    func sharedReceived(_ chunk: SharedChunk, from session: AppSession) {
        let pool: NodePool
        if let send = session.sendPool, send.contains(chunk.region) {
            pool = send
        } else if let device = session.files[chunk.region.pool]?.pool, device.device != nil,
            device.contains(chunk.region)
        {
            return deviceReceived(chunk, pool: device, from: session)
        } else if let file = session.files[chunk.region.pool]?.pool, file.contains(chunk.region) {
            // The app may have shrunk its file since: `sendfile` would then find nothing to send.
            guard file.mapping.stillHolds(offset: chunk.region.offset, length: chunk.region.length) else {
                return abortFromApp(
                    chunk.messageID,
                    FreightError(
                        .io,
                        "the file lent for the message ends before offset \(chunk.region.offset + chunk.region.length)")
                )
            }
            pool = file
        } else {
            return reject(
                session.connection, "SHARED frame names \(chunk.region), not a region of its send pool or a lent file")
        }
        let loan = Loan(pool: pool, region: chunk.region)
        defer { shared.returnUse(loan) }
        guard
            let flow = admit(
                messageID: chunk.messageID, offset: chunk.offset, count: chunk.count,
                from: .session(session.id), countLimit: Int.max)
        else { return }
        let end = chunk.offset + UInt64(chunk.count)
        for branch in flow.branches where branch.isOpen && end > branch.ackedOffset {
            switch branch.port {
            case .peer(let node)
            where chunk.count <= Self.copiedChunkBytesMax
                || members[node]?.link.control?.capabilities.contains(.sendsFileRegions) != true:
                // Small: a copy joins the frames around it in one writev(2); sendfile would be a call of its own.
                // A link that cannot send file regions (TLS) takes a copy too.
                guard copyOut(chunk, pool: pool, chunkBytes: Int(flow.header.chunkBytes), to: branch.port) else {
                    return
                }
            case .peer:
                guard sendSharedToPeer(chunk, loan: loan, chunkBytes: Int(flow.header.chunkBytes), port: branch.port)
                else { return }
            case .session(let id):
                if !pool.isFile, let receiver = sessions[id], receiver.takesShared, push(pool, to: receiver) {
                    lend(chunk, loan: loan, to: receiver, addingUse: true)
                } else if flow.shared {
                    // A shared-buffer flow has no window to copy within: the receiver must take the region.
                    failBranch(
                        flow.id, port: branch.port,
                        FreightError(.resourceExhausted, "app session \(id) cannot take shared regions now"))
                } else {
                    guard copyOut(chunk, pool: pool, chunkBytes: Int(flow.header.chunkBytes), to: branch.port) else {
                        return
                    }
                }
            case .local:
                guard copyOut(chunk, pool: pool, chunkBytes: Int(flow.header.chunkBytes), to: branch.port) else {
                    return
                }
            }
        }
    }

    /// A region of a device allocation an app lent: handed to each receiving app on this node that opens handles on
    /// its GPU, and refused, with the reason, to every other branch (nothing here reads device memory; a body
    /// crosses to other nodes once staged through host memory, docs/gpu.md).
    private func deviceReceived(_ chunk: SharedChunk, pool: NodePool, from session: AppSession) {
        guard let device = pool.device else { return }
        let loan = Loan(pool: pool, region: chunk.region)
        defer { shared.returnUse(loan) }
        guard
            let flow = admit(
                messageID: chunk.messageID, offset: chunk.offset, count: chunk.count,
                from: .session(session.id), countLimit: Int.max)
        else { return }
        let end = chunk.offset + UInt64(chunk.count)
        // Checksums are for bytes that cross something; these stay in the GPU's memory.
        let handed = SharedChunk(
            messageID: chunk.messageID, offset: chunk.offset, crc32c: nil, isLast: chunk.isLast, region: chunk.region)
        for branch in flow.branches where branch.isOpen && end > branch.ackedOffset {
            let refusal: String
            switch branch.port {
            case .session(let id):
                guard let receiver = sessions[id] else { continue }
                // The app that lent it reads its own memory; another must have named the GPU.
                let opens = receiver.gpus.contains(device.gpuName) || pool.owner == id
                if receiver.takesShared, opens, push(pool, to: receiver) {
                    lend(handed, loan: loan, to: receiver, addingUse: true)
                    continue
                }
                refusal =
                    opens
                    ? "app \(receiver.label) cannot take shared regions now"
                    : "the body lives on \(device.gpuName), and app \(receiver.label) does not open CUDA IPC handles there (it did not connect with that GPU, or has no shared memory)"
            case .peer(let node):
                refusal =
                    "the body lives on \(device.gpuName) of node \(name): device memory is handed over only to apps on its node (staging to node \(node) through host memory is not built yet)"
            case .local:
                refusal = "the body lives on \(device.gpuName): this node's own endpoints read host memory only"
            }
            failBranch(flow.id, port: branch.port, FreightError(.invalidArgument, refusal))
        }
    }

    /// Tells the app sending a body in device memory on `gpu` how it moves, before it sends any of it (docs/gpu.md):
    /// handed over (its allocation lent, CUDA IPC) when every receiver the message has is an app of this node that
    /// opens that GPU, or the sender itself; staged through host memory otherwise (another node, an app that did not
    /// name the GPU, this node's own endpoints and filters, which read host memory).
    func answerDeviceBody(_ flow: Flow, gpu: String, to sender: AppSession) {
        let branches = flow.branches.filter(\.isOpen)
        let handsOver =
            !branches.isEmpty
            && branches.allSatisfy { branch in
                guard case .session(let id) = branch.port, let receiver = sessions[id], receiver.takesShared else {
                    return false
                }
                return receiver.gpus.contains(gpu) || id == sender.id
            }
        var ack = Freight_Wire_V1_Ack()
        ack.messageID = flow.id
        ack.deviceTransfer = handsOver ? .handOver : .stage
        sender.connection.send(.ack(ack))
    }

    /// Ends a message an app is sending with `error`, both ways (its bytes could not be had).
    private func abortFromApp(_ id: UInt64, _ error: FreightError) {
        flowTable.abort(id, error, notifyUpstream: true, actions: &flowActions)
        performFlowActions()
    }

    /// An app gave back regions lent to it.
    func releaseReceived(_ regions: [SharedRegion], from session: AppSession) {
        for region in regions {
            guard var holds = session.holds[region], !holds.isEmpty else {
                return reject(session.connection, "RELEASE of \(region), which it does not hold")
            }
            let hold = holds.removeFirst()
            session.holds[region] = holds.isEmpty ? nil : holds
            session.holdCount -= 1
            shared.returnUse(hold.loan)
        }
    }

    /// The region's bytes sent to a peer as DATA frames straight from the pool file (`sendfile`), split at the
    /// message's chunk size; each carries its CRC32C (computed here when the app left it out).
    private func sendSharedToPeer(_ chunk: SharedChunk, loan: Loan, chunkBytes: Int, port: Port) -> Bool {
        let total = chunk.count
        var start = 0
        while start < total {
            let count = min(chunkBytes, total - start)
            let whole = start == 0 && count == total
            let crc: UInt32
            if whole && chunk.hasChecksum {
                crc = chunk.crc32c
            } else if let bytes = loan.pool.mapping.bytes(
                offset: chunk.region.offset + UInt64(start), length: UInt64(count))
            {
                crc = CRC32C.checksum(bytes)
            } else if let bytes = loan.pool.mapping.read(
                offset: chunk.region.offset + UInt64(start), length: UInt64(count))
            {
                crc = CRC32C.checksum(bytes)
            } else {
                abortFromApp(
                    chunk.messageID,
                    FreightError(.io, "cannot read the lent file at \(chunk.region.offset + UInt64(start))"))
                return false
            }
            let header = DataChunk(
                messageID: chunk.messageID, offset: chunk.offset + UInt64(start), crc32c: crc,
                isLast: chunk.isLast && start + count == total, pieces: [])
            guard let connection = dataConnection(for: port, bytes: count, messageID: chunk.messageID) else {
                return true
            }
            // One use until the write is done (the pool file must stay open for it), one until acknowledged.
            loan.uses += 2
            if flowTable[chunk.messageID]?.branches.contains(where: { $0.port == port && $0.isOpen }) == true {
                shared.lend(loan, to: port, of: chunk.messageID, until: header.offset + UInt64(count))
            } else {
                loan.uses -= 1
            }
            counters.bytesSentFromPools += UInt64(count)
            let written = eventLoop.makePromise(of: Void.self)
            written.futureResult.whenComplete { [shared] _ in shared.returnUse(loan) }
            connection.sendData(
                header,
                fileRegion: loan.pool.mapping.fileRegion(offset: Int(chunk.region.offset) + start, length: count),
                promise: written)
            start += count
        }
        return true
    }

    /// The region's bytes copied into buffers for a receiver that does not take shared memory.
    private func copyOut(_ chunk: SharedChunk, pool: NodePool, chunkBytes: Int, to port: Port) -> Bool {
        let total = chunk.count
        var start = 0
        while start < total {
            let count = min(chunkBytes, total - start)
            guard let buffer = pool.mapping.read(offset: chunk.region.offset + UInt64(start), length: UInt64(count))
            else {
                abortFromApp(
                    chunk.messageID,
                    FreightError(.io, "cannot read the lent file at \(chunk.region.offset + UInt64(start))"))
                return false
            }
            let crc = start == 0 && count == total && chunk.hasChecksum ? chunk.crc32c : CRC32C.checksum(buffer)
            sendData(
                DataChunk(
                    messageID: chunk.messageID, offset: chunk.offset + UInt64(start), crc32c: crc,
                    isLast: chunk.isLast && start + count == total, bytes: buffer),
                to: port)
            start += count
        }
        return true
    }

    /// A region of the app's receive pool for a chunk arriving for it, when the app takes shared memory and the
    /// pool has room; the caller fills it and lends it with ``lend(_:loan:to:addingUse:)``.
    func receiveRegion(for session: AppSession, bytes: Int) -> Loan? {
        guard session.takesShared, let pool = session.receivePool, session.holdCount < Limits.sharedHoldsMax else {
            return nil
        }
        return shared.receiveRegion(in: pool, bytes: bytes)
    }
}
