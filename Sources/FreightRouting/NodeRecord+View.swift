import FreightDirectory

extension NodeRecord {
    /// The route planner's view of this node.
    public var view: RoutePlanner.NodeView {
        RoutePlanner.NodeView(
            topology: topology,
            rails: rails.enumerated().map { index, rail in
                .init(
                    address: rail.description,
                    nominalGbitPerSecond: topology.nics.first { $0.rail == index }?.gbitPerSecond ?? 0)
            },
            listen: listen.description)
    }
}
