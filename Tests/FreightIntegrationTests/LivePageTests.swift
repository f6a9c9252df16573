import Foundation
import FreightCore
import FreightTesting
import Testing

/// The live page at `/` on the admin port (docs/observability.md), loaded by a real headless Chromium while
/// messages cross the fabric: it draws the graph, the messages in flight with their progress, and the last errors,
/// and keeps updating itself from the node's server-sent events.
@Suite(.serialized) struct LivePageTests {
    static let chromium = "/usr/bin/chromium"

    /// Three nodes; two slow receivers (8 MiB/s) on n2 and n3 take a 1 GiB message each from n1 (two minutes each, so
    /// both are still in flight however long Chromium takes to start on a loaded machine; the test stops them), and a
    /// message to an address nobody serves fails at n1. Chromium loads n1's page and waits until it has drawn three frames with
    /// all three nodes in the graph and both messages in flight; the page then shows the two messages with their
    /// progress, both links with a rate, and the failure with its code. The screenshot goes to
    /// `$FREIGHT_SCREENSHOT` when set (the README's picture is made so), to a temporary file otherwise.
    @Test func chromiumSeesTheFabricWhileMessagesMove() async throws {
        try #require(
            FileManager.default.isExecutableFile(atPath: Self.chromium), "chromium is installed by scripts/test.sh")
        guard let root = FreightProcess.repositoryRoot else {
            throw FreightError(.internalError, "no repository root for scripts/page-screenshot.py")
        }
        let cluster = try await ProcessCluster.start(nodes: 3, extraArguments: ["--admin", "127.0.0.1:0"])
        defer { cluster.stop() }
        let admin = try await AdminTests.admin(cluster.node("n1"))
        var receivers: [FreightProcess] = []
        defer { receivers.forEach { $0.stop() } }
        var senders: [FreightProcess] = []
        defer { senders.forEach { $0.stop() } }
        for (node, address) in [("n2", "live/two"), ("n3", "live/three")] {
            receivers.append(try await cluster.receiver(address, at: node, ["--rate", "8MiB", "--count", "1"]))
            senders.append(
                try FreightProcess(["send", address, "--size", "1GiB", "--via", cluster.node("n1").socket]))
        }
        let refused = try await FreightProcess.run([
            "send", "live/nobody", "--size", "1MiB", "--via", cluster.node("n1").socket,
        ])
        #expect(refused.status != 0, "a message to an address nobody serves fails")

        let screenshot =
            ProcessInfo.processInfo.environment["FREIGHT_SCREENSHOT"]
            ?? NSTemporaryDirectory() + "freight-live-\(UInt32.random(in: 0...UInt32.max)).png"
        let browser = try FreightProcess(
            [
                "\(root)/scripts/page-screenshot.py", "http://\(admin)/", screenshot, "--frames", "3", "--nodes", "3",
                "--messages", "2", "--moving", "2", "--timeout", "90",
            ], executable: FreightProcess.pythonPath)
        defer { browser.stop() }
        let status = try await browser.waitForExit(timeout: .seconds(120))
        let report = browser.stdoutLines.last ?? "{}"
        try #require(status == 0, "page-screenshot.py: \(browser.stderr) \(report)")
        let page = try JSONSerialization.jsonObject(with: Data(report.utf8)) as! [String: Any]

        #expect(Set(page["nodes"] as? [String] ?? []) == ["n1", "n2", "n3"], "the graph: \(report)")
        let links = page["links"] as? [String] ?? []
        #expect(
            links.count == 2 && links.allSatisfy { $0.hasSuffix("B/s") && !$0.hasSuffix(" 0 B/s") },
            "each peer link with its rate: \(report)")
        let messages = page["messages"] as? [String] ?? []
        for address in ["live/two", "live/three"] {
            #expect(
                messages.contains { $0.contains(address) && $0.contains("1.0 GiB") && $0.contains("%") },
                "\(address) in flight with its progress: \(report)")
        }
        let errors = page["errors"] as? [String] ?? []
        #expect(errors.contains { $0.contains("no_route") && $0.contains("live/nobody") }, "the failure: \(report)")
        #expect(page["state"] as? String == "live", "\(report)")

        let png = try Data(contentsOf: URL(fileURLWithPath: screenshot))
        if ProcessInfo.processInfo.environment["FREIGHT_SCREENSHOT"] == nil {
            try? FileManager.default.removeItem(atPath: screenshot)
        }
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]) && png.count > 20_000, "a PNG of the page: \(png.count) B")
    }

    /// A gateway's page draws the other cluster its link reaches, with the link's rates and round-trip time.
    @Test func aGatewayPageShowsTheClusterItLinksTo() async throws {
        try #require(
            FileManager.default.isExecutableFile(atPath: Self.chromium), "chromium is installed by scripts/test.sh")
        let root = try #require(FreightProcess.repositoryRoot)
        let folder = NSTemporaryDirectory() + "freight-live-gateways-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for cluster in ["a", "c"] { try await GatewayTests.certificates(cluster, in: folder) }
        let c = try await GatewayTests.site(
            "c", host: "127.0.0.83", folder: folder, peers: ["a"], dial: [], export: ["**"])
        defer { c.cluster.stop() }
        let a = try await GatewayTests.site(
            "a", host: "127.0.0.81", folder: folder, peers: ["c"], dial: [c.gateway], export: [],
            extraArguments: ["--admin", "127.0.0.81:0"])
        defer { a.cluster.stop() }
        let admin = try await AdminTests.admin(a.cluster.node("a"))
        try await GatewayTests.waitFor("a's link to c is up") {
            let status = try await a.cluster.status("a")
            return (status["gateway_links"] as? [[String: Any]] ?? []).contains { $0["cluster"] as? String == "c" }
        }
        let screenshot = NSTemporaryDirectory() + "freight-live-\(UInt32.random(in: 0...UInt32.max)).png"
        defer { try? FileManager.default.removeItem(atPath: screenshot) }
        let browser = try FreightProcess(
            [
                "\(root)/scripts/page-screenshot.py", "http://\(admin)/", screenshot, "--frames", "2", "--nodes", "2",
                "--timeout", "60",
            ], executable: FreightProcess.pythonPath)
        defer { browser.stop() }
        let status = try await browser.waitForExit(timeout: .seconds(90))
        let report = browser.stdoutLines.last ?? "{}"
        try #require(status == 0, "page-screenshot.py: \(browser.stderr) \(report)")
        let page = try JSONSerialization.jsonObject(with: Data(report.utf8)) as! [String: Any]
        #expect(Set(page["nodes"] as? [String] ?? []) == ["a", "gateway c"], "the graph: \(report)")
        let links = page["links"] as? [String] ?? []
        #expect(links.count == 1 && links[0].hasPrefix("c →") && links[0].contains("←"), "the link to c: \(report)")
    }
}
