import FreightCore
import FreightDirectory

/// What identifies a route between sites: a pattern, the cluster whose endpoints serve it, and for a route to an
/// `any` group of that cluster, the group (its pattern receivers and each of its groups are routes of their own).
public struct RouteKey: Hashable, Sendable, CustomStringConvertible {
    public var pattern: AddressPattern
    public var origin: String
    public var group: RouteGroup?

    public init(_ pattern: AddressPattern, origin: String, group: RouteGroup? = nil) {
        self.pattern = pattern
        self.origin = origin
        self.group = group
    }

    public var description: String { "\(pattern)@\(origin)\(group.map { " (\($0))" } ?? "")" }
}

/// A route between sites (docs/gateways.md): `pattern`, served by `origin` (by its `group` when set), reached
/// through `path` (the clusters from the next one to the origin, which is last; empty for a cluster's own patterns)
/// at `cost` (microseconds, summed over the gateway links on the way).
public struct ClusterRoute: Hashable, Sendable, CustomStringConvertible {
    public var pattern: AddressPattern
    public var origin: String
    public var path: [String]
    public var cost: UInt64
    public var group: RouteGroup?

    public init(pattern: AddressPattern, origin: String, path: [String], cost: UInt64, group: RouteGroup? = nil) {
        self.pattern = pattern
        self.origin = origin
        self.path = path
        self.cost = cost
        self.group = group
    }

    public var key: RouteKey { RouteKey(pattern, origin: origin, group: group) }
    public var description: String {
        "\(pattern)\(group.map { " (\($0))" } ?? "") via [\(path.joined(separator: " "))] cost \(cost)"
    }
}

/// Routes one gateway announces and withdraws on one link. An empty one is a keepalive.
public struct RouteAdvertisement: Equatable, Sendable {
    public var announced: [ClusterRoute]
    public var withdrawn: [RouteKey]

    public init(announced: [ClusterRoute] = [], withdrawn: [RouteKey] = []) {
        self.announced = announced
        self.withdrawn = withdrawn
    }

    public var isEmpty: Bool { announced.isEmpty && withdrawn.isEmpty }
}

/// What a gateway link lets out (`exports`) and in (`imports`): a route is narrowed to each pattern it overlaps and
/// dropped where it overlaps none. Nothing by default, so a new gateway leaks nothing.
public struct RouteFilters: Equatable, Sendable {
    public var exports: [AddressPattern]
    public var imports: [AddressPattern]

    public init(exports: [AddressPattern] = [], imports: [AddressPattern] = []) {
        self.exports = exports
        self.imports = imports
    }

    /// Everything both ways: the links between the gateways of one cluster.
    public static let everything = RouteFilters(
        exports: [try! AddressPattern("**")], imports: [try! AddressPattern("**")])

    static func narrow(_ pattern: AddressPattern, by filters: [AddressPattern]) -> [AddressPattern] {
        var narrowed: [AddressPattern] = []
        for filter in filters {
            if let both = pattern.intersection(filter), !narrowed.contains(both) { narrowed.append(both) }
        }
        return narrowed
    }
}

/// What the owner of a ``RouteTable`` does for it.
public enum RouteAction: Equatable, Sendable {
    /// Send this advertisement on the link (an empty one keeps a quiet link alive).
    case advertise(link: Int, RouteAdvertisement)
    /// The link fell silent past the hold time, or announced more routes than allowed: close it. Its routes are
    /// withdrawn already.
    case closeLink(link: Int, reason: String)
}

/// The routes between sites that one gateway knows and chooses (docs/gateways.md): a path vector, as BGP's. Pure:
/// each event appends ``RouteAction``s, and time comes in with the events.
public struct RouteTable: Sendable {
    public struct Configuration: Sendable {
        public var cluster: String
        /// A link that was sent nothing for this long is sent an empty advertisement.
        public var keepaliveNanos: UInt64
        /// A link heard nothing from for this long is closed and its routes withdrawn.
        public var holdNanos: UInt64
        /// Changes go out on a link at most once per this interval, gathered (BGP's minimum route advertisement
        /// interval): while routes settle after a loss, a gateway does not announce every path it passes through.
        public var advertiseIntervalNanos: UInt64
        public var routesPerLinkMax: Int
        public var pathMax: Int
        public var aggregation: RouteAggregation
        /// What the hop to another gateway of this cluster adds to a route it reaches (microseconds): a gateway
        /// prefers its own links to the same cluster at equal cost.
        public var internalCost: UInt64

