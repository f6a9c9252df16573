import ArgumentParser
import Foundation
import FreightAdmin
import FreightCUDA
import FreightCore
import FreightDirectory
import FreightEtcd
import FreightFunctionHost
import FreightFunctions
import FreightGRPC
import FreightNode
import FreightRouting
import FreightTransport
import Logging
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization

struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "node", abstract: "Run a node agent.")

    @Option(name: .customLong("cluster"), help: "Cluster name; nodes only peer within one cluster.")
    var cluster = "default"
    @Option(name: .customLong("name"), help: "This node's name, unique in the cluster.")
    var name: String
    @Option(name: .customLong("listen"), help: "HOST:PORT for peers and TCP apps (port 0 picks one).")
    var listen: String
    @Option(name: .customLong("join"), help: "HOST:PORT of a node to join; repeatable.")
    var join: [String] = []
    @Option(name: .customLong("socket"), help: "Unix socket for apps on this machine.")
    var socket = defaultSocketPath
    @Option(
        name: .customLong("directory"),
        help: "Endpoint directory: mesh (gossip between nodes) or etcd://HOST:PORT[,HOST:PORT...].")
    var directory = "mesh"
    @Option(name: .customLong("lease-ttl"), help: "Seconds of the node's etcd lease (etcd directory).")
    var leaseTTL = 10
    @Option(name: .customLong("streams"), help: "TCP connections per peer link.")
    var streams = Limits.streamsDefault
    @Option(name: .customLong("chunk-size"), help: "Default body chunk size (64KiB...64MiB).")
    var chunkSize = ByteCount.format(Int64(Limits.chunkBytesDefault))
    @Option(name: .customLong("window"), help: "Most body bytes of one message in flight through this node.")
    var window = "32MiB"
    @Option(name: .customLong("memory-budget"), help: "Memory this node commits to messages in flight.")
    var memoryBudget = "1GiB"
    @Option(
        name: .customLong("shared-memory-budget"),
        help: "Shared memory this node accepts from its apps' pools in all (0: none).")
    var sharedMemoryBudget = "4GiB"
    @Option(
        name: .customLong("shared-hold"),
        help: "Seconds an app may hold another app's shared region before it is disconnected.")
    var sharedHold = Limits.sharedHoldSeconds
    @Option(
        name: .customLong("resume-hold"),
        help: "Seconds a message whose link broke waits for the link to come back and resume.")
    var resumeHold = Limits.resumeHoldSeconds
    @Option(
        name: .customLong("drain"),
        help:
            "Seconds a node told to stop (SIGTERM, SIGINT) lets messages in flight finish, refusing new ones, before it fails what is left and exits."
    )
    var drain = Limits.drainSecondsDefault
    @Option(
        name: .customLong("link-timeout"),
        help: "Seconds a link's sent bytes may go unacknowledged before the link counts as broken.")
    var linkTimeout = Limits.linkTimeoutSeconds
    @Option(name: .customLong("striping"), help: "How chunks use a link's streams: fill (one, then spill) or spread.")
    var striping = "fill"
    @Option(name: .customLong("congestion"), help: "TCP congestion control of links: reno, cubic, bbr or system.")
    var congestion = "reno"
    @Option(
        name: .customLong("rail"),
        help: "IP address of a NIC to stripe large messages over; repeatable, rail order (docs/topology.md).")
    var rails: [String] = []
    @Option(
        name: .customLong("route"),
        help: "NODE=VIA: send messages for NODE's endpoints through node VIA (a relay); repeatable.")
    var routes: [String] = []
    @OptionGroup var topologySource: TopologyOptions
    @Option(
        name: .customLong("cuda-driver"),
        help: """
            The CUDA driver library whose GPU transports (CUDA IPC, staging through pinned memory) this node's route \
            planner offers (docs/gpu.md); off: none. Without a driver or GPU the node simply offers none.
            """)
    var cudaDriver = "libcuda.so.1"
    @Option(
        name: .customLong("party-share"),
        help: "Most of the memory budget one app or peer may reserve (default: half the budget).")
    var partyShare: String?
    @Option(
        name: .customLong("idle"), help: "Seconds a sender may hold credit and send nothing before its message fails.")
    var idle = Limits.idleSeconds
    @Option(
        name: .customLong("slow-receiver"),
        help: "Seconds one receiver of a fan-out may take nothing while the others go on before it is cut.")
    var slowReceiver = Limits.slowReceiverSeconds
    @Flag(
        name: .customLong("apps-over-tcp"),
        help: "Let apps attach over the TCP listen port as well as the Unix socket (off: peers only).")
    var appsOverTCP = false
    @Option(
        name: .customLong("access"),
        help:
            "Access list: which apps (uid, gid, token) may receive on and send to which addresses (docs/hardening.md).")
    var access: String?
    @OptionGroup(title: "Mutual TLS between nodes") var tls: LinkSecurityOptions
    @OptionGroup(title: "Gateway of the cluster") var gateway: GatewayOptions
    @Option(name: .customLong("grpc"), help: "HOST:PORT for the gRPC API (port 0 picks one).")
    var grpc: String?
    @Option(
        name: .customLong("admin"),
        help: "HOST:PORT for the admin port: /metrics (Prometheus), /healthz, /readyz (port 0 picks one).")
    var admin: String?
    @Option(
        name: .customLong("filter"),
        help:
            "PATTERN=MODULE.wasm[?CONFIG]: messages to PATTERN run through this WebAssembly filter at this node (docs/functions.md); repeatable, in order."
    )
    var filters: [String] = []
    @Flag(
        name: .customLong("filter-grant-log"),
        help: "Let this node's filters import freight.log (lines in the node's log); no other capability exists.")
    var filterGrantLog = false
    @Flag(
        name: .customLong("functions"),
        help:
            "Serve function endpoints (freight fn deploy): run instances of the cluster's functions on demand here (docs/functions.md)."
    )
    var functions = false
    @Option(
        name: .customLong("function-idle"),
        help: "Seconds a function's compiled module stays warm at this node without a message (default 300).")
    var functionIdle = Limits.functionIdleSeconds
    @Option(
        name: .customLong("function-fuel"),
        help:
            "Fuel each call into a filter or function at this node may burn before it fails its message (default and most \(Limits.functionFuelPerCall), about a second of the interpreter's work)."
    )
    var functionFuel = Limits.functionFuelPerCall
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error.")
    var logLevel = "info"
    @Option(
        name: .customLong("log-format"),
        help: "text, or json: one object per line (time, level, logger, msg, message_id, trace_id, …) for log shippers."
    )
    var logFormat = "text"
    @OptionGroup var output: OutputOptions

    func stripingPolicy() throws(FreightError) -> StripeChooser.Policy {
        guard let policy = StripeChooser.Policy(rawValue: striping) else {
            throw FreightError(.invalidArgument, "--striping \(striping): use fill or spread")
        }
        return policy
    }

    func parsedRoutes() throws(FreightError) -> [String: String] {
        var table: [String: String] = [:]
        for route in routes {
            let parts = route.split(separator: "=", omittingEmptySubsequences: false)
            guard parts.count == 2, table[String(parts[0])] == nil else {
                throw FreightError(.invalidArgument, "--route \(route): use NODE=VIA, once per NODE")
            }
            table[String(parts[0])] = String(parts[1])
        }
        return table
    }

    func run() async throws {
        MemoryTuning.apply()
        do {
            let adminAddress = try admin.map { text throws(FreightError) in try Self.serverAddress(text, "--admin") }
            let grpcAddress = try grpc.map { text throws(FreightError) in try Self.serverAddress(text, "--grpc") }
            guard let level = Logger.Level(rawValue: logLevel) else {
                throw FreightError(
                    .invalidArgument, "--log-level \(logLevel): use trace, debug, info, notice, warning or error")
            }
            switch logFormat {
            case "text": break
            case "json": LoggingSystem.bootstrap { label in JSONLogHandler(label: label) }
            default: throw FreightError(.invalidArgument, "--log-format \(logFormat): use text or json")
            }
            var logger = Logger(label: "freight.node")
            logger.logLevel = level
            let (topology, topologyWarnings) = try topologySource.load(node: name)
            for warning in topologyWarnings { logger.warning("\(warning)") }
            let backend: (any DirectoryBackend)? =
                directory == "mesh" ? nil : try EtcdDirectory(url: directory, leaseTTL: leaseTTL, logger: logger)
            var settings = NodeConfiguration(
                cluster: cluster,
                name: name,
                listen: try Self.hostAndPort(listen, flag: "--listen"),
                joins: try join.map { text throws(FreightError) in try Self.hostAndPort(text, flag: "--join") },
                socketPath: socket.isEmpty ? nil : socket,
                streams: streams,
                chunkBytes: Int(try ByteCount.parse(chunkSize)),
                windowBytes: Int(try ByteCount.parse(window)),
                memoryBudgetBytes: Int(try ByteCount.parse(memoryBudget)),
                sharedMemoryBudgetBytes: Int(try ByteCount.parse(sharedMemoryBudget)),
                sharedHoldSeconds: sharedHold,
                resumeHoldSeconds: resumeHold,
                directory: backend,
                tuning: SocketTuning(
                    congestionControl: congestion == "system" ? nil : congestion,
                    userTimeoutMillis: linkTimeout > 0 ? linkTimeout * 1000 : nil),
                striping: try stripingPolicy(),
                rails: rails,
                routes: try parsedRoutes(),
                topology: topology,
                logger: logger,
                appsOverTCP: appsOverTCP,
                access: try access.map { path throws(FreightError) in try Self.loadAccessList(path) },
                linkSecurity: try tls.load(cluster: cluster, name: name),
                partyShareBytes: try partyShare.map { text throws(FreightError) in Int(try ByteCount.parse(text)) },
                idleSeconds: idle,
                slowReceiverSeconds: slowReceiver
            )
            settings.gateway = try gateway.load(cluster: cluster, tls: tls)
            settings.drainSeconds = drain
            settings.gpuTransports = Self.gpuTransports(cudaDriver, logger: logger)
            let grants: FunctionModule.Capabilities = filterGrantLog ? [.log] : []
            settings.filterCapabilities = grants
            guard (1...Limits.functionFuelPerCall).contains(functionFuel) else {
                throw FreightError(
                    .invalidArgument, "--function-fuel must be 1 to \(Limits.functionFuelPerCall) per call")
            }
            settings.functionFuelPerCall = functionFuel
            settings.filters = try filters.map { text throws(FreightError) in
                try FilterAttachment.parse(text, capabilities: grants, fuelPerCall: functionFuel)
            }
            for filter in settings.filters { logger.info("filter \(filter.description)") }
            // Each node process keeps its metrics in a registry of its own, which its admin port exposes.
            let registry = adminAddress.map { _ in PrometheusCollectorRegistry() }
            settings.metrics = registry.map { MetricsCatalog.factory(registry: $0) }
            // With OTEL_* set, a span per message this node passes, exported over OTLP (docs/observability.md).
            let tracing = try Telemetry.tracing(serviceName: "freight-node-\(name)")
            settings.tracer = tracing?.tracer
            let configuration = settings
            try configuration.validate()
            if configuration.access == nil {
                logger.notice(
                    "no access list (--access): every app on the Unix socket may receive on and send to any address")
            }
            if appsOverTCP && configuration.access == nil {
                logger.warning("apps over TCP without an access list: whoever reaches \(listen) may attach as an app")
            }
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let engine = NodeEngine(configuration: configuration, eventLoop: group.next())
            let announce: @Sendable (NodeEngine, Int?) -> Void = { engine, grpcPort in
                let grpcListen = grpcPort.map { "\(grpcAddress!.host):\($0)" }
                if output.json {
                    printJSON([
                        "event": "listening", "name": engine.name, "listen": engine.boundListen.description,
                        "socket": configuration.socketPath ?? "", "grpc": grpcListen ?? "", "pid": Int(getpid()),
                        "gateway": engine.gatewayAddress ?? "",
                    ])
                } else {
                    printLine(
                        "node \(engine.name) listening on \(engine.boundListen)\(configuration.socketPath.map { ", apps on \($0)" } ?? "")\(grpcListen.map { ", gRPC on \($0)" } ?? "")"
                    )
                }
            }
            // Stopped in reverse order on SIGTERM or SIGINT: the gRPC API first, then the directory, then the node.
            var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
                .init(
                    service: NodeService(engine: engine) { engine in if grpcAddress == nil { announce(engine, nil) } })
            ]
            if let backend { services.append(.init(service: DirectoryService(backend: backend, engine: engine))) }
            // First, so that it stops last: the node ends its open spans as it stops, and they are exported.
            if let tracing { services.insert(.init(service: tracing.service), at: 0) }
            if functions {
                guard (1...86_400).contains(functionIdle) else {
                    throw FreightError(.invalidArgument, "--function-idle must be 1 to 86400 seconds")
                }
                services.append(
                    .init(service: FunctionHost(engine: engine, idleAfter: .seconds(functionIdle), logger: logger)))
            }
            if let grpcAddress {
                services.append(
                    .init(
                        service: FabricServer(
                            engine: engine, host: grpcAddress.host, port: grpcAddress.port, logger: logger
                        ) { port in announce(engine, port) }))
            }
            if let adminAddress, let registry {
                let output = self.output
                services.append(
                    .init(
                        service: AdminServer(
                            engine: engine, host: adminAddress.host, port: adminAddress.port, registry: registry,
                            logger: logger
                        ) { port in
                            if output.json {
                                printJSON(["event": "admin", "admin": "\(adminAddress.host):\(port)"])
                            } else {
                                printLine("node \(engine.name): admin on http://\(adminAddress.host):\(port)/metrics")
                            }
                        }))
            }
            let serviceGroup = ServiceGroup(
                configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
            )
            try await serviceGroup.run()
            try await group.shutdownGracefully()
        } catch {
            fail(error)
        }
    }

    /// Reads an access list; one that defines tokens must be readable by its owner only (it holds their secrets).
    static func loadAccessList(_ path: String) throws(FreightError) -> AccessList {
        var info = stat()
        guard stat(path, &info) == 0, let data = FileManager.default.contents(atPath: path) else {
            throw FreightError(.invalidArgument, "cannot read access list \(path)")
        }
        guard data.count <= AccessList.fileBytesMax else {
            throw FreightError(.invalidArgument, "access list \(path) is over \(AccessList.fileBytesMax) bytes")
        }
        let list = try AccessList.parse(String(decoding: data, as: UTF8.self))
        if list.definesTokens && info.st_mode & 0o077 != 0 {
            throw FreightError(
                .invalidArgument,
                "access list \(path) holds token secrets and others may read it (mode \(String(info.st_mode & 0o777, radix: 8))): chmod 600 it"
            )
        }
        return list
    }

    /// Where a server of the node (its gRPC API, its admin port) listens: `HOST:PORT`, port 0 for any.
    static func serverAddress(_ text: String, _ flag: String) throws(FreightError) -> (host: String, port: Int) {
        guard case .tcp(let host, let port) = try NodeAddress(text) else {
            throw FreightError(.invalidArgument, "\(flag) must be HOST:PORT")
        }
        return (host, port)
    }

    /// A node process listens and joins over TCP only: `inproc://` names reach listeners inside one process
    /// (tests), and a socket path is where apps attach (`--socket`).
    /// What the GPUs the driver at `library` sees allow (``CUDADevice/transports``), as the planner's capabilities;
    /// none without a driver or GPU, which is said at debug level only: most machines have neither.
    static func gpuTransports(_ library: String, logger: Logger) -> RoutePlanner.Capabilities {
        guard library != "off" else { return [] }
        do {
            let devices = try CUDADriver.load(library: library).devices()
            let transports = Set(devices.flatMap(\.transports))
            var capabilities: RoutePlanner.Capabilities = []
            if transports.contains("cuda-ipc") { capabilities.insert(.cudaIPC) }
            if transports.contains("gpu-staged") { capabilities.insert(.gpuStaged) }
            logger.info(
                "GPU transports: \(transports.isEmpty ? "none" : transports.sorted().joined(separator: ", ")) (\(devices.count) GPU\(devices.count == 1 ? "" : "s"), \(library))"
            )
            return capabilities
        } catch {
            logger.debug("no GPU transport: \(error.message)")
            return []
        }
    }

    static func hostAndPort(_ text: String, flag: String) throws(FreightError) -> NodeAddress {
        let address = try NodeAddress(text)
        guard case .tcp = address else {
            throw FreightError(.invalidArgument, "\(flag) must be HOST:PORT, not '\(text)'")
        }
        return address
    }
}
