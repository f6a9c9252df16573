import Foundation
import FreightCore
import FreightTransport
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// Socket settings of Freight's links, read back from the kernel.
@Suite struct SocketTuningTests {
    /// Both ends of a Unix-socket link (an app and its node) send through a buffer that holds a whole batch of small
    /// messages; the kernel's default holds less than one, and the two parties then woke each other inside every
    /// batch.
    @Test func unixLinksHoldABatchOfSmallMessagesEachWay() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let path = NSTemporaryDirectory() + "freight-tuning-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        let links = SocketLinks(tuning: .default)
        let accepted = AcceptedChannel()
        var listener: (any LinkListener)?
        var client: Channel?
        do {
            listener = try await links.listen(on: .unix(path: path), eventLoop: group.next()) { channel in
                accepted.channel.withLock { $0 = channel }
                return channel.eventLoop.makeSucceededVoidFuture()
            }.get()
            client = try await links.connect(
                to: .unix(path: path), from: nil, timeout: .seconds(5), eventLoop: group.next()
            ) { $0.eventLoop.makeSucceededVoidFuture() }.get()
            let batch = Limits.smallBatchBytesMax
            #expect(try await Self.sendBuffer(of: client!) >= batch)
            // The accepting side sets its options once the link is admitted, as the client connects.
            var server = 0
            let deadline = ContinuousClock.now + .seconds(5)
            while server < batch, ContinuousClock.now < deadline {
                if let channel = accepted.channel.withLock({ $0 }) { server = try await Self.sendBuffer(of: channel) }
                if server < batch { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(server >= batch)
        } catch {
            Issue.record(error)
        }
        try? await client?.close().get()
        try? await listener?.close().get()
        try? FileManager.default.removeItem(atPath: path)
        try await group.shutdownGracefully()
    }

    private static func sendBuffer(of channel: Channel) async throws -> Int {
        Int(try await channel.getOption(ChannelOptions.socketOption(.so_sndbuf)).get())
    }
}

private final class AcceptedChannel: Sendable {
    let channel = Mutex<Channel?>(nil)
}
