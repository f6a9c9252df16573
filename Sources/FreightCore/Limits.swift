/// Every limit Freight enforces, named in one place. Each is checked where data enters and tested at its edge.
public enum Limits {
    /// Segments in an address or pattern.
    public static let addressSegmentsMax = 16
    /// The first segment of an inbox address, `_inbox/NODE/...`: a node's own, where its clients wait for replies.
    public static let inboxSegment = "_inbox"
    /// Bytes in an address or pattern.
    public static let addressBytesMax = 255
    /// Smallest and largest body chunk, and the default. 1 MiB: with shared memory a chunk moves through four
    /// stages (the sender's checksum, `sendfile`, the receiving node's copy, the receiver), and smaller chunks keep
    /// each stage's bytes in cache for the next (docs/performance.md: 8 MiB … 1 GiB about a tenth faster than with
    /// 4 MiB).
    public static let chunkBytesMin = 64 * 1024
    public static let chunkBytesMax = 64 * 1024 * 1024
    public static let chunkBytesDefault = 1024 * 1024
    /// Largest control frame (everything that is not a body chunk): the protobuf payload.
    public static let controlFrameBytesMax = 64 * 1024
    /// Read buffers that slices of them, held for another party, may keep alive beyond the slices' own bytes: per
    /// connection (SMALL bodies written out of line until the kernel takes them) and per chunk held until its last
    /// piece. A slice keeps its whole read buffer (64 KiB to 1 MiB); past this, bytes are copied (docs/hardening.md).
    public static let readBuffersKeptAliveBytesMax = 8 << 20
    /// Largest body sent as a SMALL message (header and body in one frame, docs/small-messages-and-files.md);
    /// larger ones go as OPEN and DATA.
    public static let smallBodyBytesMax = 64 * 1024
    /// Largest SMALL frame payload: several whole messages of up to `smallBodyBytesMax`, above the control-frame
    /// limit that every other frame but DATA keeps.
    public static let smallFrameBytesMax = 1024 * 1024
    /// What a small message counts against an eager budget beyond its body: an allowance for its header.
    public static let smallHeaderAllowanceBytes = 512
    /// What a small message of `length` body bytes counts against an eager budget; both ends of a hop count alike.
    public static func smallCost(length: UInt64) -> UInt64 { length + UInt64(smallHeaderAllowanceBytes) }
    /// A SMALL frame is closed once its payload reaches this, below `smallFrameBytesMax`.
    public static let smallBatchBytesMax = 256 * 1024
    /// The longest reason an outcome of a small message carries (longer ones are cut): an app's own reason can be
    /// any length, and a batch of outcomes must fit a frame.
    public static let outcomeReasonBytesMax = 1024
    /// Eager budgets (Hello.eager_bytes): what a node takes from each peer and app, and an app from its node, of
    /// small messages whose outcomes have not come back.
    public static let eagerBytesNode = 16 * 1024 * 1024
    public static let eagerBytesApp = 4 * 1024 * 1024

    /// Messages a sender keeps in flight when it is not told how many (`freight send`, `freight bench`): small ones
    /// (docs/small-messages-and-files.md) as many as half the receiver's eager budget takes (an app's, or a node's
    /// for a node's own messages to another), at most a connection's limit, so that many go per frame and per
    /// acknowledgement and none is sent back (RESEND) for a full budget; larger ones 64 MiB of them, at most 64.
    public static func inFlightDefault(bodyBytes: UInt64, receiverEagerBytes: Int = eagerBytesApp) -> Int {
        if bodyBytes <= UInt64(smallBodyBytesMax) {
            let half = UInt64(receiverEagerBytes / 2)
            return Int(max(1, min(UInt64(messagesPerConnectionMax), half / smallCost(length: bodyBytes))))
        }
        return Int(max(1, min(64, (64 << 20) / bodyBytes)))
    }

