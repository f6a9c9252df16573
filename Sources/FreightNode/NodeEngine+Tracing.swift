import FreightCore
import FreightFlow
import FreightWire
import Tracing

/// One span per message at each node it passes (docs/observability.md, "Traces"): its parent is the context the
/// message's header carries (W3C `traceparent`/`tracestate`, set by the sending app or the node before), and the
/// header goes on carrying this node's span, so that every hop joins one trace. Only with a tracer
/// (`NodeConfiguration.tracer`); at most `Limits.tracedMessagesMax` spans open at once.
extension NodeEngine {
    /// Starts the span of a message this node is about to open a flow for, and puts its context in the header.
    func traceOpened(_ open: inout Freight_Wire_V1_Open, from port: Port) {
        guard let tracer = configuration.tracer, spans.count < Limits.tracedMessagesMax,
            spans[open.header.id] == nil, flowTable[open.header.id] == nil
        else { return }
        var parent = ServiceContext.topLevel
        tracer.extract(open.header, into: &parent, using: HeaderPropagation())
        let kind: SpanKind
        switch port {
        case .session: kind = .producer
        case .peer: kind = .consumer
        case .local: kind = .internal
        }
        let span = tracer.startAnySpan("freight.node \(name)", context: parent, ofKind: kind)
        let header = open.header
        span.attributes["freight.node"] = name
        span.attributes["freight.cluster"] = configuration.cluster
        span.attributes["freight.address"] = header.destination
        span.attributes["freight.source"] = header.source
        span.attributes["freight.size"] = Int(clamping: header.length)
        span.attributes["freight.upstream"] = portLabel(port)
        span.attributes["freight.message_id"] = String(header.id, radix: 16)
        tracer.inject(span.context, into: &open.header, using: HeaderPropagation())
        spans[header.id] = TracedMessage(span: span, chunkBytes: 0)
        tracedOpen = header.id
    }

    /// After an OPEN's actions ran: where the message goes (the route), or, when it was refused and no flow started,
    /// the span ends with the refusal.
    func traceAfterOpen() {
        guard let id = tracedOpen else { return }
        tracedOpen = nil
        guard let span = spans[id]?.span else { return }
        if let flow = flowTable[id] {
            span.attributes["freight.route"] = flow.branches.map { branch in
                "\(branch.port) " + branch.targets.map { "\($0.node)#\($0.id)" }.joined(separator: ",")
            }
            spans[id]?.chunkBytes = UInt64(flow.header.chunkBytes)
            return
        }
        spans[id] = nil
        span.attributes["freight.outcome"] = "refused"
        span.setStatus(SpanStatus(code: .error, message: "refused at node \(name)"))
        span.end()
    }

    /// A message ended at this node: its span gets the outcome and ends.
    func traceEnded(_ end: FlowEnd) {
        guard let traced = spans.removeValue(forKey: end.messageID) else { return }
        let span = traced.span
        span.attributes["freight.bytes"] = Int(clamping: end.bytes)
        span.attributes["freight.resumes"] = end.resumes
        span.attributes["freight.duration_seconds"] = Double(end.nanos) / 1e9
        if traced.chunkBytes > 0 {
            span.attributes["freight.chunks"] = Int(
                clamping: (end.length + traced.chunkBytes - 1) / traced.chunkBytes)
        }
        if let code = end.failure {
            span.attributes["freight.outcome"] = "failed"
            span.attributes["freight.error_code"] = NodeMetrics.label(code)
            span.setStatus(SpanStatus(code: .error, message: NodeMetrics.label(code)))
        } else {
            span.attributes["freight.outcome"] = "delivered"
            if end.nanos > 0 {
                span.attributes["freight.throughput_bytes_per_second"] = Double(end.length) * 1e9 / Double(end.nanos)
            }
        }
        span.end()
    }

    /// Ends every span still open (the node stops): their messages fail here with the node.
    func traceStopping() {
        for span in spans.values.map(\.span) {
            span.attributes["freight.outcome"] = "failed"
            span.setStatus(SpanStatus(code: .error, message: "node \(name) stopped"))
            span.end()
        }
        spans = [:]
    }
}

/// The open span of a message at this node.
struct TracedMessage {
    let span: any Span
    var chunkBytes: UInt64
}
