import FreightCore
import FreightDirectory
import FreightRouting
import FreightSecurity
import FreightTransport
import FreightWire
import Logging
import NIOCore
import NIOPosix
import NIOSSL

/// What makes a node a gateway of its cluster (docs/gateways.md): where it listens for gateways of other clusters,
/// whom it dials, what its links let out and in, and its TLS.
public struct GatewayConfiguration: Sendable {
    public var listen: NodeAddress
    public var peers: [NodeAddress]
    /// The name each peer's TLS handshake is to carry (SNI), nil for none, in the order of `peers`: a proxy in front
    /// of several gateways on one address routes each connection by it (docs/wan.md, "Behind Envoy").
    public var serverNames: [String?]
    public var filters: RouteFilters
    public var security: GatewaySecurity
    /// A gateway link heard nothing from for this long is closed and its routes withdrawn (BGP's hold time); a link
    /// sent nothing for a third of it is sent a keepalive.
    public var holdTime: Duration

    public init(
        listen: NodeAddress, peers: [NodeAddress], serverNames: [String?] = [], filters: RouteFilters,
        security: GatewaySecurity, holdTime: Duration = Limits.gatewayHoldDefault
    ) {
        self.listen = listen
        self.peers = peers
        self.serverNames = serverNames
        self.filters = filters
        self.security = security
        self.holdTime = holdTime
    }

    /// A name that may go in SNI: DNS labels of letters, digits and hyphens, dot-separated, not an IP address.
    public static func isServerName(_ text: String) -> Bool {
        let labels = text.split(separator: ".", omittingEmptySubsequences: false)
        guard text.utf8.count <= 253, !labels.isEmpty, !labels.allSatisfy({ $0.allSatisfy(\.isNumber) }) else {
            return false
        }
        return labels.allSatisfy { label in
            (1...63).contains(label.utf8.count) && label.first != "-" && label.last != "-"
                && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        }
    }
}

/// A gateway's links to gateways of other clusters and the route table they feed (docs/gateways.md). Loop-confined:
/// the engine creates it on its loop and calls it there; its connections run on the same loop.
final class GatewayLinks: FrameConnectionDelegate, @unchecked Sendable {
    /// Gateway links a gateway keeps at most (dialed and accepted), and how long one may take to say HELLO.
    static let linksMax = 256
    static let helloSeconds: Int64 = 5
    /// Accepted links from one source address that have not said HELLO yet: strangers on one address cannot hold
    /// the slots that gateways of other clusters need.
    static let handshakesPerSourceMax = 8
    /// Further stripes of one link dialed at once.
    static let stripesDialedAtOnce = 4
    static let tickInterval = TimeAmount.milliseconds(100)
    static let redialInterval = TimeAmount.seconds(1)
    /// Body bytes a gateway link hands its TLS handler at most per flush (``FrameConnection/flushBytesMax``).
    static let flushBytesMax = 1 << 20
    /// Body bytes a connection of a gateway link may have waiting (written, not yet taken by the kernel) before the
    /// link's queue stops handing it chunks: enough to keep the kernel fed between two turns of the event loop.
    static let feedBytes = 2 << 20
    /// `any` groups one message may be bound for in another cluster (as many as a cluster announces).
    static let groupsPerMessageMax = RouteAggregation().groupsMax

    struct Link {
        var connection: FrameConnection
        var address: String
        var dialed: Bool
        /// The peer's IP address on an accepted link.
        var source: String?
        var opened: NIODeadline
        /// Set once the peer's HELLO was checked against its certificate.
        var cluster: String?
        /// The peer gateway's node name, from its HELLO: where a detour's bytes rejoin a message sent on this link.
        var peerName: String?
        var up: NIODeadline?
        /// The ping in flight (our clock when sent), and the smoothed round-trip time in nanoseconds.
        var pingSent: UInt64?
        var rtt: UInt64?
        /// The smallest round trip sampled: the path's own, without the queues that data in flight adds.
        var minRTT: UInt64?
        /// The port that messages from the peer enter this node's flow table through, once the link is up.
        var ingress: GatewayIngress?
        /// Messages this gateway sent on the link (it is their egress): their ACK, DONE and ABORT come back on it.
        var egressMessages: Set<UInt64> = []
        /// Body bytes sent and received on the link.
        var bytesOut: UInt64 = 0
        var bytesIn: UInt64 = 0
        /// The body bytes at the last rate measurement, and the rates then (bytes per second over the last second).
        var measuredOut: UInt64 = 0
        var measuredIn: UInt64 = 0
        var rateOut: UInt64 = 0
        var rateIn: UInt64 = 0
        /// The most bytes per second the link carried out in a busy second (at least `busyBytes` moved): what it
        /// can carry, as far as it showed. Nil until it was busy once.
        var capacity: UInt64?
        /// Random per link, chosen by the side that dialed it: the link's further stripes name it in their HELLO.
        var nonce: UInt64
        /// Set on a connection dialed as further stripe `index` of link `parent`, until its HELLO merges it there.
        var stripeOf: (parent: Int, index: Int)?
        /// The link's further connections, up (docs/wan.md, "Stripes"): DATA goes on whichever of them and
        /// `connection` has the fewest bytes waiting.
        var stripes: [FrameConnection] = []
        var stripesDialing = 0
        var nextStripe = 1
        /// How many stripes this side's measurements ask for (made at the first round-trip sample), and the peer's.
        var planner: StripePlanner?
        var peerWanted = 0
        /// Ticks of the current second, and those in which body bytes waited on every connection of the link.
        var ticks = 0
        var busyTicks = 0
        var rotation = 0
        /// Each connection's drained body bytes at the last tick, and the connections that had bytes waiting and
        /// drained none since: held up (a retransmission, most likely), they take no new chunk while another can.
        var drainedAtTick: [ObjectIdentifier: UInt64] = [:]
        var stalled: Set<ObjectIdentifier> = []
        /// Connections that still had bytes waiting at the last tick and drained less than a quarter of what the
        /// link's fastest one did since the one before (a stripe just up, whose TCP window still grows round trip
        /// by round trip): each takes a chunk only when it has none waiting, so that chunks the message's
        /// acknowledgement waits for do not queue behind it (docs/wan.md, "Stripes").
        var slow: Set<ObjectIdentifier> = []
        /// DATA waiting for a connection of the link, per message, and the messages that have some in the order of
        /// their turns (docs/wan.md, "Many messages"): a connection is handed a chunk when it has less than
        /// `GatewayLinks.feedBytes` waiting, each message's next chunk in turn, so that messages share the link
        /// evenly whatever their windows.
        var outbox: [UInt64: CircularBuffer<DataChunk>] = [:]
        /// Body bytes in each message's ``outbox``, kept as chunks come and go (a detour's end is weighed against
        /// it at every chunk the link drains).
        var outboxBytes: [UInt64: Int] = [:]
        var turns = CircularBuffer<UInt64>()

