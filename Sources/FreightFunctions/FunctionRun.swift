import FreightCore
@_spi(Fuzzing) import WasmKit

/// One message through a ``FunctionModule`` (docs/functions.md, ABI v1): a fresh instance whose memory and globals
/// hold the message's state from `begin` through each `chunk` to `end`. Each call runs under
/// `FreightCore.Limits.functionFuelPerCall` fuel, and memory may grow to `FreightCore.Limits.functionMemoryBytesMax`; whatever the module
/// does wrong fails this message with `functionFailed` and a reason naming the module. Confined to one thread.
public final class FunctionRun {
    public let module: FunctionModule
    let store: Store
    let instance: Instance
    let memory: Memory
    let limiter: MemoryCap
    let logLine: (@Sendable (String) -> Void)?
    private let beginFunction: Function
    private let inputFunction: Function
    private let chunkFunction: Function
    private let endFunction: Function
    private let attributesFunction: Function?
    /// Input bytes taken and output bytes given so far.
    public private(set) var inputBytes: UInt64 = 0
    public private(set) var outputBytes: UInt64 = 0
    /// The output length `begin` declared, or nil when the module does not know it.
    public private(set) var declaredLength: UInt64?
    private var failed: FreightError?
    /// Begun again at a chunk boundary after a resume (``goesOnMidBody()``).
    private var startedMidBody = false

    /// - Parameter log: where `freight.log` lines go (only with the log capability).
    public init(_ module: FunctionModule, log: (@Sendable (String) -> Void)? = nil) throws(FreightError) {
        self.module = module
        logLine = log
        store = Store(engine: module.engine)
        limiter = MemoryCap(bytesMax: FreightCore.Limits.functionMemoryBytesMax)
        store.resourceLimiter = limiter
        var imports = Imports()
        if module.capabilities.contains(.log) {
            let store = self.store
            let name = module.name
            imports.define(
                module: "freight", name: "log",
                Function(store: store, parameters: [.i32, .i32]) { caller, arguments in
                    guard let memory = caller.instance?.exports[memory: "memory"],
                        case .i32(let pointer) = arguments[0], case .i32(let count) = arguments[1]
                    else { return [] }
                    let length = min(Int(count), 1024)
                    guard Int(pointer) + length <= memory.byteCount else { return [] }
                    let text = memory.withUnsafeBufferPointer(offset: UInt(pointer), count: length) {
                        String(decoding: $0, as: UTF8.self)
                    }
                    log?("module \(name): \(text)")
                    return []
                })
        }
        do {
            store.fuel = Fuel(remaining: module.fuelPerCall)
            instance = try module.module.instantiate(store: store, imports: imports)
        } catch {
            throw FreightError(.functionFailed, "module \(module.name) could not start: \(error)")
        }
        guard let memory = instance.exports[memory: "memory"], let begin = instance.exports[function: "begin"],
            let input = instance.exports[function: "input"], let chunk = instance.exports[function: "chunk"],
            let end = instance.exports[function: "end"]
        else {
            throw FreightError(.functionFailed, "module \(module.name) lacks an export of ABI v1")
        }
        guard memory.byteCount <= FreightCore.Limits.functionMemoryBytesMax else {
            throw FreightError(
                .functionFailed,
                "module \(module.name) starts with \(memory.byteCount) bytes of memory; at most \(FreightCore.Limits.functionMemoryBytesMax)"
            )
        }
        self.memory = memory
        beginFunction = begin
        inputFunction = input
        chunkFunction = chunk
        endFunction = end
        attributesFunction = instance.exports[function: "attributes"]
    }

    func globalValue(_ name: String) -> Int32? {
        guard case .global(let global)? = instance.export(name), case .i32(let value) = global.value else { return nil }
        return Int32(bitPattern: value)
    }

    /// Starts the message: `length` input bytes will come, `config` is the string the module was attached with.
    /// Returns the output's length, or nil when the module does not know it yet.
    @discardableResult
    public func begin(length: UInt64, config: String = "") throws(FreightError) -> UInt64? {
        let bytes = Array(config.utf8.prefix(FreightCore.Limits.functionConfigBytesMax))
        let pointer = try place(bytes)
        let result = try call(
            beginFunction, "begin", [.i64(length), .i32(UInt32(pointer)), .i32(UInt32(bytes.count))])
        let value = try int64(result, "begin")
        switch value {
        case 0...: declaredLength = UInt64(value)
        case -1: declaredLength = nil
        default: throw fail("refused the message (code \(-value))")
        }
        return declaredLength
    }

    /// The header's attributes as the message goes on with them (unchanged when the module does not rewrite them).
    public func attributes(_ attributes: [String: String]) throws(FreightError) -> [String: String] {
        guard let attributesFunction else { return attributes }
        let text = attributes.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)\n" }.joined()
        let bytes = Array(text.utf8)
        let pointer = try place(bytes)
        let result = try call(attributesFunction, "attributes", [.i32(UInt32(pointer)), .i32(UInt32(bytes.count))])
        let output = try output(result, "attributes", counted: false)
        var rewritten: [String: String] = [:]
        for line in String(decoding: output, as: UTF8.self).split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else {
                throw fail("returned an attribute line without '=': \(line.prefix(64))")
            }
            rewritten[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return rewritten
    }

