import FreightCore
import FreightDirectory
import FreightRouting
import FreightWire

/// Route plans for `freight resolve --explain` (docs/topology.md): the planner over what this node knows of every
/// node's rails and hardware, with the rates it measured on its own links.
extension NodeEngine {
    /// Every node's view as this node sees it.
    func plannerViews() -> [String: RoutePlanner.NodeView] {
        var views: [String: RoutePlanner.NodeView] = [name: ownRecord.view]
        for member in members.values { views[member.name] = member.record.view }
        return views
    }

    /// `views` with this node's rails carrying the rates it measured on its link to `peer`.
    func measured(_ views: [String: RoutePlanner.NodeView], towards peer: String) -> [String: RoutePlanner.NodeView] {
        guard let link = members[peer]?.link, link.railCount > 1, var own = views[name] else { return views }
        for rail in 0..<min(link.railCount, own.rails.count) where link.balancer.measured[rail] {
            own.rails[rail].measuredGbitPerSecond = link.balancer.rates[rail] * 8 / 1e9
        }
        var result = views
        result[name] = own
        return result
    }

    /// The rails a message to `peer` may take: the planner's choice when the sender named its GPU
    /// (`Limits.gpuAttribute`) and the link has several rails; nil (every rail) otherwise.
    func plannedRails(_ header: Freight_Wire_V1_MessageHeader, to peer: String) -> [Int]? {
        guard let text = header.attributes[Limits.gpuAttribute], let gpu = Int(text),
            (0..<Limits.topologyIndexMax).contains(gpu),
            let member = members[peer], member.link.railCount > 1
        else { return nil }
        let plan = RoutePlanner(capabilities: plannerCapabilities).plan(
            from: .init(node: name, gpu: gpu), to: .init(node: peer), bytes: Int(clamping: header.length),
            nodes: [name: ownRecord.view, peer: member.record.view])
        let rails = plan.paths.compactMap(\.rail).filter { $0 < member.link.railCount }
        return rails.isEmpty || rails.count == member.link.railCount ? nil : rails
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
        for gpu in [resolve.hasFromGpu ? resolve.fromGpu : nil, resolve.hasToGpu ? resolve.toGpu : nil] {
            if let gpu, gpu >= UInt32(Limits.topologyIndexMax) {
                throw FreightError(.invalidArgument, "GPU \(gpu) is out of range")
            }
        }
        let planner = RoutePlanner(capabilities: plannerCapabilities)
        let views = plannerViews()
        return endpoints.prefix(Limits.explainResultsMax).map { endpoint in
            let plan = planner.plan(
                from: .init(node: name, gpu: resolve.hasFromGpu ? Int(resolve.fromGpu) : nil),
                to: .init(node: endpoint.key.node, gpu: resolve.hasToGpu ? Int(resolve.toGpu) : nil),
                bytes: Int(resolve.explainBytes), nodes: measured(views, towards: endpoint.key.node))
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