    /// Largest message header (protobuf), within a control frame.
    public static let headerBytesMax = 16 * 1024
    /// Attributes on one message header.
    public static let attributesMax = 64
    /// Default per-message window: body bytes a sender may have in flight beyond the acknowledged offset.
    public static let windowBytesDefault = 32 * 1024 * 1024
    /// Bounds on a receiver's window.
    public static let windowBytesMin = 64 * 1024
    public static let windowBytesMax = 1024 * 1024 * 1024
    /// The most a gateway's window hint raises the window of the nodes and apps after it (docs/wan.md, "Windows").
    public static let windowHintMax = 256 * 1024 * 1024
    /// Memory a node commits to messages in flight; each message reserves its window.
    public static let nodeMemoryBudgetDefault = 1024 * 1024 * 1024
    /// Endpoints one `resolve` reply lists (it says when more matched).
    public static let resolveResultsMax = 256
    /// Endpoints one `resolve --explain` reply plans a route to.
    public static let explainResultsMax = 32
    /// Endpoints one app session may register.
    public static let registrationsPerSessionMax = 4096
    /// Endpoints a node accepts from one peer in the mesh directory.
    public static let endpointsPerPeerMax = 1_000_000
    /// Endpoints of other nodes a node keeps in all (about 0.5 KiB each in memory).
    public static let remoteEndpointsMax = 2_000_000
    /// Members in one cluster's mesh.
    public static let membersMax = 1024
    /// Seconds a node holds a message whose link broke (the receiving side keeps what it holds, the sending side
    /// its suspended branch) for the link to come back and the message to resume (docs/core.md). The default of
    /// `freight node --resume-hold`.
    public static let resumeHoldSeconds = 30
    /// Seconds a TCP link's sent bytes may go unacknowledged before the link counts as broken (TCP_USER_TIMEOUT):
    /// then its messages are held for resume (`resumeHoldSeconds`). The default of `freight node --link-timeout`.
    public static let linkTimeoutSeconds = 10
    /// Milliseconds a node waits after one stripe of a link broke before it has that stripe's bytes sent again: when
    /// the whole link is breaking, its other stripes close within this time and the message resumes once.
    public static let stripeLossSettleMillis = 100
    /// Resume offsets one message records at one node, and an app keeps for one message: a link that flaps
    /// cannot make either grow without bound (later resumes still happen, they are not listed).
    public static let resumesRecordedMax = 16
    /// Chunks of one message a receiving app may find failing their checksum and ask for again (a chunk cut
    /// mid-stream by a broken link reaches a socket receiver completed with filler); past it the message fails.
    public static let chunkResendsMax = 8
    /// Times one message may be asked to send again from an offset at one node (resumes, lost stripes, chunks asked
    /// for again): past it the branch that asks fails, so no party can make a sender resend without end.
    public static let rewindsPerMessageMax = 64
    /// Largest `--resume-hold`.
    public static let resumeHoldSecondsMax = 3600
    /// Seconds a node told to stop (SIGTERM) lets its messages in flight finish, taking no new ones, before it
    /// fails what is left with the reason and exits. The default of `freight node --drain`; Kubernetes' default
    /// termination grace period is 30 s.
    public static let drainSecondsDefault = 20
    /// Heartbeats a node sends on each stripe per link timeout (so a dark link has bytes unacknowledged on every
    /// stripe well before the timeout ends).
    public static let heartbeatsPerLinkTimeout = 3
    /// Bytes of an app's label (its HELLO name) a node keeps.
    public static let appLabelBytesMax = 128
    /// Outcomes (DONE/ABORT) a node remembers for peers whose link broke before the outcome arrived.
    public static let outcomesRememberedMax = 4096
    /// Nodes a message may pass on its way (the sender's node, relays, the receiver's node): a path longer than this
    /// is refused, so a routing mistake cannot bounce a message around.
    public static let pathHopsMax = 8
    /// Clusters a route between sites may name on its path (docs/gateways.md): a longer route is dropped where it
    /// arrives.
    public static let clusterPathMax = 16
    /// The largest chunk a gateway link carries: its DATA frames are read whole (through TLS), so this bounds what one
    /// frame makes a gateway hold beyond the credit it granted.
    public static let gatewayChunkBytesMax = 16 * 1024 * 1024
    /// How long a gateway link may be silent before it is closed and its routes withdrawn (keepalives every third of
    /// it): short, so a gateway gone dark is routed around in seconds.
    public static let gatewayHoldDefault: Duration = .seconds(3)
    /// The hold times a gateway takes: at least a second (keepalives a third of it apart), at most an hour.
    public static let gatewayHoldRange: ClosedRange<Duration> = .seconds(1) ... .seconds(3600)
    /// TCP connections one gateway link stripes over at most (docs/wan.md, "Stripes").
    public static let gatewayStripesMax = 16
    /// Routes a gateway keeps from one gateway link: a peer that announces more is cut off and its routes withdrawn.
    public static let routesPerLinkMax = 65_536
    /// Concurrent messages one connection may have open in each direction.
    public static let messagesPerConnectionMax = 1024
    /// Spans a node keeps open at once (docs/observability.md): messages past it are not traced at that node.
    public static let tracedMessagesMax = 65_536
    /// Fuel a WebAssembly filter or function may burn in one call (docs/functions.md): about a second of the
    /// interpreter's work, enough for a 1 MiB chunk of a per-byte loop.
    public static let functionFuelPerCall: UInt64 = 400_000_000
    /// Linear memory a module may grow to.
    public static let functionMemoryBytesMax = 64 * 1024 * 1024
    /// A module's size (binary or text).
    public static let functionModuleBytesMax = 16 * 1024 * 1024
    /// Output a filter or function may produce for one input chunk (or at its end), and in all when its output's
    /// length is not known up front.
    public static let functionOutputBytesMax = 64 * 1024 * 1024
    /// A module's config string (`PATTERN=module.wasm?CONFIG`).
    public static let functionConfigBytesMax = 4096
    /// Messages a node runs through its filters at once (each holds a module instance of up to
    /// `functionMemoryBytesMax`); more fail with `resource_exhausted`, and their senders send them again.
    public static let filteredMessagesMax = 16
    /// Filters attached at one node.
    public static let filtersPerNodeMax = 16
    /// The first segment of the fabric's function addresses (`_fn/deploy`, `_fn/modules/DIGEST`, docs/functions.md).
    public static let functionSegment = "_fn"
    /// Functions bound in one cluster (removals the mesh remembers count too, and go first when it is full).
    public static let functionsMax = 256
    /// A function's `--max-instances`.
    public static let functionInstancesMax = 1024
    /// Messages a node runs through its function endpoints at once, all functions together (each holds an
    /// instance of up to `functionMemoryBytesMax` and its output of up to `functionOutputBytesMax`); more wait
    /// their turn at their senders.
    public static let functionRunsPerNodeMax = 16
    /// Module bytes a node keeps for the functions it serves.
    public static let functionModulesBytesMax = 256 * 1024 * 1024
    /// A function endpoint's compiled module is dropped after this long without a message (a node may say less).
    public static let functionIdleSeconds = 300
    /// Messages in flight a status lists (the largest), for the live page and `freight top`.
    public static let statusFlowsMax = 16
    /// Failed messages a node remembers for its status, newest first.
    public static let recentErrorsMax = 16
    /// Stripes (TCP connections) between two nodes.
    public static let streamsMax = 64
    public static let streamsDefault = 4
    /// Seconds a sender may take to finish a chunk it started before its connection is closed.
    public static let chunkStallSeconds = 10
    /// Attempts to reach a member learned from gossip before forgetting it.
    public static let dialAttemptsMax = 5
    /// Bytes of a node's, a cluster's or a group's name.
    public static let nameBytesMax = 64
    /// A dial that has not connected within this long fails (a dark link; nothing answers).
    public static let dialTimeoutSeconds: Int64 = 5
    /// Seconds an accepted link has for its preface and HELLO (and its TLS handshake, where it has one) before it
    /// is closed (docs/hardening.md).
    public static let handshakeSeconds: Int64 = 5
    /// Links in their handshake a node holds in all, and from one source address.
    public static let handshakesMax = 256
    public static let handshakesPerSourceMax = 64
    /// Seconds a message's sender may hold credit and send nothing before the message is aborted and its
    /// reservation returned (docs/hardening.md).
    public static let idleSeconds = 30
    /// Seconds one receiver of a message sent to several may take nothing while the others go on, before it is cut
    /// with `slow receiver`.
    public static let slowReceiverSeconds = 10
    /// Links a node holds in all, established or not.
    public static let connectionsMax = 16_384
    /// Transports a node record may name, and the bytes of each name.
    public static let recordTransportsMax = 8
    public static let recordTransportNameBytesMax = 32
    /// Shared memory between apps and their node (docs/shared-memory.md): each half of an app's pool by default,
    /// the most one pool may be, and what a node accepts over all its apps by default.
    public static let sharedPoolHalfBytesDefault = 64 * 1024 * 1024
    public static let sharedPoolBytesMax = 16 * 1024 * 1024 * 1024
    public static let sharedBudgetDefault = 4 * 1024 * 1024 * 1024
    /// Seconds an app may hold a region lent from another app's pool before its node disconnects it.
    public static let sharedHoldSeconds = 60
    /// Regions one app may hold at once (each SHARED frame it has not released).
    public static let sharedHoldsMax = 65_536
    /// Files one app may lend its node for sending at once (`freight send --file`; docs/small-messages-and-files.md).
    public static let sharedFilesPerAppMax = 64
    /// GPUs one app may say it opens CUDA IPC handles on (its HELLO's `cuda-ipc:GPU-…`; docs/gpu.md).
    public static let gpusPerAppMax = 16
    /// Device allocations a client keeps lent to its node at once (each a descriptor link, counted with its files
    /// against ``sharedFilesPerAppMax``); the one used longest ago, with no region out, goes back for a new one.
    public static let deviceLendsPerAppMax = 16
    /// Registrations and withdrawals a node may have waiting for its directory backend (etcd) at once.
    public static let directoryPendingMax = 65_536
    /// Seconds a registration waits for an unreachable directory backend (etcd at a node's start, or away) before
    /// it is refused with the reason.
    public static let directoryWaitSeconds = 5
    /// Endpoint changes a watcher may fall behind by before its watch ends (and it must watch again).
    public static let watchBacklogMax = 65_536
    /// Largest body piece in one gRPC message (`SendRequest.data`).
    public static let grpcDataBytesMax = 64 * 1024 * 1024
    /// Seconds a client waits for a pool its node announced before failing the chunks that name it.
    public static let sharedPoolWaitSeconds = 5
    /// GPUs and NICs one node's topology may describe, and the longest name or domain in it.
    public static let topologyGPUsMax = 64
    public static let topologyNICsMax = 64
    public static let topologyNameBytesMax = 64
    /// GPU indices, rail indices and NUMA nodes are below this, wherever they come from (file, nvidia-smi, the
    /// network, `--gpu`).
    public static let topologyIndexMax = 1024
    /// Bytes of a topology file or of one `nvidia-smi` output Freight reads.
    public static let topologyInputBytesMax = 1024 * 1024
    /// Message attribute naming the GPU the sender's buffer belongs to (`freight send --gpu N`): the node sends it
    /// on that GPU's rail-aligned NIC (docs/topology.md).
    public static let gpuAttribute = "freight.gpu"
    /// Message attribute naming the GPU a device body lies on (its UUID, `GPU-…`): the sender's node answers how it
    /// moves (hand-over or staging, docs/gpu.md). Set by the client, never by the app.
    public static let deviceAttribute = "freight.device"
    /// Rails (local addresses, one per NIC) a node stripes over.
    public static let railsMax = 16
}
