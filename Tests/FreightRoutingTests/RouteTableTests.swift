import Foundation
import FreightCore
import FreightDirectory
import Testing

@testable import FreightRouting

/// Clusters joined by gateway links, one gateway each (or several: ``addInternal``), every advertisement carried by
/// a simulated network in time order with a seeded delay per message and in order on each link.
struct RouteNetwork {
    struct Edge {
        var a: String
        var b: String
        var cost: UInt64
    }

    struct InFlight {
        var at: UInt64
        var sequence: Int
        var to: String
        var link: Int
        var advertisement: RouteAdvertisement
    }

    var tables: [String: RouteTable] = [:]
    var edges: [Int: Edge] = [:]
    var queue = Heap()
    var lastDelivery: [String: UInt64] = [:]  // per direction of a link: "link>to"
    var random: SeededRandom
    var now: UInt64 = 0
    var sequence = 0
    var delivered = 0
    var closed: [(link: Int, reason: String)] = []
    /// Tables with advertisements gathered and waiting, and when they are due.
    var due: [String: UInt64] = [:]

    init(seed: UInt64) { random = SeededRandom(seed: seed) }

    static func pattern(_ text: String) -> AddressPattern { try! AddressPattern(text) }

    /// A gateway named `name` of cluster `cluster` serving `patterns`.
    mutating func add(_ name: String, cluster: String? = nil, serving patterns: [String]) {
        // Keepalives and hold times are tested on their own: here links never fall silent.
        tables[name] = RouteTable(.init(cluster: cluster ?? name, keepaliveNanos: 1 << 60, holdNanos: 1 << 61))
        var actions: [RouteAction] = []
        tables[name]!.serve(patterns.map(Self.pattern), now: now, into: &actions)
        carry(actions, from: name)
    }

    mutating func serve(_ name: String, _ patterns: [String]) {
        var actions: [RouteAction] = []
        tables[name]!.serve(patterns.map(Self.pattern), now: now, into: &actions)
        carry(actions, from: name)
    }

    /// A gateway link between `a` and `b` (exporting and importing everything unless told otherwise).
    mutating func link(
        _ id: Int, _ a: String, _ b: String, cost: UInt64, filters: RouteFilters = .everything,
        back: RouteFilters? = nil
    ) {
        edges[id] = Edge(a: a, b: b, cost: cost)
        for (side, other, sideFilters) in [(a, b, filters), (b, a, back ?? filters)] {
            var actions: [RouteAction] = []
            tables[side]!.linkUp(
                id, peer: tables[other]!.cluster, cost: cost, filters: sideFilters, now: now, into: &actions)
            carry(actions, from: side)
        }
    }

    mutating func cut(_ id: Int) {
        guard let edge = edges.removeValue(forKey: id) else { return }
        for side in [edge.a, edge.b] {
            var actions: [RouteAction] = []
            tables[side]?.linkDown(id, now: now, into: &actions)
            carry(actions, from: side)
        }
    }

    mutating func setCost(_ id: Int, _ cost: UInt64) {
        guard let edge = edges[id] else { return }
        edges[id]!.cost = cost
        for side in [edge.a, edge.b] {
            var actions: [RouteAction] = []
            tables[side]!.linkCost(id, cost: cost, now: now, into: &actions)
            carry(actions, from: side)
        }
    }

    mutating func carry(_ actions: [RouteAction], from name: String) {
        if let table = tables[name], !table.isQuiet { due[name] = table.nextDeadline } else { due[name] = nil }
        for action in actions {
            switch action {
            case .advertise(let id, let advertisement):
                guard let edge = edges[id] else { continue }
                let to = edge.a == name ? edge.b : edge.a
                let direction = "\(id)>\(to)"
                // A message takes about the link's cost (its round trip, mostly) in microseconds, with a jitter of
                // up to a fifth either way, and stays in order on its link.
                let base = edge.cost * 1_000
                let delay = base - base / 5 + random.next(in: 0...(2 * base / 5))
                let at = max(lastDelivery[direction] ?? 0, now + delay)
                lastDelivery[direction] = at
                sequence += 1
                queue.push(InFlight(at: at, sequence: sequence, to: to, link: id, advertisement: advertisement))
            case .closeLink(let id, let reason):
                closed.append((id, reason))
                cut(id)
            }
        }
    }