        /// Takes the first chunk waiting for `messageID`; the message leaves the outbox with its last.
        mutating func popChunk(_ messageID: UInt64) -> DataChunk? {
            guard let chunk = outbox[messageID]?.popFirst() else { return nil }
            if outbox[messageID]!.isEmpty {
                outbox[messageID] = nil
                outboxBytes[messageID] = nil
            } else {
                outboxBytes[messageID, default: 0] -= chunk.count
            }
            return chunk
        }

        /// Every connection of the link, its first included.
        var connections: [FrameConnection] { [connection] + stripes }
        /// The connections this side sends DATA on: as many as its planner wants (docs/wan.md, "Stripes"). The peer
        /// may want more for what it sends, and a count taken back leaves its stripes up and idle.
        var sending: [FrameConnection] {
            let all = connections
            return Array(all.prefix(max(1, planner?.wanted ?? all.count)))
        }
    }

    let configuration: GatewayConfiguration
    let node: String
    let cluster: String
    let loop: any EventLoop
    let logger: Logger
    let limits: FrameLimits
    unowned let engine: NodeEngine
    private(set) var table: RouteTable
    var links: [Int: Link] = [:]
    var linkOf: [ObjectIdentifier: Int] = [:]
    /// The ports messages leave this cluster through, one per link (docs/gateways.md, "The data path").
    var egressPorts: [Int: GatewayEgress] = [:]
    /// Messages that ended here having come from or gone to each cluster, over all its links (at most `linksMax`
    /// clusters counted).
    var outcomes: [String: LinkOutcomes] = [:]
    /// The clusters of ingress ports whose links closed lately (the last `linksMax`): the messages they held may be
    /// taken over by another link from the same cluster.
    var closedIngress: [UInt64: String] = [:]
    var closedIngressOrder: [UInt64] = []
    /// Messages sent on a link that carry some of their bytes over another gateway pair, and detours whose bytes
    /// rejoin a message here (docs/wan.md, "Over every gateway pair").
    var detours = Detours()
    /// The routes the cluster's directory was last given (``NodeEngine/syncRouteEndpoints()``).
    private var routesPublished: UInt64 = 0
    private var ratesMeasuredAt: UInt64 = 0
    /// Set when the node stops: its links closing then are not news.
    private var stopping = false
    private var nextLink = 1
    /// Peer addresses dialed or being dialed.
    private var dialing: Set<String> = []
    private var listener: Channel?
    private var timer: RepeatedTask?
    private var directoryVersion: UInt64?
    /// The table's link for each other gateway of this cluster whose routes the directory holds.
    private var directoryLinks: [String: Int] = [:]
    private var nextDirectoryLink = -1
    private var actions: [RouteAction] = []
    private let started = NIODeadline.now()
    var boundAddress: String?

    init(
        configuration: GatewayConfiguration, node: String, cluster: String, loop: any EventLoop, logger: Logger,
        limits: FrameLimits, engine: NodeEngine
    ) {
        self.configuration = configuration
        self.node = node
        self.cluster = cluster
        self.loop = loop
        self.logger = logger
        // Whole DATA frames: a gateway link's bytes come through TLS, and each chunk goes on whole.
        var limits = limits
        limits.streamsChunks = false
        limits.verifyChecksumsOnArrival = false
        limits.chunkBytesMax = min(limits.chunkBytesMax, Limits.gatewayChunkBytesMax)
        self.limits = limits
        self.engine = engine
        let holdNanos = UInt64(clamping: TimeAmount(configuration.holdTime).nanoseconds)
        self.table = RouteTable(.init(cluster: cluster, keepaliveNanos: holdNanos / 3, holdNanos: holdNanos))
    }

