import ArgumentParser
import Foundation
import FreightClient
import FreightCore
import FreightDirectory
import FreightEtcd
import FreightGRPC
import FreightTesting
import FreightTransport
import FreightWAN
import GRPCCore
import Logging
import NIOCore

/// `freight bench`: throughput and CPU cost per GiB for message sizes from 1 MiB to 1 GiB, on two paths:
/// node to node (the node's own traffic over one hop) and app to app through two nodes.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure throughput: node to node and app to app through two nodes, on loopback."
    )

    @Option(name: .customLong("sizes"), help: "Message sizes, comma-separated.")
    var sizes = "1MiB,16MiB,256MiB,1GiB"
    @Option(
        name: .customLong("paths"),
        help:
            "Paths to measure (comma-separated): node, app, socket (app to app without shared memory), local (two apps of one node: TCP vs shared memory), shm (its shared-memory half), grpc (gRPC apps vs native apps), grpc-send (a gRPC app sending to a native app: one gRPC leg, the API's client streaming), gateway (node to node across a gateway link of two clusters, mutual TLS 1.3, against plain TCP and swift-nio-ssl alone), wan (app to app across gateways of two clusters over an emulated WAN per --wan, against iperf3 through the same link; root, iperf3 and freight-wan), directory (resolving in an index of --endpoints), file (file to file through two nodes, in --folder, against dd into the same folder and app to app in the same run), request (request and reply between two apps through two nodes, one round trip at a time: p50 and p99), functions (WebAssembly in the path: a pass-through filter's cost per chunk, the downcast against a Swift loop, a function's cold and warm start, and round trips to a function endpoint against an app; reads --examples)."
    )
    var paths = "node,app"
    @Option(name: .customLong("total"), help: "Bytes sent per measurement (at least one message).")
    var total = "2GiB"
    @Option(name: .customLong("streams"), help: "TCP connections between the two nodes.")
    var streams = Limits.streamsDefault
    @Option(name: .customLong("chunk-size"), help: "Body chunk size.")
    var chunkSize = ByteCount.format(Int64(Limits.chunkBytesDefault))
    @Option(name: .customLong("window"), help: "Per-message window of nodes and receiving apps.")
    var window = "32MiB"
    @Option(
        name: .customLong("in-flight"),
        help:
            "Messages in flight at once; default: small messages (up to 64 KiB) as many as fit half the receiver's eager budget (a receiving app's; node to node a node's), at most 1024; larger ones as many as fit in 64 MiB, at most 64 (grpc: one at a time)."
    )
    var inFlight: Int?
    @Option(
        name: .customLong("batch"),
        help:
            "Small messages (up to 64 KiB) the sending app sends per call, each confirmed on its own (FreightClient.send of a batch); 1: one call per message."
    )
    var batch = 64
    @Option(
        name: .customLong("app-executor"),
        help:
            "Where the apps' send and receive loops run: client (each client's own thread, as FreightClient.executor offers) or default (Swift's global executor: a hop between threads per message)."
    )
    var appExecutor = "client"
    @Option(
        name: .customLong("link-security"),
        help:
            "How links between the nodes prove themselves, comma-separated to compare in one run: none (plain TCP), authenticated (mutual TLS, then plain), encrypted (mutual TLS throughout)."
    )
    var linkSecurity = "none"
    @Option(
        name: .customLong("wan"),
        help: ArgumentHelp(
            "WAN links for --paths wan, separated by ';', each freight-wan settings (rate=1gbit rtt=50ms loss=0.1%), and pairs=N for N gateway pairs, each on a link of its own with those settings.",
            valueName: "settings"))
    var wan = "rate=1gbit rtt=50ms;rate=1gbit rtt=50ms loss=0.1%;rate=1gbit rtt=200ms;rate=1gbit rtt=50ms pairs=2"
    @Option(name: .customLong("endpoints"), help: "Endpoints in the index for --paths directory.")
    var endpoints = 1_000_000
    @Option(
        name: .customLong("folder"),
        help: "Where --paths file puts its files (default /dev/shm, a tmpfs; a folder on disk measures the disk).")
    var folder: String?
    @Option(name: .customLong("examples"), help: "Where --paths functions finds the example modules (.wat).")
    var examples = "examples/functions"
    @OptionGroup var output: OutputOptions

    struct Result {
        var path: String
        var size: Int64
        var messages: Int
        var seconds: Double
        var cpuSeconds: Double

        var megabytesPerSecond: Double { ByteCount.megabytesPerSecond(bytes: size * Int64(messages), seconds: seconds) }
        var cpuSecondsPerGiB: Double { cpuSeconds / (Double(size * Int64(messages)) / Double(1 << 30)) }
    }

    func run() async throws {
        MemoryTuning.apply()
        do {
            let sizeList = try sizes.split(separator: ",").map { text throws(FreightError) in
                try ByteCount.parse(String(text))
            }
            let totalBytes = try ByteCount.parse(total)
            let pathList = paths.split(separator: ",").map(String.init)
            let chunkBytes = Int(try ByteCount.parse(chunkSize))
            let windowBytes = Int(try ByteCount.parse(window))
            guard ["client", "default"].contains(appExecutor) else {
                throw FreightError(.invalidArgument, "unknown --app-executor '\(appExecutor)': use client or default")
            }
            for path in pathList
            where ![
                "node", "app", "socket", "local", "shm", "grpc", "grpc-send", "gateway", "wan", "directory", "file",
                "request", "functions",
            ].contains(path) {
                throw FreightError(
                    .invalidArgument,
                    "unknown path '\(path)': use node, app, socket, local, shm, grpc, grpc-send, gateway, wan, directory, file, request or functions"
                )
            }
            if !output.json && pathList.contains(where: { !["directory", "wan", "request", "functions"].contains($0) })
            {
                printLine("path       size      messages  MB/s      CPU s/GiB")
            }
            let securities = try linkSecurity.split(separator: ",").map { text throws(FreightError) in
                guard let mode = InProcessFabric.Security(rawValue: String(text)) else {
                    throw FreightError(
                        .invalidArgument, "unknown link security '\(text)': use none, authenticated or encrypted")
                }
                return mode
            }
            var bySecurity: [String: [InProcessFabric.Security: Double]] = [:]
            for path in pathList {
                if path == "directory" {
                    try directoryBench(count: endpoints)
                    continue
                }
                if path == "functions" {
                    try await functionsBench(examples: examples)
                    continue
                }
                if path == "wan" {
                    try await wanBench(sizes: sizeList)
                    continue
                }
                if path == "gateway" {
                    try await gatewayBench(
                        sizes: sizeList, totalBytes: totalBytes, chunkBytes: chunkBytes, windowBytes: windowBytes)
                    continue
                }
                for security in securities {
                    // Results are named PATH, or PATH/SECURITY when the links prove themselves.
                    let report: (Result) -> Void = { result in
                        var named = result
                        if security != .none { named.path += "/\(security.rawValue.prefix(4))" }
                        self.report(named)
                        if result.path == path {
                            bySecurity["\(path) \(ByteCount.format(result.size))", default: [:]][security] =
                                result.megabytesPerSecond
                        }
                    }
                    let fabric = try await InProcessFabric.start(
                        nodes: 2, cluster: "bench", streams: streams, windowBytes: windowBytes, security: security
                    )
                    do {
                        if path == "request" {
                            for size in sizeList {
                                try await requestBench(fabric, size: size, totalBytes: totalBytes)
                            }
                            await fabric.stop()
                            continue
                        }
                        if path == "file" {
                            try await fileBench(
                                fabric, sizes: sizeList, totalBytes: totalBytes, chunkBytes: chunkBytes,
                                windowBytes: windowBytes, report: report)
                            await fabric.stop()
                            continue
                        }
                        for size in sizeList {
                            let count = Int(max(1, totalBytes / size))
                            // Node to node, the receiver is a node, with a node's eager budget.
                            let parallel =
                                inFlight
                                ?? Limits.inFlightDefault(
                                    bodyBytes: UInt64(size),
                                    receiverEagerBytes: path == "node" ? Limits.eagerBytesNode : Limits.eagerBytesApp)
                            switch path {
                            case "node":
                                report(
                                    try await nodeToNode(
                                        fabric, size: size, count: count, parallel: parallel, chunkBytes: chunkBytes))
                            case "app":
                                report(
                                    try await appToApp(
                                        fabric, size: size, count: count, parallel: parallel, chunkBytes: chunkBytes,
                                        windowBytes: windowBytes))
                            case "socket":
                                // The app path without shared memory: the sending node relays chunks from a socket.
                                report(
                                    try await appToApp(
                                        fabric, size: size, count: count, parallel: parallel, chunkBytes: chunkBytes,
                                        windowBytes: windowBytes, sharedMemory: .off))
                            case "shm":
                                // Only the shared-memory half of `local`: two apps of one node, a shared buffer lent.
                                report(
                                    try await sameNode(
                                        fabric, shared: true, size: size, count: count, parallel: parallel,
                                        chunkBytes: chunkBytes, windowBytes: windowBytes))
                            case "grpc":
                                // The same messages in flight on every path (one at a time unless --in-flight says),
                                // so that they compare like for like.
                                let inFlight = self.inFlight ?? 1
                                let native = try await appToApp(
                                    fabric, size: size, count: count, parallel: inFlight, chunkBytes: chunkBytes,
                                    windowBytes: windowBytes)
                                let socket = try await appToApp(
                                    fabric, size: size, count: count, parallel: inFlight, chunkBytes: chunkBytes,
                                    windowBytes: windowBytes, sharedMemory: .off)
                                let grpc = try await grpcToGRPC(
                                    fabric, size: size, count: count, parallel: inFlight, chunkBytes: chunkBytes)
                                let send = try await grpcToGRPC(
                                    fabric, size: size, count: count, parallel: inFlight, chunkBytes: chunkBytes,
                                    toApp: true)
                                for result in [native, socket, grpc, send] { report(result) }
                                if !output.json {
                                    let vsShared = grpc.megabytesPerSecond / native.megabytesPerSecond * 100
                                    let vsSocket = grpc.megabytesPerSecond / socket.megabytesPerSecond * 100
                                    printLine(
                                        "grpc \(ByteCount.format(size)): \(vsShared.formatted(decimals: 0))% of native apps with shared memory, \(vsSocket.formatted(decimals: 0))% of native apps over sockets"
                                    )
                                }
                            case "grpc-send":
                                report(
                                    try await grpcToGRPC(
                                        fabric, size: size, count: count, parallel: inFlight ?? 1,
                                        chunkBytes: chunkBytes, toApp: true))
                            default:
                                let tcp = try await sameNode(
                                    fabric, shared: false, size: size, count: count, parallel: parallel,
                                    chunkBytes: chunkBytes, windowBytes: windowBytes)
                                let shared = try await sameNode(
                                    fabric, shared: true, size: size, count: max(count, 20), parallel: parallel,
                                    chunkBytes: chunkBytes, windowBytes: windowBytes)
                                report(tcp)
                                report(shared)
                                if !output.json {
                                    let ratio = shared.megabytesPerSecond / tcp.megabytesPerSecond
                                    printLine(
                                        "local \(ByteCount.format(size)): shared memory is \(ratio.formatted(decimals: 0))x loopback TCP"
                                    )
                                }
                            }
                        }
                        await fabric.stop()
                    } catch {
                        await fabric.stop()
                        throw error
                    }
                }
            }
            // What each kind of link security costs against plain TCP, in this run.
            if securities.count > 1 && !output.json {
                for (measurement, rates) in bySecurity.sorted(by: { $0.key < $1.key }) {
                    guard let plain = rates[.none], plain > 0 else { continue }
                    let shares = securities.filter { $0 != .none }.compactMap { mode in
                        rates[mode].map { "\(mode.rawValue) \(($0 / plain * 100).formatted(decimals: 0))%" }
                    }
                    printLine("\(measurement): \(shares.joined(separator: ", ")) of plain TCP")
                }
            }
        } catch {
            fail(error)
        }
    }

    /// The node's own traffic: generated inside n1, checked and dropped inside n2; only the link is between them.
    func nodeToNode(_ fabric: InProcessFabric, size: Int64, count: Int, parallel: Int, chunkBytes: Int) async throws
        -> Result
    {
        let address = try Address("bench/node/\(size)")
        _ = try await fabric.engines[1].attachSink(AddressPattern(address))
        try await fabric.waitForEndpoints(address, count: 1)
        _ = try await fabric.engines[0].sendFromNode(
            to: address, length: UInt64(min(size, 64 << 20)), chunkBytes: chunkBytes)  // warm-up
        let engine = fabric.engines[0]
        let cpu = ProcessStats.cpuSeconds()
        let started = ContinuousClock.now
        try await engine.sendFromNode(
            to: address, length: UInt64(size), count: count, inFlight: parallel, chunkBytes: chunkBytes)
        return Result(
            path: "node", size: size, messages: count, seconds: seconds(since: started),
            cpuSeconds: ProcessStats.cpuSeconds() - cpu)
    }

    /// Node to node through a gateway link: the gateway of cluster bench-a sends generated bytes to a sink on the
    /// gateway of bench-b (TLS 1.3 both ways, one connection), against two nodes of one cluster over plain TCP and
    /// against swift-nio-ssl alone moving the same bytes over one TLS connection with the same certificates.
    func gatewayBench(sizes: [Int64], totalBytes: Int64, chunkBytes: Int, windowBytes: Int) async throws {
        let plain = try await InProcessFabric.start(
            nodes: 2, cluster: "bench", streams: streams, windowBytes: windowBytes)
        let chain: ClusterChain
        do {
            chain = try await ClusterChain.start(
                clusters: ["bench-a", "bench-b"], nodes: 1, exports: ["bench-b": ["bench/**"]], streams: streams,
                windowBytes: windowBytes)
        } catch {
            await plain.stop()
            throw error
        }
        do {
            for size in sizes {
                let count = Int(max(1, totalBytes / size))
                let parallel = inFlight ?? Int(max(1, min(64, (64 << 20) / size)))
                let tcp = try await nodeToNode(
                    plain, size: size, count: count, parallel: parallel, chunkBytes: chunkBytes)
                let address = try Address("bench/gateway/\(size)")
                _ = try await chain.fabrics[1].engines[0].attachSink(AddressPattern(address))
                try await chain.waitForRoute(address, from: 0, to: "bench-b")
                let sender = chain.fabrics[0].engines[0]
                _ = try await sender.sendFromNode(
                    to: address, length: UInt64(min(size, 64 << 20)), chunkBytes: chunkBytes)  // warm-up
                var cpu = ProcessStats.cpuSeconds()
                let started = ContinuousClock.now
                try await sender.sendFromNode(
                    to: address, length: UInt64(size), count: count, inFlight: parallel, chunkBytes: chunkBytes)
                let gateway = Result(
                    path: "gateway", size: size, messages: count, seconds: seconds(since: started),
                    cpuSeconds: ProcessStats.cpuSeconds() - cpu)
                cpu = ProcessStats.cpuSeconds()
                let tlsSeconds = try await TLSBaseline.measure(
                    bytes: size * Int64(count), client: try chain.security(0), server: try chain.security(1))
                let tls = Result(
                    path: "nio-ssl", size: size, messages: count, seconds: tlsSeconds,
                    cpuSeconds: ProcessStats.cpuSeconds() - cpu)
                for result in [tcp, gateway, tls] { report(result) }
                if !output.json {
                    let vsTCP = gateway.megabytesPerSecond / tcp.megabytesPerSecond * 100
                    let vsTLS = gateway.megabytesPerSecond / tls.megabytesPerSecond * 100
                    printLine(
                        "gateway \(ByteCount.format(size)): \(vsTCP.formatted(decimals: 0))% of plain TCP node to node, \(vsTLS.formatted(decimals: 0))% of swift-nio-ssl alone"
                    )
                }
            }
        } catch {
            await chain.stop()
            await plain.stop()
            throw error
        }
        await chain.stop()
        await plain.stop()
    }

    /// App to app across gateways of two clusters over an emulated WAN (docs/wan.md), for each link of `--wan`:
    /// the message (each of `sizes`) on links just up and again on the links established, then iperf3 with 8
    /// streams for as many bytes and with one stream for 8 s, through the same link in the same run.
    func wanBench(sizes: [Int64]) async throws {
        if !output.json {
            printLine(
                "link                                 size      first        established  iperf3 -P 8  iperf3 -P 1  vs link  vs -P 8  wire   stripes"
            )
        }
        for entry in wan.split(separator: ";").map({ $0.split(separator: " ").map(String.init) }) {
            // `pairs=N`: N gateway pairs, each on a link of its own with these settings (docs/wan.md).
            let pairs = entry.first { $0.hasPrefix("pairs=") }.map { Int($0.dropFirst(6)) } ?? 1
            guard let pairs, (1...8).contains(pairs) else {
                throw FreightError(
                    .invalidArgument, "pairs= takes 1 to 8 gateway pairs: \(entry.joined(separator: " "))")
            }
            let link = entry.filter { !$0.hasPrefix("pairs=") }
            var parsed = WANSettings()
            try parsed.apply(link)
            let rate = parsed.bitsPerSecond * UInt64(pairs)
            for size in sizes {
                let result = try await WANBench.measure(
                    settings: link, size: size, window: window, pairs: pairs)
                if output.json {
                    printJSON([
                        "path": "wan", "link": entry.joined(separator: " "), "size": size,
                        "freight_bits_per_s": result.freight,
                        "freight_established_bits_per_s": result.freightEstablished, "iperf3_streams": result.streams,
                        "iperf3_bits_per_s": result.iperfMany, "iperf3_one_stream_bits_per_s": result.iperfOne,
                        "wire_ratio": result.wireRatio, "stripes": result.stripes,
                    ])
                } else {
                    // Shares of the established link's figure: what every message after the first reaches.
                    let vsLink = rate > 0 ? result.freightEstablished / Double(rate) * 100 : nil
                    printLine(
                        [
                            entry.joined(separator: " ").padding(toLength: 36, withPad: " ", startingAt: 0),
                            ByteCount.format(size).padding(toLength: 9, withPad: " ", startingAt: 0),
                            "\(Int(result.freight / 1e6)) Mbit/s".padding(toLength: 12, withPad: " ", startingAt: 0),
                            "\(Int(result.freightEstablished / 1e6)) Mbit/s".padding(
                                toLength: 12, withPad: " ", startingAt: 0),
                            "\(Int(result.iperfMany / 1e6)) Mbit/s".padding(toLength: 12, withPad: " ", startingAt: 0),
                            "\(Int(result.iperfOne / 1e6)) Mbit/s".padding(toLength: 12, withPad: " ", startingAt: 0),
                            (vsLink.map { "\($0.formatted(decimals: 0))%" } ?? "-").padding(
                                toLength: 8, withPad: " ", startingAt: 0),
                            "\((result.freightEstablished / result.iperfMany * 100).formatted(decimals: 0))%".padding(
                                toLength: 8, withPad: " ", startingAt: 0),
                            "\(result.wireRatio.formatted(decimals: 3))x".padding(
                                toLength: 7, withPad: " ", startingAt: 0),
                            "\(result.stripes)",
                        ].joined(separator: " "))
                }
            }
        }
    }

    /// An app on n1 sends to an app on n2: app → n1 → n2 → app, over the nodes' Unix sockets and one TCP hop.
    func appToApp(
        _ fabric: InProcessFabric, size: Int64, count: Int, parallel: Int, chunkBytes: Int, windowBytes: Int,
        sharedMemory: SharedMemory = .automatic
    ) async throws -> Result {
        let address = "bench/app/\(sharedMemory == .off ? "socket" : "shm")/\(size)"
        let receiver = try await FreightClient.connect(
            to: fabric.socket(1), label: "bench-rx", windowBytes: windowBytes, sharedMemory: sharedMemory)
        let sender = try await FreightClient.connect(
            to: fabric.socket(0), label: "bench-tx", sharedMemory: sharedMemory)
        let draining = try await drain(receiver, address, parallel: parallel)
        try await fabric.waitForEndpoints(try Address(address), count: 1)
        let chunk = chunkBytes
        var block = ByteBufferAllocator().buffer(capacity: chunk)
        block.writeWithUnsafeMutableBytes(minimumWritableBytes: chunk) { raw in
            PatternFill.fill(UnsafeMutableRawBufferPointer(rebasing: raw[..<chunk]), seed: 99, offset: 0)
            return chunk
        }
        let options = SendOptions(chunkBytes: chunk)
        // As iperf3 repeats one buffer: in shared memory when the node took the app's pools.
        let sharedBlock = try? await sender.allocate(chunk)
        sharedBlock?.withUnsafeMutableBytes { raw in
            block.withUnsafeReadableBytes { raw.copyMemory(from: $0) }
        }
        let repeated = block
        let body: @Sendable (Int64) -> OutgoingBody = { length in
            sharedBlock.map { .repeatingShared(block: $0, length: length) }
                ?? .repeating(block: repeated, length: length)
        }
        _ = try await sender.send(to: address, body: body(min(size, 64 << 20)), options: options)  // warm-up
        let cpu = ProcessStats.cpuSeconds()
        let started = ContinuousClock.now
        var sent = count
        if size <= Int64(Limits.smallBodyBytesMax), batch > 1 {
            // In batches, each message confirmed on its own: as many batches in flight as make `parallel` messages.
            let perBatch = max(1, min(batch, parallel, FreightClient.batchMessagesMax))
            let batches = (count + perBatch - 1) / perBatch
            sent = batches * perBatch  // whole batches: at most one batch more than asked
            let message = OutgoingMessage(to: address, body: body(size), options: options)
            try await inParallel(count: batches, workers: max(1, parallel / perBatch), on: preferred(sender)) {
                for outcome in try await sender.send(Array(repeating: message, count: perBatch)) {
                    _ = try outcome.get()
                }
            }
        } else {
            try await inParallel(count: count, workers: parallel, on: preferred(sender)) {
                _ = try await sender.send(to: address, body: body(size), options: options)
            }
        }
        let result = Result(
            path: sharedMemory == .off ? "app-socket" : "app", size: size, messages: sent,
            seconds: seconds(since: started), cpuSeconds: ProcessStats.cpuSeconds() - cpu)
        draining.cancel()
        await sender.close()
        await receiver.close()
        return result
    }

    /// Two apps of node n1: over its TCP port (bodies through the socket) or its Unix socket with shared memory
    /// (the sender's buffer, filled once beforehand, lent to the receiver, which reads it in place).
    func sameNode(
        _ fabric: InProcessFabric, shared: Bool, size: Int64, count: Int, parallel: Int, chunkBytes: Int,
        windowBytes: Int
    ) async throws -> Result {
        let address = "bench/local/\(shared ? "shm" : "tcp")/\(size)"
        let memory: SharedMemory =
            shared ? .required(sendBytes: Int(size), receiveBytes: Limits.sharedPoolHalfBytesDefault) : .off
        let node = shared ? fabric.socket(0) : fabric.tcp(0)
        let receiver = try await FreightClient.connect(
            to: node, label: "bench-rx", windowBytes: windowBytes, sharedMemory: memory)
        let sender = try await FreightClient.connect(to: node, label: "bench-tx", sharedMemory: memory)
        let draining = try await drain(receiver, address, parallel: parallel)
        try await fabric.waitForEndpoints(try Address(address), count: 1)
        let options = SendOptions(chunkBytes: chunkBytes)
        let body: OutgoingBody
        if shared {
            let buffer = try await sender.allocate(Int(size))
            buffer.withUnsafeMutableBytes { PatternFill.fill($0, seed: 7, offset: 0) }
            body = .shared(buffer)
        } else {
            var block = ByteBufferAllocator().buffer(capacity: chunkBytes)
            block.writeWithUnsafeMutableBytes(minimumWritableBytes: chunkBytes) { raw in
                PatternFill.fill(UnsafeMutableRawBufferPointer(rebasing: raw[..<chunkBytes]), seed: 7, offset: 0)
                return chunkBytes
            }
            body = .repeating(block: block, length: size)
        }
        _ = try await sender.send(to: address, body: body, options: options)  // warm-up
        let cpu = ProcessStats.cpuSeconds()
        let started = ContinuousClock.now
        // Every send lends the same buffer: a lent region is only read, and stays until each lender released it.
        try await inParallel(count: count, workers: parallel) {
            _ = try await sender.send(to: address, body: body, options: options)
        }
        let result = Result(
            path: shared ? "shm" : "tcp", size: size, messages: count, seconds: seconds(since: started),
            cpuSeconds: ProcessStats.cpuSeconds() - cpu)
        draining.cancel()
        await sender.close()
        await receiver.close()
        return result
    }

    /// A gRPC app on n1 sends to a gRPC app on n2 through both nodes' gRPC APIs (HTTP/2 on loopback into each
    /// node, then the fabric between them), one message at a time, as a Python or Go app would.
    func grpcToGRPC(
        _ fabric: InProcessFabric, size: Int64, count: Int, parallel: Int, chunkBytes: Int, toApp: Bool = false
    ) async throws -> Result {
        var logger = Logger(label: "freight.bench")
        logger.logLevel = .warning
        // Each node's gRPC API runs as the service it is in `freight node`, in a task group cancelled at the end.
        let (ports, listening) = AsyncStream<(Int, Int)>.makeStream()
        return try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, host) in ["127.0.0.1", "127.0.0.2"].enumerated() {
                let server = FabricServer(engine: fabric.engines[index], host: host, port: 0, logger: logger) {
                    listening.yield((index, $0))
                }
                group.addTask {
                    do {
                        try await server.run()
                    } catch {
                        listening.finish()
                        throw error
                    }
                }
            }
            var bound: [Int: Int] = [:]
            for await (index, port) in ports {
                bound[index] = port
                if bound.count == 2 { break }
            }
            guard let first = bound[0], let second = bound[1] else {
                throw FreightError(.internalError, "the gRPC servers did not start")
            }
            defer { group.cancelAll() }
            return try await grpcMessages(
                fabric, ports: [first, second], size: size, count: count, parallel: parallel, chunkBytes: chunkBytes,
                toApp: toApp)
        }
    }

    /// Messages from a gRPC app on n1 (client streaming) to a gRPC app on n2 (server streaming), or with `toApp`
    /// to a native app on n2: the API's send leg alone, as a Python app sending to a Swift service uses it.
    private func grpcMessages(
        _ fabric: InProcessFabric, ports: [Int], size: Int64, count: Int, parallel: Int, chunkBytes: Int,
        toApp: Bool
    ) async throws -> Result {
        let address = "bench/grpc/\(toApp ? "app" : "grpc")/\(size)"
        // Parts of 1 MiB, as the server sends its chunks: measured faster than 256 KiB or 4 MiB here.
        var block = [UInt8](repeating: 0, count: 1 << 20)
        block.withUnsafeMutableBytes { PatternFill.fill($0, seed: 5, offset: 0) }
        let data = Data(block)
        let rxTransport = try FabricGRPCClient.transport(host: "127.0.0.2", port: ports[1])
        let txTransport = try FabricGRPCClient.transport(host: "127.0.0.1", port: ports[0])
        return try await withGRPCClient(transport: rxTransport) { rxClient in
            try await withGRPCClient(transport: txTransport) { txClient in
                let rx = Freight_V1_FabricService.Client(wrapping: rxClient)
                let tx = Freight_V1_FabricService.Client(wrapping: txClient)
                let (registered, registration) = AsyncStream<Void>.makeStream()
                let app =
                    toApp ? try await FreightClient.connect(to: fabric.socket(1), label: "bench-rx") : nil
                var draining: Task<Void, any Error>?
                if let app {
                    draining = try await drain(app, address, parallel: parallel)
                    registration.yield()
                }
                let receiving = Task {
                    guard !toApp else { return }
                    try await rx.receive(.with { $0.pattern = address }) { response in
                        var ended = 0
                        for try await item in response.messages {
                            switch item.event {
                            case .registered: registration.yield()
                            case .end:
                                ended += 1
                                if ended == count + 1 { return }
                            default: break
                            }
                        }
                    }
                }
                for await _ in registered { break }
                try await fabric.waitForEndpoints(try Address(address), count: 1)
                @Sendable func send(_ length: Int64) async throws {
                    let request = StreamingClientRequest<Freight_V1_SendRequest> { writer in
                        try await writer.write(
                            .with {
                                $0.header = .with {
                                    $0.destination = address
                                    $0.length = UInt64(length)
                                }
                            })
                        var left = length
                        while left > 0 {
                            let piece = Int(min(left, Int64(data.count)))
                            try await writer.write(.with { $0.data = piece == data.count ? data : data.prefix(piece) })
                            left -= Int64(piece)
                        }
                    }
                    _ = try await tx.send(request: request)
                }
                try await send(min(size, 64 << 20))  // warm-up
                let cpu = ProcessStats.cpuSeconds()
                let started = ContinuousClock.now
                // Each send is its own RPC; the receiver's one stream takes the messages in turn.
                try await inParallel(count: count, workers: parallel) { try await send(size) }
                let result = Result(
                    path: toApp ? "grpc-send" : "grpc", size: size, messages: count, seconds: seconds(since: started),
                    cpuSeconds: ProcessStats.cpuSeconds() - cpu)
                try await receiving.value
                draining?.cancel()
                await app?.close()
                return result
            }
        }
    }

    /// A node's local index with `count` endpoints on 100 nodes, each record decoded from the value the etcd
    /// directory stores (as a node reading the prefix builds it): memory per endpoint, and the latency of resolving
    /// an address (p50, p99 over 200,000 lookups of random registered addresses).
    func directoryBench(count: Int) throws {
        guard count > 0 else { throw FreightError(.invalidArgument, "--endpoints must be at least 1") }
        let layout = EtcdLayout(cluster: "bench")
        let before = ProcessStats.residentBytes()
        let index = EndpointIndex()
        let started = ContinuousClock.now
        for i in 0..<count {
            let node = "n\(i % 100)"
            let text = i % 100 == 99 ? "llm/model-\(i % 1000)/*" : "llm/model-\(i % 1000)/shard-\(i)"
            let record = EndpointRecord(
                key: EndpointKey(node: node, id: UInt64(i)), pattern: try AddressPattern(text),
                group: i % 10 == 0 ? "workers" : nil, app: "app-\(i % 50)")
            let key = layout.endpointKey(record.key)
            guard case .endpoint(let decoded)? = layout.decode(key: key, value: try layout.endpointValue(record)) else {
                throw FreightError(.internalError, "record \(i) did not decode")
            }
            index.upsert(decoded)
        }
        let loaded = seconds(since: started)
        let after = ProcessStats.residentBytes()
        var rng = SystemRandomNumberGenerator()
        let lookups = 200_000
        let addresses = try (0..<1000).map { _ -> Address in
            let i = Int.random(in: 0..<count, using: &rng)
            return try Address("llm/model-\(i % 1000)/shard-\(i)")
        }
        var samples: [Duration] = []
        samples.reserveCapacity(lookups)
        var found = 0
        for n in 0..<lookups {
            let address = addresses[n % addresses.count]
            let start = ContinuousClock.now
            found += index.match(address).count
            samples.append(ContinuousClock.now - start)
        }
        samples.sort()
        func micros(_ d: Duration) -> Double {
            Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
        }
        let p50 = micros(samples[lookups / 2])
        let p99 = micros(samples[lookups * 99 / 100])
        let perEndpoint = Double(after &- before) / Double(count)
        if output.json {
            printJSON([
                "path": "directory", "endpoints": count, "load_seconds": loaded, "resolve_p50_us": p50,
                "resolve_p99_us": p99, "bytes_per_endpoint": perEndpoint, "matches": found,
            ])
        } else {
            printLine(
                "directory: \(count) endpoints on 100 nodes loaded in \(loaded.formatted(decimals: 1)) s; resolve p50 \(p50.formatted(decimals: 2)) µs, p99 \(p99.formatted(decimals: 2)) µs; \(perEndpoint.formatted(decimals: 0)) bytes per endpoint in the index"
            )
        }
        withExtendedLifetime(index) {}
    }

    /// Subscribes `receiver` to `address` and reads up to `parallel` of its messages at once, as they arrive.
    func drain(_ receiver: FreightClient, _ address: String, parallel: Int) async throws -> Task<Void, any Error> {
        let subscription = try await receiver.receive(address)
        let executor = preferred(receiver)
        return Task(executorPreference: executor) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                var running = 0
                for try await message in subscription {
                    // A body that came whole (small) is read at once, as an app would, rather than in a task of its
                    // own; one that comes in chunks waits for its sender, in a task, so others go on meanwhile.
                    if message.body.isWhole {
                        _ = try await message.drain()
                        continue
                    }
                    if running >= parallel {
                        try await group.next()
                        running -= 1
                    }
                    group.addTask(executorPreference: executor) { _ = try await message.drain() }
                    running += 1
                }
            }
        }
    }

    /// The executor an app's send and receive loops run on: the client's own thread, as an app that moves many small
    /// messages would (``FreightClient/executor``).
    func preferred(_ client: FreightClient) -> (any TaskExecutor)? {
        appExecutor == "default" ? nil : client.executor
    }

    /// Runs `count` sends, at most `workers` at a time.
    func inParallel(
        count: Int, workers: Int, on executor: (any TaskExecutor)? = nil,
        _ send: @escaping @Sendable () async throws -> Void
    ) async throws {
        let workers = max(1, min(workers, count))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<workers {
                let share = count / workers + (worker < count % workers ? 1 : 0)
                group.addTask(executorPreference: executor) {
                    for _ in 0..<share { try await send() }
                }
            }
            try await group.waitForAll()
        }
    }

    func seconds(since start: ContinuousClock.Instant) -> Double {
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    func report(_ result: Result) {
        if output.json {
            printJSON([
                "path": result.path, "bytes": result.size, "messages": result.messages, "seconds": result.seconds,
                "mbps": result.megabytesPerSecond, "cpu_s_per_gib": result.cpuSecondsPerGiB,
                "peak_rss_bytes": ProcessStats.peakResidentBytes(),
            ])
        } else {
            let columns = [
                result.path, ByteCount.format(result.size), "\(result.messages)",
                result.megabytesPerSecond.formatted(decimals: 0), result.cpuSecondsPerGiB.formatted(decimals: 3),
            ]
            let widths = [11, 10, 10, 10, 10]
            printLine(
                columns.enumerated().map {
                    $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0)
                }.joined())
        }
    }
}
