import Foundation
import FreightCore
import FreightDirectory
import FreightWire
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import Synchronization

/// The etcd directory backend (docs/directory.md): a node's endpoints and the node itself are keys under
/// `/freight/CLUSTER/`, attached to the node's lease and kept alive while it lives; every node reads the prefix and
/// watches it, keeping its index in step. Speaks etcd's v3 gRPC API (code generated from etcd's own .proto files).
public final class EtcdDirectory: DirectoryBackend, @unchecked Sendable {  // mutable state is behind `state`
    public let kind = "etcd"
    let servers: [(host: String, port: Int)]
    let leaseTTL: Int
    let logger: Logger
    /// Operations per transaction: etcd's default `--max-txn-ops`.
    static let txnOpsMax = 128
    /// Least time between two unary calls to etcd. etcd's gRPC server answers every unary call with an RST_STREAM
    /// (it finishes before the client's end of stream), and the gRPC client closes a connection that receives more
    /// than 200 of those in 10 seconds (its denial-of-service guard): so at most 14 calls a second, each
    /// transaction carrying up to 128 operations that queued meanwhile.
    static let callSpacing = Duration.milliseconds(70)
    let lastCall = Mutex(ContinuousClock.now - .seconds(1))

    /// Waits until the next unary call may go.
    func paced() async throws {
        let wait = lastCall.withLock { last -> Duration in
            let now = ContinuousClock.now
            let next = max(now, last + Self.callSpacing)
            last = next
            return next - now
        }
        if wait > .zero { try await Task.sleep(for: wait) }
    }

    /// Largest gRPC message to or from etcd.
    static let messageBytesMax = 256 << 20
    /// The pause between one session with etcd and the next, after it failed.
    static let sessionRetryDelay = Duration.seconds(1)
    /// How long one call to etcd may take.
    static let callTimeout = Duration.seconds(5)
    /// Keep-alives per lease TTL.
    static let keepAlivesPerTTL = 3
    /// Keys per Range page when reading the prefix.
    static let rangePage: Int64 = 10_000

    enum Operation {
        /// Registrations wait for etcd until their deadline (``Limits/directoryWaitSeconds``).
        case put([EndpointRecord], deadline: ContinuousClock.Instant, @Sendable (FreightError?) -> Void)
        case delete([EndpointKey])
        /// A function bound (a record) or unbound (nil) at an address: cluster-wide keys, on no lease.
        case function(Address, FunctionRecord?, @Sendable (FreightError?) -> Void)
    }

    struct State {
        var health = DirectoryHealth.unreachable("not connected yet")
        var pending: [Operation] = []
        var wake: CheckedContinuation<Void, Never>?
    }

    let state = Mutex(State())

    /// - Parameter url: `etcd://HOST:PORT[,HOST:PORT...]` (IPv4 addresses).
    public init(url: String, leaseTTL: Int = 10, logger: Logger) throws(FreightError) {
        guard url.hasPrefix("etcd://") else {
            throw FreightError(.invalidArgument, "--directory must be mesh or etcd://HOST:PORT[,HOST:PORT...]")
        }
        var servers: [(String, Int)] = []
        for part in url.dropFirst("etcd://".count).split(separator: ",") {
            guard case .tcp(let host, let port) = try NodeAddress(String(part)) else {
                throw FreightError(.invalidArgument, "etcd server '\(part)' must be HOST:PORT")
            }
            servers.append((host, port))
        }
        guard !servers.isEmpty else { throw FreightError(.invalidArgument, "--directory etcd:// names no server") }
        guard (2...3600).contains(leaseTTL) else {
            throw FreightError(.invalidArgument, "--lease-ttl \(leaseTTL) is out of range 2...3600 seconds")
        }
        self.servers = servers
        self.leaseTTL = leaseTTL
        self.logger = logger
    }

    public var health: DirectoryHealth { state.withLock { $0.health } }

    // MARK: DirectoryBackend

    public func run(keeping client: any DirectoryClient) async {
        await supervise(client)
    }

