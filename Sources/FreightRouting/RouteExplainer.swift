import FreightCore
import FreightDirectory

/// Route explanation (`freight resolve --explain`, docs/topology.md) and the rails a message to a peer may take:
/// the planner over what one node knows of every node (their records' views) with the rates it measured on its own
/// links. Pure: the node hands it the views and rates it holds.
public struct RouteExplainer: Sendable {
    public let localNode: String
    public let capabilities: RoutePlanner.Capabilities
    /// Every node's view as the local node sees it, itself included.
    public let views: [String: RoutePlanner.NodeView]
    /// Per peer, the rate (Gbit/s) the local node measured on each rail of its link to it.
    public let measuredGbitPerSecond: [String: [Int: Double]]

    public init(
        localNode: String, capabilities: RoutePlanner.Capabilities, views: [String: RoutePlanner.NodeView],
        measuredGbitPerSecond: [String: [Int: Double]] = [:]
    ) {
        self.localNode = localNode
        self.capabilities = capabilities
        self.views = views
        self.measuredGbitPerSecond = measuredGbitPerSecond
    }

    /// The views with the local node's rails carrying the rates it measured on its link to `peer`.
    public func views(towards peer: String) -> [String: RoutePlanner.NodeView] {
        guard let rates = measuredGbitPerSecond[peer], !rates.isEmpty, var own = views[localNode] else { return views }
        for (rail, rate) in rates where rail < own.rails.count { own.rails[rail].measuredGbitPerSecond = rate }
        var result = views
        result[localNode] = own
        return result
    }

    /// One plan per endpoint (at most `Limits.explainResultsMax`) for `bytes` from the local node, from and to GPUs
    /// when named.
    public func explain(
        bytes: Int, fromGPU: Int?, toGPU: Int?, endpoints: [EndpointRecord]
    ) throws(FreightError) -> [(endpoint: EndpointRecord, plan: RoutePlanner.RoutePlan)] {
        for gpu in [fromGPU, toGPU] {
            if let gpu, !(0..<Limits.topologyIndexMax).contains(gpu) {
                throw FreightError(.invalidArgument, "GPU \(gpu) is out of range")
            }
        }
        let planner = RoutePlanner(capabilities: capabilities)
        return endpoints.prefix(Limits.explainResultsMax).map { endpoint in
            let plan = planner.plan(
                from: .init(node: localNode, gpu: fromGPU), to: .init(node: endpoint.key.node, gpu: toGPU),
                bytes: bytes, nodes: views(towards: endpoint.key.node))
            return (endpoint, plan)
        }
    }

    /// The rails a message of `bytes` from `gpu` to `peer` may take over a link of `railCount` rails: the planner's
    /// choice, or nil (every rail) when it chose them all or none.
    public func plannedRails(gpu: Int, to peer: String, bytes: Int, railCount: Int) -> [Int]? {
        guard (0..<Limits.topologyIndexMax).contains(gpu), railCount > 1, let own = views[localNode],
            let theirs = views[peer]
        else { return nil }
        let plan = RoutePlanner(capabilities: capabilities).plan(
            from: .init(node: localNode, gpu: gpu), to: .init(node: peer), bytes: bytes,
            nodes: [localNode: own, peer: theirs])
        let rails = plan.paths.compactMap(\.rail).filter { $0 < railCount }
        return rails.isEmpty || rails.count == railCount ? nil : rails
    }
}
