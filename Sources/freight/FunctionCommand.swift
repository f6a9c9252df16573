import ArgumentParser
import Foundation
import FreightCore
import FreightFunctions
import WAT

/// `freight fn`: WebAssembly filters and functions (docs/functions.md).
struct FunctionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fn", abstract: "WebAssembly filters and functions: assemble and check modules.",
        subcommands: [AssembleCommand.self, CheckCommand.self])

    /// `freight fn assemble MODULE.wat -o MODULE.wasm`: WebAssembly text to binary, with WasmKit's WAT.
    struct AssembleCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "assemble", abstract: "Assemble WebAssembly text (.wat) into a module (.wasm).")

        @Argument(help: "The .wat file.") var input: String
        @Option(name: [.customShort("o"), .customLong("out")], help: "The .wasm file to write (default: INPUT.wasm).")
        var out: String?

        func run() throws {
            do {
                guard let text = FileManager.default.contents(atPath: input) else {
                    throw FreightError(.io, "cannot read \(input)")
                }
                let binary: [UInt8]
                do {
                    binary = try wat2wasm(String(decoding: text, as: UTF8.self))
                } catch {
                    throw FreightError(.invalidArgument, "\(input): \(error)")
                }
                let path = out ?? (input.hasSuffix(".wat") ? String(input.dropLast(4)) : input) + ".wasm"
                guard FileManager.default.createFile(atPath: path, contents: Data(binary)) else {
                    throw FreightError(.io, "cannot write \(path)")
                }
                // Checked as a node would load it: ABI v1, nothing imported that it may not have.
                let module = try FunctionModule(name: Self.name(path), bytes: binary, capabilities: [.log])
                printLine("\(path): \(binary.count) bytes, ABI v1, sha256 \(module.digest)")
            } catch {
                fail(error)
            }
        }

        static func name(_ path: String) -> String {
            let file = (path as NSString).lastPathComponent
            return file.split(separator: ".").first.map(String.init) ?? file
        }
    }

    /// `freight fn check MODULE`: whether a node would load it, and what it declares.
    struct CheckCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check",
            abstract: "Check that a module speaks Freight's function ABI and say what it declares.")

        @Argument(help: "The .wasm or .wat file.") var module: String
        @Flag(name: .customLong("grant-log"), help: "Grant freight.log, as a node's --filter-grant-log would.")
        var grantLog =
            false

        func run() throws {
            do {
                guard let bytes = FileManager.default.contents(atPath: module) else {
                    throw FreightError(.io, "cannot read \(module)")
                }
                let loaded = try FunctionModule(
                    name: AssembleCommand.name(module), bytes: Array(bytes), capabilities: grantLog ? [.log] : [])
                printLine(
                    "\(module): ABI v1, sha256 \(loaded.digest), \(loaded.resumable ? "resumable" : "keeps state across chunks")\(loaded.rewritesAttributes ? ", rewrites attributes" : "")"
                )
            } catch {
                fail(error)
            }
        }
    }
}
