import FreightCore
import FreightDirectory
import FreightWire

extension RouteAdvertisement {
    /// What one ROUTES frame says, checked: every pattern and cluster name valid, paths no longer than
    /// `Limits.clusterPathMax`. Throws naming the first entry that is not (the link is then closed).
    public init(wire: Freight_Wire_V1_Routes) throws(FreightError) {
        func cluster(_ name: String) throws(FreightError) -> String {
            guard AddressGrammar.isName(name) else {
                throw FreightError(
                    .invalidArgument, "ROUTES names a cluster that is not a valid name: \(name.prefix(64))")
            }
            return name
        }
        func group(_ has: Bool, _ ref: Freight_Wire_V1_GroupRef) throws(FreightError) -> RouteGroup? {
            has ? try RouteGroup(wire: ref) : nil
        }
        var announced: [ClusterRoute] = []
        announced.reserveCapacity(wire.announced.count)
        for route in wire.announced {
            guard route.path.count <= Limits.clusterPathMax else {
                throw FreightError(
                    .invalidArgument,
                    "ROUTES has a path of \(route.path.count) clusters (at most \(Limits.clusterPathMax))")
            }
            var path: [String] = []
            for name in route.path { path.append(try cluster(name)) }
            announced.append(
                ClusterRoute(
                    pattern: try AddressPattern(route.pattern), origin: try cluster(route.origin), path: path,
                    cost: route.cost, group: try group(route.hasGroup, route.group)))
        }
        var withdrawn: [RouteKey] = []
        withdrawn.reserveCapacity(wire.withdrawn.count)
        for key in wire.withdrawn {
            withdrawn.append(
                RouteKey(
                    try AddressPattern(key.pattern), origin: try cluster(key.origin),
                    group: try group(key.hasGroup, key.group)))
        }
        self.init(announced: announced, withdrawn: withdrawn)
    }

    /// The advertisement as ROUTES frames whose payloads stay under `bytesMax` each: one frame when it is small or
    /// empty (a keepalive), several for a large table.
    public func wireFrames(bytesMax: Int = Limits.controlFrameBytesMax - 1024) -> [Freight_Wire_V1_Routes] {
        var frames: [Freight_Wire_V1_Routes] = []
        var frame = Freight_Wire_V1_Routes()
        var bytes = 0
        // An entry's size: its fields, and a tag and a length of at most 4 bytes around it.
        func add(_ size: Int, _ put: (inout Freight_Wire_V1_Routes) -> Void) {
            if bytes + size + 5 > bytesMax && bytes > 0 {
                frames.append(frame)
                frame = Freight_Wire_V1_Routes()
                bytes = 0
            }
            put(&frame)
            bytes += size + 5
        }
        for route in announced {
            var entry = Freight_Wire_V1_Route()
            entry.pattern = route.pattern.description
            entry.origin = route.origin
            entry.path = route.path
            entry.cost = route.cost
            if let group = route.group { entry.group = group.wire }
            add((try? entry.serializedBytes() as [UInt8])?.count ?? bytesMax) { $0.announced.append(entry) }
        }
        for key in withdrawn {
            var entry = Freight_Wire_V1_RouteKey()
            entry.pattern = key.pattern.description
            entry.origin = key.origin
            if let group = key.group { entry.group = group.wire }
            add((try? entry.serializedBytes() as [UInt8])?.count ?? bytesMax) { $0.withdrawn.append(entry) }
        }
        frames.append(frame)
        return frames
    }
}

extension RouteGroup {
    /// The group as frames name it.
    public var wire: Freight_Wire_V1_GroupRef {
        var ref = Freight_Wire_V1_GroupRef()
        ref.name = name
        ref.pattern = pattern.description
        return ref
    }

    /// A group a frame names, checked.
    public init(wire: Freight_Wire_V1_GroupRef) throws(FreightError) {
        guard AddressGrammar.isName(wire.name) else {
            throw FreightError(.invalidArgument, "a group that is not a valid name: \(wire.name.prefix(64))")
        }
        self.init(wire.name, pattern: try AddressPattern(wire.pattern))
    }
}
