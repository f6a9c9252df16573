import CoreMetrics
import FreightCore
import FreightFlow
import FreightWire

/// The node's metrics (docs/observability.md), recorded with swift-metrics through the factory the node was given
/// (`NodeConfiguration.metrics`): what messages did as they ended here, and, at each scrape, what the node's status
/// says. Every label has a bounded set of values: outcomes, error codes, size classes, peers' and clusters' names.
public final class NodeMetrics: @unchecked Sendable {
    // Only the node's event loop records ended messages; `scraped` runs on the loop of whoever scrapes, one at a
    // time (the admin server holds a lock around it). The handles themselves are thread-safe.
    public let factory: any MetricsFactory
    private let delivered: Counter
    private let failed: Counter
    private let resumes: Counter
    private var errors: [UInt32: Counter] = [:]
    private let durations: [Timer]
    private let throughputs: [Recorder]

    /// Size classes of the histograms: a message of at most `sizeClassBounds[i]` bytes is in class i; the last class
    /// is everything larger.
    public static let sizeClassBounds: [UInt64] = [4 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20]
    public static let sizeClassNames = ["le_4KiB", "le_64KiB", "le_1MiB", "le_16MiB", "le_256MiB", "gt_256MiB"]

    public init(factory: any MetricsFactory) {
        self.factory = factory
        delivered = Counter(label: "freight_messages_total", dimensions: [("outcome", "delivered")], factory: factory)
        failed = Counter(label: "freight_messages_total", dimensions: [("outcome", "failed")], factory: factory)
        resumes = Counter(label: "freight_message_resumes_total", factory: factory)
        durations = Self.sizeClassNames.map {
            Timer(label: "freight_message_duration_seconds", dimensions: [("size", $0)], factory: factory)
        }
        throughputs = Self.sizeClassNames.map {
            Recorder(
                label: "freight_message_throughput_bytes_per_second", dimensions: [("size", $0)], aggregate: true,
                factory: factory)
        }
    }

    public static func sizeClass(_ length: UInt64) -> Int {
        sizeClassBounds.firstIndex { length <= $0 } ?? sizeClassBounds.count
    }

    /// The label value of an error code: `resourceExhausted` → `resource_exhausted`.
    public static func label(_ code: FreightError.Code) -> String {
        var label = ""
        for character in code.description {
            if character.isUppercase {
                label += "_" + character.lowercased()
            } else {
                label.append(character)
            }
        }
        return label
    }

    /// A message ended at this node.
    public func ended(_ end: FlowEnd) {
        let sizeClass = Self.sizeClass(end.length)
        if end.resumes > 0 { resumes.increment(by: end.resumes) }
        if let code = end.failure {
            failed.increment()
            let counter =
                errors[code.rawValue]
                ?? {
                    let made = Counter(
                        label: "freight_message_errors_total", dimensions: [("code", Self.label(code))],
                        factory: factory)
                    errors[code.rawValue] = made
                    return made
                }()
            counter.increment()
            return
        }
        delivered.increment()
        durations[sizeClass].recordNanoseconds(Int64(clamping: end.nanos))
        if end.nanos > 0 && end.length > 0 {
            throughputs[sizeClass].record(Double(end.length) * 1e9 / Double(end.nanos))
        }
    }
}
