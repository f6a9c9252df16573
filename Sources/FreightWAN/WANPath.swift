import FreightCore

/// What one direction of an emulated WAN link does to the packets it carries (docs/wan.md, "The emulator").
public struct WANSettings: Sendable, Equatable {
    /// Time every packet spends on the wire after it left the queue.
    public var oneWayDelayNanos: UInt64 = 0
    /// The rate the queue drains at; 0: no limit.
    public var bitsPerSecond: UInt64 = 0
    /// The queue in front of the rate limit, in bytes: a packet that finds it full is dropped (tail drop). Nil: one
    /// bandwidth-delay product of the round trip (at least 256 KiB).
    public var queueBytes: Int? = nil
    /// Chance that a packet is lost, 0…1.
    public var loss: Double = 0
    /// Chance that a packet is held back by `reorderNanos` after it left the queue, so that later ones pass it.
    public var reorder: Double = 0
    public var reorderNanos: UInt64 = 1_000_000
    /// The link is cut: every packet is dropped, and so is every packet on the wire when it is cut.
    public var cut = false

    public init() {}

    /// The queue's size in bytes.
    public var queueLimit: Int {
        if let queueBytes { return queueBytes }
        let bdp = Double(bitsPerSecond) / 8 * Double(2 * oneWayDelayNanos) / 1e9
        return max(256 * 1024, Int(min(bdp, Double(Self.inFlightBytesMax))))
    }

    /// Bytes that may be on the wire (queued or delayed) in one direction at most, whatever the settings: an
    /// unlimited rate with a long delay holds no more than this.
    public static let inFlightBytesMax = 512 << 20

    /// Applies `key=value` words: `rate=1gbit` (or `mbit`, `kbit`, `bit`; 0 for no limit), `delay=25ms` (one way;
    /// `us`, `ms`, `s`), `rtt=50ms` (sets the one-way delay to half), `queue=4MiB`, `loss=0.1%` (or a fraction),
    /// `reorder=1%`, `reorder-delay=2ms`, `cut`, `restore`.
    public mutating func apply(_ words: [String]) throws(FreightError) {
        for word in words {
            let parts = word.split(separator: "=", maxSplits: 1).map(String.init)
            let key = parts[0]
            let value = parts.count == 2 ? parts[1] : ""
            switch (key, parts.count) {
            case ("cut", 1): cut = true
            case ("restore", 1): cut = false
            case ("rate", 2): bitsPerSecond = try Self.rate(value)
            case ("delay", 2): oneWayDelayNanos = try Self.duration(value)
            case ("rtt", 2): oneWayDelayNanos = try Self.duration(value) / 2
            case ("queue", 2):
                do { queueBytes = Int(try ByteCount.parse(value)) } catch { throw Self.bad(word) }
            case ("loss", 2): loss = try Self.fraction(value)
            case ("reorder", 2): reorder = try Self.fraction(value)
            case ("reorder-delay", 2): reorderNanos = try Self.duration(value)
            default: throw Self.bad(word)
            }
        }
    }

    static func bad(_ word: String) -> FreightError {
        FreightError(
            .invalidArgument,
            "'\(word)' is not a WAN setting (rate=1gbit delay=25ms rtt=50ms queue=4MiB loss=0.1% reorder=1% reorder-delay=2ms cut restore)"
        )
    }

    static func rate(_ text: String) throws(FreightError) -> UInt64 {
        let lower = text.lowercased()
        for (suffix, scale) in [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0), ("", 1.0)]
        where lower.hasSuffix(suffix) {
            guard let number = Double(lower.dropLast(suffix.count)), number >= 0, number * scale < 1e13 else { break }
            return UInt64(number * scale)
        }
        throw bad("rate=\(text)")
    }

    static func duration(_ text: String) throws(FreightError) -> UInt64 {
        for (suffix, scale) in [("us", 1e3), ("ms", 1e6), ("s", 1e9)] where text.hasSuffix(suffix) {
            guard let number = Double(text.dropLast(suffix.count)), number >= 0, number <= 60 * 1e9 / scale else {
                break
            }
            return UInt64(number * scale)
        }
        throw bad("delay=\(text)")
    }

    static func fraction(_ text: String) throws(FreightError) -> Double {
        let percent = text.hasSuffix("%")
        guard let number = Double(percent ? String(text.dropLast()) : text) else { throw bad(text) }
        let value = percent ? number / 100 : number
        guard (0...1).contains(value) else { throw bad(text) }
        return value
    }

    public var description: String {
        let rate = bitsPerSecond == 0 ? "unlimited" : "\(Double(bitsPerSecond) / 1e6) Mbit/s"
        return
            "rate \(rate), one-way delay \(Double(oneWayDelayNanos) / 1e6) ms, queue \(ByteCount.format(Int64(queueLimit))), loss \(loss * 100)%, reorder \(reorder * 100)%\(cut ? ", CUT" : "")"
    }
}

