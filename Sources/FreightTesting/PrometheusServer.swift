import Foundation
import FreightCore

/// A real Prometheus server for tests (Debian's `prometheus`): on 127.0.0.1 with a port of its own, a temporary
/// folder for its configuration and data, scraping the targets given every second. `stop()` ends it by PID and
/// removes the folder.
public final class PrometheusServer: Sendable {
    public let address: String
    public let folder: String
    private let process: FreightProcess

    public static let binary = "/usr/bin/prometheus"
    public static var available: Bool { FileManager.default.isExecutableFile(atPath: binary) }

    public var log: String { process.stderr }

    private init(address: String, folder: String, process: FreightProcess) {
        self.address = address
        self.folder = folder
        self.process = process
    }

    /// Starts Prometheus scraping `targets` (`HOST:PORT` of admin ports, `/metrics`) under job `job`, and waits
    /// until it is ready.
    public static func start(targets: [String], job: String = "freight") async throws -> PrometheusServer {
        let folder = NSTemporaryDirectory() + "freight-prometheus-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder + "/data", withIntermediateDirectories: true)
        let list = targets.map { "'\($0)'" }.joined(separator: ", ")
        let configuration = """
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: '\(job)'
                static_configs:
                  - targets: [\(list)]
            """
        try configuration.write(toFile: folder + "/prometheus.yml", atomically: true, encoding: .utf8)
        var attempt = 0
        while true {
            attempt += 1
            let address = "127.0.0.1:\(Int.random(in: 30_000...39_999))"
            let process = try FreightProcess(
                [
                    "--config.file=\(folder)/prometheus.yml", "--storage.tsdb.path=\(folder)/data",
                    "--web.listen-address=\(address)", "--log.level=warn",
                ], executable: binary)
            let server = PrometheusServer(address: address, folder: folder, process: process)
            let deadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < deadline && process.isRunning {
                if let ready = try? await HTTPGet.get(address, "/-/ready", timeoutSeconds: 2), ready.status == 200 {
                    return server
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            process.stop()
            guard attempt < 3 else {
                try? FileManager.default.removeItem(atPath: folder)
                throw FreightError(.internalError, "prometheus did not start on \(address): \(process.stderr)")
            }
        }
    }

    /// Evaluates a PromQL instant query through the HTTP API; the `data.result` array of its JSON answer.
    public func query(_ promql: String) async throws -> [[String: Any]] {
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "+&=")
        let encoded = promql.addingPercentEncoding(withAllowedCharacters: allowed) ?? promql
        let response = try await HTTPGet.get(address, "/api/v1/query?query=\(encoded)")
        guard response.status == 200,
            let object = try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any],
            let data = object["data"] as? [String: Any], let result = data["result"] as? [[String: Any]]
        else {
            throw FreightError(.internalError, "prometheus answered \(response.status): \(response.body.prefix(500))")
        }
        return result
    }

    public func stop() {
        process.stop()
        try? FileManager.default.removeItem(atPath: folder)
    }
}
