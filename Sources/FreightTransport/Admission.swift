import FreightCore
import Logging
import NIOCore

/// How many strangers (links still in their handshake) and links a node takes (docs/hardening.md).
public struct AdmissionLimits: Sendable, Hashable {
    /// Links in handshake, in all.
    public var handshakesMax: Int
    /// Links in handshake from one source address (TCP: its IP address; every Unix-socket link is one source).
    public var handshakesPerSourceMax: Int
    /// Links in all, established or not.
    public var connectionsMax: Int
    /// A link that has not finished its handshake this long after it was accepted is closed.
    public var handshakeTimeout: TimeAmount

    public init(
        handshakesMax: Int = Limits.handshakesMax,
        handshakesPerSourceMax: Int = Limits.handshakesPerSourceMax,
        connectionsMax: Int = Limits.connectionsMax,
        handshakeTimeout: TimeAmount = .seconds(Limits.handshakeSeconds)
    ) {
        self.handshakesMax = handshakesMax
        self.handshakesPerSourceMax = handshakesPerSourceMax
        self.connectionsMax = connectionsMax
        self.handshakeTimeout = handshakeTimeout
    }
}

/// The counts behind admission: pure, so that every cap is tested without a socket.
public struct AdmissionCounts: Sendable {
    public let limits: AdmissionLimits
    public private(set) var handshakes = 0
    public private(set) var connections = 0
    public private(set) var handshakesBySource: [String: Int] = [:]

    public init(limits: AdmissionLimits) { self.limits = limits }

    /// Takes a new link from `source` into its handshake, or says why not.
    public mutating func admit(source: String) -> String? {
        if connections >= limits.connectionsMax {
            return "\(connections) links is the most this node takes (connectionsMax)"
        }
        if handshakes >= limits.handshakesMax {
            return "\(handshakes) links are in their handshake, the most this node takes (handshakesMax)"
        }
        let fromSource = handshakesBySource[source, default: 0]
        if fromSource >= limits.handshakesPerSourceMax {
            return "\(fromSource) links from \(source) are in their handshake, the most from one source "
                + "(handshakesPerSourceMax)"
        }
        handshakes += 1
        connections += 1
        handshakesBySource[source] = fromSource + 1
        return nil
    }

    /// A link admitted from `source` finished its handshake.
    public mutating func established(source: String) {
        leaveHandshake(source)
    }

    /// A link admitted from `source` closed; `established` says whether it had finished its handshake.
    public mutating func closed(source: String, established: Bool) {
        if !established { leaveHandshake(source) }
        connections -= 1
    }

    private mutating func leaveHandshake(_ source: String) {
        handshakes -= 1
        let left = handshakesBySource[source, default: 1] - 1
        handshakesBySource[source] = left > 0 ? left : nil
    }
}

/// A node's admission of the links it accepts, on the node's event loop (every accepted link runs there).
///
/// Refusals are logged one by one until a second has had ``refusalsLoggedPerSecond``; the rest of that second are
/// summed in one line when the next second begins, so a flood cannot fill the log.
public final class Admission: @unchecked Sendable {
    public let eventLoop: any EventLoop
    private(set) var counts: AdmissionCounts
    private let logger: Logger
    /// Refusals logged one by one in a second; the rest are counted.
    public static let refusalsLoggedPerSecond = 10
    private var refusalSecond: Int64 = 0
    private var refusalsThisSecond = 0
    /// Refusals and handshake timeouts since the node started.
    public private(set) var refused: UInt64 = 0
    public private(set) var timedOut: UInt64 = 0

    public init(limits: AdmissionLimits = AdmissionLimits(), eventLoop: any EventLoop, logger: Logger) {
        self.counts = AdmissionCounts(limits: limits)
        self.eventLoop = eventLoop
        self.logger = logger
    }

    public var limits: AdmissionLimits { counts.limits }
    public var handshakes: Int { counts.handshakes }
    public var connections: Int { counts.connections }

    func admit(source: String, description: String) -> Bool {
        eventLoop.assertInEventLoop()
        guard let reason = counts.admit(source: source) else { return true }
        refused += 1
        note("refusing \(description): \(reason)")
        return false
    }

