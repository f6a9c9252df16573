import Foundation
import FreightCUDA
import FreightClient
import FreightCore
import FreightTesting
import FreightWire
import NIOCore

/// `freight gpu --check`, between nodes (docs/gpu.md, "Between nodes: staged through pinned pools"): a body in GPU
/// 0's memory sent through two nodes of this process to another process (this binary again, `--staged-receive`),
/// which puts it into its own GPU memory; and, in the same run, the same number of bytes from host memory to host
/// memory over the same two nodes — the host-memory app-to-app rate staging is held against.
extension GPUCheck {
    static let stagedAddress = "gpu/staged"
    static let hostAddress = "gpu/host"

    /// Sends `messages` device bodies and `messages` host bodies of ``count`` bytes, in turn, each timed from the send
    /// to its delivery report (which comes once the receiver copied every chunk where it goes); returns the best
    /// rate of each, their ratio, and whether the bytes in the receiver's GPU memory match the sender's.
    func staged(messages: Int) async throws -> [String: Any] {
        let gpu = try CUDAGPU(driver, index: 0)
        let device = try gpu.allocate(count)
        defer { try? gpu.free(device) }
        var host = ByteBuffer()
        host.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
            PatternFill.fill(UnsafeMutableRawBufferPointer(rebasing: raw[..<count]), seed: 31, offset: 0)
            return count
        }
        let stream = try gpu.makeStream()
        try host.withUnsafeReadableBytes {
            try gpu.copy(toDevice: device, from: $0.baseAddress!, count: count, on: stream)
        }
        try gpu.synchronize(stream)
        try gpu.destroy(stream)
        let crc = CRC32C.checksum(host)

        let fabric = try await InProcessFabric.start(nodes: 2, cluster: "gpu-staged")
        do {
            let child = try CheckChild([
                "gpu", "--driver", driver.library, "--staged-receive", fabric.engines[1].configuration.socketPath!,
                "--size", "\(count)", "--messages", "\(messages)",
            ])
            var stagedSeconds: [Double] = []
            var hostSeconds: [Double] = []
            do {
                try await fabric.waitForEndpoints(try Address(Self.stagedAddress), count: 1)
                try await fabric.waitForEndpoints(try Address(Self.hostAddress), count: 1)
                let sender = try await FreightClient.connect(
                    to: .unix(path: fabric.engines[0].configuration.socketPath!), label: "gpu-check",
                    sharedMemory: .required())
                let body = try DeviceBuffer(gpu: gpu, pointer: device, count: count)
                for _ in 0..<messages {
                    stagedSeconds.append(try await Self.timed(sender, Self.stagedAddress, .device(body)))
                    hostSeconds.append(try await Self.timed(sender, Self.hostAddress, .bytes(host)))
                }
                await sender.close()
            } catch {
                child.process.terminate()
                throw error
            }
            let received = try await child.report("received the staged bodies")
            await fabric.stop()
            let staged = Double(count) / stagedSeconds.min()! / 1e9
            let hostRate = Double(count) / hostSeconds.min()! / 1e9
            return [
                "staged_messages": messages,
                "staged_gb_per_s": (staged * 100).rounded() / 100,
                "host_app_to_app_gb_per_s": (hostRate * 100).rounded() / 100,
                "staged_percent_of_host": (staged / hostRate * 1000).rounded() / 10,
                "staged_matches": (received["crc32c"] as? Int).map { UInt32(clamping: $0) } == crc,
                "staged_arrived": received["arrived"] ?? NSNull(),
            ]
        } catch {
            await fabric.stop()
            throw error
        }
    }

    /// Seconds from sending `body` to `address` to its delivery report; throws unless it reached one receiver.
    static func timed(_ sender: FreightClient, _ address: String, _ body: OutgoingBody) async throws -> Double {
        let started = ContinuousClock.now
        let report = try await sender.send(to: address, body: body)
        let took = ContinuousClock.now - started
        guard report.failures.isEmpty, report.deliveries.count == 1 else {
            throw FreightError(
                .internalError, "a body to \(address) was not delivered: \(report.failures.map(\.error))")
        }
        return Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18
    }

    /// The receiving process of ``staged(messages:)``: connects to the node at `socket` naming GPU 0, puts each of
    /// `messages` device bodies into one allocation of its GPU (``IncomingMessage/copy(toDevice:on:)``) and copies
    /// each host body into host memory, all within a few minutes; then returns the CRC32C of what its GPU memory
    /// holds and how the device bodies arrived.
    static func receiveStaged(at socket: String, driver: CUDADriver, count: Int, messages: Int) async throws
        -> [String: Any]
    {
        let gpu = try CUDAGPU(driver, index: 0)
        let client = try await FreightClient.connect(
            to: .unix(path: socket), label: "gpu-check-receiver", sharedMemory: .required(), gpus: [gpu])
        let destination = try gpu.allocate(count)
        defer { try? gpu.free(destination) }
        let host = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
        defer { host.deallocate() }
        let staged = try await client.receive(stagedAddress)
        let plain = try await client.receive(hostAddress)
        let deadline = ContinuousClock.now + .seconds(300)
        var stagedMessages = staged.makeAsyncIterator()
        var plainMessages = plain.makeAsyncIterator()
        var arrival = DeviceArrival()
        for index in 0..<messages {
            guard ContinuousClock.now < deadline, let message = try await stagedMessages.next() else {
                throw FreightError(.timedOut, "received \(index) of \(messages) staged bodies")
            }
            let came = try await message.copy(toDevice: destination, on: gpu)
            arrival.stagedBytes += came.stagedBytes
            arrival.handedOverBytes += came.handedOverBytes
            guard ContinuousClock.now < deadline, let other = try await plainMessages.next() else {
                throw FreightError(.timedOut, "received \(index) of \(messages) host bodies")
            }
            for try await chunk in other.body {
                try chunk.withUnsafeBytes {
                    UnsafeMutableRawBufferPointer(rebasing: host[Int(chunk.offset)...]).copyMemory(from: $0)
                }
            }
        }
        let stream = try gpu.makeStream()
        defer { try? gpu.destroy(stream) }
        try gpu.copy(toHost: host.baseAddress!, from: destination, count: count, on: stream)
        try gpu.synchronize(stream)
        await client.close()
        return [
            "crc32c": Int(CRC32C.checksum(UnsafeRawBufferPointer(host))),
            "arrived": arrival.handedOverBytes == 0 ? "staged" : arrival.stagedBytes == 0 ? "handed-over" : "mixed",
        ]
    }
}
