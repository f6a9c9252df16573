import FreightCore
import FreightDirectory
import FreightFlow
import FreightRouting
import FreightSecurity
import FreightTransport
import FreightWire
import Logging
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// What a node counts of the bytes it moved.
struct NodeCounters {
    var bytesIn: UInt64 = 0
    var bytesOut: UInt64 = 0
    /// Chunk body bytes the kernel read straight into apps' receive pools (``ReadTarget``).
    var bytesReadIntoPools: UInt64 = 0
    /// Shared-region bytes sent to peers by reference (`sendfile`), with no copy of their own.
    var bytesSentFromPools: UInt64 = 0
    /// Small messages passed on whole, and answered RESEND (NodeEngine+Small).
    var smallPassed: UInt64 = 0
    var smallResent: UInt64 = 0
}

/// A Freight node: accepts apps and peers, keeps the cluster's mesh and directory, and relays messages.
///
/// All state is confined to one event loop; every connection of the node runs on that loop, so no state is shared
/// between threads. Methods marked "on loop" must be called there.
public final class NodeEngine: DirectoryClient, @unchecked Sendable {
    public let configuration: NodeConfiguration
    public let eventLoop: any EventLoop
    let transport: Transport
    /// Counts and caps the links this node accepts until they said HELLO (docs/hardening.md).
    let admission: Admission
    /// What this node's own gRPC API presents as its token: random per process, never written anywhere.
    public let internalSecret = (0..<4).map { _ in String(UInt64.random(in: 0...UInt64.max), radix: 16) }.joined()
    /// The same for apps on the Unix socket, which are all one source.
    let localAdmission: Admission
    var logger: Logger
    let incarnation: UInt64
    let startedAtNanos: UInt64
    /// Open once ``start()`` has bound the listeners: services beside the node (its gRPC API) wait for it.
    let started = Latch()

    // Listeners.
    var listener: (any LinkListener)?
    var socketListener: (any LinkListener)?
    /// Listeners on rail addresses the main listener does not cover.
    var railListeners: [any LinkListener] = []
    /// The address peers reach this node at (the bound port when configured with port 0).
    public private(set) var boundListen: NodeAddress

    // Connections.
    var nextConnectionID: UInt64 = 1
    /// The apps attached, and those not read until their outputs drain.
    var sessions = AppSessions()
    var members: [String: Member] = [:]
    /// Who is in the cluster and what to do about each link (pure), the buffer its actions are collected in, and
    /// the connections that probe seeds.
    var membership: Membership
    var membershipActions: [Membership.Action] = []
    var performingMembershipActions = false
    var seedProbes: [NodeAddress: FrameConnection] = [:]
    /// When each probe connected (the node's clock): a probe that hears no HELLO is closed (`closeSilentProbes`).
    var seedProbeStarted: [NodeAddress: UInt64] = [:]

