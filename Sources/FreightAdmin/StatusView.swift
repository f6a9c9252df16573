import FreightCore
import FreightWire

/// The view of `freight top` (docs/observability.md): a node, its messages, its links to peers and gateways, and
/// their rates, from two status snapshots taken `seconds` apart. Pure: the command draws what this returns.
public struct StatusView: Sendable {
    public init() {}

    /// The lines of one frame. `previous` is the snapshot before (nil for the first frame: no rates yet).
    public func lines(
        previous: Freight_Wire_V1_NodeStatus?, current status: Freight_Wire_V1_NodeStatus, seconds: Double
    ) -> [String] {
        func rate(_ now: UInt64, _ before: UInt64?) -> String {
            guard let before, seconds > 0, now >= before else { return "-" }
            return Self.bytesPerSecond(Double(now - before) / seconds)
        }
        func perSecond(_ now: UInt64, _ before: UInt64?) -> String {
            guard let before, seconds > 0, now >= before else { return "-" }
            return "\(Self.grouped(UInt64((Double(now - before) / seconds).rounded())))/s"
        }
        let directory =
            status.directoryUnreachable.isEmpty
            ? "\(status.directory) ok" : "\(status.directory) UNREACHABLE (\(status.directoryUnreachable))"
        var lines = [
            "node \(status.name) of cluster \(status.cluster) on \(status.listen), up \(Self.duration(status.uptimeMillis)), directory \(directory)",
            "messages  in flight \(status.messagesInFlight) (small \(status.smallInFlight))   delivered \(Self.grouped(status.messagesDelivered)) (\(perSecond(status.messagesDelivered, previous?.messagesDelivered)))   failed \(Self.grouped(status.messagesFailed)) (\(perSecond(status.messagesFailed, previous?.messagesFailed)))   small passed \(perSecond(status.smallPassed, previous?.smallPassed))",
            "bytes     in \(rate(status.bytesIn, previous?.bytesIn))   out \(rate(status.bytesOut, previous?.bytesOut))",
            "memory    \(ByteCount.format(Int64(clamping: status.memoryReservedBytes))) of \(ByteCount.format(Int64(clamping: status.memoryBudgetBytes))) reserved, shared pools \(ByteCount.format(Int64(clamping: status.sharedPoolBytes))) of \(ByteCount.format(Int64(clamping: status.sharedBudgetBytes))), resident \(ByteCount.format(Int64(clamping: status.rssBytes)))",
            "endpoints \(status.localEndpoints) here, \(status.knownEndpoints) in the cluster",
            "",
        ]
        let before = Dictionary(
            (previous?.peers ?? []).map { ($0.name, $0.bytesOut) }, uniquingKeysWith: { first, _ in first })
        lines.append(Self.row(["PEER", "LISTEN", "STRIPES", "ENDPOINTS", "OUT"], Self.peerWidths))
        if status.peers.isEmpty { lines.append("(no peers)") }
        for peer in status.peers {
            lines.append(
                Self.row(
                    [
                        peer.name, peer.listen, "\(peer.streamsUp)/\(status.streams)", "\(peer.endpoints)",
                        rate(peer.bytesOut, before[peer.name]),
                    ], Self.peerWidths))
        }
        if status.peersOmitted > 0 { lines.append("(\(status.peersOmitted) more peers)") }
        if !status.gatewayLinks.isEmpty {
            lines.append("")
            lines.append(Self.row(["GATEWAY LINK", "ADDRESS", "RTT", "OUT", "IN", "STRIPES"], Self.gatewayWidths))
            for link in status.gatewayLinks {
                let rtt = link.rttMicros == 0 ? "-" : "\((Double(link.rttMicros) / 1000).formatted(decimals: 1)) ms"
                lines.append(
                    Self.row(
                        [
                            link.cluster, link.address, rtt, Self.bytesPerSecond(Double(link.outBytesPerS)),
                            Self.bytesPerSecond(Double(link.inBytesPerS)), "\(link.stripes)",
                        ], Self.gatewayWidths))
            }
        }
        let flowsBefore = Dictionary(
            (previous?.flows ?? []).map { ($0.id, $0.bytes) }, uniquingKeysWith: { first, _ in first })
        lines.append("")
        lines.append(Self.row(["MESSAGE", "ADDRESS", "SIZE", "DONE", "RATE", "FROM", "TO"], Self.flowWidths))
        if status.flows.isEmpty { lines.append("(no messages in flight)") }
        for flow in status.flows {
            lines.append(
                Self.row(
                    [
                        String(flow.id, radix: 16), flow.address, ByteCount.format(Int64(clamping: flow.size)),
                        Self.percent(flow.bytes, of: flow.size), rate(flow.bytes, flowsBefore[flow.id]), flow.upstream,
                        flow.downstream.joined(separator: ","),
                    ], Self.flowWidths))
        }
        if status.flowsOmitted > 0 { lines.append("(\(status.flowsOmitted) more messages in flight)") }
        if !status.recentErrors.isEmpty {
            lines.append("")
            lines.append("LAST ERRORS (UTC)")
            for error in status.recentErrors.prefix(Self.errorsShown) {
                lines.append(
                    "\(Self.timeOfDay(error.unixMillis))  \(error.code)  \(error.address) (\(ByteCount.format(Int64(clamping: error.size))))  \(error.message)"
                )
            }
        }
        return lines
    }

