import FreightClient
import FreightCore
import FreightTesting
import Testing

/// `any` groups across clusters (docs/gateways.md, "Groups across clusters"), on three in-process clusters a–b–c
/// joined by gateways over mutual TLS: a group is served once per message, on the sender's node, else in its cluster,
/// else in the nearest cluster by cost; pattern receivers in other clusters receive every message too.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct GatewayGroupTests {
    static let address = try! Address("jobs/7")

    /// Receives on `pattern` (in `group`) at node `node` of cluster `cluster`, draining every message.
    static func receiver(
        _ chain: ClusterChain, _ cluster: Int, _ node: Int, _ pattern: String, group: String? = nil
    ) async throws -> (client: FreightClient, task: Task<Void, Never>) {
        let client = try await FreightClient.connect(
            to: chain.fabrics[cluster].socket(node), label: "\(group ?? "all")-\(chain.clusters[cluster])\(node + 1)")
        let subscription = try await client.receive(pattern, group: group)
        let task = Task {
            do {
                for try await message in subscription { _ = try await message.collect(upTo: 1 << 20) }
            } catch {}
        }
        return (client, task)
    }

    /// The nodes that received one message from `sender`, sorted (other clusters' as CLUSTER/NODE).
    static func deliveredAt(_ sender: FreightClient) async throws -> [String] {
        let report = try await sender.send(to: address.description, body: .pattern(seed: 7, length: 64 << 10))
        #expect(report.failures.isEmpty, "\(report.failures)")
        return report.deliveries.map(\.node).sorted()
    }

    static func waitUntil(_ what: String, _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while try await !condition() {
            guard ContinuousClock.now < deadline else { throw FreightError(.internalError, "never: \(what)") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// A hold time outside `Limits.gatewayHoldRange` (a link that would close at once, or keepalives hours apart)
    /// keeps the gateway from starting, with the reason.
    @Test func aHoldTimeOutOfRangeIsRefused() async throws {
        for hold in [Duration.zero, .seconds(7200)] {
            let error = await #expect(throws: FreightError.self) {
                let chain = try await ClusterChain.start(clusters: ["a"], nodes: 1, gatewayHold: hold)
                await chain.stop()
            }
            #expect(error?.message.contains("hold time") == true, "\(String(describing: error))")
        }
    }

    @Test func aGroupIsServedOnTheSendersNodeThenItsClusterThenTheNearestCluster() async throws {
        // Routes change only when this test changes members: a process busy with other tests' work must not close a
        // gateway link for silence and take its routes away mid-check.
        let chain = try await ClusterChain.start(
            clusters: ["a", "b", "c"], nodes: 3, exports: ["b": ["jobs/**"], "c": ["jobs/**"]],
            gatewayHold: .seconds(60))
        var receivers: [(client: FreightClient, task: Task<Void, Never>)] = []
        func finish() async {
            for receiver in receivers {
                await receiver.client.close()
                receiver.task.cancel()
            }
            await chain.stop()
        }
        do {
            let memberB = try await Self.receiver(chain, 1, 0, "jobs/*", group: "workers")
            receivers += [memberB, try await Self.receiver(chain, 2, 0, "jobs/*", group: "workers")]
            receivers.append(try await Self.receiver(chain, 2, 1, "jobs/**"))
            for cluster in ["b", "c"] {
                try await chain.waitForRoute(Self.address, from: 0, to: cluster, group: "workers")
            }
            try await chain.waitForRoute(Self.address, from: 0, to: "c")
            let sender = try await FreightClient.connect(to: chain.fabrics[0].socket(0), label: "sender")
            receivers.append((sender, Task {}))

            // Nearest first: b is one gateway link away, c two. c's pattern receiver takes every message too.
            for _ in 0..<4 { #expect(try await Self.deliveredAt(sender) == ["b/b1", "c/c2"]) }

            // A member in the sender's cluster takes the group's messages from then on.
            let memberA = try await Self.receiver(chain, 0, 1, "jobs/*", group: "workers")
            receivers.append(memberA)
            try await chain.fabrics[0].waitForEndpoints(Self.address, count: 4)
            for _ in 0..<3 { #expect(try await Self.deliveredAt(sender) == ["a2", "c/c2"]) }

            // A member on the sender's own node comes first.
            receivers.append(try await Self.receiver(chain, 0, 0, "jobs/*", group: "workers"))
            try await chain.fabrics[0].waitForEndpoints(Self.address, count: 5)
            for _ in 0..<3 { #expect(try await Self.deliveredAt(sender) == ["a1", "c/c2"]) }

            // With no member in a and b's gone, the group is served in c.
            for member in [receivers.removeLast(), memberA, memberB] {
                await member.client.close()
                member.task.cancel()
            }
            receivers.removeAll { $0.client === memberA.client || $0.client === memberB.client }
            try await Self.waitUntil("a's route to the group in b is withdrawn") {
                try await !chain.fabrics[0].engines[0].reaches(Self.address, in: "b", group: "workers")
            }
            try await Self.waitUntil("a1 knows only the routes into c") {
                try await chain.fabrics[0].engines[0].matchCount(Self.address) == 2
            }
            for _ in 0..<3 { #expect(try await Self.deliveredAt(sender) == ["c/c1", "c/c2"]) }
        } catch {
            await finish()
            throw error
        }
        await finish()
    }
}
