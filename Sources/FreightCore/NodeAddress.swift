import FreightCore

/// Where a node is reached: a Unix socket path, HOST:PORT, or a name in this process (`inproc://NAME`).
public enum NodeAddress: Hashable, Sendable, CustomStringConvertible {
    case unix(path: String)
    case tcp(host: String, port: Int)
    /// A listener in this same process, reached with no socket at all (tests of the node's parts; docs/core.md).
    case inProcess(name: String)

    static let inProcessScheme = "inproc://"

    /// `HOST:PORT`, a path (anything with a `/`, or ending in `.sock`), or `inproc://NAME`.
    public init(_ text: String) throws(FreightError) {
        if text.hasPrefix(Self.inProcessScheme) {
            let name = String(text.dropFirst(Self.inProcessScheme.count))
            guard !name.isEmpty else {
                throw FreightError(.invalidArgument, "invalid node address '\(text)': no name after inproc://")
            }
            self = .inProcess(name: name)
            return
        }
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
        case .inProcess(let name): Self.inProcessScheme + name
        }
    }
}