    // Directory and flows.
    let index = EndpointIndex()
    /// This node's own endpoints and the port that delivers to each.
    var localEndpoints: LocalEndpoints
    /// In-process endpoints and senders (the in-process transport), and what the senders share.
    let localPorts = LocalPorts()
    /// Chunks being relayed piece by piece, by inbound connection id.
    var inboundStreams: [UInt64: InboundStream] = [:]
    /// Every message passing through this node (pure; docs/core.md), and the buffer its actions are collected in.
    var flowTable: FlowTable
    var flowActions: [FlowAction] = []
    /// Small messages passing this node, and the SMALL and OUTCOMES frames being gathered for each port this turn
    /// (NodeEngine+Small).
    var small = SmallLedger()
    var pendingSmall: [Port: PendingSmall] = [:]
    var pendingOutcomes: [Port: [SmallOutcome]] = [:]
    var smallFlushScheduled = false
    var smallMatchCache: [String: (version: UInt64, records: [EndpointRecord])] = [:]
    var performingFlowActions = false
    /// Destinations of apps' messages, parsed (`parsedAddress`).
    var parsedAddresses: [String: Address] = [:]
    static let parsedAddressesMax = 1024
    /// Shared chunks for a peer at most this long are copied into the link's writes rather than sent with
    /// `sendfile` (docs/performance.md, "Small shared chunks are copied").
    static let copiedChunkBytesMax = 64 * 1024
    /// How often the node dials what is missing, closes what stalled, sends heartbeats and lets hold times pass.
    static let maintenanceInterval = TimeAmount.seconds(1)
    /// A member whose link broke is forgotten this long after the hold time, so that its messages fail first, each
    /// naming the offset it reached.
    static let forgetAfterHoldSeconds = 2
    /// Room kept free in a control frame filled entry by entry (MEMBERS, the peers of a status), for the fields
    /// around the list; and what each entry costs beyond its own encoding (its tag and length).
    static let controlFrameHeadroomBytes = 8192
    static let listEntryOverheadBytes = 8
    /// What an endpoint record costs in an ENDPOINTS frame beyond its strings (ids, tags, lengths), at most.
    static let endpointRecordOverheadBytes = 32
    /// Endpoint ids in one ENDPOINTS frame's `removed` (8 bytes each at most: well within a control frame).
    static let removalsPerFrameMax = 4096
    /// A seed that cannot be reached is logged on its first attempts, then on every this many (one a second).
    static let seedFailuresLoggedFirst = 3
    static let seedFailuresLoggedEvery = 30
    /// Actions the flow table's buffer holds before it grows (it is reused, never shrunk).
    static let flowActionsReserved = 64
    /// Filler written per piece for a chunk cut off mid-stream.
    var planner: DeliveryPlanner
    var tieBreak: UInt64 = 0
    var maintenance: RepeatedTask?
    /// Links to gateways of other clusters, when this node is a gateway.
    var gateways: GatewayLinks?
    /// WebAssembly filters attached at this node, in order, and the port they run on (NodeEngine+Filters).
    var attachedFilters: [FilterAttachment]
    var filterPortStorage: FilterPort?
    /// The functions bound in the cluster (docs/functions.md): gossiped in the mesh, read from etcd otherwise.
    var functionTable = FunctionTable()
    /// The endpoint this gateway registered for each route it chose to another cluster.
    var routeEndpoints: [RouteKey: UInt64] = [:]
    /// Set when `stop()` begins: links that close then are not redialed or resumed.
    var stopping = false
    /// Told to stop: new messages are refused while those in flight finish (``drain(within:)``).
    var draining = false

    // Shared memory (docs/shared-memory.md).
    var descriptorListener: DescriptorListener?
    /// Links of files apps lent, with the session and the file's pool id (docs/small-messages-and-files.md).
    var fileLinks: [Int32: (session: UInt64, pool: UInt32)] = [:]
    /// Pools, loans and the shared-memory budget.
    let shared: SharedMemoryBroker

    // Watchers of endpoints.
    var watchers:
        [UInt64: (pattern: AddressPattern, continuation: AsyncThrowingStream<EndpointEvent, any Error>.Continuation)] =
            [:]
    var nextWatcherID: UInt64 = 1
    /// Nodes a directory backend names (etcd mode), dialed by `maintain`.
    var directoryNodes: [String: NodeRecord] = [:]

    /// What the node counts (status, benchmarks).
    var counters = NodeCounters()
    /// What the node records for `/metrics` (docs/observability.md); nil without a metrics factory.
    public let metrics: NodeMetrics?
    /// Open spans of messages in flight here, with a tracer (docs/observability.md).
    var spans: [UInt64: TracedMessage] = [:]
    /// The message whose OPEN was traced last, until its actions ran.
    var tracedOpen: UInt64?
    /// The last messages that failed here (``RecentErrors``), for the status.
    var recentErrors = RecentErrors()
    /// Failure lines logged in the current second, and those left out since the last line (``messageFailed``).
    var failureLog: (second: UInt64, logged: Int, suppressed: Int) = (0, 0, 0)
    /// Messages that ended here having come from this node's apps or gone to them.
    var appOutcomes = LinkOutcomes()

