import Foundation
import FreightCore
import Synchronization

final class OutputBox: Sendable {
    let state = Mutex<(stdout: [String], partial: String, stderr: String)>(([], "", ""))
    /// Set when stdout (stderr) reached its end (the process closed it).
    let stdoutEnded = Atomic<Bool>(false)
    let stderrEnded = Atomic<Bool>(false)
}

/// A `freight` child process with its output collected line by line. Stopped by its PID, never by name.
public final class FreightProcess: Sendable {
    public let arguments: [String]
    private let process: Process
    private let output = OutputBox()

    /// The `freight` executable next to the running test bundle, or `$FREIGHT_BIN`.
    public static var binaryPath: String {
        if let path = ProcessInfo.processInfo.environment["FREIGHT_BIN"] { return path }
        let exe =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var directory = URL(fileURLWithPath: exe).deletingLastPathComponent()
        // In a test bundle on Linux the executable sits beside the .xctest.
        while directory.path != "/" {
            let candidate = directory.appendingPathComponent("freight").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory.deleteLastPathComponent()
        }
        return "freight"
    }

    /// The repository the tests run from: the first folder above the test bundle that holds `Package.swift`.
    public static var repositoryRoot: String? {
        var directory = URL(fileURLWithPath: binaryPath).deletingLastPathComponent()
        while directory.path != "/" {
            if FileManager.default.fileExists(atPath: directory.appendingPathComponent("Package.swift").path) {
                return directory.path
            }
            directory.deleteLastPathComponent()
        }
        return nil
    }

    /// The Python of the test command's environment (`.build-python`, with grpcio), or `$FREIGHT_PYTHON`.
    public static var pythonPath: String {
        if let path = ProcessInfo.processInfo.environment["FREIGHT_PYTHON"] { return path }
        return (repositoryRoot.map { "\($0)/.build-python/bin/python" }) ?? "python3"
    }

    /// `setpriv` from util-linux: it sets the parent-death signal and execs the program (same PID).
    static let setpriv = "/usr/bin/setpriv"

