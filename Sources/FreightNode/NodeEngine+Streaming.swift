import FreightCore
import FreightFlow
import FreightTransport
import FreightWire
import NIOCore

/// A chunk arriving piece by piece on one inbound connection. Pieces bound for an app's receive pool are written
/// (or read) into it as they come; pieces bound for other connections are kept, and the chunk goes onto each of them
/// whole once its last piece arrived: a party that stalls mid-chunk holds only its own chunk, never a stripe that
/// other messages share (docs/hardening.md, "No party stalls the others").
struct InboundStream {
    let messageID: UInt64
    var header: DataChunk
    /// Connections the chunk goes onto, whole, when it is complete.
    var outputs: [FrameConnection] = []
    /// In-process ports take the chunk whole.
    var localPorts: [UInt64] = []
    /// Apps that take shared memory get the chunk written into a region of their receive pool.
    var sharedOutputs: [(session: UInt64, loan: Loan, written: Int)] = []
    var remaining: Int
    /// True when the chunk was refused: its pieces are dropped.
    var discard: Bool
    /// CRC32C of the pieces so far, computed while each is still in cache from its socket read, when this node is
    /// where the chunk ends (an in-process port or an app's receive pool): the endpoint need not read it again.
    var crc: UInt32 = 0
    var verifies: Bool { !localPorts.isEmpty || !sharedOutputs.isEmpty }
    /// Where the next byte of the chunk goes in the `index`th receive pool, as an offset into its mapping and as an
    /// address.
    func nextByte(in index: Int) -> (offset: Int, pointer: UnsafeMutableRawPointer) {
        let output = sharedOutputs[index]
        let offset = Int(output.loan.region.offset) + output.written
        return (offset, output.loan.pool.mapping.base + offset)
    }
    /// The chunk goes to one receive pool and nowhere else: the connection reads the rest of its body straight
    /// into that pool (``ReadTarget``), as nothing else needs the bytes in a buffer of their own.
    var readsIntoPool = false
    /// When its first piece arrived (the node's clock, nanoseconds).
    let startedNanos: UInt64
    /// The chunk's pieces for the connections and ports it goes to, held until its last one has come (as slices of
    /// the reads they came in, within what those keep alive: ``HeldPieces``).
    var held = HeldPieces()
}

extension NodeEngine {
    public func connection(_ connection: FrameConnection, didStream event: ParserEvent) {
        switch event {
        case .dataStart(let chunk, let bodyBytes):
            streamStarted(chunk, bodyBytes: bodyBytes, on: connection)
        case .dataPiece(let piece):
            guard var stream = inboundStreams[connection.id] else { return }
            stream.remaining -= piece.readableBytes
            if !stream.discard {
                if !stream.localPorts.isEmpty || !stream.outputs.isEmpty {
                    stream.held.append(piece, remaining: stream.remaining)
                }
                // A piece read straight into its one receive pool is checked in place; otherwise the first pool
                // gets it copied and checksummed in one pass, any other a copy.
                for index in stream.sharedOutputs.indices {
                    let target = stream.nextByte(in: index).pointer
                    if stream.readsIntoPool, connection.readTarget?.landed(piece, at: target) == true {
                        // Read straight into the pool: checked in place while the bytes are in cache.
                        stream.crc = piece.withUnsafeReadableBytes { CRC32C.checksum($0, continuing: stream.crc) }
                        stream.sharedOutputs[index].written += piece.readableBytes
                        counters.bytesReadIntoPools += UInt64(piece.readableBytes)
                        continue
                    }
                    piece.withUnsafeReadableBytes { bytes in
                        if index == 0 {
                            stream.crc = CRC32C.copy(bytes, to: target, continuing: stream.crc)
                        } else {
                            target.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
                        }
                    }
                    stream.sharedOutputs[index].written += piece.readableBytes
                }
                if stream.sharedOutputs.isEmpty && !stream.localPorts.isEmpty {
                    stream.crc = piece.withUnsafeReadableBytes { CRC32C.checksum($0, continuing: stream.crc) }
                }
                pauseIfOutputsFull(connection, stream)
            }
            aimReads(connection, stream)
            inboundStreams[connection.id] = stream
        case .dataEnd:
            guard var stream = inboundStreams.removeValue(forKey: connection.id) else { return }
            connection.readTarget?.clear()
            stream.header.pieces = stream.held.pieces
            for output in stream.outputs { output.sendData(stream.header, promise: nil) }
            let verified = stream.verifies && stream.crc == stream.header.crc32c
            for output in stream.sharedOutputs {
                guard let session = sessions[output.session] else {
                    shared.returnUse(output.loan)
                    continue
                }
                // Checked here as it arrived: the app reads it without checking again. A chunk that failed keeps
                // its checksum, so the app finds the failure (and the ABORT behind it) as it would have.
                let chunk = SharedChunk(
                    messageID: stream.header.messageID, offset: stream.header.offset,
                    crc32c: verified ? nil : stream.header.crc32c, isLast: stream.header.isLast,
                    region: output.loan.region)
                lend(chunk, loan: output.loan, to: session, addingUse: false)
            }
            stream.header.checksumVerified = stream.verifies ? verified : nil
            for id in stream.localPorts {
                if let local = localPorts[id] {
                    let chunk = stream.header
                    eventLoop.execute { local.deliver(.data(chunk)) }
                }
            }
        case .frame(let frame):
            self.connection(connection, didReceive: frame)
        }
    }

