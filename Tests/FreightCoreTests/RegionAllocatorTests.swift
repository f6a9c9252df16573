import FreightCore
import Testing

@Suite struct RegionAllocatorTests {
    let page = RegionAllocator.alignment

    @Test func allocatesAlignedRegionsUntilFull() {
        var allocator = RegionAllocator(range: 0..<(4 * page))
        let a = allocator.allocate(1)
        let b = allocator.allocate(page + 1)
        #expect(a == 0)
        #expect(b == page)
        #expect(allocator.allocatedBytes == 3 * page)
        let tooLarge = allocator.allocate(2 * page)
        #expect(tooLarge == nil)
        let last = allocator.allocate(page)
        #expect(last == 3 * page)
        #expect(allocator.freeBytes == 0)
    }

    @Test func freeMergesNeighboursSoLargeRegionsFitAgain() {
        var allocator = RegionAllocator(range: (8 * page)..<(16 * page))
        let regions = (0..<8).map { _ in allocator.allocate(page)! }
        let full = allocator.allocate(page)
        #expect(full == nil)
        // Free in an order that needs merging on both sides.
        for index in [1, 3, 2, 0, 5, 7, 6, 4] {
            let freed = allocator.free(regions[index])
            #expect(freed)
        }
        #expect(allocator.allocatedBytes == 0)
        let whole = allocator.allocate(8 * page)
        #expect(whole == 8 * page)
    }

    @Test func refusesUnknownAndRepeatedFrees() {
        var allocator = RegionAllocator(range: 0..<(4 * page))
        let a = allocator.allocate(page)!
        let inside = allocator.free(a + 1)
        let never = allocator.free(3 * page)
        let first = allocator.free(a)
        let again = allocator.free(a)
        #expect(!inside && !never && first && !again)
        #expect(allocator.allocatedBytes == 0)
        let whole = allocator.allocate(4 * page)
        #expect(whole == 0)
    }

    @Test func refusesZeroAndOversizedRequests() {
        var allocator = RegionAllocator(range: 0..<(2 * page))
        let zero = allocator.allocate(0)
        let oversized = allocator.allocate(3 * page)
        #expect(zero == nil && oversized == nil)
        #expect(allocator.regionCount == 0)
    }

    @Test func randomAllocateFreeKeepsAccounting() {
        var allocator = RegionAllocator(range: 0..<(64 * page))
        var live: [Int: Int] = [:]
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            if Bool.random(using: &rng) || live.isEmpty,
                let offset = allocator.allocate(Int.random(in: 1...(6 * page), using: &rng))
            {
                let size = allocator.size(at: offset)!
                let overlaps = live.contains { other, otherSize in offset < other + otherSize && other < offset + size }
                #expect(!overlaps, "regions overlap")
                live[offset] = size
            } else if let victim = live.keys.randomElement(using: &rng) {
                let freed = allocator.free(victim)
                #expect(freed)
                live[victim] = nil
            }
            #expect(allocator.allocatedBytes == live.values.reduce(0, +))
        }
        for offset in live.keys { allocator.free(offset) }
        let whole = allocator.allocate(64 * page)
        #expect(whole == 0)
    }
}