    /// Transforms the next input chunk; returns the output it gives (possibly empty).
    public func chunk(_ bytes: UnsafeRawBufferPointer) throws(FreightError) -> [UInt8] {
        _ = try place(bytes)
        let result = try call(chunkFunction, "chunk", [.i32(UInt32(bytes.count))])
        inputBytes += UInt64(bytes.count)
        return try output(result, "chunk")
    }

    public func chunk(_ bytes: [UInt8]) throws(FreightError) -> [UInt8] {
        try Self.withBytes(bytes) { raw throws(FreightError) in try self.chunk(raw) }
    }

    /// `bytes.withUnsafeBytes`, keeping the error's type.
    private static func withBytes<T>(
        _ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws(FreightError) -> T
    ) throws(FreightError) -> T {
        try bytes.withUnsafeBytes { raw in Result { () throws(FreightError) in try body(raw) } }.get()
    }

    /// A resumable module begun again at a chunk boundary after a resume (docs/functions.md): the output before it was
    /// given by an earlier run, so this one's is held to no more than the declared length, not to all of it (the
    /// node checks the message's whole output).
    public func goesOnMidBody() { startedMidBody = true }

    /// The input is complete: the output's last bytes.
    public func end() throws(FreightError) -> [UInt8] {
        let output = try output(try call(endFunction, "end", []), "end")
        if let declaredLength, outputBytes != declaredLength, !startedMidBody {
            throw fail("gave \(outputBytes) bytes of output after declaring \(declaredLength)")
        }
        return output
    }

    // MARK: Calls

    /// Asks the module where to put `bytes` (`input`) and writes them there.
    private func place(_ bytes: [UInt8]) throws(FreightError) -> Int {
        try Self.withBytes(bytes) { raw throws(FreightError) in try self.place(raw) }
    }

    private func place(_ bytes: UnsafeRawBufferPointer) throws(FreightError) -> Int {
        let result = try call(inputFunction, "input", [.i32(UInt32(bytes.count))])
        guard result.count == 1, case .i32(let raw) = result[0] else { throw fail("input must return one i32") }
        let pointer = Int(raw)
        guard pointer + bytes.count <= memory.byteCount else {
            throw fail(
                "input gave \(pointer) for \(bytes.count) bytes, outside its \(memory.byteCount) bytes of memory")
        }
        if bytes.count > 0 {
            memory.withUnsafeMutableBufferPointer(offset: UInt(pointer), count: bytes.count) {
                $0.copyMemory(from: bytes)
            }
        }
        return pointer
    }

    private func call(_ function: Function, _ name: String, _ arguments: [Value]) throws(FreightError) -> [Value] {
        if let failed { throw failed }
        store.fuel = Fuel(remaining: module.fuelPerCall)
        do {
            return try function(arguments)
        } catch {
            let text = "\(error)"
            if text.contains("fuel") {
                throw fail("ran out of fuel in \(name) (\(module.fuelPerCall) per call)")
            }
            if limiter.refused {
                throw fail(
                    "trapped in \(name) after its memory was held to \(FreightCore.Limits.functionMemoryBytesMax) bytes: \(text)"
                )
            }
            throw fail("trapped in \(name): \(text)")
        }
    }

    private func int64(_ result: [Value], _ name: String) throws(FreightError) -> Int64 {
        guard result.count == 1, case .i64(let raw) = result[0] else { throw fail("\(name) must return one i64") }
        return Int64(bitPattern: raw)
    }

    /// The output a call returned as `(ptr << 32) | len`, copied out of the module's memory.
    private func output(_ result: [Value], _ name: String, counted: Bool = true) throws(FreightError) -> [UInt8] {
        let packed = try int64(result, name)
        guard packed >= 0 else { throw fail("\(name) failed the message (code \(-packed))") }
        let pointer = Int(packed >> 32)
        let count = Int(packed & 0xFFFF_FFFF)
        guard count <= FreightCore.Limits.functionOutputBytesMax else {
            throw fail(
                "\(name) gave \(count) bytes of output; at most \(FreightCore.Limits.functionOutputBytesMax) per call")
        }
        guard pointer + count <= memory.byteCount else {
            throw fail("\(name) gave output at \(pointer)+\(count), outside its \(memory.byteCount) bytes of memory")
        }
        if counted { outputBytes += UInt64(count) }
        if counted, let declaredLength, outputBytes > declaredLength {
            throw fail("gave more than the \(declaredLength) bytes of output it declared")
        }
        guard count > 0 else { return [] }
        return memory.withUnsafeBufferPointer(offset: UInt(pointer), count: count) { Array($0) }
    }

    private func fail(_ what: String) -> FreightError {
        let error = FreightError(.functionFailed, "module \(module.name) \(what)")
        failed = error
        return error
    }
}

/// Holds a module's memory to a size: growth past it is refused (`memory.grow` returns -1 to the module).
final class MemoryCap: ResourceLimiter, @unchecked Sendable {
    let bytesMax: Int
    private(set) var refused = false

    init(bytesMax: Int) { self.bytesMax = bytesMax }

    func limitMemoryGrowth(to desired: Int) throws -> Bool {
        guard desired <= bytesMax else {
            refused = true
            return false
        }
        return true
    }

    func limitTableGrowth(to desired: Int) throws -> Bool { desired <= 1 << 16 }
}