        public init(
            cluster: String, keepaliveNanos: UInt64 = 1_000_000_000, holdNanos: UInt64 = 3_000_000_000,
            advertiseIntervalNanos: UInt64 = 100_000_000, routesPerLinkMax: Int = Limits.routesPerLinkMax,
            pathMax: Int = Limits.clusterPathMax,
            aggregation: RouteAggregation = RouteAggregation(), internalCost: UInt64 = 1_000
        ) {
            self.cluster = cluster
            self.keepaliveNanos = keepaliveNanos
            self.holdNanos = holdNanos
            self.advertiseIntervalNanos = advertiseIntervalNanos
            self.routesPerLinkMax = routesPerLinkMax
            self.pathMax = pathMax
            self.aggregation = aggregation
            self.internalCost = internalCost
        }
    }

    /// The route chosen for a key, and the link it was learned on (nil: the cluster's own).
    public struct Choice: Equatable, Sendable {
        public var route: ClusterRoute
        public var link: Int?
    }

    /// A gateway link, as the table knows it.
    public struct LinkInfo: Equatable, Sendable {
        public var peer: String
        public var cost: UInt64
        public var filters: RouteFilters
        public var routesLearned: Int
        public var routesSent: Int
    }

    struct Link {
        var peer: String
        var cost: UInt64
        var filters: RouteFilters
        var isInternal: Bool
        /// False for a link the cluster's directory carries (``directoryRoutes(_:of:now:into:)``): no keepalives,
        /// no hold time, nothing advertised on it.
        var isTimed: Bool = true
        var lastHeard: UInt64
        var lastSent: UInt64
        /// Chosen keys changed since the last advertisement on this link, waiting for its interval to end.
        var pending: Set<RouteKey> = []
        var lastAdvertised: UInt64?
        /// Routes as the peer announced them, by the peer's key.
        var received: [RouteKey: ClusterRoute] = [:]
        /// Received key → the keys it was narrowed to by the imports; and back.
        var importedAs: [RouteKey: [RouteKey]] = [:]
        var importedFrom: [RouteKey: Set<RouteKey>] = [:]
        /// What this table announced on the link, by announced key; which chosen keys each came from; and back.
        var sent: [RouteKey: ClusterRoute] = [:]
        var exportedAs: [RouteKey: [RouteKey]] = [:]
        var exportedFrom: [RouteKey: Set<RouteKey>] = [:]
    }

    public let configuration: Configuration
    public var cluster: String { configuration.cluster }
    /// The cluster's own patterns, aggregated.
    public private(set) var served: Set<AddressPattern> = []
    /// The cluster's own `any` groups.
    public private(set) var servedGroups: Set<RouteGroup> = []
    var links: [Int: Link] = [:]
    /// Per key, the candidate learned on each link (cost as announced, the link's own not added).
    var candidates: [RouteKey: [Int: ClusterRoute]] = [:]
    public private(set) var chosen: [RouteKey: Choice] = [:]
    /// Per key, the best route over this gateway's own links to other clusters (not through another gateway of this
    /// cluster): what it puts in the cluster's directory and carries messages on, chosen or not.
    public private(set) var reach: [RouteKey: Choice] = [:]
    /// Counts the changes of `chosen`: an owner that mirrors the choice elsewhere (a gateway's directory endpoints)
    /// compares it instead of the whole table.
    public private(set) var choiceVersion: UInt64 = 0

    public init(_ configuration: Configuration) {
        self.configuration = configuration
    }

    // MARK: events

    /// The patterns the cluster's pattern receivers serve and its `any` groups (from its directory); the patterns
    /// are aggregated first, the groups kept whole (at most `aggregation.groupsMax`, by name).
    public mutating func serve(
        _ patterns: [AddressPattern], groups: [RouteGroup] = [], now: UInt64, into actions: inout [RouteAction]
    ) {
        let next = Set(configuration.aggregation.aggregate(patterns))
        let nextGroups = Set(Set(groups).sorted().prefix(configuration.aggregation.groupsMax))
        var dirty = Set<RouteKey>()
        for pattern in served.symmetricDifference(next) { dirty.insert(RouteKey(pattern, origin: cluster)) }
        for group in servedGroups.symmetricDifference(nextGroups) {
            dirty.insert(RouteKey(group.pattern, origin: cluster, group: group))
        }
        served = next
        servedGroups = nextGroups
        choose(dirty, now: now, into: &actions)
    }

