import Foundation
import FreightClient
import FreightCore
import FreightTesting
import FreightTransport
import Testing

/// The directory backends: the same behaviour tests against `mesh` and `etcd` (a real etcd server), then what only
/// etcd has: churn across nodes and an etcd outage (docs/directory.md).
@Suite(.serialized) struct DirectoryTests {
    enum Backend: String, CaseIterable, Sendable { case mesh, etcd }

    /// Lease TTL of the etcd tests: short, so that a dead node's endpoints go quickly.
    static let leaseTTL = 2

    /// Three nodes on `backend`: mesh nodes join n1; etcd nodes find each other through etcd alone.
    static func start(_ backend: Backend, nodes: Int = 3) async throws -> (ProcessCluster, EtcdServer?) {
        switch backend {
        case .mesh:
            return (try await ProcessCluster.start(nodes: nodes), nil)
        case .etcd:
            let etcd = try await EtcdServer.start()
            do {
                let cluster = try await ProcessCluster.start(
                    nodes: nodes, join: false,
                    extraArguments: ["--directory", etcd.url, "--lease-ttl", "\(leaseTTL)"])
                return (cluster, etcd)
            } catch {
                etcd.stop()
                throw error
            }
        }
    }

    static func resolveCount(_ cluster: ProcessCluster, _ pattern: String, at node: String) async throws -> Int {
        let result = try await FreightProcess.run(["resolve", pattern, "--via", cluster.node(node).socket, "--json"])
        return result.status == 0 ? result.stdout.count : 0
    }

    static func eventually(timeout: Duration, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return try await condition()
    }

    // MARK: The same on both

    /// Each node's rails and hardware reach every other node through the directory, and `resolve --explain` plans
    /// over them: rail-aligned NICs, every shared rail for host memory, shared memory on one node, and never NVLink
    /// (this build has no GPU transport) even where two GPUs share a rack's NVLink domain.
    @Test(arguments: Backend.allCases) func topologyTravelsThroughTheDirectory(_ backend: Backend) async throws {
        let etcd = backend == .etcd ? try await EtcdServer.start() : nil
        let cluster = try ProcessCluster()
        defer {
            cluster.stop()
            etcd?.stop()
        }
        var first: String?
        for index in 1...2 {
            let file = "\(cluster.directory)/topology-\(index).json"
            let topology = """
                {"gpus": [{"index": 0, "model": "H100", "pcie_switch": "sw0", "nvlink_domain": "rack-1",
                           "nvlink_gbit_per_s": 3600},
                          {"index": 1, "model": "H100", "pcie_switch": "sw1", "nvlink_domain": "rack-1"}],
                 "nics": [{"name": "mlx5_0", "address": "127.0.0.\(index)", "rail": 0, "pcie_switch": "sw0",
                           "gbit_per_s": 400},
                          {"name": "mlx5_1", "address": "127.0.1.\(index)", "rail": 1, "pcie_switch": "sw1",
                           "gbit_per_s": 100}]}
                """
            try Data(topology.utf8).write(to: URL(fileURLWithPath: file))
            var arguments = [
                "--topology", file, "--nvidia-smi", "off", "--rail", "127.0.0.\(index)", "--rail", "127.0.1.\(index)",
            ]
            if let etcd { arguments += ["--directory", etcd.url, "--lease-ttl", "\(Self.leaseTTL)"] }
            let node = try await cluster.startNode(
                name: "n\(index)", host: "127.0.0.\(index)", join: first.map { [$0] } ?? [], extraArguments: arguments)
            if backend == .mesh, first == nil { first = node.listen }
        }
        try await cluster.waitForMesh()
        let n1Port = cluster.node("n1").listen.split(separator: ":").last!
        var peer: [String: Any] = [:]
        #expect(
            try await Self.eventually(timeout: .seconds(10)) {
                peer = ((try await cluster.status("n2"))["peers"] as? [[String: Any]])?.first ?? [:]
                return (peer["streams_up"] as? Int) == 8
            }, "\(peer)")
        #expect(peer["rails"] as? [String] == ["127.0.0.1:\(n1Port)", "127.0.1.1:\(n1Port)"])
        #expect(peer["gpus"] as? Int == 2 && peer["nics"] as? Int == 2)

