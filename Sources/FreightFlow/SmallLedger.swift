import FreightCore

/// What a node knows of the SMALL messages passing it (docs/small-messages-and-files.md): for each, where it came
/// from and where it went, and for each port the bytes counted against its eager budget each way. Pure: the node
/// carries out what it says.
///
/// A small message holds no bytes here: the node passes it on at once or answers RESEND. What it keeps until the
/// outcome comes back is this entry, so every port's entries are bounded by its budget.
public struct SmallLedger: Sendable {
    public struct Entry: Sendable {
        public var upstream: FlowPort
        public var downstream: FlowPort?
        public var cost: UInt64
        /// When it was passed to an app of this node: the endpoint, and the nodes it passed (for the delivery
        /// report).
        public var endpoint: UInt64 = 0
        public var path: [String] = []
    }

    public enum Refusal: Error, Equatable {
        /// The sender went past the budget this node advertised to it: a protocol violation.
        case overBudget(held: UInt64, budget: UInt64)
        /// A message with this id is in flight here already.
        case duplicate
    }

    public private(set) var entries: [UInt64: Entry] = [:]
    /// Bytes taken from each upstream port whose outcome has not gone back.
    public private(set) var held: [FlowPort: UInt64] = [:]
    /// Bytes passed to each downstream port whose outcome has not come back.
    public private(set) var outstanding: [FlowPort: UInt64] = [:]
    /// Messages taken from each upstream port whose outcome has not gone back.
    public private(set) var heldCount: [FlowPort: Int] = [:]

    public init() {}

    public var count: Int { entries.count }

    /// Bytes a small message of `length` body bytes counts against a budget: its body and a fixed allowance for its
    /// header. Both ends of a hop compute it the same way.
    public static func cost(length: UInt64) -> UInt64 { Limits.smallCost(length: length) }

    /// Takes message `id` from `upstream`, within `budget` (what this node advertised to that port).
    public mutating func take(_ id: UInt64, length: UInt64, from upstream: FlowPort, budget: UInt64) throws(Refusal) {
        let cost = Self.cost(length: length)
        let before = held[upstream, default: 0]
        guard before + cost <= budget else { throw .overBudget(held: before + cost, budget: budget) }
        guard entries[id] == nil else { throw .duplicate }
        entries[id] = Entry(upstream: upstream, cost: cost)
        held[upstream] = before + cost
        heldCount[upstream, default: 0] += 1
    }

    /// Passes message `id` on to `downstream` when its budget (what that port advertised) has room; false when it
    /// has none (the node answers RESEND).
    public mutating func pass(_ id: UInt64, to downstream: FlowPort, budget: UInt64) -> Bool {
        guard var entry = entries[id], entry.downstream == nil else { return false }
        let before = outstanding[downstream, default: 0]
        guard before + entry.cost <= budget else { return false }
        outstanding[downstream] = before + entry.cost
        entry.downstream = downstream
        entries[id] = entry
        return true
    }

    /// Notes what a delivery report needs for a message passed to an app of this node.
    public mutating func note(_ id: UInt64, endpoint: UInt64, path: [String]) {
        entries[id]?.endpoint = endpoint
        entries[id]?.path = path
    }

    /// Forgets message `id`, giving its bytes back to both budgets; returns its entry (whose upstream gets the
    /// outcome). Nil when it is not known here.
    public mutating func finish(_ id: UInt64) -> Entry? {
        guard let entry = entries.removeValue(forKey: id) else { return nil }
        Self.release(&held, entry.upstream, entry.cost)
        Self.release(&heldCount, entry.upstream, 1)
        if let downstream = entry.downstream { Self.release(&outstanding, downstream, entry.cost) }
        return entry
    }

    /// An outcome came from `port`: the entry, when the message went there (no port answers for another's message).
    public mutating func outcome(_ id: UInt64, from port: FlowPort) -> Entry? {
        guard entries[id]?.downstream == port else { return nil }
        return finish(id)
    }

    /// Every message that came from or went to `port`, which is gone: those it sent are forgotten (their outcomes
    /// have nowhere to go), those sent to it are returned for their upstreams to be told.
    public mutating func portGone(_ port: FlowPort) -> [(id: UInt64, entry: Entry)] {
        var lost: [(UInt64, Entry)] = []
        for (id, entry) in entries where entry.upstream == port || entry.downstream == port {
            guard let entry = finish(id) else { continue }
            if entry.upstream != port { lost.append((id, entry)) }
        }
        held[port] = nil
        heldCount[port] = nil
        outstanding[port] = nil
        return lost
    }

    private static func release<Count: FixedWidthInteger>(
        _ table: inout [FlowPort: Count], _ port: FlowPort, _ amount: Count
    ) {
        let left = table[port, default: 0] - min(amount, table[port, default: 0])
        table[port] = left == 0 ? nil : left
    }
}
