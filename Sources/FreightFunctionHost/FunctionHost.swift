import Foundation
import FreightClient
import FreightCore
import FreightDirectory
import FreightFunctions
import FreightNode
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Function endpoints at one node (docs/functions.md, "Function endpoints"): an app of its own node, trusted by
/// it, that serves the functions bound in the cluster. It takes deploys, lists and removals (`_fn/deploy`,
/// `_fn/list`, `_fn/remove`, one host of the cluster answering each), keeps a copy of every bound module (fetched
/// by digest from `_fn/modules/DIGEST`, which every host holding it answers), and registers the addresses whose
/// instances it runs (``FunctionPlacement``). A message to one runs through a fresh instance of the compiled
/// module (compiled at the first message — the cold start — and kept warm until idle), and its output goes to the
/// message's reply-to address.
public final class FunctionHost: Service, Sendable {
    let engine: NodeEngine
    let logger: Logger
    let idleAfter: Duration
    let state = HostState()
    /// How often the host reads the cluster's functions and hosts again.
    static let reconcileInterval = Duration.milliseconds(250)
    /// How long a fetch of a module's bytes may take before another host is asked.
    static let fetchTimeout = Duration.seconds(10)

    public init(engine: NodeEngine, idleAfter: Duration = .seconds(Limits.functionIdleSeconds), logger: Logger) {
        self.engine = engine
        self.idleAfter = idleAfter
        var logger = logger
        logger[metadataKey: "component"] = "functions"
        self.logger = logger
    }

    static let hostsAddress = "\(Limits.functionSegment)/hosts"
    static let deployAddress = "\(Limits.functionSegment)/deploy"
    static let listAddress = "\(Limits.functionSegment)/list"
    static let removeAddress = "\(Limits.functionSegment)/remove"
    static func modulesAddress(_ digest: String) -> String { "\(Limits.functionSegment)/modules/\(digest)" }
    /// The group every host's endpoints share: each message goes to one of them.
    static let group = "fn"

    public func run() async throws {
        try await engine.waitUntilStarted()
        let node: NodeAddress = engine.configuration.socketPath.map { .unix(path: $0) } ?? engine.boundListen
        let client = try await FreightClient.connect(
            to: node, label: "fn", token: engine.internalSecret, logger: logger)
        let context = HostContext(engine: engine, client: client, state: state, logger: logger, idleAfter: idleAfter)
        do {
            let hosts = try await client.receive(Self.hostsAddress)
            let deploys = try await client.receive(Self.deployAddress, group: Self.group)
            let lists = try await client.receive(Self.listAddress, group: Self.group)
            let removals = try await client.receive(Self.removeAddress, group: Self.group)
            logger.info("node \(engine.name) serves functions")
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask {
                    // Nothing is sent to `_fn/hosts`: it is there to be found.
                    for try await message in hosts { message.fail(FreightError(.invalidArgument, "nothing to do")) }
                }
                group.addTask { for try await message in deploys { await context.deploy(message) } }
                group.addTask { for try await message in lists { await context.list(message) } }
                group.addTask { for try await message in removals { await context.remove(message) } }
                group.addTask {
                    while !Task.isCancelled {
                        await context.reconcile()
                        try await Task.sleep(for: Self.reconcileInterval)
                    }
                }
                group.addTask {
                    try? await gracefulShutdown()
                    throw CancellationError()
                }
            }
        } catch is CancellationError {
        } catch {
            logger.error("function host stopped: \(error)")
        }
        await context.stopAll()
        await client.close()
    }
}

