import ArgumentParser
import Foundation
import FreightCUDA
import FreightClient
import FreightCore
import FreightTesting
import FreightWire

/// `freight gpu`: what the CUDA driver sees on this machine (docs/gpu.md), or plainly why there is nothing.
struct GPUCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gpu", abstract: "Say what the CUDA driver sees here (loaded at run time), or why there is none.")

    @Option(name: .customLong("driver"), help: "The driver library to open.") var driver = "libcuda.so.1"
    @Flag(
        name: .customLong("check"),
        help:
            "Check GPU 0's transports: copies both ways through pinned host memory (their rates measured) and an IPC handle opened by another process."
    )
    var check = false
    @Option(name: .customLong("size"), help: "Bytes each --check copy moves.") var size = "256MiB"
    @Option(name: .customLong("ipc-read"), help: .hidden) var ipcRead: String?
    @Option(name: .customLong("ipc-receive"), help: .hidden) var ipcReceive: String?
    @Option(name: .customLong("staged-receive"), help: .hidden) var stagedReceive: String?
    @Option(name: .customLong("messages"), help: "Device bodies --check hands over through a node.") var messages = 10
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let loaded: CUDADriver
        do {
            loaded = try CUDADriver.load(library: driver)
        } catch {
            if check || ipcRead != nil || ipcReceive != nil || stagedReceive != nil { fail(error) }
            if output.json {
                printJSON(["driver": NSNull(), "reason": error.message, "gpus": [Any]()])
            } else {
                printLine("no GPU transport on this machine: \(error.message)")
            }
            return
        }
        if let ipcRead {
            do {
                printJSON(try GPUCheck.readOpened(ipcRead, driver: loaded, count: Int(try ByteCount.parse(size))))
            } catch {
                fail(error)
            }
            return
        }
        if let ipcReceive {
            do {
                printJSON(
                    try await GPUCheck.receive(
                        at: ipcReceive, driver: loaded, count: Int(try ByteCount.parse(size)), messages: messages))
            } catch {
                fail(error)
            }
            return
        }
        if let stagedReceive {
            do {
                printJSON(
                    try await GPUCheck.receiveStaged(
                        at: stagedReceive, driver: loaded, count: Int(try ByteCount.parse(size)), messages: messages))
            } catch {
                fail(error)
            }
            return
        }
        if check {
            do {
                let check = GPUCheck(driver: loaded, count: Int(try ByteCount.parse(size)))
                var report = try await check.run()
                for (key, value) in try await check.handOver(messages: max(2, messages)) { report[key] = value }
                // Between nodes: staged through host memory, beside host memory to host memory in the same run.
                for (key, value) in try await check.staged(messages: max(2, messages / 2)) { report[key] = value }
                report["ok"] =
                    report["ok"] as? Bool == true && report["handover_matches"] as? Bool == true
                    && report["handover_received_in_device_memory"] as? Bool == true
                    && report["staged_matches"] as? Bool == true && report["staged_arrived"] as? String == "staged"
                // Staging the same bytes instead: device → host → device, at the copy rates measured above.
                if let toHost = report["device_to_host_gb_per_s"] as? Double,
                    let toDevice = report["host_to_device_gb_per_s"] as? Double, toHost > 0, toDevice > 0,
                    let best = report["handover_best_us"] as? Double, best > 0
                {
                    let staging = Double(check.count) / (toHost * 1e3) + Double(check.count) / (toDevice * 1e3)
                    report["staging_through_host_us"] = (staging * 10).rounded() / 10
                    report["handover_times_faster_than_staging"] = (staging / best * 10).rounded() / 10
                }
                if output.json {
                    printJSON(report)
                } else {
                    for (key, value) in report.sorted(by: { $0.key < $1.key }) { printLine("\(key): \(value)") }
                }
                if report["ok"] as? Bool != true { throw ExitCode(1) }
            } catch let exit as ExitCode {
                throw exit
            } catch {
                fail(error)
            }
            return
        }
        do {
            let version = try loaded.version()
            let devices = try loaded.devices()
            if output.json {
                printJSON([
                    "driver": loaded.library, "cuda": version,
                    "gpus": devices.map {
                        [
                            "index": $0.index, "uuid": $0.uuid, "name": $0.name, "memory_bytes": $0.memoryBytes,
                            "pci_bus": $0.pciBus,
                            "can_map_host_memory": $0.canMapHostMemory, "unified_addressing": $0.unifiedAddressing,
                            "async_engines": $0.asyncEngines,
                            "transports": $0.transports,
                        ] as [String: Any]
                    },
                ])
            } else {
                printLine(
                    "CUDA \(version) driver (\(loaded.library)): \(devices.count) GPU\(devices.count == 1 ? "" : "s")")
                for device in devices {
                    printLine(
                        "  GPU \(device.index) (\(device.uuid)): \(device.name), \(ByteCount.format(Int64(device.memoryBytes))), PCI bus \(device.pciBus), \(device.asyncEngines) copy engines\(device.canMapHostMemory ? ", pins host memory" : "")\(device.unifiedAddressing ? ", unified addressing" : ""); transports: \(device.transports.isEmpty ? "none" : device.transports.joined(separator: ", "))"
                    )
                }
            }
        } catch {
            fail(error)
        }
    }
}