    private func streamStarted(_ chunk: DataChunk, bodyBytes: Int, on connection: FrameConnection) {
        var stream = InboundStream(
            messageID: chunk.messageID, header: chunk, remaining: bodyBytes, discard: true, startedNanos: nowNanos)
        defer { inboundStreams[connection.id] = stream }
        guard let port = port(of: connection),
            let flow = admit(messageID: chunk.messageID, offset: chunk.offset, count: bodyBytes, from: port)
        else { return }
        stream.discard = false
        let end = chunk.offset + UInt64(bodyBytes)
        for branch in flow.branches where branch.isOpen && end > branch.ackedOffset {
            if case .local(let id) = branch.port {
                stream.localPorts.append(id)
                counters.bytesOut += UInt64(bodyBytes)
            } else if case .session(let id) = branch.port, let session = sessions[id],
                let loan = receiveRegion(for: session, bytes: bodyBytes)
            {
                stream.sharedOutputs.append((id, loan, 0))
            } else if let output = dataConnection(for: branch.port, bytes: bodyBytes, messageID: chunk.messageID) {
                stream.outputs.append(output)
            }
        }
        stream.readsIntoPool = stream.outputs.isEmpty && stream.localPorts.isEmpty && stream.sharedOutputs.count == 1
        connection.readTarget?.expectsChunks = stream.readsIntoPool
        aimReads(connection, stream)
    }

    /// Points the connection's next read at the rest of the chunk's body in its receive pool, when it goes there
    /// alone; otherwise reads go to SwiftNIO's buffers.
    private func aimReads(_ connection: FrameConnection, _ stream: InboundStream) {
        guard let target = connection.readTarget else { return }
        guard stream.readsIntoPool, !stream.sharedOutputs.isEmpty, stream.remaining > 0 else { return target.clear() }
        let next = stream.nextByte(in: 0)
        target.set(next.pointer, count: stream.remaining, headroom: next.offset)
    }

    /// Closes inbound connections that started a chunk and did not finish it within `Limits.chunkStallSeconds`: the
    /// pieces kept of it (at most the chunk, within the message's credit) are not held longer.
    func closeStalledStreams() {
        let now = nowNanos
        let limit = UInt64(Limits.chunkStallSeconds) * 1_000_000_000
        for (id, stream) in inboundStreams where now &- stream.startedNanos > limit {
            let connection =
                sessions[id]?.connection ?? members.values.lazy.flatMap(\.link.ingress).first { $0.id == id }
            logger.warning(
                "closing \(connection.map { "\($0)" } ?? "connection \(id)"): a chunk stalled for over \(Limits.chunkStallSeconds) s"
            )
            if let connection {
                connection.close()
            } else {
                inboundStreams[id] = nil
            }
        }
    }

    /// An app whose bytes fill an output stops being read until it drains (``AppSessions/pause(_:until:)``).
    func pauseIfOutputsFull(_ input: FrameConnection, _ stream: InboundStream) {
        guard input.hello?.role == .app, stream.outputs.contains(where: { !$0.channel.isWritable }) else {
            return
        }
        sessions.pause(input, until: Set(stream.outputs.filter { !$0.channel.isWritable }.map(\.id)))
    }

    public func connectionWritabilityChanged(_ connection: FrameConnection) {
        guard connection.channel.isWritable else { return }
        sessions.drained(connection)
    }

    /// The port a connection speaks for, once it said hello.
    func port(of connection: FrameConnection) -> Port? {
        switch connection.hello?.role {
        case .app?: sessions[connection.id] != nil ? .session(connection.id) : nil
        case .node?:
            members[connection.hello!.name]?.link.owns(connection) == true ? .peer(connection.hello!.name) : nil
        default: nil
        }
    }

    /// An inbound connection closed in the middle of a chunk: what it sent of the chunk is dropped (nothing of it went
    /// onto other connections yet), and the message itself is aborted as its sender is gone.
    func inboundClosed(_ connection: FrameConnection) {
        connection.readTarget?.clear()
        guard let stream = inboundStreams.removeValue(forKey: connection.id) else { return }
        for output in stream.sharedOutputs { shared.returnUse(output.loan) }
    }
}
