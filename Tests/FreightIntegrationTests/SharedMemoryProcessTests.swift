import FreightClient
import FreightCore
import FreightTesting
import FreightTransport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Shared memory with a real `freight node` process: pools cross a process boundary over the descriptor link.
@Suite(.serialized) struct SharedMemoryProcessTests {
    /// 1,000 shared-buffer messages between two apps of one node: every region comes back and the node's resident
    /// memory does not grow with the count.
    @Test func thousandSharedMessagesDoNotGrowTheNode() async throws {
        let cluster = try await ProcessCluster.start(nodes: 1)
        defer { cluster.stop() }
        let socket = NodeAddress.unix(path: cluster.node("n1").socket)
        let size = 1 << 20
        let sender = try await FreightClient.connect(
            to: socket, label: "tx", sharedMemory: .required(sendBytes: 4 * size))
        let receiver = try await FreightClient.connect(to: socket, label: "rx", sharedMemory: .required())
        let inbox = try await receiver.receive("shm/many")
        let draining = Task {
            var messages = 0
            var intact = true
            for try await message in inbox {
                for try await chunk in message.body {
                    let ok = try chunk.withUnsafeBytes { PatternFill.check($0, seed: 9, offset: Int64(chunk.offset)) }
                    intact = intact && ok && chunk.isShared
                }
                messages += 1
                if messages == 1000 { break }
            }
            return (messages, intact)
        }
        try await Task.sleep(for: .milliseconds(200))
        let buffer = try await sender.allocate(size)
        buffer.withUnsafeMutableBytes { PatternFill.fill($0, seed: 9, offset: 0) }

        var afterWarmUp: UInt64 = 0
        for index in 1...1000 {
            let report = try await sender.send(to: "shm/many", body: .shared(buffer))
            #expect(report.deliveries.count == 1)
            if index == 100 { afterWarmUp = try await sender.status().rssBytes }
        }
        #expect(afterWarmUp > 0, "the node reports its resident memory")
        let (messages, intact) = try await draining.value
        #expect(messages == 1000 && intact)
        let status = try await sender.status()
        let growth = Int64(status.rssBytes) - Int64(afterWarmUp)
        #expect(growth < 4 << 20, "node RSS grew by \(growth) bytes over 900 messages")
        #expect(status.messagesDelivered >= 1000)
        var lent = status.sharedRegionsLent
        for _ in 0..<50 where lent > 0 {
            try await Task.sleep(for: .milliseconds(20))
            lent = try await sender.status().sharedRegionsLent
        }
        #expect(lent == 0)
        await sender.close()
        await receiver.close()
    }

    /// Hostile descriptor links are refused with a reason and change nothing: garbage, and an attach with a token
    /// no session has (carrying pipes, not pools). The node goes on serving shared memory to real apps.
    @Test func hostileDescriptorLinksAreRefused() async throws {
        let cluster = try await ProcessCluster.start(nodes: 1)
        defer { cluster.stop() }
        let path = cluster.node("n1").socket

        func exchange(_ bytes: [UInt8], fds: [Int32]) -> DescriptorLink.Message? {
            let link = DescriptorLink.connect(socketPath: path)
            guard link >= 0 else { return nil }
            defer { close(link) }
            guard DescriptorLink.send(bytes, fds: fds, on: link, wait: true),
                let answer = DescriptorLink.receive(on: link)
            else { return nil }
            return try? DescriptorLink.decodeMessage(answer.bytes)
        }
        func isRefused(_ message: DescriptorLink.Message?) -> Bool {
            if case .refused = message { true } else { false }
        }

        var pipes: [Int32] = [-1, -1]
        #expect(pipe(&pipes) == 0)
        defer { for fd in pipes { close(fd) } }
        #expect(isRefused(exchange(Array("hello".utf8), fds: [])))
        let attach = DescriptorLink.encode(DescriptorLink.Attach(token: 42, sendBytes: 1 << 20, receiveBytes: 1 << 20))
        #expect(isRefused(exchange(attach, fds: pipes)), "unknown token")

        let app = try await FreightClient.connect(to: .unix(path: path), label: "app", sharedMemory: .off)
        let status = try await app.status()
        #expect(status.sharedPoolBytes == 0)
        let real = try await FreightClient.connect(to: .unix(path: path), label: "real", sharedMemory: .required())
        let shares = await real.usesSharedMemory
        #expect(shares, "real apps still get shared memory")
        #expect(try await app.status().sharedPoolBytes == UInt64(2 * Limits.sharedPoolHalfBytesDefault))
        await real.close()
        await app.close()
    }

    /// Descriptor links that never send their attach keep no one waiting: a real app attaches its pools at once
    /// beside sixteen idle links, and the idle ones are refused when the attach time passes.
    @Test func idleDescriptorLinksDelayNoOne() async throws {
        let cluster = try await ProcessCluster.start(nodes: 1)
        defer { cluster.stop() }
        let path = cluster.node("n1").socket
        let idle = (0..<16).map { _ in DescriptorLink.connect(socketPath: path) }
        defer { for link in idle where link >= 0 { close(link) } }
        #expect(idle.allSatisfy { $0 >= 0 })
        let started = ContinuousClock.now
        let app = try await FreightClient.connect(to: .unix(path: path), label: "prompt", sharedMemory: .required())
        let took = ContinuousClock.now - started
        let shares = await app.usesSharedMemory
        #expect(shares)
        #expect(took < .seconds(1), "the attach waited \(took) behind idle links")
        await app.close()
        try await Task.sleep(for: .milliseconds(DescriptorListener.attachTimeoutMillis + 500))
        let refused = idle.filter { link in
            guard let answer = DescriptorLink.receive(on: link),
                case .refused(let reason)? = try? DescriptorLink.decodeMessage(answer.bytes)
            else { return false }
            return reason.contains("no attach message")
        }
        #expect(refused.count == idle.count, "idle links refused: \(refused.count) of \(idle.count)")
    }
}