    /// Queues `records` for etcd. While etcd cannot be reached (the node has just started, or etcd is away) they
    /// wait for it up to ``Limits/directoryWaitSeconds``, then fail with the reason; an app that attaches the moment
    /// the node's socket exists is answered once the directory holds its endpoint.
    public func publish(_ records: [EndpointRecord], completion: @escaping @Sendable (FreightError?) -> Void) {
        let deadline = ContinuousClock.now + .seconds(Limits.directoryWaitSeconds)
        let refused: FreightError? = state.withLock { state in
            guard state.pending.count < Limits.directoryPendingMax else {
                return FreightError(
                    .resourceExhausted,
                    "\(Limits.directoryPendingMax) registrations are waiting for etcd already; try again")
            }
            state.pending.append(.put(records, deadline: deadline, completion))
            return nil
        }
        if let refused { return completion(refused) }
        wakePublisher()
    }

    /// Fails the registrations that waited past their deadline for an etcd that cannot be reached; with `all`,
    /// every one (the directory stops). Withdrawals are dropped: reconciliation removes what the node no longer holds.
    private func expireWaiting(_ reason: String, all: Bool = false) {
        let now = ContinuousClock.now
        let expired = state.withLock { state -> [Operation] in
            var expired: [Operation] = []
            state.pending.removeAll { operation in
                switch operation {
                case .put(_, let deadline, _):
                    guard all || deadline <= now else { return false }
                    expired.append(operation)
                    return true
                case .delete:
                    return true
                case .function:
                    expired.append(operation)
                    return true
                }
            }
            return expired
        }
        for case .function(let address, _, let completion) in expired {
            completion(
                FreightError(.connectionFailed, "directory unreachable: \(reason); function \(address) unchanged"))
        }
        for case .put(_, _, let completion) in expired {
            completion(
                FreightError(
                    .connectionFailed,
                    "directory unreachable: \(reason); the endpoint was not registered (waited \(Limits.directoryWaitSeconds) s for etcd)"
                ))
        }
    }

    public func withdraw(_ keys: [EndpointKey]) {
        // While etcd is unreachable the deletes wait for reconciliation, which removes every key of this node that
        // it no longer holds.
        // Past the limit as well: reconciliation in the next session deletes what this node no longer holds.
        let queued = state.withLock { state -> Bool in
            guard case .reachable = state.health, state.pending.count < Limits.directoryPendingMax else {
                return false
            }
            state.pending.append(.delete(keys))
            return true
        }
        if queued { wakePublisher() }
    }

    /// Binds `record` to its address in etcd, or with nil unbinds `address`; `completion` runs once etcd holds
    /// it, or with the reason it cannot (etcd unreachable now: at once).
    public func function(
        _ address: Address, _ record: FunctionRecord?, completion: @escaping @Sendable (FreightError?) -> Void
    ) {
        let refused: FreightError? = state.withLock { state in
            guard case .reachable = state.health else {
                return FreightError(.connectionFailed, "directory unreachable: etcd does not answer now")
            }
            guard state.pending.count < Limits.directoryPendingMax else {
                return FreightError(.resourceExhausted, "\(Limits.directoryPendingMax) writes wait for etcd; try again")
            }
            state.pending.append(.function(address, record, completion))
            return nil
        }
        if let refused { return completion(refused) }
        wakePublisher()
    }

    private func wakePublisher() {
        state.withLock { state in
            defer { state.wake = nil }
            return state.wake
        }?.resume()
    }

    // MARK: Sessions

    /// Keeps a session with etcd up: on any failure the directory is marked unreachable, waiting operations fail,
    /// and a new session starts a second later.
    private func supervise(_ client: any DirectoryClient) async {
        while !Task.isCancelled {
            do {
                try await session(client)
            } catch {
                if Task.isCancelled { break }
                let reason = Self.describe(error)
                state.withLock { state in
                    if case .reachable = state.health {
                        logger.warning("etcd directory unreachable: \(reason)")
                    }
                    state.health = .unreachable(reason)
                }
                expireWaiting(reason)
            }
            // A second before the next session (cancelled at once when the node stops).
            try? await Task.sleep(for: Self.sessionRetryDelay)
            if case .unreachable(let reason) = health { expireWaiting(reason) }
        }
        expireWaiting("the node is stopping", all: true)
    }

