import FreightCore
import FreightDirectory
import FreightFlow
import FreightRouting
import FreightWire

/// Messages between clusters (docs/gateways.md, "The data path"): the routes a gateway chose become endpoints of it in
/// the cluster's directory, every node plans a remote address to the gateway that reaches it, and a gateway plans a
/// message that entered from another cluster for its own endpoints or a route on.
extension NodeEngine {
    /// Makes the routes to other clusters that this gateway reaches over its own links its own endpoints, each on
    /// the egress port of its cluster, and announces what changed (mesh and etcd alike). Called when the route
    /// table's choice changed. A route to an `any` group of another cluster is an endpoint in that group.
    func syncRouteEndpoints() {
        guard let gateways else { return }
        var wanted: [RouteKey: (route: RemoteRoute, link: Int)] = [:]
        for (key, choice) in gateways.table.reach where key.origin != configuration.cluster {
            guard let link = choice.link else { continue }
            wanted[key] = (
                RemoteRoute(
                    cluster: key.origin, path: choice.route.path, cost: choice.route.cost,
                    groupPattern: key.group?.pattern), link
            )
        }
        defer { gateways.dropClosedPorts() }
        var added: [EndpointRecord] = []
        var removed: [UInt64] = []
        for (key, id) in routeEndpoints where wanted[key] == nil {
            routeEndpoints[key] = nil
            localEndpoints.remove(id)
            _ = index.remove(EndpointKey(node: name, id: id))
            removed.append(id)
        }
        for (key, (route, link)) in wanted.sorted(by: { $0.key.description < $1.key.description }) {
            let port = Port.local(gateways.egressPort(for: link).portID)
            var record: EndpointRecord
            if let id = routeEndpoints[key], let known = localEndpoints[id]?.record {
                guard known.route != route || localEndpoints[id]?.port != port else { continue }
                record = known
                record.route = route
                localEndpoints.update(record, port: port)
            } else {
                record = localEndpoints.add(
                    pattern: key.pattern, group: key.group?.name, app: "gateway \(name)", port: port, route: route)
                routeEndpoints[key] = record.key.id
            }
            index.upsert(record)
            added.append(record)
        }
        guard !added.isEmpty || !removed.isEmpty else { return }
        logger.debug("routes to other clusters in the directory: \(added.count) announced, \(removed.count) withdrawn")
        announce(added: added, removed: removed)
        if let directory = configuration.directory, !added.isEmpty {
            directory.publish(added) { [logger] error in
                if let error { logger.warning("publishing routes to other clusters: \(error.message)") }
            }
        }
    }

    /// What the directory matched for a message from this cluster, planned (docs/gateways.md, "Groups across
    /// clusters"): every pattern receiver of this cluster; each `any` group once, at the member the planner finds
    /// nearest (this node, then this cluster, then the nearest cluster by cost); and for each other cluster that
    /// serves the address, the route endpoints that carry the message there once, for its pattern receivers and the
    /// groups it serves.
    func plannedTargets(
        _ matches: [EndpointRecord], load: (EndpointKey) -> Int, tieBreak: UInt64
    ) -> [EndpointRecord] {
        guard matches.contains(where: { $0.route != nil }) else {
            return planner.plan(matches: matches, load: load, tieBreak: tieBreak)
        }
        let routes = matches.filter { $0.route != nil && $0.route!.cluster != configuration.cluster }
        let planned = planner.plan(
            matches: matches.filter { $0.route == nil } + routes.filter { $0.group != nil }, load: load,
            tieBreak: tieBreak)
        var targets = planned.filter { $0.route == nil }
        var groups: [String: Set<RouteGroup>] = [:]
        for record in planned {
            if let route = record.route, let group = record.anyGroup {
                groups[route.cluster, default: []].insert(group)
            }
        }
        let patterns = Set(routes.filter { $0.group == nil }.map { $0.route!.cluster })
        for cluster in patterns.union(groups.keys).sorted() {
            targets += carriers(
                to: Flow.Remote(
                    cluster: cluster, patterns: patterns.contains(cluster), groups: (groups[cluster] ?? []).sorted()),
                among: routes)
        }
        return targets
    }

    /// The route endpoints among `records` that carry a message into `remote.cluster` for what it names: for each
    /// (its pattern receivers, each group) the cheapest, on the gateway of the cheapest of them all where that
    /// gateway has one, so that the message goes there once.
    func carriers(to remote: Flow.Remote, among records: [EndpointRecord]) -> [EndpointRecord] {
        let needs: [RouteGroup?] = (remote.patterns ? [nil] : []) + remote.groups
        let options = needs.map { need in
            records.filter { $0.route?.cluster == remote.cluster && $0.anyGroup == need }
        }
        guard let anchor = options.joined().min(by: Self.cheaper)?.key.node else { return [] }
        var carriers: [EndpointRecord] = []
        for records in options {
            let pick = records.filter { $0.key.node == anchor }.min(by: Self.cheaper) ?? records.min(by: Self.cheaper)
            if let pick { carriers.append(pick) }
        }
        return carriers
    }

