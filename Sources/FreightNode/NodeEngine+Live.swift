import FreightCore
import FreightFlow
import FreightWire
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// The last messages that failed at a node, newest first: at most `Limits.recentErrorsMax`, for the live page and
/// `freight top` (docs/observability.md). A ring: recording costs no allocation once full.
struct RecentErrors {
    private(set) var entries: [Freight_Wire_V1_ErrorStatus] = []
    private var next = 0

    mutating func record(id: UInt64, address: String, size: UInt64, code: String, reason: String) {
        var entry = Freight_Wire_V1_ErrorStatus()
        entry.unixMillis = Self.unixMillis()
        entry.id = id
        entry.address = String(address.prefix(Limits.addressBytesMax))
        entry.size = size
        entry.code = code
        entry.message = String(reason.prefix(Self.messageBytesMax))
        if entries.count < Limits.recentErrorsMax {
            entries.append(entry)
        } else {
            entries[next] = entry
        }
        next = (next + 1) % Limits.recentErrorsMax
    }

    /// Newest first.
    var newestFirst: [Freight_Wire_V1_ErrorStatus] {
        guard entries.count == Limits.recentErrorsMax else { return entries.reversed() }
        return (entries[..<next].reversed() + entries[next...].reversed())
    }

    /// An error's message is cut to this many characters in the status.
    static let messageBytesMax = 256

    static func unixMillis() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) * 1000 + UInt64(now.tv_nsec) / 1_000_000
    }
}

/// Messages that ended at a node, counted on one link: in on it and out on it, by outcome, with their bytes.
struct LinkOutcomes {
    var inDelivered: UInt64 = 0
    var inFailed: UInt64 = 0
    var outDelivered: UInt64 = 0
    var outFailed: UInt64 = 0
    var inBytes: UInt64 = 0
    var outBytes: UInt64 = 0

    mutating func came(delivered: Bool, bytes: UInt64) {
        if delivered { inDelivered += 1 } else { inFailed += 1 }
        inBytes &+= bytes
    }

    mutating func went(delivered: Bool, bytes: UInt64) {
        if delivered { outDelivered += 1 } else { outFailed += 1 }
        outBytes &+= bytes
    }

    var wire: Freight_Wire_V1_LinkOutcomes {
        var wire = Freight_Wire_V1_LinkOutcomes()
        wire.inDelivered = inDelivered
        wire.inFailed = inFailed
        wire.outDelivered = outDelivered
        wire.outFailed = outFailed
        wire.inBytes = inBytes
        wire.outBytes = outBytes
        return wire
    }
}

extension NodeEngine {
    /// A message ended here: counted on the link it came in on and on each link a branch of it went out on.
    func countOutcomes(_ end: FlowEnd) {
        let delivered = end.failure == nil
        tally(end.upstream) { $0.came(delivered: delivered, bytes: end.bytes) }
        for branch in end.branches {
            tally(branch.port) { $0.went(delivered: branch.delivered, bytes: branch.bytes) }
        }
    }

    private func tally(_ port: Port, _ count: (inout LinkOutcomes) -> Void) {
        switch port {
        case .session: count(&appOutcomes)
        case .peer(let name): if let member = members[name] { count(&member.outcomes) }
        case .local(let id):
            guard let gateways, let cluster = gatewayCluster(ofPort: id) else { return }
            if gateways.outcomes[cluster] == nil, gateways.outcomes.count >= GatewayLinks.linksMax { return }
            count(&gateways.outcomes[cluster, default: LinkOutcomes()])
        }
    }

    /// The cluster of the gateway link a local port carries messages from or to; nil for other local ports.
    func gatewayCluster(ofPort id: UInt64) -> String? {
        guard let gateways else { return nil }
        if let cluster = gateways.ingressCluster(id) { return cluster }
        if let egress = localPorts[id] as? GatewayEgress { return gateways.links[egress.link]?.cluster }
        return nil
    }

    /// An OPEN the flow table refused (no receiver, no memory, not allowed): the ABORT it answers with is an error
    /// the operator sees too.
    func openRefused(_ header: Freight_Wire_V1_MessageHeader) {
        for case .send(.abort(let abort), _) in flowActions where abort.messageID == header.id {
            messageFailed(
                header.id, header.destination, size: header.length, traceparent: header.traceparent,
                code: FreightError.Code(rawValue: abort.code), reason: abort.reason)
            return
        }
    }

