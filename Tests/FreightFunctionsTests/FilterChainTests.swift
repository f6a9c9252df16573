import FreightCore
import FreightFunctions
import FreightWire
import Testing

/// Filters composed in the middleware shape, and the offsets a filtering node maps between input and output.
struct FilterChainTests {
    /// The downcast then the checksum: the header records both, the length is the checksum's, and the answer is the
    /// CRC32C of the bf16 stream.
    @Test func filtersCompose() throws {
        let downcast = try FunctionTests.example("downcast")
        let checksum = try FunctionTests.example("checksum")
        var chain = FilterChain([
            try WasmFilter(downcast, node: "n2"), try WasmFilter(checksum, node: "n2"),
        ])
        var header = FilterHeader(length: 4096, attributes: ["shape": "32x32"])
        try chain.begin(&header)
        #expect(header.length == 4)
        #expect(
            header.filters.count == 2 && header.filters[0].hasPrefix("n2/downcast@")
                && header.filters[1].hasPrefix("n2/checksum@"))
        var random = SeededRandom(seed: 9)
        let floats = (0..<1024).map { _ in UInt32(truncatingIfNeeded: random.next()) }
        var output: [UInt8] = []
        for part in stride(from: 0, to: floats.count, by: 100) {
            let bytes = floats[part..<min(floats.count, part + 100)].withUnsafeBytes { Array($0) }
            try chain.handle(bytes) { output += $0 }
        }
        try chain.end { output += $0 }
        let halves = floats.map(FunctionTests.bf16).withUnsafeBytes { Array($0) }
        #expect(output.count == 4)
        #expect(output.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } == CRC32C.checksum(halves))
    }

    /// Acknowledged output maps to the last input boundary wholly held; credit for input follows the output credit
    /// by the ratio of the lengths, within the window; a resume starts at a boundary.
    @Test func offsetsMapThroughAHalvingFilter() {
        var offsets = FilterOffsets(inputLength: 8 << 20, outputLength: 4 << 20)
        #expect(offsets.inputCredit(outputCredit: 1 << 20, windowBytes: 32 << 20) == 2 << 20)
        offsets.passed(input: 1 << 20, output: 512 << 10)
        offsets.passed(input: 2 << 20, output: 1 << 20)
        offsets.passed(input: 3 << 20, output: 1536 << 10)
        #expect(offsets.outputAcknowledged(700 << 10) == 1 << 20, "the second chunk's output is not all held")
        #expect(offsets.outputAcknowledged(1 << 20) == 2 << 20)
        #expect(offsets.boundaries.count == 1)
        #expect(offsets.inputCredit(outputCredit: 2 << 20, windowBytes: 32 << 20) == 4 << 20)
        #expect(offsets.inputCredit(outputCredit: 2 << 20, windowBytes: 1 << 20) == 3 << 20, "the window")
        #expect(offsets.inputCredit(outputCredit: 1 << 20, windowBytes: 32 << 20) == 3 << 20, "no more than taken")
        #expect(offsets.resumePoint(output: 1300 << 10) == .init(input: 2 << 20, output: 1 << 20))
        #expect(offsets.resumePoint(output: 100) == nil, "below what was acknowledged")
        // The filter starts again there: what it passes from now on follows that boundary.
        offsets.rewind(to: .init(input: 2 << 20, output: 1 << 20))
        #expect(offsets.boundaries.isEmpty && offsets.last == .init(input: 2 << 20, output: 1 << 20))
        offsets.passed(input: 3 << 20, output: 1536 << 10)
        #expect(offsets.outputAcknowledged(1536 << 10) == 3 << 20)
        var unknown = FilterOffsets(inputLength: 1 << 20, outputLength: nil)
        #expect(unknown.inputCredit(outputCredit: 0, windowBytes: 256 << 10) == 256 << 10)
        unknown.passed(input: 1 << 20, output: 10)
        #expect(unknown.outputAcknowledged(10) == 1 << 20)
    }
}
