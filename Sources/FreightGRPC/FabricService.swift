import FreightClient
import FreightCore
import FreightDirectory
import FreightNode
import GRPCCore
import GRPCProtobuf
import NIOCore
import SwiftProtobuf

/// The gRPC API of one node (proto/freight/v1/fabric.proto, docs/grpc-api.md). It is an app of its own node: every
/// call goes through one ``FreightClient`` attached to the node's Unix socket (shared memory when the node takes
/// it), so a gRPC app gets exactly the Swift client's semantics. Watch reads the node's index directly.
public struct FabricService: RegistrableRPCService {
    let engine: NodeEngine
    let client: FreightClient
    /// Bytes of one `BodyChunk.data` the server sends (1 MiB measured faster than 256 KiB or 4 MiB on loopback).
    let pieceBytes: Int

    public init(engine: NodeEngine, client: FreightClient, pieceBytes: Int = 1 << 20) {
        self.engine = engine
        self.client = client
        self.pieceBytes = pieceBytes
    }

    /// The methods of `freight.v1.FabricService`, registered by hand so that the two that carry bodies use the
    /// coders of BodyCoding.swift; every call sees its metadata (the caller's token).
    public func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        typealias Methods = Freight_V1_FabricService.Method
        router.registerHandler(
            forMethod: Methods.Receive.descriptor, deserializer: ProtobufDeserializer<Freight_V1_ReceiveRequest>(),
            serializer: ReceiveEventSerializer()
        ) { request, context in
            try await receive(request: ServerRequest(stream: request), context: context)
        }
        router.registerHandler(
            forMethod: Methods.Send.descriptor, deserializer: SendPartDeserializer(),
            serializer: ProtobufSerializer<Freight_V1_SendResponse>()
        ) { request, context in
            StreamingServerResponse(single: try await send(request: request, context: context))
        }
        Self.registerUnary(Methods.Resolve.descriptor, with: &router, resolve)
        router.registerHandler(
            forMethod: Methods.Watch.descriptor, deserializer: ProtobufDeserializer<Freight_V1_WatchRequest>(),
            serializer: ProtobufSerializer<Freight_V1_WatchResponse>()
        ) { request, context in
            let single = try await ServerRequest(stream: request)
            return StreamingServerResponse { writer in
                try await watch(request: single.message, response: writer, context: context)
                return [:]
            }
        }
        Self.registerUnary(Methods.Status.descriptor, with: &router, status)
        Self.registerUnary(Methods.AttachFilter.descriptor, with: &router, attachFilter)
        Self.registerUnary(Methods.DetachFilter.descriptor, with: &router, detachFilter)
        Self.registerUnary(Methods.ListFilters.descriptor, with: &router, listFilters)
    }

    /// A unary method whose handler sees the request's metadata (the caller's token).
    private static func registerUnary<
        Transport: ServerTransport, Input: SwiftProtobuf.Message, Output: SwiftProtobuf.Message
    >(
        _ descriptor: MethodDescriptor, with router: inout RPCRouter<Transport>,
        _ handle: @escaping @Sendable (ServerRequest<Input>) async throws -> Output
    ) {
        router.registerHandler(
            forMethod: descriptor, deserializer: ProtobufDeserializer<Input>(), serializer: ProtobufSerializer<Output>()
        ) { request, context in
            let single = try await ServerRequest(stream: request)
            let response = try await handle(single)
            return StreamingServerResponse(single: ServerResponse(message: response, metadata: [:]))
        }
    }

    /// A unary method of protobuf messages: one request in, one response out.
    private static func registerUnary<
        Transport: ServerTransport, Input: SwiftProtobuf.Message, Output: SwiftProtobuf.Message
    >(
        _ descriptor: MethodDescriptor, with router: inout RPCRouter<Transport>,
        _ handle: @escaping @Sendable (Input, ServerContext) async throws -> Output
    ) {
        router.registerHandler(
            forMethod: descriptor, deserializer: ProtobufDeserializer<Input>(), serializer: ProtobufSerializer<Output>()
        ) { request, context in
            let single = try await ServerRequest(stream: request)
            let response = try await handle(single.message, context)
            return StreamingServerResponse(single: ServerResponse(message: response, metadata: [:]))
        }
    }

    // MARK: Who calls (docs/hardening.md)

    /// The caller's identity from its `authorization: Bearer SECRET` metadata, on a node with an access list; nil
    /// on a node without one (every caller may do everything, as on the Unix socket).
    func caller(_ metadata: Metadata) throws -> AppIdentity? {
        guard let access = engine.configuration.access else { return nil }
        guard let value = metadata[stringValues: "authorization"].first(where: { _ in true }),
            value.hasPrefix("Bearer ")
        else {
            throw RPCError(
                code: .unauthenticated,
                message: "node \(engine.name) has an access list: present a token as 'authorization: Bearer SECRET'")
        }
        guard let name = access.token(secret: String(value.dropFirst("Bearer ".count))) else {
            throw RPCError(code: .unauthenticated, message: "the token presented is not in this node's access list")
        }
        return AppIdentity(token: name)
    }

    /// Throws the access list's refusal when `identity` may not `action` on `pattern`.
    func authorize(_ identity: AppIdentity?, _ action: AccessList.Action, _ pattern: AddressPattern) throws {
        guard let access = engine.configuration.access else { return }
        guard let identity else {
            throw RPCError(code: .unauthenticated, message: "node \(engine.name) has an access list: present a token")
        }
        if let refusal = access.refusal(identity, action, pattern) {
            throw RPCError(code: .permissionDenied, message: refusal.message)
        }
    }

    // MARK: Receive

    func receive(
        request: ServerRequest<Freight_V1_ReceiveRequest>, context: ServerContext
    ) async throws -> StreamingServerResponse<ReceiveEvent> {
        let identity = try caller(request.metadata)
        return StreamingServerResponse(metadata: [:]) { writer in
            try await Self.endingWithTheRPC { try await receiveMessages(request.message, writer, as: identity) }
            return [:]
        }
    }

    private func receiveMessages(
        _ request: Freight_V1_ReceiveRequest, _ response: RPCWriter<ReceiveEvent>, as identity: AppIdentity?
    ) async throws {
        try authorize(identity, .receive, try mapped { try AddressPattern(request.pattern) })
        let subscription = try await mapped {
            try await client.receive(request.pattern, group: request.group.isEmpty ? nil : request.group)
        }
        try await response.write(
            .event(
                .with {
                    $0.registered = .with {
                        $0.endpointID = subscription.endpointID
                        $0.node = client.nodeName
                    }
                }))
        // Taking a chunk credits the sender; a chunk is taken only once the previous one was written, and a write
        // waits while the client does not read (HTTP/2 flow control): a client that stops reading stops its sender.
        for try await message in subscription {
            try await response.write(
                .event(
                    .with {
                        $0.start = .with {
                            $0.messageID = message.id
                            $0.source = message.source
                            $0.destination = message.destination
                            $0.length = message.length
                            $0.contentType = message.contentType
                            $0.attributes = message.attributes
                            $0.path = message.path
                            $0.replyTo = message.replyTo
                            $0.traceparent = message.traceparent
                            $0.tracestate = message.tracestate
                            $0.filters = message.filters
                        }
                    }))
            // A message that fails ends with a `failed` event, and the stream goes on with the next one.
            var body = message.body.makeAsyncIterator()
            while true {
                let next: BodyChunk?
                do {
                    next = try await body.next()
                } catch let error as FreightError {
                    try await response.write(
                        .event(
                            .with {
                                $0.failed = .with {
                                    $0.messageID = message.id
                                    $0.reason = error.message
                                }
                            }))
                    break
                }
                guard let chunk = next else {
                    try await response.write(.event(.with { $0.end = .with { $0.messageID = message.id } }))
                    break
                }
                // Written from where the chunk lies, a piece at a time (ReceiveEventSerializer).
                var start = 0
                while start < chunk.count {
                    let count = min(pieceBytes, chunk.count - start)
                    try await response.write(
                        .piece(messageID: message.id, chunk: chunk, range: start..<(start + count)))
                    start += count
                }
            }
        }
    }

    // MARK: Send

    /// The most bytes of `traceparent` or `tracestate` metadata taken (W3C allows 512 for tracestate); longer is
    /// ignored, and the message starts a trace of its own.
    static let traceContextBytesMax = 512

    func send(
        request: StreamingServerRequest<SendPart>, context: ServerContext
    ) async throws -> ServerResponse<Freight_V1_SendResponse> {
        let identity = try caller(request.metadata)
        // The caller's trace context (W3C `traceparent`/`tracestate` metadata, as OpenTelemetry's gRPC
        // instrumentation sends it): the message joins that trace (docs/observability.md).
        let trace = (
            request.metadata[stringValues: "traceparent"].first(where: { _ in true }),
            request.metadata[stringValues: "tracestate"].first(where: { _ in true })
        )
        return ServerResponse(message: try await send(request.messages, as: identity, trace: trace), metadata: [:])
    }

    private func send(
        _ request: RPCAsyncSequence<SendPart, any Error>, as identity: AppIdentity?,
        trace: (parent: String?, state: String?)
    ) async throws -> Freight_V1_SendResponse {
        var requests = request.makeAsyncIterator()
        guard let first = try await requests.next(), case .header(let header) = first else {
            throw RPCError(code: .invalidArgument, message: "the first SendRequest must carry the header")
        }
        let address = try mapped { try Address(header.destination) }
        try authorize(identity, .send, AddressPattern(address))
        let destination = address.description
        guard header.length <= UInt64(Int64.max) else {
            throw RPCError(code: .invalidArgument, message: "length \(header.length) is too large")
        }
        let chunkBytes = header.chunkBytes == 0 ? Limits.chunkBytesDefault : Int(header.chunkBytes)
        let writer = BodyWriter(limitBytes: max(chunkBytes, 8 << 20))
        if !header.replyTo.isEmpty { _ = try mapped { try Address(header.replyTo) } }
        var options = SendOptions(
            contentType: header.contentType, attributes: header.attributes, chunkBytes: chunkBytes,
            replyTo: header.replyTo.isEmpty ? nil : header.replyTo)
        if let parent = trace.parent, parent.utf8.count <= Self.traceContextBytesMax {
            options.traceparent = parent
            if let state = trace.state, state.utf8.count <= Self.traceContextBytesMax { options.tracestate = state }
        }
        let client = self.client
        let sending = Task {
            try await client.send(
                to: destination, body: .stream(writer, length: Int64(header.length)), options: options)
        }
        do {
            var total: UInt64 = 0
            while let next = try await requests.next() {
                guard case .data(let data) = next else {
                    throw RPCError(code: .invalidArgument, message: "a SendRequest after the first must carry data")
                }
                guard data.readableBytes <= Limits.grpcDataBytesMax else {
                    throw RPCError(
                        code: .resourceExhausted,
                        message:
                            "a data part of \(data.readableBytes) bytes is over the \(Limits.grpcDataBytesMax)-byte limit"
                    )
                }
                total += UInt64(data.readableBytes)
                guard total <= header.length else {
                    throw RPCError(
                        code: .invalidArgument, message: "the body is longer than the \(header.length) bytes declared")
                }
                try await writer.write(data)
            }
            guard total == header.length else {
                throw RPCError(
                    code: .invalidArgument, message: "the body ended after \(total) of \(header.length) bytes")
            }
            writer.finish()
        } catch {
            // The fabric's own reason (no route, a receiver gone) wins over the writer's echo of it.
            let reason: FreightError
            if let rpc = error as? RPCError {
                reason = FreightError(.cancelled, rpc.message)
            } else {
                reason = (error as? FreightError) ?? FreightError(.cancelled, "the sender went away: \(error)")
            }
            writer.fail(reason)
            if case .failure(let sendError) = await sending.result, !(error is RPCError) {
                throw Self.rpcError(sendError)
            }
            throw error is RPCError ? error : Self.rpcError(error)
        }
        let report = try await mapped { try await sending.value }
        return .with {
            $0.messageID = report.messageID
            $0.bytes = report.bytes
            $0.seconds = report.seconds
            $0.deliveries = report.deliveries.map { delivery in
                .with {
                    $0.node = delivery.node
                    $0.endpointID = delivery.endpointID
                    $0.address = delivery.address
                    $0.app = delivery.app
                    $0.path = delivery.path
                }
            }
            $0.failures = report.failures.map { failure in
                .with {
                    $0.node = failure.node
                    $0.endpointID = failure.endpointID
                    $0.reason = failure.error.message
                    $0.ackedBytes = failure.ackedBytes
                }
            }
        }
    }

    // MARK: Resolve, watch, status

    func resolve(request: Freight_V1_ResolveRequest, context: ServerContext) async throws
        -> Freight_V1_ResolveResponse
    {
        let found = try await mapped { try await client.resolve(request.pattern) }
        return .with {
            $0.endpoints = found.endpoints.map { endpoint in
                .with {
                    $0.node = endpoint.node
                    $0.id = endpoint.id
                    $0.pattern = endpoint.pattern
                    $0.group = endpoint.group ?? ""
                    $0.app = endpoint.app
                }
            }
            $0.truncated = found.truncated
        }
    }

    func watch(
        request: Freight_V1_WatchRequest,
        response: RPCWriter<Freight_V1_WatchResponse>,
        context: ServerContext
    ) async throws {
        let pattern = try mapped { try AddressPattern(request.pattern) }
        try await Self.endingWithTheRPC { try await watchEvents(pattern, response) }
    }

    private func watchEvents(_ pattern: AddressPattern, _ response: RPCWriter<Freight_V1_WatchResponse>) async throws {
        let events = try await mapped { try await engine.watch(pattern) }
        do {
            for try await event in events {
                try await response.write(
                    .with {
                        switch event {
                        case .added(let record):
                            $0.kind = .added
                            $0.endpoint = Self.endpoint(record)
                        case .removed(let record):
                            $0.kind = .removed
                            $0.endpoint = Self.endpoint(record)
                        case .synced:
                            $0.kind = .synced
                        }
                    })
            }
        } catch let error as FreightError {
            throw Self.rpcError(error)
        }
    }

    func status(request: Freight_V1_StatusRequest, context: ServerContext) async throws
        -> Freight_V1_StatusResponse
    {
        let status = try await mapped { try await client.status() }
        return .with {
            $0.name = status.name
            $0.cluster = status.cluster
            $0.listen = status.listen
            $0.localEndpoints = status.localEndpoints
            $0.knownEndpoints = status.knownEndpoints
            $0.messagesInFlight = status.messagesInFlight
            $0.messagesDelivered = status.messagesDelivered
            $0.messagesFailed = status.messagesFailed
            $0.bytesIn = status.bytesIn
            $0.bytesOut = status.bytesOut
            $0.peers = status.peers.map { peer in
                .with {
                    $0.name = peer.name
                    $0.listen = peer.listen
                    $0.streamsUp = peer.streamsUp
                    $0.endpoints = peer.endpoints
                }
            }
        }
    }

    /// Runs a streaming handler in a task that is cancelled when gRPC cancels the RPC (the client went away or
    /// cancelled): gRPC only signals it, and a handler waiting for the next message would otherwise keep its
    /// endpoint or watch alive.
    static func endingWithTheRPC(_ body: @escaping @Sendable () async throws -> Void) async throws {
        let work = Task { try await body() }
        try await withTaskCancellationHandler {
            try await withRPCCancellationHandler {
                try await work.value
            } onCancelRPC: {
                work.cancel()
            }
        } onCancel: {
            work.cancel()
        }
    }

    // MARK: Errors

    static func endpoint(_ record: EndpointRecord) -> Freight_V1_Endpoint {
        .with {
            $0.node = record.key.node
            $0.id = record.key.id
            $0.pattern = record.pattern.description
            $0.group = record.group ?? ""
            $0.app = record.app
        }
    }

    /// The status code a client can act on for each of Freight's errors.
    static func rpcError(_ error: any Error) -> RPCError {
        if let rpc = error as? RPCError { return rpc }
        guard let freight = error as? FreightError else {
            if error is CancellationError { return RPCError(code: .cancelled, message: "cancelled") }
            return RPCError(code: .internalError, message: "\(error)")
        }
        let code: RPCError.Code =
            switch freight.code {
            case .invalidAddress, .invalidArgument: .invalidArgument
            case .noRoute: .notFound
            case .resourceExhausted: .resourceExhausted
            case .receiverGone, .senderGone, .nodeGone: .aborted
            case .checksumMismatch: .dataLoss
            case .connectionFailed: .unavailable
            case .cancelled: .cancelled
            case .duplicate: .alreadyExists
            case .permissionDenied: .permissionDenied
            case .timedOut: .deadlineExceeded
            default: .internalError
            }
        return RPCError(code: code, message: freight.message)
    }

    func mapped<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw Self.rpcError(error)
        }
    }

    func mapped<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            throw Self.rpcError(error)
        }
    }
}
