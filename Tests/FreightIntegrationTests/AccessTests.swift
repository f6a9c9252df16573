import Foundation
import FreightCore
import FreightTesting
import Testing

/// Who may attach, receive and send (docs/hardening.md), through the CLI as a user would: apps over TCP are off
/// unless asked for, and an access list binds apps on the Unix socket (by uid) and over TCP (by token).
@Suite(.serialized) struct AccessTests {
    static let secret = "s3cret-token-of-team-a-0123456789"

    /// The eavesdropper of the issue: an app over TCP that registers `**` is refused, with the reason, and gets no
    /// copy of a message between two other apps.
    @Test func appsOverTCPAreOffUnlessAskedFor() async throws {
        let cluster = try await ProcessCluster.start(nodes: 2)
        defer { cluster.stop() }
        let eavesdropper = try await FreightProcess.run([
            "recv", "**", "--via", cluster.node("n2").listen, "--count", "1",
        ])
        #expect(eavesdropper.status != 0)
        #expect(eavesdropper.stderr.contains("apps over TCP are off"), "\(eavesdropper.stderr)")
        let recv = try await cluster.receiver("private/talk", at: "n2", ["--count", "1", "--check"])
        defer { recv.stop() }
        let send = try await FreightProcess.run([
            "send", "private/talk", "--size", "1MiB", "--via", cluster.node("n1").socket, "--json",
        ])
        #expect(send.status == 0, "\(send.stderr)")
        let report = send.stdout.first.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) }
        let deliveries = (report as? [String: Any])?["deliveries"] as? [Any]
        #expect(deliveries?.count == 1, "only the one receiver got it: \(send.stdout)")
    }

    /// An app allowed `team-a/**` can neither register nor send outside it; over TCP only a token of the list gets
    /// in; each refusal names the rule.
    @Test func theAccessListBindsEveryRegistrationAndOpen() async throws {
        let folder = NSTemporaryDirectory() + "freight-access-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = "\(folder)/access"
        try """
        # test access list
        token team-a \(Self.secret)
        allow uid:\(getuid()) receive,send team-a/**
        allow token:team-a receive team-a/tcp/*
        """.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o644)
        let readable = try await FreightProcess.run([
            "node", "--name", "x", "--listen", "127.0.0.9:0", "--socket", "\(folder)/x.sock", "--access", path,
        ])
        #expect(readable.status != 0)
        #expect(readable.stderr.contains("chmod 600"), "\(readable.stderr)")
        chmod(path, 0o600)

        let cluster = try await ProcessCluster.start(nodes: 2, extraArguments: ["--access", path, "--apps-over-tcp"])
        defer { cluster.stop() }
        let outside = try await FreightProcess.run([
            "recv", "team-b/secrets", "--via", cluster.node("n2").socket, "--count", "1",
        ])
        #expect(outside.status != 0)
        #expect(
            outside.stderr.contains("may not receive on team-b/secrets")
                && outside.stderr.contains("only on team-a/**"),
            "\(outside.stderr)")
        let everything = try await FreightProcess.run(["recv", "**", "--via", cluster.node("n2").socket])
        #expect(everything.status != 0 && everything.stderr.contains("may not receive on **"), "\(everything.stderr)")

        let recv = try await cluster.receiver("team-a/inbox", at: "n2", ["--count", "1", "--check"])
        defer { recv.stop() }
        let sendOutside = try await FreightProcess.run([
            "send", "team-b/inbox", "--size", "64KiB", "--via", cluster.node("n1").socket,
        ])
        #expect(sendOutside.status != 0)
        #expect(sendOutside.stderr.contains("may not send to team-b/inbox"), "\(sendOutside.stderr)")
        let sendInside = try await FreightProcess.run([
            "send", "team-a/inbox", "--size", "1MiB", "--via", cluster.node("n1").socket,
        ])
        #expect(sendInside.status == 0, "\(sendInside.stderr)")
        #expect(try await recv.waitForExit(timeout: .seconds(20)) == 0)

        // Over TCP: no token, a wrong one, then the right one, which may receive only where its rule says.
        let tcp = cluster.node("n2").listen
        let anonymous = try await FreightProcess.run(["recv", "team-a/tcp/x", "--via", tcp, "--count", "1"])
        #expect(anonymous.stderr.contains("presents one of its tokens"), "\(anonymous.stderr)")
        let wrong = try await FreightProcess.run(
            ["resolve", "team-a/**", "--via", tcp], environment: ["FREIGHT_TOKEN": "not-the-secret-at-all"])
        #expect(wrong.status != 0 && wrong.stderr.contains("not in this node's access list"), "\(wrong.stderr)")
        let broad = try await FreightProcess.run(
            ["recv", "team-a/**", "--via", tcp, "--count", "1"], environment: ["FREIGHT_TOKEN": Self.secret])
        #expect(broad.stderr.contains("token team-a may not receive on team-a/**"), "\(broad.stderr)")
        let overTCP = try FreightProcess(
            ["recv", "team-a/tcp/x", "--via", tcp, "--count", "1", "--check", "--json"],
            environment: ["FREIGHT_TOKEN": Self.secret])
        defer { overTCP.stop() }
        _ = try await overTCP.waitForLine { $0.contains("\"ready\"") }
        try await cluster.waitForEndpoints("team-a/tcp/x", count: 1, at: "n1")
        let toTCP = try await FreightProcess.run([
            "send", "team-a/tcp/x", "--size", "1MiB", "--via", cluster.node("n1").socket,
        ])
        #expect(toTCP.status == 0, "\(toTCP.stderr)")
        #expect(try await overTCP.waitForExit(timeout: .seconds(20)) == 0)
    }
}
