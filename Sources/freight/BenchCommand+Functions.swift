import Foundation
import FreightClient
import FreightCore
import FreightFunctionHost
import FreightFunctions
import FreightTesting
import FreightWire
import Logging
import NIOCore
import WAT

/// `freight bench --paths functions` (docs/functions.md, "What a function costs"): what WebAssembly in the path
/// costs, in one run.
/// - a pass-through filter's cost per chunk (the host writes the chunk into the module's memory and reads it back);
/// - the fp32 → bf16 downcast's throughput against a plain Swift loop doing the same rounding;
/// - a function endpoint's cold start (compiling the module and starting an instance) and warm start (an instance
///   of the compiled module), in process;
/// - a request's round trip to a function endpoint on another node against one to an app that answers the same
///   (CRC32C in Swift), through two nodes, one at a time: p50 and p99.
extension BenchCommand {
    func functionsBench(examples: String) async throws {
        func load(_ name: String) throws -> [UInt8] {
            let path = "\(examples)/\(name).wat"
            guard let data = FileManager.default.contents(atPath: path) else {
                throw FreightError(.io, "cannot read \(path): run from the repository's root, or give --examples")
            }
            return Array(data)
        }
        let passthrough = try FunctionModule(name: "passthrough", bytes: try load("passthrough"))
        let downcast = try FunctionModule(name: "downcast", bytes: try load("downcast"))
        // As a node keeps it: the binary (a deploy of text is assembled once, where it is taken).
        let checksumBytes: [UInt8]
        do {
            checksumBytes = try wat2wasm(String(decoding: try load("checksum"), as: UTF8.self))
        } catch {
            throw FreightError(.invalidArgument, "checksum.wat: \(error)")
        }
        let checksum = try FunctionModule(name: "checksum", bytes: checksumBytes)

        // Pass-through: chunks of each size, the same buffer again and again.
        for chunkBytes in [4096, 65_536, 1 << 20] {
            let chunks = max(200, (256 << 20) / chunkBytes)
            let input = [UInt8](repeating: 0x5a, count: chunkBytes)
            let run = try FunctionRun(passthrough)
            _ = try run.begin(length: UInt64(chunks * chunkBytes))
            let started = ContinuousClock.now
            var passed = 0
            for _ in 0..<chunks { passed += try run.chunk(input).count }
            let seconds = Self.seconds(ContinuousClock.now - started)
            guard passed == chunks * chunkBytes else {
                throw FreightError(.internalError, "the pass-through filter gave \(passed) bytes")
            }
            report(
                function: "passthrough",
                [
                    "chunk_bytes": chunkBytes, "chunks": chunks, "us_per_chunk": seconds / Double(chunks) * 1e6,
                    "gb_per_s": Double(passed) / seconds / 1e9,
                ],
                "pass-through filter, \(ByteCount.format(Int64(chunkBytes))) chunks: \((seconds / Double(chunks) * 1e6).formatted(decimals: 1)) µs per chunk, \((Double(passed) / seconds / 1e9).formatted(decimals: 2)) GB/s"
            )
        }

        // The downcast against Swift: 64 MiB of fp32 in 1 MiB chunks.
        var random = SeededRandom(seed: 5)
        let floats = (0..<(16 << 20)).map { _ in UInt32(truncatingIfNeeded: random.next()) }
        let bytes = floats.withUnsafeBytes { [UInt8]($0) }
        let chunk = 1 << 20
        var wasmSeconds = Double.infinity
        var wasmOutput: [UInt8] = []
        for _ in 0..<2 {
            let run = try FunctionRun(downcast)
            _ = try run.begin(length: UInt64(bytes.count))
            var output: [UInt8] = []
            output.reserveCapacity(bytes.count / 2)
            let started = ContinuousClock.now
            for start in stride(from: 0, to: bytes.count, by: chunk) {
                try bytes[start..<start + chunk].withUnsafeBytes { output += try run.chunk($0) }
            }
            output += try run.end()
            wasmSeconds = min(wasmSeconds, Self.seconds(ContinuousClock.now - started))
            wasmOutput = output
        }
        var swiftSeconds = Double.infinity
        var swiftOutput: [UInt16] = []
        for _ in 0..<5 {
            let started = ContinuousClock.now
            swiftOutput = Self.downcast(floats)
            swiftSeconds = min(swiftSeconds, Self.seconds(ContinuousClock.now - started))
        }
        let same = swiftOutput.withUnsafeBytes { Array($0) } == wasmOutput
        guard same else { throw FreightError(.internalError, "the downcast filter and the Swift loop disagree") }
        let gigabytes = Double(bytes.count) / 1e9
        report(
            function: "downcast",
            [
                "input_bytes": bytes.count, "wasm_gb_per_s": gigabytes / wasmSeconds,
                "swift_gb_per_s": gigabytes / swiftSeconds, "swift_over_wasm": wasmSeconds / swiftSeconds,
            ],
            "downcast fp32 → bf16, 64 MiB in 1 MiB chunks: WebAssembly \((gigabytes / wasmSeconds).formatted(decimals: 3)) GB/s, a Swift loop \((gigabytes / swiftSeconds).formatted(decimals: 2)) GB/s (\((wasmSeconds / swiftSeconds).formatted(decimals: 0))× faster); every value the same"
        )

        // Cold and warm starts, in process: the checksum function over a 256-byte request.
        let request = [UInt8](repeating: 7, count: 256)
        func call(_ module: FunctionModule) throws -> [UInt8] {
            let run = try FunctionRun(module)
            _ = try run.begin(length: UInt64(request.count))
            return try run.chunk(request) + run.end()
        }
        // Cold: compile the module and start an instance. Warm: an instance of the compiled module. A call: a
        // warm instance and the 256-byte request through it (the checksum goes bit by bit).
        var cold: [Double] = []
        var warm: [Double] = []
        var calls: [Double] = []
        for _ in 0..<300 {
            let started = ContinuousClock.now
            _ = try FunctionRun(try FunctionModule(name: "checksum", bytes: checksumBytes))
            cold.append(Self.seconds(ContinuousClock.now - started) * 1e6)
        }
        for _ in 0..<3000 {
            let started = ContinuousClock.now
            _ = try FunctionRun(checksum)
            warm.append(Self.seconds(ContinuousClock.now - started) * 1e6)
        }
        for _ in 0..<1000 {
            let started = ContinuousClock.now
            _ = try call(checksum)
            calls.append(Self.seconds(ContinuousClock.now - started) * 1e6)
        }
        let (coldP50, coldP99) = Self.percentiles(&cold)
        let (warmP50, warmP99) = Self.percentiles(&warm)
        let (callP50, callP99) = Self.percentiles(&calls)
        report(
            function: "start",
            [
                "module_bytes": checksumBytes.count, "cold_p50_us": coldP50, "cold_p99_us": coldP99,
                "warm_p50_us": warmP50, "warm_p99_us": warmP99, "call_p50_us": callP50, "call_p99_us": callP99,
            ],
            "checksum function (\(checksumBytes.count) bytes of WebAssembly), in process: cold start (compile and instantiate) p50 \(coldP50.formatted(decimals: 0)) µs, p99 \(coldP99.formatted(decimals: 0)) µs; warm start (instantiate) p50 \(warmP50.formatted(decimals: 0)) µs, p99 \(warmP99.formatted(decimals: 0)) µs; a warm call on 256 B p50 \(callP50.formatted(decimals: 0)) µs, p99 \(callP99.formatted(decimals: 0)) µs"
        )

        try await functionRoundTrips(checksumBytes: checksumBytes, passthroughBytes: try load("passthrough"))
    }

