/// Offsets on both sides of a filtering node (docs/functions.md, "Credit and acknowledged offsets"): upstream counts
/// bytes of the input body, downstream bytes of the output. The node records, after each input chunk the filters
/// took, how far both had got (a boundary), and maps one side's offsets onto the other's through them, so that an
/// acknowledged offset keeps meaning "bytes the receivers hold". Pure; boundaries below what the receivers hold
/// are dropped, so it holds at most a window's worth of chunks.
public struct FilterOffsets: Sendable, Equatable {
    public struct Boundary: Sendable, Equatable {
        public var input: UInt64
        public var output: UInt64

        public init(input: UInt64, output: UInt64) {
            self.input = input
            self.output = output
        }
    }

    /// Declared lengths of the input and of the output (nil: the output's is not known up front).
    public let inputLength: UInt64
    public let outputLength: UInt64?
    /// Boundaries not yet wholly acknowledged downstream, oldest first, after `acknowledged`.
    public private(set) var boundaries: [Boundary] = []
    /// The last boundary whose output the receivers hold.
    public private(set) var acknowledged = Boundary(input: 0, output: 0)
    public private(set) var last = Boundary(input: 0, output: 0)

    public init(inputLength: UInt64, outputLength: UInt64?) {
        self.inputLength = inputLength
        self.outputLength = outputLength
    }

    /// The filters took input up to `input` and had given output up to `output`.
    public mutating func passed(input: UInt64, output: UInt64) {
        precondition(input >= last.input && output >= last.output, "boundaries only grow")
        last = Boundary(input: input, output: output)
        boundaries.append(last)
    }

    /// The receivers hold output below `output`: the input offset to acknowledge upstream (the last boundary whose
    /// whole output they hold).
    @discardableResult
    public mutating func outputAcknowledged(_ output: UInt64) -> UInt64 {
        var held = 0
        while held < boundaries.count, boundaries[held].output <= output { held += 1 }
        if held > 0 {
            acknowledged = boundaries[held - 1]
            boundaries.removeFirst(held)
        }
        return acknowledged.input
    }

    /// How far upstream may send, given that downstream lets the node send output below `outputCredit` and the node
    /// holds at most `windowBytes` of input beyond what is acknowledged: input whose output would fit the credit, by
    /// the ratio of the declared lengths (the whole window while the output's length is unknown).
    public func inputCredit(outputCredit: UInt64, windowBytes: UInt64) -> UInt64 {
        let windowed = min(inputLength, acknowledged.input + windowBytes)
        guard let outputLength, outputLength > 0, outputCredit > last.output else {
            return outputLength == nil ? windowed : min(windowed, last.input)
        }
        let room = outputCredit - last.output
        let scaled = room.multipliedReportingOverflow(by: inputLength)
        let more = scaled.overflow ? UInt64.max : scaled.partialValue / outputLength
        return min(windowed, last.input + more)
    }

    /// A resumable filter starts again at `point` (from ``resumePoint(output:)``): the boundaries past it are gone,
    /// and the next one passed follows it.
    public mutating func rewind(to point: Boundary) {
        precondition(point.input >= acknowledged.input && point.output >= acknowledged.output, "behind what is held")
        boundaries.removeAll { $0.input > point.input || $0.output > point.output }
        last = point
    }

    /// Where a resumable filter starts again when the receivers resume from output offset `output`: the last
    /// boundary at or below it (its input is what the node must still hold), or nil when none is known (the message
    /// restarts).
    public func resumePoint(output: UInt64) -> Boundary? {
        if output < acknowledged.output { return nil }
        return boundaries.last { $0.output <= output } ?? acknowledged
    }
}
