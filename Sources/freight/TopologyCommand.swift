import ArgumentParser
import Foundation
import FreightCore
import FreightDirectory
import FreightRouting

/// Where a node's topology comes from: a file, and nvidia-smi where it is on PATH (docs/topology.md).
struct TopologyOptions: ParsableArguments {
    @Option(name: .customLong("topology"), help: "JSON file describing GPUs, NICs, rails and NVLink domains.")
    var file: String?
    @Option(name: .customLong("nvidia-smi"), help: "auto: read nvidia-smi where it is on PATH; off: never.")
    var nvidiaSMI = "auto"

    /// The file's word over what nvidia-smi says; warnings for what could not be read.
    func load(node: String) throws(FreightError) -> (topology: Topology, warnings: [String]) {
        guard ["auto", "off"].contains(nvidiaSMI) else {
            throw FreightError(.invalidArgument, "--nvidia-smi \(nvidiaSMI): use auto or off")
        }
        var fromFile = Topology()
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw FreightError(.invalidArgument, "--topology \(file): cannot read the file")
            }
            fromFile = try Topology(json: [UInt8](data))
        }
        var warnings: [String] = []
        var discovered = Topology()
        if nvidiaSMI == "auto", let tool = Self.onPath("nvidia-smi") {
            do {
                let matrix = try NvidiaTopoMatrix(parsing: try Self.run(tool, ["topo", "-m"]))
                let nvlink = try? NvlinkStatus(parsing: try Self.run(tool, ["nvlink", "--status"]))
                discovered = Topology.discovered(matrix: matrix, nvlink: nvlink, node: node)
            } catch {
                warnings.append("nvidia-smi: \(error); using the topology file only")
            }
        }
        let merged = Topology.merging(fromFile, over: discovered)
        try merged.validate()
        return (merged, warnings)
    }

    static func onPath(_ name: String) -> String? {
        for folder in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let path = "\(folder)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    /// Runs a tool for at most 10 s and returns what it printed (at most `Limits.topologyInputBytesMax`).
    static func run(_ tool: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        // A hung driver must not hang the node: stop the tool after 10 s.
        DispatchQueue.global().asyncAfter(deadline: .now() + 10) { if process.isRunning { process.terminate() } }
        var output = Data()
        let reader = pipe.fileHandleForReading
        while true {
            let piece = reader.availableData
            if piece.isEmpty { break }
            output += piece
            if output.count > Limits.topologyInputBytesMax {
                process.terminate()
                throw FreightError(.io, "\(tool) \(arguments.joined(separator: " ")) printed too much")
            }
        }
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw FreightError(
                .io, "\(tool) \(arguments.joined(separator: " ")) exited with \(process.terminationStatus)")
        }
        return String(decoding: output, as: UTF8.self)
    }
}

struct TopologyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topology", abstract: "Print this machine's topology as a node would announce it.")

    @Option(name: .customLong("name"), help: "Node name (names node-local NVLink domains).")
    var name = "local"
    @OptionGroup var source: TopologyOptions

    func run() async throws {
        do {
            let (topology, warnings) = try source.load(node: name)
            for warning in warnings { FileHandle.standardError.write(Data("warning: \(warning)\n".utf8)) }
            printLine(topology.json())
        } catch {
            fail(error)
        }
    }
}
