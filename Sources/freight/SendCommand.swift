import ArgumentParser
import Foundation
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
    @Option(name: .customLong("count"), help: "How many messages to send.")
    var count = 1
    @Option(
        name: .customLong("parallel"),
        help: "How many of the --count messages are in flight at once (each prints its own report; no progress bar).")
    var parallel = 1
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
    @OptionGroup var via: ViaOption
    @OptionGroup var output: OutputOptions

    func run() async throws {
        MemoryTuning.apply()
        do {
            let body: OutgoingBody
            switch (file, size) {
            case (let path?, nil): body = .file(path: path)
            case (nil, let size?): body = .pattern(seed: seed, length: try ByteCount.parse(size))
            default: throw FreightError(.invalidArgument, "give exactly one of --file PATH or --size BYTES")
            }
            guard count >= 1 else { throw FreightError(.invalidArgument, "--count must be at least 1") }
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
                sharedMemory: try via.sharedMemory(sending: Int64(Self.length(of: body)) * Int64(min(count, parallel))))
            let options = SendOptions(attributes: attributes, chunkBytes: chunkBytes)
            if parallel > 1 {
                try await sendInParallel(client, body: body, options: options)
            } else {
                for _ in 0..<count { try await sendOne(client, body: body, options: options) }
            }
            await client.close()
        } catch {
            fail(error)
        }
    }

    static func length(of body: OutgoingBody) -> UInt64 {
        switch body {
        case .pattern(_, let length): UInt64(length)
        case .file(let path): (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? UInt64) ?? 0
        case .bytes(let buffer): UInt64(buffer.readableBytes)
        case .repeating(_, let length), .repeatingShared(_, let length), .stream(_, let length): UInt64(length)
        case .shared(let buffer): UInt64(buffer.count)
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

    /// `count` messages, `parallel` of them in flight at once; each report printed as it ends. The first failure
    /// ends the command once the messages in flight have ended.
    private func sendInParallel(_ client: FreightClient, body: OutgoingBody, options: SendOptions) async throws {
        try await withThrowingTaskGroup(of: DeliveryReport.self) { group in
            var started = 0
            var failure: (any Error)?
            while started < min(parallel, count) {
                group.addTask { try await client.send(to: address, body: body, options: options) }
                started += 1
            }
            while let result = await group.nextResult() {
                switch result {
                case .success(let report): printReport(report)
                case .failure(let error): failure = failure ?? error
                }
                if failure == nil, started < count {
                    group.addTask { try await client.send(to: address, body: body, options: options) }
                    started += 1
                }
            }
            if let failure { throw failure }
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
