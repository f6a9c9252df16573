import Foundation
import FreightCore
import FreightTesting
import FreightWire
import Testing

/// Function endpoints (docs/functions.md, "Function endpoints") on real node processes, in the mesh and over a
/// real etcd: `freight fn deploy` binds a module to an address across the cluster, nodes started with
/// `--functions` run it on demand, and `freight fn call` gets its replies.
@Suite(.serialized) struct FunctionEndpointTests {
    enum Backend: String, CaseIterable, Sendable { case mesh, etcd }

    /// The nodes' addresses: 127.0.0.121 to .124, which no other suite uses (.100 to .115 are strangers' sources).
    static let host = "127.0.0.12"

    /// Release nodes: WasmKit's interpreter in a debug build took 24 s for the checksum of 64 KiB on a loaded
    /// machine (a test's request waits 30 s); the `freight` apps the tests run are the debug build.
    static func cluster() throws -> ProcessCluster {
        let binary = try #require(
            ProcessCluster.releaseBinary, "build the release node first: swift build -c release --product freight")
        return try ProcessCluster(executable: binary)
    }

    /// n1 and n2 serve functions (compiled modules dropped after `idle` seconds); n3 does not.
    static func start(_ backend: Backend, idle: Int = 300) async throws -> (ProcessCluster, EtcdServer?) {
        let cluster = try Self.cluster()
        let etcd: EtcdServer?
        do {
            etcd = backend == .etcd ? try await EtcdServer.start() : nil
        } catch {
            cluster.stop()
            throw error
        }
        do {
            let directory = etcd.map { ["--directory", $0.url, "--lease-ttl", "3"] } ?? []
            let functions = ["--functions", "--function-idle", "\(idle)"]
            let n1 = try await cluster.startNode(
                name: "n1", host: "\(host)1", join: [], extraArguments: directory + functions)
            let join = etcd == nil ? [n1.listen] : []
            try await cluster.startNode(name: "n2", host: "\(host)2", join: join, extraArguments: directory + functions)
            try await cluster.startNode(name: "n3", host: "\(host)3", join: join, extraArguments: directory)
            try await cluster.waitForMesh()
            return (cluster, etcd)
        } catch {
            cluster.stop()
            etcd?.stop()
            throw error
        }
    }

    static func fn(_ arguments: [String], at node: ProcessCluster.Node) async throws -> (
        status: Int32, stdout: [String], stderr: String
    ) {
        try await FreightProcess.run(["fn"] + arguments + ["--via", node.socket], timeout: .seconds(60))
    }

    static var checksum: String {
        "\(FilterTests.examples)/checksum.wat"
    }

    /// The reply `freight fn call` prints for the checksum function: CRC32C, 4 bytes little-endian, in hex.
    static func expectedChecksum(_ body: [UInt8]) -> String {
        let crc = body.withUnsafeBytes { CRC32C.checksum($0) }
        return withUnsafeBytes(of: crc.littleEndian) { $0.map { String(format: "%02x", $0) }.joined() }
    }

    /// What the nodes logged about functions, and every warning and notice, for a failure's message.
    static func hostLogs(_ cluster: ProcessCluster) -> String {
        ["n1", "n2", "n3"].map { name in
            let lines = cluster.node(name).process.stderr.split(separator: "\n").filter {
                $0.contains("function") || $0.contains("module") || $0.contains(" warning ")
                    || $0.contains(" notice ") || $0.contains(" error ")
            }
            return "\(name) logged:\n" + lines.suffix(20).joined(separator: "\n")
        }.joined(separator: "\n")
    }

    /// Waits until `node` resolves `address` to `count` endpoints (the hosts that serve it).
    static func waitForServers(_ cluster: ProcessCluster, _ address: String, count: Int, at node: String) async throws {
        let deadline = ContinuousClock.now + .seconds(15)
        var last: [String] = []
        while ContinuousClock.now < deadline {
            let result = try await FreightProcess.run([
                "resolve", address, "--via", cluster.node(node).socket, "--json",
            ])
            last = result.stdout
            if result.stdout.count == count && (result.status == 0 || count == 0) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw FreightError(.internalError, "\(node) resolves \(address) to \(last), not \(count) hosts")
    }

    /// Deployed at a node that serves no functions, a module answers requests from every node; at most
    /// `--max-instances` hosts take its messages; a module that traps fails only its request, with the reason; a
    /// message that asks for no reply is refused; a redeploy takes effect; a removal unbinds it everywhere.
    @Test(arguments: Backend.allCases)
    func aDeployedFunctionAnswersRequestsFromEveryNode(_ backend: Backend) async throws {
        let (cluster, etcd) = try await Self.start(backend)
        defer {
            cluster.stop()
            etcd?.stop()
        }
        let (n1, n2, n3) = (cluster.node("n1"), cluster.node("n2"), cluster.node("n3"))
        let folder = NSTemporaryDirectory() + "freight-fn-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }

        let deploy = try await Self.fn(
            ["deploy", Self.checksum, "--address", "tools/crc", "--max-instances", "1", "--json"], at: n3)
        #expect(deploy.status == 0, "\(deploy.stderr)")
        let record = try JSONSerialization.jsonObject(with: Data((deploy.stdout.first ?? "{}").utf8)) as? [String: Any]
        #expect(record?["address"] as? String == "tools/crc")
        #expect(["n1", "n2"].contains(record?["deployed_by"] as? String ?? ""), "a host took the deploy: \(deploy)")
        // One instance across the cluster: one host takes its messages.
        try await Self.waitForServers(cluster, "tools/crc", count: 1, at: "n3")

        var random = SeededRandom(seed: 23)
        let body = (0..<65_536).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        let file = "\(folder)/body"
        try Data(body).write(to: URL(fileURLWithPath: file))
        for node in [n3, n1, n2] {
            let call = try await Self.fn(["call", "tools/crc", "--file", file], at: node)
            #expect(call.status == 0, "\(node.name): \(call.stderr)\n\(Self.hostLogs(cluster))")
            #expect(call.stdout.first == Self.expectedChecksum(body), "\(node.name): \(call.stdout)")
        }
        let small = try await Self.fn(["call", "tools/crc", "--data", "123456789"], at: n3)
        #expect(small.stdout.first == "839206e3", "CRC32C of 123456789 is e3069283: \(small)")

        // Every node lists it, whichever backend keeps it.
        for node in [n1, n2, n3] {
            let list = try await Self.fn(["list", "--json"], at: node)
            let records =
                try JSONSerialization.jsonObject(with: Data((list.stdout.first ?? "[]").utf8)) as? [[String: Any]]
            #expect(records?.map { $0["address"] as? String } == ["tools/crc"], "\(node.name): \(list)")
        }

        // A module that traps fails its request with the reason, and nothing else.
        let trap = try FilterTests.module(
            "trap",
            """
            (module
              (memory (export "memory") 1)
              (func (export "freight_abi_v1"))
              (func (export "begin") (param i64 i32 i32) (result i64) (i64.const -1))
              (func (export "input") (param i32) (result i32) (i32.const 16))
              (func (export "chunk") (param i32) (result i64) unreachable)
              (func (export "end") (result i64) (i64.const 0)))
            """, in: folder)
        #expect(
            try await Self.fn(["deploy", trap, "--address", "tools/trap", "--max-instances", "2"], at: n1).status == 0)
        try await Self.waitForServers(cluster, "tools/trap", count: 2, at: "n3")
        let trapped = try await Self.fn(["call", "tools/trap", "--data", "x"], at: n3)
        #expect(trapped.status != 0)
        #expect(trapped.stderr.contains("trapped in chunk"), "\(trapped.stderr)")
        let after = try await Self.fn(["call", "tools/crc", "--data", "123456789"], at: n3)
        #expect(after.stdout.first == "839206e3", "the host went on serving: \(after)")

        // A message that asks for no reply has nowhere for the output to go: refused with the reason.
        let send = try await FreightProcess.run(["send", "tools/crc", "--size", "10", "--via", n3.socket])
        #expect(send.status != 0 && send.stderr.contains("asks for no reply"), "\(send.stderr)")

        // A redeploy with two instances: both hosts take its messages.
        #expect(
            try await Self.fn(["deploy", Self.checksum, "--address", "tools/crc", "--max-instances", "2"], at: n2)
                .status == 0)
        try await Self.waitForServers(cluster, "tools/crc", count: 2, at: "n3")

        // Removed: unbound everywhere.
        #expect(try await Self.fn(["remove", "tools/crc"], at: n3).status == 0)
        try await Self.waitForServers(cluster, "tools/crc", count: 0, at: "n3")
        let gone = try await Self.fn(["call", "tools/crc", "--data", "1"], at: n1)
        #expect(gone.status != 0 && gone.stderr.contains("no route"), "\(gone.stderr)")
        let again = try await Self.fn(["remove", "tools/crc"], at: n1)
        #expect(again.status != 0 && again.stderr.contains("no function is bound"), "\(again.stderr)")
        // The fabric's own addresses cannot be taken.
        let reserved = try await Self.fn(["deploy", Self.checksum, "--address", "_inbox/n1/x"], at: n1)
        #expect(reserved.status != 0 && reserved.stderr.contains("belong to the fabric"), "\(reserved.stderr)")
        try await ClusterTests.expectIdle(cluster, "n1")
        try await ClusterTests.expectIdle(cluster, "n2")
    }

    /// A node that starts after the deploy learns the function (from its peers' gossip, or from etcd) and fetches
    /// the module from a host that holds it; once the node that took the deploy is gone, the function still
    /// answers. A module idle for `--function-idle` is dropped and its next message starts it cold again.
    /// More functions served at one node than it runs at once (`Limits.functionRunsPerNodeMax`): each answers,
    /// since a function waiting for its next message holds none of the node's run slots.
    @Test func moreFunctionsThanRunSlotsAllAnswer() async throws {
        let cluster = try Self.cluster()
        defer { cluster.stop() }
        let n1 = try await cluster.startNode(
            name: "n1", host: "\(Self.host)5", join: [], extraArguments: ["--functions", "--function-idle", "300"])
        let count = Limits.functionRunsPerNodeMax + 1
        for index in 1...count {
            let deploy = try await Self.fn(
                ["deploy", Self.checksum, "--address", "tools/crc-\(index)", "--max-instances", "1"], at: n1)
            try #require(deploy.status == 0, "\(deploy.stderr)")
        }
        try await Self.waitForServers(cluster, "tools/crc-\(count)", count: 1, at: "n1")
        // The last deployed first: the function that would have waited for a run slot, with every other idle.
        for index in (1...count).reversed() {
            let call = try await Self.fn(
                ["call", "tools/crc-\(index)", "--data", "123456789", "--timeout", "20"], at: n1)
            #expect(call.stdout.first == "839206e3", "tools/crc-\(index): \(call.stderr)")
        }
    }

    @Test(arguments: Backend.allCases)
    func aLateHostLearnsTheFunctionAndOutlivesTheDeployer(_ backend: Backend) async throws {
        let (cluster, etcd) = try await Self.start(backend, idle: 2)
        defer {
            cluster.stop()
            etcd?.stop()
        }
        let deploy = try await Self.fn(
            ["deploy", Self.checksum, "--address", "tools/crc", "--max-instances", "3", "--json"],
            at: cluster.node("n1"))
        #expect(deploy.status == 0, "\(deploy.stderr)")
        let record = try JSONSerialization.jsonObject(with: Data((deploy.stdout.first ?? "{}").utf8)) as? [String: Any]
        let deployer = try #require(record?["deployed_by"] as? String)
        try await Self.waitForServers(cluster, "tools/crc", count: 2, at: "n3")

        let directory = etcd.map { ["--directory", $0.url, "--lease-ttl", "3"] } ?? []
        try await cluster.startNode(
            name: "n4", host: "\(Self.host)4", join: etcd == nil ? [cluster.node("n3").listen] : [],
            extraArguments: directory + ["--functions", "--function-idle", "2"])
        try await cluster.waitForMesh()
        try await Self.waitForServers(cluster, "tools/crc", count: 3, at: "n3")

        cluster.node(deployer).process.stop()
        try await Self.waitForServers(cluster, "tools/crc", count: 2, at: "n3")
        let late = cluster.node("n4")
        for _ in 0..<4 {
            let call = try await Self.fn(["call", "tools/crc", "--data", "123456789"], at: cluster.node("n3"))
            #expect(call.stdout.first == "839206e3", "\(call)")
        }
        // The late node's host started the module cold at its first message, and drops it when idle.
        let served = [late] + cluster.nodes.filter { $0.name != deployer && $0.name != "n3" && $0.name != "n4" }
        var coldStarts = 0
        for node in served where node.process.stderr.contains("cold start") { coldStarts += 1 }
        #expect(coldStarts >= 1, "no host logged a cold start")
        var dropped = false
        for node in served where try await node.process.waitForStderr(containing: "idle for", timeout: .seconds(8)) {
            dropped = true
        }
        #expect(dropped, "no host dropped its idle module")
    }
}