        let remote = try await cluster.receiver("topo/remote", at: "n2", seenAt: "n1")
        defer { remote.stop() }
        let local = try await cluster.receiver("topo/local", at: "n1", seenAt: "n1")
        defer { local.stop() }
        func explain(_ address: String, _ options: [String] = []) async throws -> [String: Any] {
            let result = try await FreightProcess.run(
                ["resolve", address, "--explain", "--size", "1GiB", "--via", cluster.node("n1").socket, "--json"]
                    + options)
            #expect(result.status == 0, "\(result.stderr)")
            return try #require(
                try JSONSerialization.jsonObject(with: Data((result.stdout.first ?? "{}").utf8)) as? [String: Any])
        }
        func paths(_ plan: [String: Any]) -> [(kind: String, via: String, bytes: Int)] {
            ((plan["paths"] as? [[String: Any]]) ?? []).map {
                ($0["kind"] as? String ?? "", $0["via"] as? String ?? "", $0["bytes"] as? Int ?? 0)
            }
        }
        // Host memory: both rails, 400 : 100 Gbit/s.
        let host = paths(try await explain("topo/remote"))
        #expect(host.map(\.kind) == ["rail-nic", "rail-nic"])
        #expect(host.first?.via.hasPrefix("rail 0 mlx5_0 127.0.0.1:") == true)
        #expect(host.count == 2 && abs(Double(host[0].bytes) / Double(host[1].bytes) - 4) < 0.01)
        // A sender on GPU 1 uses GPU 1's rail; GPUs in one NVLink domain still go over a NIC, with the reason.
        let placed = try await explain("topo/remote", ["--from-gpu", "1", "--to-gpu", "0"])
        #expect(paths(placed).map(\.kind) == ["rail-nic"])
        #expect(paths(placed).first?.via.hasPrefix("rail 1 mlx5_1") == true)
        #expect(((placed["notes"] as? [String]) ?? []).contains { $0.contains("NVLink domain rack-1") })
        // Same node: shared memory.
        #expect(paths(try await explain("topo/local")).map(\.kind) == ["shared-memory"])

        // A message whose sender names GPU 1 goes on GPU 1's rail only (stripes 4..<8); one that names no GPU
        // may use both.
        func stripeBytes() async throws -> [Int] {
            let peers = (try await cluster.status("n1"))["peers"] as? [[String: Any]]
            return (peers?.first?["stripe_bytes"] as? [Int]) ?? []
        }
        let before = try await stripeBytes()
        let placedSend = try await FreightProcess.run([
            "send", "topo/remote", "--size", "64MiB", "--gpu", "1", "--via", cluster.node("n1").socket,
        ])
        #expect(placedSend.status == 0, "\(placedSend.stderr)")
        let after = try await stripeBytes()
        let moved = zip(after, before).map { $0 - $1 }
        #expect(moved.count == 8 && moved.prefix(4).reduce(0, +) == 0, "\(moved)")
        #expect(moved.dropFirst(4).reduce(0, +) == 64 << 20, "\(moved)")
    }

    /// Addresses, groups and patterns registered on one node resolve on every node, and go away with their app.
    @Test(arguments: Backend.allCases) func endpointsAppearEverywhereAndGoAway(_ backend: Backend) async throws {
        let (cluster, etcd) = try await Self.start(backend)
        defer {
            cluster.stop()
            etcd?.stop()
        }
        let a = try await cluster.receiver("dir/a", at: "n2", seenAt: "n1")
        let g2 = try await cluster.receiver("dir/jobs", at: "n2", ["--group", "workers"], seenAt: "n1")
        let g3 = try FreightProcess([
            "recv", "dir/jobs", "--group", "workers", "--via", cluster.node("n3").socket, "--json",
        ])
        let pattern = try FreightProcess(["recv", "dir/**", "--via", cluster.node("n3").socket, "--json"])
        defer { for process in [a, g2, g3, pattern] { process.stop() } }
        try await cluster.waitForEndpoints("dir/jobs", count: 3, at: "n1")  // two group members and the pattern
        for node in ["n1", "n2", "n3"] {
            #expect(try await Self.resolveCount(cluster, "dir/a", at: node) == 2, "dir/a at \(node)")
        }
        let sent = try await FreightProcess.run([
            "send", "dir/jobs", "--size", "1MiB", "--via", cluster.node("n1").socket, "--json",
        ])
        #expect(sent.status == 0, "\(sent.stderr)")
        a.stop()
        let gone = try await Self.eventually(timeout: .seconds(5)) {
            let atOne = try await Self.resolveCount(cluster, "dir/a", at: "n1")
            let atThree = try await Self.resolveCount(cluster, "dir/a", at: "n3")
            return atOne == 1 && atThree == 1
        }
        #expect(gone, "dir/a's endpoint went away everywhere; only the pattern is left")
    }

    /// A node that dies takes its endpoints with it (mesh: when its links close; etcd: when its lease expires),
    /// and a send to them then fails at once with `no route`.
    @Test(arguments: Backend.allCases) func aKilledNodesEndpointsDisappear(_ backend: Backend) async throws {
        let (cluster, etcd) = try await Self.start(backend)
        defer {
            cluster.stop()
            etcd?.stop()
        }
        let receiver = try await cluster.receiver("dir/doomed", at: "n3", seenAt: "n2")
        defer { receiver.stop() }
        try await cluster.waitForEndpoints("dir/doomed", count: 1, at: "n1")
        // Watch from apps on the survivors (a resolve each 20 ms, no process to start per look).
        let watchers = [
            try await FreightClient.connect(to: .unix(path: cluster.node("n1").socket), label: "w1"),
            try await FreightClient.connect(to: .unix(path: cluster.node("n2").socket), label: "w2"),
        ]
        let killed = ContinuousClock.now
        cluster.node("n3").process.kill(SIGKILL)
        receiver.kill(SIGKILL)
        let bound: Duration = backend == .etcd ? .seconds(Self.leaseTTL + 2) : .seconds(2)
        var gone = false
        while !gone && ContinuousClock.now - killed < bound + .seconds(3) {
            var empty = true
            for watcher in watchers where !(try await watcher.resolve("dir/doomed").endpoints.isEmpty) { empty = false }
            gone = empty
            if !gone { try await Task.sleep(for: .milliseconds(20)) }
        }
        let took = ContinuousClock.now - killed
        for watcher in watchers { await watcher.close() }
        #expect(gone && took <= bound, "endpoints went after \(took), bound \(bound)")
        let started = ContinuousClock.now
        let send = try await FreightProcess.run([
            "send", "dir/doomed", "--size", "1MiB", "--via", cluster.node("n1").socket,
        ])
        #expect(send.status != 0)
        #expect(send.stderr.contains("no route to dir/doomed"), "\(send.stderr)")
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    // MARK: etcd only

    /// 10,000 endpoints registered and then removed in bursts by apps on three nodes: after each burst every
    /// node's view equals etcd's (same count, same digest of keys) within 2 seconds of the last change.
    @Test func churnConvergesWithinTwoSeconds() async throws {
        let (cluster, etcd) = try await Self.start(.etcd)
        defer {
            cluster.stop()
            etcd?.stop()
        }
        defer {
            // A session that broke says why in the node's log: show it with the failure.
            for node in cluster.nodes where node.process.stderr.contains("unreachable") {
                Issue.record("\(node.name): \(node.process.stderr.suffix(2000))")
            }
        }
        let clients = try await withThrowingTaskGroup(of: FreightClient.self) { group in
            for node in ["n1", "n2", "n3"] {
                group.addTask {
                    try await FreightClient.connect(to: .unix(path: cluster.node(node).socket), label: "churn-\(node)")
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        var subscriptions: [[Subscription]] = Array(repeating: [], count: clients.count)
        let perClient = 4 * (10_000 / clients.count / 4 + 1)

        /// Waits for etcd to hold `expected` endpoints (the last change has landed), then checks that every node's
        /// view equals etcd's within 2 seconds.
        func converged(expected: Int, label: String) async throws {
            var truth = (count: 0, digest: UInt64(0))
            let landed = try await Self.eventually(timeout: .seconds(30)) {
                truth = try await etcd!.endpointDigest(cluster: "test")
                return truth.count == expected
            }
            #expect(landed, "\(label): etcd holds \(truth.count) endpoints, expected \(expected)")
            let last = ContinuousClock.now
            var views: [(UInt64, UInt64)] = []
            let matched = try await Self.eventually(timeout: .seconds(10)) {
                views = []
                for client in clients {
                    let status = try await client.status()
                    views.append((status.knownEndpoints, status.directoryDigest))
                }
                return views.allSatisfy { $0.0 == UInt64(truth.count) && $0.1 == truth.digest }
            }
            let took = ContinuousClock.now - last
            #expect(matched, "\(label): views \(views) vs etcd \(truth)")
            #expect(took <= .seconds(2), "\(label): converged \(took) after the last change")
        }

        // Registration bursts: 4 bursts of a quarter each, all three apps at once.
        for burst in 0..<4 {
            let added = try await withThrowingTaskGroup(of: (Int, [Subscription]).self) { group in
                for (index, client) in clients.enumerated() {
                    group.addTask {
                        // As apps do: many registrations at once (the node batches them into transactions).
                        try await withThrowingTaskGroup(of: Subscription.self) { inner in
                            var made: [Subscription] = []
                            for n in 0..<(perClient / 4) {
                                if n >= 200, let done = try await inner.next() { made.append(done) }
                                inner.addTask { try await client.receive("churn/\(index)/\(burst)/\(n)") }
                            }
                            for try await subscription in inner { made.append(subscription) }
                            return (index, made)
                        }
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            for (index, made) in added { subscriptions[index] += made }
            try await converged(
                expected: subscriptions.reduce(0) { $0 + $1.count }, label: "after registration burst \(burst)")
        }
        let total = subscriptions.reduce(0) { $0 + $1.count }
        #expect(total >= 10_000)

        // Removal bursts: half, then the rest.
        for part in 0..<2 {
            for index in subscriptions.indices {
                let count = part == 0 ? subscriptions[index].count / 2 : subscriptions[index].count
                for subscription in subscriptions[index].prefix(count) { subscription.cancel() }
                subscriptions[index].removeFirst(count)
            }
            try await converged(
                expected: subscriptions.reduce(0) { $0 + $1.count }, label: "after removal burst \(part)")
        }
        for client in clients { await client.close() }
    }

    /// etcd goes down: nodes route to the endpoints they know, say the directory is unreachable, and refuse new
    /// registrations with the reason. etcd comes back: nodes reconcile on their own and keep live endpoints.
    @Test func etcdOutageAndReturn() async throws {
        let (cluster, first) = try await Self.start(.etcd, nodes: 2)
        var etcd = try #require(first)
        defer {
            cluster.stop()
            etcd.stop()
        }
        let receiver = try await cluster.receiver("out/a", at: "n2", ["--check"], seenAt: "n1")
        defer { receiver.stop() }
        let app = try await FreightClient.connect(to: .unix(path: cluster.node("n1").socket), label: "late")

        etcd.stop(keepData: true)
        let down = try await Self.eventually(timeout: .seconds(10)) {
            !(try await app.status().directoryUnreachable.isEmpty)
        }
        #expect(down, "status says the directory is unreachable")
        let status = try await cluster.status("n1")
        #expect((status["directory_unreachable"] as? String)?.isEmpty == false)
        let sent = try await FreightProcess.run([
            "send", "out/a", "--size", "4MiB", "--via", cluster.node("n1").socket,
        ])
        #expect(sent.status == 0, "known endpoints keep routing: \(sent.stderr)")
        let refused = await #expect(throws: FreightError.self) { _ = try await app.receive("out/new") }
        #expect(refused?.message.contains("directory unreachable") == true, "\(String(describing: refused))")

        etcd = try await EtcdServer.start(
            clientPort: etcd.clientPort, peerPort: etcd.peerPort, dataDirectory: etcd.dataDirectory)
        let back = try await Self.eventually(timeout: .seconds(15)) {
            try await app.status().directoryUnreachable.isEmpty
        }
        #expect(back, "the node reconciled without a restart")
        #expect(try await Self.resolveCount(cluster, "out/a", at: "n1") == 1, "the live endpoint survived")
        let late = try await app.receive("out/new")
        try await cluster.waitForEndpoints("out/new", count: 1, at: "n2")
        late.cancel()
        let truth = try await etcd.endpointDigest(cluster: "test")
        let agreed = try await Self.eventually(timeout: .seconds(5)) {
            let mine = try await app.status().directoryDigest
            return try await mine == etcd.endpointDigest(cluster: "test").digest
        }
        #expect(agreed, "n1 agrees with etcd (\(truth.count) endpoints)")
        await app.close()
    }

    /// A new user starts a node on etcd, waits for its socket, and starts a receiver at once: the registration
    /// waits for the directory (within `Limits.directoryWaitSeconds`) instead of being refused because the node had
    /// not reached etcd yet.
    @Test func appAttachingTheMomentTheSocketExistsIsRegistered() async throws {
        let etcd = try await EtcdServer.start()
        let cluster = try ProcessCluster()
        defer {
            cluster.stop()
            etcd.stop()
        }
        let socket = "\(cluster.directory)/n1.sock"
        let node = try FreightProcess([
            "node", "--cluster", "test", "--name", "n1", "--listen", "127.0.0.1:0", "--socket", socket,
            "--directory", etcd.url,
        ])
        defer { node.stop() }
        let appeared = try await Self.eventually(timeout: .seconds(20)) {
            FileManager.default.fileExists(atPath: socket)
        }
        #expect(appeared, "the node's socket appears")
        let recv = try FreightProcess(["recv", "early/bird", "--via", socket, "--json", "--count", "1"])
        defer { recv.stop() }
        let ready = try await recv.waitForLine(timeout: .seconds(20)) { $0.contains("\"ready\"") }
        #expect(ready.contains("early"))
        #expect(recv.isRunning, "\(recv.stderr)")
        let send = try await FreightProcess.run(["send", "early/bird", "--size", "1MiB", "--via", socket])
        #expect(send.status == 0, "\(send.stderr)")
        #expect(try await recv.waitForExit(timeout: .seconds(20)) == 0)
    }
}
