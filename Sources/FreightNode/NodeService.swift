import ServiceLifecycle

/// Runs a ``NodeEngine`` as a `Service`: started on `run()`, stopped on graceful shutdown or cancellation.
public struct NodeService: Service {
    public let engine: NodeEngine
    let onReady: @Sendable (NodeEngine) -> Void

    public init(engine: NodeEngine, onReady: @escaping @Sendable (NodeEngine) -> Void = { _ in }) {
        self.engine = engine
        self.onReady = onReady
    }

    public func run() async throws {
        try await engine.start()
        onReady(engine)
        await withGracefulShutdownHandler {
            while !Task.isCancelled && !Task.isShuttingDownGracefully {
                try? await Task.sleep(for: .milliseconds(200))
            }
        } onGracefulShutdown: {
        }
        await engine.stop()
    }
}