    private func session(_ engine: any DirectoryClient) async throws {
        let transport = try HTTP2ClientTransport.Posix(
            target: .ipv4(pairs: servers.map { (host: $0.host, port: $0.port) }),
            transportSecurity: .plaintext,
            serviceConfig: ServiceConfig(methodConfig: [
                MethodConfig(
                    names: ["KV", "Lease", "Watch"].map { MethodConfig.Name(service: "etcdserverpb.\($0)") },
                    maxRequestMessageBytes: 64 << 20, maxResponseMessageBytes: 64 << 20)
            ])
        )
        try await withGRPCClient(transport: transport) { client in
            let kv = Etcdserverpb_KV.Client(wrapping: client)
            let leases = Etcdserverpb_Lease.Client(wrapping: client)
            let watches = Etcdserverpb_Watch.Client(wrapping: client)
            let layout = EtcdLayout(cluster: engine.clusterName)
            // Watch responses carry up to 1,000 revisions of events: far over gRPC's default 4 MiB. (The NIO
            // transport applies `maxRequestMessageBytes` to what it receives as well.)
            var streaming = CallOptions.defaults
            streaming.maxRequestMessageBytes = Self.messageBytesMax
            streaming.maxResponseMessageBytes = Self.messageBytesMax
            var callOptions = streaming
            callOptions.timeout = Self.callTimeout
            let options = callOptions
            let streamOptions = streaming

            try await paced()
            let lease = try await leases.leaseGrant(.with { $0.ttl = Int64(leaseTTL) }, options: options).id
            try await reconcileOwnKeys(engine, kv: kv, lease: lease, layout: layout, options: options)
            let (revision, nodes, endpoints, functions) = try await readAll(kv, layout: layout, options: options)
            engine.directorySnapshot(nodes: nodes, endpoints: endpoints, functions: functions)
            state.withLock { $0.health = .reachable }
            logger.info("etcd directory: \(endpoints.count) endpoints on \(nodes.count) nodes at revision \(revision)")

            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await Self.labelled("lease keep-alive") {
                        try await self.keepAlive(leases, lease: lease, options: streamOptions)
                    }
                }
                group.addTask {
                    try await Self.labelled("watch") {
                        try await self.watch(
                            watches, from: revision + 1, engine: engine, layout: layout, options: streamOptions)
                    }
                }
                group.addTask {
                    try await Self.labelled("write") {
                        try await self.publishLoop(kv, lease: lease, layout: layout, options: options)
                    }
                }
                try await group.next()
                group.cancelAll()
            }
        }
    }

    /// Puts this node's key and every endpoint it holds under the new lease, and deletes keys of this node that it
    /// no longer holds (withdrawn while etcd was away, or left by an earlier session).
    private func reconcileOwnKeys(
        _ engine: any DirectoryClient, kv: Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>, lease: Int64,
        layout: EtcdLayout, options: CallOptions
    ) async throws {
        let local = try await engine.localRecords()
        let held = Set(local.map { layout.endpointKey($0.key) })
        var operations: [Etcdserverpb_RequestOp] = [
            layout.put(
                layout.nodeKey(engine.nodeName),
                value: try layout.nodeValue(try await engine.selfRecord()),
                lease: lease)
        ]
        operations += try local.map {
            layout.put(layout.endpointKey($0.key), value: try layout.endpointValue($0), lease: lease)
        }
        var stale: [Data] = []
        var next = layout.ownEndpointsPrefix(engine.nodeName)
        let end = EtcdLayout.rangeEnd(of: next)
        while true {
            try await paced()
            let page = try await kv.range(
                .with {
                    $0.key = next
                    $0.rangeEnd = end
                    $0.keysOnly = true
                    $0.limit = Self.rangePage
                }, options: options)
            stale += page.kvs.map(\.key).filter { !held.contains($0) }
            guard page.more, let last = page.kvs.last?.key else { break }
            next = last + Data([0])
        }
        operations += stale.map { key in .with { $0.requestDeleteRange = .with { $0.key = key } } }
        try await commit(kv, operations, options: options)
    }

    /// Every node and endpoint under the prefix, at one revision (read in pages).
    private func readAll(
        _ kv: Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>, layout: EtcdLayout, options: CallOptions
    ) async throws -> (
        revision: Int64, nodes: [NodeRecord], endpoints: [EndpointRecord], functions: [FunctionRecord]
    ) {
        var revision: Int64 = 0
        var nodes: [NodeRecord] = []
        var endpoints: [EndpointRecord] = []
        var functions: [FunctionRecord] = []
        var next = layout.prefix
        let end = EtcdLayout.rangeEnd(of: layout.prefix)
        while true {
            let pinned = revision
            try await paced()
            let page = try await kv.range(
                .with {
                    $0.key = next
                    $0.rangeEnd = end
                    $0.limit = Self.rangePage
                    $0.revision = pinned
                }, options: options)
            if revision == 0 { revision = page.header.revision }
            for item in page.kvs {
                switch layout.decode(key: item.key, value: item.value) {
                case .endpoint(let record)?: endpoints.append(record)
                case .node(let record)?: nodes.append(record)
                case .function(let record)?: functions.append(record)
                default: break
                }
            }
            guard page.more, let last = page.kvs.last?.key else { break }
            next = last + Data([0])
        }
        return (revision, nodes, endpoints, functions)
    }

    /// Sends a keep-alive every third of the TTL; fails when etcd says the lease expired or stops answering.
    private func keepAlive(
        _ leases: Etcdserverpb_Lease.Client<HTTP2ClientTransport.Posix>, lease: Int64, options: CallOptions
    ) async throws {
        let lastAnswer = Mutex(ContinuousClock.now)
        let interval = Duration.milliseconds(leaseTTL * 1000 / Self.keepAlivesPerTTL)
        let ttl = Duration.seconds(leaseTTL)
        try await leases.leaseKeepAlive(options: options) { writer in
            while true {
                try await writer.write(.with { $0.id = lease })
                try await Task.sleep(for: interval)
                if ContinuousClock.now - lastAnswer.withLock({ $0 }) > ttl {
                    throw FreightError(.connectionFailed, "etcd stopped answering keep-alives")
                }
            }
        } onResponse: { response in
            for try await answer in response.messages {
                guard answer.ttl > 0 else {
                    throw FreightError(.connectionFailed, "lease \(lease) expired")
                }
                self.logger.trace("lease \(lease) kept alive: \(answer.ttl) s")
                lastAnswer.withLock { $0 = .now }
            }
            throw FreightError(.connectionFailed, "etcd ended the keep-alive stream")
        }
    }

    /// Applies every change under the prefix from `revision` on; fails (for a fresh read) when etcd cancels the
    /// watch or the revision was compacted.
    private func watch(
        _ watches: Etcdserverpb_Watch.Client<HTTP2ClientTransport.Posix>, from revision: Int64,
        engine: any DirectoryClient,
        layout: EtcdLayout, options: CallOptions
    ) async throws {
        try await watches.watch(options: options) { writer in
            try await writer.write(
                .with {
                    $0.createRequest = .with {
                        $0.key = layout.prefix
                        $0.rangeEnd = EtcdLayout.rangeEnd(of: layout.prefix)
                        $0.startRevision = revision
                    }
                })
            // The request stream stays open, with nothing more to say, until the watch ends or the node stops.
            try await Task.sleep(until: .now + .seconds(Int64(Int32.max)), clock: .continuous)
        } onResponse: { response in
            for try await answer in response.messages {
                if answer.canceled || answer.compactRevision > 0 {
                    throw FreightError(
                        .connectionFailed,
                        "etcd ended the watch: \(answer.cancelReason.isEmpty ? "compacted" : answer.cancelReason)")
                }
                var updates: [DirectoryUpdate] = []
                for event in answer.events {
                    let decoded = layout.decode(key: event.kv.key, value: event.kv.value)
                    switch (event.type, decoded) {
                    case (.put, .endpoint(let record)?): updates.append(.endpoint(record))
                    case (.put, .node(let record)?):
                        updates.append(.node(record))
                    case (.put, .function(let record)?):
                        updates.append(.function(record))
                    case (.delete, _):
                        if let key = layout.endpointKey(from: event.kv.key) {
                            updates.append(.endpointGone(key))
                        } else if let name = layout.nodeName(from: event.kv.key) {
                            updates.append(.nodeGone(name))
                        } else if let address = layout.functionAddress(from: event.kv.key) {
                            updates.append(.functionGone(address))
                        }
                    default: break
                    }
                }
                if !updates.isEmpty { engine.directoryApply(updates) }
            }
            throw FreightError(.connectionFailed, "etcd ended the watch stream")
        }
    }

    /// Writes queued registrations and withdrawals, up to 128 operations per transaction.
    private func publishLoop(
        _ kv: Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>, lease: Int64, layout: EtcdLayout,
        options: CallOptions
    ) async throws {
        while !Task.isCancelled {
            // Wait for the call slot first: whatever queues meanwhile goes in the same transaction.
            if state.withLock({ !$0.pending.isEmpty }) { try await paced() }
            let batch = takeBatch()
            if batch.isEmpty {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                        let ready = state.withLock { state -> Bool in
                            if !state.pending.isEmpty || Task.isCancelled { return true }
                            state.wake = continuation
                            return false
                        }
                        if ready { continuation.resume() }
                    }
                } onCancel: {
                    wakePublisher()
                }
                continue
            }
            var operations: [Etcdserverpb_RequestOp] = []
            for operation in batch {
                switch operation {
                case .put(let records, _, _):
                    operations += try records.map {
                        layout.put(layout.endpointKey($0.key), value: try layout.endpointValue($0), lease: lease)
                    }
                case .delete(let keys):
                    operations += keys.map { key in
                        .with { $0.requestDeleteRange = .with { $0.key = layout.endpointKey(key) } }
                    }
                case .function(let address, let record?, _):
                    operations.append(
                        layout.put(layout.functionKey(address), value: try layout.functionValue(record), lease: 0))
                case .function(let address, nil, _):
                    operations.append(.with { $0.requestDeleteRange = .with { $0.key = layout.functionKey(address) } })
                }
            }
            do {
                try await commit(kv, operations, options: options, firstPaced: true)
            } catch {
                let reason = FreightError(.connectionFailed, "directory unreachable: \(Self.describe(error))")
                for case .put(_, _, let completion) in batch { completion(reason) }
                for case .function(_, _, let completion) in batch { completion(reason) }
                throw error
            }
            for case .put(_, _, let completion) in batch { completion(nil) }
            for case .function(_, _, let completion) in batch { completion(nil) }
        }
    }

    /// Queued operations, about `txnOpsMax` keys' worth (at least one operation).
    private func takeBatch() -> [Operation] {
        state.withLock { state in
            var taken: [Operation] = []
            var count = 0
            while let first = state.pending.first, count < Self.txnOpsMax || taken.isEmpty {
                switch first {
                case .put(let records, _, _): count += records.count
                case .delete(let keys): count += keys.count
                case .function: count += 1
                }
                taken.append(state.pending.removeFirst())
            }
            return taken
        }
    }

    private func commit(
        _ kv: Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>, _ operations: [Etcdserverpb_RequestOp],
        options: CallOptions, firstPaced: Bool = false
    ) async throws {
        for start in stride(from: 0, to: operations.count, by: Self.txnOpsMax) {
            let slice = Array(operations[start..<min(operations.count, start + Self.txnOpsMax)])
            if start > 0 || !firstPaced { try await paced() }
            _ = try await kv.txn(.with { $0.success = slice }, options: options)
        }
    }

    /// Names the part of a session an error came from.
    static func labelled(_ label: String, _ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as FreightError {
            throw error
        } catch {
            throw FreightError(.connectionFailed, "\(label): \(describe(error))")
        }
    }

    static func describe(_ error: any Error) -> String {
        if let freight = error as? FreightError { return freight.message }
        if let rpc = error as? RPCError { return "\(rpc.code): \(rpc.message)" }
        return "\(error)"
    }
}
