import Foundation
import FreightCore

/// The kernel's view of TCP sockets on this machine, through iproute2's `ss`: tests kill chosen connections with
/// it (`ss -K`, as root) the way a broken link or a middlebox would.
public enum Sockets {
    static var ss: String? {
        ["/usr/bin/ss", "/bin/ss", "/usr/sbin/ss", "/sbin/ss"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    /// Whether `ss -K` can be used here (root, and `ss` installed).
    public static var canKill: Bool { getuid() == 0 && ss != nil }

    /// Runs `ss ARGS` and returns its output.
    @discardableResult
    public static func run(_ arguments: [String]) throws -> String {
        guard let ss else { throw FreightError(.internalError, "iproute2's ss is not installed") }
        return try Command.run(ss, arguments)
    }

    /// Kills every TCP connection between `host` and the rest of this machine (both ends, in one pass).
    public static func killAll(host: String) throws {
        try run(["-K", "(", "dst", host, "or", "src", host, ")"])
    }

    /// The established TCP connections to `host:port`, as (local port, bytes sent), busiest first.
    public static func connections(to host: String, port: Int) throws -> [(localPort: Int, bytesSent: Int)] {
        let text = try run(["-tniH", "state", "established", "dst", "\(host):\(port)"])
        var result: [(Int, Int)] = []
        var current: Int?
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            let isInfo = line.first == "\t" || line.first == " "
            if !isInfo, fields.count >= 4, let local = fields[2].split(separator: ":").last.flatMap({ Int($0) }) {
                current = local
                continue
            }
            if let port = current, let sent = fields.first(where: { $0.hasPrefix("bytes_sent:") }) {
                result.append((port, Int(sent.dropFirst("bytes_sent:".count)) ?? 0))
                current = nil
            }
        }
        return result.sorted { $0.1 > $1.1 }
    }

    /// Kills the one connection from local port `localPort` to `host:port`.
    public static func kill(to host: String, port: Int, localPort: Int) throws {
        try run(["-K", "dst", "\(host):\(port)", "sport", "=", ":\(localPort)"])
    }
}