    public init(configuration: NodeConfiguration, eventLoop: any EventLoop) {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.logger = configuration.logger
        self.incarnation = configuration.environment.random()
        self.startedAtNanos = configuration.environment.nowNanos()
        self.metrics = configuration.metrics.map { NodeMetrics(factory: $0) }
        self.logger[metadataKey: "node"] = "\(configuration.name)"
        var transport = Transport(
            eventLoop: eventLoop, tuning: configuration.tuning,
            limits: FrameLimits(verifyChecksumsOnArrival: false, streamsChunks: true),
            capabilities: configuration.linkCapabilities, logger: logger
        )
        if case .inProcess(let name) = configuration.listen { transport.inProcessName = name }
        self.admission = Admission(limits: configuration.admission, eventLoop: eventLoop, logger: logger)
        var localLimits = configuration.admission
        localLimits.handshakesPerSourceMax = localLimits.handshakesMax
        self.localAdmission = Admission(limits: localLimits, eventLoop: eventLoop, logger: logger)
        transport.admission = admission
        transport.security = configuration.linkSecurity
        self.transport = transport
        self.boundListen = configuration.listen
        self.planner = DeliveryPlanner(localNode: configuration.name)
        self.attachedFilters = configuration.filters
        self.flowTable = FlowTable(
            configuration: .init(
                nodeName: configuration.name, windowBytes: configuration.windowBytes,
                memoryBudgetBytes: configuration.memoryBudgetBytes, chunkBytesDefault: configuration.chunkBytes,
                resumeHold: .seconds(configuration.resumeHoldSeconds), partyShareBytes: configuration.partyShareBytes,
                idle: .seconds(configuration.idleSeconds), slowReceiver: .seconds(configuration.slowReceiverSeconds)))
        self.membership = Membership(
            configuration: Self.membershipConfiguration(configuration, listen: configuration.listen))
        self.localEndpoints = LocalEndpoints(nodeName: configuration.name)
        self.shared = SharedMemoryBroker(
            nodeName: configuration.name, budgetBytes: configuration.sharedMemoryBudgetBytes)
        flowActions.reserveCapacity(Self.flowActionsReserved)
        shared.release = { [unowned self] owner, region in sessions[owner]?.connection.send(.release([region])) }
        shared.withdrawn = { [unowned self] pool in deviceWithdrawn(pool) }
    }

    /// The membership's limits, from the node's configuration. Every stripe of a link that stands gets a heartbeat
    /// (an ACK of message 0, which no flow has; every node ignores it) a third of the link timeout after the last:
    /// a link that went dark then has unacknowledged bytes on each of its stripes, so TCP_USER_TIMEOUT finds it
    /// broken even where nothing else was being sent (a receiver that only waits for the next chunk would otherwise
    /// never notice).
    static func membershipConfiguration(_ configuration: NodeConfiguration, listen: NodeAddress)
        -> Membership.Configuration
    {
        let timeoutMillis = configuration.tuning.userTimeoutMillis ?? Limits.linkTimeoutSeconds * 1000
        return Membership.Configuration(
            nodeName: configuration.name, listen: listen, membersMax: Limits.membersMax,
            dialAttemptsMax: Limits.dialAttemptsMax,
            resumeHoldNanos: UInt64(configuration.resumeHoldSeconds) * 1_000_000_000,
            forgetAfterHoldNanos: UInt64(forgetAfterHoldSeconds) * 1_000_000_000,
            heartbeatIntervalNanos: UInt64(max(1000, timeoutMillis / Limits.heartbeatsPerLinkTimeout)) * 1_000_000)
    }

