import Foundation
import FreightCUDA
import FreightCore
import FreightTesting
import Testing

/// The CUDA driver loaded at run time (docs/gpu.md): on a machine without NVIDIA's driver, or with a library that is
/// not it, Freight says plainly what is missing instead of failing to start or to build.
@Suite struct CUDADriverTests {
    @Test func aMissingDriverIsSaidPlainly() throws {
        let error = #expect(throws: FreightError.self) {
            try CUDADriver.load(library: "libcuda-freight-absent.so.1")
        }
        #expect(error?.code == .io)
        #expect(error?.message.contains("no NVIDIA driver") == true, "\(String(describing: error))")
        #expect(error?.message.contains("libcuda-freight-absent.so.1") == true)
    }

    /// A library that opens but is not CUDA's (the C library) is refused, naming the first function it lacks.
    @Test func aLibraryThatIsNotTheDriverIsRefused() throws {
        let error = #expect(throws: FreightError.self) { try CUDADriver.load(library: "libc.so.6") }
        #expect(error?.message.contains("has no cuInit") == true, "\(String(describing: error))")
    }

    /// Where this machine has the driver, it initialises and describes its GPUs; where it has none, the default
    /// load fails with one of the two plain reasons (no driver, or no GPU), never anything else.
    @Test func theDefaultLoadEitherWorksOrSaysWhy() throws {
        do {
            let driver = try CUDADriver.load()
            let devices = try driver.devices()
            #expect(devices.map(\.index) == Array(devices.indices))
            #expect(devices.allSatisfy { !$0.name.isEmpty && $0.memoryBytes > 0 })
        } catch {
            #expect(
                error.message.contains("no NVIDIA driver") || error.message.contains("cuInit failed"),
                "\(error.message)")
        }
    }
}

/// The driver calls Freight's GPU transports are built from — memory, pinned host memory, streams, events, IPC
/// handles — run against the stand-in driver (Tests/StandInCUDA: host memory answering the driver API, not a GPU),
/// so that these code paths are exercised on every machine; scripts/gpu-check.sh runs them against a real GPU.
@Suite struct StandInDriverTests {
    static func driver() throws -> CUDADriver {
        try CUDADriver.load(library: try StandInCUDA.library())
    }

    @Test func theStandInIsLoadedAndSaysWhatItIs() throws {
        let driver = try Self.driver()
        #expect(try driver.version() == "12.4")
        let devices = try driver.devices()
        #expect(devices.count == 1)
        #expect(devices.first?.name.contains("not a GPU") == true)
        #expect(devices.first?.memoryBytes == 1 << 30)
        #expect(devices.first?.canMapHostMemory == true && devices.first?.unifiedAddressing == true)
    }

    /// Host → device → host through pinned memory on a stream, an event marking the end: the bytes come back.
    @Test func bytesGoThereAndBackThroughPinnedMemory() throws {
        let gpu = try CUDAGPU(try Self.driver(), index: 0)
        let count = 4 << 20
        let device = try gpu.allocate(count)
        defer { try? gpu.free(device) }
        #expect(try gpu.allocation(containing: device + 4096) == (device, count))
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
        let target = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
        defer {
            source.deallocate()
            target.deallocate()
        }
        var random = SeededRandom(seed: 23)
        for index in 0..<count { source[index] = UInt8(truncatingIfNeeded: random.next()) }
        target.initializeMemory(as: UInt8.self, repeating: 0)
        try gpu.pin(source.baseAddress!, count: count)
        try gpu.pin(target.baseAddress!, count: count)
        let stream = try gpu.makeStream()
        let event = try gpu.makeEvent()
        try gpu.copy(toDevice: device, from: source.baseAddress!, count: count, on: stream)
        try gpu.copy(toHost: target.baseAddress!, from: device, count: count, on: stream)
        try gpu.record(event, on: stream)
        try gpu.synchronize(event)
        #expect(try gpu.isComplete(event))
        #expect(memcmp(source.baseAddress!, target.baseAddress!, count) == 0)
        try gpu.destroy(event)
        try gpu.destroy(stream)
        try gpu.unpin(source.baseAddress!)
        try gpu.unpin(target.baseAddress!)
    }