    /// A message failed at this node (refused, or ended without a receiver): kept for the status, and logged at
    /// notice with its message and trace ids (docs/observability.md, "Logs"), at most `failuresLoggedPerSecond`
    /// lines a second; the lines left out are counted in the next one.
    func messageFailed(
        _ id: UInt64, _ address: String, size: UInt64, traceparent: String, code: FreightError.Code, reason: String
    ) {
        let label = NodeMetrics.label(code)
        recentErrors.record(id: id, address: address, size: size, code: label, reason: reason)
        guard logger.logLevel <= .notice else { return }
        let second = nowNanos / 1_000_000_000
        if second != failureLog.second {
            failureLog = (second, 0, failureLog.suppressed)
        }
        guard failureLog.logged < Self.failuresLoggedPerSecond else {
            failureLog.suppressed += 1
            return
        }
        failureLog.logged += 1
        var metadata: Logger.Metadata = [
            "message_id": "\(String(id, radix: 16))", "address": "\(address.prefix(Limits.addressBytesMax))",
            "code": "\(label)", "size": "\(size)",
        ]
        if let trace = Self.traceID(traceparent) { metadata["trace_id"] = "\(trace)" }
        if failureLog.suppressed > 0 {
            metadata["failures_not_logged"] = "\(failureLog.suppressed)"
            failureLog.suppressed = 0
        }
        logger.notice("message failed: \(reason.prefix(RecentErrors.messageBytesMax))", metadata: metadata)
    }

    /// Failure lines a node logs in one second at most.
    static let failuresLoggedPerSecond = 20

    /// The trace id of a W3C `traceparent` (`00-TRACEID-SPANID-FLAGS`), or nil when it is not one.
    static func traceID(_ traceparent: String) -> Substring? {
        let parts = traceparent.split(separator: "-")
        guard parts.count == 4, parts[1].count == 32, parts[1].allSatisfy(\.isHexDigit) else { return nil }
        return parts[1]
    }

    /// The largest messages in flight here with their progress, and the last failures (bounded; see the proto).
    func fillFlows(_ status: inout Freight_Wire_V1_NodeStatus) {
        status.recentErrors = recentErrors.newestFirst
        var largest: [Flow] = []
        largest.reserveCapacity(Limits.statusFlowsMax + 1)
        for flow in flowTable.flows.values {
            guard largest.count == Limits.statusFlowsMax else {
                largest.append(flow)
                if largest.count == Limits.statusFlowsMax { largest.sort { $0.length > $1.length } }
                continue
            }
            guard flow.length > largest[largest.count - 1].length else { continue }
            largest[largest.count - 1] = flow
            largest.sort { $0.length > $1.length }
        }
        largest.sort { ($0.length, $1.startedNanos) > ($1.length, $0.startedNanos) }
        // Within `statusFlowsBytesMax`, so that the status stays one control frame.
        var bytes = 0
        for flow in largest {
            var entry = Freight_Wire_V1_FlowStatus()
            entry.id = flow.id
            entry.address = String(flow.header.destination.prefix(Limits.addressBytesMax))
            entry.source = String(flow.header.source.prefix(Limits.addressBytesMax))
            entry.size = flow.length
            entry.bytes = flow.bytesForwarded
            entry.acked = flow.branches.map(\.ackedOffset).min() ?? 0
            entry.upstream = portLabel(flow.upstream)
            entry.downstream = flow.branches.prefix(Self.statusBranchesMax).map { portLabel($0.port) }
            if flow.branches.count > Self.statusBranchesMax {
                entry.downstream.append("\(flow.branches.count - Self.statusBranchesMax) more")
            }
            entry.ageMillis = flow.startedNanos == 0 ? 0 : (nowNanos &- flow.startedNanos) / 1_000_000
            entry.resumes = UInt32(clamping: flow.resumes.count)
            bytes += ((try? entry.serializedBytes() as [UInt8])?.count ?? 0) + Self.listEntryOverheadBytes
            guard bytes <= Self.statusFlowsBytesMax else { break }
            status.flows.append(entry)
        }
        status.flowsOmitted = UInt32(clamping: flowTable.flows.count - status.flows.count)
    }

    /// Branches of one message a status names (a message to a pattern may have one per node of the cluster).
    static let statusBranchesMax = 8
    /// Most bytes of the flows in one status.
    static let statusFlowsBytesMax = 16 * 1024

    /// A port as an operator reads it: `app LABEL`, `node NAME`, `gateway CLUSTER` (a link to another cluster), or
    /// `in-process N`.
    func portLabel(_ port: Port) -> String {
        switch port {
        case .session(let id):
            guard let label = sessions[id]?.label, !label.isEmpty else { return "app \(id)" }
            return "app \(label)"
        case .peer(let node):
            return "node \(node)"
        case .local(let id):
            if let cluster = gatewayCluster(ofPort: id) { return "gateway \(cluster)" }
            if let endpoint = localPorts[id] { return "in-process \(type(of: endpoint))" }
            return "in-process \(id)"
        }
    }
}
