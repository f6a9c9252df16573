import Foundation
import FreightCore
import Synchronization

/// Real `freight node` processes on 127.0.0.1, 127.0.0.2, ..., each with its own Unix socket in a temporary folder.
/// `stop()` ends every process it started, by PID, and removes the folder.
public final class ProcessCluster: Sendable {
    public struct Node: Sendable {
        public let name: String
        public let listen: String
        public let socket: String
        /// HOST:PORT of its gRPC API; empty when it serves none.
        public let grpc: String
        public let process: FreightProcess
    }

    public let directory: String
    private let nodesStore = Mutex<[Node]>([])
    public let cluster: String

    /// The `freight` binary its nodes and the apps it starts run: the one beside the tests unless given.
    public let executable: String?
    /// The network namespace its nodes run in (`ip netns exec`), when not this process's own: their Unix sockets
    /// are files, so apps and `freight status` reach them from anywhere.
    public let namespace: String?
    /// Variables its nodes and the receivers it starts run with beside this process's own (`OTEL_*`, say).
    public let environment: [String: String]

    public init(
        cluster: String = "test", executable: String? = nil, namespace: String? = nil,
        environment: [String: String] = [:]
    ) throws {
        self.cluster = cluster
        self.executable = executable
        self.namespace = namespace
        self.environment = environment
        let path = NSTemporaryDirectory() + "freight-test-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        self.directory = path
    }

    public var nodes: [Node] { nodesStore.withLock { $0 } }

    public func node(_ name: String) -> Node { nodes.first { $0.name == name }! }

    /// Starts `count` nodes named n1...; every node after the first joins the first.
    /// With `grpc`, each node serves its gRPC API on its own address, port chosen by the node.
    /// Without `join` the nodes find each other some other way (the etcd directory).
    public static func start(
        nodes count: Int, streams: Int = 4, grpc: Bool = false, join: Bool = true, extraArguments: [String] = [],
        executable: String? = nil, environment: [String: String] = [:]
    ) async throws -> ProcessCluster {
        let cluster = try ProcessCluster(executable: executable, environment: environment)
        do {
            var first: String?
            for index in 1...count {
                let node = try await cluster.startNode(
                    name: "n\(index)", host: "127.0.0.\(index)", join: first.map { [$0] } ?? [],
                    extraArguments: ["--streams", "\(streams)"] + (grpc ? ["--grpc", "127.0.0.\(index):0"] : [])
                        + extraArguments
                )
                if first == nil && join { first = node.listen }
            }
            try await cluster.waitForMesh()
            return cluster
        } catch {
            cluster.stop()
            throw error
        }
    }

    @discardableResult
    public func startNode(name: String, host: String, join: [String], extraArguments: [String] = []) async throws
        -> Node
    {
        let socket = "\(directory)/\(name).sock"
        var arguments = [
            "node", "--cluster", cluster, "--name", name, "--listen", "\(host):0", "--socket", socket, "--json",
        ]
        for seed in join { arguments += ["--join", seed] }
        arguments += extraArguments
        let process =
            if let namespace {
                try FreightProcess(
                    ["netns", "exec", namespace, executable ?? FreightProcess.binaryPath] + arguments,
                    executable: "/usr/sbin/ip", environment: environment)
            } else {
                try FreightProcess(arguments, executable: executable, environment: environment)
            }
        let line = try await process.waitForLine { $0.contains("\"listening\"") }
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        let node = Node(
            name: name, listen: object["listen"] as! String, socket: socket, grpc: object["grpc"] as? String ?? "",
            process: process)
        nodesStore.withLock { $0.append(node) }
        return node
    }

    /// Waits until every running node has a full link to every other one.
    public func waitForMesh(timeout: Duration = .seconds(20)) async throws {
        let deadline = ContinuousClock.now + timeout
        let live = nodes.filter { $0.process.isRunning }
        while ContinuousClock.now < deadline {
            var complete = true
            for node in live {
                let status = try await self.status(node.name)
                let peers = (status["peers"] as? [[String: Any]]) ?? []
                // With rails a link has `streams` stripes per rail.
                let up = peers.filter { ($0["streams_up"] as? Int ?? 0) >= (status["streams"] as? Int ?? 1) }
                if up.count < live.count - 1 { complete = false }
            }
            if complete { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw FreightError(.internalError, "nodes did not form a full mesh within \(timeout)")
    }

    /// Waits until `node` resolves `pattern` to `count` endpoints.
    public func waitForEndpoints(_ pattern: String, count: Int, at node: String, timeout: Duration = .seconds(10))
        async throws
    {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let result = try await FreightProcess.run(["resolve", pattern, "--via", self.node(node).socket, "--json"])
            if result.status == 0 && result.stdout.count == count { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw FreightError(.internalError, "\(node) did not see \(count) endpoints on \(pattern) within \(timeout)")
    }

    /// Starts `freight recv PATTERN --via NODE --json OPTIONS…`, waits until it is ready and until `seenAt` resolves
    /// its pattern. The caller stops it (`defer { receiver.stop() }`); if waiting fails it is stopped here.
    public func receiver(
        _ pattern: String, at node: String, _ options: [String] = [], seenAt: String = "n1"
    ) async throws -> FreightProcess {
        let process = try FreightProcess(
            ["recv", pattern, "--via", self.node(node).socket, "--json"] + options, executable: executable,
            environment: environment)
        do {
            _ = try await process.waitForLine { $0.contains("\"ready\"") }
            try await waitForEndpoints(pattern, count: 1, at: seenAt)
            return process
        } catch {
            process.stop()
            throw error
        }
    }

    public func status(_ node: String) async throws -> [String: Any] {
        let result = try await FreightProcess.run(["status", "--via", self.node(node).socket, "--json"])
        guard result.status == 0, let line = result.stdout.first,
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        else { throw FreightError(.internalError, "status of \(node) failed: \(result.stderr)") }
        return object
    }

    /// The release build of `freight` in the repository the tests run from (`swift build -c release --product
    /// freight`, done by the test command), when it is there: what suites that measure rates run.
    public static var releaseBinary: String? {
        guard let root = FreightProcess.repositoryRoot else { return nil }
        let path = "\(root)/.build/release/freight"
        return FileManager.default.isExecutableFile(atPath: path) ? path : nil
    }

    /// Ends every node by PID and removes the folder.
    public func stop() {
        // All are told at once, so that they drain together and the wait is one grace period, not one per node.
        for node in nodes { node.process.kill(SIGTERM) }
        for node in nodes { node.process.stop() }
        try? FileManager.default.removeItem(atPath: directory)
    }
}