    /// What a branch to a gateway of this cluster carries into another cluster, from its targets (route endpoints);
    /// nil when they lead to several clusters (such a branch is not moved to another gateway).
    func remote(of targets: [EndpointKey]) -> Flow.Remote? {
        let records = targets.compactMap { index.record($0) }
        guard let cluster = records.first?.route?.cluster,
            records.count == targets.count && records.allSatisfy({ $0.route?.cluster == cluster })
        else { return nil }
        return Flow.Remote(
            cluster: cluster, patterns: records.contains { $0.group == nil },
            groups: records.compactMap(\.anyGroup).sorted())
    }

    /// Least cost, then the shorter path, then this node's own route, then the lower key.
    private static func cheaper(_ a: EndpointRecord, than b: EndpointRecord) -> Bool {
        let (x, y) = (a.route!, b.route!)
        if x.cost != y.cost { return x.cost < y.cost }
        if x.path.count != y.path.count { return x.path.count < y.path.count }
        if a.key.node != b.key.node { return a.key.node < b.key.node }
        return a.key.id < b.key.id
    }

    /// Where a message that entered this cluster through a gateway link goes, for each cluster it is bound for: to
    /// this cluster's pattern receivers and the groups named (once each) when it is this one, or on along the
    /// cheapest routes to that cluster that cross none of the clusters it crossed already. A cluster it cannot reach
    /// from here is left out (and logged); the message fails only when it reaches none.
    func ingressTargets(
        _ header: Freight_Wire_V1_MessageHeader, open: Freight_Wire_V1_Open, load: (EndpointKey) -> Int
    ) throws(FreightError) -> [EndpointKey] {
        let destination = try parsedAddress(header.destination)
        let matches = index.match(destination)
        let crossed = Set(ClusterPath.clusters(in: open.path))
        var targets: [EndpointKey] = []
        for bound in open.destinations {
            // Checked at the link: valid groups only.
            let groups = bound.groups.compactMap { try? RouteGroup(wire: $0) }
            var found: [EndpointKey]
            if bound.cluster == configuration.cluster {
                tieBreak &+= 1
                let served = Set(groups)
                let mine = matches.filter { record in
                    guard record.route == nil else { return false }
                    guard let group = record.anyGroup else { return !bound.groupsOnly }
                    return served.contains(group)
                }
                found = planner.plan(matches: mine, load: load, tieBreak: tieBreak).map(\.key)
            } else {
                let onward = matches.filter { record in
                    guard let route = record.route, route.cluster == bound.cluster else { return false }
                    return !route.path.contains(where: crossed.contains)
                }
                found = carriers(
                    to: Flow.Remote(cluster: bound.cluster, patterns: !bound.groupsOnly, groups: groups), among: onward
                ).map(\.key)
            }
            if found.isEmpty {
                logger.notice(
                    "message \(String(header.id, radix: 16)) to \(destination): no route on to cluster \(bound.cluster) from cluster \(configuration.cluster)"
                )
            }
            targets += found
        }
        guard !targets.isEmpty else {
            throw FreightError(.noRoute, "no route to \(destination) in cluster \(configuration.cluster)")
        }
        return targets
    }

    // MARK: Resume through another gateway

    /// Moves every branch suspended on a gateway of this cluster (its link broke) to another gateway that reaches
    /// the same cluster and whose link is up: the message goes on from where the far side's receiver is
    /// (docs/gateways.md, "Resume through another gateway"). Branches with no other way wait for their link.
    func rerouteSuspended() {
        var moves: [(id: UInt64, from: Port, to: Flow.Branch)] = []
        for flow in flowTable.flows.values {
            for branch in flow.branches {
                guard case .suspended = branch.state, let moved = alternative(to: branch, of: flow) else { continue }
                moves.append((flow.id, branch.port, moved))
            }
        }
        move(moves)
    }