    /// What another gateway of this cluster reaches over its own links (the routes it put in the cluster's
    /// directory), all of it each time; `id` names that gateway among the table's links. The directory carries this
    /// link: it has no keepalives and no hold time (a gateway that is gone leaves the directory, and an empty list
    /// takes the link down), and nothing is advertised on it (this gateway's own reach goes into the directory).
    public mutating func directoryRoutes(
        _ routes: [ClusterRoute], of id: Int, now: UInt64, into actions: inout [RouteAction]
    ) {
        guard !routes.isEmpty else { return linkDown(id, now: now, into: &actions) }
        if links[id] == nil {
            links[id] = Link(
                peer: cluster, cost: configuration.internalCost, filters: .everything, isInternal: true,
                isTimed: false, lastHeard: now, lastSent: now)
        }
        var advertisement = RouteAdvertisement()
        var next: [RouteKey: ClusterRoute] = [:]
        for route in routes where next[route.key] == nil { next[route.key] = route }
        for key in links[id]!.received.keys where next[key] == nil { advertisement.withdrawn.append(key) }
        for (key, route) in next where links[id]!.received[key] != route { advertisement.announced.append(route) }
        guard !advertisement.isEmpty else { return }
        received(advertisement, on: id, now: now, into: &actions)
    }

    /// A gateway link came up to a gateway of `peer` (the cluster its certificate proved; this table's own cluster
    /// for another gateway of it). Everything its exports let out is announced on it.
    public mutating func linkUp(
        _ id: Int, peer: String, cost: UInt64, filters: RouteFilters, now: UInt64, into actions: inout [RouteAction]
    ) {
        if links[id] != nil { linkDown(id, now: now, into: &actions) }
        links[id] = Link(
            peer: peer, cost: cost, filters: filters, isInternal: peer == cluster, lastHeard: now, lastSent: now)
        advertise(Set(chosen.keys), on: id, now: now, into: &actions, always: true)
    }

    /// The link's measured cost changed: routes through it are chosen again.
    public mutating func linkCost(_ id: Int, cost: UInt64, now: UInt64, into actions: inout [RouteAction]) {
        guard links[id] != nil, links[id]!.cost != cost else { return }
        links[id]!.cost = cost
        choose(Set(links[id]!.importedFrom.keys), now: now, into: &actions)
    }

    /// The link closed: every route learned over it is withdrawn.
    public mutating func linkDown(_ id: Int, now: UInt64, into actions: inout [RouteAction]) {
        guard let link = links.removeValue(forKey: id) else { return }
        var dirty = Set<RouteKey>()
        for key in link.importedFrom.keys {
            candidates[key]?[id] = nil
            if candidates[key]?.isEmpty == true { candidates[key] = nil }
            dirty.insert(key)
        }
        choose(dirty, now: now, into: &actions)
    }

    /// An advertisement arrived on the link.
    public mutating func received(
        _ advertisement: RouteAdvertisement, on id: Int, now: UInt64, into actions: inout [RouteAction]
    ) {
        guard var link = links[id] else { return }
        link.lastHeard = now
        var dirty = Set<RouteKey>()
        for key in advertisement.withdrawn { forget(key, on: &link, dirty: &dirty) }
        for route in advertisement.announced {
            forget(route.key, on: &link, dirty: &dirty)
            guard accepts(route, from: link) else { continue }
            link.received[route.key] = route
            let imported = RouteFilters.narrow(route.pattern, by: link.filters.imports).map {
                RouteKey($0, origin: route.origin, group: route.group)
            }
            link.importedAs[route.key] = imported
            for key in imported { link.importedFrom[key, default: []].insert(route.key) }
            dirty.formUnion(imported)
        }
        let overLimit = link.received.count > configuration.routesPerLinkMax
        links[id] = link
        for key in dirty { refreshCandidate(key, on: id) }
        if overLimit {
            actions.append(
                .closeLink(
                    link: id,
                    reason: "gateway of \(link.peer) announced over \(configuration.routesPerLinkMax) routes"))
            linkDown(id, now: now, into: &actions)
            return
        }
        choose(dirty, now: now, into: &actions)
    }

    /// The hold timer, gathered advertisements and keepalives.
    public mutating func tick(now: UInt64, into actions: inout [RouteAction]) {
        for id in links.keys.sorted() where links[id]!.isTimed {
            flush(id, now: now, into: &actions)
            guard let link = links[id] else { continue }
            if now >= Self.after(link.lastHeard, configuration.holdNanos) {
                actions.append(.closeLink(link: id, reason: "gateway of \(link.peer) silent past the hold time"))
                linkDown(id, now: now, into: &actions)
            } else if now >= Self.after(link.lastSent, configuration.keepaliveNanos) {
                links[id]!.lastSent = now
                actions.append(.advertise(link: id, RouteAdvertisement()))
            }
        }
    }

