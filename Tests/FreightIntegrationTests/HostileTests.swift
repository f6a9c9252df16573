import Foundation
import FreightCore
import FreightTesting
import FreightWire
import Testing

/// Attacks on real `freight node` processes, each with a checked stream of messages between two other apps beside
/// it, and the bound each must meet (docs/hardening.md). The nodes and apps are the release build, as deployed; the
/// test command runs this suite alone, after the others, since it compares rates within one run.
@Suite(.serialized) struct HostileTests {
    static func releaseCluster(nodes: Int = 2, _ extraArguments: [String] = []) async throws -> ProcessCluster {
        let binary = try #require(
            ProcessCluster.releaseBinary, "build the release node first: swift build -c release --product freight")
        return try await ProcessCluster.start(nodes: nodes, extraArguments: extraArguments, executable: binary)
    }

    /// 2,000 strangers that send only the preface and 2,000 that trickle a byte a second: the node's memory rises by
    /// less than 32 MiB, every one of them is closed by the handshake deadline, and the stream beside them keeps at
    /// least 90% of its rate.
    @Test func strangersCostAlmostNothing() async throws {
        let cluster = try await Self.releaseCluster()
        defer { cluster.stop() }
        let stream = try await CheckedStream.start(cluster)
        defer { stream.stop() }
        // The stream's rate on this shared machine drifts by more than the 10% asked for within seconds: an attack
        // is tried again (at most three times) when the stream fell short beside it; an attack that does slow the
        // stream fails every time. Every other bound must hold on every attempt.
        var attempts: [String] = []
        var kept = false
        for attempt in 1...3 where !kept {
            let result = try await Self.strangerAttack(on: cluster, beside: stream, refusedBefore: 4000 * (attempt - 1))
            attempts.append(result.line)
            kept = result.kept
            print("strangers (attempt \(attempt)): \(result.line)")
        }
        #expect(kept, "the stream kept under 90% of its rate beside strangers: \(attempts)")
    }

    /// 2,000 preface-only and 2,000 trickling strangers against n1, with the stream's rate before, during and after.
    static func strangerAttack(
        on cluster: ProcessCluster, beside stream: CheckedStream, refusedBefore: Int
    ) async throws -> (kept: Bool, line: String) {
        let pid = cluster.node("n1").process.pid
        let before = Int(ProcessStats.residentBytes(of: pid))
        let cpuBefore = ProcessStats.cpuSeconds(of: pid)
        let baseline = try await stream.rate(over: .seconds(3))
        let cpuAttacked = ProcessStats.cpuSeconds(of: pid)

        let parts = cluster.node("n1").listen.split(separator: ":")
        let (host, port) = (String(parts[0]), Int(parts[1])!)
        let sources = (100..<116).map { "127.0.0.\($0)" }
        let attack = Task {
            await Strangers.onThread(lowPriority: true) { () -> (silent: [Int32], trickling: [Int32]) in
                let silent = Strangers.open(
                    count: 2000, host: host, port: port, sources: sources, prefix: Strangers.preface)
                let trickling = Strangers.open(count: 2000, host: host, port: port, sources: sources, prefix: [])
                // A byte a second, for longer than the deadline.
                for second in 0..<Int(Limits.handshakeSeconds) + 3 {
                    Strangers.trickle(trickling, byte: Strangers.preface[second % Strangers.preface.count])
                    Thread.sleep(forTimeInterval: 1)
                }
                return (silent, trickling)
            }
        }
        let sampling = PeakMemory(of: pid, from: before)
        // Over the whole attack: the burst of connections, then the trickle until after the deadline.
        let underAttack = try await stream.rate(over: .seconds(7))
        // The node's own CPU, as a share of one core, before and during the attack.
        let load = (
            before: (cpuAttacked - cpuBefore) / 3, attacked: (ProcessStats.cpuSeconds(of: pid) - cpuAttacked) / 7
        )
        let (silent, trickling) = await attack.value
        defer { Strangers.closeAll(silent + trickling) }
        try await Task.sleep(for: .seconds(1))
        let peak = await sampling.stop()
        // The machine's own load drifts: the stream's rate before and after the attack is the one it must keep.
        let after = try await stream.rate(over: .seconds(3))
        let unharmed = (baseline + after) / 2

        #expect(silent.count + trickling.count == 4000, "opened \(silent.count) + \(trickling.count)")
        #expect(Strangers.closedCount(silent) == silent.count, "silent strangers still open")
        #expect(Strangers.closedCount(trickling) == trickling.count, "trickling strangers still open")
        #expect(peak - before < 32 << 20, "memory rose from \(before >> 20) to \(peak >> 20) MiB")
        #expect(stream.failures.isEmpty, "\(stream.failures.prefix(3))")
        let log = cluster.node("n1").process.stderr
        #expect(log.contains("in their handshake"), "refusals are logged with their reason")
        let status = try await cluster.status("n1")
        let refused = status["links_refused"] as? Int ?? 0
        let timedOut = status["handshakes_timed_out"] as? Int ?? 0
        #expect(
            refused > 0 && timedOut > 0 && refused + timedOut >= 4000 + refusedBefore,
            "refused \(refused), timed out \(timedOut)")
        #expect(status["links_in_handshake"] as? Int == 0)
        return (
            underAttack >= 0.9 * unharmed,
            "rss \(before >> 20) → peak \(peak >> 20) MiB; stream \(baseline) → \(underAttack) → \(after) msg/s; node CPU \(Int(load.before * 100))% → \(Int(load.attacked * 100))% of a core"
        )
    }

    /// 32 OPENs of 32 MiB that never send data: the app gets at most its share of the budget (half), which its
    /// messages divide among them (their windows shrink; one that finds nothing to divide is refused naming the
    /// share: docs/wan.md, "Many messages"), the stream beside keeps its rate, and the messages whose receiver
    /// granted credit fail when the idle time passes, their reservations returned.
    /// An app on `socket` that opens 32 messages of 32 MiB to the sink and never sends a byte of them.
    static func hoarder(_ socket: String) async throws -> WireApp {
        try await Strangers.onThread { () -> Result<WireApp, FreightError> in
            do {
                let app = try WireApp(socketPath: socket, label: "hoarder")
                for _ in 0..<32 { try app.open("hostile/sink", length: 32 << 20) }
                return .success(app)
            } catch {
                return .failure(error as? FreightError ?? FreightError(.io, "\(error)"))
            }
        }.get()
    }

    @Test func oneAppCannotReserveTheWholeBudget() async throws {
        let cluster = try await Self.releaseCluster(nodes: 2, ["--idle", "3"])
        defer { cluster.stop() }
        let sink = try await cluster.receiver("hostile/sink", at: "n2", [])
        defer { sink.stop() }
        let stream = try await CheckedStream.start(cluster)
        defer { stream.stop() }
        let baseline = try await stream.rate(over: .seconds(3))

        let socket = cluster.node("n1").socket
        let opened = ContinuousClock.now
        let app = try await Self.hoarder(socket)
        let underAttack = try await stream.rate(over: .seconds(3))
        let status = try await cluster.status("n1")
        let reserved = status["memory_reserved_bytes"] as? Int ?? 0
        let budget = status["memory_budget_bytes"] as? Int ?? 0
        let after = try await stream.rate(over: .seconds(2))

        // The first message to the sink got credit and no bytes: it fails within the idle time and a margin.
        let outcomes = await Strangers.onThread { () -> [String] in
            var reasons: [String] = []
            while let frame = try? app.next(where: { if case .abort = $0 { true } else { false } }),
                case .abort(let abort) = frame
            {
                reasons.append(abort.error.message)
                if abort.error.message.contains("sent no bytes") { break }
            }
            return reasons
        }
        let idleAt = ContinuousClock.now - opened
        #expect(
            outcomes.dropLast().allSatisfy { $0.contains("one party may have") }, "\(outcomes.prefix(3))")
        #expect(outcomes.last?.contains("sent no bytes") == true, "\(outcomes.suffix(2))")
        #expect(idleAt < .seconds(3 + 3 + 6), "the idle message failed after \(idleAt)")
        #expect(reserved <= budget / 2 + 64 << 20, "\(reserved) of \(budget) reserved while the app hoards")
        // This machine's speed drifts by a third from one second to the next: the stream's rate beside a hoarder is
        // measured again (between two samples without one) when a first measurement falls short; it must hold on
        // one of three.
        var rates = ["\(baseline) msg/s before, \(underAttack) beside the hoarder, \(after) after"]
        var kept = underAttack >= 0.9 * (baseline + after) / 2
        await Strangers.onThread { app.close() }
        for _ in 2...3 where !kept {
            let before = try await stream.rate(over: .seconds(2))
            let hoarder = try await Self.hoarder(socket)
            let beside = try await stream.rate(over: .seconds(2))
            await Strangers.onThread { hoarder.close() }
            let later = try await stream.rate(over: .seconds(2))
            rates.append("\(before) msg/s before, \(beside) beside the hoarder, \(later) after")
            kept = beside >= 0.9 * (before + later) / 2
        }
        print("hoarder: stream \(rates.joined(separator: "; "))")
        #expect(kept, "the stream kept under 90% of its rate beside the hoarder: \(rates)")
        #expect(stream.failures.isEmpty, "\(stream.failures.prefix(3))")
    }

    /// A fan-out to two receivers, one of them stopped before the message opened: the stopped one is cut with
    /// `slow receiver` after the slow-receiver time, and the healthy one gets every byte.
    @Test func aStoppedReceiverIsCutAndTheOtherFinishes() async throws {
        let cluster = try await Self.releaseCluster(nodes: 2, ["--slow-receiver", "2"])
        defer { cluster.stop() }
        let stream = try await CheckedStream.start(cluster)
        defer { stream.stop() }
        let healthy = try await cluster.receiver("fan/out", at: "n2", ["--count", "1", "--check"])
        defer { healthy.stop() }
        let stopped = try FreightProcess(
            ["recv", "fan/out", "--via", cluster.node("n2").socket, "--json"], executable: cluster.executable)
        defer {
            stopped.kill(SIGCONT)
            stopped.stop()
        }
        _ = try await stopped.waitForLine { $0.contains("\"ready\"") }
        try await cluster.waitForEndpoints("fan/out", count: 2, at: "n1")
        stopped.kill(SIGSTOP)
        let started = ContinuousClock.now
        let send = try await FreightProcess.run([
            "send", "fan/out", "--size", "256MiB", "--via", cluster.node("n1").socket, "--json",
        ])
        let took = ContinuousClock.now - started
        #expect(try await healthy.waitForExit(timeout: .seconds(20)) == 0, "the healthy receiver got every byte")
        let report = send.stdout.joined()
        #expect(report.contains("slow receiver"), "\(report) \(send.stderr)")
        #expect(took < .seconds(2 + 8), "the fan-out took \(took)")
        #expect(stream.failures.isEmpty, "\(stream.failures.prefix(3))")
    }

    /// An impostor node that claims the live name `n2` and joins again and again takes nothing: its HELLO is refused
    /// while the real n2's links stand, and the checked stream to the real n2 loses no message.
    @Test func anImpostorCannotTakeALiveName() async throws {
        let cluster = try await Self.releaseCluster()
        defer { cluster.stop() }
        let stream = try await CheckedStream.start(cluster)
        defer { stream.stop() }
        let before = stream.delivered
        let impostor = try await cluster.startNode(
            name: "n2", host: "127.0.0.3", join: [cluster.node("n1").listen])
        let stolen = try FreightProcess(
            ["recv", "stream/checked", "--via", impostor.socket, "--json"], executable: cluster.executable)
        defer { stolen.stop() }
        try await Task.sleep(for: .seconds(4))
        #expect(cluster.node("n1").process.stderr.contains("is held by a live member"), "n1 refused the impostor")
        #expect(!stolen.stdoutLines.contains { $0.contains("\"received\"") }, "the impostor received a message")
        #expect(stream.delivered > before + 20, "the stream went on: \(stream.delivered - before) messages")
        #expect(stream.failures.isEmpty, "\(stream.failures.prefix(3))")
    }

    /// The id of the endpoint at n1 that `address` resolves to (what a peer's OPEN names as its target).
    static func endpointID(of address: String, in cluster: ProcessCluster) async throws -> UInt64 {
        let resolved = try await FreightProcess.run(["resolve", address, "--via", cluster.node("n1").socket, "--json"])
        let endpoint = try #require(
            resolved.stdout.first.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] })
        return try #require((endpoint["endpoint"] as? NSNumber)?.uint64Value, "\(endpoint)")
    }

    /// A node of the cluster written by hand: it joins n1 (`peer`, what it sends), and takes the first stripe n1
    /// dials back (`back`, what n1 sends it); n1's other stripes wait in a backlog nobody accepts.
    static func intruder(_ cluster: ProcessCluster) async throws -> (peer: WireApp, back: WireApp, listener: Int32) {
        let listener = try Strangers.silentListener(host: "127.0.0.9")
        let parts = cluster.node("n1").listen.split(separator: ":")
        let (host, port) = (String(parts[0]), Int(parts[1])!)
        let name = cluster.cluster
        let listen = "127.0.0.9:\(listener.port)"
        let incarnation = UInt64.random(in: 1...UInt64.max)
        let result = await Strangers.onThread { () -> Result<(WireApp, WireApp), FreightError> in
            Result { () throws(FreightError) in
                do {
                    let peer = try WireApp(
                        peerOf: host, port: port, name: "intruder", cluster: name, listen: listen,
                        incarnation: incarnation)
                    let back = try WireApp(
                        acceptingOn: listener.fd, name: "intruder", cluster: name, listen: listen,
                        incarnation: incarnation)
                    return (peer, back)
                } catch {
                    throw error as? FreightError ?? FreightError(.io, "\(error)")
                }
            }
        }
        do {
            let (peer, back) = try result.get()
            return (peer, back, listener.fd)
        } catch {
            close(listener.fd)
            throw error
        }
    }

    /// An app that starts a 1 MiB chunk, sends one byte of it and stops delays nobody: on a link of one stripe, the
    /// stream beside it is never held up for more than 100 ms longer than it was before (a node relays a chunk only
    /// once it is whole), and the stalled sender is closed after `Limits.chunkStallSeconds`.
    @Test func anAppStalledMidChunkDelaysNoOne() async throws {
        let cluster = try await Self.releaseCluster(nodes: 2, ["--streams", "1"])
        defer { cluster.stop() }
        let sink = try await cluster.receiver("hostile/stalled", at: "n2", [])
        defer { sink.stop() }
        let stream = try await CheckedStream.start(cluster)
        defer { stream.stop() }
        let baseline = try await stream.longestGap(over: .seconds(3))

        let socket = cluster.node("n1").socket
        let app = try await Strangers.onThread { () -> Result<WireApp, FreightError> in
            do {
                let app = try WireApp(socketPath: socket, label: "staller")
                let id = try app.open("hostile/stalled", length: 4 << 20)
                try app.credit(for: id)
                try app.beginChunk(id, offset: 0, of: 1 << 20, sending: 1)
                return .success(app)
            } catch {
                return .failure(error as? FreightError ?? FreightError(.io, "\(error)"))
            }
        }.get()
        defer { app.close() }
        let stalled = try await stream.longestGap(over: .seconds(4))
        print("stalled mid-chunk: longest wait of the stream \(baseline) before, \(stalled) while a chunk hung")
        #expect(
            stalled <= baseline + .milliseconds(100),
            "the stream waited \(stalled) while a chunk hung on its only stripe (\(baseline) before)")
        #expect(
            try await cluster.node("n1").process.waitForStderr(
                containing: "a chunk stalled for over", timeout: .seconds(15)),
            "\(cluster.node("n1").process.stderr.suffix(2000))")
        #expect(stream.failures.isEmpty, "\(stream.failures.prefix(3))")
    }

    /// A peer that sends a chunk past the credit it was granted loses that one message (ABORT, protocol
    /// violation); the receiver hears it and goes on, and the stream beside loses nothing.
    @Test func aPeerPastItsCreditLosesOnlyThatMessage() async throws {
        let cluster = try await Self.releaseCluster()
        defer { cluster.stop() }
        let stream = try await CheckedStream.start(cluster)
        defer { stream.stop() }
        let victim = try await cluster.receiver("peer/victim", at: "n1", [], seenAt: "n1")
        defer { victim.stop() }
        let endpointID = try await Self.endpointID(of: "peer/victim", in: cluster)
        let (peer, back, listener) = try await Self.intruder(cluster)
        defer { close(listener) }
        let reason = await Strangers.onThread { () -> String in
            do {
                let id = try peer.open("peer/victim", length: 64 << 20, targets: [("n1", endpointID)])
                try peer.data(id, offset: 48 << 20, count: 1 << 20)
                let frame = try back.next { if case .abort(let abort) = $0 { abort.messageID == id } else { false } }
                guard case .abort(let abort) = frame else { return "" }
                return abort.error.message
            } catch {
                return "no abort: \(error)"
            }
        }
        #expect(reason.contains("beyond the credit"), "\(reason)")
        let failed = try await victim.waitForLine(timeout: .seconds(10)) { $0.contains("\"failed\"") }
        #expect(failed.contains("beyond the credit") || failed.contains("protocol"), "\(failed)")
        #expect(victim.isRunning, "the receiver goes on")
        #expect(stream.failures.isEmpty, "\(stream.failures.prefix(3))")
    }

    /// A peer (written by hand) that repeats a chunk, acknowledges past the end of a message, and stalls mid-chunk:
    /// the repeated chunk is dropped by the receiver, which holds it already (a resend after a broken link is
    /// legal), and the message is delivered checked; the acknowledgement past the end fails that one message for its
    /// sender, naming the violation; the stalled chunk holds no stripe, and the peer's stripe is closed after
    /// `Limits.chunkStallSeconds`. The stream beside loses nothing.
    @Test func aPeerThatRepeatsOverAcknowledgesOrStallsHarmsOnlyItsMessages() async throws {
        let cluster = try await Self.releaseCluster()
        defer { cluster.stop() }
        let stream = try await CheckedStream.start(cluster)
        defer { stream.stop() }
        let victim = try await cluster.receiver("peer/repeated", at: "n1", ["--check"], seenAt: "n1")
        defer { victim.stop() }
        let endpointID = try await Self.endpointID(of: "peer/repeated", in: cluster)
        let (peer, back, listener) = try await Self.intruder(cluster)
        defer { close(listener) }

        // A chunk sent twice.
        let repeated = await Strangers.onThread { () -> String in
            do {
                let id = try peer.open(
                    "peer/repeated", length: 2 << 20, targets: [("n1", endpointID)], attributes: ["freight-seed": "1"])
                try back.credit(for: id, atLeast: 2 << 20)
                try peer.data(id, offset: 0, count: 1 << 20)
                try peer.data(id, offset: 0, count: 1 << 20)
                try peer.data(id, offset: 1 << 20, count: 1 << 20, last: true)
                let outcome = try back.next {
                    switch $0 {
                    case .done(let done): done.messageID == id
                    case .abort(let abort): abort.messageID == id
                    default: false
                    }
                }
                if case .abort(let abort) = outcome { return abort.error.message }
                return "done"
            } catch {
                return "no outcome: \(error)"
            }
        }
        #expect(repeated == "done", "\(repeated)")
        let received = try await victim.waitForLine(timeout: .seconds(10)) { $0.contains("\"received\"") }
        #expect(received.contains("\"checked\":true"), "\(received)")

        // An acknowledgement past the end of a message to an endpoint the peer announced.
        let announced = await Strangers.onThread { () -> Bool in
            var update = Freight_Wire_V1_Endpoints()
            update.full = true
            var sink = Freight_Wire_V1_Endpoint()
            sink.id = 1
            sink.pattern = "peer/sink"
            sink.app = "a"
            update.added = [sink]
            return (try? peer.write(FrameEncoder.encode(.endpoints(update)))) != nil
        }
        #expect(announced)
        try await cluster.waitForEndpoints("peer/sink", count: 1, at: "n1")
        let sender = try FreightProcess(
            ["send", "peer/sink", "--size", "1MiB", "--via", cluster.node("n1").socket],
            executable: cluster.executable)
        defer { sender.stop() }
        let overAcknowledged = await Strangers.onThread { () -> Bool in
            guard
                case .open(let open)? = try? back.next(where: {
                    if case .open(let open) = $0 { open.header.destination == "peer/sink" } else { false }
                })
            else { return false }
            var ack = Freight_Wire_V1_Ack()
            ack.messageID = open.header.id
            ack.ackedOffset = open.header.length + 1
            ack.creditOffset = open.header.length + 1
            return (try? peer.write(FrameEncoder.encode(.ack(ack)))) != nil
        }
        #expect(overAcknowledged)
        #expect(try await sender.waitForExit(timeout: .seconds(20)) != 0)
        #expect(sender.stderr.contains("acknowledged past"), "\(sender.stderr)")

        // A chunk begun and left: one byte of 1 MiB.
        let before = stream.delivered
        let stalled = await Strangers.onThread { () -> Bool in
            do {
                let id = try peer.open("peer/repeated", length: 2 << 20, targets: [("n1", endpointID)])
                try back.credit(for: id)
                try peer.beginChunk(id, offset: 0, of: 1 << 20, sending: 1)
                return true
            } catch {
                return false
            }
        }
        #expect(stalled)
        #expect(
            try await cluster.node("n1").process.waitForStderr(
                containing: "a chunk stalled for over", timeout: .seconds(15)),
            "\(cluster.node("n1").process.stderr.suffix(2000))")
        #expect(stream.delivered > before + 100, "the stream went on: \(stream.delivered - before) messages")
        #expect(victim.isRunning, "the receiver goes on")
        #expect(stream.failures.isEmpty, "\(stream.failures.prefix(3))")
    }

    /// A peer that announces more endpoints than one peer may have gets the first 1,000,000 kept and the rest
    /// refused with a logged reason; when it leaves, its endpoints go and the memory they took is given back.
    @Test func aPeerAnnouncingTooManyEndpointsIsBounded() async throws {
        let cluster = try await Self.releaseCluster()
        defer { cluster.stop() }
        let stream = try await CheckedStream.start(cluster)
        defer { stream.stop() }
        let pid = cluster.node("n1").process.pid
        let before = Int(ProcessStats.residentBytes(of: pid))
        let (peer, back, listener) = try await Self.intruder(cluster)
        let announced = Limits.endpointsPerPeerMax + 5000
        let sent = await Strangers.onThread { () -> Bool in
            var next = 0
            while next < announced {
                var update = Freight_Wire_V1_Endpoints()
                update.full = next == 0
                // 1,500 records of about 25 bytes: within the 64 KiB a control frame may have.
                for id in next..<min(next + 1500, announced) {
                    var endpoint = Freight_Wire_V1_Endpoint()
                    endpoint.id = UInt64(id + 1)
                    endpoint.pattern = "flood/\(id)"
                    endpoint.app = "a"
                    update.added.append(endpoint)
                }
                next += 1500
                guard (try? peer.write(FrameEncoder.encode(.endpoints(update)))) != nil else { return false }
            }
            return true
        }
        #expect(sent)
        let deadline = ContinuousClock.now + .seconds(60)
        var known = 0
        while ContinuousClock.now < deadline {
            known = try await cluster.status("n1")["known_endpoints"] as? Int ?? 0
            if known >= Limits.endpointsPerPeerMax { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        let full = Int(ProcessStats.residentBytes(of: pid))
        #expect(known >= Limits.endpointsPerPeerMax && known < Limits.endpointsPerPeerMax + 10, "known \(known)")
        #expect(
            cluster.node("n1").process.stderr.contains("announced over \(Limits.endpointsPerPeerMax) endpoints"))
        // It leaves: its link closes and n1 drops what it announced.
        close(listener)
        peer.close()
        back.close()
        let leftDeadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < leftDeadline {
            known = try await cluster.status("n1")["known_endpoints"] as? Int ?? 0
            if known < 100 { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        let after = Int(ProcessStats.residentBytes(of: pid))
        #expect(known < 100, "n1 still knows \(known) endpoints")
        #expect(
            after - before < 64 << 20,
            "memory \(before >> 20) MiB before, \(full >> 20) MiB with the flood, \(after >> 20) MiB after it left")
        #expect(stream.failures.isEmpty, "\(stream.failures.prefix(3))")
        print("endpoint flood: rss \(before >> 20) → \(full >> 20) → \(after >> 20) MiB")
    }

    /// Gossip of 1,030 invented members fills no member table: they are candidates, probed a few times each, and
    /// a real node that joins afterwards gets in at once; the stream beside loses nothing.
    @Test func inventedMembersKeepNoRealNodeOut() async throws {
        let cluster = try await Self.releaseCluster()
        defer { cluster.stop() }
        let stream = try await CheckedStream.start(cluster)
        defer { stream.stop() }
        let (peer, back, listener) = try await Self.intruder(cluster)
        defer {
            close(listener)
            peer.close()
            back.close()
        }
        var list = Freight_Wire_V1_Members()
        for index in 0..<1030 {
            var member = Freight_Wire_V1_Member()
            member.name = "invented-\(index)"
            member.listen = "127.0.1.\(index % 250 + 1):\(9000 + index / 250)"
            member.incarnation = UInt64(index + 1)
            list.members.append(member)
        }
        try peer.write(FrameEncoder.encode(.members(list)))
        try await Task.sleep(for: .seconds(1))
        let peers = try await cluster.status("n1")["peers"] as? [[String: Any]] ?? []
        #expect(peers.count <= 2, "n1 counts \(peers.count) members: \(peers.prefix(4).map { $0["name"] ?? "" })")
        let joined = ContinuousClock.now
        _ = try await cluster.startNode(name: "n3", host: "127.0.0.3", join: [cluster.node("n1").listen])
        var linked = false
        while ContinuousClock.now < joined + .seconds(10) {
            let now = try await cluster.status("n1")["peers"] as? [[String: Any]] ?? []
            if now.contains(where: { $0["name"] as? String == "n3" && ($0["streams_up"] as? Int ?? 0) >= 4 }) {
                linked = true
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(linked, "n3 did not get in")
        #expect(ContinuousClock.now - joined < .seconds(5), "n3 took \(ContinuousClock.now - joined) to get in")
        #expect(stream.failures.isEmpty, "\(stream.failures.prefix(3))")
    }
}
