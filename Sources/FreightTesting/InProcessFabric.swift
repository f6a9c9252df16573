import Foundation
import FreightCore
import FreightNode
import FreightSecurity
import FreightTransport
import Logging
import NIOCore
import NIOPosix

/// A whole fabric in one process: nodes n1...nN on 127.0.0.1...N with real TCP links between them and a Unix
/// socket each for apps. Used by `freight demo`, `freight bench` and tests.
///
/// With `links: .inProcess` the nodes listen on `inproc://` names instead and are joined by in-process links, with
/// no socket between them (apps still attach over each node's Unix socket, or in process with
/// ``NodeEngine/attachSink(_:label:)``); tests cut those links at will (``cut(_:)``, ``setDown(_:_:)``).
public final class InProcessFabric: Sendable {
    /// How the fabric's nodes are linked.
    public enum Links: Sendable {
        case sockets
        case inProcess
    }

    /// How the fabric's TCP links between nodes prove who is at the other end (docs/hardening.md): not at all, by
    /// mutual TLS with certificates from an authority made for the fabric, or by mutual TLS kept for encryption.
    public enum Security: String, Sendable, CaseIterable {
        case none
        case authenticated
        case encrypted
    }

    /// How the fabric's nodes are named and where they listen: `n1`… on 127.0.0.1…, or, for one cluster of several
    /// in one process (docs/gateways.md), `PREFIX1`… on a network of its own, the last one named `PREFIX-gw` when it is
    /// the cluster's gateway.
    public struct Naming: Sendable {
        public var prefix: String
        public var hostPrefix: String

        public init(prefix: String, hostPrefix: String) {
            self.prefix = prefix
            self.hostPrefix = hostPrefix
        }

        public static let plain = Naming(prefix: "n", hostPrefix: "127.0.0.")

        func name(_ index: Int, of count: Int, gateway: Bool) -> String {
            gateway && index == count ? "\(prefix)-gw" : "\(prefix)\(index)"
        }
    }

    public let engines: [NodeEngine]
    public let directory: String
    let group: MultiThreadedEventLoopGroup

    private init(engines: [NodeEngine], directory: String, group: MultiThreadedEventLoopGroup) {
        self.engines = engines
        self.directory = directory
        self.group = group
    }

