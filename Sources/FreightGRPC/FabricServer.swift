import FreightClient
import FreightCore
import FreightNode
import FreightTransport
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NIOCore
import ServiceLifecycle

/// Serves a node's gRPC API (``FabricService``) on HTTP/2 over TCP, as a `Service` in the node's `ServiceGroup`
/// (listed after ``NodeService`` so that it stops first): it waits for the node to listen, joins it as an app through
/// its Unix socket (or its TCP port when it has none), serves until graceful shutdown or cancellation, and tells
/// `onListening` the port it bound (the one chosen when asked for port 0).
public struct FabricServer: Service {
    let engine: NodeEngine
    let host: String
    let port: Int
    let logger: Logger
    let onListening: @Sendable (Int) -> Void

    public init(
        engine: NodeEngine, host: String, port: Int, logger: Logger,
        onListening: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.engine = engine
        self.host = host
        self.port = port
        self.logger = logger
        self.onListening = onListening
    }

    /// HTTP/2 settings that matter for large bodies: the default 64 KiB window holds a stream to about 100 MB/s on
    /// loopback; an 8 MiB window and 1 MiB frames let it run at several hundred MB/s.
    public static func transportConfig() -> HTTP2ServerTransport.Posix.Config {
        .defaults {
            $0.http2.targetWindowSize = 16 << 20
            $0.http2.maxFrameSize = 1 << 20
            // Advertised, so clients queue calls beyond it instead of having the connection closed (NIO's HTTP/2
            // enforces 100 when nothing is said). Each Receive call is one endpoint of the node's gRPC session.
            $0.http2.maxConcurrentStreams = Limits.registrationsPerSessionMax
            $0.rpc.maxRequestPayloadSize = 2 * Limits.grpcDataBytesMax
            $0.channelDebuggingCallbacks.onAcceptTCPConnection = { channel in
                channel.setOption(ChannelOptions.recvAllocator, value: Self.receiveAllocator)
            }
        }
    }

    /// Reads of up to 1 MiB once a connection moves bytes (NIO's default stops at 64 KiB: each read then costs a
    /// system call, and on loopback an acknowledgement processed in it, per 64 KiB), starting at 2 KiB for a caller
    /// that has sent nothing much.
    public static let receiveAllocator = AdaptiveRecvByteBufferAllocator(
        minimum: 2048, initial: 2048, maximum: 1 << 20)

    public func run() async throws {
        try await engine.waitUntilStarted()
        let node: NodeAddress = engine.configuration.socketPath.map { .unix(path: $0) } ?? engine.boundListen
        // The API is an app of its own node that the node trusts (its own secret): each call is checked here.
        let client = try await FreightClient.connect(
            to: node, label: "grpc", token: engine.internalSecret, logger: logger)
        if engine.configuration.access == nil {
            logger.warning(
                "gRPC API on \(host):\(port) has no access list (--access): whoever reaches it may receive and send anything"
            )
        }
        let transport = HTTP2ServerTransport.Posix(
            address: .ipv4(host: host, port: port), transportSecurity: .plaintext, config: Self.transportConfig())
        let server = GRPCServer(transport: transport, services: [FabricService(engine: engine, client: client)])
        do {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await server.serve() }
                group.addTask {
                    // On graceful shutdown (or cancellation): stop taking calls, and detach from the node, which
                    // ends the calls that stream what the node delivers.
                    try? await gracefulShutdown()
                    server.beginGracefulShutdown()
                    await client.close()
                }
                // No address: `serve()` failed to bind, and its error (the one worth reporting) ends the group.
                if let address = try? await transport.listeningAddress.ipv4 { onListening(address.port) }
            }
        } catch {
            await client.close()
            throw FreightError(.io, "cannot serve gRPC on \(host):\(port): \(error)")
        }
    }
}