    /// Delivers until nothing is in flight; returns false when `limit` messages did not do.
    @discardableResult
    mutating func run(limit: Int = 200_000) -> Bool {
        var count = 0
        while true {
            // The earliest of the next message and the next deadline of a table (gathered advertisements).
            if let (_, deadline) = due.min(by: { $0.value < $1.value }), deadline <= queue.first?.at ?? .max {
                now = max(now, deadline)
                for name in due.keys.sorted() {
                    var actions: [RouteAction] = []
                    tables[name]?.tick(now: now, into: &actions)
                    carry(actions, from: name)
                }
                continue
            }
            guard let message = queue.pop() else { return true }
            count += 1
            if count > limit { return false }
            now = max(now, message.at)
            guard edges[message.link] != nil, tables[message.to] != nil else { continue }
            delivered += 1
            var actions: [RouteAction] = []
            tables[message.to]!.received(message.advertisement, on: message.link, now: now, into: &actions)
            carry(actions, from: message.to)
        }
    }

    /// Least cost from every gateway to every other, over the links that stand (Dijkstra), by gateway name.
    func shortest(from source: String) -> [String: UInt64] {
        var distance = [source: UInt64(0)]
        var done = Set<String>()
        while let (node, cost) = distance.filter({ !done.contains($0.key) }).min(by: { $0.value < $1.value }) {
            done.insert(node)
            for edge in edges.values where edge.a == node || edge.b == node {
                let other = edge.a == node ? edge.b : edge.a
                let through = cost + edge.cost
                if through < distance[other] ?? .max { distance[other] = through }
            }
        }
        return distance
    }
}

/// Messages in flight, earliest first (a binary heap).
struct Heap {
    private var items: [RouteNetwork.InFlight] = []

    var count: Int { items.count }
    var first: RouteNetwork.InFlight? { items.first }

    private func earlier(_ i: Int, _ j: Int) -> Bool {
        (items[i].at, items[i].sequence) < (items[j].at, items[j].sequence)
    }

    mutating func push(_ item: RouteNetwork.InFlight) {
        items.append(item)
        var child = items.count - 1
        while child > 0, earlier(child, (child - 1) / 2) {
            items.swapAt(child, (child - 1) / 2)
            child = (child - 1) / 2
        }
    }

    mutating func pop() -> RouteNetwork.InFlight? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let first = items.removeLast()
        var parent = 0
        while true {
            let (left, right) = (2 * parent + 1, 2 * parent + 2)
            var least = parent
            if left < items.count, earlier(left, least) { least = left }
            if right < items.count, earlier(right, least) { least = right }
            if least == parent { return first }
            items.swapAt(parent, least)
            parent = least
        }
    }
}

/// `RouteTable` (docs/gateways.md): path vector routes between sites, checked on simulated topologies.
@Suite struct RouteTableTests {
    static func address(_ text: String) -> Address { try! Address(text) }

    @Test func aChainRoutesAToCThroughB() {
        var network = RouteNetwork(seed: 1)
        network.add("A", serving: ["jobs/a/**"])
        network.add("B", serving: ["jobs/b/**"])
        network.add("C", serving: ["ckpt/eu/**"])
        network.link(1, "A", "B", cost: 100)
        network.link(2, "B", "C", cost: 50)
        let quiet1 = network.run()
        #expect(quiet1)
        let routes = network.tables["A"]!.routes(to: Self.address("ckpt/eu/step-9"))
        #expect(routes.count == 1)
        #expect(routes.first?.route.path == ["B", "C"])
        #expect(routes.first?.route.cost == 150)
        #expect(routes.first?.link == 1)
        // C reaches A's patterns the other way; nobody routes to its own patterns.
        #expect(network.tables["C"]!.routes(to: Self.address("jobs/a/x")).first?.route.path == ["B", "A"])
        #expect(network.tables["C"]!.routes(to: Self.address("ckpt/eu/x")).isEmpty)
        #expect(network.tables["A"]!.routes(to: Self.address("nothing/here")).isEmpty)
        // The choice's version moves with the choice, and only with it (a gateway mirrors the choice by it).
        let version = network.tables["A"]!.choiceVersion
        #expect(version > 0)
        network.serve("C", ["ckpt/eu/**"])
        let quiet2 = network.run()
        #expect(quiet2)
        #expect(network.tables["A"]!.choiceVersion == version, "nothing changed")
        network.serve("C", ["ckpt/eu/**", "ckpt/us/**"])
        let quiet3 = network.run()
        #expect(quiet3)
        #expect(network.tables["A"]!.choiceVersion > version)
    }

