import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// The process at the other end of a Unix-socket link, as the kernel tells it (`SO_PEERCRED`): who an app on this
/// machine is, without its word for it (docs/hardening.md).
public struct PeerCredentials: Sendable, Hashable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    /// The credentials of `channel`'s peer, read on the channel's loop; nil for a link that is not a Unix socket.
    public static func of(_ channel: Channel) -> PeerCredentials? {
        channel.eventLoop.assertInEventLoop()
        guard case .unixDomainSocket? = channel.localAddress, let provider = channel as? SocketOptionProvider else {
            return nil
        }
        // On its own loop the option is read at once: the future is complete when it is returned.
        let box = Box()
        provider.unsafeGetSocketOption(level: .socket, name: NIOBSDSocket.Option(rawValue: SO_PEERCRED))
            .whenSuccess { (credentials: UCred) in
                box.value = PeerCredentials(pid: credentials.pid, uid: credentials.uid, gid: credentials.gid)
            }
        return box.value
    }

    /// `struct ucred` of <sys/socket.h> (pid_t, uid_t, gid_t), which Glibc shows Swift only under _GNU_SOURCE.
    struct UCred {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
    }

    private final class Box: @unchecked Sendable {
        var value: PeerCredentials?
    }
}
