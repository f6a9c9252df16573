import Instrumentation

/// The W3C trace context in a message header: `traceparent` and `tracestate`, the only keys a propagator asks for.
public struct HeaderPropagation: Extractor, Injector {
    public init() {}

    public func extract(key: String, from header: Freight_Wire_V1_MessageHeader) -> String? {
        switch key {
        case "traceparent": header.traceparent.isEmpty ? nil : header.traceparent
        case "tracestate": header.tracestate.isEmpty ? nil : header.tracestate
        default: nil
        }
    }

    public func inject(_ value: String, forKey key: String, into header: inout Freight_Wire_V1_MessageHeader) {
        switch key {
        case "traceparent": header.traceparent = value
        case "tracestate": header.tracestate = value
        default: break
        }
    }
}
