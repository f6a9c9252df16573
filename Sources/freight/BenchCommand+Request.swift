import FreightClient
import FreightCore
import FreightTesting
import NIOCore

/// `freight bench --paths request`: request and reply between two apps through two nodes, one round trip at a time
/// (docs/small-messages-and-files.md, "Request and reply"): the requester on n1 sends a body of each size, the
/// responder on n2 replies with the same bytes, and the requester reads them. Reports the round trips' p50 and p99.
extension BenchCommand {
    /// Round trips measured per size, at most (after 100 not counted).
    static let roundTripsMax = 20_000

    func requestBench(_ fabric: InProcessFabric, size: Int64, totalBytes: Int64) async throws {
        let count = Int(min(Int64(Self.roundTripsMax), max(1, totalBytes / size)))
        let responder = try await FreightClient.connect(to: fabric.socket(1), label: "bench-responder")
        let requester = try await FreightClient.connect(to: fabric.socket(0), label: "bench-requester")
        let address = "bench/request/\(size)"
        let inbox = try await responder.receive(address)
        try await fabric.waitForEndpoints(try Address(address), count: 1)
        let serving = Task(executorPreference: preferred(responder)) {
            for try await request in inbox {
                let body = try await request.collect(upTo: Int(size))
                try await responder.reply(to: request, body: .bytes(body))
            }
        }
        let body = ByteBuffer(repeating: 7, count: Int(size))
        // The requester's loop runs on its client's thread, as the responder's does (``preferred(_:)``).
        let (micros, cpuSeconds, seconds) = try await withTaskExecutorPreference(preferred(requester)) {
            for _ in 0..<100 { _ = try await requester.request(to: address, body: .bytes(body)).drain() }
            let cpu = ProcessStats.cpuSeconds()
            let started = ContinuousClock.now
            var micros: [Double] = []
            micros.reserveCapacity(count)
            for _ in 0..<count {
                let sent = ContinuousClock.now
                let reply = try await requester.request(to: address, body: .bytes(body))
                _ = try await reply.drain()
                let elapsed = ContinuousClock.now - sent
                micros.append(Double(elapsed.components.seconds) * 1e6 + Double(elapsed.components.attoseconds) / 1e12)
            }
            return (micros, ProcessStats.cpuSeconds() - cpu, self.seconds(since: started))
        }
        serving.cancel()
        await requester.close()
        await responder.close()
        let sorted = micros.sorted()
        let p50 = sorted[sorted.count / 2]
        let p99 = sorted[min(sorted.count - 1, sorted.count * 99 / 100)]
        if output.json {
            printJSON([
                "path": "request", "bytes": size, "round_trips": count, "seconds": seconds, "p50_us": p50,
                "p99_us": p99, "round_trips_per_s": Double(count) / seconds,
                "cpu_us_per_round_trip":
                    cpuSeconds / Double(count) * 1e6,
                "peak_rss_bytes": ProcessStats.peakResidentBytes(),
            ])
        } else {
            printLine(
                "request \(ByteCount.format(size)): \(count) round trips one at a time, p50 \(p50.formatted(decimals: 0)) µs, p99 \(p99.formatted(decimals: 0)) µs, \((cpuSeconds / Double(count) * 1e6).formatted(decimals: 0)) CPU µs each"
            )
        }
    }
}
