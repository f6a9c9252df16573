import Foundation
import FreightWire

/// What the live page draws (docs/observability.md): one frame of a node's view of the fabric, from two status
/// snapshots taken `seconds` apart, as the JSON of one server-sent event. Pure, like ``StatusView``.
public struct LiveFrame: Codable, Sendable, Equatable {
    public struct Node: Codable, Sendable, Equatable {
        public var name: String
        public var cluster: String
        public var listen: String
        public var uptimeSeconds: Double
        public var directory: String
        /// Why the directory cannot be reached; empty when it can.
        public var directoryUnreachable: String
        public var gateway: String
    }

    public struct Totals: Codable, Sendable, Equatable {
        public var inFlight: UInt64
        public var smallInFlight: UInt64
        public var delivered: UInt64
        public var failed: UInt64
        public var deliveredPerSecond: Double
        public var failedPerSecond: Double
        public var bytesInPerSecond: Double
        public var bytesOutPerSecond: Double
        public var memoryReserved: UInt64
        public var memoryBudget: UInt64
        public var sharedPool: UInt64
        public var sharedBudget: UInt64
        public var resident: UInt64
        public var localEndpoints: UInt64
        public var knownEndpoints: UInt64
    }

    /// A link from this node: to a peer of its cluster, or (a gateway's) to another cluster.
    public struct Link: Codable, Sendable, Equatable {
        /// The peer's node name, or the other cluster's name.
        public var name: String
        public var kind: String  // "peer" or "gateway"
        public var address: String
        public var up: Bool
        public var stripes: UInt32
        public var endpoints: UInt64
        public var bytesOutPerSecond: Double
        public var bytesInPerSecond: Double
        public var rttMillis: Double
    }

    public struct Message: Codable, Sendable, Equatable {
        public var id: String
        public var address: String
        public var source: String
        public var size: UInt64
        public var bytes: UInt64
        public var acked: UInt64
        public var bytesPerSecond: Double
        public var from: String
        public var to: [String]
        public var ageSeconds: Double
        public var resumes: UInt32
    }

    public struct Failure: Codable, Sendable, Equatable {
        public var unixMillis: UInt64
        public var id: String
        public var address: String
        public var size: UInt64
        public var code: String
        public var message: String
    }

    public var node: Node
    public var totals: Totals
    public var links: [Link]
    public var linksOmitted: UInt32
    public var messages: [Message]
    public var messagesOmitted: UInt32
    public var errors: [Failure]

    /// The frame of `status`; rates are differences from `previous` over `seconds` (zero for the first frame).
    public init(previous: Freight_Wire_V1_NodeStatus?, current status: Freight_Wire_V1_NodeStatus, seconds: Double) {
        func rate(_ now: UInt64, _ before: UInt64?) -> Double {
            guard let before, seconds > 0, now >= before else { return 0 }
            return Double(now - before) / seconds
        }
        node = Node(
            name: status.name, cluster: status.cluster, listen: status.listen,
            uptimeSeconds: Double(status.uptimeMillis) / 1000, directory: status.directory,
            directoryUnreachable: status.directoryUnreachable, gateway: status.gateway)
        totals = Totals(
            inFlight: status.messagesInFlight, smallInFlight: status.smallInFlight,
            delivered: status.messagesDelivered, failed: status.messagesFailed,
            deliveredPerSecond: rate(status.messagesDelivered, previous?.messagesDelivered),
            failedPerSecond: rate(status.messagesFailed, previous?.messagesFailed),
            bytesInPerSecond: rate(status.bytesIn, previous?.bytesIn),
            bytesOutPerSecond: rate(status.bytesOut, previous?.bytesOut),
            memoryReserved: status.memoryReservedBytes, memoryBudget: status.memoryBudgetBytes,
            sharedPool: status.sharedPoolBytes, sharedBudget: status.sharedBudgetBytes, resident: status.rssBytes,
            localEndpoints: status.localEndpoints, knownEndpoints: status.knownEndpoints)
        let peersBefore = Dictionary(
            (previous?.peers ?? []).map { ($0.name, $0.bytesOut) }, uniquingKeysWith: { first, _ in first })
        links = status.peers.map { peer in
            Link(
                name: peer.name, kind: "peer", address: peer.listen, up: peer.streamsUp > 0, stripes: peer.streamsUp,
                endpoints: peer.endpoints, bytesOutPerSecond: rate(peer.bytesOut, peersBefore[peer.name]),
                bytesInPerSecond: 0, rttMillis: 0)
        }
        links += status.gatewayLinks.map { link in
            Link(
                name: link.cluster, kind: "gateway", address: link.address, up: link.upMillis > 0,
                stripes: link.stripes, endpoints: link.routesLearned, bytesOutPerSecond: Double(link.outBytesPerS),
                bytesInPerSecond: Double(link.inBytesPerS), rttMillis: Double(link.rttMicros) / 1000)
        }
        linksOmitted = status.peersOmitted
        let flowsBefore = Dictionary(
            (previous?.flows ?? []).map { ($0.id, $0.bytes) }, uniquingKeysWith: { first, _ in first })
        messages = status.flows.map { flow in
            Message(
                id: String(flow.id, radix: 16), address: flow.address, source: flow.source, size: flow.size,
                bytes: flow.bytes, acked: flow.acked, bytesPerSecond: rate(flow.bytes, flowsBefore[flow.id]),
                from: flow.upstream, to: flow.downstream, ageSeconds: Double(flow.ageMillis) / 1000,
                resumes: flow.resumes)
        }
        messagesOmitted = status.flowsOmitted
        errors = status.recentErrors.map { error in
            Failure(
                unixMillis: error.unixMillis, id: String(error.id, radix: 16), address: error.address, size: error.size,
                code: error.code, message: error.message)
        }
    }

    /// The frame as one server-sent event: `data: JSON` and a blank line (JSON has no raw newlines).
    public func event() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return "data: \(json)\n\n"
    }
}
