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

    /// What one port has in flight here: the bytes and messages taken from it whose outcomes have not gone back,
    /// and the bytes passed to it whose outcomes have not come back. One entry per port, so that a message costs
    /// one lookup per port it touches.
    public struct PortCounts: Sendable, Equatable {
        public var held: UInt64 = 0
        public var heldCount = 0
        public var outstanding: UInt64 = 0
        var isEmpty: Bool { held == 0 && heldCount == 0 && outstanding == 0 }
    }

    public private(set) var entries: [UInt64: Entry] = [:]
    public private(set) var ports: [FlowPort: PortCounts] = [:]
    /// Bytes taken from each upstream port whose outcome has not gone back.
    public var held: [FlowPort: UInt64] { ports.compactMapValues { $0.held == 0 ? nil : $0.held } }
    /// Bytes passed to each downstream port whose outcome has not come back.
    public var outstanding: [FlowPort: UInt64] { ports.compactMapValues { $0.outstanding == 0 ? nil : $0.outstanding } }
    /// Messages taken from each upstream port whose outcome has not gone back.
    public var heldCount: [FlowPort: Int] { ports.compactMapValues { $0.heldCount == 0 ? nil : $0.heldCount } }

    /// Messages taken from `port` whose outcome has not gone back.
    public func heldCount(from port: FlowPort) -> Int { ports[port]?.heldCount ?? 0 }

    public init() {}

    public var count: Int { entries.count }

    /// Bytes a small message of `length` body bytes counts against a budget: its body and a fixed allowance for its
    /// header. Both ends of a hop compute it the same way.
    public static func cost(length: UInt64) -> UInt64 { Limits.smallCost(length: length) }

    /// Takes message `id` from `upstream`, within `budget` (what this node advertised to that port).
    public mutating func take(_ id: UInt64, length: UInt64, from upstream: FlowPort, budget: UInt64) throws(Refusal) {
        let cost = Self.cost(length: length)
        // One lookup of the port (hashing it hashes a peer's name) and of the id.
        let port = ports.index(forKey: upstream)
        let before = port.map { ports.values[$0].held } ?? 0
        guard before + cost <= budget else { throw .overBudget(held: before + cost, budget: budget) }
        if let known = entries.updateValue(Entry(upstream: upstream, cost: cost), forKey: id) {
            entries[id] = known
            throw .duplicate
        }
        if let port {
            ports.values[port].take(cost)
        } else {
            ports[upstream] = PortCounts(held: cost, heldCount: 1)
        }
    }

    /// Passes message `id` on to `downstream` when its budget (what that port advertised) has room; false when it
    /// has none (the node answers RESEND).
    /// A message passed to an app of this node also keeps what its delivery report needs: the `endpoint` and the
    /// nodes it passed (`path`).
    public mutating func pass(
        _ id: UInt64, to downstream: FlowPort, budget: UInt64, endpoint: UInt64? = nil, path: [String] = []
    ) -> Bool {
        guard let index = entries.index(forKey: id) else { return false }
        // Read through a modify access: reading `entries.values[index]` copies the whole entry (a retain and a release
        // of its ports' names and its path), which cost more than the rest of this (perf).
        let (isNew, cost) = Self.modify(&entries.values[index]) { ($0.downstream == nil, $0.cost) }
        guard isNew else { return false }
        if let port = ports.index(forKey: downstream) {
            guard ports.values[port].pass(cost, within: budget) else { return false }
        } else {
            guard cost <= budget else { return false }
            ports[downstream] = PortCounts(outstanding: cost)
        }
        entries.values[index].downstream = downstream
        if let endpoint {
            entries.values[index].endpoint = endpoint
            entries.values[index].path = path
        }
        return true
    }

    private static func modify<T>(_ entry: inout Entry, _ body: (inout Entry) -> T) -> T { body(&entry) }

    /// Forgets message `id`, giving its bytes back to both budgets; returns its entry (whose upstream gets the
    /// outcome). Nil when it is not known here.
    public mutating func finish(_ id: UInt64) -> Entry? {
        guard let entry = entries.removeValue(forKey: id) else { return nil }
        return finish(entry)
    }

    /// Gives a removed entry's bytes back to both budgets.
    private mutating func finish(_ entry: Entry) -> Entry {
        release(entry.upstream) { $0.give(entry.cost) }
        if let downstream = entry.downstream {
            release(downstream) { $0.outstanding -= min(entry.cost, $0.outstanding) }
        }
        return entry
    }

    /// An outcome came from `port`: the entry, when the message went there (no port answers for another's message).
    public mutating func outcome(_ id: UInt64, from port: FlowPort) -> Entry? {
        // One lookup, and the entry moved out rather than copied to be checked (it goes back in the rare case that
        // it is not the port's).
        guard let index = entries.index(forKey: id) else { return nil }
        let entry = entries.remove(at: index).value
        guard entry.downstream == port else {
            entries[id] = entry
            return nil
        }
        return finish(entry)
    }

    /// Every message that came from or went to `port`, which is gone: those it sent are forgotten (their outcomes
    /// have nowhere to go), those sent to it are returned for their upstreams to be told.
    public mutating func portGone(_ port: FlowPort) -> [(id: UInt64, entry: Entry)] {
        var lost: [(UInt64, Entry)] = []
        for (id, entry) in entries where entry.upstream == port || entry.downstream == port {
            guard let entry = finish(id) else { continue }
            if entry.upstream != port { lost.append((id, entry)) }
        }
        ports[port] = nil
        return lost
    }

    /// Changes `port`'s counts in place, and forgets them once nothing is in flight there.
    private mutating func release(_ port: FlowPort, _ change: (inout PortCounts) -> Void) {
        guard let index = ports.index(forKey: port) else { return }
        change(&ports.values[index])
        if ports.values[index].isEmpty { ports.remove(at: index) }
    }
}

extension SmallLedger.PortCounts {
    mutating func take(_ cost: UInt64) {
        held += cost
        heldCount += 1
    }

    /// Counts `cost` more passed to this port when its budget has room.
    mutating func pass(_ cost: UInt64, within budget: UInt64) -> Bool {
        guard outstanding + cost <= budget else { return false }
        outstanding += cost
        return true
    }

    mutating func give(_ cost: UInt64) {
        held -= min(cost, held)
        heldCount -= min(1, heldCount)
    }
}