    /// Moves every branch to a gateway of this cluster whose routes for it left the directory (its own link to that
    /// cluster closed: the gateway stands, but reaches it no more) to another gateway that reaches it, when there is
    /// one: a node that sent through the other gateway pair goes on over its own (docs/wan.md, "Cuts").
    func moveOffLostRoutes() {
        var moves: [(id: UInt64, from: Port, to: Flow.Branch)] = []
        for flow in flowTable.flows.values where flow.upstreamResends {
            for branch in flow.branches where branch.isOpen && branch.remote != nil {
                guard case .peer = branch.port, !branch.targets.isEmpty,
                    branch.targets.allSatisfy({ index.record($0) == nil }),
                    let moved = alternative(to: branch, of: flow)
                else { continue }
                moves.append((flow.id, branch.port, moved))
            }
        }
        guard !moves.isEmpty else { return }
        for move in moves { flowTable.suspend(move.id, port: move.from, actions: &flowActions) }
        performFlowActions()
        move(moves)
    }

    private func move(_ moves: [(id: UInt64, from: Port, to: Flow.Branch)]) {
        for move in moves where flowTable.reroute(move.id, from: move.from, to: move.to, actions: &flowActions) {
            logger.notice(
                "message moves from \(move.from) to \(move.to.port)",
                metadata: ["message_id": "\(String(move.id, radix: 16))"])
        }
        performFlowActions()
    }

    /// Where a branch bound for another cluster can go instead of its own gateway: all of it through one other gateway
    /// of this cluster that reaches that cluster, whose link is up and that the message did not cross, or nil.
    private func alternative(to branch: Flow.Branch, of flow: Flow) -> Flow.Branch? {
        guard let remote = branch.remote, let destination = try? parsedAddress(flow.header.destination) else {
            return nil
        }
        // Through a gateway node whose link broke, or through a link of this gateway that closed.
        let lost: String
        switch branch.port {
        case .peer(let node): lost = node
        case .local: lost = name
        default: return nil
        }
        let others = index.match(destination).filter { record in
            guard record.route?.cluster == remote.cluster else { return false }
            if record.key.node == name {
                guard let port = localEndpoints[record.key.id]?.port else { return false }
                return port != branch.port
            }
            // Never back to a node the message already crossed (its sender's node may be a gateway too).
            return record.key.node != lost && !flow.path.contains(record.key.node)
                && members[record.key.node]?.link.isUp == true
        }
        let carriers = carriers(to: remote, among: others)
        guard carriers.count == (remote.patterns ? 1 : 0) + remote.groups.count,
            let node = carriers.first?.key.node, carriers.allSatisfy({ $0.key.node == node })
        else { return nil }
        let port: Port =
            node == name ? (localEndpoints[carriers[0].key.id]?.port ?? .peer(node)) : .peer(node)
        return Flow.Branch(port: port, targets: carriers.map(\.key), remote: remote)
    }

    /// A resume OPEN from a node of this cluster for a message this node never held, bound for a route of this
    /// gateway: the message moved here from another gateway.
    func isRerouted(_ open: Freight_Wire_V1_Open) -> Bool {
        !open.targets.isEmpty
            && open.targets.allSatisfy { target in
                guard target.node == name, case .local(let id)? = localEndpoints[target.id]?.port else { return false }
                return localPorts[id] is GatewayEgress
            }
    }

    /// Another gateway link may take a message over from the one it came in on when both come from the same cluster
    /// (each proved by its certificate).
    /// Or when it came through another gateway of this cluster (a member) from that cluster: its sender's cluster
    /// moved it to this gateway pair (docs/wan.md, "Cuts").
    func mayAdopt(_ flow: Flow, by port: Port) -> Bool {
        guard case .local(let new) = port, let gateways, let cluster = gateways.ingressCluster(new) else {
            return false
        }
        switch flow.upstream {
        case .local(let old): return gateways.ingressCluster(old) == cluster
        case .peer(let member): return members[member] != nil && ClusterPath.clusters(in: flow.path).contains(cluster)
        case .session: return false
        }
    }

    /// A node of this cluster may take a message over that came in through a gateway link of this node when it
    /// relays the message's resume from another gateway link to the same cluster (the message moved to another
    /// gateway pair, docs/wan.md, "Cuts"): its path crossed that cluster.
    func mayAdoptRelayed(_ flow: Flow, open: Freight_Wire_V1_Open, by port: Port) -> Bool {
        guard case .peer(let member) = port, members[member] != nil, case .local(let old) = flow.upstream,
            let gateways, let cluster = gateways.ingressCluster(old)
        else { return false }
        return ClusterPath.clusters(in: open.path).contains(cluster)
    }

    /// True for the ports of a gateway's links: their DONE names endpoints of other clusters and is not rewritten.
    func isGatewayPort(_ port: Port) -> Bool {
        guard case .local(let id) = port else { return false }
        return localPorts[id] is GatewayEgress || localPorts[id] is GatewayIngress
    }
}
