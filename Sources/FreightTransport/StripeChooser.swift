/// Picks the connection of a striped link that takes the next chunk: fill first, spill over.
///
/// A stripe takes chunks while fewer than `spillBytes` wait in its send queue beyond what the kernel took; when
/// the first is that full, the next one takes them, and so on. A node runs on one event loop, so more connections
/// add no CPU; they add capacity only where one connection is held back by its TCP window (high bandwidth-delay
/// links). The node spills at half a message window: on loopback and inside a rack chunks stay on one
/// connection and caches stay warm; on a window-limited link queues grow and the next stripes take their share.
public enum StripeChooser {
    public enum Policy: String, Sendable, CaseIterable {
        /// Fill the first stripe, spill to the next when it is full (the default).
        case fill
        /// Every chunk to the stripe with the least queued, starting from a rotating index, so that consecutive
        /// chunks take different connections.
        case spread
    }

    /// The stripe for the next chunk under `policy`; `rotation` advances with every chunk.
    public static func choose(pending: [Int?], spillBytes: Int, policy: Policy, rotation: Int) -> Int? {
        switch policy {
        case .fill:
            return choose(pending: pending, spillBytes: spillBytes)
        case .spread:
            var least: (index: Int, bytes: Int)?
            for step in pending.indices {
                let index = (rotation + step) % pending.count
                guard let bytes = pending[index] else { continue }
                if least == nil || bytes < least!.bytes { least = (index, bytes) }
            }
            return least?.index
        }
    }

    /// - Parameter pending: bytes queued per stripe; nil for a stripe that is not connected.
    /// - Returns: the index of the stripe to use, or nil when none is connected.
    public static func choose(pending: [Int?], spillBytes: Int) -> Int? {
        var least: (index: Int, bytes: Int)?
        for (index, bytes) in pending.enumerated() {
            guard let bytes else { continue }
            if bytes < spillBytes { return index }
            if least == nil || bytes < least!.bytes { least = (index, bytes) }
        }
        return least?.index
    }
}
