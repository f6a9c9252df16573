import Foundation
import FreightCore

/// A short-lived tool (`ip`, `ss`) run to completion, its output collected: for the test harness's setup steps, not
/// for `freight` processes (``FreightProcess``).
enum Command {
    /// Runs `executable ARGS` and returns its standard output; throws with its standard error when it fails.
    @discardableResult
    static func run(_ executable: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let out = Pipe()
        let errors = Pipe()
        process.standardOutput = out
        process.standardError = errors
        try process.run()
        // Both pipes are read to their end before waiting, so that a large output cannot block the tool.
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw FreightError(
                .internalError, "\(executable) \(arguments.joined(separator: " ")): \(message)")
        }
        return text
    }
}
