import FreightCore
import FreightFunctions
import FreightNode
import GRPCCore

/// Filters attached at run time (docs/functions.md): `AttachFilter`, `DetachFilter`, `ListFilters`. With an access
/// list, attaching and detaching need its `filter` action on the pattern: a filter sees and changes every message to
/// the addresses it matches.
extension FabricService {
    func attachFilter(call: ServerRequest<Freight_V1_AttachFilterRequest>) async throws -> Freight_V1_FiltersResponse {
        let request = call.message
        let pattern = try mapped { try AddressPattern(request.pattern) }
        try authorize(try caller(call.metadata), .filter, pattern)
        let capabilities = engine.configuration.filterCapabilities
        let attachment = try mapped { () throws(FreightError) -> FilterAttachment in
            let name = request.name.isEmpty ? "filter" : request.name
            guard AddressGrammar.isName(name) else {
                throw FreightError(
                    .invalidArgument, "filter name '\(name.prefix(64))': lowercase letters, digits, '-' and '_'")
            }
            guard request.config.utf8.count <= Limits.functionConfigBytesMax else {
                throw FreightError(
                    .invalidArgument, "the filter's config is over \(Limits.functionConfigBytesMax) bytes")
            }
            let module = try FunctionModule(
                name: name, bytes: Array(request.module), capabilities: capabilities,
                fuelPerCall: engine.configuration.functionFuelPerCall)
            return FilterAttachment(pattern: pattern, module: module, config: request.config)
        }
        try await mapped { try await engine.attachFilter(attachment) }
        return try await filters()
    }

    func detachFilter(call: ServerRequest<Freight_V1_DetachFilterRequest>) async throws -> Freight_V1_FiltersResponse {
        let request = call.message
        let pattern = try mapped { try AddressPattern(request.pattern) }
        try authorize(try caller(call.metadata), .filter, pattern)
        let detached = try await mapped { try await engine.detachFilters(pattern) }
        var response = try await filters()
        response.detached = UInt32(detached)
        return response
    }

    func listFilters(call: ServerRequest<Freight_V1_ListFiltersRequest>) async throws -> Freight_V1_FiltersResponse {
        _ = try caller(call.metadata)
        return try await filters()
    }

    private func filters() async throws -> Freight_V1_FiltersResponse {
        let attached = try await mapped { try await engine.attachedFilterList() }
        return .with {
            $0.filters = attached.map { filter in
                .with {
                    $0.pattern = filter.pattern.description
                    $0.name = filter.module.name
                    $0.sha256 = filter.module.digest
                    $0.config = filter.config
                    $0.resumable = filter.module.resumable
                }
            }
        }
    }
}