    // MARK: queries

    /// The chosen route to the pattern receivers of each cluster that serves `address`, least cost first: one per
    /// origin.
    public func routes(to address: Address) -> [Choice] {
        var best: [String: Choice] = [:]
        for (key, choice) in chosen where key.origin != cluster && key.group == nil && key.pattern.matches(address) {
            if let known = best[key.origin], !Self.better(choice.route, than: known.route) { continue }
            best[key.origin] = choice
        }
        return best.values.sorted { Self.better($0.route, than: $1.route) }
    }

    /// The links and what each carries, for `freight status`.
    public var linkInfo: [Int: LinkInfo] {
        links.filter(\.value.isTimed).mapValues {
            LinkInfo(
                peer: $0.peer, cost: $0.cost, filters: $0.filters, routesLearned: $0.received.count,
                routesSent: $0.sent.count)
        }
    }

    // MARK: choosing

    /// A route from a peer is taken only when its path is whole and free of loops: it starts at the peer's cluster
    /// (for a link between clusters), ends at its origin, names no cluster twice and not this one.
    private func accepts(_ route: ClusterRoute, from link: Link) -> Bool {
        guard let last = route.path.last, last == route.origin, route.path.count <= configuration.pathMax else {
            return false
        }
        if !link.isInternal && route.path.first != link.peer { return false }
        if route.path.contains(cluster) { return false }
        return Set(route.path).count == route.path.count
    }

    private func forget(_ key: RouteKey, on link: inout Link, dirty: inout Set<RouteKey>) {
        guard link.received.removeValue(forKey: key) != nil else { return }
        for imported in link.importedAs.removeValue(forKey: key) ?? [] {
            link.importedFrom[imported]?.remove(key)
            if link.importedFrom[imported]?.isEmpty == true { link.importedFrom[imported] = nil }
            dirty.insert(imported)
        }
    }

    /// The link's candidate for `key`: the cheapest of the routes it announced that were narrowed to it.
    private mutating func refreshCandidate(_ key: RouteKey, on id: Int) {
        guard let link = links[id] else { return }
        var best: ClusterRoute?
        for source in link.importedFrom[key] ?? [] {
            guard var route = link.received[source] else { continue }
            route.pattern = key.pattern
            if best.map({ Self.better(route, than: $0) }) ?? true { best = route }
        }
        candidates[key, default: [:]][id] = best
        if candidates[key]?.isEmpty == true { candidates[key] = nil }
    }

    /// Chooses again for every key in `dirty` and announces or withdraws what changed on every link.
    private mutating func choose(_ dirty: Set<RouteKey>, now: UInt64, into actions: inout [RouteAction]) {
        guard !dirty.isEmpty else { return }
        var changed = Set<RouteKey>()
        for key in dirty {
            let next = choice(for: key)
            if next != chosen[key] {
                chosen[key] = next
                choiceVersion &+= 1
                changed.insert(key)
            }
            let nextReach = key.origin == cluster ? nil : choice(for: key, externalOnly: true)
            if nextReach != reach[key] {
                reach[key] = nextReach
                choiceVersion &+= 1
                changed.insert(key)
            }
        }
        guard !changed.isEmpty else { return }
        for id in links.keys.sorted() where links[id]!.isTimed {
            links[id]!.pending.formUnion(changed)
            flush(id, now: now, into: &actions)
        }
    }

    /// Sends what is pending on the link unless its advertisement interval has not ended yet (then ``tick`` does).
    private mutating func flush(_ id: Int, now: UInt64, into actions: inout [RouteAction]) {
        guard let link = links[id], !link.pending.isEmpty else { return }
        if let last = link.lastAdvertised, now < Self.after(last, configuration.advertiseIntervalNanos) { return }
        links[id]!.pending = []
        advertise(link.pending, on: id, now: now, into: &actions, always: false)
    }

    /// True when nothing waits to be advertised (a simulation runs until every table is quiet).
    public var isQuiet: Bool { links.values.allSatisfy { !$0.isTimed || $0.pending.isEmpty } }

    /// When the next ``tick`` has something to do: a pending advertisement, a keepalive or a hold time.
    public var nextDeadline: UInt64? {
        links.values.filter(\.isTimed).map { link in
            var deadline = min(
                Self.after(link.lastSent, configuration.keepaliveNanos),
                Self.after(link.lastHeard, configuration.holdNanos))
            if !link.pending.isEmpty {
                deadline = min(deadline, Self.after(link.lastAdvertised ?? 0, configuration.advertiseIntervalNanos))
            }
            return deadline
        }.min()
    }

