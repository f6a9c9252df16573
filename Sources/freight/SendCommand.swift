import ArgumentParser
import Foundation
import FreightCUDA
import FreightClient
import FreightCore
import FreightTransport

struct SendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "send", abstract: "Send messages to an address.")

    @Argument(help: "The destination address.")
    var address: String
    @Option(name: .customLong("file"), help: "Send this file as the body.")
    var file: String?
    @Option(name: .customLong("size"), help: "Send a generated body of this size (4096, 64KiB, 1GiB).")
    var size: String?
    @Option(
        name: .customLong("count"),
        help: "How many messages to send; with more than one, a last line gives their rate (messages/s, MB/s).")
    var count = 1
    @Option(
        name: .customLong("parallel"),
        help: """
            How many of the --count messages are in flight at once (no progress bar). Default: for small bodies \
            (up to 64 KiB) as many as half a receiving app's eager budget takes, at most 1024; up to 1 MiB as \
            many as 64 MiB holds, at most 64; one for larger ones.
            """)
    var parallel: Int?
    @Option(name: .customLong("chunk-size"), help: "Body chunk size (64KiB...64MiB).")
    var chunkSize = ByteCount.format(Int64(Limits.chunkBytesDefault))
    @Option(name: .customLong("seed"), help: "Seed of a generated body; receivers can check it with --check-seed.")
    var seed: UInt64 = 1
    @Option(name: .customLong("label"), help: "This app's label, shown to receivers.")
    var label = "send"
    @Option(
        name: .customLong("gpu"),
        help: "The GPU this body belongs to: the node sends it on that GPU's rail-aligned NIC (docs/topology.md).")
    var gpu: Int?
    @Flag(
        name: .customLong("device"),
        help: """
            Put the generated body in the memory of the --gpu (0 when not given) and send it from there: apps of \
            this node that open that GPU (freight recv --gpu) get it in place, over CUDA IPC (docs/gpu.md).
            """)
    var device = false
    @Option(name: .customLong("cuda-driver"), help: "The CUDA driver library --device opens.")
    var cudaDriver = "libcuda.so.1"
    @OptionGroup var via: ViaOption
    @OptionGroup var output: OutputOptions

    func run() async throws {
        MemoryTuning.apply()
        do {
            try await Telemetry.running(serviceName: "freight-send") { [self] in try await send() }
        } catch {
            fail(error)
        }
    }

    private func send() async throws {
        do {
            var body: OutgoingBody
            switch (file, size) {
            case (let path?, nil): body = .file(path: path)
            case (nil, let size?): body = .pattern(seed: seed, length: try ByteCount.parse(size))
            default: throw FreightError(.invalidArgument, "give exactly one of --file PATH or --size BYTES")
            }
            var placed: PlacedBody?
            if device {
                guard case .pattern(let seed, let length) = body else {
                    throw FreightError(.invalidArgument, "--device sends a generated body: give --size, not --file")
                }
                let gpu = try CUDAGPU(try CUDADriver.load(library: cudaDriver), index: gpu ?? 0)
                placed = try PlacedBody(gpu: gpu, seed: seed, length: Int(length))
                body = .device(placed!.buffer)
            }
            defer { placed?.free() }
            guard count >= 1 else { throw FreightError(.invalidArgument, "--count must be at least 1") }
            let parallel = min(count, self.parallel ?? Self.defaultParallel(Self.length(of: body)))
            guard (1...Limits.messagesPerConnectionMax).contains(parallel) else {
                throw FreightError(.invalidArgument, "--parallel must be 1...\(Limits.messagesPerConnectionMax)")
            }
            _ = try Address(address)
            let chunkBytes = Int(try ByteCount.parse(chunkSize))
            var attributes: [String: String] = file == nil ? ["freight-seed": "\(seed)"] : [:]
            if let gpu {
                guard (0..<Limits.topologyIndexMax).contains(gpu) else {
                    throw FreightError(.invalidArgument, "--gpu \(gpu) is out of range")
                }
                attributes[Limits.gpuAttribute] = "\(gpu)"
            }
            let client = try await FreightClient.connect(
                to: try via.address(), label: label, token: via.token,
                sharedMemory: try via.sharedMemory(
                    sending: device ? 0 : Int64(Self.length(of: body)) * Int64(min(count, parallel))))
            let options = SendOptions(attributes: attributes, chunkBytes: chunkBytes)
            // With OTEL_* set, every message joins this command's span (docs/observability.md).
            try await Telemetry.span("freight send \(address)", ofKind: .producer) {
                if count > 1 {
                    try await sendMany(client, body: body, options: options, parallel: parallel)
                } else {
                    try await sendOne(client, body: body, options: options)
                }
            }
            await client.close()
        }
    }

    static func length(of body: OutgoingBody) -> UInt64 {
        switch body {
        case .pattern(_, let length): UInt64(length)
        case .file(let path): (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? UInt64) ?? 0
        case .bytes(let buffer): UInt64(buffer.readableBytes)
        case .repeating(_, let length), .repeatingShared(_, let length), .stream(_, let length): UInt64(length)
        case .shared(let buffer): UInt64(buffer.count)
        case .device(let buffer): UInt64(buffer.count)
        }
    }

    /// One message, with a progress bar on a terminal.
    private func sendOne(_ client: FreightClient, body: OutgoingBody, options: SendOptions) async throws {
        let bar = ProgressBar(total: Self.length(of: body), label: "sending")
        let drawing = Task { await bar.run() }
        var options = options
        options.onProgress = { bar.update($0) }
        let report: DeliveryReport
        do {
            report = try await client.send(to: address, body: body, options: options)
        } catch {
            drawing.cancel()
            await drawing.value
            throw error
        }
        drawing.cancel()
        await drawing.value
        printReport(report)
    }

    /// Messages in flight at once when `--parallel` is not given: as the bench keeps them
    /// (``Limits/inFlightDefault(bodyBytes:receiverEagerBytes:)``) for bodies up to 1 MiB, so that many small messages pipeline; one at
    /// a time for larger ones.
    static func defaultParallel(_ length: UInt64) -> Int {
        length <= 1 << 20 ? Limits.inFlightDefault(bodyBytes: length) : 1
    }

    /// Small messages sent per batch (each confirmed on its own) when many are sent.
    static let batchMax = 64

    /// Reports printed one per message up to this many messages (on a terminal; `--json` prints every one); past
    /// it, only the last line.
    static let reportsPrintedMax = 1000

    /// `count` messages, `parallel` of them in flight at once (as many senders, each sending its share in turn);
    /// each report printed as it ends (with `--json`, or up to ``reportsPrintedMax`` messages), then one line with the
    /// rate. The first
    /// failure ends the command once the messages in flight have ended.
    private func sendMany(_ client: FreightClient, body: OutgoingBody, options: SendOptions, parallel: Int)
        async throws
    {
        let printsEach = output.json || count <= Self.reportsPrintedMax
        let started = ContinuousClock.now
        let cpu = ProcessStats.cpuSeconds()
        let (total, address) = (count, self.address)
        // The senders run on the client's thread (no hop between threads per message) unless each report is
        // printed, which may block on standard output.
        let executor = printsEach ? nil : client.executor
        // Small bodies go in batches (``FreightClient/send(_:)``), each message still confirmed on its own: the
        // sending task then wakes once per batch, not once per message.
        let perBatch = Self.length(of: body) <= UInt64(Limits.smallBodyBytesMax) ? min(Self.batchMax, parallel) : 1
        let senders = max(1, parallel / perBatch)
        let failure = try await withThrowingTaskGroup(of: (any Error)?.self) { group in
            for worker in 0..<senders {
                let share = total / senders + (worker < total % senders ? 1 : 0)
                group.addTask(executorPreference: executor) {
                    var left = share
                    while left > 0 {
                        do {
                            if perBatch == 1 {
                                let report = try await client.send(to: address, body: body, options: options)
                                if printsEach { printReport(report) }
                                left -= 1
                                continue
                            }
                            let batch = min(perBatch, left)
                            let message = OutgoingMessage(to: address, body: body, options: options)
                            for outcome in try await client.send(Array(repeating: message, count: batch)) {
                                let report = try outcome.get()
                                if printsEach { printReport(report) }
                            }
                            left -= batch
                        } catch {
                            return error
                        }
                    }
                    return nil
                }
            }
            var first: (any Error)?
            for try await outcome in group where first == nil { first = outcome }
            return first
        }
        if let failure { throw failure }
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let length = Self.length(of: body)
        let bytes = Double(length) * Double(count)
        let rate = Double(count) / seconds
        if output.json {
            printJSON([
                "event": "sent", "address": address, "messages": count, "bytes": Int(bytes), "seconds": seconds,
                "messages_per_s": rate, "mbps": bytes / seconds / 1e6, "in_flight": parallel,
                "cpu_seconds": ProcessStats.cpuSeconds() - cpu,
            ])
        } else {
            printLine(
                "sent \(count) messages of \(ByteCount.format(Int64(length))) to \(address), \(parallel) in flight, every one delivered, in \(seconds.formatted(decimals: 3)) s: \(rate.formatted(decimals: 0)) messages/s, \((bytes / seconds / 1e6).formatted(decimals: 1)) MB/s"
            )
        }
    }

    private func printReport(_ report: DeliveryReport) {
        if output.json {
            printJSON([
                "event": "delivered",
                "id": String(report.messageID, radix: 16),
                "address": report.destination,
                "bytes": report.bytes,
                "seconds": report.seconds,
                "mbps": report.megabytesPerSecond,
                "deliveries": report.deliveries.map {
                    [
                        "node": $0.node, "endpoint": $0.endpointID, "address": $0.address, "app": $0.app,
                        "path": $0.path,
                        "resumed_at": $0.resumedAt,
                    ] as [String: Any]
                },
                "failures": report.failures.map {
                    ["node": $0.node, "endpoint": $0.endpointID, "reason": $0.error.message, "acked": $0.ackedBytes]
                        as [String: Any]
                },
                "peak_rss_bytes": ProcessStats.peakResidentBytes(),
            ])
        } else {
            let receivers = report.deliveries.map { "\($0.app)@\($0.node)" }.joined(separator: ", ")
            var line =
                "delivered \(ByteCount.format(Int64(report.bytes))) to \(report.destination) → \(receivers) via \(report.route)"
            line +=
                " in \(report.seconds.formatted(decimals: 3)) s (\(report.megabytesPerSecond.formatted(decimals: 0)) MB/s)"
            let resumes = Set(report.deliveries.flatMap(\.resumedAt)).sorted()
            if !resumes.isEmpty {
                line += ", resumed after a broken link at offset \(resumes.map(String.init).joined(separator: ", "))"
            }
            printLine(line)
            for failure in report.failures {
                printLine("  not delivered to endpoint \(failure.endpointID)@\(failure.node): \(failure.error.message)")
            }
        }
    }
}

