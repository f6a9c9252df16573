import FreightCore

/// Patterns indexed by segment, as NATS's sublist: `match(address)` walks one path per wildcard branch, so its time
/// grows with the address's depth, not with the number of patterns stored.
public final class PatternTrie<Value: Hashable> {
    final class Level {
        var literal: [String: Level] = [:]
        var one: Level?
        /// Values whose pattern ends with `**` here.
        var rest: Set<Value> = []
        /// Values whose pattern ends exactly here.
        var terminal: Set<Value> = []

        var isEmpty: Bool { literal.isEmpty && one == nil && rest.isEmpty && terminal.isEmpty }
    }

    private let root = Level()
    public private(set) var count = 0

    public init() {}

    /// Adds `value` under `pattern`; returns false when it was there already.
    @discardableResult
    public func insert(_ pattern: AddressPattern, _ value: Value) -> Bool {
        var level = root
        for segment in pattern.segments {
            switch segment {
            case .literal(let text):
                if let next = level.literal[text] {
                    level = next
                } else {
                    let next = Level()
                    level.literal[text] = next
                    level = next
                }
            case .one:
                if let next = level.one {
                    level = next
                } else {
                    let next = Level()
                    level.one = next
                    level = next
                }
            case .rest:
                let inserted = level.rest.insert(value).inserted
                if inserted { count += 1 }
                return inserted
            }
        }
        let inserted = level.terminal.insert(value).inserted
        if inserted { count += 1 }
        return inserted
    }

    /// Removes `value` from under `pattern`, pruning levels left empty; returns false when it was not there.
    @discardableResult
    public func remove(_ pattern: AddressPattern, _ value: Value) -> Bool {
        let removed = Self.remove(pattern.segments[...], value, from: root)
        if removed { count -= 1 }
        return removed
    }

    private static func remove(_ segments: ArraySlice<AddressPattern.Segment>, _ value: Value, from level: Level)
        -> Bool
    {
        guard let head = segments.first else { return level.terminal.remove(value) != nil }
        switch head {
        case .rest:
            return level.rest.remove(value) != nil
        case .one:
            guard let next = level.one, remove(segments.dropFirst(), value, from: next) else { return false }
            if next.isEmpty { level.one = nil }
            return true
        case .literal(let text):
            guard let next = level.literal[text], remove(segments.dropFirst(), value, from: next) else { return false }
            if next.isEmpty { level.literal[text] = nil }
            return true
        }
    }

    /// Every value whose pattern matches `address`.
    public func match(_ address: Address) -> Set<Value> {
        var result: Set<Value> = []
        Self.collect(address.segments[...], level: root, into: &result)
        return result
    }

    private static func collect(_ segments: ArraySlice<String>, level: Level, into result: inout Set<Value>) {
        result.formUnion(level.rest)
        guard let head = segments.first else {
            result.formUnion(level.terminal)
            return
        }
        let tail = segments.dropFirst()
        if let next = level.literal[head] { collect(tail, level: next, into: &result) }
        if let next = level.one { collect(tail, level: next, into: &result) }
    }
}
