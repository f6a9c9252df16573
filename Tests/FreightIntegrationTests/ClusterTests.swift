import Foundation
import FreightCore
import FreightTesting
import Testing

/// Real `freight node` processes on 127.0.0.1-3, driven through the CLI as a user would.
@Suite(.serialized) struct ClusterTests {
    static let mebibyte: Int64 = 1 << 20

    /// Waits until `node` has moved at least `bytes` of body out: the transfer is under way, not starting.
    static func waitForBytesOut(_ cluster: ProcessCluster, _ node: String, atLeast bytes: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if (try await cluster.status(node)["bytes_out"] as? Int ?? 0) >= bytes { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("\(node) never moved \(bytes) bytes")
    }

    /// Waits until `node` has no message in flight and holds nothing of its memory budget or of shared memory lent.
    static func expectIdle(_ cluster: ProcessCluster, _ node: String) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        var status: [String: Any] = [:]
        while ContinuousClock.now < deadline {
            status = try await cluster.status(node)
            if status["messages_in_flight"] as? Int == 0, status["memory_reserved_bytes"] as? Int == 0,
                status["shared_regions_lent"] as? Int == 0
            {
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record(
            "\(node) is not idle: \(status["messages_in_flight"] ?? "?") in flight, \(status["memory_reserved_bytes"] ?? "?") bytes reserved, \(status["shared_regions_lent"] ?? "?") regions lent"
        )
    }

    /// "N of M bytes acknowledged" in a failure's reason.
    static func acknowledged(_ text: String) -> (acked: Int, total: Int)? {
        guard let match = text.firstMatch(of: /(\d+) of (\d+) bytes acknowledged/) else { return nil }
        return (Int(match.1)!, Int(match.2)!)
    }

    /// 256 MiB from an app on n1 to an app on n3 arrives byte-identical, and the sender learns the route.
    @Test func largeFileCrossesNodesByteIdentical() async throws {
        let cluster = try await ProcessCluster.start(nodes: 3)
        defer { cluster.stop() }
        let source = "\(cluster.directory)/source.bin"
        let out = "\(cluster.directory)/out"
        try await TestFiles.write(source, bytes: 256 * Self.mebibyte, seed: 11)
        let recv = try await cluster.receiver("data/shard/1", at: "n3", ["--out", out, "--count", "1"])
        defer { recv.stop() }

        let send = try await FreightProcess.run([
            "send", "data/shard/1", "--file", source, "--via", cluster.node("n1").socket, "--json",
        ])
        #expect(send.status == 0, "\(send.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(send.stdout.first!.utf8)) as! [String: Any]
        let delivery = (report["deliveries"] as! [[String: Any]]).first!
        #expect(delivery["path"] as? [String] == ["n1", "n3"])
        #expect(report["bytes"] as? Int == 256 << 20)

        #expect(try await recv.waitForExit(timeout: .seconds(60)) == 0)
        let file = recv.jsonLines.first { $0["event"] as? String == "received" }?["file"] as! String
        #expect(try await TestFiles.identical(source, file))
    }

    /// A 1 GiB message arrives byte-identical while every process stays under 256 MiB of resident memory.
    @Test func oneGibibyteInBoundedMemory() async throws {
        let cluster = try await ProcessCluster.start(nodes: 2)
        defer { cluster.stop() }
        let source = "\(cluster.directory)/source.bin"
        let out = "\(cluster.directory)/out"
        try await TestFiles.write(source, bytes: 1024 * Self.mebibyte, seed: 12)
        let recv = try await cluster.receiver("ckpt/full", at: "n2", ["--out", out, "--count", "1"])
        defer { recv.stop() }
        let send = try await FreightProcess.run(
            ["send", "ckpt/full", "--file", source, "--via", cluster.node("n1").socket, "--json"],
            timeout: .seconds(300))
        #expect(send.status == 0, "\(send.stderr)")
        #expect(try await recv.waitForExit(timeout: .seconds(60)) == 0)
        let received = recv.jsonLines.first { $0["event"] as? String == "received" }!
        #expect(try await TestFiles.identical(source, received["file"] as! String))

        let limit = 256 << 20
        let sendReport = try JSONSerialization.jsonObject(with: Data(send.stdout.first!.utf8)) as! [String: Any]
        #expect((sendReport["peak_rss_bytes"] as! Int) < limit, "sender peak RSS")
        #expect((received["peak_rss_bytes"] as! Int) < limit, "receiver peak RSS")
        for node in ["n1", "n2"] {
            let status = try await cluster.status(node)
            #expect((status["peak_rss_bytes"] as! Int) < limit, "\(node) peak RSS \(status["peak_rss_bytes"]!)")
        }
    }

    /// Many small messages through the CLI, as the README measures them: `send --count` says every one was
    /// delivered, and `recv --summary` prints lines of counts instead of a line per message, with totals that count
    /// each message once.
    @Test func manySmallMessagesAreSummarised() async throws {
        let cluster = try await ProcessCluster.start(nodes: 2)
        defer { cluster.stop() }
        let count = 20_000
        let recv = try await cluster.receiver("small/many", at: "n2", ["--summary", "--check", "--count", "\(count)"])
        defer { recv.stop() }
        let send = try await FreightProcess.run([
            "send", "small/many", "--size", "256", "--count", "\(count)", "--via", cluster.node("n1").socket,
        ])
        #expect(send.status == 0, "\(send.stderr)")
        #expect(send.stdout.last?.contains("\(count) messages of 256 B") == true, "\(send.stdout)")
        #expect(send.stdout.last?.contains("every one delivered") == true, "\(send.stdout)")
        #expect(send.stdout.last?.contains("messages/s") == true, "\(send.stdout)")
        #expect(try await recv.waitForExit(timeout: .seconds(30)) == 0, "\(recv.stderr)")
        let events = recv.jsonLines.compactMap { $0["event"] as? String }
        #expect(!events.contains("received"), "no line per message: \(Set(events))")
        let total = recv.jsonLines.first { $0["event"] as? String == "total" }
        #expect(total?["messages"] as? Int == count && total?["bytes"] as? Int == count * 256, "\(total ?? [:])")
        #expect(total?["failed"] as? Int == 0)
        let summed = recv.jsonLines.filter { $0["event"] as? String == "summary" }
            .reduce(0) { $0 + ($1["messages"] as? Int ?? 0) }
        #expect(summed <= count, "the per-second lines count each message at most once")
    }

    /// Group members share messages; a pattern receiver gets every message its pattern matches.
    @Test func groupsAndPatterns() async throws {
        let cluster = try await ProcessCluster.start(nodes: 3)
        defer { cluster.stop() }
        let memberA = try FreightProcess([
            "recv", "jobs/train", "--group", "workers", "--via", cluster.node("n2").socket, "--check", "--json",
        ])
        let memberB = try FreightProcess([
            "recv", "jobs/train", "--group", "workers", "--via", cluster.node("n3").socket, "--check", "--json",
        ])
        let watcher = try FreightProcess([
            "recv", "jobs/**", "--via", cluster.node("n3").socket, "--check", "--json", "--count", "4",
        ])
        defer {
            memberA.stop()
            memberB.stop()
            watcher.stop()
        }
        for process in [memberA, memberB, watcher] { _ = try await process.waitForLine { $0.contains("\"ready\"") } }
        try await cluster.waitForEndpoints("jobs/train", count: 3, at: "n1")

        let send = try await FreightProcess.run([
            "send", "jobs/train", "--size", "3MiB", "--count", "4", "--via", cluster.node("n1").socket, "--json",
        ])
        #expect(send.status == 0, "\(send.stderr)")
        #expect(send.stdout.filter { $0.contains("\"delivered\"") }.count == 4, "\(send.stdout)")
        #expect(send.stdout.last?.contains("\"messages\":4") == true, "the last line gives the rate of all four")
        #expect(try await watcher.waitForExit(timeout: .seconds(30)) == 0)
        try await Task.sleep(for: .milliseconds(300))
        let a = memberA.jsonLines.filter { $0["event"] as? String == "received" }
        let b = memberB.jsonLines.filter { $0["event"] as? String == "received" }
        #expect(a.count + b.count == 4, "each message reaches exactly one member of the group")
        #expect(a.count >= 1 && b.count >= 1, "both members take a share")
        for line in a + b + watcher.jsonLines.filter({ $0["event"] as? String == "received" }) {
            #expect(line["checked"] as? Bool == true)
        }
    }

    /// A message can pass a node that is not its last: n1 routes n3's endpoints through n2 (`--route n3=n2`), and
    /// 1 GiB crosses n1 → n2 → n3 byte-identical, with n2 relaying chunk by chunk and holding no more than its
    /// window, so its memory stays far below the message.
    @Test func aRelayCarriesAGibibyteCutThrough() async throws {
        let cluster = try ProcessCluster()
        defer { cluster.stop() }
        let window = ["--window", "8MiB"]
        let n1 = try await cluster.startNode(
            name: "n1", host: "127.0.0.1", join: [],
            extraArguments: window + [
                "--route", "n3=n2",
            ])
        try await cluster.startNode(name: "n2", host: "127.0.0.2", join: [n1.listen], extraArguments: window)
        try await cluster.startNode(name: "n3", host: "127.0.0.3", join: [n1.listen], extraArguments: window)
        try await cluster.waitForMesh()
        let idle = try await cluster.status("n2")["rss_bytes"] as? Int ?? 0
        let recv = try await cluster.receiver("far/away", at: "n3", ["--check", "--count", "1"])
        defer { recv.stop() }
        let send = try await FreightProcess.run(
            ["send", "far/away", "--size", "1GiB", "--via", n1.socket, "--json"], timeout: .seconds(300))
        #expect(send.status == 0, "\(send.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data((send.stdout.first ?? "{}").utf8)) as? [String: Any]
        let delivery = (report?["deliveries"] as? [[String: Any]])?.first
        #expect(delivery?["path"] as? [String] == ["n1", "n2", "n3"], "\(send.stdout)")
        #expect(try await recv.waitForExit(timeout: .seconds(60)) == 0, "\(recv.stderr)")
        let received = recv.jsonLines.first { $0["event"] as? String == "received" }
        #expect(received?["checked"] as? Bool == true)
        #expect(received?["path"] as? [String] == ["n1", "n2", "n3"])
        let relay = try await cluster.status("n2")
        #expect((relay["bytes_in"] as? Int ?? 0) >= 1 << 30, "n2 relayed the message")
        let peak = relay["peak_rss_bytes"] as? Int ?? .max
        print("relay n2: idle \(idle >> 20) MiB, peak \(peak >> 20) MiB while relaying 1 GiB with an 8 MiB window")
        #expect(peak - idle < 64 << 20, "n2 grew from \(idle >> 20) to \(peak >> 20) MiB")
        try await Self.expectIdle(cluster, "n2")
    }

    /// Nobody serves the address: the send fails at once with `no route to ADDRESS`.
    @Test func noRouteFailsAtOnce() async throws {
        let cluster = try await ProcessCluster.start(nodes: 2)
        defer { cluster.stop() }
        let started = ContinuousClock.now
        let send = try await FreightProcess.run([
            "send", "nobody/home", "--size", "1KiB", "--via", cluster.node("n1").socket,
        ])
        #expect(send.status != 0)
        #expect(send.stderr.trimmingCharacters(in: .whitespacesAndNewlines) == "no route to nobody/home")
        #expect(ContinuousClock.now - started < .seconds(10))
        let resolve = try await FreightProcess.run(["resolve", "nobody/**", "--via", cluster.node("n2").socket])
        #expect(resolve.status != 0)
        let bad = try await FreightProcess.run([
            "send", "Bad/Address", "--size", "1KiB", "--via", cluster.node("n1").socket,
        ])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("segment 1 'Bad'"))
    }

    /// The receiver's node is killed mid-transfer: the sender is told why; the rest of the cluster goes on.
    @Test func nodeKilledMidTransfer() async throws {
        let cluster = try await ProcessCluster.start(nodes: 3)
        defer { cluster.stop() }
        let doomed = try FreightProcess(["recv", "victim", "--via", cluster.node("n3").socket, "--json"])
        let survivor = try FreightProcess([
            "recv", "survivor", "--via", cluster.node("n2").socket, "--check", "--json", "--count", "1",
        ])
        defer {
            doomed.stop()
            survivor.stop()
        }
        _ = try await doomed.waitForLine { $0.contains("\"ready\"") }
        _ = try await survivor.waitForLine { $0.contains("\"ready\"") }
        try await cluster.waitForEndpoints("victim", count: 1, at: "n1")
        try await cluster.waitForEndpoints("survivor", count: 1, at: "n1")

        // A slow-enough transfer: 4 GiB generated, killed once 64 MiB moved and long before it ends.
        let send = try FreightProcess(["send", "victim", "--size", "4GiB", "--via", cluster.node("n1").socket])
        defer { send.stop() }
        try await Self.waitForBytesOut(cluster, "n1", atLeast: 64 << 20)
        #expect(send.isRunning, "the transfer must still be going when the node dies")
        cluster.node("n3").process.kill(SIGKILL)
        #expect(try await send.waitForExit(timeout: .seconds(20)) != 0)
        #expect(send.stderr.contains("node n3 went away"), "\(send.stderr)")
        let progress = Self.acknowledged(send.stderr)
        #expect(progress.map { $0.acked > 0 && $0.acked < $0.total } == true, "mid-transfer: \(send.stderr)")
        try await Self.expectIdle(cluster, "n1")

        let other = try await FreightProcess.run([
            "send", "survivor", "--size", "32MiB", "--via", cluster.node("n1").socket,
        ])
        #expect(other.status == 0, "\(other.stderr)")
        #expect(try await survivor.waitForExit(timeout: .seconds(20)) == 0)
        // n3's endpoints are gone from the directory.
        let resolve = try await FreightProcess.run(["resolve", "victim", "--via", cluster.node("n1").socket])
        #expect(resolve.status != 0)
    }

    /// The receiving app dies mid-transfer: the sender fails with the acknowledged offset; the node serves on.
    @Test func receiverKilledMidTransfer() async throws {
        let cluster = try await ProcessCluster.start(nodes: 2)
        defer { cluster.stop() }
        let recv = try await cluster.receiver("fragile", at: "n2", [])
        defer { recv.stop() }
        let send = try FreightProcess(["send", "fragile", "--size", "4GiB", "--via", cluster.node("n1").socket])
        defer { send.stop() }
        try await Self.waitForBytesOut(cluster, "n2", atLeast: 64 << 20)
        #expect(send.isRunning, "the transfer must still be going when the receiver dies")
        recv.kill(SIGKILL)
        #expect(try await send.waitForExit(timeout: .seconds(20)) != 0)
        #expect(send.stderr.contains("went away"), "\(send.stderr)")
        let progress = Self.acknowledged(send.stderr)
        #expect(progress.map { $0.acked > 0 && $0.acked < $0.total } == true, "mid-transfer: \(send.stderr)")
        try await Self.expectIdle(cluster, "n1")
        try await Self.expectIdle(cluster, "n2")
    }

    /// The sending app dies mid-transfer (mid-chunk, most likely): the receiver is told with a line that names the
    /// reason and goes on receiving, and the same link then carries the next message intact to the same receiver
    /// (relays completed the cut chunk so every frame stayed whole).
    @Test func senderKilledMidTransfer() async throws {
        let cluster = try await ProcessCluster.start(nodes: 2)
        defer { cluster.stop() }
        let recv = try await cluster.receiver("cut", at: "n2", ["--check"])
        defer { recv.stop() }
        let send = try FreightProcess(["send", "cut", "--size", "4GiB", "--via", cluster.node("n1").socket])
        defer { send.stop() }
        try await Self.waitForBytesOut(cluster, "n1", atLeast: 64 << 20)
        #expect(send.isRunning, "the transfer must still be going when the sender dies")
        send.kill(SIGKILL)
        let failed = try await recv.waitForLine(timeout: .seconds(20)) { $0.contains("\"failed\"") }
        #expect(failed.contains("sending app went away"), "\(failed)")
        try await Self.expectIdle(cluster, "n1")
        try await Self.expectIdle(cluster, "n2")
        #expect(recv.isRunning, "a failed message does not end the receiver")

        let next = try await FreightProcess.run(["send", "cut", "--size", "64MiB", "--via", cluster.node("n1").socket])
        #expect(next.status == 0, "\(next.stderr)")
        let received = try await recv.waitForLine(timeout: .seconds(20)) { $0.contains("\"received\"") }
        #expect(received.contains("\"checked\":true"), "\(received)")
    }

    /// `recv --check` vouches only for what it checked: a body that carries no generated seed (a file) makes it fail
    /// with the reason, never exit 0 as if checked; with `--out` the written file is checked.
    @Test func recvCheckRefusesWhatItCannotCheck() async throws {
        let cluster = try await ProcessCluster.start(nodes: 1)
        defer { cluster.stop() }
        let source = "\(cluster.directory)/plain.bin"
        try await TestFiles.write(source, bytes: 3 * Self.mebibyte, seed: 4)
        let unchecked = try await cluster.receiver("check/me", at: "n1", ["--check", "--count", "1"], seenAt: "n1")
        defer { unchecked.stop() }
        let sent = try await FreightProcess.run([
            "send", "check/me", "--file", source, "--via", cluster.node("n1").socket,
        ])
        #expect(sent.status != 0, "the receiver refused it, so it was not delivered: \(sent.stdout)")
        #expect(try await unchecked.waitForExit(timeout: .seconds(20)) != 0)
        #expect(unchecked.stderr.contains("carries no freight-seed"), "\(unchecked.stderr)")

        let out = "\(cluster.directory)/checked"
        let written = try await cluster.receiver(
            "check/me", at: "n1", ["--check", "--count", "1", "--out", out], seenAt: "n1")
        defer { written.stop() }
        let generated = try await FreightProcess.run([
            "send", "check/me", "--size", "5MiB", "--via", cluster.node("n1").socket,
        ])
        #expect(generated.status == 0, "\(generated.stderr)")
        #expect(try await written.waitForExit(timeout: .seconds(20)) == 0, "\(written.stderr)")
        #expect(written.jsonLines.first { $0["event"] as? String == "received" }?["checked"] as? Bool == true)
    }

    /// Garbage on a node's port closes that one connection; the node and its other links go on.
    @Test func hostileBytesCloseOnlyTheirConnection() async throws {
        let cluster = try await ProcessCluster.start(nodes: 2)
        defer { cluster.stop() }
        let listen = cluster.node("n1").listen
        let parts = listen.split(separator: ":")
        for payload in [
            Array("GET / HTTP/1.1\r\n\r\n".utf8),
            Array("FRGT".utf8) + [0, 1, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 2, 0, 0, 0],
        ] {
            try RawSocket.send(payload, host: String(parts[0]), port: Int(parts[1])!)
        }
        let recv = try FreightProcess([
            "recv", "after/garbage", "--via", cluster.node("n2").socket, "--count", "1", "--check",
        ])
        defer { recv.stop() }
        _ = try await recv.waitForLine { $0.contains("receiving") }
        try await cluster.waitForEndpoints("after/garbage", count: 1, at: "n1")
        let send = try await FreightProcess.run([
            "send", "after/garbage", "--size", "8MiB", "--via", cluster.node("n1").socket,
        ])
        #expect(send.status == 0, "\(send.stderr)")
        #expect(try await recv.waitForExit(timeout: .seconds(20)) == 0)
    }
}

/// Sends bytes on a plain TCP connection and waits for the peer to close it.
enum RawSocket {
    static func send(_ bytes: [UInt8], host: String, port: Int) throws {
        let fd = try BlockingSocket.connect(host: host, port: port)
        defer { close(fd) }
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        // The node answers with its preface and hello, then closes: read until EOF.
        while read(fd, &buffer, buffer.count) > 0 {}
    }
}

/// Striping and apps over TCP.
@Suite(.serialized) struct StripingTests {
    /// With `--striping spread` every stripe carries chunks; the receiver reassembles them out of order.
    @Test func spreadStripingUsesEveryStream() async throws {
        let cluster = try await ProcessCluster.start(nodes: 2, streams: 4, extraArguments: ["--striping", "spread"])
        defer { cluster.stop() }
        let recv = try await cluster.receiver("striped", at: "n2", ["--count", "1", "--check"])
        defer { recv.stop() }
        let send = try await FreightProcess.run([
            "send", "striped", "--size", "128MiB", "--chunk-size", "1MiB", "--via", cluster.node("n1").socket,
        ])
        #expect(send.status == 0, "\(send.stderr)")
        #expect(try await recv.waitForExit(timeout: .seconds(30)) == 0)
        #expect(recv.jsonLines.first { $0["event"] as? String == "received" }?["checked"] as? Bool == true)
        let peers = try await cluster.status("n1")["peers"] as! [[String: Any]]
        let stripes = peers.first!["stripe_bytes"] as! [Int]
        #expect(stripes.count == 4)
        #expect(stripes.allSatisfy { $0 > 0 }, "bytes per stripe: \(stripes)")
        #expect(stripes.reduce(0, +) == 128 << 20)
    }

    /// An app attaches over the node's TCP port as well as its Unix socket, when the node lets apps in over TCP.
    @Test func appsAttachOverTCP() async throws {
        let cluster = try await ProcessCluster.start(nodes: 2, extraArguments: ["--apps-over-tcp"])
        defer { cluster.stop() }
        let recv = try FreightProcess([
            "recv", "over/tcp", "--via", cluster.node("n2").listen, "--count", "1", "--check",
        ])
        defer { recv.stop() }
        _ = try await recv.waitForLine { $0.contains("receiving") }
        try await cluster.waitForEndpoints("over/tcp", count: 1, at: "n1")
        let send = try await FreightProcess.run([
            "send", "over/tcp", "--size", "16MiB", "--via", cluster.node("n1").listen,
        ])
        #expect(send.status == 0, "\(send.stderr)")
        #expect(try await recv.waitForExit(timeout: .seconds(20)) == 0)
        #expect(recv.stdoutLines.last?.contains("every byte checked") == true)
    }
}
