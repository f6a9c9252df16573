import Foundation
import FreightCore
import Logging
import OTel
import ServiceLifecycle
import Synchronization
import Tracing

/// Traces over OTLP (docs/observability.md), configured by the standard `OTEL_*` variables: on when an OTLP endpoint
/// is named (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and not switched off
/// (`OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none`). OTLP over gRPC (port 4317 of a Jaeger or a Collector);
/// Freight's metrics go to Prometheus (`--admin`), its logs to stderr.
enum Telemetry {
    static var tracesRequested: Bool {
        let environment = ProcessInfo.processInfo.environment
        if environment["OTEL_SDK_DISABLED"]?.lowercased() == "true" { return false }
        if environment["OTEL_TRACES_EXPORTER"]?.lowercased() == "none" { return false }
        return environment["OTEL_EXPORTER_OTLP_ENDPOINT"] != nil
            || environment["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] != nil
    }

    /// A tracer and the service that exports its spans, when the environment asks for traces. `serviceName` is the
    /// default of `OTEL_SERVICE_NAME`.
    static func tracing(serviceName: String) throws -> (tracer: any Tracer, service: any Service)? {
        guard tracesRequested else { return nil }
        var configuration = OTel.Configuration.default
        configuration.serviceName = serviceName
        configuration.logs.enabled = false
        configuration.metrics.enabled = false
        configuration.traces.otlpExporter.protocol = .grpc
        configuration.diagnosticLogLevel = .warning
        // Spans leave within a second (the default waits five): a short-lived `freight send` flushes on exit anyway.
        configuration.traces.batchSpanProcessor.scheduleDelay = .seconds(1)
        do {
            let backend = try OTel.makeTracingBackend(configuration: configuration)
            return (backend.factory, backend.service)
        } catch {
            throw FreightError(.invalidArgument, "OTEL_* variables: \(error)")
        }
    }

    /// Whether this process bootstrapped the global tracer (a command's own spans).
    static let bootstrapped = Atomic<Bool>(false)

    /// Runs a command's `body` with the global tracer bootstrapped when the environment asks for traces, and the
    /// exporter flushed before it returns.
    static func running(serviceName: String, _ body: @escaping @Sendable () async throws -> Void) async throws {
        guard let (tracer, exporter) = try tracing(serviceName: serviceName) else { return try await body() }
        InstrumentationSystem.bootstrap(tracer)
        bootstrapped.store(true, ordering: .relaxed)
        var logger = Logger(label: "freight.telemetry")
        logger.logLevel = .warning
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: exporter),
                    .init(
                        service: Work(body: body), successTerminationBehavior: .gracefullyShutdownGroup,
                        failureTerminationBehavior: .gracefullyShutdownGroup),
                ], logger: logger))
        try await group.run()
    }

    private struct Work: Service {
        let body: @Sendable () async throws -> Void
        func run() async throws { try await body() }
    }

    /// `body` inside a span of the command when it traces, with `context` as its parent (the current one if nil).
    static func span<T>(
        _ name: @autoclosure () -> String, context: @autoclosure () -> ServiceContext? = nil, ofKind kind: SpanKind,
        _ body: () async throws -> T
    ) async rethrows -> T {
        guard bootstrapped.load(ordering: .relaxed) else { return try await body() }
        let span = InstrumentationSystem.tracer.startAnySpan(
            name(), context: context() ?? .current ?? .topLevel, ofKind: kind)
        defer { span.end() }
        return try await ServiceContext.withValue(span.context) {
            do {
                return try await body()
            } catch {
                span.recordError(error)
                span.setStatus(SpanStatus(code: .error, message: "\(error)"))
                throw error
            }
        }
    }
}