    @Test func anAdvertisementThatHoldsTheReceiverIsDropped() {
        var table = RouteTable(.init(cluster: "A"))
        var actions: [RouteAction] = []
        table.linkUp(1, peer: "B", cost: 10, filters: .everything, now: 0, into: &actions)
        let looped = ClusterRoute(pattern: RouteNetwork.pattern("x/**"), origin: "C", path: ["B", "A", "C"], cost: 5)
        let forged = ClusterRoute(pattern: RouteNetwork.pattern("y/**"), origin: "C", path: ["D", "C"], cost: 5)
        let broken = ClusterRoute(pattern: RouteNetwork.pattern("z/**"), origin: "C", path: ["B", "D"], cost: 5)
        let twice = ClusterRoute(
            pattern: RouteNetwork.pattern("w/**"), origin: "C", path: ["B", "D", "B", "C"], cost: 5)
        let good = ClusterRoute(pattern: RouteNetwork.pattern("v/**"), origin: "C", path: ["B", "C"], cost: 5)
        table.received(
            RouteAdvertisement(announced: [looped, forged, broken, twice, good]), on: 1, now: 1, into: &actions)
        #expect(table.chosen.keys.map(\.description) == ["v/**@C"])
        #expect(table.chosen.values.first?.route.cost == 15)
    }

    /// Default filters export nothing; exports and imports narrow what crosses, both ways.
    @Test func filtersNarrowWhatCrossesAndTheDefaultLeaksNothing() {
        var network = RouteNetwork(seed: 2)
        network.add("A", serving: ["ckpt/**", "secret/**"])
        network.add("B", serving: ["results/**", "internal/**"])
        network.link(1, "A", "B", cost: 10, filters: RouteFilters(), back: RouteFilters())
        let quiet2 = network.run()
        #expect(quiet2)
        #expect(network.tables["B"]!.chosen.keys.allSatisfy { $0.origin == "B" })
        #expect(network.tables["A"]!.chosen.keys.allSatisfy { $0.origin == "A" })

        var filtered = RouteNetwork(seed: 3)
        filtered.add("A", serving: ["ckpt/**", "secret/**"])
        filtered.add("B", serving: ["results/**", "internal/**"])
        let aSide = RouteFilters(
            exports: [RouteNetwork.pattern("ckpt/eu/**")], imports: [RouteNetwork.pattern("results/**")])
        let bSide = RouteFilters(exports: [RouteNetwork.pattern("**")], imports: [RouteNetwork.pattern("**")])
        filtered.link(1, "A", "B", cost: 10, filters: aSide, back: bSide)
        let quiet3 = filtered.run()
        #expect(quiet3)
        #expect(filtered.tables["B"]!.routes(to: Self.address("ckpt/eu/1")).count == 1)
        #expect(filtered.tables["B"]!.routes(to: Self.address("ckpt/us/1")).isEmpty, "narrowed to ckpt/eu/**")
        #expect(filtered.tables["B"]!.routes(to: Self.address("secret/1")).isEmpty)
        #expect(filtered.tables["A"]!.routes(to: Self.address("results/1")).count == 1)
        #expect(filtered.tables["A"]!.routes(to: Self.address("internal/1")).isEmpty, "not imported")
    }

