import Foundation
import FreightCore
import FreightFunctions
import FreightWire
import Testing

/// The WebAssembly runtime of filters and functions (docs/functions.md): ABI v1 on WasmKit, the examples of
/// examples/functions/, and the limits that keep a module from harming its node.
struct FunctionTests {
    static let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../examples/functions").standardized.path

    static func example(_ name: String, _ capabilities: FunctionModule.Capabilities = []) throws -> FunctionModule {
        let text = try String(contentsOfFile: "\(examples)/\(name).wat", encoding: .utf8)
        return try FunctionModule(name: name, bytes: Array(text.utf8), capabilities: capabilities)
    }

    /// A module of `text`, with fuel for about 10 million instructions a call (the default allows a second of
    /// work on a release build, which a debug build takes far longer to burn).
    static func module(_ text: String, _ capabilities: FunctionModule.Capabilities = []) throws -> FunctionModule {
        try FunctionModule(name: "test", bytes: Array(text.utf8), capabilities: capabilities, fuelPerCall: 10_000_000)
    }

    /// bf16 of a binary32, rounded to nearest with ties to even; NaN made quiet.
    static func bf16(_ bits: UInt32) -> UInt16 {
        if bits & 0x7fff_ffff > 0x7f80_0000 { return UInt16(bits >> 16) | 0x40 }
        return UInt16((bits &+ 0x7fff &+ ((bits >> 16) & 1)) >> 16)
    }

    /// 256 KiB of floats (edge values first: ties both ways, NaNs, infinities, subnormals, the largest finite), sent in
    /// chunks that split floats, give exactly the rounding of every value, in half the bytes.
    @Test func downcastRoundsEveryFloatToNearestEven() throws {
        let module = try Self.example("downcast")
        #expect(module.resumable)
        var floats: [UInt32] = [
            0x3f80_8000, 0x3f81_8000, 0x3f80_8001, 0x3f80_7fff, 0x7fc0_0000, 0x7f80_0001, 0xffc0_1234, 0x7f80_0000,
            0xff80_0000, 0x0000_0001, 0x8000_8000, 0x7f7f_ffff, 0xff7f_ffff, 0, 0x8000_0000,
        ]
        var random = SeededRandom(seed: 7)
        while floats.count < (256 << 10) / 4 { floats.append(UInt32(truncatingIfNeeded: random.next())) }
        let input = floats.withUnsafeBytes { Array($0) }
        let run = try FunctionRun(module)
        #expect(try run.begin(length: UInt64(input.count)) == UInt64(input.count / 2))
        var output: [UInt8] = []
        var offset = 0
        for size in [1, 2, 5, 64 << 10, (64 << 10) + 3] + Array(repeating: 64 << 10, count: 4)
        where offset < input.count {
            let end = min(input.count, offset + size)
            output += try run.chunk(Array(input[offset..<end]))
            offset = end
        }
        #expect(offset == input.count)
        output += try run.end()
        try #require(output.count == input.count / 2)
        let halves = output.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
        let wrong = zip(floats, halves).enumerated().first { Self.bf16($0.element.0) != $0.element.1 }
        #expect(wrong == nil, "float \(wrong?.offset ?? -1): \(String(floats[wrong?.offset ?? 0], radix: 16))")
        #expect(Array(halves.prefix(4)) == [0x3f80, 0x3f82, 0x3f81, 0x3f80], "ties to even, and past the tie")

        let odd = try FunctionRun(module)
        #expect(throws: FreightError.self) { try odd.begin(length: 6) }
    }

    /// The checksum function answers with the CRC32C of the body, as Freight computes it.
    @Test func checksumIsCRC32C() throws {
        let run = try FunctionRun(try Self.example("checksum"))
        var random = SeededRandom(seed: 3)
        let body = (0..<20_000).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        #expect(try run.begin(length: UInt64(body.count)) == 4)
        #expect(try run.chunk(Array(body[..<12_345])).isEmpty)
        #expect(try run.chunk(Array(body[12_345...])).isEmpty)
        let answer = try run.end()
        let crc = answer.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        #expect(crc == CRC32C.checksum(body))
    }

