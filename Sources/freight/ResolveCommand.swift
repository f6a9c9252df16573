import ArgumentParser
import Foundation
import FreightClient
import FreightCore
import FreightWire

struct ResolveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resolve", abstract: "List the endpoints an address or pattern reaches.")

    @Argument(help: "An address or a pattern.")
    var pattern: String
    @Flag(name: .customLong("explain"), help: "Also print the path(s) a message would take to each endpoint.")
    var explain = false
    @Option(name: .customLong("size"), help: "Message size to plan for with --explain (e.g. 1GiB).")
    var size = "1GiB"
    @Option(name: .customLong("from-gpu"), help: "With --explain: the sender is placed on this GPU.")
    var fromGPU: Int?
    @Option(name: .customLong("to-gpu"), help: "With --explain: the receivers are placed on this GPU.")
    var toGPU: Int?
    @OptionGroup var via: ViaOption
    @OptionGroup var output: OutputOptions

    func run() async throws {
        do {
            _ = try AddressPattern(pattern)
            if explain { return try await runExplain() }
            let client = try await FreightClient.connect(
                to: try via.address(), label: "resolve", token: via.token, sharedMemory: .off)
            let (endpoints, truncated) = try await client.resolve(pattern)
            await client.close()
            guard !endpoints.isEmpty else { throw FreightError.noRoute(pattern) }
            for endpoint in endpoints {
                if output.json {
                    var object: [String: Any] = [
                        "node": endpoint.node, "endpoint": endpoint.id, "pattern": endpoint.pattern,
                        "group": endpoint.group ?? "", "app": endpoint.app,
                    ]
                    if let cluster = endpoint.cluster {
                        object["cluster"] = cluster
                        object["cluster_path"] = endpoint.clusterPath
                        object["cost_us"] = endpoint.cost
                    }
                    printJSON(object)
                } else {
                    printLine(
                        "\(endpoint.pattern)\t\(endpoint.node)#\(endpoint.id)\t\(endpoint.app)\(endpoint.group.map { "\tgroup \($0)" } ?? "")\(Self.remote(endpoint))"
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

extension ResolveCommand {
    func runExplain() async throws {
        let bytes = Int(try ByteCount.parse(size))
        let client = try await FreightClient.connect(
            to: try via.address(), label: "resolve", token: via.token, sharedMemory: .off)
        let answer: (endpoints: [EndpointInfo], plans: [Freight_Wire_V1_RoutePlan])
        do {
            answer = try await client.explain(pattern, bytes: bytes, fromGPU: fromGPU, toGPU: toGPU)
        } catch {
            await client.close()
            throw error
        }
        await client.close()
        guard !answer.endpoints.isEmpty else { throw FreightError.noRoute(pattern) }
        for (endpoint, plan) in zip(answer.endpoints, answer.plans) {
            if output.json {
                printJSON([
                    "node": endpoint.node, "endpoint": endpoint.id, "pattern": endpoint.pattern, "bytes": bytes,
                    "expected_seconds": plan.expectedSeconds, "notes": plan.notes,
                    "cluster": endpoint.cluster ?? "", "cluster_path": endpoint.clusterPath,
                    "paths": plan.paths.map {
                        [
                            "kind": $0.kind, "via": $0.via, "bytes": $0.bytes, "gbit_per_s": $0.gbitPerS,
                            "expected_seconds": $0.expectedSeconds,
                        ] as [String: Any]
                    },
                ])
            } else {
                printLine(
                    "\(endpoint.pattern)\t\(endpoint.node)#\(endpoint.id)\t\(ByteCount.format(Int64(bytes))) in \(Self.seconds(plan.expectedSeconds))"
                )
                for path in plan.paths {
                    let speed = path.gbitPerS > 0 ? String(format: "%.1f Gbit/s", path.gbitPerS) : "no copy"
                    printLine(
                        "  \(path.kind)\t\(ByteCount.format(Int64(path.bytes)))\t\(speed)\t\(Self.seconds(path.expectedSeconds))\t\(path.via)"
                    )
                }
                if let cluster = endpoint.cluster {
                    // The hops past this cluster: gateway links, one per cluster on the way.
                    printLine(
                        "  gateway\t\(endpoint.node) → \(endpoint.clusterPath.joined(separator: " → "))\tcost \(endpoint.cost) µs\tcluster \(cluster) delivers"
                    )
                }
                for note in plan.notes { printLine("  note: \(note)") }
            }
        }
        if answer.endpoints.count > answer.plans.count {
            printLine("… planned \(answer.plans.count) of \(answer.endpoints.count) endpoints; narrow the pattern")
        }
    }

    /// For a route to another cluster: where it goes from the gateway that holds it.
    static func remote(_ endpoint: EndpointInfo) -> String {
        guard let cluster = endpoint.cluster else { return "" }
        return
            "\tcluster \(cluster) via gateway \(endpoint.node) → \(endpoint.clusterPath.joined(separator: " → ")) (cost \(endpoint.cost) µs)"
    }

    static func seconds(_ value: Double) -> String {
        value < 1e-3
            ? String(format: "%.1f µs", value * 1e6)
            : value < 1
                ? String(format: "%.2f ms", value * 1e3)
                : String(format: "%.2f s", value)
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show a node, its peers and its traffic.")

    @OptionGroup var via: ViaOption
    @OptionGroup var output: OutputOptions

    func run() async throws {
        do {
            let client = try await FreightClient.connect(
                to: try via.address(), label: "status", token: via.token, sharedMemory: .off)
            let status = try await client.status()
            await client.close()
            if output.json {
                printJSON([
                    "name": status.name, "cluster": status.cluster, "listen": status.listen,
                    "local_endpoints": status.localEndpoints, "known_endpoints": status.knownEndpoints,
                    "messages_in_flight": status.messagesInFlight, "messages_delivered": status.messagesDelivered,
                    "messages_failed": status.messagesFailed, "small_passed": status.smallPassed,
                    "small_resent": status.smallResent, "small_in_flight": status.smallInFlight,
                    "bytes_in": status.bytesIn, "bytes_out": status.bytesOut,
                    "peak_rss_bytes": status.peakRssBytes, "memory_reserved_bytes": status.memoryReservedBytes,
                    "memory_budget_bytes": status.memoryBudgetBytes, "streams": status.streams,
                    "uptime_ms": status.uptimeMillis, "rss_bytes": status.rssBytes,
                    "shared_pool_bytes": status.sharedPoolBytes, "shared_budget_bytes": status.sharedBudgetBytes,
                    "shared_regions_lent": status.sharedRegionsLent, "directory": status.directory,
                    "directory_unreachable": status.directoryUnreachable,
                    "directory_digest": String(status.directoryDigest, radix: 16),
                    "rails": status.rails, "gpus": status.topology.gpus.count, "nics": status.topology.nics.count,
                    "peers_omitted": status.peersOmitted, "links_in_handshake": status.linksInHandshake,
                    "links_refused": status.linksRefused, "handshakes_timed_out": status.handshakesTimedOut,
                    "access_list": status.accessList, "apps_over_tcp": status.appsOverTcp,
                    "link_security": status.linkSecurity,
                    "gateway": status.gateway,
                    "gateway_links": status.gatewayLinks.map {
                        [
                            "cluster": $0.cluster, "address": $0.address, "dialed": $0.dialed, "up_ms": $0.upMillis,
                            "cost": $0.cost, "routes_learned": $0.routesLearned, "routes_sent": $0.routesSent,
                            "rtt_us": $0.rttMicros, "bytes_out": $0.bytesOut, "bytes_in": $0.bytesIn,
                            "out_bytes_per_s": $0.outBytesPerS, "in_bytes_per_s": $0.inBytesPerS,
                            "messages_out": $0.messagesOut, "messages_in": $0.messagesIn,
                            "stripes": $0.stripes, "stripes_wanted": $0.stripesWanted,
                            "congestion_control": $0.congestionControl,
                        ] as [String: Any]
                    },
                    "routes": status.routes.map { route in
                        var entry: [String: Any] = [
                            "pattern": route.pattern, "origin": route.origin, "path": route.path, "cost": route.cost,
                        ]
                        if route.hasGroup { entry["group"] = route.group.name }
                        if !route.throughGateway.isEmpty { entry["through_gateway"] = route.throughGateway }
                        return entry
                    },
                    "routes_omitted": status.routesOmitted,
                    "peers": status.peers.map {
                        [
                            "name": $0.name, "listen": $0.listen, "streams_up": $0.streamsUp, "endpoints": $0.endpoints,
                            "bytes_out": $0.bytesOut, "stripe_bytes": $0.stripeBytes, "rails": $0.rails,
                            "rail_gbit_per_s": $0.railGbitPerS, "gpus": $0.gpus, "nics": $0.nics,
                        ] as [String: Any]
                    },
                ])
            } else {
                printLine(
                    "node \(status.name) (cluster \(status.cluster)) on \(status.listen), up \(status.uptimeMillis / 1000) s"
                )
                printLine("endpoints: \(status.localEndpoints) local, \(status.knownEndpoints) known")
                printLine(
                    "apps: \(status.accessList ? "bound by an access list" : "no access list"), \(status.appsOverTcp ? "over TCP too" : "Unix socket only"); links: \(status.linksInHandshake) in handshake, \(status.linksRefused) refused, \(status.handshakesTimedOut) timed out in handshake"
                )
                printLine("link security: \(status.linkSecurity)")
                if !status.gateway.isEmpty {
                    printLine(
                        "gateway of cluster \(status.cluster) on \(status.gateway): \(status.gatewayLinks.count) links")
                    for link in status.gatewayLinks {
                        printLine(
                            "  cluster \(link.cluster)\t\(link.address)\t\(link.dialed ? "dialed" : "accepted")\tup \(link.upMillis / 1000) s\trtt \(link.rttMicros) µs, cost \(link.cost) µs\t\(link.routesLearned) routes in, \(link.routesSent) out\t\(link.stripes) stripes (\(link.stripesWanted) wanted), \(link.congestionControl.isEmpty ? "?" : link.congestionControl)"
                        )
                        printLine(
                            "    sent \(ByteCount.format(Int64(link.bytesOut))) (\(ByteCount.format(Int64(link.outBytesPerS)))/s now, \(link.messagesOut) messages), received \(ByteCount.format(Int64(link.bytesIn))) (\(ByteCount.format(Int64(link.inBytesPerS)))/s now, \(link.messagesIn) messages)"
                        )
                    }
                    printLine(
                        "routes to other clusters: \(status.routes.count + Int(status.routesOmitted))\(status.routesOmitted > 0 ? " (\(status.routesOmitted) not listed)" : "")"
                    )
                    for route in status.routes {
                        printLine(
                            "  \(route.pattern)\(route.hasGroup ? " (group \(route.group.name))" : "")\tat \(route.origin)\tvia \(route.throughGateway.isEmpty ? "" : "gateway \(route.throughGateway) → ")\(route.path.joined(separator: " → "))\tcost \(route.cost) µs"
                        )
                    }
                }
                printLine(
                    "directory: \(status.directory)\(status.directoryUnreachable.isEmpty ? "" : ", UNREACHABLE: \(status.directoryUnreachable)")"
                )
                printLine(
                    "messages: \(status.messagesInFlight) in flight, \(status.messagesDelivered) delivered, \(status.messagesFailed) failed"
                )
                printLine(
                    "small messages: \(status.smallPassed) passed on whole, \(status.smallResent) sent again as OPEN and DATA, \(status.smallInFlight) in flight"
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
                let gpus = status.topology.gpus
                printLine(
                    "hardware: \(gpus.count) GPUs\(gpus.first.map { " (\($0.model))" } ?? ""), \(status.topology.nics.count) NICs; rails: \(status.rails.isEmpty ? "none" : status.rails.joined(separator: ", "))"
                )
                printLine(
                    "peers: \(Int(status.peersOmitted) + status.peers.count)\(status.peersOmitted > 0 ? " (\(status.peersOmitted) not listed: the reply is capped at one frame)" : "")"
                )
                for peer in status.peers {
                    printLine(
                        "  \(peer.name)\t\(peer.listen)\t\(peer.streamsUp) streams\t\(peer.endpoints) endpoints\t\(ByteCount.format(Int64(peer.bytesOut))) sent"
                    )
                    if !peer.railGbitPerS.isEmpty {
                        printLine(
                            "    rails measured: \(peer.railGbitPerS.map { $0 > 0 ? String(format: "%.2f Gbit/s", $0) : "-" }.joined(separator: ", "))"
                        )
                    }
                }
            }
        } catch {
            fail(error)
        }
    }
}
