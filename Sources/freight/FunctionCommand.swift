import ArgumentParser
import Foundation
import FreightClient
import FreightCore
import FreightFunctions
import NIOCore
import WAT

/// `freight fn`: WebAssembly filters and functions (docs/functions.md).
struct FunctionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fn",
        abstract:
            "WebAssembly filters and functions: assemble and check modules; deploy, call, list and remove functions.",
        subcommands: [
            AssembleCommand.self, CheckCommand.self, DeployCommand.self, ListCommand.self, RemoveCommand.self,
            CallCommand.self,
        ])

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

    /// `freight fn deploy MODULE --address ADDRESS [--max-instances N] [--config CONFIG]`.
    struct DeployCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "deploy",
            abstract: "Bind a module to an address across the cluster: nodes that serve functions run it on demand.")

        @Argument(help: "The .wasm or .wat file.") var module: String
        @Option(name: .customLong("address"), help: "The address messages to the function are sent to.")
        var address: String
        @Option(name: .customLong("max-instances"), help: "At most this many messages run it at once, cluster-wide.")
        var maxInstances = 1
        @Option(name: .customLong("config"), help: "The string its begin() is given.") var config = ""
        @OptionGroup var via: ViaOption
        @OptionGroup var output: OutputOptions

        func run() async throws {
            do {
                guard let bytes = FileManager.default.contents(atPath: module) else {
                    throw FreightError(.io, "cannot read \(module)")
                }
                // Checked here first, as every node will load it.
                _ = try FunctionModule(name: AssembleCommand.name(module), bytes: Array(bytes))
                let answer = try await FunctionCommand.ask(
                    FunctionHostAddresses.deploy, body: Array(bytes), via: via,
                    attributes: [
                        "address": address, "max-instances": String(maxInstances), "config": config,
                        "name": AssembleCommand.name(module),
                    ])
                if output.json {
                    printLine(answer)
                } else {
                    let record = FunctionCommand.object(answer)
                    printLine(
                        "function \(record["address"] ?? address): module \(record["name"] ?? "") (\(record["module_bytes"] ?? "?") bytes, sha256 \(String(describing: record["sha256"] ?? "").prefix(12))), at most \(record["max_instances"] ?? maxInstances) at once; deployed by \(record["deployed_by"] ?? "?")"
                    )
                }
            } catch {
                fail(error)
            }
        }
    }

    /// `freight fn list`.
    struct ListCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list", abstract: "The functions bound in the cluster.")
        @OptionGroup var via: ViaOption
        @OptionGroup var output: OutputOptions

        func run() async throws {
            do {
                let answer = try await FunctionCommand.ask(FunctionHostAddresses.list, body: [], via: via)
                if output.json { return printLine(answer) }
                let records =
                    (try? JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [[String: Any]]) ?? []
                if records.isEmpty { return printLine("no functions are bound") }
                for record in records {
                    printLine(
                        "\(record["address"] ?? "?")  \(record["name"] ?? "")  sha256 \(String(describing: record["sha256"] ?? "").prefix(12))  \(record["module_bytes"] ?? 0) bytes  max-instances \(record["max_instances"] ?? 0)  by \(record["deployed_by"] ?? "?")"
                    )
                }
            } catch {
                fail(error)
            }
        }
    }

    /// `freight fn remove ADDRESS`.
    struct RemoveCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "remove", abstract: "Unbind the function at an address.")
        @Argument(help: "The function's address.") var address: String
        @OptionGroup var via: ViaOption

        func run() async throws {
            do {
                _ = try Address(address)
                _ = try await FunctionCommand.ask(FunctionHostAddresses.remove, body: Array(address.utf8), via: via)
                printLine("function \(address) removed")
            } catch {
                fail(error)
            }
        }
    }

    /// `freight fn call ADDRESS [--data TEXT | --file F] [--out F]`: a request to a function, and its reply.
    struct CallCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "call",
            abstract: "Send a request to an address (a function's) and print or save the reply.")
        @Argument(help: "The address.") var address: String
        @Option(name: .customLong("data"), help: "The request's body, as text.") var data: String?
        @Option(name: .customLong("file"), help: "The request's body, from a file.") var file: String?
        @Option(name: .customLong("out"), help: "Write the reply's body to this file instead of printing it.")
        var out: String?
        @Option(name: .customLong("timeout"), help: "Seconds to wait for the reply.") var timeout = 30
        @OptionGroup var via: ViaOption

        func run() async throws {
            do {
                let body: [UInt8]
                switch (data, file) {
                case (let text?, nil): body = Array(text.utf8)
                case (nil, let path?):
                    guard let bytes = FileManager.default.contents(atPath: path) else {
                        throw FreightError(.io, "cannot read \(path)")
                    }
                    body = Array(bytes)
                case (nil, nil): body = []
                default: throw FreightError(.invalidArgument, "give --data or --file, not both")
                }
                let client = try await FreightClient.connect(
                    to: try via.address(), label: "fn-call", token: via.token, sharedMemory: .off)
                defer { Task { await client.close() } }
                let started = ContinuousClock.now
                let reply = try await client.request(
                    to: address, body: .bytes(ByteBuffer(bytes: body)), timeout: .seconds(timeout))
                let bytes = Array(try await reply.collect(upTo: Limits.functionOutputBytesMax).readableBytesView)
                let elapsed = ContinuousClock.now - started
                await client.close()
                if let out {
                    guard FileManager.default.createFile(atPath: out, contents: Data(bytes)) else {
                        throw FreightError(.io, "cannot write \(out)")
                    }
                    printLine("reply from \(reply.source): \(bytes.count) bytes to \(out) in \(elapsed)")
                } else if let text = String(validating: bytes, as: UTF8.self),
                    text.unicodeScalars.allSatisfy({
                        $0.properties.isWhitespace || $0.properties.generalCategory != .control
                    })
                {
                    printLine(text)
                } else {
                    printLine(bytes.map { String(format: "%02x", $0) }.joined())
                }
            } catch {
                fail(error)
            }
        }
    }

    /// Sends a request to one of the cluster's function hosts and returns its answer's text.
    static func ask(
        _ address: String, body: [UInt8], via: ViaOption, attributes: [String: String] = [:]
    ) async throws -> String {
        let client = try await FreightClient.connect(
            to: try via.address(), label: "fn", token: via.token, sharedMemory: .off)
        do {
            let reply = try await client.request(
                to: address, body: .bytes(ByteBuffer(bytes: body)), options: SendOptions(attributes: attributes),
                timeout: .seconds(30))
            let buffer = try await reply.collect(upTo: Limits.controlFrameBytesMax * 16)
            await client.close()
            return String(buffer: buffer)
        } catch let error as FreightError where error.code == .noRoute {
            await client.close()
            throw FreightError(
                error.code,
                "\(error.message) — no node of this cluster serves functions: start one with freight node --functions")
        } catch {
            await client.close()
            throw error
        }
    }

    static func object(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
    }
}

/// The fabric's function addresses (docs/functions.md): one function host of the cluster answers each.
enum FunctionHostAddresses {
    static let deploy = "\(Limits.functionSegment)/deploy"
    static let list = "\(Limits.functionSegment)/list"
    static let remove = "\(Limits.functionSegment)/remove"
}