/// `freight gpu --check`: GPU 0's driver calls that Freight's GPU transports are built from, on real memory: a copy
/// host → device and back through pinned host memory (the copy engines' rates, best of a few), and the allocation's
/// IPC handle opened and read by another process (this binary again, `--ipc-read`), its CRC32C compared.
struct GPUCheck {
    let driver: CUDADriver
    let count: Int
    static let rounds = 5

    func run() async throws -> [String: Any] {
        let gpu = try CUDAGPU(driver, index: 0)
        let name = try driver.devices().first?.name ?? ""
        let device = try gpu.allocate(count)
        defer { try? gpu.free(device) }
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
        let target = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
        defer {
            source.deallocate()
            target.deallocate()
        }
        PatternFill.fill(source, seed: 23, offset: 0)
        target.initializeMemory(as: UInt8.self, repeating: 0)
        try gpu.pin(source.baseAddress!, count: count)
        defer { try? gpu.unpin(source.baseAddress!) }
        try gpu.pin(target.baseAddress!, count: count)
        defer { try? gpu.unpin(target.baseAddress!) }
        let stream = try gpu.makeStream()
        defer { try? gpu.destroy(stream) }
        func best(_ copy: () throws(FreightError) -> Void) throws(FreightError) -> Double {
            var fastest = Duration.seconds(3600)
            for _ in 0..<Self.rounds {
                let started = ContinuousClock.now
                try copy()
                try gpu.synchronize(stream)
                fastest = min(fastest, ContinuousClock.now - started)
            }
            let seconds = Double(fastest.components.seconds) + Double(fastest.components.attoseconds) / 1e18
            return Double(count) / max(seconds, 1e-9) / 1e9
        }
        let toDevice = try best { () throws(FreightError) in
            try gpu.copy(toDevice: device, from: source.baseAddress!, count: count, on: stream)
        }
        let toHost = try best { () throws(FreightError) in
            try gpu.copy(toHost: target.baseAddress!, from: device, count: count, on: stream)
        }
        let copiesMatch = memcmp(source.baseAddress!, target.baseAddress!, count) == 0
        let crc = CRC32C.checksum(UnsafeRawBufferPointer(source))
        let handle = try gpu.ipcHandle(of: device)
        let reader = try await Self.readInAnotherProcess(handle, driver: driver.library, count: count)
        let ipcMatches = (reader["crc32c"] as? Int).map { UInt32(clamping: $0) } == crc
        return [
            "gpu": name, "driver": driver.library, "bytes": count,
            "host_to_device_gb_per_s": (toDevice * 100).rounded() / 100,
            "device_to_host_gb_per_s": (toHost * 100).rounded() / 100,
            "copies_match": copiesMatch, "ipc_read_matches": ipcMatches,
            "ipc_open_us": reader["open_us"] ?? NSNull(), "ok": copiesMatch && ipcMatches,
        ]
    }

    /// A body of `count` bytes in device memory handed over through a node to another process (this binary again,
    /// `--ipc-receive`, which connects naming GPU 0) `messages` times: the first message lends the allocation and
    /// has the receiver open its handle; the rest reuse both (docs/gpu.md). Each is timed from the send to its
    /// delivery report, which comes once the receiver dropped every region. Beside them, staging the same bytes
    /// through host memory (device → host → device) at the copy rates `run` measured.
    func handOver(messages: Int) async throws -> [String: Any] {
        let gpu = try CUDAGPU(driver, index: 0)
        let device = try gpu.allocate(count)
        defer { try? gpu.free(device) }
        let stream = try gpu.makeStream()
        defer { try? gpu.destroy(stream) }
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
        defer { source.deallocate() }
        PatternFill.fill(source, seed: 29, offset: 0)
        try gpu.copy(toDevice: device, from: source.baseAddress!, count: count, on: stream)
        try gpu.synchronize(stream)
        let crc = CRC32C.checksum(UnsafeRawBufferPointer(source))

        let fabric = try await InProcessFabric.start(nodes: 1, cluster: "gpu-check")
        do {
            let socket = fabric.engines[0].configuration.socketPath!
            let child = try CheckChild([
                "gpu", "--driver", driver.library, "--ipc-receive", socket, "--size", "\(count)", "--messages",
                "\(messages + 1)",
            ])
            var times: [Double] = []
            do {
                try await fabric.waitForEndpoints(try Address(Self.handOverAddress), count: 1)
                let sender = try await FreightClient.connect(
                    to: .unix(path: socket), label: "gpu-check", sharedMemory: .required())
                let body = try DeviceBuffer(gpu: gpu, pointer: device, count: count)
                // One more than timed: the receiver copies the last out of its mapping to check it, untimed.
                for index in 0...messages {
                    let seconds = try await Self.timed(sender, Self.handOverAddress, .device(body))
                    if index < messages { times.append(seconds * 1e6) }
                }
                await sender.close()
            } catch {
                child.process.terminate()
                throw error
            }
            let received = try await child.report("received the device bodies")
            await fabric.stop()
            let warm = times.dropFirst().min() ?? times[0]
            return [
                "handover_messages": messages,
                "handover_first_us": (times[0] * 10).rounded() / 10,
                "handover_best_us": (warm * 10).rounded() / 10,
                "handover_matches": (received["crc32c"] as? Int).map { UInt32(clamping: $0) } == crc,
                "handover_received_in_device_memory": received["in_device_memory"] as? Bool ?? false,
            ]
        } catch {
            await fabric.stop()
            throw error
        }
    }

