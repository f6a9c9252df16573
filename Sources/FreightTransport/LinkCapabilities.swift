/// What a link can do beyond carrying frames. TCP and the Unix socket can do both; a link that encrypts in user
/// space (TLS) can do neither, and the node falls back: it copies shared regions into the link's writes, and reads
/// chunk bodies into buffers before copying them into an app's receive pool. (docs/core.md, "Links".)
public struct LinkCapabilities: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Sends file regions (an app's shared pool) by reference with `sendfile`: no copy in user space.
    public static let sendsFileRegions = LinkCapabilities(rawValue: 1 << 0)
    /// Reads a chunk's body from the socket straight into an app's receive pool (``ReadTarget``).
    public static let readsIntoPools = LinkCapabilities(rawValue: 1 << 1)

    /// What a plain socket, TCP or Unix, can do.
    public static let socket: LinkCapabilities = [.sendsFileRegions, .readsIntoPools]
}
