import Foundation
import FreightCore
import FreightTesting
import Testing

/// `freight fn` as a user runs it (docs/functions.md): the examples assemble into modules a node would load, and a
/// module that is not valid is refused with the reason.
@Suite struct FunctionCommandTests {
    @Test func examplesAssembleAndCheck() async throws {
        let root = try #require(FreightProcess.repositoryRoot)
        let folder = NSTemporaryDirectory() + "freight-fn-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for (name, declares) in [
            ("downcast", "resumable"), ("checksum", "keeps state"), ("redact", "rewrites attributes"),
        ] {
            let out = "\(folder)/\(name).wasm"
            let assembled = try await FreightProcess.run([
                "fn", "assemble", "\(root)/examples/functions/\(name).wat", "-o", out,
            ])
            #expect(assembled.status == 0, "\(name): \(assembled.stderr)")
            let bytes = try Data(contentsOf: URL(fileURLWithPath: out))
            #expect(bytes.starts(with: [0x00, 0x61, 0x73, 0x6D]), "\(name): a WebAssembly binary")
            let checked = try await FreightProcess.run(["fn", "check", out])
            #expect(checked.status == 0 && checked.stdout.joined().contains(declares), "\(name): \(checked.stdout)")
        }
        try "(module (func (export \"x\")))".write(toFile: "\(folder)/bad.wat", atomically: true, encoding: .utf8)
        let refused = try await FreightProcess.run(["fn", "assemble", "\(folder)/bad.wat"])
        #expect(refused.status != 0 && refused.stderr.contains("does not export memory"), "\(refused.stderr)")
    }
}