    public var name: String { configuration.name }
    public var nodeName: String { configuration.name }
    public var clusterName: String { configuration.cluster }
    /// How apps and peers reach this node, as its directory record says.
    public var transports: [String] {
        var list = ["tcp"]
        if configuration.socketPath != nil {
            list.append("unix")
            if configuration.sharedMemoryBudgetBytes > 0 { list.append("shared-memory") }
        }
        return list
    }

    /// The local rail addresses (hosts), rail 0 first.
    var railHosts: [String] { configuration.rails }

    /// This node's record as the directory holds it (on loop).
    var ownRecord: NodeRecord {
        var rails: [NodeAddress] = []
        if case .tcp(_, let port) = boundListen {
            rails = railHosts.map { .tcp(host: $0, port: port) }
        }
        return NodeRecord(
            name: name, listen: boundListen, incarnation: incarnation, transports: transports, rails: rails,
            topology: configuration.topology)
    }

    /// This node's record, from any thread.
    public func selfRecord() async throws -> NodeRecord {
        try await eventLoop.submit { [self] in ownRecord }.get()
    }

    /// Waits until the node listens (``start()`` returned); throws when the waiting task is cancelled.
    public func waitUntilStarted() async throws { try await started.wait() }

    /// Where this node listens for gateways of other clusters, once started as a gateway.
    public var gatewayAddress: String? { gateways?.boundAddress }

    /// Random per process start: tells a restarted node from the old one.
    public var incarnationID: UInt64 { incarnation }

    // MARK: Start and stop

    /// Binds the listeners and starts joining seeds.
    public func start() async throws {
        try configuration.validate()
        let listen = try await transport.listen(on: configuration.listen) { [self] channel in
            makeConnection(channel)
        }.get()
        boundListen = listen.address
        var rails: [any LinkListener] = []
        if case .tcp(let host, let port) = boundListen, !["0.0.0.0", "::"].contains(host) {
            for rail in configuration.rails where rail != host {
                rails.append(
                    try await transport.listen(on: .tcp(host: rail, port: port)) { [self] channel in
                        makeConnection(channel)
                    }.get())
            }
        }
        let socket: (any LinkListener)?
        if let path = configuration.socketPath {
            // Apps on this machine have their own handshake count: strangers on the TCP port cannot crowd them out.
            var local = transport
            local.admission = localAdmission
            socket = try await local.listen(on: .unix(path: path)) { [self] channel in
                makeConnection(channel)
            }.get()
        } else {
            socket = nil
        }
        let railListeners = rails
        try await eventLoop.submit { [self] in
            listener = listen
            socketListener = socket
            self.railListeners = railListeners
            try startDescriptorListener()
            // Not a new membership: a peer may have dialed in and been learned since the listener was bound.
            membership.bound(listen: boundListen, seeds: configuration.joins)
            maintain()
            maintenance = eventLoop.scheduleRepeatedTask(
                initialDelay: Self.maintenanceInterval, delay: Self.maintenanceInterval
            ) { [self] _ in
                maintain()
            }
        }.get()
        if let gateway = configuration.gateway {
            try await eventLoop.flatSubmit { [self] in
                let links = GatewayLinks(
                    configuration: gateway, node: name, cluster: configuration.cluster, loop: eventLoop,
                    logger: logger, limits: transport.limits, engine: self)
                gateways = links
                return links.start()
            }.get()
        }
        started.open()
        logger.info("node \(name) listening on \(boundListen)\(configuration.socketPath.map { " and \($0)" } ?? "")")
        if case .tcp(let host, _) = boundListen {
            if let security = configuration.linkSecurity {
                logger.info("links between nodes: \(security.summary)")
            } else {
                // Loud unless only this machine can reach the node (a demo, a benchmark on loopback).
                let line: Logger.Message =
                    "links between nodes: \(LinkSecurity.trustedNetworkSummary); --tls-cert gives them mutual TLS"
                if host.hasPrefix("127.") || host == "::1" { logger.notice(line) } else { logger.warning(line) }
            }
        }
    }

