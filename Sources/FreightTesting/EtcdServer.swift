import Foundation
import FreightCore
import FreightDirectory

/// A real etcd server for tests: on 127.0.0.1 with ports of its own and a temporary data directory (in /dev/shm
/// when there is one: etcd syncs every write). `stop()` ends it by PID and removes the directory.
public final class EtcdServer: Sendable {
    public let clientPort: Int
    public let peerPort: Int
    public let dataDirectory: String
    private let process: FreightProcess

    public var isRunning: Bool { process.isRunning }

    /// What etcd wrote on stderr (warnings and errors).
    public var log: String { process.stderr }

    /// `etcd://127.0.0.1:PORT`, for `freight node --directory`.
    public var url: String { "etcd://127.0.0.1:\(clientPort)" }

    public static var available: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/etcd") }

    private init(clientPort: Int, peerPort: Int, dataDirectory: String, process: FreightProcess) {
        self.clientPort = clientPort
        self.peerPort = peerPort
        self.dataDirectory = dataDirectory
        self.process = process
    }

    /// Starts etcd and waits until it answers. With `dataDirectory`, reuses it (a restart after `stop(keepData:)`).
    /// Ports left open are picked at random, and picked again when they were taken.
    public static func start(
        clientPort: Int? = nil, peerPort: Int? = nil, dataDirectory: String? = nil
    ) async throws -> EtcdServer {
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await launch(clientPort: clientPort, peerPort: peerPort, dataDirectory: dataDirectory)
            } catch  where clientPort == nil && attempt < 3 {
                continue
            }
        }
    }

    private static func launch(
        clientPort: Int?, peerPort: Int?, dataDirectory: String?
    ) async throws -> EtcdServer {
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm/" : NSTemporaryDirectory()
        let directory = dataDirectory ?? base + "freight-etcd-\(UInt32.random(in: 0...UInt32.max))"
        let client = clientPort ?? Int.random(in: 20_000...29_999)
        let peer = peerPort ?? client + 10_000
        let process = try FreightProcess(
            [
                "--name", "freight-test", "--data-dir", directory,
                "--listen-client-urls", "http://127.0.0.1:\(client)",
                "--advertise-client-urls", "http://127.0.0.1:\(client)",
                "--listen-peer-urls", "http://127.0.0.1:\(peer)",
                "--initial-advertise-peer-urls", "http://127.0.0.1:\(peer)",
                "--initial-cluster", "freight-test=http://127.0.0.1:\(peer)",
                "--log-level", "warn", "--logger", "zap", "--log-outputs", "stderr",
            ], executable: "/usr/bin/etcd")
        let server = EtcdServer(clientPort: client, peerPort: peer, dataDirectory: directory, process: process)
        let deadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < deadline {
            if let result = try? await server.etcdctl(["endpoint", "health"]), result.status == 0 { return server }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        server.stop(keepData: dataDirectory != nil)
        throw FreightError(.internalError, "etcd did not start on 127.0.0.1:\(client): \(process.stderr)")
    }

    /// Ends etcd by PID; removes its data unless `keepData` (to start it again on the same data).
    public func stop(keepData: Bool = false) {
        process.stop()
        if !keepData { try? FileManager.default.removeItem(atPath: dataDirectory) }
    }

    /// Runs `etcdctl` against this server. Its output goes through a file, read whole once it exited (a large
    /// listing must arrive complete and in order).
    public func etcdctl(_ arguments: [String]) async throws -> (status: Int32, stdout: [String], stderr: String) {
        let base = NSTemporaryDirectory() + "freight-etcdctl-\(UInt32.random(in: 0...UInt32.max))"
        _ = FileManager.default.createFile(atPath: base + ".out", contents: nil)
        _ = FileManager.default.createFile(atPath: base + ".err", contents: nil)
        defer {
            try? FileManager.default.removeItem(atPath: base + ".out")
            try? FileManager.default.removeItem(atPath: base + ".err")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/etcdctl")
        process.arguments = ["--endpoints", "127.0.0.1:\(clientPort)", "--command-timeout", "5s"] + arguments
        process.environment = ProcessInfo.processInfo.environment.merging(["ETCDCTL_API": "3"]) { $1 }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle(forWritingAtPath: base + ".out")
        process.standardError = FileHandle(forWritingAtPath: base + ".err")
        try process.run()
        let deadline = ContinuousClock.now + .seconds(30)
        while process.isRunning {
            if ContinuousClock.now > deadline {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                throw FreightError(.internalError, "etcdctl \(arguments.joined(separator: " ")) did not finish")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        let out = (try? String(contentsOfFile: base + ".out", encoding: .utf8)) ?? ""
        let err = (try? String(contentsOfFile: base + ".err", encoding: .utf8)) ?? ""
        return (process.terminationStatus, out.split(separator: "\n").map(String.init), err)
    }

    /// The endpoint keys etcd holds for `cluster`, as (count, digest) in the form `freight status` reports.
    public func endpointDigest(cluster: String) async throws -> (count: Int, digest: UInt64) {
        let prefix = "/freight/\(cluster)/endpoints/"
        let result = try await etcdctl(["get", "--prefix", "--keys-only", prefix])
        guard result.status == 0 else { throw FreightError(.internalError, "etcdctl get failed: \(result.stderr)") }
        var count = 0
        var digest: UInt64 = 0
        for line in result.stdout where line.hasPrefix(prefix) {
            let parts = line.dropFirst(prefix.count).split(separator: "/")
            guard parts.count == 2, let id = UInt64(parts[1]) else { continue }
            digest ^= EndpointIndex.keyHash(EndpointKey(node: String(parts[0]), id: id))
            count += 1
        }
        return (count, digest)
    }
}
