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

    var plannerCapabilities: RoutePlanner.Capabilities {
        configuration.socketPath != nil && configuration.sharedMemoryBudgetBytes > 0 ? .thisBuild : []
    }

    func explain(_ resolve: Freight_Wire_V1_Resolve, endpoints: [EndpointRecord]) throws(FreightError)
        -> [Freight_Wire_V1_RoutePlan]
    {
        guard resolve.explainBytes <= UInt64(Int.max) else {
            throw FreightError(.invalidArgument, "--size \(resolve.explainBytes) is too large")
        }
        let plans = try routeExplainer().explain(
            bytes: Int(resolve.explainBytes), fromGPU: resolve.hasFromGpu ? Int(clamping: resolve.fromGpu) : nil,
            toGPU: resolve.hasToGpu ? Int(clamping: resolve.toGpu) : nil, endpoints: endpoints)
        return plans.map { endpoint, plan in
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
}
