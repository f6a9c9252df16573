import ArgumentParser
import Foundation
import FreightClient
import FreightCore

struct ResolveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resolve", abstract: "List the endpoints an address or pattern reaches.")

    @Argument(help: "An address or a pattern.")
    var pattern: String
    @OptionGroup var via: ViaOption
    @OptionGroup var output: OutputOptions

    func run() async throws {
        do {
            _ = try AddressPattern(pattern)
            let client = try await FreightClient.connect(to: try via.address(), label: "resolve", sharedMemory: .off)
            let (endpoints, truncated) = try await client.resolve(pattern)
            await client.close()
            guard !endpoints.isEmpty else { throw FreightError.noRoute(pattern) }
            for endpoint in endpoints {
                if output.json {
                    printJSON([
                        "node": endpoint.node, "endpoint": endpoint.id, "pattern": endpoint.pattern,
                        "group": endpoint.group ?? "", "app": endpoint.app,
                    ])
                } else {
                    printLine(
                        "\(endpoint.pattern)\t\(endpoint.node)#\(endpoint.id)\t\(endpoint.app)\(endpoint.group.map { "\tgroup \($0)" } ?? "")"
                    )
                }
            }
            if truncated {
                let note = "more than \(endpoints.count) endpoints match; narrow the pattern to see them"
                if output.json { printJSON(["truncated": true]) } else { printLine("… \(note)") }
            }
        } catch {
            fail(error)
        }
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show a node, its peers and its traffic.")

    @OptionGroup var via: ViaOption
    @OptionGroup var output: OutputOptions

    func run() async throws {
        do {
            let client = try await FreightClient.connect(to: try via.address(), label: "status", sharedMemory: .off)
            let status = try await client.status()
            await client.close()
            if output.json {
                printJSON([
                    "name": status.name, "cluster": status.cluster, "listen": status.listen,
                    "local_endpoints": status.localEndpoints, "known_endpoints": status.knownEndpoints,
                    "messages_in_flight": status.messagesInFlight, "messages_delivered": status.messagesDelivered,
                    "messages_failed": status.messagesFailed, "bytes_in": status.bytesIn, "bytes_out": status.bytesOut,
                    "peak_rss_bytes": status.peakRssBytes, "memory_reserved_bytes": status.memoryReservedBytes,
                    "memory_budget_bytes": status.memoryBudgetBytes, "streams": status.streams,
                    "uptime_ms": status.uptimeMillis, "rss_bytes": status.rssBytes,
                    "shared_pool_bytes": status.sharedPoolBytes, "shared_budget_bytes": status.sharedBudgetBytes,
                    "shared_regions_lent": status.sharedRegionsLent, "directory": status.directory,
                    "directory_unreachable": status.directoryUnreachable,
                    "directory_digest": String(status.directoryDigest, radix: 16),
                    "peers": status.peers.map {
                        [
                            "name": $0.name, "listen": $0.listen, "streams_up": $0.streamsUp, "endpoints": $0.endpoints,
                            "bytes_out": $0.bytesOut, "stripe_bytes": $0.stripeBytes,
                        ] as [String: Any]
                    },
                ])
            } else {
                printLine(
                    "node \(status.name) (cluster \(status.cluster)) on \(status.listen), up \(status.uptimeMillis / 1000) s"
                )
                printLine("endpoints: \(status.localEndpoints) local, \(status.knownEndpoints) known")
                printLine(
                    "directory: \(status.directory)\(status.directoryUnreachable.isEmpty ? "" : ", UNREACHABLE: \(status.directoryUnreachable)")"
                )
                printLine(
                    "messages: \(status.messagesInFlight) in flight, \(status.messagesDelivered) delivered, \(status.messagesFailed) failed"
                )
                printLine(
                    "traffic: \(ByteCount.format(Int64(status.bytesIn))) in, \(ByteCount.format(Int64(status.bytesOut))) out"
                )
                printLine(
                    "memory: \(ByteCount.format(Int64(status.memoryReservedBytes))) of \(ByteCount.format(Int64(status.memoryBudgetBytes))) reserved, peak RSS \(ByteCount.format(Int64(status.peakRssBytes)))"
                )
                printLine(
                    "shared memory: \(ByteCount.format(Int64(status.sharedPoolBytes))) of \(ByteCount.format(Int64(status.sharedBudgetBytes))) in app pools, \(status.sharedRegionsLent) regions lent"
                )
                printLine("peers: \(status.peers.count)")
                for peer in status.peers {
                    printLine(
                        "  \(peer.name)\t\(peer.listen)\t\(peer.streamsUp)/\(status.streams) streams\t\(peer.endpoints) endpoints\t\(ByteCount.format(Int64(peer.bytesOut))) sent"
                    )
                }
            }
        } catch {
            fail(error)
        }
    }
}
