import Crypto
import FreightCore
import WAT
@_spi(Fuzzing) import WasmKit

/// A WebAssembly module that speaks Freight's function ABI v1 (docs/functions.md), compiled once and checked: it
/// exports `memory`, `freight_abi_v1`, `begin`, `input`, `chunk` and `end` with their signatures, and imports
/// nothing the node does not grant. Each message runs in a fresh ``FunctionRun``.
public struct FunctionModule: Sendable {
    /// SHA-256 of `bytes`, hex: a module's ``digest``.
    public static func digest(of bytes: [UInt8]) -> String {
        SHA256.hash(data: bytes).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }

    /// `bytes` as a WebAssembly binary: as they are when they are one, else assembled from WebAssembly text.
    public static func binary(of bytes: [UInt8], name: String) throws(FreightError) -> [UInt8] {
        if bytes.starts(with: [0x00, 0x61, 0x73, 0x6D]) { return bytes }
        do {
            return try wat2wasm(String(decoding: bytes, as: UTF8.self))
        } catch {
            throw FreightError(.invalidArgument, "module \(name) is neither WebAssembly nor valid WAT: \(error)")
        }
    }

    /// What a module may import, granted where it is attached.
    public struct Capabilities: OptionSet, Sendable, Hashable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }
        /// `freight.log(ptr, len)`: a line in the node's log.
        public static let log = Capabilities(rawValue: 1)
    }

    /// The name it is known by: its file name without extension, or what the caller says.
    public let name: String
    /// SHA-256 of its bytes (the binary, or the text it was assembled from), hex.
    public let digest: String
    public let capabilities: Capabilities
    /// Fuel each call may burn (`Limits.functionFuelPerCall` unless the attachment says less).
    public let fuelPerCall: UInt64
    /// The module keeps no state across chunks: a resume may start it again at any chunk boundary.
    public private(set) var resumable: Bool
    /// Whether it transforms the header's attributes (exports `attributes`).
    public let rewritesAttributes: Bool
    let module: Module
    let engine: Engine

    /// Compiles `bytes`: a WebAssembly binary, or WebAssembly text (assembled by WasmKit's WAT) when they do not
    /// start with the binary's magic number.
    public init(
        name: String, bytes: [UInt8], capabilities: Capabilities = [],
        fuelPerCall: UInt64 = FreightCore.Limits.functionFuelPerCall
    ) throws(FreightError) {
        guard bytes.count <= FreightCore.Limits.functionModuleBytesMax else {
            throw FreightError(
                .invalidArgument,
                "module \(name) is \(bytes.count) bytes; at most \(FreightCore.Limits.functionModuleBytesMax) are accepted"
            )
        }
        self.name = name
        self.capabilities = capabilities
        self.fuelPerCall = min(fuelPerCall, FreightCore.Limits.functionFuelPerCall)
        digest = Self.digest(of: bytes)
        let binary = try Self.binary(of: bytes, name: name)
        do {
            module = try parseWasm(bytes: binary)
        } catch {
            throw FreightError(.invalidArgument, "module \(name) is not valid WebAssembly: \(error)")
        }
        engine = Engine(configuration: EngineConfiguration(fuelMetering: true))
        for entry in module.imports {
            let granted = entry.module == "freight" && entry.name == "log" && capabilities.contains(.log)
            guard granted else {
                let need =
                    entry.module == "freight" && entry.name == "log"
                    ? "the log capability" : "a capability this node does not offer"
                throw FreightError(
                    .permissionDenied,
                    "module \(name) imports \(entry.module).\(entry.name), which needs \(need); a module sees no host file, socket or clock"
                )
            }
        }
        let exported = Set(module.exports.map(\.name))
        for required in ["memory", "freight_abi_v1", "begin", "input", "chunk", "end"]
        where !exported.contains(required) {
            throw FreightError(
                .invalidArgument,
                "module \(name) does not export \(required): it does not speak Freight's function ABI v1")
        }
        rewritesAttributes = exported.contains("attributes")
        resumable = false
        // `resumable` is read from a fresh instance (its initial value).
        if exported.contains("resumable") {
            let run = try FunctionRun(self)
            resumable = run.globalValue("resumable") == 1
        }
    }
}
