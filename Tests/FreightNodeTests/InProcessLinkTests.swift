import FreightClient
import FreightCore
import FreightNode
import FreightTesting
import FreightTransport
import FreightWire
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// In-process links (`inproc://`): whole nodes joined with no socket, and the link itself.
@Suite(.serialized) struct InProcessLinkTests {
    /// Three nodes over in-process links only: a message crosses with every chunk checked at the far node, and the
    /// links decline what only sockets can do.
    @Test func nodesJoinedWithNoSocketDeliver() async throws {
        try await InProcessFabric.with(nodes: 3, cluster: "inproc", links: .inProcess) { fabric in
            let address = try Address("inproc/sink")
            _ = try await fabric.engines[2].attachSink(try AddressPattern("inproc/sink"))
            try await fabric.waitForEndpoints(address, count: 1)
            let done = try await fabric.engines[0].sendFromNode(to: address, length: 64 << 20)
            #expect(done.deliveries.count == 1 && done.failures.isEmpty)
            #expect(done.deliveries.first?.resumedAt.isEmpty == true)
            let sent = try await fabric.engines[0].statusSnapshot()
            #expect(sent.bytesOut >= 64 << 20)
            #expect(sent.listen.hasPrefix("inproc://"))
            #expect(try await fabric.engines[0].bodyBytesSentFromPools() == 0)
        }
    }

