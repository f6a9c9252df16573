import FreightCore

/// Where a node is reached: a Unix socket path or HOST:PORT.
public enum NodeAddress: Hashable, Sendable, CustomStringConvertible {
    case unix(path: String)
    case tcp(host: String, port: Int)

    /// `HOST:PORT`, or a path (anything with a `/`, or ending in `.sock`).
    public init(_ text: String) throws(FreightError) {
        if text.contains("/") || text.hasSuffix(".sock") {
            self = .unix(path: text)
            return
        }
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else {
            throw FreightError(.invalidArgument, "invalid node address '\(text)': expected HOST:PORT or a socket path")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw FreightError(.invalidArgument, "invalid node address '\(text)': no host") }
        self = .tcp(host: host, port: port)
    }

    public var description: String {
        switch self {
        case .unix(let path): path
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }
    }
}