    /// Round trips to the checksum function on n2 and to an app on n2 that answers the same, from an app on n1.
    private func functionRoundTrips(checksumBytes: [UInt8], passthroughBytes: [UInt8]) async throws {
        let fabric = try await InProcessFabric.start(nodes: 2, cluster: "bench-fn")
        var logger = Logger(label: "freight.bench")
        logger.logLevel = .warning
        let host = Task { try await FunctionHost(engine: fabric.engines[1], logger: logger).run() }
        do {
            let requester = try await FreightClient.connect(to: fabric.socket(0), label: "bench-requester")
            let responder = try await FreightClient.connect(to: fabric.socket(1), label: "bench-responder")
            try await fabric.waitForEndpoints(try Address("_fn/deploy"), count: 1)
            let deployed = ContinuousClock.now
            _ = try await requester.request(
                to: "_fn/deploy", body: .bytes(ByteBuffer(bytes: checksumBytes)),
                options: SendOptions(attributes: ["address": "bench/fn/crc", "name": "checksum"])
            ).drain()
            try await fabric.waitForEndpoints(try Address("bench/fn/crc"), count: 1)
            // The pass-through as a function: what the host costs around a module that does no work.
            _ = try await requester.request(
                to: "_fn/deploy", body: .bytes(ByteBuffer(bytes: passthroughBytes)),
                options: SendOptions(attributes: ["address": "bench/fn/echo", "name": "passthrough"])
            ).drain()
            try await fabric.waitForEndpoints(try Address("bench/fn/echo"), count: 1)
            let body = ByteBuffer(repeating: 7, count: 256)
            let first = ContinuousClock.now
            let reply = try await requester.request(to: "bench/fn/crc", body: .bytes(body))
            let crc = try await reply.collect(upTo: 16)
            let coldMicros = Self.seconds(ContinuousClock.now - first) * 1e6
            let bound = Self.seconds(first - deployed)
            guard Array(crc.readableBytesView) == withUnsafeBytes(of: CRC32C.checksum(body).littleEndian, Array.init)
            else {
                throw FreightError(.internalError, "the checksum function answered \(Array(crc.readableBytesView))")
            }

            let inbox = try await responder.receive("bench/app/crc")
            try await fabric.waitForEndpoints(try Address("bench/app/crc"), count: 1)
            let serving = Task {
                for try await request in inbox {
                    let bytes = try await request.collect(upTo: 1 << 20)
                    let crc = withUnsafeBytes(of: CRC32C.checksum(bytes).littleEndian) { ByteBuffer(bytes: $0) }
                    try await responder.reply(to: request, body: .bytes(crc))
                }
            }
            var results: [String: (Double, Double)] = [:]
            for address in ["bench/fn/crc", "bench/fn/echo", "bench/app/crc"] {
                for _ in 0..<100 { _ = try await requester.request(to: address, body: .bytes(body)).drain() }
                var micros: [Double] = []
                for _ in 0..<2000 {
                    let sent = ContinuousClock.now
                    _ = try await requester.request(to: address, body: .bytes(body)).drain()
                    micros.append(Self.seconds(ContinuousClock.now - sent) * 1e6)
                }
                results[address] = Self.percentiles(&micros)
            }
            serving.cancel()
            await requester.close()
            await responder.close()
            let (fnP50, fnP99) = results["bench/fn/crc"]!
            let (echoP50, echoP99) = results["bench/fn/echo"]!
            let (appP50, appP99) = results["bench/app/crc"]!
            report(
                function: "endpoint",
                [
                    "deploy_to_first_reply_s": bound, "first_call_us": coldMicros, "fn_p50_us": fnP50,
                    "fn_p99_us": fnP99, "passthrough_p50_us": echoP50, "passthrough_p99_us": echoP99,
                    "app_p50_us": appP50, "app_p99_us": appP99,
                ],
                "checksum function endpoint on n2, requests of 256 B from n1, one at a time: p50 \(fnP50.formatted(decimals: 0)) µs, p99 \(fnP99.formatted(decimals: 0)) µs (the pass-through as a function: p50 \(echoP50.formatted(decimals: 0)) µs, p99 \(echoP99.formatted(decimals: 0)) µs; an app answering the same: p50 \(appP50.formatted(decimals: 0)) µs, p99 \(appP99.formatted(decimals: 0)) µs); first call after the deploy (cold) \(coldMicros.formatted(decimals: 0)) µs"
            )
        } catch {
            host.cancel()
            await fabric.stop()
            throw error
        }
        host.cancel()
        _ = await host.result
        await fabric.stop()
    }

    private func report(function name: String, _ fields: [String: Any], _ line: String) {
        if output.json {
            var object = fields
            object["path"] = "functions/\(name)"
            printJSON(object)
        } else {
            printLine(line)
        }
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    static func percentiles(_ values: inout [Double]) -> (p50: Double, p99: Double) {
        values.sort()
        return (values[values.count / 2], values[min(values.count - 1, values.count * 99 / 100)])
    }

    /// fp32 → bf16, round to nearest with ties to even, NaN quieted: what the downcast module does, in Swift.
    static func downcast(_ input: [UInt32]) -> [UInt16] {
        [UInt16](unsafeUninitializedCapacity: input.count) { output, count in
            for index in input.indices {
                let bits = input[index]
                output[index] =
                    bits & 0x7fff_ffff > 0x7f80_0000
                    ? UInt16(truncatingIfNeeded: bits >> 16) | 0x40
                    : UInt16(truncatingIfNeeded: (bits &+ 0x7fff &+ ((bits >> 16) & 1)) >> 16)
            }
            count = input.count
        }
    }
}