    /// Runs `executable` (default: `freight`) with `arguments`. The child gets SIGKILL when this process dies (a
    /// parent-death signal, set by `setpriv` before it execs the program), so a test run that crashes or is killed
    /// leaves nothing running; the signal follows the thread that spawned the child, so every child is spawned from
    /// one thread that lives as long as the process (``Spawner``).
    public init(_ arguments: [String], executable: String? = nil, environment: [String: String] = [:]) throws {
        self.arguments = arguments
        process = Process()
        let program = executable ?? Self.binaryPath
        if FileManager.default.isExecutableFile(atPath: Self.setpriv) {
            process.executableURL = URL(fileURLWithPath: Self.setpriv)
            process.arguments = ["--pdeathsig", "KILL", "--", program] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: program)
            process.arguments = arguments
        }
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { $1 }
        process.environment = env
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        let process = self.process
        try Spawner.shared.run { try process.run() }
        // Each pipe is read on a thread of its own until its end and then closed. Foundation's readability
        // handlers kept a pipe open for as long as the test process lived; a run spawns about 1,800 processes, and
        // past 1,024 descriptors the select() that Foundation watches handles with sees none: a whole run hung.
        let outFD = dup(out.fileHandleForReading.fileDescriptor)
        let errFD = dup(err.fileHandleForReading.fileDescriptor)
        try? out.fileHandleForReading.close()
        try? err.fileHandleForReading.close()
        let output = self.output
        Self.read(outFD) { data in
            output.state.withLock { state in
                state.partial += String(decoding: data, as: UTF8.self)
                while let newline = state.partial.firstIndex(of: "\n") {
                    state.stdout.append(String(state.partial[..<newline]))
                    state.partial = String(state.partial[state.partial.index(after: newline)...])
                }
            }
        } end: {
            output.stdoutEnded.store(true, ordering: .releasing)
        }
        Self.read(errFD) { data in
            output.state.withLock { state in
                state.stderr += String(decoding: data, as: UTF8.self)
                if state.stderr.utf8.count > 1 << 20 { state.stderr = String(state.stderr.suffix(1 << 19)) }
            }
        } end: {
            output.stderrEnded.store(true, ordering: .releasing)
        }
    }

    /// Reads `fd` to its end on a thread of its own, handing over what arrives; then closes it.
    private static func read(
        _ fd: Int32, _ received: @escaping @Sendable ([UInt8]) -> Void, end: @escaping @Sendable () -> Void
    ) {
        guard fd >= 0 else { return end() }
        let thread = Thread {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { break }
                received(Array(buffer[..<count]))
            }
            close(fd)
            end()
        }
        thread.stackSize = 256 << 10
        thread.start()
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }
    public var stdoutLines: [String] { output.state.withLock { $0.stdout } }
    public var stderr: String { output.state.withLock { $0.stderr } }

    /// Waits for a line of stdout that satisfies `predicate`.
    public func waitForLine(timeout: Duration = .seconds(30), where predicate: (String) -> Bool) async throws -> String
    {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let line = stdoutLines.first(where: predicate) { return line }
            if !process.isRunning {
                try await Task.sleep(for: .milliseconds(50))
                if let line = stdoutLines.first(where: predicate) { return line }
                throw FreightError(
                    .internalError,
                    "freight \(arguments.joined(separator: " ")) exited \(process.terminationStatus): \(stderr)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        // A last look: a busy machine may have let the line in while this task waited for a thread.
        if let line = stdoutLines.first(where: predicate) { return line }
        throw FreightError(
            .internalError,
            "timed out waiting for output of freight \(arguments.joined(separator: " ")); stderr: \(stderr)")
    }

    /// Waits until stderr (the log of a node) contains `text`; false when it did not within `timeout`.
    public func waitForStderr(containing text: String, timeout: Duration = .seconds(10)) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !stderr.contains(text) {
            guard ContinuousClock.now < deadline else { return false }
            try await Task.sleep(for: .milliseconds(50))
        }
        return true
    }

    /// Waits for the process to exit and returns its status; kills it past the timeout.
    @discardableResult
    public func waitForExit(timeout: Duration = .seconds(120)) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline {
                kill(SIGKILL)
                throw FreightError(
                    .internalError, "freight \(arguments.joined(separator: " ")) did not exit within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        // Let stdout and stderr drain to their ends (a large output is still in the pipe when the process exits,
        // and a refusal's message could be read after the exit was seen).
        let drained = ContinuousClock.now + .seconds(5)
        while !(output.stdoutEnded.load(ordering: .acquiring) && output.stderrEnded.load(ordering: .acquiring))
            && ContinuousClock.now < drained
        {
            try await Task.sleep(for: .milliseconds(10))
        }
        return process.terminationStatus
    }

    /// Sends a signal to this process (by PID).
    public func kill(_ signal: Int32) {
        if process.isRunning { _ = Foundation.kill(process.processIdentifier, signal) }
    }

    /// SIGTERM, then SIGKILL after a grace period.
    public func stop() {
        guard process.isRunning else { return }
        kill(SIGTERM)
        for _ in 0..<100 where process.isRunning { usleep(20_000) }
        kill(SIGKILL)
        process.waitUntilExit()
    }

    /// Lines of stdout parsed as JSON objects.
    public var jsonLines: [[String: Any]] {
        stdoutLines.compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }
    }

    /// Runs `freight ARGS` to completion.
    public static func run(
        _ arguments: [String], environment: [String: String] = [:], timeout: Duration = .seconds(120)
    ) async throws -> (
        status: Int32, stdout: [String], stderr: String
    ) {
        let process = try FreightProcess(arguments, environment: environment)
        let status = try await process.waitForExit(timeout: timeout)
        return (status, process.stdoutLines, process.stderr)
    }
}

/// One thread that lives as long as the process and spawns every child: a parent-death signal fires when the
/// thread that spawned the child ends, and threads of Swift's and Dispatch's pools come and go.
final class Spawner: @unchecked Sendable {  // jobs are handed over under `condition`
    static let shared = Spawner()
    private let condition = NSCondition()
    private var jobs: [() -> Void] = []

    private init() {
        let thread = Thread { [self] in
            while true {
                condition.lock()
                while jobs.isEmpty { condition.wait() }
                let job = jobs.removeFirst()
                condition.unlock()
                job()
            }
        }
        thread.name = "freight-spawner"
        thread.start()
    }

    /// Runs `body` on the spawner thread and waits for it.
    func run(_ body: @escaping () throws -> Void) throws {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var failure: (any Error)?
        condition.lock()
        jobs.append {
            do { try body() } catch { failure = error }
            done.signal()
        }
        condition.signal()
        condition.unlock()
        done.wait()
        if let failure { throw failure }
    }
}
