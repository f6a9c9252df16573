import ArgumentParser
import Foundation
import FreightClient
import FreightCore
import FreightTesting
import FreightTransport

/// `freight demo`: three nodes on loopback in one process, receivers on addresses, a group and a pattern, messages
/// from 1 KiB to 256 MiB with every byte checked, and a table of what went where.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo", abstract: "Run a whole fabric of three nodes in one process.")

    @OptionGroup var output: OutputOptions

    struct Row {
        var from: String
        var address: String
        var receivers: String
        var route: String
        var bytes: Int64
        var seconds: Double
        var checked: Bool
    }

    /// Receivers report each message's byte check here.
    actor Checks {
        var results: [UInt64: [(receiver: String, ok: Bool)]] = [:]
        func record(_ id: UInt64, receiver: String, ok: Bool) { results[id, default: []].append((receiver, ok)) }
        func results(for id: UInt64) -> [(receiver: String, ok: Bool)] { results[id] ?? [] }

        /// Checks every message `subscription` takes against the pattern its seed attribute names.
        nonisolated func checking(_ subscription: Subscription, as name: String) -> Task<Void, Never> {
            Task {
                do {
                    for try await message in subscription {
                        let seed = message.attributes["freight-seed"].flatMap(UInt64.init) ?? 0
                        let ok = (try? await message.checkPattern(seed: seed)) ?? false
                        await record(message.id, receiver: name, ok: ok)
                    }
                } catch {}
            }
        }
    }

    func run() async throws {
        MemoryTuning.apply()
        do {
            try await runDemo()
        } catch {
            fail(error)
        }
    }

    func runDemo() async throws {
        say("starting nodes n1 (127.0.0.1), n2 (127.0.0.2), n3 (127.0.0.3) and joining them into one cluster…")
        let fabric = try await InProcessFabric.start(nodes: 3)
        let checks = Checks()
        var tasks: [Task<Void, Never>] = []
        var clients: [FreightClient] = []
        do {
            // Receivers: an address on n2, a group across n2 and n3, a pattern on n3, an address on n1 itself.
            let receivers: [(node: Int, label: String, pattern: String, group: String?)] = [
                (1, "tensor-rx", "demo/tensor/1", nil),
                (1, "decoder-a", "demo/kv", "decoders"),
                (2, "decoder-b", "demo/kv", "decoders"),
                (2, "shard-watch", "demo/shard/**", nil),
                (0, "local-rx", "demo/local", nil),
            ]
            for receiver in receivers {
                let client = try await FreightClient.connect(to: fabric.socket(receiver.node), label: receiver.label)
                clients.append(client)
                let subscription = try await client.receive(receiver.pattern, group: receiver.group)
                let name = "\(receiver.label)@n\(receiver.node + 1)"
                tasks.append(checks.checking(subscription, as: name))
            }
            for (address, count) in [("demo/tensor/1", 1), ("demo/kv", 2), ("demo/shard/7", 1), ("demo/local", 1)] {
                try await fabric.waitForEndpoints(try Address(address), count: count)
            }
            say(
                "receivers: demo/tensor/1 on n2, group 'decoders' on demo/kv (n2, n3), pattern demo/shard/** on n3, demo/local on n1"
            )

            // The trainer's send pool holds a 256 MiB buffer that it hands to an app of its own node in place.
            let sender1 = try await FreightClient.connect(
                to: fabric.socket(0), label: "trainer", sharedMemory: .automatic(sendBytes: 320 << 20))
            let sender2 = try await FreightClient.connect(to: fabric.socket(1), label: "loader")
            clients += [sender1, sender2]
            let KiB: Int64 = 1024
            let MiB: Int64 = 1024 * 1024
            let plan: [(FreightClient, String, Int64, shared: Bool)] = [
                (sender1, "demo/tensor/1", 1 * KiB, false),
                (sender1, "demo/tensor/1", 1 * MiB, false),
                (sender1, "demo/tensor/1", 64 * MiB, false),
                (sender1, "demo/tensor/1", 256 * MiB, false),
                (sender1, "demo/kv", 16 * MiB, false),
                (sender1, "demo/kv", 16 * MiB, false),
                (sender1, "demo/kv", 16 * MiB, false),
                (sender1, "demo/kv", 16 * MiB, false),
                (sender1, "demo/shard/7", 32 * MiB, false),
                (sender2, "demo/shard/9", 64 * MiB, false),
                (sender1, "demo/local", 8 * MiB, false),
                (sender1, "demo/local", 256 * MiB, true),
            ]
            var rows: [Row] = []
            for (index, (client, address, size, shared)) in plan.enumerated() {
                let seed = UInt64(index + 1)
                var body = OutgoingBody.pattern(seed: seed, length: size)
                if shared, await client.usesSharedMemory {
                    // Filled once in the app's pool, then handed over: the receiver reads these very pages.
                    let buffer = try await client.allocate(Int(size))
                    buffer.withUnsafeMutableBytes { PatternFill.fill($0, seed: seed, offset: 0) }
                    body = .shared(buffer)
                }
                let report = try await client.send(
                    to: address,
                    body: body,
                    options: SendOptions(attributes: ["freight-seed": "\(seed)"])
                )
                var results: [(receiver: String, ok: Bool)] = []
                let deadline = ContinuousClock.now + .seconds(10)
                while results.count < report.deliveries.count && ContinuousClock.now < deadline {
                    results = await checks.results(for: report.messageID)
                    if results.count < report.deliveries.count { try await Task.sleep(for: .milliseconds(5)) }
                }
                let checked =
                    !results.isEmpty && results.count == report.deliveries.count && results.allSatisfy(\.ok)
                    && report.failures.isEmpty
                rows.append(
                    Row(
                        from: "\(client === sender1 ? "trainer" : "loader")@\(client.nodeName)"
                            + (shared ? " (shared buffer)" : ""),
                        address: address,
                        receivers: results.map(\.receiver).sorted().joined(separator: ","),
                        route: report.route,
                        bytes: size,
                        seconds: report.seconds,
                        checked: checked
                    ))
            }
            printTable(rows)
            let members = Set(rows.filter { $0.address == "demo/kv" }.map(\.receivers))
            let allChecked = rows.allSatisfy(\.checked)
            for client in clients { await client.close() }
            for task in tasks { task.cancel() }
            await fabric.stop()
            guard allChecked else {
                throw FreightError(.checksumMismatch, "demo: some message was not delivered intact")
            }
            guard members.count == 2 else {
                throw FreightError(.internalError, "demo: the group did not share its messages")
            }
            say("every byte of every message checked; the group shared its messages; the pattern caught demo/shard/*")
            try await runClusters()
        } catch {
            for client in clients { await client.close() }
            for task in tasks { task.cancel() }
            await fabric.stop()
            throw error
        }
    }

    /// Three clusters a–b–c in a chain, each of two nodes and a gateway with an authority of its own: messages from a
    /// to c cross b, and what a cluster does not export never leaves it (docs/gateways.md).
    func runClusters() async throws {
        say("")
        say(
            "starting clusters a, b and c in a chain a–b–c: nodes a1, a2 and gateway a-gw on 127.0.1.x, b on 127.0.2.x, c on 127.0.3.x; gateways link over mutual TLS 1.3, each cluster with an authority of its own…"
        )
        let chain = try await ClusterChain.start(
            clusters: ["a", "b", "c"], nodes: 3,
            exports: ["a": ["results/**"], "b": ["ckpt/**", "results/**"], "c": ["ckpt/**"]])
        let checks = Checks()
        var tasks: [Task<Void, Never>] = []
        var clients: [FreightClient] = []
        func finish() async {
            for client in clients { await client.close() }
            for task in tasks { task.cancel() }
            await chain.stop()
        }
        do {
            let receivers: [(cluster: Int, node: Int, label: String, pattern: String)] = [
                (2, 0, "ckpt-store", "ckpt/eu/**"),
                (2, 0, "vault", "secret/plans"),
                (0, 0, "dashboard", "results/**"),
            ]
            for receiver in receivers {
                let client = try await FreightClient.connect(
                    to: chain.fabrics[receiver.cluster].socket(receiver.node), label: receiver.label)
                clients.append(client)
                let subscription = try await client.receive(receiver.pattern)
                let name = "\(receiver.label)@\(chain.clusters[receiver.cluster])/\(client.nodeName)"
                tasks.append(checks.checking(subscription, as: name))
            }
            try await chain.waitForRoute(try Address("ckpt/eu/step-100"), from: 0, to: "c")
            try await chain.waitForRoute(try Address("results/run-1"), from: 2, to: "a")
            say(
                "receivers: ckpt/eu/** and secret/plans in c, results/** in a; c exports ckpt/**, a exports results/**, b passes both on; routes learned: a reaches c through b"
            )
            let trainer = try await FreightClient.connect(to: chain.fabrics[0].socket(1), label: "trainer")
            let evaluator = try await FreightClient.connect(to: chain.fabrics[2].socket(1), label: "evaluator")
            clients += [trainer, evaluator]
            let MiB: Int64 = 1024 * 1024
            let plan: [(FreightClient, String, String, Int64)] = [
                (trainer, "trainer@a/a2", "ckpt/eu/step-100", 1 * MiB),
                (trainer, "trainer@a/a2", "ckpt/eu/step-100", 64 * MiB),
                (trainer, "trainer@a/a2", "ckpt/eu/step-100", 256 * MiB),
                (evaluator, "evaluator@c/c2", "results/run-1", 4 * MiB),
                (trainer, "trainer@a/a2", "secret/plans", 1 * MiB),
            ]
            var rows: [Row] = []
            var refusal: String?
            for (index, (client, from, address, size)) in plan.enumerated() {
                let seed = UInt64(100 + index)
                let report: DeliveryReport
                do {
                    report = try await client.send(
                        to: address, body: .pattern(seed: seed, length: size),
                        options: SendOptions(attributes: ["freight-seed": "\(seed)"]))
                } catch let error as FreightError where error.code == .noRoute {
                    refusal = error.message
                    rows.append(
                        Row(
                            from: from, address: address, receivers: "-", route: "refused: \(error.message)",
                            bytes: size, seconds: 0, checked: true))
                    continue
                }
                var results: [(receiver: String, ok: Bool)] = []
                let deadline = ContinuousClock.now + .seconds(10)
                while results.count < report.deliveries.count && ContinuousClock.now < deadline {
                    results = await checks.results(for: report.messageID)
                    if results.count < report.deliveries.count { try await Task.sleep(for: .milliseconds(5)) }
                }
                rows.append(
                    Row(
                        from: from, address: address,
                        receivers: results.map(\.receiver).sorted().joined(separator: ","),
                        route: report.route, bytes: size, seconds: report.seconds,
                        checked: !results.isEmpty && results.count == report.deliveries.count
                            && results.allSatisfy(\.ok) && report.failures.isEmpty))
            }
            printTable(rows)
            await finish()
            guard rows.allSatisfy(\.checked) else {
                throw FreightError(.checksumMismatch, "demo: some message between clusters was not delivered intact")
            }
            guard refusal != nil else {
                throw FreightError(.internalError, "demo: a message to an address c does not export crossed")
            }
            say(
                "every byte checked across clusters; the route names every node and gateway (CLUSTER/NODE past a's own); secret/plans, which c does not export, never left a"
            )
        } catch {
            await finish()
            throw error
        }
    }

    private func say(_ text: String) {
        if !output.json { printLine(text) }
    }

    private func printTable(_ rows: [Row]) {
        if output.json {
            for row in rows {
                printJSON([
                    "from": row.from, "to": row.address, "receivers": row.receivers, "route": row.route,
                    "bytes": row.bytes,
                    "seconds": row.seconds,
                    "mbps": row.seconds > 0 ? ByteCount.megabytesPerSecond(bytes: row.bytes, seconds: row.seconds) : 0,
                    "checked": row.checked,
                ])
            }
            return
        }
        let header = ["from", "to", "received by", "route", "size", "time", "throughput", "check"]
        let cells = rows.map { row in
            [
                row.from, row.address, row.receivers, row.route, ByteCount.format(row.bytes),
                row.seconds > 0 ? "\((row.seconds * 1000).formatted(decimals: 1)) ms" : "-",
                row.seconds > 0
                    ? "\(ByteCount.megabytesPerSecond(bytes: row.bytes, seconds: row.seconds).formatted(decimals: 0)) MB/s"
                    : "-",
                row.checked ? "ok" : "FAILED",
            ]
        }
        let widths = header.indices.map { column in ([header] + cells).map { $0[column].count }.max()! }
        func line(_ values: [String]) -> String {
            values.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }
        printLine("")
        printLine(line(header))
        printLine(line(widths.map { String(repeating: "-", count: $0) }))
        for row in cells { printLine(line(row)) }
        printLine("")
    }
}
