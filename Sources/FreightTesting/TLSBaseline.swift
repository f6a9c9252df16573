import Foundation
import FreightCore
import FreightSecurity
import NIOCore
import NIOPosix
import NIOSSL

/// What swift-nio-ssl alone moves over one TLS 1.3 connection on loopback, with the gateways' own contexts: a client
/// writes `bytes` in 1 MiB buffers as fast as the connection takes them, a server counts and drops them. The ceiling
/// a gateway link's TLS is held against (`freight bench --paths gateway`).
public enum TLSBaseline {
    /// Seconds to move `bytes` from a client with `client`'s identity to a server with `server`'s, both on `host`.
    public static func measure(
        bytes: Int64, client: GatewaySecurity, server: GatewaySecurity, host: String = "127.0.0.1"
    ) async throws -> Double {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        do {
            let seconds = try await measure(bytes: bytes, client: client, server: server, host: host, on: group)
            try? await group.shutdownGracefully()
            return seconds
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private static func measure(
        bytes: Int64, client: GatewaySecurity, server: GatewaySecurity, host: String,
        on group: MultiThreadedEventLoopGroup
    ) async throws -> Double {
        let received = ManagedAtomicCounter()
        let done = group.next().makePromise(of: Void.self)
        let listener = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(try server.tlsHandler(accepted: true) { _ in })
                    try channel.pipeline.syncOperations.addHandler(
                        Sink(total: bytes, received: received, done: done))
                }
            }
            .bind(host: host, port: 0).get()
        defer { listener.close(promise: nil) }
        let port = listener.localAddress?.port ?? 0
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(try client.tlsHandler(accepted: false) { _ in })
                }
            }
            .connect(host: host, port: port).get()
        defer { channel.close(promise: nil) }
        var filled = channel.allocator.buffer(capacity: 1 << 20)
        filled.writeRepeatingByte(0x5a, count: 1 << 20)
        let block = filled
        let started = ContinuousClock.now
        try await channel.eventLoop.flatSubmit {
            Writer(channel: channel, block: block, remaining: bytes).start()
        }.get()
        try await done.futureResult.get()
        let elapsed = ContinuousClock.now - started
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    /// A counter the server's loop adds to (one loop writes it).
    final class ManagedAtomicCounter: @unchecked Sendable {
        var value: Int64 = 0
    }

    /// Counts what arrives and drops it; completes `done` at `total`.
    final class Sink: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let total: Int64
        let received: ManagedAtomicCounter
        let done: EventLoopPromise<Void>

        init(total: Int64, received: ManagedAtomicCounter, done: EventLoopPromise<Void>) {
            self.total = total
            self.received = received
            self.done = done
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            received.value += Int64(unwrapInboundIn(data).readableBytes)
            if received.value >= total { done.succeed() }
        }
    }

    /// Writes the block again and again, four buffers in flight, until `remaining` is sent.
    final class Writer: @unchecked Sendable {
        let channel: Channel
        let block: ByteBuffer
        var remaining: Int64
        var outstanding = 0
        let finished: EventLoopPromise<Void>

        init(channel: Channel, block: ByteBuffer, remaining: Int64) {
            self.channel = channel
            self.block = block
            self.remaining = remaining
            self.finished = channel.eventLoop.makePromise()
        }

        func start() -> EventLoopFuture<Void> {
            pump()
            return finished.futureResult
        }

        private func pump() {
            while remaining > 0 && outstanding < 4 {
                let count = Int(min(Int64(block.readableBytes), remaining))
                remaining -= Int64(count)
                outstanding += 1
                let written = channel.eventLoop.makePromise(of: Void.self)
                written.futureResult.whenComplete { [self] result in
                    outstanding -= 1
                    if case .failure(let error) = result { return finished.fail(error) }
                    pump()
                }
                channel.writeAndFlush(block.getSlice(at: block.readerIndex, length: count)!, promise: written)
            }
            if remaining == 0 && outstanding == 0 { finished.succeed() }
        }
    }
}
