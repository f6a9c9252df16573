import FreightCore
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore

/// Client-side settings for Freight's gRPC API from Swift: the same large-body tuning as the server.
public enum FabricGRPCClient {
    /// An HTTP/2 transport to a node's `--grpc` address with windows and message limits sized for large bodies.
    public static func transport(host: String, port: Int) throws -> HTTP2ClientTransport.Posix {
        try HTTP2ClientTransport.Posix(
            target: .ipv4(address: host, port: port),
            transportSecurity: .plaintext,
            config: .defaults {
                $0.http2.targetWindowSize = 16 << 20
                $0.http2.maxFrameSize = 1 << 20
                $0.channelDebuggingCallbacks.onCreateTCPConnection = { channel in
                    channel.setOption(ChannelOptions.recvAllocator, value: FabricServer.receiveAllocator)
                }
            },
            serviceConfig: ServiceConfig(methodConfig: [
                MethodConfig(
                    names: [MethodConfig.Name(service: "freight.v1.FabricService")],
                    maxRequestMessageBytes: 2 * Limits.grpcDataBytesMax,
                    maxResponseMessageBytes: 2 * Limits.grpcDataBytesMax)
            ])
        )
    }
}
