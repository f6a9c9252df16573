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
        try TestFiles.write(source, bytes: 256 * Self.mebibyte, seed: 31)
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
        #expect(try TestFiles.identical(source, file))

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
}