/// What a host holds: module bytes, compiled modules and the functions it serves.
actor HostState {
    struct Served {
        var record: FunctionRecord
        var subscription: Subscription
        var slots: Slots
        var task: Task<Void, Never>
    }

    struct Compiled {
        var module: FunctionModule
        var lastUsed: ContinuousClock.Instant
    }

    var modules: [String: [UInt8]] = [:]
    /// When each module's bytes came: bytes no function refers to are dropped only after a while, so that a
    /// deploy's bytes are not dropped by a reconciliation that read the functions just before it bound them.
    var storedAt: [String: ContinuousClock.Instant] = [:]
    static let unreferencedGrace = Duration.seconds(10)
    /// One reconciliation at a time; one asked for meanwhile runs once the current one ends.
    var reconciling = false
    var reconcileAgain = false
    var moduleBytes = 0
    var moduleEndpoints: [String: (subscription: Subscription, task: Task<Void, Never>)] = [:]
    var compiled: [String: Compiled] = [:]
    var served: [Address: Served] = [:]
    var lastFetch: [String: ContinuousClock.Instant] = [:]
    /// Every function this node serves, together: at most `Limits.functionRunsPerNodeMax` run at once.
    nonisolated let nodeSlots = Slots(limit: Limits.functionRunsPerNodeMax)
    /// Replies on their way to their requesters, each holding its output: as many again as instances.
    nonisolated let replySlots = Slots(limit: Limits.functionRunsPerNodeMax)

    func store(_ digest: String, _ bytes: [UInt8]) throws(FreightError) {
        guard modules[digest] == nil else { return }
        guard moduleBytes + bytes.count <= Limits.functionModulesBytesMax else {
            throw FreightError(
                .resourceExhausted,
                "this node keeps \(moduleBytes) bytes of modules; \(bytes.count) more would pass its \(Limits.functionModulesBytesMax)"
            )
        }
        modules[digest] = bytes
        moduleBytes += bytes.count
        storedAt[digest] = .now
    }

    /// Starts a reconciliation: false when one runs already (it runs again when it ends).
    func beginReconcile() -> Bool {
        if reconciling {
            reconcileAgain = true
            return false
        }
        reconciling = true
        return true
    }

    /// Ends a reconciliation: true when another was asked for meanwhile (the caller runs it).
    func endReconcile() -> Bool {
        if reconcileAgain {
            reconcileAgain = false
            return true
        }
        reconciling = false
        return false
    }

    /// Module bytes held that `referenced` does not name, past their grace. Fetch times of modules no longer
    /// referenced are forgotten too (a fetch that never succeeded leaves one).
    func unreferenced(_ referenced: Set<String>) -> [String] {
        lastFetch = lastFetch.filter { referenced.contains($0.key) }
        let now = ContinuousClock.now
        return modules.keys.filter {
            !referenced.contains($0) && now - (storedAt[$0] ?? now) >= Self.unreferencedGrace
        }
    }

    func drop(_ digest: String) {
        if let bytes = modules.removeValue(forKey: digest) { moduleBytes -= bytes.count }
        storedAt[digest] = nil
        compiled[digest] = nil
        lastFetch[digest] = nil
        if let endpoint = moduleEndpoints.removeValue(forKey: digest) {
            endpoint.subscription.cancel()
            endpoint.task.cancel()
        }
    }

    func setModuleEndpoint(_ digest: String, _ subscription: Subscription, _ task: Task<Void, Never>) {
        moduleEndpoints[digest] = (subscription, task)
    }

    func hasModuleEndpoint(_ digest: String) -> Bool { moduleEndpoints[digest] != nil }

    func bytes(_ digest: String) -> [UInt8]? { modules[digest] }

    /// Whether a fetch of `digest` may start now (one every two seconds while it fails).
    func mayFetch(_ digest: String) -> Bool {
        let now = ContinuousClock.now
        if let last = lastFetch[digest], now - last < .seconds(2) { return false }
        lastFetch[digest] = now
        return true
    }

    /// The compiled module for `record`: compiled now (a cold start: how long it took) or kept from an earlier
    /// message (warm: nil).
    func module(for record: FunctionRecord, fuelPerCall: UInt64) throws(FreightError) -> (
        FunctionModule, compiled: Duration?
    ) {
        if var kept = compiled[record.digest] {
            kept.lastUsed = .now
            compiled[record.digest] = kept
            return (kept.module, nil)
        }
        guard let bytes = modules[record.digest] else {
            throw FreightError(
                .resourceExhausted, "function \(record.address): this node has not fetched its module yet")
        }
        let started = ContinuousClock.now
        let module = try FunctionModule(
            name: record.name.isEmpty ? "function" : record.name, bytes: bytes, fuelPerCall: fuelPerCall)
        compiled[record.digest] = Compiled(module: module, lastUsed: .now)
        return (module, ContinuousClock.now - started)
    }

    /// Drops compiled modules idle for `idleAfter`; returns their names.
    func dropIdle(_ idleAfter: Duration) -> [String] {
        let now = ContinuousClock.now
        let idle = compiled.filter { now - $0.value.lastUsed >= idleAfter }
        for digest in idle.keys { compiled[digest] = nil }
        return idle.values.map(\.module.name)
    }

    func servedRecord(_ address: Address) -> FunctionRecord? { served[address]?.record }

    func startServing(_ served: Served) { self.served[served.record.address] = served }

    func setShare(_ address: Address, _ share: Int) { served[address]?.slots.setLimit(share) }

    /// Stops taking messages for `address` (those running go on to their end); true when it was served.
    @discardableResult
    func stopServing(_ address: Address) -> Bool {
        guard let gone = served.removeValue(forKey: address) else { return false }
        gone.subscription.cancel()
        gone.slots.close()
        return true
    }

    var servedAddresses: [Address] { Array(served.keys) }

    func stopAll() {
        for address in served.keys { stopServing(address) }
        for digest in Array(moduleEndpoints.keys) {
            moduleEndpoints[digest]?.subscription.cancel()
            moduleEndpoints[digest]?.task.cancel()
        }
        moduleEndpoints = [:]
        nodeSlots.close()
        replySlots.close()
    }
}

/// Runs its closure the first time `run()` is called, never again.
final class Once: Sendable {
    private let body: Mutex<(@Sendable () -> Void)?>

    init(_ body: @escaping @Sendable () -> Void) { self.body = Mutex(body) }

    func run() {
        let taken = body.withLock { body in
            defer { body = nil }
            return body
        }
        taken?()
    }
}
