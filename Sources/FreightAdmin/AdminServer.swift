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
