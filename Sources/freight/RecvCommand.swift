import ArgumentParser
import Foundation
import FreightCUDA
import FreightClient
import FreightCore
import FreightTransport
import Synchronization

struct RecvCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recv", abstract: "Receive messages on an address or pattern.")

    @Argument(help: "An address or a pattern (llm/*/3, llm/**).")
    var pattern: String
    @Option(
        name: .customLong("out"),
        help: "Write each body to its own file in this folder (a hidden .NAME.freight-partial until whole).")
    var out: String?
    @Option(
        name: .customLong("count"),
        help: "Exit after this many messages (failed ones count; the exit status says whether any failed).")
    var count: Int?
    @Option(name: .customLong("group"), help: "Share the address with other receivers of this group.")
    var group: String?
    @Option(name: .customLong("label"), help: "This app's label, shown to senders.")
    var label = "recv"
    @Flag(name: .customLong("check"), help: "Check generated bodies (freight send --size) byte by byte.")
    var check = false
    @Option(
        name: .customLong("rate"),
        help: "Read each body at most this fast, per second (512MiB): a slow consumer, which slows its sender.")
    var rate: String?
    @Option(
        name: .customLong("window"),
        help: "Most body bytes of one message in flight to this app (64KiB...1GiB; default 32MiB).")
    var window: String?
    @Option(
        name: .customLong("parallel"),
        help: """
            How many messages this app takes in at once (each read, checked or written as it arrives); by default \
            as many as 64 MiB of their bodies holds, at most 64 (one at a time with --gpu or --rate).
            """)
    var parallel: Int?
    @Option(
        name: .customLong("gpu"),
        help: """
            Put every body into this GPU's memory (docs/gpu.md): one another app of this node sends from that \
            GPU (freight send --device) is handed over over CUDA IPC, never through host memory; any other is \
            copied in from host memory as it arrives.
            """)
    var gpu: Int?
    @Option(name: .customLong("cuda-driver"), help: "The CUDA driver library --gpu opens.")
    var cudaDriver = "libcuda.so.1"
    @Flag(
        name: .customLong("summary"),
        help: """
            A line a second (messages and bytes received in it, failures) instead of a line per message, and the \
            totals at the end: for many small messages a second.
            """)
    var summary = false
    @OptionGroup var via: ViaOption
    @OptionGroup var output: OutputOptions

    func run() async throws {
        MemoryTuning.apply()
        do {
            try await Telemetry.running(serviceName: "freight-recv") { [self] in try await receive() }
        } catch {
            fail(error)
        }
    }

    private func receive() async throws {
        do {
            if let count, count < 1 { throw FreightError(.invalidArgument, "--count must be at least 1") }
            if let parallel, !(1...Limits.messagesPerConnectionMax).contains(parallel) {
                throw FreightError(.invalidArgument, "--parallel must be 1...\(Limits.messagesPerConnectionMax)")
            }
            let bytesPerSecond = try rate.map { try ByteCount.parse($0) }
            if let bytesPerSecond, bytesPerSecond < 1 {
                throw FreightError(.invalidArgument, "--rate must be at least one byte per second")
            }
            if let out {
                try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            }
            let windowBytes = UInt64(try window.map { try ByteCount.parse($0) } ?? Int64(Limits.windowBytesDefault))
            let opened = try gpu.map { try CUDAGPU(try CUDADriver.load(library: cudaDriver), index: $0) }
            let targets = opened.map(DeviceTargets.init)
            defer { targets?.release() }
            let client = try await FreightClient.connect(
                to: try via.address(), label: label, token: via.token,
                windowBytes: Int(windowBytes),
                sharedMemory: try via.sharedMemory(), gpus: opened.map { [$0] } ?? [])
            let subscription = try await client.receive(pattern, group: group)
            if output.json {
                printJSON([
                    "event": "ready", "pattern": pattern, "endpoint": subscription.endpointID, "node": client.nodeName,
                ])
            } else {
                printLine("receiving on \(pattern) at node \(client.nodeName)\(group.map { " in group \($0)" } ?? "")")
            }
            // A message that fails (its sender vanished, a check failed) is reported as a line with its reason and
            // does not end the receiver: only --count, a signal or the node's loss do (docs/hardening.md).
            var received = 0
            var lastFailure: FreightError?
            var failures = 0
            let tally = summary ? Tally() : nil
            let reporting = tally.map { tally in Task { await tally.reportEverySecond(json: output.json) } }
            defer { reporting?.cancel() }
            // Small messages read, checked or drained are handled on the client's thread (no hop between threads per
            // message); larger ones in tasks on the default executor, so that checking one's bytes does not hold up
            // the client, nor do files and GPU copies, which block.
            let executor = out == nil && targets == nil ? client.executor : nil
            // Messages whose bodies come in chunks wait for their senders: several in hand at once, so that one
            // sender's round trips do not hold up the rest (128 KiB through two nodes: 3,400 messages/s one at a
            // time, 9,000 with 64), within as many bytes as a sender keeps in flight.
            // A paced receiver (--rate) stands for one slow consumer: one message at a time unless told otherwise.
            let runningMax = parallel ?? (targets == nil && bytesPerSecond == nil ? Self.inHandMessagesMax : 1)
            try await withTaskExecutorPreference(executor) {
                try await withThrowingTaskGroup(of: (FreightError?, UInt64).self) { group in
                    var running = 0
                    var inHand: UInt64 = 0
                    func note(_ failure: FreightError?) {
                        guard let failure else { return }
                        tally?.failed()
                        lastFailure = failure
                        failures += 1
                    }
                    func settle(_ outcome: (FreightError?, UInt64)?) {
                        guard let (failure, bytes) = outcome else { return }
                        running -= 1
                        inHand -= bytes
                        note(failure)
                    }
                    for try await message in subscription {
                        // A body that came whole (small) is handled at once rather than in a task of its own (many
                        // small messages a second), unless it is paced or written to a file; one that comes in chunks
                        // waits for its sender, in a task, so others go on meanwhile.
                        if message.body.isWhole, bytesPerSecond == nil, out == nil {
                            note(await handled(message, targets: targets, tally: tally))
                            received += 1
                            if let count, received >= count { break }
                            continue
                        }
                        // What the message may hold of this app at once: its body, up to its window.
                        let bytes = min(message.length, windowBytes)
                        while running >= runningMax
                            || (parallel == nil && running > 0 && inHand + bytes > Self.inHandBytesMax)
                        {
                            settle(try await group.next())
                        }
                        running += 1
                        inHand += bytes
                        group.addTask(executorPreference: globalConcurrentExecutor) {
                            let failure = await handled(
                                bytesPerSecond.map { message.paced(bytesPerSecond: Int($0)) } ?? message,
                                targets: targets, tally: tally)
                            return (failure, bytes)
                        }
                        received += 1
                        if let count, received >= count { break }
                    }
                    while running > 0 { settle(try await group.next()) }
                }
            }
            await client.close()
            reporting?.cancel()
            tally?.report(json: output.json, final: true)
            if let lastFailure {
                throw FreightError(
                    lastFailure.code, "\(failures) of \(received) messages failed; the last: \(lastFailure.message)")
            }
            await client.close()
        }
    }

    /// Without --parallel: messages in hand at once, and their bodies' bytes (each up to its window), as a sender
    /// keeps in flight (``Limits/inFlightDefault(bodyBytes:receiverEagerBytes:)``).
    static let inHandMessagesMax = 64
    static let inHandBytesMax: UInt64 = 64 << 20

    /// Receives one message (``handle(_:)``); its failure, reported, or nil.
    private func handled(_ message: IncomingMessage, targets: DeviceTargets?, tally: Tally?) async -> FreightError? {
        do {
            // With OTEL_* set, handling the message is a span in the sender's trace (docs/observability.md).
            try await Telemetry.span(
                "freight recv \(message.destination)", context: message.serviceContext, ofKind: .consumer
            ) { try await handle(message, targets: targets, tally: tally) }
            return nil
        } catch {
            let failure = error as? FreightError ?? FreightError(.internalError, "\(error)")
            if tally == nil { reportFailure(message, failure) }
            return failure
        }
    }

    /// Receives one message: writes or checks or drains its body, and reports it. Throws when it failed.
    private func handle(_ message: IncomingMessage, targets: DeviceTargets?, tally: Tally?) async throws {
        let started = ContinuousClock.now
        var file: String?
        var checked: Bool?
        var arrived: String?
        // --check checks generated bodies only: a message that carries no seed cannot pass as checked.
        let seed = message.attributes["freight-seed"].flatMap(UInt64.init)
        if check && seed == nil {
            throw FreightError(
                .invalidArgument,
                "message \(String(message.id, radix: 16)) from \(message.source) carries no freight-seed attribute: --check can only check generated bodies (freight send --size)"
            )
        }
        if let out {
            let name =
                message.destination.replacingOccurrences(of: "/", with: "_") + "-" + String(message.id, radix: 16)
            let path = (out as NSString).appendingPathComponent(name)
            _ = try await message.write(toFile: path)
            file = path
            if check, let seed { checked = try Self.checkFile(path, seed: seed, length: message.length) }
        } else if let targets {
            (arrived, checked) = try await Self.takeDeviceBody(message, into: targets, seed: check ? seed : nil)
        } else if check, let seed {
            checked = try await message.checkPattern(seed: seed)
        } else {
            _ = try await message.drain()
        }
        if let tally {
            tally.received(bytes: message.length)
        } else {
            let elapsed = ContinuousClock.now - started
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            report(message, seconds: seconds, file: file, checked: checked, arrived: arrived)
        }
        if checked == false {
            throw FreightError(
                .checksumMismatch, "message \(String(message.id, radix: 16)) differs from its generated pattern")
        }
    }

    private func reportFailure(_ message: IncomingMessage, _ error: FreightError) {
        if output.json {
            printJSON([
                "event": "failed", "id": String(message.id, radix: 16), "address": message.destination,
                "source": message.source, "bytes": message.length, "reason": error.message,
            ])
        } else {
            printLine(
                "failed \(ByteCount.format(Int64(message.length))) on \(message.destination) from \(message.source): \(error.message)"
            )
        }
    }

    /// Reads a written body back and checks it against its generated pattern.
    static func checkFile(_ path: String, seed: UInt64, length: UInt64) throws -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw FreightError(.io, "cannot read back \(path)")
        }
        defer { try? handle.close() }
        var offset: UInt64 = 0
        while offset < length {
            let data = try handle.read(upToCount: 1 << 20) ?? Data()
            guard !data.isEmpty else { return false }
            let ok = data.withUnsafeBytes { PatternFill.check($0, seed: seed, offset: Int64(offset)) }
            guard ok else { return false }
            offset += UInt64(data.count)
        }
        return offset == length
    }

    /// Reads a message into `gpu`'s memory, as an app that opens device bodies there: handed over chunks are copied
    /// device to device, staged ones host to device (``IncomingMessage/copy(toDevice:on:)``). Returns how it arrived
    /// (`handed-over`, `staged` or `mixed`) and, with a seed, whether the bytes in GPU memory match the generated
    /// pattern (copied back to host memory a slice at a time for the check, which a real consumer would not do).
    static func takeDeviceBody(_ message: IncomingMessage, into targets: DeviceTargets, seed: UInt64?) async throws
        -> (String, Bool?)
    {
        let gpu = targets.gpu
        let length = Int(message.length)
        guard length > 0 else {
            _ = try await message.drain()
            return ("empty", seed == nil ? nil : true)
        }
        let target: DeviceTargets.Target
        do {
            target = try targets.take(length)
        } catch {
            message.fail(error)
            throw error
        }
        defer { targets.give(target) }
        let destination = target.pointer
        let arrival = try await message.copy(toDevice: destination, on: gpu)
        let how =
            arrival.stagedBytes == 0 ? "handed-over" : arrival.handedOverBytes == 0 ? "staged" : "mixed"
        guard let seed else { return (how, nil) }
        let matches = try PlacedBody.bySlices(length: length, on: gpu) { part, offset, stream in
            try gpu.copy(toHost: part.baseAddress!, from: destination + UInt64(offset), count: part.count, on: stream)
            try gpu.synchronize(stream)
            return PatternFill.check(UnsafeRawBufferPointer(part), seed: seed, offset: Int64(offset))
        }
        return (how, matches)
    }

    private func report(_ message: IncomingMessage, seconds: Double, file: String?, checked: Bool?, arrived: String?) {
        let rate = ByteCount.megabytesPerSecond(bytes: Int64(message.length), seconds: seconds)
        if output.json {
            var object: [String: Any] = [
                "event": "received", "id": String(message.id, radix: 16), "address": message.destination,
                "source": message.source, "bytes": message.length, "seconds": seconds, "mbps": rate,
                "path": message.path, "peak_rss_bytes": ProcessStats.peakResidentBytes(),
            ]
            if let file { object["file"] = file }
            if let checked { object["checked"] = checked }
            if let arrived { object["gpu"] = arrived }
            object["resumed_at"] = message.resumedAt
            if !message.filters.isEmpty { object["filters"] = message.filters }
            printJSON(object)
        } else {
            var line =
                "received \(ByteCount.format(Int64(message.length))) on \(message.destination) from \(message.source)"
            line +=
                " via \(message.path.joined(separator: " → ")) in \(seconds.formatted(decimals: 3)) s (\(rate.formatted(decimals: 0)) MB/s)"
            if let file { line += " → \(file)" }
            if let arrived { line += ", into GPU memory (\(arrived))" }
            if !message.filters.isEmpty { line += ", filtered by \(message.filters.joined(separator: ", "))" }
            if let checked { line += checked ? ", every byte checked" : ", BYTES DIFFER" }
            if !message.resumedAt.isEmpty {
                line +=
                    ", resumed after a broken link at offset \(message.resumedAt.map(String.init).joined(separator: ", "))"
            }
            printLine(line)
        }
    }
}

