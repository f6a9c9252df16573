import FreightCore
import FreightWire

/// What the directory says about one node: where it listens, which process it is, its rails and its hardware.
/// It travels as `Member` in mesh gossip and as the value of the node's etcd key (docs/topology.md).
public struct NodeRecord: Sendable, Hashable {
    public var name: String
    public var listen: NodeAddress
    public var incarnation: UInt64
    public var transports: [String]
    /// `HOST:PORT` per rail, in rail order; empty when the node has only its listen address.
    public var rails: [NodeAddress]
    public var topology: Topology

    public init(
        name: String, listen: NodeAddress, incarnation: UInt64, transports: [String] = [], rails: [NodeAddress] = [],
        topology: Topology = Topology()
    ) {
        self.name = name
        self.listen = listen
        self.incarnation = incarnation
        self.transports = transports
        self.rails = rails
        self.topology = topology
    }

    /// Reads a record that came from the network or from etcd, checking every limit. A topology that breaks one is
    /// dropped (the node stays usable, only unplanned); anything else wrong refuses the record.
    public init(wire: Freight_Wire_V1_Member) throws(FreightError) {
        guard AddressGrammar.isName(wire.name) else {
            throw FreightError(
                .protocolViolation, "node record with invalid name '\(wire.name.prefix(Limits.nameBytesMax))'")
        }
        // Nodes in one process (tests) listen on `inproc://` names, which reach nothing outside that process.
        if case .unix = try NodeAddress(wire.listen) {
            throw FreightError(.protocolViolation, "node \(wire.name) listens on '\(wire.listen)', not HOST:PORT")
        }
        guard wire.rails.count <= Limits.railsMax else {
            throw FreightError(
                .protocolViolation, "node \(wire.name) names \(wire.rails.count) rails; at most \(Limits.railsMax)")
        }
        var rails: [NodeAddress] = []
        for text in wire.rails {
            guard case .tcp = try NodeAddress(text) else {
                throw FreightError(.protocolViolation, "node \(wire.name) names rail '\(text)', not HOST:PORT")
            }
            rails.append(try NodeAddress(text))
        }
        let topology = Topology(wire: wire.topology)
        self.init(
            name: wire.name, listen: try NodeAddress(wire.listen), incarnation: wire.incarnation,
            transports: Array(
                wire.transports.prefix(Limits.recordTransportsMax).map {
                    String($0.prefix(Limits.recordTransportNameBytesMax))
                }), rails: rails,
            topology: (try? topology.validate()) != nil ? topology : Topology())
    }

    public var wire: Freight_Wire_V1_Member {
        var member = Freight_Wire_V1_Member()
        member.name = name
        member.listen = listen.description
        member.incarnation = incarnation
        member.transports = transports
        member.rails = rails.map(\.description)
        member.topology = topology.wire
        return member
    }
}

extension Topology {
    /// A topology as it arrived; `validate()` before trusting it. Lists past the limits are cut, not read.
    public init(wire: Freight_Wire_V1_Topology) {
        self.init(
            gpus: wire.gpus.prefix(Limits.topologyGPUsMax + 1).map {
                GPU(
                    index: Int($0.index), model: $0.model, numa: $0.hasNuma ? Int($0.numa) : nil,
                    pcieSwitch: $0.pcieSwitch.isEmpty ? nil : $0.pcieSwitch,
                    nvlinkDomain: $0.nvlinkDomain.isEmpty ? nil : $0.nvlinkDomain,
                    nvlinkGbitPerSecond: $0.nvlinkGbitPerS)
            },
            nics: wire.nics.prefix(Limits.topologyNICsMax + 1).map {
                NIC(
                    name: $0.name, address: $0.address.isEmpty ? nil : $0.address,
                    rail: $0.hasRail ? Int($0.rail) : nil,
                    pcieSwitch: $0.pcieSwitch.isEmpty ? nil : $0.pcieSwitch, numa: $0.hasNuma ? Int($0.numa) : nil,
                    gbitPerSecond: $0.gbitPerS)
            })
    }

    public var wire: Freight_Wire_V1_Topology {
        var topology = Freight_Wire_V1_Topology()
        topology.gpus = gpus.map { gpu in
            var out = Freight_Wire_V1_Gpu()
            out.index = UInt32(clamping: gpu.index)
            out.model = gpu.model
            if let numa = gpu.numa { out.numa = UInt32(clamping: numa) }
            out.pcieSwitch = gpu.pcieSwitch ?? ""
            out.nvlinkDomain = gpu.nvlinkDomain ?? ""
            out.nvlinkGbitPerS = gpu.nvlinkGbitPerSecond
            return out
        }
        topology.nics = nics.map { nic in
            var out = Freight_Wire_V1_Nic()
            out.name = nic.name
            out.address = nic.address ?? ""
            if let rail = nic.rail { out.rail = UInt32(clamping: rail) }
            out.pcieSwitch = nic.pcieSwitch ?? ""
            if let numa = nic.numa { out.numa = UInt32(clamping: numa) }
            out.gbitPerS = nic.gbitPerSecond
            return out
        }
        return topology
    }
}

extension EndpointRecord {
    /// The endpoint as the wire (mesh gossip, resolve replies) and the etcd directory write it.
    public var wire: Freight_Wire_V1_Endpoint {
        var endpoint = Freight_Wire_V1_Endpoint()
        endpoint.node = key.node
        endpoint.id = key.id
        endpoint.pattern = pattern.description
        endpoint.group = group ?? ""
        endpoint.app = app
        if let route {
            endpoint.cluster = route.cluster
            endpoint.clusterPath = route.path
            endpoint.cost = route.cost
            endpoint.groupPattern = route.groupPattern?.description ?? ""
        }
        return endpoint
    }

    /// The endpoint a peer or the etcd directory announced, checked: nil when its pattern, group or route is not
    /// valid (it is skipped, never trusted).
    public init?(key: EndpointKey, wire endpoint: Freight_Wire_V1_Endpoint) {
        guard let pattern = try? AddressPattern(endpoint.pattern),
            endpoint.group.isEmpty || AddressGrammar.isName(endpoint.group)
        else { return nil }
        var route: RemoteRoute?
        if !endpoint.cluster.isEmpty {
            guard AddressGrammar.isName(endpoint.cluster), endpoint.clusterPath.last == endpoint.cluster,
                endpoint.clusterPath.count <= Limits.clusterPathMax,
                endpoint.clusterPath.allSatisfy({ AddressGrammar.isName($0) })
            else { return nil }
            // A route to a group names the pattern its members registered.
            var groupPattern: AddressPattern?
            if !endpoint.group.isEmpty {
                guard let scope = try? AddressPattern(endpoint.groupPattern) else { return nil }
                groupPattern = scope
            }
            route = RemoteRoute(
                cluster: endpoint.cluster, path: endpoint.clusterPath, cost: endpoint.cost, groupPattern: groupPattern)
        }
        self.init(
            key: key, pattern: pattern, group: endpoint.group.isEmpty ? nil : endpoint.group,
            app: String(endpoint.app.prefix(128)), route: route)
    }
}
