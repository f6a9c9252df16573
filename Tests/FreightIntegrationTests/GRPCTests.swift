import Foundation
import FreightCore
import FreightTesting
import Testing

/// The gRPC API of real `freight node --grpc` processes, driven by the Python client (clients/python) as an app
/// in another language would.
@Suite(.serialized) struct GRPCTests {
    static let mebibyte: Int64 = 1 << 20

    static var clientScript: String { "\(FreightProcess.repositoryRoot!)/clients/python/freight_py.py" }

    static func python(_ arguments: [String], environment: [String: String] = [:]) throws -> FreightProcess {
        try FreightProcess(arguments, executable: FreightProcess.pythonPath, environment: environment)
    }

    static func sha256(_ path: String) async throws -> String {
        let process = try FreightProcess([path], executable: "/usr/bin/sha256sum")
        #expect(try await process.waitForExit() == 0)
        return String(process.stdoutLines.first?.prefix(64) ?? "")
    }

    /// Python sends 256 MiB through n1's gRPC API to `freight recv` on n2; `freight send` sends 256 MiB to a
    /// Python receiver on n2. Both sides' digests match the source.
    @Test func pythonAndSwiftExchange256MiBAcrossNodes() async throws {
        let cluster = try await ProcessCluster.start(nodes: 2, grpc: true)
        defer { cluster.stop() }
        let source = "\(cluster.directory)/source.bin"
        try await TestFiles.write(source, bytes: 256 * Self.mebibyte, seed: 31)
        let digest = try await Self.sha256(source)

        // Python → Swift.
        let out = "\(cluster.directory)/out"
        let recv = try await cluster.receiver("py/to/swift", at: "n2", ["--out", out, "--count", "1"])
        defer { recv.stop() }
        let send = try Self.python([
            Self.clientScript, "send", "--target", cluster.node("n1").grpc, "py/to/swift", source,
        ])
        defer { send.stop() }
        #expect(try await send.waitForExit(timeout: .seconds(120)) == 0, "\(send.stderr)")
        #expect(send.jsonLines.first?["sha256"] as? String == digest)
        #expect(try await recv.waitForExit(timeout: .seconds(60)) == 0)
        let file = try #require(recv.jsonLines.first { $0["event"] as? String == "received" }?["file"] as? String)
        #expect(try await Self.sha256(file) == digest)
        #expect(try await TestFiles.identical(source, file))

        // Swift → Python.
        let pyOut = "\(cluster.directory)/py-out.bin"
        let receiver = try Self.python([
            Self.clientScript, "recv", "--target", cluster.node("n2").grpc, "swift/to/py", "--out", pyOut,
        ])
        defer { receiver.stop() }
        _ = try await receiver.waitForLine { $0.contains("\"ready\"") }
        try await cluster.waitForEndpoints("swift/to/py", count: 1, at: "n1")
        let sent = try await FreightProcess.run([
            "send", "swift/to/py", "--file", source, "--via", cluster.node("n1").socket, "--json",
        ])
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(try await receiver.waitForExit(timeout: .seconds(60)) == 0, "\(receiver.stderr)")
        let received = try #require(receiver.jsonLines.first { $0["event"] as? String == "received" })
        #expect(received["sha256"] as? String == digest)
        #expect(received["path"] as? [String] == ["n1", "n2"])
    }

    /// The Python client's own tests: status codes, watch, backpressure from a reader that stops, a receiver that
    /// quits mid-message.
    @Test func pythonClientSuite() async throws {
        let cluster = try await ProcessCluster.start(nodes: 2, grpc: true)
        defer { cluster.stop() }
        let suite = try Self.python(
            ["-m", "unittest", "-v", "\(FreightProcess.repositoryRoot!)/clients/python/tests/test_client.py"],
            environment: ["FREIGHT_GRPC_N1": cluster.node("n1").grpc, "FREIGHT_GRPC_N2": cluster.node("n2").grpc])
        defer { suite.stop() }
        let status = try await suite.waitForExit(timeout: .seconds(300))
        #expect(status == 0, "\(suite.stderr)")
    }

    /// On a node with an access list a gRPC call presents a token (`authorization: Bearer`), and may receive and
    /// send only where the list says; refusals are UNAUTHENTICATED and PERMISSION_DENIED with the rule.
    @Test func theAccessListBindsGRPCCalls() async throws {
        let secret = "grpc-team-a-secret-0123456789"
        let folder = NSTemporaryDirectory() + "freight-grpc-access-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let list = "\(folder)/access"
        try "token team-a \(secret)\nallow token:team-a receive,send team-a/**\nallow uid:\(getuid()) receive,send **\n"
            .write(toFile: list, atomically: true, encoding: .utf8)
        chmod(list, 0o600)
        let cluster = try await ProcessCluster.start(nodes: 2, grpc: true, extraArguments: ["--access", list])
        defer { cluster.stop() }
        let source = "\(cluster.directory)/small.bin"
        try await TestFiles.write(source, bytes: 4 * Self.mebibyte, seed: 5)
        let token = ["FREIGHT_TOKEN": secret]

        let anonymous = try Self.python([
            Self.clientScript, "recv", "--target", cluster.node("n2").grpc, "team-a/x", "--out", "\(folder)/none",
        ])
        defer { anonymous.stop() }
        #expect(try await anonymous.waitForExit(timeout: .seconds(30)) != 0)
        #expect(anonymous.stderr.contains("UNAUTHENTICATED"), "\(anonymous.stderr)")

        let out = "\(folder)/out.bin"
        let receiver = try Self.python(
            [Self.clientScript, "recv", "--target", cluster.node("n2").grpc, "team-a/x", "--out", out],
            environment: token)
        defer { receiver.stop() }
        _ = try await receiver.waitForLine { $0.contains("\"ready\"") }
        try await cluster.waitForEndpoints("team-a/x", count: 1, at: "n1")
        let outside = try Self.python(
            [Self.clientScript, "send", "--target", cluster.node("n1").grpc, "team-b/x", source], environment: token)
        defer { outside.stop() }
        #expect(try await outside.waitForExit(timeout: .seconds(30)) != 0)
        #expect(
            outside.stderr.contains("PERMISSION_DENIED") && outside.stderr.contains("may not send to team-b/x"),
            "\(outside.stderr)")
        let inside = try Self.python(
            [Self.clientScript, "send", "--target", cluster.node("n1").grpc, "team-a/x", source], environment: token)
        defer { inside.stop() }
        #expect(try await inside.waitForExit(timeout: .seconds(60)) == 0, "\(inside.stderr)")
        #expect(try await receiver.waitForExit(timeout: .seconds(30)) == 0, "\(receiver.stderr)")
        #expect(try await TestFiles.identical(source, out))

        // A filter sees and changes every message to its pattern: attaching one needs the `filter` action.
        let examples = "\(FreightProcess.repositoryRoot ?? ".")/examples/functions"
        let filter = try Self.python(
            [
                Self.clientScript, "attach-filter", "--target", cluster.node("n1").grpc, "team-a/**",
                "\(examples)/downcast.wat",
            ],
            environment: token)
        defer { filter.stop() }
        #expect(try await filter.waitForExit(timeout: .seconds(30)) != 0)
        #expect(
            filter.stderr.contains("PERMISSION_DENIED") && filter.stderr.contains("filter"), "\(filter.stderr)")
    }
}