    /// Lets the messages in flight finish, for at most `timeout`, while refusing new ones with the reason ("node N
    /// is shutting down"); then fails what is left, both ways, with the reason, so that no peer holds it for a
    /// resume that will not come. Returns how many messages it failed. ``stop()`` comes after.
    @discardableResult
    public func drain(within timeout: Duration) async -> Int {
        let inFlight =
            (try? await eventLoop.submit { [self] in
                draining = true
                return flowTable.count
            }.get()) ?? 0
        guard inFlight > 0 else { return 0 }
        logger.notice(
            "stopping: \(inFlight) messages in flight get up to \(timeout.components.seconds) s to finish; new messages are refused"
        )
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let left = (try? await eventLoop.submit { [self] in flowTable.count }.get()) ?? 0
            if left == 0 { return 0 }
            try? await Task.sleep(for: .milliseconds(50))
        }
        let failed =
            (try? await eventLoop.submit { [self] in
                let error = FreightError(
                    .nodeGone,
                    "node \(name) stopped: the message did not finish within its \(timeout.components.seconds) s drain time"
                )
                let ids = flowTable.messageIDs
                for id in ids { flowTable.abort(id, error, notifyUpstream: true, actions: &flowActions) }
                performFlowActions()
                return ids.count
            }.get()) ?? 0
        logger.notice("stopping: \(failed) messages did not finish within the drain time and failed")
        // The ABORTs go out before the connections close.
        try? await Task.sleep(for: .milliseconds(200))
        return failed
    }

    /// Closes every listener and connection; flows in progress fail.
    public func stop() async {
        let closing: [EventLoopFuture<Void>] =
            (try? await eventLoop.submit { [self] in
                stopping = true
                membership.stopping = true
                traceStopping()
                maintenance?.cancel()
                maintenance = nil
                var futures: [EventLoopFuture<Void>] = []
                if let gateways { futures.append(gateways.stop()) }
                gateways = nil
                for listener in [listener, socketListener].compactMap({ $0 }) + railListeners {
                    futures.append(listener.close().recover { _ in })
                }
                listener = nil
                socketListener = nil
                railListeners = []
                descriptorListener?.stop()
                descriptorListener = nil
                for session in sessions.all { futures.append(session.connection.channel.close().recover { _ in }) }
                for member in members.values {
                    for connection in member.link.allConnections {
                        futures.append(connection.channel.close().recover { _ in })
                    }
                }
                for probe in seedProbes.values { futures.append(probe.channel.close().recover { _ in }) }
                return futures
            }.get()) ?? []
        for future in closing { try? await future.get() }
        if let path = configuration.socketPath { unlink(path) }
    }

    // MARK: Connections

    /// Creates the connection object for a new channel (accepted or dialed); on loop.
    func makeConnection(_ channel: Channel) -> FrameConnection {
        let connection = FrameConnection(channel: channel, id: nextConnectionID)
        nextConnectionID += 1
        connection.delegate = self
        return connection
    }

    func helloFrame(role: Freight_Wire_V1_Hello.Role, stream: Int = 0) -> Frame {
        var hello = Freight_Wire_V1_Hello()
        hello.role = role
        hello.name = name
        hello.cluster = configuration.cluster
        hello.listen = boundListen.description
        hello.streamIndex = UInt32(stream)
        hello.streamCount = UInt32(configuration.streams)
        hello.incarnation = incarnation
        hello.capabilities = [WireV1.capabilityResume, WireV1.capabilitySmall, WireV1.capabilitySmallLarge]
        hello.eagerBytes = eagerBytesGiven
        return .hello(hello)
    }

    /// Who an app is and whether the access list applies to it, or why it may not attach: apps over TCP only with
    /// `--apps-over-tcp`, and then, on a node with an access list, only with a token of it (docs/hardening.md).
    func identify(_ hello: Freight_Wire_V1_Hello, on connection: FrameConnection) -> Result<
        (AppIdentity, Bool), FreightError
    > {
        if !hello.token.isEmpty, hello.token == internalSecret {
            return .success((AppIdentity(token: "node"), false))  // this node's own gRPC API
        }
        var identity = AppIdentity()
        if !hello.token.isEmpty, let access = configuration.access {
            guard let name = access.token(secret: hello.token) else {
                return .failure(
                    FreightError(.permissionDenied, "the token presented is not in this node's access list"))
            }
            identity.token = name
        }
        switch connection.channel.remoteAddress {
        case .v4?, .v6?:
            guard configuration.appsOverTCP else {
                return .failure(
                    FreightError(
                        .permissionDenied,
                        "apps over TCP are off on node \(name): attach over its Unix socket, or start it with --apps-over-tcp"
                    ))
            }
            if configuration.access != nil, identity.token == nil {
                return .failure(
                    FreightError(
                        .permissionDenied,
                        "node \(name) has an access list: an app over TCP presents one of its tokens (FREIGHT_TOKEN)"))
            }
        default:
            if let credentials = PeerCredentials.of(connection.channel) {
                identity.uid = credentials.uid
                identity.gid = credentials.gid
                identity.pid = credentials.pid
            }
        }
        return .success((identity, configuration.access != nil))
    }

    /// Nil when `session` may `action` on `pattern`; otherwise the access list's refusal.
    func accessRefusal(_ session: AppSession, _ action: AccessList.Action, _ pattern: AddressPattern) -> FreightError? {
        guard session.checked, let access = configuration.access else { return nil }
        return access.refusal(session.identity, action, pattern)
    }

    /// The same for one address, made a pattern only when there is an access list to check.
    func accessRefusal(_ session: AppSession, _ action: AccessList.Action, _ address: Address) -> FreightError? {
        guard session.checked, configuration.access != nil else { return nil }
        return accessRefusal(session, action, AddressPattern(address))
    }

    /// Closes a connection whose peer broke the protocol, with the reason logged.
    func reject(_ connection: FrameConnection, _ reason: String) {
        logger.warning("closing \(connection): \(reason)")
        connection.close()
    }

    // MARK: Status

    func status() -> Freight_Wire_V1_NodeStatus {
        var status = Freight_Wire_V1_NodeStatus()
        status.name = name
        status.cluster = configuration.cluster
        status.listen = boundListen.description
        status.localEndpoints = UInt64(localEndpoints.count)
        status.knownEndpoints = UInt64(index.count)
        status.messagesInFlight = UInt64(flowTable.count)
        status.bytesIn = counters.bytesIn
        status.bytesOut = counters.bytesOut
        status.messagesDelivered = flowTable.delivered
        status.smallPassed = counters.smallPassed
        status.smallResent = counters.smallResent
        status.smallInFlight = UInt64(small.count)
        status.messagesFailed = flowTable.failed
        status.peakRssBytes = ProcessStats.peakResidentBytes()
        status.memoryReservedBytes = UInt64(flowTable.reservedBytes)
        status.memoryBudgetBytes = UInt64(configuration.memoryBudgetBytes)
        status.streams = UInt32(configuration.streams)
        status.uptimeMillis = (nowNanos &- startedAtNanos) / 1_000_000
        status.sharedPoolBytes = UInt64(shared.poolBytes)
        status.sharedBudgetBytes = UInt64(configuration.sharedMemoryBudgetBytes)
        status.sharedRegionsLent = UInt64(shared.regionsLent)
        status.rssBytes = ProcessStats.residentBytes()
        status.directory = configuration.directory?.kind ?? "mesh"
        if case .unreachable(let reason) = configuration.directory?.health {
            status.directoryUnreachable = reason
        }
        status.directoryDigest = index.digest
        status.topology = configuration.topology.wire
        status.rails = ownRecord.rails.map(\.description)
        status.linksInHandshake = UInt32(admission.handshakes + localAdmission.handshakes)
        status.linksRefused = admission.refused + localAdmission.refused
        status.handshakesTimedOut = admission.timedOut + localAdmission.timedOut
        status.accessList = configuration.access != nil
        status.appsOverTcp = configuration.appsOverTCP
        status.linkSecurity = configuration.linkSecurity?.summary ?? LinkSecurity.trustedNetworkSummary
        gateways?.fill(&status)
        fillFlows(&status)
        status.appOutcomes = appOutcomes.wire
        status.creditStalls = flowTable.creditStalls
        // Peers in name order, as many as fit one control frame with room to spare; the rest are counted.
        var bytes = (try? status.serializedBytes() as [UInt8])?.count ?? 0
        for member in members.values.sorted(by: { $0.name < $1.name }) {
            guard bytes < Limits.controlFrameBytesMax - Self.controlFrameHeadroomBytes else {
                status.peersOmitted += 1
                continue
            }
            var peer = Freight_Wire_V1_PeerStatus()
            peer.name = member.name
            peer.listen = member.listen.description
            peer.streamsUp = UInt32(member.link.stripesUp)
            peer.endpoints = UInt64(index.count(at: member.name))
            peer.bytesOut = member.link.stripeBytes.reduce(0, +)
            peer.stripeBytes = member.link.stripeBytes
            peer.rails = member.record.rails.map(\.description)
            peer.gpus = UInt32(member.record.topology.gpus.count)
            peer.nics = UInt32(member.record.topology.nics.count)
            peer.outcomes = member.outcomes.wire
            if member.link.railCount > 1 {
                let balancer = member.link.balancer
                peer.railGbitPerS = (0..<member.link.railCount).map {
                    balancer.measured[$0] ? balancer.rates[$0] * 8 / 1e9 : 0
                }
            }
            bytes += ((try? peer.serializedBytes() as [UInt8])?.count ?? 0) + Self.listEntryOverheadBytes
            status.peers.append(peer)
        }
        return status
    }

    /// What keeps the node from being ready (docs/observability.md, `/readyz`): empty when it listens for peers and
    /// apps, its directory is reachable, and it is not shutting down.
    public func unreadiness() async throws -> [String] {
        try await eventLoop.submit { [self] in
            var reasons: [String] = []
            if stopping { reasons.append("shutting down") }
            if listener == nil && !stopping { reasons.append("not listening for peers yet") }
            if let path = configuration.socketPath, socketListener == nil, !stopping {
                reasons.append("not accepting apps on \(path) yet")
            }
            if let directory = configuration.directory, case .unreachable(let reason) = directory.health {
                reasons.append("directory \(directory.kind) unreachable: \(reason)")
            }
            return reasons
        }.get()
    }

    /// Snapshot for callers off the loop (tests, the demo).
    public func statusSnapshot() async throws -> Freight_Wire_V1_NodeStatus {
        try await eventLoop.submit { [self] in status() }.get()
    }

    /// Shared-region bytes sent to peers by reference (`sendfile`), with no copy of their own.
    public func bodyBytesSentFromPools() async throws -> UInt64 {
        try await eventLoop.submit { [self] in counters.bytesSentFromPools }.get()
    }

    /// Files apps lent this node for sending and not yet taken back (or not yet closed: a file closes once every
    /// loan of it is back).
    public func filesLent() async throws -> Int {
        try await eventLoop.submit { [self] in shared.pools.values.filter(\.isFile).count }.get()
    }

    /// Chunk body bytes read from node connections straight into apps' receive pools, with no copy of their own.
    public func bodyBytesReadIntoPools() async throws -> UInt64 {
        try await eventLoop.submit { [self] in counters.bytesReadIntoPools }.get()
    }
}

