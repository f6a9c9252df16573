import Benchmark
import FreightCore
import FreightDirectory

/// "Which endpoints match this address" must cost time that grows with the address's depth, not with the number of
/// endpoints registered: the same lookups against 1,000 and 1,000,000 endpoints should take about the same time.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        timeUnits: .nanoseconds,
        maxDuration: .seconds(5),
        maxIterations: 1_000_000
    )
    for endpoints in [1_000, 1_000_000] {
        nonisolated(unsafe) var trie: PatternTrie<EndpointKey>!
        nonisolated(unsafe) var addresses: [Address] = []
        Benchmark(
            "match, \(endpoints) endpoints",
            configuration: .init(
                scalingFactor: .kilo,
                setup: {
                    trie = makeTrie(endpoints: endpoints)
                    // Addresses of registered endpoints: each lookup finds one literal endpoint and the wildcards above it.
                    addresses = (0..<1024).map { k in
                        let e = (k * 7919) % endpoints
                        return try! Address("llm/model\(e % 100)/shard\(e % 1000)/rank\(e)")
                    }
                }
            )
        ) { benchmark in
            var found = 0
            for i in benchmark.scaledIterations {
                found &+= trie.match(addresses[i & 1023]).count
            }
            blackHole(found)
        }
    }
}

/// `endpoints` literal endpoints spread over a tree (model / shard / rank), plus the same 200 wildcard patterns in
/// every size (`llm/modelM/**` and `llm/modelM/*/rankM`) so that lookups also walk `*` and `**` branches.
func makeTrie(endpoints: Int) -> PatternTrie<EndpointKey> {
    let trie = PatternTrie<EndpointKey>()
    for i in 0..<endpoints {
        let pattern = try! AddressPattern("llm/model\(i % 100)/shard\(i % 1000)/rank\(i)")
        trie.insert(pattern, EndpointKey(node: "n\(i % 64)", id: UInt64(i)))
    }
    for i in 0..<100 {
        trie.insert(try! AddressPattern("llm/model\(i % 100)/*/rank\(i)"), EndpointKey(node: "w", id: UInt64(i)))
        trie.insert(try! AddressPattern("llm/model\(i % 100)/**"), EndpointKey(node: "w", id: UInt64(1_000_000 + i)))
    }
    return trie
}
