import FreightCore

/// Names one endpoint in a cluster: the node that holds it and the id that node gave it.
public struct EndpointKey: Hashable, Sendable, CustomStringConvertible {
    public var node: String
    public var id: UInt64

    public init(node: String, id: UInt64) {
        self.node = node
        self.id = id
    }

    /// The inbox endpoint of `node`, whichever it is: endpoint ids start at 1, so id 0 asks `node` to match the
    /// message's inbox address itself (a reply sent before its inbox reached the sender's directory).
    public init(inboxOf node: String) {
        self.init(node: node, id: 0)
    }

    public var description: String { "\(node)#\(id)" }
}

/// An `any` group: its name and the pattern its members registered (a group is scoped to its pattern). Routes between
/// clusters name groups this way (docs/gateways.md, "Groups across clusters").
public struct RouteGroup: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var name: String
    public var pattern: AddressPattern

    public init(_ name: String, pattern: AddressPattern) {
        self.name = name
        self.pattern = pattern
    }

    public var description: String { "group \(name) of \(pattern)" }

    public static func < (a: RouteGroup, b: RouteGroup) -> Bool {
        (a.name, a.pattern.description) < (b.name, b.pattern.description)
    }
}

/// A route to another cluster, as a gateway of this cluster registers it (docs/gateways.md): messages to the
/// endpoint go to that gateway, which carries them to `cluster`.
public struct RemoteRoute: Hashable, Sendable, CustomStringConvertible {
    /// The cluster whose endpoints serve the pattern.
    public var cluster: String
    /// The clusters on the way, the next one first and `cluster` last.
    public var path: [String]
    /// The route's cost (microseconds, the sum over its gateway links).
    public var cost: UInt64
    /// For a route to an `any` group of `cluster` (the endpoint's `group` is its name): the pattern its members
    /// registered, which the endpoint's pattern may narrow. The group is scoped to it, wherever its members are.
    public var groupPattern: AddressPattern?

    public init(cluster: String, path: [String], cost: UInt64, groupPattern: AddressPattern? = nil) {
        self.cluster = cluster
        self.path = path
        self.cost = cost
        self.groupPattern = groupPattern
    }

    public var description: String { "cluster \(cluster) via \(path.joined(separator: " → ")), cost \(cost) µs" }
}

/// A receiver bound to an address or pattern at a node; endpoints with the same non-empty `group` on the same
/// pattern share its messages (each message goes to one of them). An endpoint with a `route` stands for another
/// cluster's endpoints, reached through the gateway that holds it: its pattern receivers, or with a `group`, the
/// members of that group there.
public struct EndpointRecord: Hashable, Sendable {
    public var key: EndpointKey
    public var pattern: AddressPattern
    public var group: String?
    /// The attached app's label, for status and delivery reports.
    public var app: String
    public var route: RemoteRoute?

    /// The pattern that scopes the endpoint's group: its own, or for a route to a group, the pattern the members
    /// registered in their cluster.
    public var groupScope: AddressPattern { route?.groupPattern ?? pattern }

    /// The endpoint's group with its scope.
    public var anyGroup: RouteGroup? { group.map { RouteGroup($0, pattern: groupScope) } }

    public init(
        key: EndpointKey, pattern: AddressPattern, group: String? = nil, app: String = "", route: RemoteRoute? = nil
    ) {
        self.key = key
        self.pattern = pattern
        self.group = group
        self.app = app
        self.route = route
    }
}