    func established(source: String) {
        eventLoop.assertInEventLoop()
        counts.established(source: source)
    }

    func closed(source: String, established: Bool) {
        eventLoop.assertInEventLoop()
        counts.closed(source: source, established: established)
    }

    func handshakeTimedOut(_ description: String) {
        timedOut += 1
        note("closing \(description): no hello within \(limits.handshakeTimeout.nanoseconds / 1_000_000) ms")
    }

    /// Logs `line` unless this second has had its share of lines; a second that had more says how many.
    func note(_ line: String) {
        let second = Int64(NIODeadline.now().uptimeNanoseconds / 1_000_000_000)
        if second != refusalSecond {
            if refusalsThisSecond > Self.refusalsLoggedPerSecond {
                logger.warning(
                    "\(refusalsThisSecond - Self.refusalsLoggedPerSecond) more links refused or timed out in handshake")
            }
            refusalSecond = second
            refusalsThisSecond = 0
        }
        refusalsThisSecond += 1
        if refusalsThisSecond <= Self.refusalsLoggedPerSecond { logger.warning("\(line)") }
    }
}

/// The admission of one accepted link (``Transport`` asks ``Admission`` before it sets the link up, so a refused link
/// costs no more than its accept and close). It is no handler: nothing of it lies on the link's read path. It closes
/// the link when its handshake takes longer than the limit, leaves the count when the link closes, and is told by
/// the node (``FrameConnection/established()``) when the HELLO was accepted; the link then reads with the data
/// path's allocator.
final class HandshakeGate: @unchecked Sendable {  // confined to the link's event loop
    private let admission: Admission
    private let source: String
    /// Counted by ``admission`` until the link closes.
    private var counted = true
    private var isEstablished = false
    private var deadline: Scheduled<Void>?
    private weak var channel: Channel?
    /// Sets the link's read allocator for the data path.
    private let onEstablished: (Channel) -> Void

    /// Admits `channel` and starts its deadline, or returns nil (and logs why) when it must be refused.
    static func admit(
        _ channel: Channel, admission: Admission, onEstablished: @escaping (Channel) -> Void
    ) -> HandshakeGate? {
        let source = source(of: channel)
        let description = "link from \(channel.remoteAddress.map { "\($0)" } ?? source)"
        guard admission.admit(source: source, description: description) else { return nil }
        let gate = HandshakeGate(admission: admission, source: source, channel: channel, onEstablished: onEstablished)
        gate.deadline = channel.eventLoop.scheduleTask(in: admission.limits.handshakeTimeout) { [weak gate] in
            guard let gate, !gate.isEstablished, let channel = gate.channel else { return }
            admission.handshakeTimedOut(description)
            channel.close(promise: nil)
        }
        // Held by the close future until the link closes: the count is left then, whatever closed it.
        channel.closeFuture.whenComplete { _ in gate.release() }
        return gate
    }

    private init(
        admission: Admission, source: String, channel: Channel, onEstablished: @escaping (Channel) -> Void
    ) {
        self.admission = admission
        self.source = source
        self.channel = channel
        self.onEstablished = onEstablished
    }

    /// The source a link is counted under: its IP address, or its kind for links without one.
    static func source(of channel: Channel) -> String {
        switch channel.remoteAddress {
        case .v4?, .v6?: return channel.remoteAddress?.ipAddress ?? "tcp"
        case .unixDomainSocket?: return "unix"
        case nil: return "local"
        }
    }

    /// Leaves the count (once): the link closed, or was never set up.
    func release() {
        deadline?.cancel()
        deadline = nil
        guard counted else { return }
        counted = false
        admission.closed(source: source, established: isEstablished)
    }

    /// The node accepted the link's HELLO: it leaves the handshake count and reads as the data path does.
    func established() {
        guard counted, !isEstablished, let channel else { return }
        isEstablished = true
        deadline?.cancel()
        deadline = nil
        admission.established(source: source)
        onEstablished(channel)
    }
}
