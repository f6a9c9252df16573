import Foundation
import FreightCore
import FreightTesting
import Testing

/// WebAssembly filters at a node (docs/functions.md), on real node processes: n1 routes n3's endpoints through n2
/// (`--route n3=n2`), and n2 runs filters on what passes it.
@Suite(.serialized) struct FilterTests {
    static let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("examples/functions").path

    /// bf16 of a binary32, rounded to nearest with ties to even; NaN made quiet (the reference the filter is held to).
    static func bf16(_ bits: UInt32) -> UInt16 {
        if bits & 0x7fff_ffff > 0x7f80_0000 { return UInt16(bits >> 16) | 0x40 }
        return UInt16((bits &+ 0x7fff &+ ((bits >> 16) & 1)) >> 16)
    }

    /// The nodes' addresses: 127.0.0.91 to .93, which no other suite uses (a test here kills n3's connections).
    static let host = "127.0.0.9"

    /// The release build of n1, n2 (with `filters` and `arguments`) and n3: WasmKit in a debug build runs ten times
    /// slower.
    static func relay(filters: [String], arguments: [String] = []) async throws -> ProcessCluster {
        let binary = try #require(
            ProcessCluster.releaseBinary, "build the release node first: swift build -c release --product freight")
        let cluster = try ProcessCluster(executable: binary)
        do {
            let n1 = try await cluster.startNode(
                name: "n1", host: "\(host)1", join: [], extraArguments: ["--route", "n3=n2"])
            try await cluster.startNode(
                name: "n2", host: "\(host)2", join: [n1.listen],
                extraArguments: filters.flatMap { ["--filter", $0] } + arguments)
            try await cluster.startNode(name: "n3", host: "\(host)3", join: [n1.listen])
            try await cluster.waitForMesh()
            return cluster
        } catch {
            cluster.stop()
            throw error
        }
    }

    /// 64 MiB of fp32 in a file: random bits (so NaNs, infinities and subnormals among them), and a tie in every
    /// eighth value.
    static func weights(in folder: String) throws -> (values: [UInt32], file: String) {
        var random = SeededRandom(seed: 22)
        var values = [UInt32](repeating: 0, count: 16 << 20)
        for index in values.indices {
            let bits = UInt32(truncatingIfNeeded: random.next())
            values[index] = index % 8 == 0 ? (bits & 0xffff_0000) | 0x8000 : bits
        }
        let file = "\(folder)/weights.f32"
        try values.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: file)) }
        return (values, file)
    }

    /// The file at `path` holds the bf16 rounding of every value of `input`, in half the bytes.
    static func expectDowncast(_ input: [UInt32], in path: String) throws {
        let output = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(output.count == input.count * 2)
        var wrong = 0
        var firstWrong: Int?
        output.withUnsafeBytes { raw in
            let halves = raw.bindMemory(to: UInt16.self)
            for index in 0..<min(input.count, halves.count)
            where UInt16(littleEndian: halves[index]) != Self.bf16(input[index]) {
                wrong += 1
                if firstWrong == nil { firstWrong = index }
            }
        }
        #expect(wrong == 0, "\(wrong) values differ from their bf16 rounding, the first at \(firstWrong ?? -1)")
    }

    static func module(_ name: String, _ text: String, in folder: String) throws -> String {
        let path = "\(folder)/\(name).wat"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// 64 MiB of fp32 (random bits, so NaNs, infinities and subnormals among them, and a tie in every eighth value)
    /// cross n2, which runs the downcast example on them: 32 MiB reach n3, each value the right bf16 rounding, the
    /// receiver is told which filter ran, and the sender's delivery report is the usual one.
    @Test func aRelayDowncastsSixtyFourMebibytesToBF16() async throws {
        let folder = NSTemporaryDirectory() + "freight-filters-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder + "/out", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let downcast = try #require(
            FileManager.default.fileExists(atPath: "\(Self.examples)/downcast.wat")
                ? "\(Self.examples)/downcast.wat" : nil)
        let cluster = try await Self.relay(filters: ["tensors/**=\(downcast)"])
        defer { cluster.stop() }

        let (input, file) = try Self.weights(in: folder)
        let recv = try await cluster.receiver("tensors/**", at: "n3", ["--out", "\(folder)/out", "--count", "1"])
        defer { recv.stop() }
        let send = try await FreightProcess.run(
            ["send", "tensors/w0", "--file", file, "--via", cluster.node("n1").socket, "--json"],
            timeout: .seconds(180))
        #expect(send.status == 0, "\(send.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data((send.stdout.first ?? "{}").utf8)) as? [String: Any]
        #expect(
            (report?["deliveries"] as? [[String: Any]])?.first?["path"] as? [String] == ["n1", "n2", "n3"],
            "\(send.stdout)")
        #expect(try await recv.waitForExit(timeout: .seconds(60)) == 0, "\(recv.stderr)")
        let received = try #require(recv.jsonLines.first { $0["event"] as? String == "received" })
        #expect(received["bytes"] as? Int == 32 << 20)
        let filters = received["filters"] as? [String] ?? []
        #expect(
            filters.count == 1 && filters[0].hasPrefix("n2/downcast@"), "the header records the filter: \(received)")

        try Self.expectDowncast(input, in: try #require(received["file"] as? String))
        // What crossed n2 → n3 is the filtered body: n3 took in 32 MiB, not 64.
        let far = try await cluster.status("n3")
        let bytesIn = far["bytes_in"] as? Int ?? 0
        #expect(bytesIn >= 32 << 20 && bytesIn < 33 << 20, "n3 took in \(bytesIn) bytes")
        let relay = try await cluster.status("n2")
        #expect((relay["bytes_in"] as? Int ?? 0) >= 64 << 20, "n2 took in the whole message")
        try await ClusterTests.expectIdle(cluster, "n2")
    }

    /// A module that traps, one that loops and one that grows its memory past the limit each fail only the message
    /// they run on, with the reason, to its sender; n2 goes on serving, filtered and unfiltered messages alike, and
    /// a small message to a filtered address runs through the filter too.
    @Test func aMisbehavingFilterFailsOnlyItsMessage() async throws {
        let folder = NSTemporaryDirectory() + "freight-filters-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        // Room for a 1 MiB chunk at 0 (17 pages of 64 KiB).
        let abi = """
              (memory (export "memory") 17)
              (func (export "freight_abi_v1"))
              (func (export "begin") (param i64 i32 i32) (result i64) (local.get 0))
              (func (export "input") (param i32) (result i32) (i32.const 0))
              (func (export "end") (result i64) (i64.const 0))
            """
        let modules = [
            ("trap", "(func (export \"chunk\") (param i32) (result i64) unreachable)", "trapped in chunk"),
            (
                "loop", "(func (export \"chunk\") (param i32) (result i64) (loop $l (br $l)) (i64.const 0))",
                "ran out of fuel"
            ),
            (
                "hog",
                "(func (export \"chunk\") (param i32) (result i64) (if (i32.eq (memory.grow (i32.const 2048)) (i32.const -1)) (then unreachable)) (i64.const 0))",
                "memory was held to"
            ),
        ]
        var filters: [String] = []
        for (name, chunk, _) in modules {
            filters.append("bad/\(name)=\(try Self.module(name, "(module \(abi) \(chunk))", in: folder))")
        }
        filters.append("good/**=\(Self.examples)/downcast.wat")
        // 50 million fuel a call: eight times what the downcast of a 1 MiB chunk burns, and a loop runs out within a
        // second or so even on a loaded machine (the default, 400 million, is about a second at full speed).
        let cluster = try await Self.relay(filters: filters, arguments: ["--function-fuel", "50000000"])
        defer { cluster.stop() }
        let recv = try await cluster.receiver("bad/*", at: "n3")
        defer { recv.stop() }
        let good = try await cluster.receiver("good/**", at: "n3", ["--count", "2"])
        defer { good.stop() }
        let plain = try await cluster.receiver("plain/**", at: "n3", ["--check", "--count", "1"])
        defer { plain.stop() }

        for (name, _, reason) in modules {
            let started = ContinuousClock.now
            let send = try await FreightProcess.run(
                ["send", "bad/\(name)", "--size", "4MiB", "--via", cluster.node("n1").socket], timeout: .seconds(60))
            #expect(send.status != 0, "a message through the \(name) filter fails")
            #expect(send.stderr.contains(reason), "the sender is told why: \(send.stderr)")
            #expect(ContinuousClock.now - started < .seconds(30), "\(name) failed its message in time")
        }
        for size in ["4MiB", "256"] {
            let send = try await FreightProcess.run(
                ["send", "good/x", "--size", size, "--via", cluster.node("n1").socket], timeout: .seconds(60))
            #expect(send.status == 0, "n2 goes on filtering: \(send.stderr)")
        }
        #expect(try await good.waitForExit(timeout: .seconds(30)) == 0, "\(good.stderr)")
        let sizes = good.jsonLines.filter { $0["event"] as? String == "received" }.compactMap { $0["bytes"] as? Int }
        #expect(sizes.sorted() == [128, 2 << 20], "both ran through the downcast filter, large and small: \(sizes)")
        let send = try await FreightProcess.run(
            ["send", "plain/x", "--size", "4MiB", "--via", cluster.node("n1").socket], timeout: .seconds(60))
        #expect(send.status == 0, "\(send.stderr)")
        #expect(try await plain.waitForExit(timeout: .seconds(30)) == 0, "an unfiltered address is untouched")
        // Both flows of each filtered message ended at n2, failed or delivered: nothing held, nothing reserved.
        try await ClusterTests.expectIdle(cluster, "n2")
    }

    /// Every connection of n3 is killed while the filtered message crosses n2 → n3 (its receiver reads 4 MiB/s): the
    /// link comes back, the downcast (resumable) starts again at n2 from the input it still holds, and the values
    /// arrive right, the receiver told where the message resumed. A filter that keeps state across chunks cannot
    /// start in the middle: its message fails, naming the filter, and the sender is told.
    @Test func aLinkBrokenAfterTheFilterResumesThroughIt() async throws {
        let folder = NSTemporaryDirectory() + "freight-filters-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder + "/out", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        // Passes each chunk on as it is, and says nothing of keeping no state: not resumable.
        let identity = try Self.module(
            "identity",
            """
            (module (memory (export "memory") 17) (func (export "freight_abi_v1"))
              (func (export "begin") (param i64 i32 i32) (result i64) (local.get 0))
              (func (export "input") (param i32) (result i32) (i32.const 0))
              (func (export "chunk") (param i32) (result i64) (i64.extend_i32_u (local.get 0)))
              (func (export "end") (result i64) (i64.const 0)))
            """, in: folder)
        let cluster = try await Self.relay(filters: [
            "tensors/**=\(Self.examples)/downcast.wat", "state/**=\(identity)",
        ])
        defer { cluster.stop() }
        let (input, file) = try Self.weights(in: folder)

        var sent = try await ResumeTests.bytesIn(cluster, "n3")
        let recv = try await cluster.receiver(
            "tensors/**", at: "n3", ["--out", "\(folder)/out", "--count", "1", "--rate", "4MiB"])
        defer { recv.stop() }
        let send = try FreightProcess(["send", "tensors/w0", "--file", file, "--via", cluster.node("n1").socket])
        defer { send.stop() }
        try await ResumeTests.waitFor(cluster, "n3", bytesIn: sent + (4 << 20))
        #expect(send.isRunning, "the message must still be going when its link breaks")
        try Sockets.killAll(host: "\(Self.host)3")
        #expect(try await send.waitForExit(timeout: .seconds(120)) == 0, "\(send.stderr)")
        #expect(try await recv.waitForExit(timeout: .seconds(30)) == 0, "\(recv.stderr)")
        let received = try #require(recv.jsonLines.first { $0["event"] as? String == "received" })
        #expect((received["resumed_at"] as? [Int] ?? []).isEmpty == false, "it resumed: \(received)")
        try Self.expectDowncast(input, in: try #require(received["file"] as? String))

        sent = try await ResumeTests.bytesIn(cluster, "n3")
        let stateful = try await cluster.receiver("state/**", at: "n3", ["--count", "1", "--rate", "4MiB"])
        defer { stateful.stop() }
        let doomed = try FreightProcess(["send", "state/x", "--size", "64MiB", "--via", cluster.node("n1").socket])
        defer { doomed.stop() }
        try await ResumeTests.waitFor(cluster, "n3", bytesIn: sent + (4 << 20))
        #expect(doomed.isRunning, "the message must still be going when its link breaks")
        try Sockets.killAll(host: "\(Self.host)3")
        #expect(try await doomed.waitForExit(timeout: .seconds(60)) != 0)
        #expect(doomed.stderr.contains("filter identity") && doomed.stderr.contains("keeps state"), "\(doomed.stderr)")
        try await ClusterTests.expectIdle(cluster, "n2")
    }

    /// Where gateways exist, the filter runs where bytes leave a cluster: gateway a downcasts what a2 sends to c2
    /// in cluster c, so 32 MiB of bf16 cross the link between the clusters instead of 64 MiB of fp32, every value
    /// right, and c2's receiver is told that gateway a's downcast ran.
    @Test func aGatewayDowncastsWhatLeavesItsCluster() async throws {
        let binary = try #require(
            ProcessCluster.releaseBinary, "build the release node first: swift build -c release --product freight")
        let folder = NSTemporaryDirectory() + "freight-filters-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder + "/out", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for cluster in ["a", "c"] { try await GatewayTests.certificates(cluster, in: folder) }
        let c = try await GatewayTests.site(
            "c", host: "127.0.0.96", folder: folder, peers: ["a"], dial: [], export: ["tensors/**"],
            worker: "127.0.0.98", executable: binary)
        defer { c.cluster.stop() }
        let a = try await GatewayTests.site(
            "a", host: "127.0.0.95", folder: folder, peers: ["c"], dial: [c.gateway], export: [],
            worker: "127.0.0.97", gatewayArguments: ["--filter", "tensors/**=\(Self.examples)/downcast.wat"],
            executable: binary)
        defer { a.cluster.stop() }
        let recv = try await c.cluster.receiver(
            "tensors/**", at: "c2", ["--out", "\(folder)/out", "--count", "1"], seenAt: "c")
        defer { recv.stop() }
        try await GatewayTests.waitFor("a2 resolves tensors/w0 through its gateway") {
            try await GatewayDataTests.resolved("tensors/w0", at: a, node: "a2").contains {
                $0["cluster"] as? String == "c"
            }
        }
        let (input, file) = try Self.weights(in: folder)
        let before = try await Self.linkBytesIn(c, from: "a")
        let send = try await FreightProcess.run(
            ["send", "tensors/w0", "--file", file, "--via", a.worker.socket], timeout: .seconds(180))
        #expect(send.status == 0, "\(send.stderr)")
        #expect(try await recv.waitForExit(timeout: .seconds(60)) == 0, "\(recv.stderr)")
        let received = try #require(recv.jsonLines.first { $0["event"] as? String == "received" })
        let filters = received["filters"] as? [String] ?? []
        #expect(filters.count == 1 && filters[0].hasPrefix("a/downcast@"), "\(received)")
        try Self.expectDowncast(input, in: try #require(received["file"] as? String))
        let crossed = try await Self.linkBytesIn(c, from: "a") - before
        #expect(crossed >= 32 << 20 && crossed < 40 << 20, "32 MiB crossed from a to c, not 64: \(crossed) B")
    }

    /// Bytes gateway `site` took in on its link to `cluster`.
    static func linkBytesIn(_ site: GatewayTests.Site, from cluster: String) async throws -> Int {
        let links = try await site.cluster.status(site.cluster.cluster)["gateway_links"] as? [[String: Any]] ?? []
        return links.first { $0["cluster"] as? String == cluster }?["bytes_in"] as? Int ?? 0
    }
}
