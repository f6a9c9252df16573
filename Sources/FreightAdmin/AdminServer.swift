import CoreMetrics
import FreightCore
import FreightNode
import FreightWire
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
import Synchronization

/// The node's admin port (docs/observability.md): `/metrics` in Prometheus's text format, `/healthz` and `/readyz`
/// with the meanings a Kubernetes probe uses. Plain HTTP/1.1 for operators' tools, apart from the data path; at most
/// `connectionsMax` connections, each closed after `idleSeconds` without a request.
public struct AdminServer: Service {
    public static let connectionsMax = 64
    public static let idleSeconds: Int64 = 30
    /// How long the node's event loop may take to answer before `/healthz` says it is stuck.
    public static let aliveSeconds: Int64 = 2
    /// Live pages streaming at once (each reads one status a second); more are answered 503.
    public static let liveStreamsMax = 16
    /// A live stream ends after this long; the browser's EventSource opens a new one by itself.
    public static let liveStreamSeconds: Int64 = 300
    /// Between two frames of a live stream.
    public static let liveFrameMillis: Int64 = 1000

    let engine: NodeEngine
    let host: String
    let port: Int
    let registry: PrometheusCollectorRegistry
    let logger: Logger
    let onListening: @Sendable (Int) -> Void

    /// - Parameters:
    ///   - registry: where the node's metrics factory records (`PrometheusMetricsFactory(registry:)` given to the
    ///     node as `NodeConfiguration.metrics`); its exposition is what `/metrics` answers.
    ///   - onListening: called with the port once the server listens (port 0 picks one).
    public init(
        engine: NodeEngine, host: String, port: Int, registry: PrometheusCollectorRegistry, logger: Logger,
        onListening: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.engine = engine
        self.host = host
        self.port = port
        self.registry = registry
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        let router = Router()
        let engine = self.engine
        let registry = self.registry
        let statusMetrics = engine.metrics.map { StatusScraper(factory: $0.factory) }
        router.get("/metrics") { _, _ -> Response in
            if let statusMetrics {
                let status = try await engine.statusSnapshot()
                statusMetrics.update(from: status)
            }
            let body = MetricsCatalog.exposition(registry)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: body)))
        }
        router.get("/healthz") { _, _ -> Response in
            if await Self.answers(engine) {
                return Self.text(.ok, "alive\n")
            }
            return Self.text(
                .serviceUnavailable, "node \(engine.name)'s event loop did not answer within \(Self.aliveSeconds) s\n")
        }
        router.get("/readyz") { _, _ -> Response in
            guard await Self.answers(engine) else {
                return Self.text(.serviceUnavailable, "not ready: the node's event loop does not answer\n")
            }
            let reasons = (try? await engine.unreadiness()) ?? ["the node is gone"]
            guard reasons.isEmpty else {
                return Self.text(.serviceUnavailable, "not ready: " + reasons.joined(separator: "; ") + "\n")
            }
            return Self.text(.ok, "ready\n")
        }
        router.get("/") { _, _ -> Response in
            Response(
                status: .ok,
                headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(string: LivePage.html)))
        }
        let liveStreams = Atomic<Int>(0)
        router.get("/events") { _, _ -> Response in
            guard liveStreams.add(1, ordering: .relaxed).newValue <= Self.liveStreamsMax else {
                liveStreams.subtract(1, ordering: .relaxed)
                return Self.text(.serviceUnavailable, "at most \(Self.liveStreamsMax) live pages at once\n")
            }
            return Response(
                status: .ok,
                headers: [.contentType: "text/event-stream", .cacheControl: "no-store"],
                body: ResponseBody { writer in
                    defer { liveStreams.subtract(1, ordering: .relaxed) }
                    try await Self.stream(engine, to: &writer)
                })
        }
        let onListening = self.onListening
        let port = self.port
        let application = Application(
            router: router,
            server: .http1(configuration: .init(idleTimeout: .seconds(Self.idleSeconds))),
            configuration: .init(
                address: .hostname(host, port: port), serverName: "freight",
                availableConnectionsDelegate: MaximumAvailableConnections(Self.connectionsMax)),
            onServerRunning: { channel in onListening(channel.localAddress?.port ?? port) },
            logger: logger)
        try await application.run()
    }

    /// One ``LiveFrame`` a second until the client goes, the node stops, or `liveStreamSeconds` pass.
    static func stream(_ engine: NodeEngine, to writer: inout any ResponseBodyWriter) async throws {
        try await writer.write(ByteBuffer(string: "retry: 1000\n\n"))
        var previous: (status: Freight_Wire_V1_NodeStatus, at: ContinuousClock.Instant)?
        let ends = ContinuousClock.now + .seconds(liveStreamSeconds)
        while ContinuousClock.now < ends, !Task.isCancelled, !Task.isShuttingDownGracefully {
            if previous != nil { try await Task.sleep(for: .milliseconds(liveFrameMillis)) }
            guard let status = try? await engine.statusSnapshot() else { break }
            let now = ContinuousClock.now
            let seconds = previous.map { StatusView.seconds(now - $0.at) } ?? 0
            let frame = LiveFrame(previous: previous?.status, current: status, seconds: seconds)
            try await writer.write(ByteBuffer(string: frame.event()))
            previous = (status, now)
        }
        try await writer.finish(nil)
    }

    static func text(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(
            status: status, headers: [.contentType: "text/plain; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// Whether the node's event loop runs a task within `aliveSeconds`.
    static func answers(_ engine: NodeEngine) async -> Bool {
        let answered = engine.eventLoop.submit {}
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask { (try? await answered.get()) != nil }
            group.addTask {
                try? await Task.sleep(for: .seconds(aliveSeconds))
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }
}

/// The status metrics of one admin port, updated by one scrape at a time.
final class StatusScraper: Sendable {
    private let metrics: Mutex<StatusMetrics>

    init(factory: any MetricsFactory) {
        metrics = Mutex(StatusMetrics(factory: factory))
    }

    func update(from status: Freight_Wire_V1_NodeStatus) {
        metrics.withLock { $0.update(from: status) }
    }
}