/// The GPU memory `recv --gpu` puts bodies into, kept for the next message as a consumer keeps its buffers (an
/// allocation per message costs more than the message): at most one per message in hand at once (`--parallel`),
/// replaced by a larger one when a larger body comes, all freed when the receiver ends.
final class DeviceTargets: Sendable {
    struct Target: Sendable {
        let pointer: UInt64
        let size: Int
    }

    let gpu: CUDAGPU
    private let idle = Mutex<[Target]>([])

    init(_ gpu: CUDAGPU) { self.gpu = gpu }

    /// An idle allocation of `length` bytes or more, or a new one (an idle one too small is freed for it).
    func take(_ length: Int) throws(FreightError) -> Target {
        let found = idle.withLock { idle -> Target? in
            guard !idle.isEmpty else { return nil }
            return idle.remove(at: idle.firstIndex { $0.size >= length } ?? 0)
        }
        if let found {
            if found.size >= length { return found }
            try? gpu.free(found.pointer)
        }
        return Target(pointer: try gpu.allocate(length), size: length)
    }

    func give(_ target: Target) { idle.withLock { $0.append(target) } }

    func release() {
        for target in idle.withLock({ idle in
            defer { idle = [] }
            return idle
        }) {
            try? gpu.free(target.pointer)
        }
    }
}
