import FreightCore

/// Names one endpoint in a cluster: the node that holds it and the id that node gave it.
public struct EndpointKey: Hashable, Sendable, CustomStringConvertible {
    public var node: String
    public var id: UInt64

    public init(node: String, id: UInt64) {
        self.node = node
        self.id = id
    }

    public var description: String { "\(node)#\(id)" }
}

/// A receiver bound to an address or pattern at a node; endpoints with the same non-empty `group` on the same
/// pattern share its messages (each message goes to one of them).
public struct EndpointRecord: Hashable, Sendable {
    public var key: EndpointKey
    public var pattern: AddressPattern
    public var group: String?
    /// The attached app's label, for status and delivery reports.
    public var app: String

    public init(key: EndpointKey, pattern: AddressPattern, group: String? = nil, app: String = "") {
        self.key = key
        self.pattern = pattern
        self.group = group
        self.app = app
    }
}