    /// Starts `count` nodes that join the first. `appsOverTCP`: the nodes let apps attach over TCP (`fabric.tcp(i)`),
    /// as `freight node --apps-over-tcp` does, so that benchmarks and tests can drive both paths.
    public static func start(
        nodes count: Int,
        cluster: String = "demo",
        streams: Int = Limits.streamsDefault,
        windowBytes: Int = Limits.windowBytesDefault,
        memoryBudgetBytes: Int = Limits.nodeMemoryBudgetDefault,
        sharedMemoryBudgetBytes: Int = Limits.sharedBudgetDefault,
        sharedHoldSeconds: Int = Limits.sharedHoldSeconds,
        resumeHoldSeconds: Int = Limits.resumeHoldSeconds,
        idleSeconds: Int = Limits.idleSeconds,
        logLevel: Logger.Level = .warning,
        environment: NodeEnvironment = .system,
        linkCapabilities: LinkCapabilities = .socket,
        links: Links = .sockets,
        routes: [String: [String: String]] = [:],
        appsOverTCP: Bool = true,
        security: Security = .none,
        naming: Naming = .plain,
        gateway: GatewayConfiguration? = nil,
        linkTimeoutSeconds: Int = Limits.linkTimeoutSeconds
    ) async throws -> InProcessFabric {
        let tag = "freight-fabric-\(UInt32.random(in: 0...UInt32.max))"
        let directory = NSTemporaryDirectory() + tag
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: count)
        var logger = Logger(label: "freight.fabric")
        logger.logLevel = logLevel
        var engines: [NodeEngine] = []
        do {
            let authority = security == .none ? nil : try CertificateAuthority.create(name: "\(cluster) authority")
            for index in 1...count {
                let name = naming.name(index, of: count, gateway: gateway != nil)
                let linkSecurity = try authority.map { authority in
                    let files = "\(directory)/\(name)-tls"
                    try authority.issue(NodeIdentity(cluster: cluster, node: name), into: files)
                    return try LinkSecurity(
                        cluster: cluster, name: name, directory: files, encrypts: security == .encrypted)
                }
                var configuration = NodeConfiguration(
                    cluster: cluster,
                    name: name,
                    listen: links == .sockets
                        ? .tcp(host: "\(naming.hostPrefix)\(index)", port: 0) : .inProcess(name: "\(tag)-\(name)"),
                    joins: engines.first.map { [$0.boundListen] } ?? [],
                    socketPath: "\(directory)/n\(index).sock",
                    streams: streams,
                    windowBytes: windowBytes,
                    memoryBudgetBytes: memoryBudgetBytes,
                    sharedMemoryBudgetBytes: sharedMemoryBudgetBytes,
                    sharedHoldSeconds: sharedHoldSeconds,
                    resumeHoldSeconds: resumeHoldSeconds,
                    routes: routes["n\(index)"] ?? [:],
                    logger: logger,
                    environment: environment,
                    linkCapabilities: linkCapabilities,
                    appsOverTCP: appsOverTCP,
                    linkSecurity: linkSecurity,
                    idleSeconds: idleSeconds
                )
                if index == count { configuration.gateway = gateway }
                configuration.tuning.userTimeoutMillis = linkTimeoutSeconds * 1000
                // These nodes share the test process with every other suite, whose start (dozens of node processes
                // launched at once on two cores) once kept an app's hello unread for 5 s: the app is not a stranger
                // that stalls, so it gets 30 s here. The deadline itself is tested on real processes
                // (LinkSecurityTests, HostileTests).
                configuration.admission.handshakeTimeout = .seconds(30)
                let engine = NodeEngine(configuration: configuration, eventLoop: group.next())
                try await engine.start()
                engines.append(engine)
            }
            let fabric = InProcessFabric(engines: engines, directory: directory, group: group)
            try await fabric.waitForMesh()
            return fabric
        } catch {
            for engine in engines { await engine.stop() }
            try? await group.shutdownGracefully()
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    /// Runs `body` over a fabric started as ``start(nodes:cluster:streams:windowBytes:memoryBudgetBytes:sharedMemoryBudgetBytes:sharedHoldSeconds:resumeHoldSeconds:logLevel:environment:linkCapabilities:links:routes:appsOverTCP:)``
    /// does, and stops the fabric when `body` ends, whether it returned or threw.
    public static func with<T>(
        nodes count: Int,
        cluster: String = "demo",
        streams: Int = Limits.streamsDefault,
        windowBytes: Int = Limits.windowBytesDefault,
        memoryBudgetBytes: Int = Limits.nodeMemoryBudgetDefault,
        sharedMemoryBudgetBytes: Int = Limits.sharedBudgetDefault,
        sharedHoldSeconds: Int = Limits.sharedHoldSeconds,
        resumeHoldSeconds: Int = Limits.resumeHoldSeconds,
        idleSeconds: Int = Limits.idleSeconds,
        logLevel: Logger.Level = .warning,
        environment: NodeEnvironment = .system,
        linkCapabilities: LinkCapabilities = .socket,
        links: Links = .sockets,
        routes: [String: [String: String]] = [:],
        linkTimeoutSeconds: Int = Limits.linkTimeoutSeconds,
        _ body: (InProcessFabric) async throws -> T
    ) async throws -> T {
        let fabric = try await start(
            nodes: count, cluster: cluster, streams: streams, windowBytes: windowBytes,
            memoryBudgetBytes: memoryBudgetBytes, sharedMemoryBudgetBytes: sharedMemoryBudgetBytes,
            sharedHoldSeconds: sharedHoldSeconds, resumeHoldSeconds: resumeHoldSeconds, idleSeconds: idleSeconds,
            logLevel: logLevel,
            environment: environment, linkCapabilities: linkCapabilities, links: links, routes: routes,
            linkTimeoutSeconds: linkTimeoutSeconds)
        do {
            let result = try await body(fabric)
            await fabric.stop()
            return result
        } catch {
            await fabric.stop()
            throw error
        }
    }

    public func socket(_ index: Int) -> NodeAddress { .unix(path: engines[index].configuration.socketPath!) }
    /// The node's TCP port, where apps attach without shared memory.
    public func tcp(_ index: Int) -> NodeAddress { engines[index].boundListen }

    /// The in-process name node `index` listens on (`links: .inProcess`).
    func inProcessName(_ index: Int) -> String? {
        if case .inProcess(let name) = engines[index].boundListen { return name }
        return nil
    }

    /// Resets every in-process link of node `index` at once (`links: .inProcess`), as `ss -K` would its sockets.
    public func cut(_ index: Int) {
        if let name = inProcessName(index) { InProcessNetwork.shared.cut(name) }
    }

    /// Resets every in-process link of node `index` once they have carried `bytes` more, and keeps the node off
    /// the network after when `staysDown` (`links: .inProcess`).
    public func cut(_ index: Int, afterBytes bytes: Int, staysDown: Bool = false) {
        if let name = inProcessName(index) {
            InProcessNetwork.shared.cut(name, afterBytes: bytes, staysDown: staysDown)
        }
    }

    /// The path to and from node `index` goes dark with no end told (`links: .inProcess`,
    /// ``InProcessNetwork/darken(_:)``); ``setDown(_:_:)`` with false brings it back.
    public func darken(_ index: Int) {
        if let name = inProcessName(index) { InProcessNetwork.shared.darken(name) }
    }

    /// Darkens the path of node `index` once its links carried `bytes` more: at an exact point of a transfer.
    public func darken(_ index: Int, afterBytes bytes: Int) {
        if let name = inProcessName(index) { InProcessNetwork.shared.darken(name, afterBytes: bytes) }
    }

    /// Node `listener` hears the links node `dialer` dialed to it break, and `dialer` hears nothing
    /// (``InProcessNetwork/breakListenerEnds(listener:dialer:)``).
    public func breakListenerEnds(listener: Int, dialer: Int) {
        if let listener = inProcessName(listener), let dialer = inProcessName(dialer) {
            InProcessNetwork.shared.breakListenerEnds(listener: listener, dialer: dialer)
        }
    }

    /// Takes node `index` off the in-process network, or puts it back (`links: .inProcess`): while it is down, its
    /// links are cut and dials to and from it are refused.
    public func setDown(_ index: Int, _ down: Bool) {
        if let name = inProcessName(index) { InProcessNetwork.shared.setDown(name, down) }
    }

    public func waitForMesh(timeout: Duration = .seconds(20)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            var complete = true
            for engine in engines {
                let status = try await engine.statusSnapshot()
                if status.peers.filter({ $0.streamsUp == status.streams }).count < engines.count - 1 {
                    complete = false
                }
            }
            if complete { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw FreightError(.internalError, "the in-process fabric did not form a full mesh within \(timeout)")
    }

    /// Waits until every node resolves `pattern` to `count` endpoints.
    public func waitForEndpoints(_ address: Address, count: Int, timeout: Duration = .seconds(10)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            var seen = true
            for engine in engines where try await engine.matchCount(address) < count { seen = false }
            if seen { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw FreightError(.internalError, "endpoints of \(address) did not reach every node within \(timeout)")
    }

    public func stop() async {
        for engine in engines { await engine.stop() }
        try? await group.shutdownGracefully()
        try? FileManager.default.removeItem(atPath: directory)
    }
}