    static let handOverAddress = "gpu/check"

    /// The receiving process of ``handOver(messages:)``: connects to the node at `socket` naming GPU 0, takes
    /// `messages` device bodies of `count` bytes (within a minute), copies the last to host memory for its
    /// CRC32C, and says whether every chunk came as device memory.
    static func receive(at socket: String, driver: CUDADriver, count: Int, messages: Int) async throws -> [String: Any]
    {
        let gpu = try CUDAGPU(driver, index: 0)
        let client = try await FreightClient.connect(
            to: .unix(path: socket), label: "gpu-check-receiver", sharedMemory: .required(), gpus: [gpu])
        let inbox = try await client.receive(handOverAddress)
        let host = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
        defer { host.deallocate() }
        let stream = try gpu.makeStream()
        defer { try? gpu.destroy(stream) }
        var inDevice = true
        var crc: UInt32 = 0
        let deadline = ContinuousClock.now + .seconds(60)
        var iterator = inbox.makeAsyncIterator()
        for index in 0..<messages {
            guard ContinuousClock.now < deadline, let message = try await iterator.next() else {
                throw FreightError(.timedOut, "received \(index) of \(messages) device bodies")
            }
            for try await chunk in message.body {
                guard let region = chunk.device else {
                    inDevice = false
                    continue
                }
                if index == messages - 1 {
                    try gpu.copy(
                        toHost: host.baseAddress! + Int(chunk.offset), from: region.pointer, count: region.count,
                        on: stream)
                }
            }
            if index == messages - 1 {
                try gpu.synchronize(stream)
                crc = CRC32C.checksum(UnsafeRawBufferPointer(host))
            }
        }
        await client.close()
        return ["crc32c": Int(crc), "in_device_memory": inDevice]
    }

    /// Runs `freight gpu --ipc-read HANDLE` and returns what it printed.
    static func readInAnotherProcess(_ handle: CUDAIPCHandle, driver: String, count: Int) async throws
        -> [String: Any]
    {
        let child = try CheckChild([
            "gpu", "--driver", driver, "--ipc-read", handle.bytes.map { String(format: "%02x", $0) }.joined(),
            "--size", "\(count)",
        ])
        return try await child.report("opens the IPC handle")
    }

    /// The child's side: opens `hex` (an IPC handle) on GPU 0, copies `count` bytes to host memory and returns their
    /// CRC32C and how long the open took.
    static func readOpened(_ hex: String, driver: CUDADriver, count: Int) throws(FreightError) -> [String: Any] {
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex, let next = hex.index(index, offsetBy: 2, limitedBy: hex.endIndex),
            let byte = UInt8(hex[index..<next], radix: 16)
        {
            bytes.append(byte)
            index = next
        }
        let handle = try CUDAIPCHandle(checking: bytes)
        let gpu = try CUDAGPU(driver, index: 0)
        let started = ContinuousClock.now
        let opened = try gpu.open(handle)
        let openTook = ContinuousClock.now - started
        defer { try? gpu.close(opened: opened) }
        let host = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
        defer { host.deallocate() }
        let stream = try gpu.makeStream()
        defer { try? gpu.destroy(stream) }
        try gpu.copy(toHost: host.baseAddress!, from: opened, count: count, on: stream)
        try gpu.synchronize(stream)
        let micros = Double(openTook.components.attoseconds) / 1e12 + Double(openTook.components.seconds) * 1e6
        return ["crc32c": Int(CRC32C.checksum(UnsafeRawBufferPointer(host))), "open_us": (micros * 10).rounded() / 10]
    }
}

/// This binary run again as the other side of a check (`--ipc-read`, `--ipc-receive`, `--staged-receive`): its
/// standard output, one JSON object, read while it runs.
struct CheckChild {
    let process = Process()
    private let printed: Task<Data, Never>

    init(_ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let reading = out.fileHandleForReading
        printed = Task.detached { reading.readDataToEndOfFile() }
    }

    /// Waits for it and returns what it printed; throws, saying what it did (`what`), when it failed.
    func report(_ what: String) async throws -> [String: Any] {
        let data = await printed.value
        process.waitUntilExit()
        guard process.terminationStatus == 0,
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else {
            throw FreightError(.internalError, "the process that \(what) exited \(process.terminationStatus)")
        }
        return object
    }

}
