import FreightCore
import FreightFlow
import FreightFunctions
import FreightWire
import NIOPosix

/// Filters at this node (docs/functions.md, "Where a filter sits in the node"): which messages run through them,
/// and the port that runs them.
extension NodeEngine {
    /// The filters a message runs through at this node, in the order they were attached: those whose pattern
    /// matches its destination, unless it ran through this node's filters already (its header records them).
    func filters(for header: Freight_Wire_V1_MessageHeader) -> [FilterAttachment] {
        filters(for: header.destination, passed: header.filters)
    }

    /// The same for a message to `destination` that passed the filters `passed`.
    func filters(for destination: String, passed: @autoclosure () -> [String]) -> [FilterAttachment] {
        guard !attachedFilters.isEmpty, !passed().contains(where: { $0.hasPrefix("\(name)/") }),
            let destination = try? parsedAddress(destination)
        else { return [] }
        return attachedFilters.filter { $0.pattern.matches(destination) }
    }

    /// The port filtered messages go through (made on first use).
    var filterPort: FilterPort {
        if let port = filterPortStorage { return port }
        let port = localPorts.add { FilterPort(engine: self, portID: $0, pool: NIOThreadPool.singleton) }
        filterPortStorage = port
        return port
    }

    func isFilterPort(_ port: Port) -> Bool {
        guard case .local(let id) = port, let filterPortStorage else { return false }
        return filterPortStorage.portID == id
    }

    /// Attaches a filter at run time; it applies to messages that open from now on.
    public func attachFilter(_ attachment: FilterAttachment) async throws {
        try await eventLoop.submit { [self] in
            guard attachedFilters.count < Limits.filtersPerNodeMax else {
                throw FreightError(
                    .resourceExhausted, "node \(name) has \(Limits.filtersPerNodeMax) filters attached already")
            }
            attachedFilters.append(attachment)
            logger.info("filter attached: \(attachment.description)")
        }.get()
    }

    /// Detaches the filters on `pattern`; returns how many there were. Messages they run on already go on.
    @discardableResult
    public func detachFilters(_ pattern: AddressPattern) async throws -> Int {
        try await eventLoop.submit { [self] in
            let before = attachedFilters.count
            attachedFilters.removeAll { $0.pattern == pattern }
            return before - attachedFilters.count
        }.get()
    }

    /// The filters attached now, in order.
    public func attachedFilterList() async throws -> [FilterAttachment] {
        try await eventLoop.submit { [self] in attachedFilters }.get()
    }
}