    /// The redaction filter drops the attributes its config names and passes the body untouched.
    @Test func redactDropsNamedAttributes() throws {
        let module = try Self.example("redact")
        #expect(module.rewritesAttributes)
        let run = try FunctionRun(module)
        #expect(try run.begin(length: 11, config: "drop=tenant,secret") == 11)
        let kept = try run.attributes(["tenant": "acme", "secret": "x=y", "shape": "4x4", "tenants": "all"])
        #expect(kept == ["shape": "4x4", "tenants": "all"])
        #expect(try run.chunk(Array("hello world".utf8)) == Array("hello world".utf8))
        #expect(try run.end().isEmpty)
        #expect(throws: FreightError.self) { try FunctionRun(module).begin(length: 1, config: "keep=x") }
    }

    static let abi = """
          (memory (export "memory") 1)
          (func (export "freight_abi_v1"))
          (func (export "begin") (param i64 i32 i32) (result i64) (i64.const -1))
          (func (export "input") (param i32) (result i32) (i32.const 0))
          (func (export "end") (result i64) (i64.const 0))
        """

    /// A module that traps, loops or hogs memory fails only its message, with a reason; the next message runs.
    @Test(arguments: [
        ("(func (export \"chunk\") (param i32) (result i64) unreachable)", "trapped in chunk"),
        ("(func (export \"chunk\") (param i32) (result i64) (loop $l (br $l)) (i64.const 0))", "ran out of fuel"),
        (
            "(func (export \"chunk\") (param i32) (result i64) (if (i32.eq (memory.grow (i32.const 2048)) (i32.const -1)) (then unreachable)) (i64.const 0))",
            "memory was held to"
        ),
        ("(func (export \"chunk\") (param i32) (result i64) (i64.const 0x7fff000000000010))", "outside its"),
    ])
    func aMisbehavingModuleFailsOnlyItsMessage(chunk: String, reason: String) throws {
        let module = try Self.module("(module \(Self.abi) \(chunk))")
        let run = try FunctionRun(module)
        try run.begin(length: 10)
        do {
            _ = try run.chunk([1, 2, 3])
            Issue.record("the chunk should have failed")
        } catch {
            #expect(error.code == .functionFailed && error.message.contains(reason), "\(error)")
        }
        #expect(throws: FreightError.self) { try run.end() }
        // The next message, and another module, run as before.
        let good = try FunctionRun(try Self.example("checksum"))
        try good.begin(length: 1)
        _ = try good.chunk([0x61])
        #expect(try good.end().count == 4)
    }

    /// Nothing of the host unless granted: WASI's calls are refused at load, naming the import; `freight.log` only
    /// with the log capability.
    @Test func importsAreRefusedUnlessGranted() throws {
        let wasi = """
            (module (import "wasi_snapshot_preview1" "path_open" (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
              \(Self.abi) (func (export "chunk") (param i32) (result i64) (i64.const 0)))
            """
        #expect {
            try Self.module(wasi)
        } throws: { error in
            (error as? FreightError)?.code == .permissionDenied
                && "\(error)".contains("wasi_snapshot_preview1.path_open")
        }
        let logging = """
            (module (import "freight" "log" (func $log (param i32 i32)))
              \(Self.abi) (func (export "chunk") (param $n i32) (result i64) (call $log (i32.const 0) (local.get $n)) (i64.const 0)))
            """
        #expect(throws: FreightError.self) { try Self.module(logging) }
        let lines = LockedLines()
        let run = try FunctionRun(try Self.module(logging, .log)) { lines.append($0) }
        try run.begin(length: 5)
        _ = try run.chunk(Array("hello".utf8))
        #expect(lines.all == ["module test: hello"])
    }

    /// A module that does not speak ABI v1, or declares a length and gives another, is refused with a reason.
    @Test func abiViolationsAreNamed() throws {
        #expect(throws: FreightError.self) { try Self.module("(module (memory (export \"memory\") 1))") }
        #expect(throws: FreightError.self) { try Self.module("not a module") }
        let short = try Self.module(
            """
            (module (memory (export "memory") 1) (func (export "freight_abi_v1"))
              (func (export "begin") (param i64 i32 i32) (result i64) (i64.const 8))
              (func (export "input") (param i32) (result i32) (i32.const 0))
              (func (export "chunk") (param i32) (result i64) (i64.const 4))
              (func (export "end") (result i64) (i64.const 0)))
            """)
        let run = try FunctionRun(short)
        try run.begin(length: 4)
        #expect(try run.chunk([1, 2, 3, 4]).count == 4)
        #expect {
            try run.end()
        } throws: { error in
            "\(error)".contains("gave 4 bytes of output after declaring 8")
        }
    }
}

final class LockedLines: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ line: String) { lock.withLock { lines.append(line) } }
    var all: [String] { lock.withLock { lines } }
}
