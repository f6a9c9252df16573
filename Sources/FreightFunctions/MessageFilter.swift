import FreightCore

/// What a filter sees of a message's header and may change (docs/functions.md): its length (nil once a filter
/// cannot say the output's length up front), its attributes, and the filters that ran.
public struct FilterHeader: Sendable, Equatable {
    public var length: UInt64?
    public var attributes: [String: String]
    /// `node/module@sha256-prefix` of each filter that ran, in order (the header's record, so that the receiver
    /// knows the encoding).
    public var filters: [String]

    public init(length: UInt64?, attributes: [String: String] = [:], filters: [String] = []) {
        self.length = length
        self.attributes = attributes
        self.filters = filters
    }
}

/// A filter in the middleware shape of STYLE.md (Hummingbird's `handle(_:context:next:)`): each chunk of a message
/// comes in order, and the filter hands what it makes of it to `next`, the filter after it or the message's
/// branches. One value per message: state kept across chunks lives in it.
public protocol MessageFilter {
    /// The message starts: the filter records itself and may change the length and attributes.
    mutating func begin(_ header: inout FilterHeader) throws(FreightError)
    mutating func handle(_ chunk: [UInt8], next: (_ output: [UInt8]) throws(FreightError) -> Void) throws(FreightError)
    /// The input is complete: trailing output.
    mutating func end(next: (_ output: [UInt8]) throws(FreightError) -> Void) throws(FreightError)
    /// Begun again at a chunk boundary after a resume: the input and output before it went through an earlier
    /// instance (only resumable filters are begun so).
    mutating func goesOnMidBody()
}

extension MessageFilter {
    public mutating func goesOnMidBody() {}
}

/// A WebAssembly module as a filter: one ``FunctionRun`` per message.
public struct WasmFilter: MessageFilter {
    public let run: FunctionRun
    let config: String
    let record: String

    /// - Parameters:
    ///   - node: the node the filter runs at, for the header's record.
    ///   - config: the string the module was attached with (`PATTERN=module.wasm?CONFIG`).
    public init(_ module: FunctionModule, node: String, config: String = "") throws(FreightError) {
        run = try FunctionRun(module)
        self.config = config
        record = "\(node)/\(module.name)@\(module.digest.prefix(16))"
    }

    public mutating func begin(_ header: inout FilterHeader) throws(FreightError) {
        guard let length = header.length else {
            throw FreightError(
                .functionFailed,
                "filter \(run.module.name) follows a filter whose output length is not known up front, which this node does not support yet"
            )
        }
        header.length = try run.begin(length: length, config: config)
        header.attributes = try run.attributes(header.attributes)
        header.filters.append(record)
    }

    public mutating func handle(_ chunk: [UInt8], next: (_ output: [UInt8]) throws(FreightError) -> Void)
        throws(FreightError)
    {
        let output = try run.chunk(chunk)
        if !output.isEmpty { try next(output) }
    }

    public mutating func end(next: (_ output: [UInt8]) throws(FreightError) -> Void) throws(FreightError) {
        let output = try run.end()
        if !output.isEmpty { try next(output) }
    }

    public mutating func goesOnMidBody() { run.goesOnMidBody() }
}

/// Filters in the order they were attached, composed: the output of one is the input of the next.
public struct FilterChain {
    public private(set) var filters: [any MessageFilter]

    public init(_ filters: [any MessageFilter]) {
        self.filters = filters
    }

    public mutating func begin(_ header: inout FilterHeader) throws(FreightError) {
        for index in filters.indices { try filters[index].begin(&header) }
    }

    public mutating func goesOnMidBody() {
        for index in filters.indices { filters[index].goesOnMidBody() }
    }

    /// Passes `chunk` through every filter; `sink` gets the last one's output.
    public mutating func handle(_ chunk: [UInt8], sink: (_ output: [UInt8]) throws(FreightError) -> Void)
        throws(FreightError)
    {
        try handle(chunk, from: 0, sink: sink)
    }

    /// Ends each filter in turn, passing its trailing output through the filters after it.
    public mutating func end(sink: (_ output: [UInt8]) throws(FreightError) -> Void) throws(FreightError) {
        for index in filters.indices {
            var filter = filters[index]
            try filter.end { output throws(FreightError) in try self.handle(output, from: index + 1, sink: sink) }
            filters[index] = filter
        }
    }

    private mutating func handle(
        _ chunk: [UInt8], from index: Int, sink: (_ output: [UInt8]) throws(FreightError) -> Void
    ) throws(FreightError) {
        guard index < filters.count else { return try sink(chunk) }
        var filter = filters[index]
        try filter.handle(chunk) { output throws(FreightError) in try self.handle(output, from: index + 1, sink: sink) }
        filters[index] = filter
    }
}
