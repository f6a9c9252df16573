import Foundation
import FreightCore

/// The stand-in CUDA driver of the tests (Tests/StandInCUDA/standin-cuda.c): host memory that answers the driver
/// API Freight calls, so that the GPU code paths run on machines without a GPU. Not a GPU, and never reported as
/// one: its device calls itself "Freight stand-in (host memory, not a GPU)".
public enum StandInCUDA {
    /// Builds the library once per process with the toolchain's `clang` (or `cc`) and returns its path.
    public static func library() throws -> String {
        try built.get()
    }

    private static let built: Result<String, FreightError> = Result { () throws(FreightError) -> String in
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Tests/StandInCUDA/standin-cuda.c").path
        guard let text = FileManager.default.contents(atPath: source) else {
            throw FreightError(.io, "cannot read \(source)")
        }
        // One build per version of the source, kept in the temporary folder and shared by test runs (FNV-1a names it).
        let digest = text.reduce(UInt64(0xcbf2_9ce4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
        let library = NSTemporaryDirectory() + "freight-standin-cuda-\(String(digest, radix: 16)).so.1"
        if FileManager.default.fileExists(atPath: library) { return library }
        // Built under a name of its own and renamed into place, so that concurrent runs never load a partial file.
        let building = "\(library).\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        var reasons: [String] = []
        for compiler in ["clang", "cc"] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [compiler, "-shared", "-fPIC", "-O1", "-o", building, source, "-lpthread"]
            let errors = Pipe()
            process.standardError = errors
            do {
                try process.run()
            } catch {
                reasons.append("\(compiler): \(error)")
                continue
            }
            let output = errors.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            if process.terminationStatus == 0, rename(building, library) == 0 { return library }
            unlink(building)
            reasons.append("\(compiler): \(String(decoding: output, as: UTF8.self))")
        }
        throw FreightError(
            .io, "cannot build the stand-in CUDA driver from \(source): \(reasons.joined(separator: "; "))")
    }
}