/// What one direction of the link did so far.
public struct WANCounters: Sendable, Equatable {
    public var packetsIn: UInt64 = 0
    public var bytesIn: UInt64 = 0
    public var packetsOut: UInt64 = 0
    public var bytesOut: UInt64 = 0
    public var droppedQueue: UInt64 = 0
    public var droppedLoss: UInt64 = 0
    public var droppedCut: UInt64 = 0
    public var reordered: UInt64 = 0

    public init() {}
}

/// One direction of an emulated WAN link, as pure state (docs/wan.md): packets arrive at a time, wait in a bounded
/// queue drained at the link's rate (tail drop past its size), spend the one-way delay on the wire (some held back
/// longer, to be reordered), and leave at their departure time; some are lost at random, and all while the link is
/// cut. The caller brings packets and the clock, and takes what is due.
public struct WANPath<Packet> {
    public private(set) var settings: WANSettings
    public private(set) var counters = WANCounters()
    private var random: SeededRandom
    /// When the rate limit finishes sending what is queued now.
    private var queueFreeAt: UInt64 = 0
    /// Packets on the wire, by departure time.
    private var wire = DepartureHeap<Packet>()
    private var wireBytes = 0
    private var sequence: UInt64 = 0

    public init(settings: WANSettings, seed: UInt64) {
        self.settings = settings
        self.random = SeededRandom(seed: seed)
    }

    /// Bytes queued or on the wire.
    public var bytesInFlight: Int { wireBytes }

    /// Takes new settings; cutting the link drops everything on it.
    public mutating func apply(_ settings: WANSettings) {
        self.settings = settings
        if settings.cut {
            counters.droppedCut += UInt64(wire.count)
            wire.removeAll()
            wireBytes = 0
            queueFreeAt = 0
        }
    }

    /// A packet of `bytes` bytes arrives at `now` (nanoseconds, any monotonic clock).
    public mutating func arrive(_ packet: Packet, bytes: Int, at now: UInt64) {
        counters.packetsIn += 1
        counters.bytesIn += UInt64(bytes)
        if settings.cut {
            counters.droppedCut += 1
            return
        }
        if settings.loss > 0, Double(random.next() >> 11) / Double(1 << 53) < settings.loss {
            counters.droppedLoss += 1
            return
        }
        var leaves = now
        if settings.bitsPerSecond > 0 {
            let start = max(now, queueFreeAt)
            let queued = Double(start - now) * Double(settings.bitsPerSecond) / 8e9
            guard Int(queued) + bytes <= settings.queueLimit else {
                counters.droppedQueue += 1
                return
            }
            queueFreeAt = start + UInt64(Double(bytes) * 8e9 / Double(settings.bitsPerSecond))
            leaves = queueFreeAt
        }
        guard wireBytes + bytes <= WANSettings.inFlightBytesMax else {
            counters.droppedQueue += 1
            return
        }
        var departure = leaves + settings.oneWayDelayNanos
        if settings.reorder > 0, Double(random.next() >> 11) / Double(1 << 53) < settings.reorder {
            departure += settings.reorderNanos
            counters.reordered += 1
        }
        sequence += 1
        wire.insert(packet, at: departure, sequence: sequence, bytes: bytes)
        wireBytes += bytes
    }

    /// When the next packet is due, if any is on the wire.
    public var nextDeparture: UInt64? { wire.first }

    /// Hands over, in order, every packet due by `now`.
    public mutating func depart(until now: UInt64, _ body: (Packet) -> Void) {
        while let due = wire.first, due <= now {
            let (packet, bytes) = wire.removeFirst()
            wireBytes -= bytes
            counters.packetsOut += 1
            counters.bytesOut += UInt64(bytes)
            body(packet)
        }
    }
}

/// A binary min-heap of packets by departure time, then arrival order.
struct DepartureHeap<Packet> {
    private var entries: [(departure: UInt64, sequence: UInt64, bytes: Int, packet: Packet)] = []

    var count: Int { entries.count }
    var first: UInt64? { entries.first?.departure }

    mutating func removeAll() { entries.removeAll() }

    private func less(_ i: Int, _ j: Int) -> Bool {
        (entries[i].departure, entries[i].sequence) < (entries[j].departure, entries[j].sequence)
    }

    mutating func insert(_ packet: Packet, at departure: UInt64, sequence: UInt64, bytes: Int) {
        entries.append((departure, sequence, bytes, packet))
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard less(child, parent) else { break }
            entries.swapAt(child, parent)
            child = parent
        }
    }

    mutating func removeFirst() -> (Packet, Int) {
        entries.swapAt(0, entries.count - 1)
        let last = entries.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < entries.count, less(left, smallest) { smallest = left }
            if right < entries.count, less(right, smallest) { smallest = right }
            guard smallest != parent else { break }
            entries.swapAt(parent, smallest)
            parent = smallest
        }
        return (last.packet, last.bytes)
    }
}