    /// In a ring A–B–C–D–A the message takes the cheaper way, and the other once a link on it dies.
    @Test func aRingTakesTheCheaperWayAndTheOtherWhenALinkDies() {
        var network = RouteNetwork(seed: 4)
        for name in ["A", "B", "C", "D"] { network.add(name, serving: ["\(name.lowercased())/**"]) }
        network.link(1, "A", "B", cost: 10)
        network.link(2, "B", "C", cost: 10)
        network.link(3, "C", "D", cost: 50)
        network.link(4, "D", "A", cost: 50)
        let quiet4 = network.run()
        #expect(quiet4)
        #expect(network.tables["A"]!.routes(to: Self.address("c/x")).first?.route.path == ["B", "C"])
        network.cut(2)
        let quiet5 = network.run()
        #expect(quiet5)
        #expect(network.tables["A"]!.routes(to: Self.address("c/x")).first?.route.path == ["D", "C"])
        #expect(network.tables["A"]!.routes(to: Self.address("c/x")).first?.route.cost == 100)
        // A change of measured cost moves it too.
        network.setCost(3, 1)
        network.setCost(4, 1)
        let quiet6 = network.run()
        #expect(quiet6)
        #expect(network.tables["B"]!.routes(to: Self.address("c/x")).first?.route.path == ["A", "D", "C"])
    }

    /// Cluster A with two gateways, A1 linked to B and A2 to C (cost 10 each); the gateways of A not linked yet.
    static func twoGatewaysOfA(seed: UInt64) -> RouteNetwork {
        var network = RouteNetwork(seed: seed)
        network.add("A1", cluster: "A", serving: ["a/**"])
        network.add("A2", cluster: "A", serving: ["a/**"])
        network.add("B", serving: ["b/**"])
        network.add("C", serving: ["c/**"])
        network.link(1, "A1", "B", cost: 10)
        network.link(2, "A2", "C", cost: 10)
        return network
    }

    /// Two gateways of cluster A, each peering with another cluster, pass what they learned to each other through
    /// their cluster: B reaches C through A.
    @Test func gatewaysOfOneClusterShareWhatTheyLearned() {
        var network = Self.twoGatewaysOfA(seed: 5)
        network.link(3, "A1", "A2", cost: 1)
        let quiet7 = network.run()
        #expect(quiet7)
        let bToC = network.tables["B"]!.routes(to: Self.address("c/1"))
        #expect(bToC.first?.route.path == ["A", "C"])
        #expect(bToC.first?.route.cost == 21)
        #expect(network.tables["A1"]!.routes(to: Self.address("c/1")).first?.link == 3)
        // A's own patterns reach B once, from A1, with A alone on the path.
        #expect(network.tables["B"]!.routes(to: Self.address("a/1")).first?.route.path == ["A"])
    }

    /// What the real gateways do: each puts what it reaches over its own links in the cluster's directory, and every
    /// other gateway of the cluster takes that as a link without keepalives or a hold time (directoryRoutes). B
    /// reaches C through A's two gateways; when A2's routes leave the directory, B's route to C is withdrawn.
    @Test func gatewaysOfOneClusterShareThroughTheDirectory() {
        var network = Self.twoGatewaysOfA(seed: 6)
        let quiet = network.run()
        #expect(quiet)
        // The directory: A1 holds A2's reach and A2 holds A1's, each as a link of its own (negative ids).
        func share(_ from: String, _ to: String, id: Int, routes: [ClusterRoute]? = nil) {
            var actions: [RouteAction] = []
            let reach = routes ?? network.tables[from]!.reach.values.map(\.route)
            network.tables[to]!.directoryRoutes(reach, of: id, now: network.now, into: &actions)
            #expect(actions.allSatisfy { if case .advertise(let link, _) = $0 { link > 0 } else { false } })
            network.carry(actions, from: to)
        }
        #expect(network.tables["A1"]!.reach.keys.map(\.origin) == ["B"])
        share("A2", "A1", id: -1)
        share("A1", "A2", id: -1)
        let quiet2 = network.run()
        #expect(quiet2)
        let bToC = network.tables["B"]!.routes(to: Self.address("c/1"))
        #expect(bToC.first?.route.path == ["A", "C"])
        #expect(bToC.first?.route.cost == 10 + 1_000 + 10, "A2's link, the hop inside A, A1's link")
        #expect(network.tables["A1"]!.routes(to: Self.address("c/1")).first?.link == -1)
        // What a gateway reaches through another is not its own reach: nothing goes back into the directory.
        #expect(network.tables["A1"]!.reach.keys.map(\.origin) == ["B"])
        #expect(network.tables["A1"]!.linkInfo.keys.sorted() == [1], "status lists gateway links only")
        // A2 leaves the directory: B's route to C goes.
        share("A2", "A1", id: -1, routes: [])
        let quiet3 = network.run()
        #expect(quiet3)
        #expect(network.tables["B"]!.routes(to: Self.address("c/1")).isEmpty)
        // A directory link has no hold time: far past it, only the gateway link is closed.
        share("A2", "A1", id: -2)
        var actions: [RouteAction] = []
        network.tables["A1"]!.tick(now: network.now + 1 << 62, into: &actions)
        let closed = actions.compactMap { if case .closeLink(let id, _) = $0 { id } else { nil } }
        #expect(closed == [1])
        #expect(network.tables["A1"]!.routes(to: Self.address("c/1")).first?.link == -2)
    }

