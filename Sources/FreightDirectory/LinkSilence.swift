/// Whether the link to one peer went dark: a pure clock of what was heard from it (docs/core.md, "Membership").
///
/// A peer that resumes sends a heartbeat on each of its own stripes every heartbeat interval, so a link that stands
/// hears something at least that often. TCP_USER_TIMEOUT alone misses a path that went dark while this node's own
/// sends fail locally (an interface taken down under queued data, or under a zero window: the kernel retries those
/// sends without ever counting the timeout), and such a link would stand for ever.
///
/// While the peer's own stripes are down it sends no heartbeats, and it is redialing: the watch waits `redialGrace`
/// longer before it counts the silence, then counts it as for any link. A peer that never comes back leaves this
/// node's stripes to it closed, so its messages are held and fail after the hold time instead of waiting for ever.
public struct LinkSilence: Sendable, Equatable {
    public private(set) var heardEvents: UInt64 = 0
    public private(set) var heardNanos: UInt64 = 0
    public private(set) var peerStripesDown = false

    public init() {}

    /// What the link looks like now: `heard`, the frames read from the peer over all its connections; whether the
    /// peer's stripes here are all down; whether the peer resumes (sends heartbeats at all); whether the link has a
    /// connection left to close. When it stayed silent past `limitNanos` (and `redialGraceNanos` more while the
    /// peer's stripes are down), how long it was silent: the caller closes every connection of the link, and the
    /// clock starts again. Nil otherwise.
    public mutating func observe(
        heard: UInt64, peerStripesDown: Bool, resumes: Bool, hasConnections: Bool, nowNanos now: UInt64,
        limitNanos: UInt64, redialGraceNanos: UInt64
    ) -> UInt64? {
        if heard != heardEvents || peerStripesDown != self.peerStripesDown || !resumes || !hasConnections {
            heardEvents = heard
            heardNanos = now
            self.peerStripesDown = peerStripesDown
            return nil
        }
        let silent = now &- heardNanos
        guard silent > limitNanos &+ (peerStripesDown ? redialGraceNanos : 0) else { return nil }
        heardNanos = now
        return silent
    }
}
