import FreightDirectory
import ServiceLifecycle

/// Runs a ``NodeEngine`` as a `Service`: started on `run()`, stopped on graceful shutdown or cancellation. What runs
/// beside the node (its directory backend, ``DirectoryService``; its gRPC API) are services of the same group,
/// listed after it so that they stop first.
public struct NodeService: Service {
    public let engine: NodeEngine
    let onReady: @Sendable (NodeEngine) -> Void

    /// - Parameter onReady: called once the node listens.
    public init(engine: NodeEngine, onReady: @escaping @Sendable (NodeEngine) -> Void = { _ in }) {
        self.engine = engine
        self.onReady = onReady
    }

    public func run() async throws {
        try await engine.start()
        onReady(engine)
        // Until the service group shuts down gracefully (SIGTERM, SIGINT) or is cancelled: no polling. Then the
        // messages in flight get the drain time to finish (none when cancelled).
        try? await gracefulShutdown()
        if !Task.isCancelled { await engine.drain(within: .seconds(engine.configuration.drainSeconds)) }
        await engine.stop()
    }
}

/// Runs a node's directory backend (etcd) as a `Service` beside it: it keeps the node's index in step until the
/// group shuts down; registrations made before it first reaches the backend wait for it (docs/directory.md).
public struct DirectoryService: Service {
    public let backend: any DirectoryBackend
    public let engine: NodeEngine

    public init(backend: any DirectoryBackend, engine: NodeEngine) {
        self.backend = backend
        self.engine = engine
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown { await backend.run(keeping: engine) }
    }
}
