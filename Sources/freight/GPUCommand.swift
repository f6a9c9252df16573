import ArgumentParser
import Foundation
import FreightCUDA
import FreightCore

/// `freight gpu`: what the CUDA driver sees on this machine (docs/gpu.md), or plainly why there is nothing.
struct GPUCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gpu", abstract: "Say what the CUDA driver sees here (loaded at run time), or why there is none.")

    @Option(name: .customLong("driver"), help: "The driver library to open.") var driver = "libcuda.so.1"
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let loaded: CUDADriver
        do {
            loaded = try CUDADriver.load(library: driver)
        } catch {
            if output.json {
                printJSON(["driver": NSNull(), "reason": error.message, "gpus": [Any]()])
            } else {
                printLine("no GPU transport on this machine: \(error.message)")
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
                            "index": $0.index, "name": $0.name, "memory_bytes": $0.memoryBytes, "pci_bus": $0.pciBus,
                            "can_map_host_memory": $0.canMapHostMemory, "unified_addressing": $0.unifiedAddressing,
                            "async_engines": $0.asyncEngines,
                        ] as [String: Any]
                    },
                ])
            } else {
                printLine(
                    "CUDA \(version) driver (\(loaded.library)): \(devices.count) GPU\(devices.count == 1 ? "" : "s")")
                for device in devices {
                    printLine(
                        "  GPU \(device.index): \(device.name), \(ByteCount.format(Int64(device.memoryBytes))), PCI bus \(device.pciBus), \(device.asyncEngines) copy engines\(device.canMapHostMemory ? ", pins host memory" : "")\(device.unifiedAddressing ? ", unified addressing" : "")"
                    )
                }
            }
        } catch {
            fail(error)
        }
    }
}