/// A generated body put in a GPU's memory for `freight send --device`: filled in host memory a slice at a time (at
/// most 64 MiB of host memory whatever its length) and copied over.
struct PlacedBody {
    static let sliceBytes = 64 << 20
    let gpu: CUDAGPU
    let buffer: DeviceBuffer

    init(gpu: CUDAGPU, seed: UInt64, length: Int) throws {
        guard length > 0 else { throw FreightError(.invalidArgument, "--device needs a body of 1 byte or more") }
        let pointer = try gpu.allocate(length)
        do {
            try Self.bySlices(length: length, on: gpu) { part, offset, stream in
                PatternFill.fill(part, seed: seed, offset: Int64(offset))
                try gpu.copy(toDevice: pointer + UInt64(offset), from: part.baseAddress!, count: part.count, on: stream)
                try gpu.synchronize(stream)
                return true
            }
            self.gpu = gpu
            self.buffer = try DeviceBuffer(gpu: gpu, pointer: pointer, count: length)
        } catch {
            try? gpu.free(pointer)
            throw error
        }
    }

    /// Walks `length` bytes of device memory through one host slice of at most ``sliceBytes`` (and a stream for its
    /// copies), handing `each` the slice cut to the part at `offset`; `each` returns false to stop. Returns whether
    /// it went to the end.
    @discardableResult
    static func bySlices(
        length: Int, on gpu: CUDAGPU, _ each: (UnsafeMutableRawBufferPointer, Int, CUDAStream) throws -> Bool
    ) throws -> Bool {
        let stream = try gpu.makeStream()
        defer { try? gpu.destroy(stream) }
        let slice = UnsafeMutableRawBufferPointer.allocate(byteCount: min(length, sliceBytes), alignment: 4096)
        defer { slice.deallocate() }
        var offset = 0
        while offset < length {
            let count = min(slice.count, length - offset)
            guard try each(UnsafeMutableRawBufferPointer(rebasing: slice[0..<count]), offset, stream) else {
                return false
            }
            offset += count
        }
        return true
    }

    func free() { try? gpu.free(buffer.pointer) }
}
