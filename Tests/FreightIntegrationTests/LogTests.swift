import Foundation
import FreightClient
import FreightCore
import FreightTesting
import Testing

/// A node's logs for log shippers (docs/observability.md, "Logs"): `--log-format json` writes one JSON object per
/// line, and a message that fails at the node is logged with its message id and the trace id of its W3C context.
@Suite(.serialized) struct LogTests {
    @Test func jsonLinesCarryMessageAndTraceIDs() async throws {
        let cluster = try await ProcessCluster.start(
            nodes: 1, extraArguments: ["--log-format", "json", "--log-level", "notice"])
        defer { cluster.stop() }
        let node = cluster.node("n1")
        let client = try await FreightClient.connect(to: .unix(path: node.socket), label: "logged")
        let traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
        var options = SendOptions()
        options.traceparent = "00-\(traceID)-00f067aa0ba902b7-01"
        await #expect(throws: FreightError.self) {
            _ = try await client.send(
                to: "logged/nobody", body: .pattern(seed: 1, length: 1 << 20), options: options)
        }
        await client.close()

        var failure: [String: Any]?
        let logged = try await DirectoryTests.eventually(timeout: .seconds(10)) {
            failure = Self.lines(node.process.stderr).first {
                ($0["msg"] as? String)?.hasPrefix("message failed") == true
            }
            return failure != nil
        }
        try #require(logged, "a line for the failed message in:\n\(node.process.stderr.suffix(3000))")
        #expect(failure?["trace_id"] as? String == traceID, "\(failure ?? [:])")
        #expect(failure?["code"] as? String == "no_route", "\(failure ?? [:])")
        #expect(failure?["address"] as? String == "logged/nobody", "\(failure ?? [:])")
        #expect(failure?["level"] as? String == "notice" && failure?["logger"] as? String == "freight.node")
        let id = failure?["message_id"] as? String ?? ""
        #expect(!id.isEmpty && UInt64(id, radix: 16) != nil, "message_id in hex: \(id)")
        #expect((failure?["time"] as? String)?.hasSuffix("Z") == true, "\(failure ?? [:])")

        // Every line the node wrote to stderr is one JSON object.
        let text = node.process.stderr
        let raw = text.split(separator: "\n")
        #expect(!raw.isEmpty && Self.lines(text).count == raw.count, "every line JSON:\n\(text.suffix(3000))")

        // A bad format is refused with the choices.
        let refused = try await FreightProcess.run([
            "node", "--name", "x", "--listen", "127.0.0.1:0", "--socket", "", "--log-format", "xml",
        ])
        #expect(refused.status != 0 && refused.stderr.contains("use text or json"), "\(refused.stderr)")
    }

    static func lines(_ text: String) -> [[String: Any]] {
        text.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }
}
