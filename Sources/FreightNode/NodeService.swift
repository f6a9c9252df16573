import ServiceLifecycle

/// Runs a ``NodeEngine`` as a `Service`: started on `run()`, stopped on graceful shutdown or cancellation.
public struct NodeService: Service {
    public let engine: NodeEngine
    let attach: @Sendable (NodeEngine) async throws -> (@Sendable () async -> Void)
    let onReady: @Sendable (NodeEngine) -> Void

    /// - Parameters:
    ///   - attach: starts what runs beside the node once it listens (its gRPC API); returns how to stop it.
    ///   - onReady: called when the node and everything attached are up.
    public init(
        engine: NodeEngine,
        attach: @escaping @Sendable (NodeEngine) async throws -> (@Sendable () async -> Void) = { _ in {} },
        onReady: @escaping @Sendable (NodeEngine) -> Void = { _ in }
    ) {
        self.engine = engine
        self.attach = attach
        self.onReady = onReady
    }

    public func run() async throws {
        try await engine.start()
        let detach: @Sendable () async -> Void
        do {
            detach = try await attach(engine)
        } catch {
            await engine.stop()
            throw error
        }
        onReady(engine)
        // Until the service group shuts down gracefully (SIGTERM, SIGINT) or is cancelled: no polling.
        try? await gracefulShutdown()
        await detach()
        await engine.stop()
    }
}
