import FreightCUDA
import FreightClient
import FreightCore
import FreightNode
import FreightTesting
import FreightTransport
import NIOCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Bodies in GPU memory handed over in place between two apps of one node (docs/gpu.md, "Same GPU, two processes:
/// CUDA IPC"), against the stand-in driver (Tests/StandInCUDA: host memory behind the driver API, each allocation a
/// shared-memory object another process or mapping opens from its IPC handle). Real nodes and apps over real Unix
/// sockets and descriptor links; what it shows of a GPU is the protocol, not a GPU's figures.
@Suite(.serialized) struct DeviceBodyTests {
    static let mebibyte = 1 << 20

    static func gpu() throws -> CUDAGPU {
        try CUDAGPU(try CUDADriver.load(library: try StandInCUDA.library()), index: 0)
    }

    /// `count` bytes of device memory filled with the pattern of `seed` (through the driver's copy), and the bytes.
    static func filled(_ gpu: CUDAGPU, count: Int, seed: UInt64) throws -> (pointer: UInt64, bytes: [UInt8]) {
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { PatternFill.fill($0, seed: seed, offset: 0) }
        let pointer = try gpu.allocate(count)
        let stream = try gpu.makeStream()
        try bytes.withUnsafeBytes { try gpu.copy(toDevice: pointer, from: $0.baseAddress!, count: count, on: stream) }
        try gpu.synchronize(stream)
        try gpu.destroy(stream)
        return (pointer, bytes)
    }

    /// The bytes of a device region, copied to the host through the driver.
    static func read(_ gpu: CUDAGPU, _ region: DeviceRegion) throws -> [UInt8] {
        try read(gpu, pointer: region.pointer, count: region.count)
    }

    static func read(_ gpu: CUDAGPU, pointer: UInt64, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let stream = try gpu.makeStream()
        try bytes.withUnsafeMutableBytes {
            try gpu.copy(toHost: $0.baseAddress!, from: pointer, count: count, on: stream)
        }
        try gpu.synchronize(stream)
        try gpu.destroy(stream)
        return bytes
    }

    static func regionsLent(_ engine: NodeEngine) async throws -> UInt64 {
        try await engine.statusSnapshot().sharedRegionsLent
    }

    /// A body in device memory reaches a receiver that opens handles on its GPU as regions of that GPU's memory,
    /// opened from the allocation's IPC handle (another mapping of the same bytes, not the sender's pointer); a second message from the same allocation reuses the lend; the regions come back
    /// once the receiver drops its chunks; a chunk read as host bytes says where it lies.
    @Test func aDeviceBodyIsHandedOverInPlace() async throws {
        let gpu = try Self.gpu()
        try await InProcessFabric.with(nodes: 1, cluster: "gpu-ipc") { fabric in
            let receiver = try await FreightClient.connect(
                to: fabric.socket(0), label: "rx", sharedMemory: .required(), gpus: [gpu])
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx", sharedMemory: .required())
            let inbox = try await receiver.receive("gpu/kv")
            try await fabric.waitForEndpoints(try Address("gpu/kv"), count: 1)

            let size = 48 * Self.mebibyte
            let (allocation, bytes) = try Self.filled(gpu, count: size, seed: 23)
            defer { try? gpu.free(allocation) }
            // The body starts 1 MiB into its allocation: the lend names the whole allocation, the regions the body.
            let start = Self.mebibyte
            let body = try DeviceBuffer(gpu: gpu, pointer: allocation + UInt64(start), count: 32 * Self.mebibyte)
            var messages = inbox.makeAsyncIterator()
            for round in 0..<2 {
                let sending = Task { try await sender.send(to: "gpu/kv", body: .device(body)) }
                let message = try #require(try await messages.next())
                var chunks: [BodyChunk] = []
                for try await chunk in message.body { chunks.append(chunk) }
                let report = try await sending.value
                #expect(report.failures.isEmpty && report.bytes == UInt64(body.count), "round \(round): \(report)")
                var received = [UInt8](repeating: 0, count: body.count)
                for chunk in chunks {
                    let region = try #require(chunk.device, "round \(round): a chunk in host memory")
                    #expect(region.gpu == gpu.uuid)
                    #expect(region.pointer < allocation || region.pointer >= allocation + UInt64(size))
                    let copied = try Self.read(gpu, region)
                    received.replaceSubrange(Int(chunk.offset)..<Int(chunk.offset) + chunk.count, with: copied)
                }
                #expect(received == Array(bytes[start..<start + body.count]), "round \(round)")
                #expect(
                    throws: FreightError.self, "read as host bytes, a chunk says it is in device memory",
                    performing: { try chunks.first?.withUnsafeBytes { $0.count } })
                chunks = []
                let back = try await eventually { try await Self.regionsLent(fabric.engines[0]) == 0 }
                #expect(back, "round \(round): every region lent came back")
            }
            await sender.close()
            await receiver.close()
        }
    }

    /// An app that receives a device body it sent itself reads it where it lies, at its own pointer (a handle cannot
    /// be opened in the process that made it).
    @Test func anAppReceivesItsOwnDeviceBodyInPlace() async throws {
        let gpu = try Self.gpu()
        try await InProcessFabric.with(nodes: 1, cluster: "gpu-self") { fabric in
            let app = try await FreightClient.connect(to: fabric.socket(0), label: "self", sharedMemory: .required())
            let inbox = try await app.receive("gpu/self")
            try await fabric.waitForEndpoints(try Address("gpu/self"), count: 1)
            let (allocation, bytes) = try Self.filled(gpu, count: 4 * Self.mebibyte, seed: 7)
            defer { try? gpu.free(allocation) }
            let body = try DeviceBuffer(gpu: gpu, pointer: allocation + 4096, count: Self.mebibyte)
            let sending = Task { try await app.send(to: "gpu/self", body: .device(body)) }
            var messages = inbox.makeAsyncIterator()
            let message = try #require(try await messages.next())
            var regions: [DeviceRegion] = []
            for try await chunk in message.body { regions.append(try #require(chunk.device)) }
            let report = try await sending.value
            #expect(report.failures.isEmpty && report.deliveries.count == 1, "\(report)")
            #expect(regions.first?.pointer == allocation + 4096, "its own memory, where it lies")
            let read = try regions.map { try Self.read(gpu, $0) }.joined()
            #expect(Array(read) == Array(bytes[4096..<4096 + Self.mebibyte]))
            await app.close()
        }
    }

    /// Receivers that cannot open the body's GPU memory get it staged through host memory (docs/gpu.md): an app
    /// of the node that did not connect with that GPU, an app on another node, and a fan-out that mixes an app
    /// that could take a hand-over with one on another node. Each reads host chunks with the very bytes of the
    /// device body (12 MiB from 1 MiB into its allocation), and every region of the sender's pool comes back.
    @Test func receiversThatCannotOpenTheGPUGetTheBodyStaged() async throws {
        let gpu = try Self.gpu()
        try await InProcessFabric.with(nodes: 2, cluster: "gpu-staged") { fabric in
            let near = try await FreightClient.connect(to: fabric.socket(0), label: "near", sharedMemory: .required())
            let nearGPU = try await FreightClient.connect(
                to: fabric.socket(0), label: "near-gpu", sharedMemory: .required(), gpus: [gpu])
            let far = try await FreightClient.connect(
                to: fabric.socket(1), label: "far", sharedMemory: .required(), gpus: [gpu])
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx", sharedMemory: .required())
            let inboxes = [
                try await near.receive("gpu/near"), try await far.receive("gpu/far"),
                try await nearGPU.receive("gpu/mix"), try await far.receive("gpu/mix"),
            ]
            try await fabric.waitForEndpoints(try Address("gpu/far"), count: 1)
            try await fabric.waitForEndpoints(try Address("gpu/mix"), count: 2)
            let count = 12 * Self.mebibyte
            let (allocation, bytes) = try Self.filled(gpu, count: count + 2 * Self.mebibyte, seed: 5)
            defer { try? gpu.free(allocation) }
            let expected = Array(bytes[Self.mebibyte..<(Self.mebibyte + count)])
            let body = try DeviceBuffer(gpu: gpu, pointer: allocation + UInt64(Self.mebibyte), count: count)
            // What each inbox's first message held: its bytes, and whether any chunk came as device memory.
            let reading = inboxes.map { inbox in
                Task { () throws -> (bytes: [UInt8], device: Bool) in
                    var messages = inbox.makeAsyncIterator()
                    guard let message = try await messages.next() else { return ([], false) }
                    var read = [UInt8](repeating: 0, count: Int(message.length))
                    var device = false
                    for try await chunk in message.body {
                        if chunk.device != nil {
                            device = true
                            continue
                        }
                        try chunk.withUnsafeBytes { raw in
                            read.withUnsafeMutableBytes {
                                UnsafeMutableRawBufferPointer(rebasing: $0[Int(chunk.offset)...]).copyMemory(from: raw)
                            }
                        }
                    }
                    return (read, device)
                }
            }
            for address in ["gpu/near", "gpu/far", "gpu/mix"] {
                let report = try await sender.send(to: address, body: .device(body))
                #expect(report.failures.isEmpty, "\(address): \(report.failures.map(\.error.message))")
                #expect(report.deliveries.count == (address == "gpu/mix" ? 2 : 1), "\(address)")
            }
            for (index, task) in reading.enumerated() {
                let (read, device) = try await task.value
                #expect(!device, "receiver \(index) got host chunks")
                #expect(read == expected, "receiver \(index) read the device body's bytes")
            }
            let back = try await eventually { try await Self.regionsLent(fabric.engines[0]) == 0 }
            #expect(back)
            // The node goes on: a host body still reaches the same receiver.
            let plainInbox = try await near.receive("gpu/plain")
            let draining = Task { for try await message in plainInbox { _ = try? await message.drain() } }
            defer { draining.cancel() }
            let plain = try await sender.send(to: "gpu/plain", body: .pattern(seed: 1, length: 1 << 20))
            #expect(plain.failures.isEmpty && plain.deliveries.count == 1)
            await sender.close()
            await near.close()
            await nearGPU.close()
            await far.close()
        }
    }

    /// Staged bodies sent at once through a send pool far smaller than they are: their device → host copies are
    /// queued as regions free up and lent as each completes, so all three arrive whole and byte for byte; one sent
    /// to a receiver that fails it midway ends with the reason, and every region of the pool comes back for the
    /// next.
    @Test(.timeLimit(.minutes(1))) func stagedBodiesShareASmallPoolAndAFailedOneFreesItsRegions() async throws {
        let gpu = try Self.gpu()
        try await InProcessFabric.with(nodes: 2, cluster: "gpu-staged-pool") { fabric in
            let far = try await FreightClient.connect(to: fabric.socket(1), label: "far", sharedMemory: .required())
            let sender = try await FreightClient.connect(
                to: fabric.socket(0), label: "tx", sharedMemory: .required(sendBytes: 4 * Self.mebibyte))
            let inbox = try await far.receive("gpu/pool")
            let failing = try await far.receive("gpu/pool-fail")
            try await fabric.waitForEndpoints(try Address("gpu/pool"), count: 1)
            try await fabric.waitForEndpoints(try Address("gpu/pool-fail"), count: 1)
            let count = 24 * Self.mebibyte
            let (allocation, bytes) = try Self.filled(gpu, count: count, seed: 17)
            defer { try? gpu.free(allocation) }
            let body = try DeviceBuffer(gpu: gpu, pointer: allocation, count: count)
            let reading = Task { () throws -> [Bool] in
                var matches: [Bool] = []
                for try await message in inbox {
                    var read = [UInt8](repeating: 0, count: Int(message.length))
                    for try await chunk in message.body {
                        try chunk.withUnsafeBytes { raw in
                            read.withUnsafeMutableBytes {
                                UnsafeMutableRawBufferPointer(rebasing: $0[Int(chunk.offset)...]).copyMemory(from: raw)
                            }
                        }
                    }
                    matches.append(read == bytes)
                    if matches.count == 4 { break }
                }
                return matches
            }
            let refusing = Task {
                for try await message in failing {
                    var iterator = message.body.makeAsyncIterator()
                    _ = try await iterator.next()
                    message.fail(FreightError(.invalidArgument, "this receiver takes no more"))
                }
            }
            defer { refusing.cancel() }
            let reports = try await withThrowingTaskGroup(of: DeliveryReport.self) { group in
                for _ in 0..<3 { group.addTask { try await sender.send(to: "gpu/pool", body: .device(body)) } }
                var reports: [DeliveryReport] = []
                for try await report in group { reports.append(report) }
                return reports
            }
            #expect(reports.allSatisfy { $0.failures.isEmpty && $0.deliveries.count == 1 }, "\(reports)")
            let failed = await #expect(throws: FreightError.self) {
                try await sender.send(to: "gpu/pool-fail", body: .device(body))
            }
            #expect(failed?.message.contains("takes no more") == true, "\(String(describing: failed))")
            // The pool is whole again: a body as large as it goes through at once.
            let back = try await eventually { try await Self.regionsLent(fabric.engines[0]) == 0 }
            #expect(back)
            let again = try await sender.send(to: "gpu/pool", body: .device(body))
            #expect(again.failures.isEmpty)
            #expect(try await reading.value == [true, true, true, true])
            await sender.close()
            await far.close()
        }
    }

    /// `IncomingMessage.copy(toDevice:on:)` puts a body into the receiver's GPU memory whichever way it came: a
    /// hand-over on the same node (device to device) and a staged body from another node (host to device, from the
    /// receive pool), 20 MiB each, byte for byte; the arrival says which, and every region goes back.
    @Test func aBodyIsCopiedIntoDeviceMemoryWhicheverWayItCame() async throws {
        let gpu = try Self.gpu()
        try await InProcessFabric.with(nodes: 2, cluster: "gpu-copy") { fabric in
            let near = try await FreightClient.connect(
                to: fabric.socket(0), label: "near", sharedMemory: .required(), gpus: [gpu])
            let far = try await FreightClient.connect(
                to: fabric.socket(1), label: "far", sharedMemory: .required(), gpus: [gpu])
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx", sharedMemory: .required())
            let count = 20 * Self.mebibyte
            let (allocation, bytes) = try Self.filled(gpu, count: count, seed: 13)
            defer { try? gpu.free(allocation) }
            let body = try DeviceBuffer(gpu: gpu, pointer: allocation, count: count)
            for (client, address, node) in [(near, "gpu/copy-near", 0), (far, "gpu/copy-far", 1)] {
                let inbox = try await client.receive(address)
                try await fabric.waitForEndpoints(try Address(address), count: 1)
                let destination = try gpu.allocate(count)
                defer { try? gpu.free(destination) }
                let receiving = Task { () throws -> DeviceArrival in
                    var messages = inbox.makeAsyncIterator()
                    let message = try #require(try await messages.next())
                    return try await message.copy(toDevice: destination, on: gpu)
                }
                let report = try await sender.send(to: address, body: .device(body))
                #expect(report.failures.isEmpty && report.deliveries.count == 1, "\(address)")
                let arrival = try await receiving.value
                let expected =
                    node == 0
                    ? DeviceArrival(handedOverBytes: UInt64(count), stagedBytes: 0)
                    : DeviceArrival(handedOverBytes: 0, stagedBytes: UInt64(count))
                #expect(arrival == expected, "\(address): \(arrival)")
                let copied = try Self.read(gpu, pointer: destination, count: count)
                #expect(copied == bytes, "\(address): the bytes in device memory")
            }
            let back = try await eventually { try await Self.regionsLent(fabric.engines[0]) == 0 }
            #expect(back)
            await sender.close()
            await near.close()
            await far.close()
        }
    }

    /// A receiver that goes away holding device chunks has its holds dropped by the node, and a sender that goes
    /// away has its allocation withdrawn once nothing of it is out: neither keeps a region lent.
    @Test func departedAppsLeaveNoDeviceRegionLent() async throws {
        let gpu = try Self.gpu()
        try await InProcessFabric.with(nodes: 1, cluster: "gpu-gone") { fabric in
            let receiver = try await FreightClient.connect(
                to: fabric.socket(0), label: "rx", sharedMemory: .required(), gpus: [gpu])
            let sender = try await FreightClient.connect(to: fabric.socket(0), label: "tx", sharedMemory: .required())
            let inbox = try await receiver.receive("gpu/gone")
            try await fabric.waitForEndpoints(try Address("gpu/gone"), count: 1)
            let (allocation, _) = try Self.filled(gpu, count: 8 * Self.mebibyte, seed: 9)
            defer { try? gpu.free(allocation) }
            let body = try DeviceBuffer(gpu: gpu, pointer: allocation, count: 8 * Self.mebibyte)
            let sending = Task { try? await sender.send(to: "gpu/gone", body: .device(body)) }
            var messages = inbox.makeAsyncIterator()
            let message = try #require(try await messages.next())
            var iterator = message.body.makeAsyncIterator()
            let held = try #require(try await iterator.next())
            #expect(held.device != nil)
            #expect(try await Self.regionsLent(fabric.engines[0]) > 0)
            await receiver.close()
            _ = await sending.value
            let back = try await eventually { try await Self.regionsLent(fabric.engines[0]) == 0 }
            #expect(back, "the departed receiver's holds were dropped")
            _ = held
            await sender.close()
        }
    }

    /// A device attach on the descriptor link from no app of the node is refused with the reason, and the node
    /// goes on lending to its apps.
    @Test func aDeviceAttachFromAStrangerIsRefused() async throws {
        try await InProcessFabric.with(nodes: 1, cluster: "gpu-stranger") { fabric in
            guard case .unix(let path) = fabric.socket(0) else { throw FreightError(.internalError, "no socket") }
            let link = DescriptorLink.connect(socketPath: path)
            #expect(link >= 0)
            defer { close(link) }
            let attach = DescriptorLink.DeviceAttach(
                token: 12345, bytes: 1 << 20, gpu: Array("freight-stand-in".utf8),
                handle: [UInt8](repeating: 1, count: 64))
            #expect(DescriptorLink.send(DescriptorLink.encode(attach), on: link, wait: true))
            let answer = try #require(DescriptorLink.receive(on: link))
            let message = try DescriptorLink.decodeMessage(answer.bytes)
            guard case .refused(let reason) = message else {
                Issue.record("a stranger's device attach was answered \(message)")
                return
            }
            #expect(reason.contains("no app session"), "\(reason)")
            #expect(try await Self.regionsLent(fabric.engines[0]) == 0)
        }
    }

    /// Polls as the shared-memory tests do.
    func eventually(_ condition: () async throws -> Bool) async rethrows -> Bool {
        try await SharedMemoryTests().eventually(condition)
    }
}
