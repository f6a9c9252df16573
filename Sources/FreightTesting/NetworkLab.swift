import Foundation
import FreightCore

/// Two network namespaces, `a` and `b`, joined by `rails` veth pairs; pair r carries 198.18.r.1/24 (a) and
/// 198.18.r.2/24 (b) and is shaped with `tc tbf` in both directions. Needs root (CAP_NET_ADMIN) and iproute2.
///
/// Names carry this process's PID, so that a lab left by a killed test run is recognised and removed by the next
/// one. `remove()` deletes both namespaces (and with them every veth); call it in a `defer`.
public final class NetworkLab: Sendable {
    public let prefix: String
    public let rails: Int
    public var namespaceA: String { "\(prefix)a" }
    public var namespaceB: String { "\(prefix)b" }
    /// The `ip` executable.
    public let ip: String

    /// Creates the namespaces and links; removes whatever it made if a step fails.
    public init(rails: Int, rateMbit: Int) throws {
        precondition((1...8).contains(rails))
        let ip = try Self.ipTool()
        self.ip = ip
        self.rails = rails
        self.prefix = "frl\(getpid())"
        Self.removeStale(ip: ip, prefix: "frl")
        do {
            try run(["netns", "add", namespaceA])
            try run(["netns", "add", namespaceB])
            for namespace in [namespaceA, namespaceB] {
                try run(["-n", namespace, "link", "set", "lo", "up"])
            }
            for rail in 0..<rails {
                let (left, right) = ("\(prefix)x\(rail)", "\(prefix)y\(rail)")
                try run(["link", "add", left, "type", "veth", "peer", "name", right])
                try run(["link", "set", left, "netns", namespaceA])
                try run(["link", "set", right, "netns", namespaceB])
                for (namespace, device, host) in [(namespaceA, left, 1), (namespaceB, right, 2)] {
                    try run(["-n", namespace, "addr", "add", "198.18.\(rail).\(host)/24", "dev", device])
                    try run(["-n", namespace, "link", "set", device, "up"])
                    try run([
                        "netns", "exec", namespace, "tc", "qdisc", "add", "dev", device, "root", "tbf", "rate",
                        "\(rateMbit)mbit", "burst", "512kb", "latency", "20ms",
                    ])
                }
            }
        } catch {
            remove()
            throw error
        }
    }

    /// The address of rail `rail` in namespace a (side 1) or b (side 2).
    public func address(rail: Int, side: Int) -> String { "198.18.\(rail).\(side)" }

    /// Starts `freight ARGS` inside `namespace` (the same PID: `ip netns exec` replaces itself with it).
    public func freight(in namespace: String, _ arguments: [String], binary: String) throws -> FreightProcess {
        try FreightProcess(["netns", "exec", namespace, binary] + arguments, executable: ip)
    }

    /// Takes rail `rail`'s link down or up (both ends): packets stop, connections stay until their timeouts.
    public func setLink(rail: Int, up: Bool) throws {
        for (namespace, device) in [(namespaceA, "\(prefix)x\(rail)"), (namespaceB, "\(prefix)y\(rail)")] {
            try run(["-n", namespace, "link", "set", device, up ? "up" : "down"])
        }
    }

    /// Deletes both namespaces; their veths go with them.
    public func remove() {
        for namespace in [namespaceA, namespaceB] { try? run(["netns", "delete", namespace]) }
    }

    private func run(_ arguments: [String]) throws {
        try Self.run(ip: ip, arguments)
    }

    static func run(ip: String, _ arguments: [String]) throws {
        try Command.run(ip, arguments)
    }

    /// iproute2's `ip`, when it is installed and this process may make namespaces (root).
    static func ipTool() throws -> String {
        guard
            let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first(where: {
                FileManager.default.isExecutableFile(atPath: $0)
            })
        else {
            throw FreightError(.internalError, "iproute2's ip is not installed (apt-get install iproute2)")
        }
        guard getuid() == 0 else {
            throw FreightError(.internalError, "network namespaces need root (CAP_NET_ADMIN)")
        }
        return ip
    }

    /// Namespaces named `PREFIX<pid>a|b` by an earlier lab whose process is gone.
    static func removeStale(ip: String, prefix: String) {
        guard let listing = try? Command.run(ip, ["netns", "list"]) else { return }
        for line in listing.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            guard name.hasPrefix(prefix), name.count > prefix.count + 1,
                let pid = Int32(name.dropFirst(prefix.count).dropLast())
            else { continue }
            if pid != getpid() && Foundation.kill(pid, 0) != 0 { try? run(ip: ip, ["netns", "delete", name]) }
        }
    }
}
