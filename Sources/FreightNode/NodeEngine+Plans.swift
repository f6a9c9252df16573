import FreightCore
import FreightDirectory
import FreightRouting
import FreightWire

/// Route plans (docs/topology.md): the engine hands ``RouteExplainer`` what it knows of every node and the rates
/// it measured on its own links, and turns its plans into replies.
extension NodeEngine {
    /// The explainer over this node's knowledge now.
    func routeExplainer() -> RouteExplainer {
        var views: [String: RoutePlanner.NodeView] = [name: ownRecord.view]
        var rates: [String: [Int: Double]] = [:]
        for member in members.values {
            views[member.name] = member.record.view
            let link = member.link
            guard link.railCount > 1 else { continue }
            for rail in 0..<link.railCount where link.balancer.measured[rail] {
                rates[member.name, default: [:]][rail] = link.balancer.rates[rail] * 8 / 1e9
            }
        }
        return RouteExplainer(
            localNode: name, capabilities: plannerCapabilities, views: views, measuredGbitPerSecond: rates)
    }

    /// The rails a message to `peer` may take: the planner's choice when the sender named its GPU
    /// (`Limits.gpuAttribute`) and the link has several rails; nil (every rail) otherwise.
    func plannedRails(_ header: Freight_Wire_V1_MessageHeader, to peer: String) -> [Int]? {
        guard let text = header.attributes[Limits.gpuAttribute], let gpu = Int(text), let member = members[peer],
            member.link.railCount > 1
        else { return nil }
        let explainer = RouteExplainer(
            localNode: name, capabilities: plannerCapabilities,
            views: [name: ownRecord.view, peer: member.record.view])
        return explainer.plannedRails(
            gpu: gpu, to: peer, bytes: Int(clamping: header.length), railCount: member.link.railCount)
    }

    /// Shared memory and the GPU transports, which both need apps on the node's socket with shared memory.
    var plannerCapabilities: RoutePlanner.Capabilities {
        configuration.socketPath != nil && configuration.sharedMemoryBudgetBytes > 0
            ? RoutePlanner.Capabilities.thisBuild.union(configuration.gpuTransports) : []
    }

    func explain(_ resolve: Freight_Wire_V1_Resolve, endpoints: [EndpointRecord]) throws(FreightError)
        -> [Freight_Wire_V1_RoutePlan]
    {
        guard resolve.explainBytes <= UInt64(Int.max) else {
            throw FreightError(.invalidArgument, "--size \(resolve.explainBytes) is too large")
        }
        // A route to another cluster held by this very node leaves through its gateway link: no hop inside the
        // cluster to plan (docs/gateways.md).
        let leaving = endpoints.filter { $0.route != nil && $0.key.node == name }
        let plans = try routeExplainer().explain(
            bytes: Int(resolve.explainBytes), fromGPU: resolve.hasFromGpu ? Int(clamping: resolve.fromGpu) : nil,
            toGPU: resolve.hasToGpu ? Int(clamping: resolve.toGpu) : nil,
            endpoints: endpoints.filter { !($0.route != nil && $0.key.node == name) })
        var byKey: [EndpointKey: Freight_Wire_V1_RoutePlan] = [:]
        for endpoint in leaving {
            let route = endpoint.route!
            var plan = Freight_Wire_V1_RoutePlan()
            plan.node = endpoint.key.node
            plan.endpointID = endpoint.key.id
            // The route's cost is the round trip plus 64 MiB at each link's measured rate: scaled to the size.
            let scale = max(1, Double(resolve.explainBytes) / Double(GatewayLinks.costMessageBytes))
            plan.expectedSeconds = Double(route.cost) / 1e6 * scale
            plan.notes = [
                "leaves cluster \(configuration.cluster) through this gateway: cluster \(route.cluster) via \(route.path.joined(separator: " → ")), cost \(route.cost) µs (round trips plus 64 MiB at each link's measured rate)"
            ]
            byKey[endpoint.key] = plan
        }
        for (endpoint, plan) in plans { byKey[endpoint.key] = wirePlan(endpoint, plan) }
        // In the order of `endpoints`, up to the first one not planned (the reply pairs them by position).
        var ordered: [Freight_Wire_V1_RoutePlan] = []
        for endpoint in endpoints {
            guard ordered.count < Limits.explainResultsMax, let plan = byKey[endpoint.key] else { break }
            ordered.append(plan)
        }
        return ordered
    }

    private func wirePlan(_ endpoint: EndpointRecord, _ plan: RoutePlanner.RoutePlan) -> Freight_Wire_V1_RoutePlan {
        var out = Freight_Wire_V1_RoutePlan()
        out.node = endpoint.key.node
        out.endpointID = endpoint.key.id
        out.expectedSeconds = plan.expectedSeconds
        out.notes = plan.notes
        out.paths = plan.paths.map { path in
            var wire = Freight_Wire_V1_PlannedPath()
            wire.kind = path.kind.rawValue
            wire.via = path.via
            wire.bytes = UInt64(path.bytes)
            wire.gbitPerS = path.gbitPerSecond.isFinite ? path.gbitPerSecond : 0
            wire.expectedSeconds = path.expectedSeconds
            return wire
        }
        return out
    }
}