    /// An `any` group is a route of its own, kept whole rather than folded, narrowed by the filters like a pattern
    /// (keeping the pattern its members registered), and withdrawn when the group goes.
    @Test func groupsAreRoutesOfTheirOwn() throws {
        var network = RouteNetwork(seed: 8)
        network.add("A", serving: ["a/**"])
        network.add("B", serving: ["logs/**"])
        let workers = RouteGroup("workers", pattern: RouteNetwork.pattern("svc/*"))
        let other = RouteGroup("auditors", pattern: RouteNetwork.pattern("audit/**"))
        var actions: [RouteAction] = []
        network.tables["B"]!.serve(
            [RouteNetwork.pattern("logs/**")], groups: [workers, other], now: network.now, into: &actions)
        network.carry(actions, from: "B")
        let exports = RouteFilters(exports: [RouteNetwork.pattern("svc/a")], imports: [RouteNetwork.pattern("**")])
        network.link(1, "A", "B", cost: 10, filters: .everything, back: exports)
        let quiet = network.run()
        #expect(quiet)
        let learned = network.tables["A"]!.chosen.keys.filter { $0.origin == "B" }
        #expect(learned.map(\.description) == ["svc/a@B (group workers of svc/*)"])
        #expect(network.tables["A"]!.routes(to: Self.address("svc/a")).isEmpty, "no pattern receivers there")
        // The group goes: its route is withdrawn.
        actions.removeAll()
        network.tables["B"]!.serve([RouteNetwork.pattern("logs/**")], groups: [other], now: network.now, into: &actions)
        network.carry(actions, from: "B")
        let quiet2 = network.run()
        #expect(quiet2)
        #expect(network.tables["A"]!.chosen.keys.allSatisfy { $0.origin == "A" })
        // On the wire, a group round-trips and a bad one is refused.
        let route = ClusterRoute(
            pattern: RouteNetwork.pattern("svc/a"), origin: "b", path: ["b"], cost: 3, group: workers)
        let advertisement = RouteAdvertisement(announced: [route], withdrawn: [route.key])
        let frames = advertisement.wireFrames()
        #expect(frames.count == 1)
        #expect(try RouteAdvertisement(wire: frames[0]) == advertisement)
        var bad = frames[0]
        bad.announced[0].group.name = "Not A Name"
        #expect(throws: FreightError.self) { try RouteAdvertisement(wire: bad) }
    }