extension NodeEngine: FrameConnectionDelegate {
    public func connection(_ connection: FrameConnection, didReceive frame: Frame) {
        guard let hello = connection.hello else {
            guard case .hello(let hello) = frame else {
                return reject(connection, "first frame was \(frame.type), expected hello")
            }
            connection.hello = hello
            return helloReceived(hello, on: connection)
        }
        switch hello.role {
        case .app:
            sessionReceived(frame, on: connection)
        case .node:
            peerReceived(frame, from: hello.name, on: connection)
        default:
            reject(connection, "unknown role")
        }
    }

    public func connectionDidClose(_ connection: FrameConnection, error: (any Error)?) {
        inboundClosed(connection)
        sessions.closed(connection)
        if let session = sessions.session(on: connection) {
            sessionClosed(session)
            return
        }
        for (seedAddress, probe) in seedProbes where probe === connection {
            seedProbes[seedAddress] = nil
            seedProbeStarted[seedAddress] = nil
            membership.seedProbing(seedAddress, false)
        }
        for member in members.values where member.link.owns(connection) {
            return linkConnectionLost(member, connection, reason: error.map { "\($0)" } ?? "connection closed")
        }
    }

    func helloReceived(_ hello: Freight_Wire_V1_Hello, on connection: FrameConnection) {
        switch hello.role {
        case .app:
            // An app attached: it says who it is, then this node answers with its hello.
            connection.sendPreface()
            let identity: AppIdentity
            let checked: Bool
            switch identify(hello, on: connection) {
            case .success(let result): (identity, checked) = result
            case .failure(let refusal):
                logger.warning(
                    "refusing app \(hello.name.prefix(Limits.appLabelBytesMax)) on \(connection): \(refusal.message)")
                connection.send(.abort(0, refusal))
                return connection.close()
            }
            // Labels are unique among the node's apps: a second app with a label in use gets the session's id added.
            var label = String(hello.name.prefix(Limits.appLabelBytesMax))
            if label.isEmpty || sessions.all.contains(where: { $0.label == label }) {
                label = label.isEmpty ? "" : "\(label)-\(connection.id)"
            }
            let session = AppSession(id: connection.id, connection: connection, label: label, node: name)
            session.identity = identity
            session.checked = checked
            session.resends = hello.capabilities.contains(WireV1.capabilityResume)
            session.gpus = Set(
                hello.capabilities.compactMap { capability in
                    capability.hasPrefix(GPUName.capabilityPrefix)
                        ? String(capability.dropFirst(GPUName.capabilityPrefix.count)) : nil
                }.prefix(Limits.gpusPerAppMax))
            session.small = SmallTerms(hello)
            connection.smallFrameBytesMax = session.small.frameBytesMax
            guard case .hello(var reply) = helloFrame(role: .node) else { return }
            reply.sessionToken = session.token
            connection.send(.hello(reply))
            sessions.add(session)
            connection.established()
            logger.debug("app \(session.label) attached as session \(session.id)")
        case .node:
            defer {
                membership.peerResumes(hello.name, hello.capabilities.contains(WireV1.capabilityResume))
                // Each connection of the link says it: SMALL frames go on any of them.
                let terms = SmallTerms(hello)
                connection.smallFrameBytesMax = terms.frameBytesMax
                members[hello.name]?.small = terms
            }
            if connection.isDialed {
                // The reply on a connection this node opened: the peer's identity.
                dialedHelloReceived(hello, on: connection)
            } else {
                acceptedPeerHello(hello, on: connection)
            }
        default:
            reject(connection, "hello with unknown role \(hello.role.rawValue)")
        }
    }
}

extension NodeEngine {
    /// How many endpoints match `address` here (for tests and the demo to wait on propagation).
    public func matchCount(_ address: Address) async throws -> Int {
        try await eventLoop.submit { [self] in index.match(address).count }.get()
    }

    /// Whether this node's directory holds a route to `address` in another cluster (docs/gateways.md).
    public func reaches(_ address: Address, in cluster: String, group: String? = nil) async throws -> Bool {
        try await eventLoop.submit { [self] in
            index.match(address).contains { $0.route?.cluster == cluster && $0.group == group }
        }.get()
    }
}