    static let errorsShown = 5
    static let flowWidths = [18, 28, 10, 7, 12, 16, 16]

    /// A duration in seconds, as the rates between two snapshots need it.
    public static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// `14:03:27` (UTC) of a time in milliseconds since 1970.
    static func timeOfDay(_ unixMillis: UInt64) -> String {
        let seconds = unixMillis / 1000 % 86_400
        func two(_ value: UInt64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(two(seconds / 3600)):\(two(seconds / 60 % 60)):\(two(seconds % 60))"
    }

    /// `42%` of a message's bytes.
    static func percent(_ bytes: UInt64, of size: UInt64) -> String {
        guard size > 0 else { return "100%" }
        return "\(min(100, bytes * 100 / size))%"
    }

    static let peerWidths = [16, 24, 9, 11, 14]
    static let gatewayWidths = [16, 24, 10, 14, 14, 8]

    static func row(_ cells: [String], _ widths: [Int]) -> String {
        var line = ""
        for (cell, width) in zip(cells, widths) {
            line += cell.count >= width ? cell + " " : cell + String(repeating: " ", count: width - cell.count)
        }
        while line.last == " " { line.removeLast() }
        return line
    }

    /// `1.25 GB/s`, `830 MB/s`, `12 kB/s`, `0 B/s` (powers of 1000, as network rates are read).
    public static func bytesPerSecond(_ rate: Double) -> String {
        switch rate {
        case 1e9...: "\((rate / 1e9).formatted(decimals: 2)) GB/s"
        case 1e6...: "\(Int((rate / 1e6).rounded())) MB/s"
        case 1e3...: "\(Int((rate / 1e3).rounded())) kB/s"
        default: "\(Int(rate.rounded())) B/s"
        }
    }

    /// `1,234,567`.
    public static func grouped(_ value: UInt64) -> String {
        let digits = Array(String(value))
        var text = ""
        for (index, digit) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { text.append(",") }
            text.append(digit)
        }
        return text
    }

    /// `3d 4h`, `2h 05m`, `4m 09s`, `12s`.
    static func duration(_ millis: UInt64) -> String {
        let seconds = millis / 1000
        let (days, hours, minutes) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60)
        func two(_ value: UInt64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        if days > 0 { return "\(days)d \(hours)h" }
        if hours > 0 { return "\(hours)h \(two(minutes))m" }
        if minutes > 0 { return "\(minutes)m \(two(seconds % 60))s" }
        return "\(seconds)s"
    }
}
