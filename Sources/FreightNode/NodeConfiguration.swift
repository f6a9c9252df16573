import CoreMetrics
import FreightCore
import FreightDirectory
import FreightFunctions
import FreightRouting
import FreightSecurity
import FreightTransport
import Logging
import NIOCore
import Tracing

/// Everything `freight node` is told on its command line.
public struct NodeConfiguration: Sendable {
    public var cluster: String
    public var name: String
    /// Where peers and TCP apps connect. Port 0 picks a free port.
    public var listen: NodeAddress
    /// Seeds to join; the rest of the cluster is learned from them.
    public var joins: [NodeAddress]
    /// Unix socket for apps on this machine; nil for none.
    public var socketPath: String?
    /// TCP connections per peer link.
    public var streams: Int
    /// Chunk size this node uses for messages whose sender did not choose.
    public var chunkBytes: Int
    /// Most body bytes in flight per message through this node.
    public var windowBytes: Int
    /// Memory this node commits to messages in flight; each message reserves up to its window.
    public var memoryBudgetBytes: Int
    /// Shared memory this node accepts from its apps' pools in all (docs/shared-memory.md); 0 turns it off.
    public var sharedMemoryBudgetBytes: Int
    /// Seconds an app may hold a region lent from another app's pool.
    public var sharedHoldSeconds: Int
    /// Seconds a message whose link broke is held for the link to come back (docs/core.md).
    public var resumeHoldSeconds: Int
    /// Where endpoints and members are kept: nil for the mesh (gossip between nodes), else a backend such as etcd.
    public var directory: (any DirectoryBackend)?
    public var tuning: SocketTuning
    /// How chunks are spread over a link's stripes.
    public var striping: StripeChooser.Policy
    /// Local IP addresses, one per NIC, that this node stripes large messages over (rail i is the i-th;
    /// docs/topology.md). Empty: the listen address only.
    public var rails: [String]
    /// Static routes: messages for endpoints at the key's node go through the value's node (a relay), instead of
    /// straight to it. Gateways will fill routes like these from what they learn; today they are set by hand
    /// (`--route NODE=VIA`), e.g. where two nodes cannot reach each other.
    public var routes: [String: String]
    /// This node's hardware, from a topology file and nvidia-smi (docs/topology.md).
    public var topology: Topology
    public var logger: Logger
    /// The clock and chance the node reads (the system's unless a test injects its own).
    public var environment: NodeEnvironment
    /// What the node's links may do (``LinkCapabilities``): all a socket can, unless declined, as a TLS link will.
    public var linkCapabilities: LinkCapabilities
    /// Caps on the links this node accepts while they are in their handshake, and its deadline (docs/hardening.md).
    public var admission: AdmissionLimits
    /// Most of the memory budget one party (an app session, a peer) may reserve; nil: half the budget.
    public var partyShareBytes: Int?
    /// Seconds a message's sender may hold credit and send nothing before the message is aborted (`--idle`).
    public var idleSeconds: Int
    /// Seconds a node told to stop lets its messages in flight finish before it fails them (`--drain`;
    /// ``NodeEngine/drain(within:)``); 0: none.
    public var drainSeconds = Limits.drainSecondsDefault
    /// Seconds one receiver of a fan-out may take nothing while the others go on before it is cut
    /// (`--slow-receiver`).
    public var slowReceiverSeconds: Int
    /// Whether apps may attach over the TCP listen port (`--apps-over-tcp`); off, only peers may.
    public var appsOverTCP: Bool
    /// Who may receive on and send to which addresses (`--access FILE`); nil: every app on the Unix socket may do
    /// everything, as may apps over TCP when they are let in.
    public var access: AccessList?
    /// Mutual TLS on links between nodes (`--tls-authority`, `--tls-cert`, `--tls-key`, `--encrypt-links`); nil:
    /// links between nodes are not authenticated, for a trusted network only.
    public var linkSecurity: LinkSecurity?
    /// Makes the node a gateway of its cluster (docs/gateways.md); nil: an ordinary node.
    public var gateway: GatewayConfiguration?
    /// Where the node records its metrics (docs/observability.md); nil: nowhere.
    public var metrics: (any MetricsFactory)?
    /// Where the node records a span per message (docs/observability.md); nil: nowhere.
    public var tracer: (any Tracer)?
    /// WebAssembly filters on patterns (docs/functions.md), in the order messages run through them.
    public var filters: [FilterAttachment] = []
    /// What filters attached at run time may import (`--filter-grant-log`).
    public var filterCapabilities: FunctionModule.Capabilities = []
    /// Fuel each call into a filter or function at this node may burn (`--function-fuel`; at most
    /// `Limits.functionFuelPerCall`).
    public var functionFuelPerCall = Limits.functionFuelPerCall
    /// The GPU transports the apps of this node can use (`--cuda-driver`: what the driver's GPUs allow): offered
    /// to the route planner beside shared memory (docs/gpu.md).
    public var gpuTransports: RoutePlanner.Capabilities = []

