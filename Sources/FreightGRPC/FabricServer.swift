import FreightClient
import FreightCore
import FreightNode
import FreightTransport
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging

/// Serves a node's gRPC API (``FabricService``) on HTTP/2 over TCP, until ``stop()``.
public final class FabricServer: Sendable {
    let server: GRPCServer<HTTP2ServerTransport.Posix>
    let serving: Task<Void, any Error>
    let client: FreightClient
    /// The port it listens on (the one chosen when asked for port 0).
    public let port: Int

    private init(
        server: GRPCServer<HTTP2ServerTransport.Posix>, serving: Task<Void, any Error>, client: FreightClient, port: Int
    ) {
        self.server = server
        self.serving = serving
        self.client = client
        self.port = port
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
        }
    }

    /// Starts serving on `host:port` (an IPv4 address) for `engine`, whose apps it joins through the node's Unix
    /// socket (or its TCP port when it has none).
    public static func start(engine: NodeEngine, host: String, port: Int, logger: Logger) async throws
        -> FabricServer
    {
        let node: NodeAddress = engine.configuration.socketPath.map { .unix(path: $0) } ?? engine.boundListen
        let client = try await FreightClient.connect(to: node, label: "grpc", logger: logger)
        let transport = HTTP2ServerTransport.Posix(
            address: .ipv4(host: host, port: port), transportSecurity: .plaintext, config: transportConfig())
        let server = GRPCServer(transport: transport, services: [FabricService(engine: engine, client: client)])
        let serving = Task { try await server.serve() }
        do {
            guard let address = try await transport.listeningAddress.ipv4 else {
                throw FreightError(.internalError, "the gRPC server did not bind an IPv4 address")
            }
            return FabricServer(server: server, serving: serving, client: client, port: address.port)
        } catch {
            server.beginGracefulShutdown()
            _ = await serving.result
            await client.close()
            throw FreightError(.io, "cannot serve gRPC on \(host):\(port): \(error)")
        }
    }

    /// Stops accepting calls, ends the ones in progress, and detaches from the node.
    public func stop() async {
        server.beginGracefulShutdown()
        await client.close()
        _ = await serving.result
    }
}
