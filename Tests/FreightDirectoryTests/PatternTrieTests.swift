import FreightCore
import FreightDirectory
import Testing

@Suite struct PatternTrieTests {
    @Test func matchesLiteralsAndWildcards() throws {
        let trie = PatternTrie<Int>()
        trie.insert(try AddressPattern("llm/decode/3"), 1)
        trie.insert(try AddressPattern("llm/*/3"), 2)
        trie.insert(try AddressPattern("llm/**"), 3)
        trie.insert(try AddressPattern("**"), 4)
        trie.insert(try AddressPattern("other/x"), 5)
        #expect(trie.match(try Address("llm/decode/3")) == [1, 2, 3, 4])
        #expect(trie.match(try Address("llm/prefill/3")) == [2, 3, 4])
        #expect(trie.match(try Address("llm")) == [3, 4])
        #expect(trie.match(try Address("other/x")) == [4, 5])
        #expect(trie.count == 5)
    }

    @Test func removePrunesAndCounts() throws {
        let trie = PatternTrie<Int>()
        let pattern = try AddressPattern("a/*/c")
        #expect(trie.insert(pattern, 1))
        #expect(!trie.insert(pattern, 1))
        #expect(trie.remove(pattern, 1))
        #expect(!trie.remove(pattern, 1))
        #expect(trie.count == 0)
        #expect(trie.match(try Address("a/b/c")).isEmpty)
    }

    /// The trie agrees with matching every pattern one by one, on random patterns and addresses.
    @Test func agreesWithBruteForce() throws {
        var rng = SeededRandom(seed: 42)
        let words = ["a", "b", "c", "llm", "x1"]
        func randomAddress() -> String {
            (0..<Int.random(in: 1...4, using: &rng)).map { _ in words.randomElement(using: &rng)! }.joined(
                separator: "/")
        }
        func randomPattern() -> String {
            var parts = (0..<Int.random(in: 1...4, using: &rng)).map { _ in
                Int.random(in: 0..<4, using: &rng) == 0 ? "*" : words.randomElement(using: &rng)!
            }
            if Int.random(in: 0..<4, using: &rng) == 0 { parts.append("**") }
            return parts.joined(separator: "/")
        }
        let trie = PatternTrie<Int>()
        var patterns: [Int: AddressPattern] = [:]
        for id in 0..<500 {
            let pattern = try AddressPattern(randomPattern())
            patterns[id] = pattern
            trie.insert(pattern, id)
        }
        for id in stride(from: 0, to: 500, by: 3) {
            trie.remove(patterns[id]!, id)
            patterns[id] = nil
        }
        for _ in 0..<500 {
            let address = try Address(randomAddress())
            let expected = Set(patterns.filter { $0.value.matches(address) }.keys)
            #expect(trie.match(address) == expected, "address \(address)")
        }
    }

    @Test func indexDropsANodesEndpoints() throws {
        let index = EndpointIndex()
        index.upsert(EndpointRecord(key: .init(node: "n1", id: 1), pattern: try AddressPattern("a/b")))
        index.upsert(EndpointRecord(key: .init(node: "n2", id: 1), pattern: try AddressPattern("a/*")))
        index.upsert(EndpointRecord(key: .init(node: "n2", id: 2), pattern: try AddressPattern("a/**")))
        #expect(index.match(try Address("a/b")).count == 3)
        #expect(index.removeAll(at: "n2") == 2)
        #expect(index.match(try Address("a/b")).map(\.key) == [.init(node: "n1", id: 1)])
        #expect(index.overlapping(try AddressPattern("a/**")).count == 1)
    }
}