    /// An allocation's IPC handle maps the same bytes where it is opened (the stand-in lets its own process open
    /// it; NVIDIA's driver allows only another process, which the DEVICE frames' tests use).
    @Test func anIPCHandleNamesTheSameBytes() throws {
        let gpu = try CUDAGPU(try Self.driver(), index: 0)
        let device = try gpu.allocate(1 << 20)
        defer { try? gpu.free(device) }
        let stream = try gpu.makeStream()
        let bytes = [UInt8](repeating: 0xA5, count: 1 << 20)
        try bytes.withUnsafeBytes { try gpu.copy(toDevice: device, from: $0.baseAddress!, count: $0.count, on: stream) }
        let handle = try gpu.ipcHandle(of: device)
        #expect(handle.bytes.count == CUDAIPCHandle.count)
        let opened = try gpu.open(handle)
        var read = [UInt8](repeating: 0, count: 1 << 20)
        try read.withUnsafeMutableBytes {
            try gpu.copy(toHost: $0.baseAddress!, from: opened, count: $0.count, on: stream)
        }
        try gpu.synchronize(stream)
        #expect(read == bytes)
        try gpu.close(opened: opened)
        #expect(throws: FreightError.self) { try CUDAIPCHandle(checking: Array(handle.bytes.dropLast())) }
    }

    /// Every failing call names itself and the driver's error.
    @Test func failingCallsSayWhichAndWhy() throws {
        let gpu = try CUDAGPU(try Self.driver(), index: 0)
        let tooMuch = #expect(throws: FreightError.self) { try gpu.allocate(2 << 30) }
        #expect(tooMuch?.message.contains("cuMemAlloc(2147483648) failed: CUDA_ERROR_OUT_OF_MEMORY") == true)
        let unknown = #expect(throws: FreightError.self) { try gpu.free(0x1000) }
        #expect(unknown?.message == "cuMemFree failed: CUDA_ERROR_INVALID_VALUE: invalid argument")
        let absent = #expect(throws: FreightError.self) { try CUDAGPU(gpu.driver, index: 1) }
        #expect(absent?.message.contains("CUDA_ERROR_INVALID_DEVICE") == true)
    }

    /// `freight gpu` describes what the driver sees, or says plainly why there is nothing (here: a driver that
    /// finds no device, as one whose GPUs are hidden from the process).
    @Test func freightGPUSaysWhatItSeesOrWhy() async throws {
        let library = try StandInCUDA.library()
        let seen = try await FreightProcess.run(["gpu", "--driver", library, "--json"])
        #expect(seen.status == 0, "\(seen.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data((seen.stdout.first ?? "{}").utf8)) as? [String: Any]
        let gpus = object?["gpus"] as? [[String: Any]] ?? []
        #expect(gpus.count == 1 && (gpus.first?["name"] as? String)?.contains("not a GPU") == true, "\(seen.stdout)")
        #expect(gpus.first?["transports"] as? [String] == ["cuda-ipc", "gpu-staged"])
        let hidden = try await FreightProcess.run(
            ["gpu", "--driver", library], environment: ["FREIGHT_STANDIN_CUDA_DEVICES": "0"])
        #expect(hidden.status == 0)
        #expect(
            hidden.stdout.first?.contains("no GPU transport on this machine: cuInit failed: CUDA_ERROR_NO_DEVICE")
                == true, "\(hidden.stdout)")
    }

    /// `freight gpu --check` copies both ways through pinned memory (their rates measured), has another process
    /// open the allocation's IPC handle and read the same bytes, hands device bodies over to another process
    /// through a node of its own, and stages them through two nodes into another process's GPU memory.
    @Test func freightGPUCheckCopiesAndSharesAcrossProcesses() async throws {
        let run = try await FreightProcess.run(
            ["gpu", "--driver", try StandInCUDA.library(), "--check", "--size", "16MiB", "--json"])
        #expect(run.status == 0, "\(run.stderr) \(run.stdout)")
        let report = try JSONSerialization.jsonObject(with: Data((run.stdout.first ?? "{}").utf8)) as? [String: Any]
        #expect(report?["ok"] as? Bool == true, "\(run.stdout)")
        #expect(report?["copies_match"] as? Bool == true && report?["ipc_read_matches"] as? Bool == true)
        #expect((report?["host_to_device_gb_per_s"] as? Double ?? 0) > 0)
        #expect((report?["device_to_host_gb_per_s"] as? Double ?? 0) > 0)
        #expect(report?["bytes"] as? Int == 16 << 20)
        // Device bodies handed over through a node to another process: the same bytes, read as device memory.
        #expect(report?["handover_matches"] as? Bool == true, "\(run.stdout)")
        #expect(report?["handover_received_in_device_memory"] as? Bool == true)
        #expect((report?["handover_best_us"] as? Double ?? 0) > 0)
        #expect(report?["staging_through_host_us"] is Double)
        // Between two nodes: staged through host memory into the receiving process's GPU memory, the same bytes,
        // measured beside host memory to host memory in the same run.
        #expect(report?["staged_matches"] as? Bool == true, "\(run.stdout)")
        #expect(report?["staged_arrived"] as? String == "staged")
        #expect((report?["staged_gb_per_s"] as? Double ?? 0) > 0)
        #expect((report?["host_app_to_app_gb_per_s"] as? Double ?? 0) > 0)
        #expect(report?["staged_percent_of_host"] is Double)
    }
}
