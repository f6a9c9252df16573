import CFreightSystem
import Foundation
import FreightCore
import FreightWAN

/// Two network namespaces, `a` and `b`, joined only by `links` emulated WAN links (docs/wan.md): a `freight-wan`
/// process holds a TUN device `wanN` in each namespace and carries packets between them with the link's delay, rate,
/// bounded queue, loss and reordering. Link n joins 198.18.(100 + n).1 (a) and 198.18.(100 + n).2 (b). Needs root.
///
/// Names carry this process's PID, so that a lab left by a killed test run is recognised and removed by the next
/// one; the emulator dies with this process (a parent-death signal), and its devices with it. Call `remove()` in a
/// `defer`.
public final class WANLab: Sendable {
    public let prefix: String
    public let links: Int
    public var namespaceA: String { "\(prefix)a" }
    public var namespaceB: String { "\(prefix)b" }
    public let ip: String
    /// The emulator and its control socket.
    public let emulator: FreightProcess
    public let controlPath: String

    /// Makes the namespaces and starts the emulator with `settings` (e.g. `["rate=1gbit", "rtt=50ms"]`) on every
    /// link and direction; removes what it made if a step fails.
    public init(links: Int = 1, settings: [String], seed: UInt64 = 1) async throws {
        precondition((1...8).contains(links))
        let ip = try NetworkLab.ipTool()
        self.ip = ip
        self.links = links
        let prefix = "fwn\(getpid())"
        self.prefix = prefix
        NetworkLab.removeStale(ip: ip, prefix: "fwn")
        controlPath = NSTemporaryDirectory() + "freight-wan-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        do {
            try Command.run(ip, ["netns", "add", "\(prefix)a"])
            try Command.run(ip, ["netns", "add", "\(prefix)b"])
            for namespace in ["\(prefix)a", "\(prefix)b"] {
                try Command.run(ip, ["-n", namespace, "link", "set", "lo", "up"])
            }
            var arguments = ["--control", controlPath, "--seed", "\(seed)"]
            for link in 0..<links {
                arguments += ["--link", "\(prefix)a=198.18.\(100 + link).1,\(prefix)b=198.18.\(100 + link).2"]
            }
            emulator = try FreightProcess(arguments + settings, executable: Self.emulatorPath)
            _ = try await emulator.waitForLine(timeout: .seconds(30)) { $0.hasPrefix("ready") }
        } catch {
            for namespace in ["\(prefix)a", "\(prefix)b"] { _ = try? Command.run(ip, ["netns", "delete", namespace]) }
            unlink(controlPath)
            throw error
        }
    }

    /// `$FREIGHT_WAN_BIN`, else the release build of `freight-wan` in the repository the tests run from (the test
    /// command builds it: a debug emulator costs a measurement CPU), else the one beside the tests' `freight`.
    public static var emulatorPath: String {
        if let path = ProcessInfo.processInfo.environment["FREIGHT_WAN_BIN"] { return path }
        if let root = FreightProcess.repositoryRoot,
            FileManager.default.isExecutableFile(atPath: "\(root)/.build/release/freight-wan")
        {
            return "\(root)/.build/release/freight-wan"
        }
        return URL(fileURLWithPath: FreightProcess.binaryPath).deletingLastPathComponent()
            .appendingPathComponent("freight-wan").path
    }

    /// The address of link `link` in namespace a (side 1) or b (side 2).
    public func address(link: Int, side: Int) -> String { "198.18.\(100 + link).\(side)" }

    /// Starts `executable ARGS` (default: `freight`) inside `namespace`; the same PID (`ip netns exec` execs it).
    public func process(in namespace: String, _ arguments: [String], executable: String? = nil) throws
        -> FreightProcess
    {
        try FreightProcess(
            ["netns", "exec", namespace, executable ?? FreightProcess.binaryPath] + arguments, executable: ip)
    }

    /// Sends a command to the emulator (`stats`, `set [link=N] WORDS`, `cut [link=N]`, `restore [link=N]`) and
    /// returns its answer; throws when it answers with an error.
    @discardableResult
    public func control(_ command: String) throws -> String {
        let answer = try WANControl.send(command, to: controlPath)
        guard !answer.hasPrefix("error"), !answer.isEmpty else {
            throw FreightError(.internalError, "WAN emulator: \(command): \(answer)")
        }
        return answer
    }

    /// The counters of link `link` in one direction (`a_to_b` or `b_to_a`): packets and bytes in and out, drops.
    public func counters(link: Int = 0, direction: String = "a_to_b") throws -> [String: UInt64] {
        let answer = try control("stats link=\(link)")
        let object = try JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any]
        let entry = (object?["links"] as? [[String: Any]])?.first?[direction] as? [String: Any] ?? [:]
        return entry.compactMapValues { ($0 as? NSNumber)?.uint64Value }
    }

    /// Stops the emulator (its devices go with it) and deletes both namespaces.
    public func remove() {
        emulator.stop()
        for namespace in [namespaceA, namespaceB] { _ = try? Command.run(ip, ["netns", "delete", namespace]) }
        unlink(controlPath)
    }
}