    private var now: UInt64 { UInt64(max(0, (NIODeadline.now() - started).nanoseconds)) }

    // MARK: start and stop

    func start() -> EventLoopFuture<Void> {
        guard case .tcp(let host, let port) = configuration.listen else {
            return loop.makeFailedFuture(FreightError(.invalidArgument, "--gateway takes HOST:PORT"))
        }
        guard Limits.gatewayHoldRange.contains(configuration.holdTime) else {
            return loop.makeFailedFuture(
                FreightError(
                    .invalidArgument,
                    "a gateway hold time of \(configuration.holdTime) is out of range \(Limits.gatewayHoldRange)"))
        }
        return ServerBootstrap(group: loop)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                SocketTuning.gateway.apply(to: channel, isTCP: true, accepted: true).flatMapThrowing {
                    try self.prepare(channel, dialed: false, address: nil)
                }
            }
            .bind(host: host, port: port)
            .map { [self] channel in
                listener = channel
                boundAddress = channel.localAddress.map { "\($0.ipAddress ?? host):\($0.port ?? port)" }
                timer = loop.scheduleRepeatedTask(initialDelay: .zero, delay: Self.tickInterval) { [self] _ in
                    tick()
                }
                logger.info(
                    "gateway of cluster \(cluster) listening on \(boundAddress ?? "?") (mutual TLS 1.3; peers: \(configuration.peers.map { "\($0)" }.joined(separator: ", ")))"
                )
            }
    }

    func stop() -> EventLoopFuture<Void> {
        stopping = true
        timer?.cancel()
        timer = nil
        var futures = links.values.map { $0.connection.channel.close().recover { _ in } }
        if let listener { futures.append(listener.close().recover { _ in }) }
        listener = nil
        return EventLoopFuture.andAllComplete(futures, on: loop)
    }

    /// TLS with the gateway's checks, then wire v1 frames, on a new link (dialed or accepted), or on a further
    /// stripe dialed for link `stripeOf.parent`.
    private func prepare(
        _ channel: Channel, dialed: Bool, address: String?, stripeOf: (parent: Int, index: Int)? = nil
    ) throws {
        guard links.count < Self.linksMax else {
            throw FreightError(.resourceExhausted, "over \(Self.linksMax) gateway links")
        }
        let source = dialed ? nil : channel.remoteAddress?.ipAddress
        if let source,
            links.values.count(where: { $0.source == source && $0.up == nil }) >= Self.handshakesPerSourceMax
        {
            logger.debug("refusing a gateway link from \(source): \(Self.handshakesPerSourceMax) in handshake already")
            throw FreightError(.resourceExhausted, "too many gateway links in handshake from \(source)")
        }
        let remote = address ?? channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
        let logger = self.logger
        let serverName = dialed ? address.flatMap { Self.peer($0).serverName } : nil
        let tls = try configuration.security.tlsHandler(accepted: !dialed, serverName: serverName) { result in
            if case .failure(let refusal) = result {
                logger.warning("refusing gateway link \(dialed ? "to" : "from") \(remote): \(refusal)")
            }
        }
        let connection = FrameConnection(channel: channel, id: UInt64(nextLink))
        connection.delegate = self
        connection.isDialed = dialed
        connection.flushBytesMax = Self.flushBytesMax
        let id = nextLink
        nextLink += 1
        links[id] = Link(
            connection: connection, address: remote, dialed: dialed, source: source, opened: .now(),
            nonce: stripeOf.flatMap { links[$0.parent]?.nonce } ?? UInt64.random(in: 1...UInt64.max),
            stripeOf: stripeOf)
        linkOf[ObjectIdentifier(connection)] = id
        let handler = FrameConnectionHandler(connection: connection, logger: logger)
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(tls)
        try sync.addHandler(FrameReader(limits: limits, deliver: handler.handle))
        try sync.addHandler(handler)
    }

    private func hello(nonce: UInt64, stripe: Int = 0) -> Freight_Wire_V1_Hello {
        var hello = Freight_Wire_V1_Hello()
        hello.role = .gateway
        hello.name = node
        hello.cluster = cluster
        hello.incarnation = nonce
        hello.streamIndex = UInt32(stripe)
        return hello
    }

    // MARK: dialing and the timer

    /// A bootstrap for a gateway link or stripe: from the gateway's own address, so that peers see which gateway
    /// dialed.
    private func dialBootstrap() -> ClientBootstrap {
        let bootstrap = ClientBootstrap(group: loop).connectTimeout(.seconds(Limits.dialTimeoutSeconds))
        guard case .tcp(let own, _) = configuration.listen, let source = try? SocketAddress(ipAddress: own, port: 0)
        else { return bootstrap }
        return bootstrap.bind(to: source)
    }

    /// A dialed peer as its link names it, `[NAME@]HOST:PORT`: the name its handshake carries (SNI), and where.
    static func peer(_ text: String) -> (serverName: String?, address: String) {
        let parts = text.split(separator: "@", maxSplits: 1).map(String.init)
        return parts.count == 2 ? (parts[0], parts[1]) : (nil, text)
    }

    private func dial(_ address: NodeAddress, as text: String) {
        guard case .tcp(let host, let port) = address else { return }
        dialing.insert(text)
        logger.debug("dialing gateway \(text)")
        dialBootstrap()
            .channelInitializer { [self] channel in
                SocketTuning.gateway.apply(to: channel, isTCP: true, accepted: true).flatMapThrowing {
                    try self.prepare(channel, dialed: true, address: text)
                }
            }
            .connect(host: host, port: port)
            .whenComplete { [self] result in
                switch result {
                case .success(let channel):
                    guard let id = linkID(of: channel), let link = links[id] else { return }
                    link.connection.sendPreface()
                    link.connection.send(.hello(hello(nonce: link.nonce)))
                case .failure(let error):
                    logger.debug("gateway \(text) did not answer: \(error)")
                    // The attempt's link never came up: forget it (its channel never became active).
                    for (id, link) in links where link.dialed && link.address == text && link.up == nil {
                        links[id] = nil
                        linkOf[ObjectIdentifier(link.connection)] = nil
                    }
                    // Tried again on a later tick.
                    loop.scheduleTask(in: Self.redialInterval) { [self] in dialing.remove(text) }
                }
            }
    }

    private func linkID(of channel: Channel) -> Int? {
        links.first { $0.value.connection.channel === channel }?.key
    }

    /// Dials peers not linked, closes links that never said HELLO, feeds the table the cluster's patterns when
    /// they changed, and carries out what the table decided.
    private func tick() {
        for (index, peer) in configuration.peers.enumerated() {
            let name = index < configuration.serverNames.count ? configuration.serverNames[index] : nil
            let text = name.map { "\($0)@\(peer)" } ?? "\(peer)"
            if !dialing.contains(text) { dial(peer, as: text) }
        }
        for (id, link) in links where link.up == nil && NIODeadline.now() - link.opened > .seconds(Self.helloSeconds) {
            logger.warning("closing gateway link \(link.address): no HELLO within \(Self.helloSeconds) s")
            close(id)
        }
        ping()
        for (id, link) in links where link.up != nil {
            links[id]!.ticks += 1
            if link.sending.allSatisfy({ $0.pendingBytes > 0 }) { links[id]!.busyTicks += 1 }
            var stalled: Set<ObjectIdentifier> = []
            var drained: [ObjectIdentifier: UInt64] = [:]
            for connection in link.connections {
                let key = ObjectIdentifier(connection)
                if connection.pendingBytes > 0, link.drainedAtTick[key] == connection.drainedBytes {
                    stalled.insert(key)
                }
                drained[key] = connection.drainedBytes - (link.drainedAtTick[key] ?? connection.drainedBytes)
                links[id]!.drainedAtTick[key] = connection.drainedBytes
            }
            let most = drained.values.max() ?? 0
            links[id]!.stalled = stalled
            links[id]!.slow = Set(
                link.connections.filter { $0.pendingBytes > 0 && drained[ObjectIdentifier($0), default: 0] * 4 < most }
                    .map(ObjectIdentifier.init))
            feed(id)
        }
        measureRates()
        table.tick(now: now, into: &actions)
        carryOut()
    }

    /// The cluster's directory, when it changed since the last call: what the cluster serves (the patterns of its
    /// pattern receivers and its `any` groups), and what each other gateway of the cluster reaches over its own
    /// links (its route endpoints), which this gateway passes on to its peers (docs/gateways.md, "Several gateways").
    func directoryChanged(_ index: EndpointIndex) {
        guard index.version != directoryVersion else { return }
        directoryVersion = index.version
        var patterns: [AddressPattern] = []
        var groups: [RouteGroup] = []
        var reached: [String: [ClusterRoute]] = [:]
        for other in index.nodes {
            for record in index.endpoints(at: other) {
                if let route = record.route {
                    guard other != node, route.cluster != cluster else { continue }
                    reached[other, default: []].append(
                        ClusterRoute(
                            pattern: record.pattern, origin: route.cluster, path: route.path, cost: route.cost,
                            group: record.anyGroup))
                } else if let group = record.anyGroup {
                    groups.append(group)
                } else {
                    patterns.append(record.pattern)
                }
            }
        }
        table.serve(patterns, groups: groups, now: now, into: &actions)
        for other in Set(directoryLinks.keys).union(reached.keys).sorted() {
            let id = directoryLinks[other] ?? nextDirectoryLink
            if directoryLinks[other] == nil {
                directoryLinks[other] = id
                nextDirectoryLink -= 1
            }
            table.directoryRoutes(reached[other] ?? [], of: id, now: now, into: &actions)
            if reached[other] == nil { directoryLinks[other] = nil }
        }
        carryOut()
    }

    func carryOut() {
        defer {
            if table.choiceVersion != routesPublished {
                routesPublished = table.choiceVersion
                engine.syncRouteEndpoints()
            }
        }
        let pending = actions
        actions.removeAll(keepingCapacity: true)
        for action in pending {
            switch action {
            case .advertise(let id, let advertisement):
                guard let connection = links[id]?.connection else { continue }
                for frame in advertisement.wireFrames() { connection.send(.routes(frame)) }
            case .closeLink(let id, let reason):
                logger.warning("closing gateway link \(links[id]?.address ?? "?"): \(reason)")
                close(id)
            }
        }
    }

    func close(_ id: Int) {
        guard let link = links.removeValue(forKey: id) else { return }
        for connection in link.connections {
            linkOf[ObjectIdentifier(connection)] = nil
            connection.close()
        }
        if let (parent, _) = link.stripeOf {
            links[parent]?.stripesDialing -= 1
            return
        }
        if link.dialed { dialing.remove(link.address) }
        table.linkDown(id, now: now, into: &actions)
        trafficEnded(on: link, id: id)
    }

    // MARK: frames

    func connection(_ connection: FrameConnection, didReceive frame: Frame) {
        guard let id = linkOf[ObjectIdentifier(connection)], let link = links[id] else { return connection.close() }
        if connection !== link.connection {
            // A further stripe carries DATA only (docs/wan.md).
            guard case .data(let chunk) = frame else {
                logger.warning("closing gateway link \(link.address): \(frame.type) frame on a further stripe")
                return close(id)
            }
            return ingressData(chunk, on: id)
        }
        switch frame {
        case .hello(let hello) where link.up == nil:
            helloReceived(hello, on: id)
        case .open(let open) where link.up != nil:
            ingressOpen(open, on: id)
        case .data(let chunk) where link.up != nil:
            ingressData(chunk, on: id)
        case .ack, .done, .abort:
            guard link.up != nil else {
                logger.warning("closing gateway link \(link.address): \(frame.type) frame before HELLO")
                close(id)
                break
            }
            returned(frame, on: id)
        case .routes(let routes) where link.up != nil:
            timing(routes, on: id)
            do {
                table.received(try RouteAdvertisement(wire: routes), on: id, now: now, into: &actions)
            } catch {
                logger.warning("closing gateway link \(link.address): \(error.message)")
                close(id)
            }
        default:
            logger.warning("closing gateway link \(link.address): unexpected \(frame.type) frame")
            close(id)
        }
        carryOut()
    }

    /// Each link's body bytes per second, in and out, over the last second.
    private func measureRates() {
        let now = self.now
        guard now >= ratesMeasuredAt + 1_000_000_000 else { return }
        let seconds = Double(now - ratesMeasuredAt) / 1e9
        ratesMeasuredAt = now
        for (id, link) in links {
            links[id]!.rateOut = UInt64(Double(link.bytesOut - link.measuredOut) / seconds)
            links[id]!.rateIn = UInt64(Double(link.bytesIn - link.measuredIn) / seconds)
            links[id]!.measuredOut = link.bytesOut
            links[id]!.measuredIn = link.bytesIn
            let rate = links[id]!.rateOut
            if link.bytesOut - link.measuredOut >= Self.busyBytes, rate > link.capacity ?? 0 {
                links[id]!.capacity = rate
                updateCost(id)
            }
            let busy = link.ticks > 0 && link.busyTicks * 10 >= link.ticks * 8
            links[id]!.ticks = 0
            links[id]!.busyTicks = 0
            let carried = max(rate, links[id]!.rateIn)
            if let wanted = links[id]!.planner?.measured(bytesPerSecond: carried, busy: busy) {
                logger.info(
                    "gateway link \(link.address): \(wanted) stripes wanted (busy at \(ByteCount.format(Int64(rate)))/s with \(link.sending.count))"
                )
                stripesChanged(id)
            }
        }
    }

    // MARK: windows and stripes (docs/wan.md)

    /// The window a message needs across link `id` when it is of the WAN class: eight times its bandwidth-delay
    /// product (the best rate it showed, or the planner's assumption until then, times its smallest round trip), at
    /// most `Limits.windowHintMax`. Nil inside a site, where the node's window is enough. Eight, not one: the round
    /// trip under BBR's queue, the receiver's acknowledgements every quarter window, and a stripe waiting on a
    /// retransmission (which holds the message's acknowledgement back) all need room; at 200 ms twice the product
    /// moved 515-555 Mbit/s of 1 Gbit/s, four times 657, eight times 762 (docs/wan.md, "Windows").
    func windowHint(_ id: Int) -> UInt64? {
        guard let link = links[id], link.planner?.linkClass == .wan, let rtt = link.minRTT else { return nil }
        let rate = max(link.capacity ?? 0, StripePlanner.assumedBytesPerSecond)
        let bdp = Double(rate) * Double(rtt) / 1e9
        return min(UInt64(Limits.windowHintMax), UInt64(8 * bdp))
    }

    /// The link's connection with the fewest body bytes waiting (the one that will have sent a new chunk first).
    func dataConnection(_ id: Int) -> FrameConnection? {
        guard var link = links[id] else { return nil }
        let all = link.sending
        link.rotation = (link.rotation + 1) % all.count
        // The one that will have sent a new chunk first: the fewest bytes waiting, among those not held up.
        let moving = all.filter { !link.stalled.contains(ObjectIdentifier($0)) }
        // Each with room: less than `feedBytes` waiting, or none for a slow one.
        let candidates = (moving.isEmpty ? all : moving).filter {
            $0.pendingBytes < (link.slow.contains(ObjectIdentifier($0)) ? 1 : Self.feedBytes)
        }
        guard !candidates.isEmpty else { return nil }
        var best = candidates[link.rotation % candidates.count]
        for connection in candidates where connection.pendingBytes < best.pendingBytes { best = connection }
        links[id]!.rotation = link.rotation
        return best
    }

    /// Queues a chunk of a message this gateway sends on link `id`, behind that message's earlier ones.
    func enqueue(_ chunk: DataChunk, on id: Int) {
        guard links[id] != nil else { return }
        if links[id]!.outbox[chunk.messageID, default: []].isEmpty { links[id]!.turns.append(chunk.messageID) }
        links[id]!.outbox[chunk.messageID, default: []].append(chunk)
        links[id]!.outboxBytes[chunk.messageID, default: 0] += chunk.count
        feed(id)
    }

    /// Drops what a message still had waiting on link `id` (it ended or moved).
    func dropQueued(_ messageID: UInt64, on id: Int) {
        guard links[id]?.outbox.removeValue(forKey: messageID) != nil else { return }
        links[id]!.outboxBytes[messageID] = nil
        if let index = links[id]!.turns.firstIndex(of: messageID) { links[id]!.turns.remove(at: index) }
    }

    /// Hands waiting chunks to the link's connections while one has room: the next message in turn gives one
    /// chunk and goes to the back. Called again whenever a connection handed a chunk to the kernel.
    func feed(_ id: Int) {
        while links[id]?.turns.isEmpty == false, let connection = dataConnection(id) {
            let messageID = links[id]!.turns.removeFirst()
            guard let chunk = links[id]!.popChunk(messageID) else { continue }
            if links[id]!.outbox[messageID] != nil { links[id]!.turns.append(messageID) }
            links[id]!.bytesOut += UInt64(chunk.count)
            let written = loop.makePromise(of: Void.self)
            written.futureResult.whenComplete { [self] _ in feed(id) }
            connection.sendData(chunk, promise: written)
        }
        spill(id)
    }

    /// What the link's planner (and the peer's) asks for changed: the dialing side dials the stripes missing; the
    /// other tells it.
    private func stripesChanged(_ id: Int) {
        guard let link = links[id], link.up != nil else { return }
        let own = link.planner?.wanted ?? 1
        guard link.dialed else {
            var frame = Freight_Wire_V1_Routes()
            frame.stripesWanted = UInt32(own)
            link.connection.send(.routes(frame))
            return
        }
        let wanted = min(StripePlanner.stripesMax, max(own, link.peerWanted))
        // A few at a time: a proxy in front of the peer shows them all from one address, and a gateway takes at most
        // `handshakesPerSourceMax` links in handshake from one address. The next go when these are up.
        let missing = min(wanted - 1 - link.stripes.count, Self.stripesDialedAtOnce) - link.stripesDialing
        for _ in 0..<max(0, missing) { dialStripe(of: id) }
    }

    /// A connection of a link whose class is known: its congestion control, and on a WAN a small unsent backlog in
    /// the kernel, so that a stripe held up by a loss takes no more chunks while the others go on.
    private static func tune(_ connection: FrameConnection, for planner: StripePlanner) {
        SocketTuning.setCongestionControl(planner.congestionControl, on: connection.channel)
        if planner.linkClass == .wan {
            SocketTuning.setNotSentLowWater(SocketTuning.wanNotSentLowWaterBytes, on: connection.channel)
        }
    }

    /// Dials one more stripe of link `id`, from this gateway's address to the peer's.
    private func dialStripe(of id: Int) {
        guard let link = links[id], let address = try? NodeAddress(Self.peer(link.address).address),
            case .tcp(let host, let port) = address
        else { return }
        let index = link.nextStripe
        links[id]!.nextStripe += 1
        links[id]!.stripesDialing += 1
        let congestion = link.planner?.congestionControl
        dialBootstrap()
            .channelInitializer { [self] channel in
                var tuning = SocketTuning.gateway
                tuning.congestionControl = congestion ?? tuning.congestionControl
                return tuning.apply(to: channel, isTCP: true, accepted: true).flatMapThrowing {
                    try self.prepare(channel, dialed: true, address: link.address, stripeOf: (id, index))
                }
            }
            .connect(host: host, port: port)
            .whenComplete { [self] result in
                switch result {
                case .success(let channel):
                    guard let stripe = linkID(of: channel), let connection = links[stripe]?.connection else { return }
                    connection.sendPreface()
                    connection.send(.hello(hello(nonce: link.nonce, stripe: index)))
                case .failure(let error):
                    logger.debug("stripe \(index) of gateway link \(link.address) did not connect: \(error)")
                    for (stripe, entry) in links where entry.stripeOf?.parent == id && entry.stripeOf?.index == index {
                        links[stripe] = nil
                        linkOf[ObjectIdentifier(entry.connection)] = nil
                    }
                    links[id]?.stripesDialing -= 1
                }
            }
    }

    /// A connection whose HELLO made it a further stripe of link `parent`: its frames are the link's from now on.
    private func merge(_ id: Int, into parent: Int) {
        guard let stripe = links.removeValue(forKey: id), links[parent] != nil else { return close(id) }
        linkOf[ObjectIdentifier(stripe.connection)] = parent
        if stripe.stripeOf != nil { links[parent]!.stripesDialing -= 1 }
        links[parent]!.stripes.append(stripe.connection)
        defer { stripesChanged(parent) }
        if let planner = links[parent]!.planner { Self.tune(stripe.connection, for: planner) }
        logger.debug(
            "gateway link \(links[parent]!.address): stripe up (\(links[parent]!.connections.count) connections)")
    }

    /// A second in which a link moved at least this much tells what it can carry.
    static let busyBytes: UInt64 = 16 << 20
    /// The message size whose transfer time is part of a link's cost (docs/gateways.md).
    static let costMessageBytes: UInt64 = 64 << 20

    /// A link's cost in microseconds: its round-trip time, plus the time to move 64 MiB at what it carried at best
    /// once it was busy. A change of less than a quarter (and 100 µs) is not announced: jitter must not flap routes.
    private func updateCost(_ id: Int) {
        guard let link = links[id], let rtt = link.rtt else { return }
        var cost = max(1, rtt / 1000)
        if let capacity = link.capacity, capacity > 0 { cost += Self.costMessageBytes * 1_000_000 / capacity }
        let current = table.linkInfo[id]?.cost ?? 0
        let moved = cost > current ? cost - current : current - cost
        if moved > max(current / 4, 100) { table.linkCost(id, cost: cost, now: now, into: &actions) }
    }

    /// Sends a ping on every link that has none in flight (or lost one, a second ago).
    private func ping() {
        let now = max(1, self.now)  // 0 means no ping
        for (id, link) in links where link.up != nil {
            if let sent = link.pingSent, now < sent + 1_000_000_000 { continue }
            links[id]?.pingSent = now
            var frame = Freight_Wire_V1_Routes()
            frame.ping = now
            link.connection.send(.routes(frame))
        }
    }

    /// Answers a ping at once; takes a pong as a sample of the round-trip time, which becomes the link's cost when
    /// it moved by more than a quarter (and 100 µs): loopback jitter must not flap routes.
    private func timing(_ routes: Freight_Wire_V1_Routes, on id: Int) {
        guard var link = links[id] else { return }
        if routes.ping != 0 {
            var answer = Freight_Wire_V1_Routes()
            answer.pong = routes.ping
            link.connection.send(.routes(answer))
        }
        var plan = false
        if routes.pong != 0, routes.pong == link.pingSent {
            let sample = now &- routes.pong
            let rtt = link.rtt.map { ($0 * 4 + sample) / 5 } ?? sample
            link.rtt = rtt
            link.minRTT = min(link.minRTT ?? sample, sample)
            link.pingSent = nil
            if link.planner == nil {
                // The first sample of the round trip sets the link's class, and its first count of stripes.
                let planner = StripePlanner(rttNanos: sample)
                link.planner = planner
                for connection in link.connections { Self.tune(connection, for: planner) }
                logger.info(
                    "gateway link \(link.address): round trip \(sample / 1000) µs, \(planner.linkClass.rawValue) class, \(planner.congestionControl), \(planner.wanted) stripes wanted"
                )
                plan = true
            }
        }
        if routes.stripesWanted != 0 {
            link.peerWanted = min(StripePlanner.stripesMax, Int(routes.stripesWanted))
            plan = true
        }
        links[id] = link
        if routes.pong != 0 { updateCost(id) }
        if plan { stripesChanged(id) }
    }

    /// The peer's HELLO: a gateway of the cluster its certificate proved (checked by TLS already).
    private func helloReceived(_ hello: Freight_Wire_V1_Hello, on id: Int) {
        guard var link = links[id] else { return }
        let proven: String?
        do {
            let tls = try link.connection.channel.pipeline.syncOperations.handler(type: NIOSSLHandler.self)
            proven = try tls.peerCertificate.flatMap { NodeIdentity(derEncoded: try $0.toDERBytes())?.cluster }
        } catch {
            proven = nil
        }
        guard hello.role == .gateway, let proven else {
            logger.warning("closing gateway link \(link.address): it is not a gateway with a certificate")
            return close(id)
        }
        if let refusal = configuration.security.trust.check(claimed: hello.cluster, proven: proven) {
            logger.warning("refusing gateway link \(link.dialed ? "to" : "from") \(link.address): \(refusal)")
            return close(id)
        }
        if let (parent, index) = link.stripeOf {
            // The peer took our further stripe.
            guard links[parent]?.cluster == proven, hello.incarnation == link.nonce, hello.streamIndex == index else {
                logger.warning(
                    "closing stripe \(index) of gateway link \(link.address): the peer answered for another link")
                return close(id)
            }
            return merge(id, into: parent)
        }
        if !link.dialed && hello.streamIndex > 0 {
            // A further stripe of a link this gateway accepted: the same cluster, the link's nonce.
            guard
                let parent = links.first(where: {
                    $0.value.up != nil && !$0.value.dialed && $0.value.cluster == proven
                        && $0.value.nonce == hello.incarnation
                })?.key
            else {
                logger.warning(
                    "closing gateway link \(link.address): stripe \(hello.streamIndex) of a link this gateway does not have (behind a load balancer, every connection of a link must reach the same gateway)"
                )
                return close(id)
            }
            guard links[parent]!.connections.count < StripePlanner.stripesMax else {
                logger.warning(
                    "closing gateway link \(link.address): the link has \(StripePlanner.stripesMax) stripes already")
                return close(id)
            }
            link.connection.sendPreface()
            link.connection.send(.hello(self.hello(nonce: hello.incarnation, stripe: Int(hello.streamIndex))))
            return merge(id, into: parent)
        }
        if !link.dialed {
            link.nonce = hello.incarnation
            link.connection.sendPreface()
            link.connection.send(.hello(self.hello(nonce: link.nonce)))
        }
        // The link's setup (TLS and HELLO, two or three round trips) stands in for its round trip until the first
        // pong (docs/gateways.md).
        let setup = UInt64(max(1, (NIODeadline.now() - link.opened).nanoseconds / 1000))
        link.cluster = proven
        link.peerName = AddressGrammar.isName(hello.name) ? hello.name : nil
        link.up = .now()
        link.ingress = engine.localPorts.add { GatewayIngress(gateways: self, portID: $0, link: id, cluster: proven) }
        links[id] = link
        logger.info("gateway link \(link.dialed ? "to" : "from") \(link.address) up: cluster \(proven)")
        table.linkUp(id, peer: proven, cost: setup, filters: configuration.filters, now: now, into: &actions)
    }

    func connectionDidClose(_ connection: FrameConnection, error: (any Error)?) {
        guard let id = linkOf[ObjectIdentifier(connection)] else { return }
        if let link = links[id], link.up != nil, !stopping, connection !== link.connection {
            // A link is all its stripes: its messages go on as from a broken link (resumed or moved).
            logger.warning(
                "gateway link \(link.address) (cluster \(link.cluster ?? "?")) lost a stripe: \(error.map { "\($0)" } ?? "closed by the peer")"
            )
        } else if let link = links[id], link.up != nil, !stopping {
            // A peer that closed its link cleanly stopped (or restarted); a link that broke is news.
            if let error {
                logger.warning("gateway link \(link.address) (cluster \(link.cluster ?? "?")) broke: \(error)")
            } else {
                logger.notice("gateway link \(link.address) (cluster \(link.cluster ?? "?")) closed by the peer")
            }
        }
        close(id)
        carryOut()
    }

    // MARK: status

    func fill(_ status: inout Freight_Wire_V1_NodeStatus) {
        status.gateway = boundAddress ?? "\(configuration.listen)"
        let info = table.linkInfo
        for id in links.keys.sorted() {
            guard let link = links[id], let up = link.up else { continue }
            var entry = Freight_Wire_V1_GatewayLinkStatus()
            entry.cluster = link.cluster ?? ""
            entry.address = link.address
            entry.dialed = link.dialed
            entry.upMillis = UInt64(max(0, (NIODeadline.now() - up).nanoseconds / 1_000_000))
            entry.cost = info[id]?.cost ?? 0
            entry.rttMicros = (link.rtt ?? 0) / 1000
            entry.routesLearned = UInt64(info[id]?.routesLearned ?? 0)
            entry.routesSent = UInt64(info[id]?.routesSent ?? 0)
            entry.bytesOut = link.bytesOut
            entry.bytesIn = link.bytesIn
            entry.outBytesPerS = link.rateOut
            entry.inBytesPerS = link.rateIn
            entry.messagesOut = UInt64(link.egressMessages.count)
            entry.messagesIn = UInt64(link.ingress.map { engine.flowTable.messages(from: .local($0.portID)) } ?? 0)
            entry.stripes = UInt32(link.connections.count)
            entry.stripesWanted = UInt32(link.planner?.wanted ?? 0)
            entry.congestionControl = link.planner?.congestionControl ?? ""
            if let cluster = link.cluster, let counted = outcomes[cluster] { entry.outcomes = counted.wire }
            status.gatewayLinks.append(entry)
        }
        let chosen = table.chosen.values.filter { $0.route.origin != cluster }.sorted {
            ($0.route.cost, $0.route.pattern.description) < ($1.route.cost, $1.route.pattern.description)
        }
        // A status reply is one control frame: at most 256 routes, and about 24 KiB of their names.
        var listed = 0
        var bytes = 0
        for choice in chosen.prefix(256) {
            bytes +=
                choice.route.pattern.description.utf8.count + choice.route.path.reduce(16) { $0 + $1.utf8.count + 2 }
            if bytes > 24 * 1024 { break }
            listed += 1
            var route = Freight_Wire_V1_RouteStatus()
            route.pattern = choice.route.pattern.description
            route.origin = choice.route.origin
            route.path = choice.route.path
            route.cost = choice.route.cost
            if let group = choice.route.group { route.group = group.wire }
            if let link = choice.link, link < 0 {
                route.throughGateway = directoryLinks.first { $0.value == link }?.key ?? ""
            }
            status.routes.append(route)
        }
        status.routesOmitted = UInt32(chosen.count - listed)
    }
}