    public init(
        cluster: String = "default",
        name: String,
        listen: NodeAddress,
        joins: [NodeAddress] = [],
        socketPath: String? = nil,
        streams: Int = Limits.streamsDefault,
        chunkBytes: Int = Limits.chunkBytesDefault,
        windowBytes: Int = Limits.windowBytesDefault,
        memoryBudgetBytes: Int = Limits.nodeMemoryBudgetDefault,
        sharedMemoryBudgetBytes: Int = Limits.sharedBudgetDefault,
        sharedHoldSeconds: Int = Limits.sharedHoldSeconds,
        resumeHoldSeconds: Int = Limits.resumeHoldSeconds,
        directory: (any DirectoryBackend)? = nil,
        tuning: SocketTuning = .default,
        striping: StripeChooser.Policy = .fill,
        rails: [String] = [],
        routes: [String: String] = [:],
        topology: Topology = Topology(),
        logger: Logger = Logger(label: "freight.node"),
        environment: NodeEnvironment = .system,
        linkCapabilities: LinkCapabilities = .socket,
        admission: AdmissionLimits = AdmissionLimits(),
        appsOverTCP: Bool = false,
        access: AccessList? = nil,
        linkSecurity: LinkSecurity? = nil,
        partyShareBytes: Int? = nil,
        idleSeconds: Int = Limits.idleSeconds,
        slowReceiverSeconds: Int = Limits.slowReceiverSeconds
    ) {
        self.partyShareBytes = partyShareBytes
        self.idleSeconds = idleSeconds
        self.slowReceiverSeconds = slowReceiverSeconds
        self.admission = admission
        self.appsOverTCP = appsOverTCP
        self.access = access
        self.linkSecurity = linkSecurity
        self.rails = rails
        self.routes = routes
        self.topology = topology
        self.striping = striping
        self.cluster = cluster
        self.name = name
        self.listen = listen
        self.joins = joins
        self.socketPath = socketPath
        self.streams = streams
        self.chunkBytes = chunkBytes
        self.windowBytes = windowBytes
        self.memoryBudgetBytes = memoryBudgetBytes
        self.sharedMemoryBudgetBytes = sharedMemoryBudgetBytes
        self.sharedHoldSeconds = sharedHoldSeconds
        self.resumeHoldSeconds = resumeHoldSeconds
        self.directory = directory
        self.tuning = tuning
        self.logger = logger
        self.environment = environment
        self.linkCapabilities = linkCapabilities
    }

    /// Checks every value against its limit, with a message that names the flag.
    public func validate() throws(FreightError) {
        guard AddressGrammar.isName(name) else {
            throw FreightError(.invalidArgument, "invalid --name '\(name)': use up to 64 of a-z 0-9 . _ -")
        }
        guard AddressGrammar.isName(cluster) else {
            throw FreightError(.invalidArgument, "invalid --cluster '\(cluster)': use up to 64 of a-z 0-9 . _ -")
        }
        guard (1...Limits.streamsMax).contains(streams) else {
            throw FreightError(.invalidArgument, "--streams \(streams) is out of range 1...\(Limits.streamsMax)")
        }
        guard (Limits.chunkBytesMin...Limits.chunkBytesMax).contains(chunkBytes) else {
            throw FreightError(
                .invalidArgument,
                "chunk size \(chunkBytes) is out of range \(Limits.chunkBytesMin)...\(Limits.chunkBytesMax)"
            )
        }
        guard windowBytes >= chunkBytes, windowBytes <= Limits.windowBytesMax else {
            throw FreightError(
                .invalidArgument,
                "window \(windowBytes) must be at least one chunk and at most \(Limits.windowBytesMax)")
        }
        guard memoryBudgetBytes >= windowBytes else {
            throw FreightError(.invalidArgument, "memory budget \(memoryBudgetBytes) is smaller than one window")
        }
        if let partyShareBytes, !(windowBytes...memoryBudgetBytes).contains(partyShareBytes) {
            throw FreightError(
                .invalidArgument, "--party-share \(partyShareBytes) must be between one window and the memory budget")
        }
        guard (1...Limits.resumeHoldSecondsMax).contains(idleSeconds),
            (1...Limits.resumeHoldSecondsMax).contains(slowReceiverSeconds)
        else {
            throw FreightError(
                .invalidArgument, "--idle and --slow-receiver must be within 1...\(Limits.resumeHoldSecondsMax) seconds"
            )
        }
        guard (0...Limits.resumeHoldSecondsMax).contains(drainSeconds) else {
            throw FreightError(
                .invalidArgument, "--drain \(drainSeconds) is out of range 0...\(Limits.resumeHoldSecondsMax) seconds")
        }
        guard (1...Limits.resumeHoldSecondsMax).contains(resumeHoldSeconds) else {
            throw FreightError(
                .invalidArgument,
                "--resume-hold \(resumeHoldSeconds) is out of range 1...\(Limits.resumeHoldSecondsMax) seconds")
        }
        guard sharedMemoryBudgetBytes >= 0, sharedHoldSeconds >= 1 else {
            throw FreightError(.invalidArgument, "--shared-memory-budget must be >= 0 and --shared-hold >= 1 s")
        }
        if case .unix = listen {
            throw FreightError(
                .invalidArgument, "--listen must be HOST:PORT (or inproc://NAME for a node inside a process)")
        }
        guard rails.count <= Limits.railsMax, Set(rails).count == rails.count else {
            throw FreightError(.invalidArgument, "--rail: at most \(Limits.railsMax) different addresses")
        }
        for rail in rails where (try? SocketAddress(ipAddress: rail, port: 0)) == nil {
            throw FreightError(.invalidArgument, "--rail '\(rail)' is not an IP address of this machine's NIC")
        }
        guard routes.count <= Limits.membersMax else {
            throw FreightError(.invalidArgument, "--route: at most \(Limits.membersMax) routes")
        }
        for (node, via) in routes {
            guard AddressGrammar.isName(node), AddressGrammar.isName(via), node != via, via != name, node != name else {
                throw FreightError(
                    .invalidArgument, "--route \(node)=\(via): two different node names, neither of them this node")
            }
        }
        try topology.validate()
    }
}