    /// Every link of the receiving node reset at once mid-message: the nodes redial and the message resumes from
    /// what the receiver holds, with no socket involved.
    @Test func aCutMidMessageResumes() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "inproc-cut", links: .inProcess) { fabric in
            let address = try Address("inproc/cut")
            _ = try await fabric.engines[1].attachSink(try AddressPattern("inproc/cut"))
            try await fabric.waitForEndpoints(address, count: 1)
            let length: UInt64 = 1 << 30
            fabric.cut(1, afterBytes: 256 << 20)
            let done = try await fabric.engines[0].sendFromNode(to: address, length: length)
            #expect(done.deliveries.count == 1 && done.failures.isEmpty, "\(done.failures)")
            let resumed = try #require(done.deliveries.first?.resumedAt.first, "no resume was reported")
            #expect(resumed > 0 && resumed < length)
            let received = try await fabric.engines[1].statusSnapshot()
            // What went again is the bytes past the acknowledged offset when the link broke: one window, twice at
            // most. Both nodes redial within the same moment here, and the request to send again that each side's
            // resume makes can reach the sender after it already went on from the other (docs/core.md, "Resume").
            let window = UInt64(Limits.windowBytesDefault)
            #expect(received.bytesIn <= length + 2 * window + (8 << 20), "resumed at \(resumed)")
        }
    }

    /// A streamed body (``BodyWriter``) keeps what it sent until the receivers hold it, so it too resumes when a
    /// link on the way breaks: the app on n2 reads one message, byte-identical, told where it resumed.
    @Test func aStreamedBodyResumesFromWhatItRetained() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "inproc-stream", links: .inProcess) { fabric in
            let receiver = try await FreightClient.connect(to: fabric.socket(1), label: "rx")
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx")
            let inbox = try await receiver.receive("inproc/stream")
            try await fabric.waitForEndpoints(try Address("inproc/stream"), count: 1)
            fabric.cut(1, afterBytes: 96 << 20)
            let length = 256 << 20
            let writer = BodyWriter(limitBytes: 1 << 20)
            let sending = Task {
                try await sender.send(to: "inproc/stream", body: .stream(writer, length: Int64(length)))
            }
            let writing = Task {
                var offset = 0
                while offset < length {
                    // Odd-sized pieces, so chunks are cut across them and a resume lands inside one.
                    let count = min(777_777, length - offset)
                    var piece = ByteBufferAllocator().buffer(capacity: count)
                    piece.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
                        PatternFill.fill(
                            UnsafeMutableRawBufferPointer(rebasing: raw[..<count]), seed: 9, offset: Int64(offset))
                        return count
                    }
                    try await writer.write(piece)
                    offset += count
                }
                writer.finish()
            }
            var messages = inbox.makeAsyncIterator()
            let message = try #require(try await messages.next())
            #expect(try await message.checkPattern(seed: 9))
            try await writing.value
            let report = try await sending.value
            #expect(report.bytes == UInt64(length) && report.failures.isEmpty)
            let resumes = report.deliveries.first?.resumedAt ?? []
            #expect(!resumes.isEmpty, "the cut came mid-message, so it resumed")
            #expect(message.resumedAt == resumes)
            await sender.close()
            await receiver.close()
        }
    }

    /// A node off the network for longer than the hold time: both sides fail the message naming the offset, and
    /// neither holds anything after.
    /// A path that goes dark with neither end told (no reset, no TCP timeout: an interface down under queued data,
    /// where the kernel retries the sends without counting its timeout) is found by the silence of the peer's
    /// heartbeats: both nodes count the link broken, hold the message, and resume it once the path is back.
    @Test(.timeLimit(.minutes(2))) func aPathGoneDarkIsFoundByItsSilenceAndResumes() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "inproc-dark", links: .inProcess, linkTimeoutSeconds: 1) {
            fabric in
            let address = try Address("inproc/dark")
            _ = try await fabric.engines[1].attachSink(try AddressPattern("inproc/dark"))
            try await fabric.waitForEndpoints(address, count: 1)
            let length: UInt64 = 1 << 30
            fabric.darken(1, afterBytes: 256 << 20)
            let sending = Task { try await fabric.engines[0].sendFromNode(to: address, length: length) }
            // Silent for the link timeout (2 s at least) and three heartbeats (1 s each): broken within seconds.
            let deadline = ContinuousClock.now + .seconds(30)
            var broken = false
            while !broken && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(200))
                var up = 0
                for engine in fabric.engines {
                    up += try await engine.statusSnapshot().peers.reduce(0) { $0 + Int($1.streamsUp) }
                }
                broken = up == 0
            }
            #expect(broken, "neither node found the dark path")
            fabric.setDown(1, false)
            let done = try await sending.value
            #expect(done.deliveries.count == 1 && done.failures.isEmpty, "\(done.failures)")
            let resumed = try #require(done.deliveries.first?.resumedAt.first, "no resume was reported")
            #expect(resumed > 0 && resumed < length)
        }
    }

    @Test(.timeLimit(.minutes(1))) func downPastTheHoldTimeFailsWithTheOffset() async throws {
        try await InProcessFabric.with(nodes: 2, cluster: "inproc-down", resumeHoldSeconds: 2, links: .inProcess) {
            fabric in
            let address = try Address("inproc/down")
            _ = try await fabric.engines[1].attachSink(try AddressPattern("inproc/down"))
            try await fabric.waitForEndpoints(address, count: 1)
            fabric.cut(1, afterBytes: 128 << 20, staysDown: true)
            let failure = await #expect(throws: FreightError.self) {
                try await fabric.engines[0].sendFromNode(to: address, length: 1 << 30)
            }
            #expect(failure?.message.contains("did not come back") == true, "\(String(describing: failure))")
            fabric.setDown(1, false)
            #expect(failure?.message.contains("offset") == true, "\(String(describing: failure))")
            for engine in fabric.engines {
                let idle = try await waitUntil {
                    let status = try await engine.statusSnapshot()
                    return status.messagesInFlight == 0 && status.memoryReservedBytes == 0
                }
                #expect(idle, "\(engine.name) still holds a message")
            }
        }
    }

    /// A dark path where only one end heard of it: node 0 hears the stripes node 1 dialed to it break, its own
    /// stripes to node 1 go on in the dark, and node 1 never dials back. Node 0 gives node 1 the time to redial
    /// and then counts its silence as for any link (``LinkSilence``): the link breaks and the message fails after
    /// the hold time, naming the offset, where it once waited for ever.
    @Test(.timeLimit(.minutes(1))) func aLinkWhoseOneHalfBrokeAndTheOtherWentDarkStillFails() async throws {
        try await InProcessFabric.with(
            nodes: 2, cluster: "inproc-half", resumeHoldSeconds: 2, links: .inProcess, linkTimeoutSeconds: 1
        ) { fabric in
            let address = try Address("inproc/half")
            _ = try await fabric.engines[1].attachSink(try AddressPattern("inproc/half"))
            try await fabric.waitForEndpoints(address, count: 1)
            fabric.darken(1, afterBytes: 128 << 20)
            let sending = Task { try await fabric.engines[0].sendFromNode(to: address, length: 1 << 30) }
            while try await fabric.engines[0].statusSnapshot().bytesOut < 128 << 20 {
                try await Task.sleep(for: .milliseconds(20))
            }
            fabric.breakListenerEnds(listener: 0, dialer: 1)
            let failure = await #expect(throws: FreightError.self) { try await sending.value }
            #expect(failure?.message.contains("did not come back") == true, "\(String(describing: failure))")
            #expect(failure?.message.contains("offset") == true, "\(String(describing: failure))")
            fabric.setDown(1, false)
        }
    }

    /// An in-process link whose accepting end does not read until it is told to: the network, both ends, and what
    /// the accepting end collects.
    fileprivate static func linkToAReaderThatDoesNotRead(
        named name: String
    ) async throws -> (InProcessNetwork, Channel, Channel, Collected) {
        let group = MultiThreadedEventLoopGroup.singleton
        let network = InProcessNetwork()
        let received = Collected()
        let serverLoop = group.next()
        let accepted = serverLoop.makePromise(of: Channel.self)
        _ = try await network.listen(name: name, eventLoop: serverLoop) { channel in
            channel.setOption(ChannelOptions.autoRead, value: false).flatMapThrowing {
                try channel.pipeline.syncOperations.addHandler(received)
                accepted.succeed(channel)
            }
        }.get()
        let client = try await network.connect(to: name, from: "writer", eventLoop: group.next()) { channel in
            channel.eventLoop.makeSucceededVoidFuture()
        }.get()
        return (network, client, try await accepted.futureResult.get(), received)
    }

    /// The link alone: a reader that stops reading stops its writer (`isWritable`), writes complete only as the far
    /// end reads them, bytes arrive in order, and a cut closes both ends with an error.
    @Test func aReaderThatStopsHoldsItsWriter() async throws {
        let (network, client, server, received) = try await Self.linkToAReaderThatDoesNotRead(named: "reader")
        let clientLoop = client.eventLoop
        #expect(network.linkCount("reader") == 1)

        let piece = 1 << 20
        let pieces = 8
        let writes = try await clientLoop.submit {
            (0..<pieces).map { index in
                var buffer = client.allocator.buffer(capacity: piece)
                buffer.writeRepeatingByte(UInt8(index), count: piece)
                return client.writeAndFlush(buffer)
            }
        }.get()
        try await Task.sleep(for: .milliseconds(100))
        #expect(!client.isWritable, "8 MiB unread and the writer is still writable")
        #expect(received.bytes.withLock { $0.isEmpty })

        try await server.setOption(ChannelOptions.autoRead, value: true).get()
        for write in writes { try await write.get() }
        let bytes = received.bytes.withLock { $0 }
        #expect(bytes.count == piece * pieces)
        #expect((0..<pieces).allSatisfy { bytes[$0 * piece] == UInt8($0) && bytes[($0 + 1) * piece - 1] == UInt8($0) })
        #expect(try await waitUntil { client.isWritable })

        network.cut("writer")
        try await client.closeFuture.get()
        try await server.closeFuture.get()
        #expect(received.error.withLock { $0 } != nil)
        #expect(network.linkCount("reader") == 0)
        await #expect(throws: (any Error).self) {
            try await network.connect(to: "nobody", from: nil, eventLoop: clientLoop) {
                $0.eventLoop.makeSucceededVoidFuture()
            }.get()
        }
    }

    /// A SMALL body written out of line keeps the read buffer it was sliced from alive until the far end takes it: a
    /// reader that stalls holds at most `Limits.readBuffersKeptAliveBytesMax` of such buffers, later bodies are copied
    /// into their frames, and every message arrives whole once it reads.
    @Test func aStalledReaderKeepsBoundedReadBuffersAlive() async throws {
        let (_, client, server, received) = try await Self.linkToAReaderThatDoesNotRead(named: "stalled")
        let clientLoop = client.eventLoop
        let connection = FrameConnection(channel: client, id: 1)

        // Each body is 16 KiB of a 1 MiB buffer of its own, as a body sliced from a read: 40 of them would keep
        // 40 MiB alive for 640 KiB of bodies.
        let readBytes = 1 << 20
        let bodyBytes = SmallFrames.outOfLineBodyBytesMin
        let sent = (0..<40).map { index in
            var read = ByteBufferAllocator().buffer(capacity: readBytes)
            read.writeRepeatingByte(UInt8(index), count: readBytes)
            let body = read.getSlice(at: 4096, length: bodyBytes)!
            return SmallMessage(
                id: UInt64(index + 1), source: "a/s", destination: "b/d", extras: nil, body: body,
                crc32c: CRC32C.checksum(body))
        }
        #expect(HeldPieces.keptAliveBytes(of: sent[0].body) == readBytes - bodyBytes)
        let kept = try await clientLoop.submit {
            for message in sent { #expect(connection.send(.small([message])) == nil) }
            connection.flushNow()
        }.flatMap {
            clientLoop.scheduleTask(in: .milliseconds(200)) { connection.keptAliveBytes }.futureResult
        }.get()
        #expect(received.bytes.withLock { $0.isEmpty })
        #expect(kept > 0, "no body went out of line")
        #expect(
            kept <= Limits.readBuffersKeptAliveBytesMax, "a stalled reader keeps \(kept) bytes of read buffers alive")

        try await server.setOption(ChannelOptions.autoRead, value: true).get()
        let frameBytes = try sent.reduce(0) { $0 + (try FrameEncoder.encode(.small([$1])).readableBytes) }
        #expect(try await waitUntil { received.bytes.withLock { $0.count } == frameBytes })
        var parser = FrameParser(expectPreface: false)
        var arrived: [SmallMessage] = []
        try parser.feed(ByteBuffer(bytes: received.bytes.withLock { $0 })) { frame in
            if case .small(let messages) = frame { arrived += messages }
        }
        #expect(arrived.map(\.id) == sent.map(\.id))
        #expect(arrived.map(\.body) == sent.map(\.body))
        #expect(try await waitUntil { try await clientLoop.submit { connection.keptAliveBytes }.get() == 0 })
        client.close(promise: nil)
    }
}

/// Collects what a channel reads, and the error it closed with.
private final class Collected: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let bytes = Mutex<[UInt8]>([])
    let error = Mutex<(any Error)?>(nil)

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        bytes.withLock { $0 += buffer.readableBytesView }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.error.withLock { $0 = error }
        context.close(promise: nil)
    }
}

/// Polls `condition` until it holds or `timeout` passes.
private func waitUntil(
    timeout: Duration = .seconds(30), _ condition: () async throws -> Bool
) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return false
}