    /// 120 clusters on a seeded random graph: the tables converge, each chosen route costs what the least-cost
    /// path does, follows real links without a loop, and agrees with the next hop's; after links are cut and a
    /// cluster leaves, they converge again and routes to what cannot be reached are withdrawn everywhere.
    ///
    /// One graph costs about 18 s of CPU in a debug build, so the test command runs one (seed 11) on a thread of
    /// its own at low priority: on the cooperative pool (two threads on a 2-core machine) three of them held it
    /// for 40 s and starved every test beside them. `FREIGHT_ROUTE_SEEDS=N` runs N graphs, `FREIGHT_ROUTE_SEED=N` replays one
    /// (`scripts/simulate.sh --routes N`).
    @Test func aHundredClustersConvergeNeverLoopAndWithdraw() async {
        let environment = ProcessInfo.processInfo.environment
        let seeds: [UInt64]
        if let one = environment["FREIGHT_ROUTE_SEED"].flatMap(UInt64.init) {
            seeds = [one]
        } else {
            seeds = (0..<UInt64(max(1, environment["FREIGHT_ROUTE_SEEDS"].flatMap(Int.init) ?? 1))).map { 11 + $0 }
        }
        for seed in seeds {
            let problems = await Self.onThread { Self.convergeNeverLoopAndWithdraw(seed: seed) }
            #expect(
                problems.isEmpty,
                "seed \(seed): \(problems) (replay: FREIGHT_ROUTE_SEED=\(seed) swift test --filter aHundredClusters)")
        }
    }

    /// Runs `body` on a thread of its own, off the cooperative pool and at the lowest priority, so that the tests
    /// beside it keep the CPU they wait on.
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            Thread {
                // On Linux a `who` of 0 names the calling thread alone.
                setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19)
                continuation.resume(returning: body())
            }.start()
        }
    }

    /// One seeded graph; what went wrong, if anything.
    static func convergeNeverLoopAndWithdraw(seed: UInt64) -> [String] {
        var problems: [String] = []
        var network = RouteNetwork(seed: seed)
        var random = SeededRandom(seed: seed * 7919)
        let names = (0..<120).map { "c\($0)" }
        for name in names { network.add(name, serving: ["\(name)/**", "shared/\(name)/*"]) }
        var id = 0
        // A spanning tree, then extra links: connected, with many cycles.
        for index in 1..<names.count {
            id += 1
            network.link(
                id, names[index], names[Int(random.next(in: 0...UInt64(index - 1)))],
                cost: random.next(in: 1...1000))
        }
        for _ in 0..<120 {
            let a = Int(random.next(in: 0...119))
            let b = Int(random.next(in: 0...119))
            guard a != b, !network.edges.values.contains(where: { Set([$0.a, $0.b]) == Set([names[a], names[b]]) })
            else { continue }
            id += 1
            network.link(id, names[a], names[b], cost: random.next(in: 1...1000))
        }
        if !network.run() { problems.append("did not converge") }
        let wrong = Self.leastCostMisses(network, names: names)
        if wrong > 0 { problems.append("\(wrong) routes differ from the least-cost paths") }

        // Cut 30 links and take one cluster away.
        for _ in 0..<30 {
            if let edge = network.edges.keys.sorted().dropFirst(Int(random.next(in: 0...50))).first {
                network.cut(edge)
            }
        }
        let leaving = "c42"
        for (edge, link) in network.edges where link.a == leaving || link.b == leaving { network.cut(edge) }
        network.tables[leaving] = nil
        if !network.run() { problems.append("did not converge again") }
        let living = names.filter { $0 != leaving }
        let wrongAfter = Self.leastCostMisses(network, names: living)
        if wrongAfter > 0 { problems.append("after the cuts \(wrongAfter) routes differ from the least-cost paths") }
        for name in living where !network.tables[name]!.chosen.keys.allSatisfy({ $0.origin != leaving }) {
            problems.append("\(name) kept a route to \(leaving)")
        }
        if network.tables["c1"]!.routes(to: Self.address("c7/x")).count != 1 {
            problems.append("c1 has not one route to c7/x")
        }
        return problems
    }

    /// How many chosen routes differ from the least-cost loop-free path that the next hop agrees with.
    static func leastCostMisses(_ network: RouteNetwork, names: [String]) -> Int {
        var wrong = 0
        for name in names {
            let table = network.tables[name]!
            let distance = network.shortest(from: name)
            for origin in names where origin != name {
                let chosen = table.chosen[RouteKey(RouteNetwork.pattern("\(origin)/**"), origin: origin)]
                guard let reachable = distance[origin] else {
                    if chosen != nil { wrong += 1 }
                    continue
                }
                guard let route = chosen?.route else {
                    wrong += 1
                    continue
                }
                // The least cost, a path without loops that ends at the origin, and the next hop agrees.
                let next = route.path.first!
                let nextRoute = network.tables[next]!.chosen[route.key]?.route
                let agrees = next == origin || nextRoute?.path == Array(route.path.dropFirst())
                if route.cost != reachable || Set(route.path).count != route.path.count || route.path.last != origin
                    || route.path.contains(name) || !agrees
                {
                    wrong += 1
                }
                // The `shared/NAME/*` pattern of each cluster is reachable at the same cost.
                let shared = RouteKey(RouteNetwork.pattern("shared/\(origin)/*"), origin: origin)
                if table.chosen[shared]?.route.cost != reachable { wrong += 1 }
            }
        }
        return wrong
    }

    @Test func aSilentLinkIsClosedAfterTheHoldTimeAndAQuietOneKeptAlive() {
        var table = RouteTable(.init(cluster: "A", keepaliveNanos: 1_000, holdNanos: 3_000))
        var actions: [RouteAction] = []
        table.linkUp(1, peer: "B", cost: 10, filters: .everything, now: 0, into: &actions)
        let route = ClusterRoute(pattern: RouteNetwork.pattern("b/**"), origin: "B", path: ["B"], cost: 0)
        table.received(RouteAdvertisement(announced: [route]), on: 1, now: 100, into: &actions)
        #expect(table.routes(to: Self.address("b/1")).count == 1)
        actions.removeAll()
        table.tick(now: 1_500, into: &actions)
        #expect(actions == [.advertise(link: 1, RouteAdvertisement())], "a keepalive")
        actions.removeAll()
        table.tick(now: 3_200, into: &actions)
        #expect(actions.contains { if case .closeLink(1, _) = $0 { true } else { false } })
        #expect(table.routes(to: Self.address("b/1")).isEmpty, "withdrawn")
        #expect(table.linkInfo.isEmpty)
    }

    @Test func aPeerAnnouncingPastTheLimitIsCutOff() {
        var table = RouteTable(.init(cluster: "A", routesPerLinkMax: 100))
        var actions: [RouteAction] = []
        table.linkUp(1, peer: "B", cost: 10, filters: .everything, now: 0, into: &actions)
        let flood = (0..<101).map {
            ClusterRoute(pattern: RouteNetwork.pattern("b/\($0)/**"), origin: "B", path: ["B"], cost: 0)
        }
        actions.removeAll()
        table.received(RouteAdvertisement(announced: flood), on: 1, now: 1, into: &actions)
        #expect(actions.contains { if case .closeLink(1, _) = $0 { true } else { false } })
        #expect(table.chosen.isEmpty)
    }

    /// 100,000 endpoints under a few prefixes fold to a few patterns that still cover every one of them.
    @Test func manyEndpointsFoldToFewPatterns() throws {
        var patterns = (0..<100_000).map { RouteNetwork.pattern("ckpt/eu/shard-\($0)") }
        patterns += (0..<5).map { RouteNetwork.pattern("kv/node-\($0)/blocks") }
        patterns += [RouteNetwork.pattern("*/status"), RouteNetwork.pattern("llm/decode/**")]
        let folded = RouteAggregation().aggregate(patterns)
        #expect(folded.map(\.description).contains("ckpt/eu/**"))
        #expect(folded.count <= 10, "\(folded)")
        #expect(patterns.allSatisfy { pattern in folded.contains { $0.covers(pattern) } })
        #expect(!folded.contains(RouteNetwork.pattern("**")), "never folded to everything")

        let wide = (0..<300).map { RouteNetwork.pattern("t\($0)/x") }
        let capped = RouteAggregation(fanoutMax: 16, patternsMax: 256).aggregate(wide)
        #expect(wide.allSatisfy { pattern in capped.contains { $0.covers(pattern) } })
    }
}
