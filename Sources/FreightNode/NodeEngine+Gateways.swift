import FreightCore
import FreightDirectory
import FreightFlow
import FreightRouting
import FreightWire

/// Messages between clusters (docs/gateways.md, "The data path"): the routes a gateway chose become endpoints of it in
/// the cluster's directory, every node plans a remote address to the gateway that reaches it, and a gateway plans a
/// message that entered from another cluster for its own endpoints or a route on.
extension NodeEngine {
    /// Makes the routes to other clusters that this gateway chose its own endpoints, each on the egress port of its
    /// cluster, and announces what changed (mesh and etcd alike). Called when the route table's choice changed.
    func syncRouteEndpoints() {
        guard let gateways else { return }
        var wanted: [RouteKey: RemoteRoute] = [:]
        for (key, choice) in gateways.table.chosen where key.origin != configuration.cluster && choice.link != nil {
            wanted[key] = RemoteRoute(cluster: key.origin, path: choice.route.path, cost: choice.route.cost)
        }
        var added: [EndpointRecord] = []
        var removed: [UInt64] = []
        for (key, id) in routeEndpoints where wanted[key] == nil {
            routeEndpoints[key] = nil
            localEndpoints.remove(id)
            _ = index.remove(EndpointKey(node: name, id: id))
            removed.append(id)
        }
        for (key, route) in wanted.sorted(by: { $0.key.description < $1.key.description }) {
            let port = Port.local(gateways.egressPort(for: key.origin).portID)
            var record: EndpointRecord
            if let id = routeEndpoints[key], let known = localEndpoints[id]?.record {
                guard known.route != route else { continue }
                record = known
                record.route = route
                localEndpoints.update(record, port: port)
            } else {
                record = localEndpoints.add(
                    pattern: key.pattern, group: nil, app: "gateway \(name)", port: port, route: route)
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

    /// What the directory matched for a message from this cluster: its own endpoints, and for each other cluster that
    /// serves the address the one cheapest route to it (several gateways may reach one cluster; the message goes
    /// there once, and that cluster delivers it to every endpoint of its own that matches).
    func withRoutesChosen(_ matches: [EndpointRecord]) -> [EndpointRecord] {
        guard matches.contains(where: { $0.route != nil }) else { return matches }
        var best: [String: EndpointRecord] = [:]
        var own: [EndpointRecord] = []
        for record in matches {
            guard let route = record.route else {
                own.append(record)
                continue
            }
            guard route.cluster != configuration.cluster else { continue }
            if let known = best[route.cluster], !Self.cheaper(record, than: known) { continue }
            best[route.cluster] = record
        }
        return own + best.values.sorted { $0.route!.cluster < $1.route!.cluster }
    }

    /// Least cost, then the shorter path, then this node's own route, then the lower key.
    private static func cheaper(_ a: EndpointRecord, than b: EndpointRecord) -> Bool {
        let (x, y) = (a.route!, b.route!)
        if x.cost != y.cost { return x.cost < y.cost }
        if x.path.count != y.path.count { return x.path.count < y.path.count }
        if a.key.node != b.key.node { return a.key.node < b.key.node }
        return a.key.id < b.key.id
    }

    /// Where a message that entered this cluster through a gateway link goes: to this cluster's own endpoints when it
    /// is bound here, or on along the cheapest route to the cluster it is bound for that crosses none of the clusters
    /// it crossed already.
    func ingressTargets(
        _ header: Freight_Wire_V1_MessageHeader, open: Freight_Wire_V1_Open, load: (EndpointKey) -> Int
    ) throws(FreightError) -> [EndpointKey] {
        let destination = try parsedAddress(header.destination)
        let matches = index.match(destination)
        var targets: [EndpointKey]
        if open.toCluster == configuration.cluster {
            tieBreak &+= 1
            targets = planner.plan(matches: matches.filter { $0.route == nil }, load: load, tieBreak: tieBreak).map(
                \.key)
        } else {
            let crossed = Set(ClusterPath.clusters(in: open.path))
            let onward = matches.filter { record in
                guard let route = record.route, route.cluster == open.toCluster else { return false }
                return !route.path.contains(where: crossed.contains)
            }
            targets = withRoutesChosen(onward).prefix(1).map(\.key)
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
                guard let cluster = branch.cluster, case .suspended = branch.state, case .peer(let lost) = branch.port,
                    let destination = try? parsedAddress(flow.header.destination)
                else { continue }
                let others = index.match(destination).filter { record in
                    guard record.route?.cluster == cluster, record.key.node != lost else { return false }
                    return record.key.node == name || members[record.key.node]?.link.isUp == true
                }
                guard let best = withRoutesChosen(others).first else { continue }
                let port: Port =
                    best.key.node == name
                    ? (localEndpoints[best.key.id]?.port ?? .peer(best.key.node)) : .peer(best.key.node)
                moves.append((flow.id, branch.port, Flow.Branch(port: port, targets: [best.key], cluster: cluster)))
            }
        }
        for move in moves where flowTable.reroute(move.id, from: move.from, to: move.to, actions: &flowActions) {
            logger.notice("message \(String(move.id, radix: 16)) moves from \(move.from) to \(move.to.port)")
        }
        performFlowActions()
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
    func mayAdopt(_ flow: Flow, by port: Port) -> Bool {
        guard case .local(let new) = port, case .local(let old) = flow.upstream, let gateways,
            let cluster = gateways.ingressCluster(new)
        else { return false }
        return gateways.ingressCluster(old) == cluster
    }

    /// True for the ports of a gateway's links: their DONE names endpoints of other clusters and is not rewritten.
    func isGatewayPort(_ port: Port) -> Bool {
        guard case .local(let id) = port else { return false }
        return localPorts[id] is GatewayEgress || localPorts[id] is GatewayIngress
    }
}
