import FreightCore

/// Folds the patterns a cluster serves into few where many share a prefix (docs/gateways.md): a prefix with more
/// than `fanoutMax` patterns under it becomes `prefix/**`, deepest prefixes first; while more than `patternsMax`
/// remain, the fan-out allowed is halved. A cluster with 100,000 endpoints under `ckpt/eu/` announces `ckpt/eu/**`.
/// No prefix is folded to `**` whole: patterns that begin with a wildcard stay as they are.
public struct RouteAggregation: Sendable {
    public var fanoutMax: Int
    public var patternsMax: Int
    /// `any` groups a cluster announces at most (they are not folded: each is a route of its own).
    public var groupsMax: Int

    public init(fanoutMax: Int = 16, patternsMax: Int = 256, groupsMax: Int = 256) {
        self.fanoutMax = max(1, fanoutMax)
        self.patternsMax = max(1, patternsMax)
        self.groupsMax = max(0, groupsMax)
    }

    public func aggregate(_ patterns: [AddressPattern]) -> [AddressPattern] {
        var root = Node()
        for pattern in Set(patterns) { root.insert(pattern) }
        var fanout = fanoutMax
        var result = root.folded(prefix: [], fanoutMax: fanout)
        while result.count > patternsMax && fanout > 1 {
            fanout /= 2
            result = root.folded(prefix: [], fanoutMax: fanout)
        }
        return result.sorted { $0.description < $1.description }
    }

    /// A trie of the patterns' leading literal segments.
    struct Node {
        var children: [String: Node] = [:]
        /// Patterns whose leading literals end here (the next segment is a wildcard, or there is none).
        var ending: [AddressPattern] = []

        mutating func insert(_ pattern: AddressPattern, depth: Int = 0) {
            if depth < pattern.segments.count, case .literal(let name) = pattern.segments[depth] {
                children[name, default: Node()].insert(pattern, depth: depth + 1)
            } else {
                ending.append(pattern)
            }
        }

        func folded(prefix: [String], fanoutMax: Int) -> [AddressPattern] {
            let rest = prefix.isEmpty ? nil : try? AddressPattern(prefix.joined(separator: "/") + "/**")
            // `prefix/**` itself covers everything beneath.
            if let rest, ending.contains(rest) { return [rest] }
            var patterns = ending
            for name in children.keys.sorted() {
                patterns += children[name]!.folded(prefix: prefix + [name], fanoutMax: fanoutMax)
            }
            if let rest, patterns.count > fanoutMax { return [rest] }
            return patterns
        }
    }
}