    /// `time + interval`, or the end of time.
    static func after(_ time: UInt64, _ interval: UInt64) -> UInt64 {
        let (sum, overflow) = time.addingReportingOverflow(interval)
        return overflow ? .max : sum
    }

    /// The best candidate for `key` (with `externalOnly`, over links to other clusters only).
    private func choice(for key: RouteKey, externalOnly: Bool = false) -> Choice? {
        if key.origin == cluster {
            let serves =
                if let group = key.group { servedGroups.contains(group) && key.pattern == group.pattern } else {
                    served.contains(key.pattern)
                }
            return serves
                ? Choice(
                    route: ClusterRoute(pattern: key.pattern, origin: cluster, path: [], cost: 0, group: key.group),
                    link: nil)
                : nil
        }
        var best: Choice?
        for (id, candidate) in candidates[key] ?? [:] {
            guard let link = links[id], !(externalOnly && link.isInternal) else { continue }
            var route = candidate
            // Saturating: a peer announcing a cost near the end of the range does not wrap to a cheap one.
            route.cost = Self.after(candidate.cost, link.cost)
            let choice = Choice(route: route, link: id)
            if let known = best {
                if Self.better(route, than: known.route) || (route == known.route && id < known.link!) { best = choice }
            } else {
                best = choice
            }
        }
        return best
    }

    /// Least cost, then the shorter path, then the path's names (so that every table breaks a tie the same way).
    static func better(_ a: ClusterRoute, than b: ClusterRoute) -> Bool {
        if a.cost != b.cost { return a.cost < b.cost }
        if a.path.count != b.path.count { return a.path.count < b.path.count }
        return a.path.lexicographicallyPrecedes(b.path)
    }

    /// What `chosen[key]` puts on the link: the route narrowed to its exports, this cluster first on its path.
    private func exported(_ key: RouteKey, on id: Int, link: Link) -> [ClusterRoute] {
        if link.isInternal {
            // Gateways of one cluster pass each other what they reach over their own links, as it is (as the
            // directory does); the cluster's own patterns each of them serves from the directory.
            return reach[key].map { [$0.route] } ?? []
        }
        guard let choice = chosen[key] else { return [] }
        if choice.link == id || choice.route.path.contains(link.peer) { return [] }
        let path = [cluster] + choice.route.path
        guard path.count <= configuration.pathMax else { return [] }
        return RouteFilters.narrow(key.pattern, by: link.filters.exports).map {
            ClusterRoute(pattern: $0, origin: key.origin, path: path, cost: choice.route.cost, group: key.group)
        }
    }

    /// Brings what the link holds of `keys` up to date, and appends the difference (or, with `always`, at least an
    /// empty advertisement: a link that just came up hears from this side at once).
    private mutating func advertise(
        _ keys: Set<RouteKey>, on id: Int, now: UInt64, into actions: inout [RouteAction], always: Bool
    ) {
        guard var link = links[id] else { return }
        var touched = Set<RouteKey>()
        for key in keys {
            let next = exported(key, on: id, link: link)
            for old in link.exportedAs.removeValue(forKey: key) ?? [] {
                link.exportedFrom[old]?.remove(key)
                if link.exportedFrom[old]?.isEmpty == true { link.exportedFrom[old] = nil }
                touched.insert(old)
            }
            if !next.isEmpty { link.exportedAs[key] = next.map(\.key) }
            for route in next {
                link.exportedFrom[route.key, default: []].insert(key)
                touched.insert(route.key)
            }
        }
        var advertisement = RouteAdvertisement()
        for announced in touched {
            // Several chosen keys may narrow to one announced key: the cheapest of them is what is announced.
            var best: ClusterRoute?
            for source in link.exportedFrom[announced] ?? [] {
                for route in exported(source, on: id, link: link) where route.key == announced {
                    if best.map({ Self.better(route, than: $0) }) ?? true { best = route }
                }
            }
            if best == link.sent[announced] { continue }
            if let best {
                link.sent[announced] = best
                advertisement.announced.append(best)
            } else {
                link.sent[announced] = nil
                advertisement.withdrawn.append(announced)
            }
        }
        if !advertisement.isEmpty || always {
            link.lastSent = now
            link.lastAdvertised = now
            actions.append(.advertise(link: id, advertisement))
        }
        links[id] = link
    }
}
