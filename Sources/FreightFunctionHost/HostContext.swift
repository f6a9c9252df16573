import Foundation
import FreightClient
import FreightCore
import FreightDirectory
import FreightFunctions
import FreightNode
import Logging
import NIOCore
import NIOPosix

/// The host's work: deploys, lists and removals, keeping in step with the cluster's functions, and running
/// messages through them.
struct HostContext: Sendable {
    let engine: NodeEngine
    let client: FreightClient
    let state: HostState
    let logger: Logger
    let idleAfter: Duration

    // MARK: Deploy, list, remove

    /// `_fn/deploy`: the body is the module; attributes `address`, `max-instances`, `config` and `name`. The deploy
    /// is delivered once the directory holds the function; anything wrong fails it with the reason.
    func deploy(_ message: IncomingMessage) async {
        do {
            let (given, rest) = try await Self.readHeld(message, limit: Limits.functionModuleBytesMax)
            let attributes = message.attributes
            guard let text = attributes["address"] else {
                throw FreightError(.invalidArgument, "a deploy names its function's address (attribute address)")
            }
            let address = try Address(text)
            if let refusal = FunctionRecord.reservedRefusal(address) {
                throw FreightError(.invalidArgument, "cannot bind a function to \(address): \(refusal)")
            }
            let instances = Int(attributes["max-instances"] ?? "1") ?? 0
            guard (1...Limits.functionInstancesMax).contains(instances) else {
                throw FreightError(
                    .invalidArgument, "--max-instances must be 1 to \(Limits.functionInstancesMax)")
            }
            let config = attributes["config"] ?? ""
            guard config.utf8.count <= Limits.functionConfigBytesMax else {
                throw FreightError(.invalidArgument, "config is over \(Limits.functionConfigBytesMax) bytes")
            }
            let name = String((attributes["name"] ?? "function").prefix(Limits.nameBytesMax))
            // Kept and copied as a binary (text is assembled once, here), and checked as every node will load it:
            // ABI v1, and no import (a function is granted nothing).
            let bytes = try FunctionModule.binary(of: given, name: name)
            let module = try FunctionModule(name: name, bytes: bytes)
            try await state.store(module.digest, bytes)
            await serveModule(module.digest)
            let record = FunctionRecord(
                address: address, digest: module.digest, moduleBytes: UInt64(bytes.count), maxInstances: instances,
                config: config, version: try await engine.nextFunctionVersion(address), deployedBy: engine.name,
                name: name)
            try await engine.bindFunction(record)
            var iterator = rest
            while try await iterator.next() != nil {}
            logger.info(
                "function \(address) bound to module \(name) (\(bytes.count) bytes, sha256 \(module.digest.prefix(12))), at most \(instances) at once"
            )
            await reconcile()
            await answer(message, Self.json(record))
        } catch {
            message.fail(Self.freightError(error))
        }
    }

    /// `_fn/list`: the cluster's functions as JSON.
    func list(_ message: IncomingMessage) async {
        do {
            var iterator = message.body.makeAsyncIterator()
            while try await iterator.next() != nil {}
            let records = try await engine.boundFunctions()
            let array = records.map { Self.json($0) }.joined(separator: ",")
            await answer(message, "[\(array)]")
        } catch {
            message.fail(Self.freightError(error))
        }
    }

    /// `_fn/remove`: the body is the address to unbind.
    func remove(_ message: IncomingMessage) async {
        do {
            let (bytes, rest) = try await Self.readHeld(message, limit: Limits.addressBytesMax)
            let address = try Address(String(decoding: bytes, as: UTF8.self))
            let removed = try await engine.unbindFunction(address)
            var iterator = rest
            while try await iterator.next() != nil {}
            logger.info("function \(address) unbound")
            await reconcile()
            await answer(message, Self.json(removed))
        } catch {
            message.fail(Self.freightError(error))
        }
    }

    private func answer(_ message: IncomingMessage, _ text: String) async {
        guard !message.replyTo.isEmpty else { return }
        var options = SendOptions()
        options.contentType = "application/json"
        do {
            _ = try await client.reply(to: message, body: .bytes(ByteBuffer(string: text)), options: options)
        } catch {
            logger.notice("could not answer \(message.source): \(error)")
        }
    }

    // MARK: Keeping in step

    /// Reads the cluster's functions and hosts; fetches the modules it lacks, serves what falls to this node and
    /// stops what no longer does, and drops what is unbound or idle.
    func reconcile() async {
        guard await state.beginReconcile() else { return }
        repeat {
            await reconcileOnce()
        } while await state.endReconcile()
    }

    private func reconcileOnce() async {
        let records: [FunctionRecord]
        let hosts: [String]
        do {
            records = try await engine.boundFunctions()
            let found = try await client.resolve(FunctionHost.hostsAddress)
            hosts = found.endpoints.filter { $0.cluster == nil }.map(\.node)
        } catch {
            logger.debug("cannot read the cluster's functions now: \(error)")
            return
        }
        let live = Dictionary(records.map { ($0.address, $0) }, uniquingKeysWith: { a, _ in a })
        let digests = Set(records.map(\.digest))
        for record in records where await state.bytes(record.digest) == nil {
            await fetch(record)
        }
        for address in await state.servedAddresses {
            let served = await state.servedRecord(address)
            if live[address]?.digest != served?.digest || live[address]?.config != served?.config,
                await state.stopServing(address)
            {
                logger.info("no longer serving function \(address) here (unbound or replaced)")
            }
        }
        for record in records where await state.bytes(record.digest) != nil {
            let share = FunctionPlacement.share(
                of: engine.name, address: record.address, maxInstances: record.maxInstances,
                hosts: hosts.contains(engine.name) ? hosts : hosts + [engine.name])
            if share == 0 {
                if await state.stopServing(record.address) {
                    logger.info("no longer serving function \(record.address) here: its instances run on other nodes")
                }
            } else if await state.servedRecord(record.address) == nil {
                await startServing(record, share: share)
            } else {
                await state.setShare(record.address, share)
            }
        }
        for digest in await state.unreferenced(digests) {
            await state.drop(digest)
        }
        for name in await state.dropIdle(idleAfter) {
            logger.info("module \(name) idle for \(idleAfter): dropped (its next message starts it cold)")
        }
    }

    /// Fetches a module's bytes from a host that holds them, checking their digest.
    private func fetch(_ record: FunctionRecord) async {
        guard await state.mayFetch(record.digest) else { return }
        do {
            let reply = try await client.request(
                to: FunctionHost.modulesAddress(record.digest), body: .bytes(ByteBuffer()),
                timeout: FunctionHost.fetchTimeout)
            let buffer = try await reply.collect(upTo: Limits.functionModuleBytesMax)
            let bytes = Array(buffer.readableBytesView)
            guard FunctionModule.digest(of: bytes) == record.digest else {
                throw FreightError(.checksumMismatch, "the bytes fetched for \(record.address) have another digest")
            }
            try await state.store(record.digest, bytes)
            await serveModule(record.digest)
            logger.debug("fetched module of \(record.address) (\(bytes.count) bytes) from \(reply.source)")
        } catch {
            logger.notice("cannot fetch the module of function \(record.address) yet: \(error)")
        }
    }

    /// Answers fetches of `digest` from other hosts.
    private func serveModule(_ digest: String) async {
        guard await !state.hasModuleEndpoint(digest) else { return }
        do {
            let subscription = try await client.receive(FunctionHost.modulesAddress(digest), group: FunctionHost.group)
            let (client, state, logger) = (self.client, self.state, self.logger)
            let task = Task {
                do {
                    for try await request in subscription {
                        guard let bytes = await state.bytes(digest) else {
                            request.fail(FreightError(.invalidAddress, "module \(digest.prefix(12)) is not held here"))
                            continue
                        }
                        _ = try? await request.drain()
                        _ = try? await client.reply(to: request, body: .bytes(ByteBuffer(bytes: bytes)))
                    }
                } catch {
                    logger.debug("module endpoint \(digest.prefix(12)) ended: \(error)")
                }
            }
            await state.setModuleEndpoint(digest, subscription, task)
        } catch {
            logger.notice("cannot serve module \(digest.prefix(12)) to other hosts: \(error)")
        }
    }

    private func startServing(_ record: FunctionRecord, share: Int) async {
        let subscription: Subscription
        do {
            subscription = try await client.receive(record.address.description, group: FunctionHost.group)
        } catch {
            logger.warning("cannot serve function \(record.address): \(error)")
            return
        }
        let slots = Slots(limit: share)
        let context = self
        let task = Task {
            var messages = subscription.makeAsyncIterator()
            let nodeSlots = context.state.nodeSlots
            // An instance slot of this function, then a message, then one of the node's: a function waiting for
            // its next message holds none of the node's slots, which every function served here shares (held
            // while idle, sixteen served functions once kept a seventeenth from ever running).
            while await slots.acquire() {
                guard let message = try? await messages.next() else {
                    slots.release()
                    break
                }
                guard await nodeSlots.acquire() else {
                    message.fail(FreightError(.nodeGone, "node \(context.engine.name) stopped serving functions"))
                    slots.release()
                    break
                }
                Task {
                    let release = Once {
                        nodeSlots.release()
                        slots.release()
                    }
                    defer { release.run() }
                    await context.run(message, record) { release.run() }
                }
            }
        }
        await state.startServing(
            HostState.Served(record: record, subscription: subscription, slots: slots, task: task))
        logger.info("serving function \(record.address), \(share) of its \(record.maxInstances) instances here")
    }

    func stopAll() async { await state.stopAll() }

    // MARK: Running a message

    /// Runs `message` through a fresh instance of the function's module, chunk by chunk, and sends the output to
    /// its reply-to address. The message is delivered once the module has taken its last byte and ended; a module
    /// that traps, loops or runs out of memory fails the message with the reason instead. `ended` runs once the
    /// module is done with the message: its instance slot goes to the next message while the reply is on its way
    /// (a reply slot bounds the replies in flight, and the output they hold).
    func run(_ message: IncomingMessage, _ record: FunctionRecord, ended: @Sendable () -> Void) async {
        guard !message.replyTo.isEmpty else {
            message.fail(
                FreightError(
                    .invalidArgument,
                    "function \(record.address) answers to the message's reply-to address, and this message asks for no reply: send it as a request (freight fn call, FreightClient.request)"
                ))
            return
        }
        let output: [UInt8]
        let attributes: [String: String]
        do {
            let (module, compiled) = try await state.module(
                for: record, fuelPerCall: engine.configuration.functionFuelPerCall)
            // The instance starts (with `begin` and `attributes`) in the pool call that takes the first chunk, and
            // the last chunk's call ends it: a small request costs one hop to the pool and back.
            let run = RunBox(module: module, length: message.length, config: record.config, given: message.attributes)
            let length = message.length
            var collected: [UInt8] = []
            var chunks = message.body.makeAsyncIterator()
            var next: UInt64 = 0
            var early: [UInt64: BodyChunk] = [:]
            var ended = false
            func take(_ chunk: BodyChunk?) async throws {
                let last = next + UInt64(chunk?.count ?? 0) >= length
                let out = try await Self.pool { () throws(FreightError) in
                    let instance = try run.started()
                    return try (chunk.map { chunk throws(FreightError) in try Self.feed(instance, chunk) } ?? [])
                        + (last ? instance.end() : [])
                }
                if next == 0, let compiled {
                    logger.info(
                        "function \(record.address): cold start, module compiled in \(compiled), instance in \(run.instantiated)"
                    )
                }
                collected += out
                next += UInt64(chunk?.count ?? 0)
                ended = last
            }
            if length == 0 { try await take(nil) }
            while next < length {
                guard let chunk = try await chunks.next() else {
                    throw FreightError(.senderGone, "the body ended at \(next) of \(length) bytes")
                }
                if chunk.offset == next {
                    try await take(chunk)
                    while let waiting = early.removeValue(forKey: next) { try await take(waiting) }
                } else {
                    early[chunk.offset] = chunk
                }
                if let declared = run.declared, declared > UInt64(Limits.functionOutputBytesMax) {
                    throw FreightError(
                        .functionFailed,
                        "function \(record.address) declared \(declared) bytes of output; at most \(Limits.functionOutputBytesMax)"
                    )
                }
                if collected.count > Limits.functionOutputBytesMax {
                    throw FreightError(
                        .functionFailed,
                        "function \(record.address) gave over \(Limits.functionOutputBytesMax) bytes of output")
                }
            }
            if !ended { collected += try await Self.pool { () throws(FreightError) in try run.started().end() } }
            attributes = run.attributes
            guard collected.count <= Limits.functionOutputBytesMax else {
                throw FreightError(
                    .functionFailed,
                    "function \(record.address) gave over \(Limits.functionOutputBytesMax) bytes of output")
            }
            output = collected
            // The module took every byte and ended: the message is delivered.
            while try await chunks.next() != nil {}
        } catch {
            var failure = Self.freightError(error)
            if !failure.message.contains(record.address.description) {
                failure = FreightError(failure.code, "function \(record.address): \(failure.message)")
            }
            logger.debug("\(failure.message)")
            message.fail(failure)
            return
        }
        guard await state.replySlots.acquire() else { return }
        defer { state.replySlots.release() }
        ended()
        var options = SendOptions()
        options.attributes = attributes
        options.attributes["function"] = "\(engine.name)/\(record.name)@\(record.digest.prefix(12))"
        options.contentType = message.contentType
        do {
            _ = try await client.reply(to: message, body: .bytes(ByteBuffer(bytes: output)), options: options)
        } catch {
            logger.notice("function \(record.address): the reply to \(message.source) failed: \(error)")
        }
    }

    static func feed(_ run: FunctionRun, _ chunk: BodyChunk) throws(FreightError) -> [UInt8] {
        do {
            return try chunk.withUnsafeBytes { raw in
                try Result { () throws(FreightError) in try run.chunk(raw) }.get()
            }
        } catch let error as FreightError {
            throw error
        } catch {
            throw FreightError(.io, "cannot read the chunk at \(chunk.offset): \(error)")
        }
    }

    /// Runs `body` on NIO's thread pool (module calls never run on an event loop or the cooperative pool).
    static func pool<T: Sendable>(_ body: @escaping @Sendable () throws(FreightError) -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive { try body() }
    }

    // MARK: Helpers

    /// Reads `message`'s body into memory (at most `limit` bytes, refused before any is read) and leaves its last
    /// chunk taken but not handed back: the caller ends the message with `next()` (delivered) or fails it.
    static func readHeld(_ message: IncomingMessage, limit: Int) async throws -> ([UInt8], MessageBody.AsyncIterator) {
        guard message.length <= UInt64(limit) else {
            throw FreightError(.resourceExhausted, "\(message.length) bytes; at most \(limit) are taken here")
        }
        var bytes = [UInt8](repeating: 0, count: Int(message.length))
        var iterator = message.body.makeAsyncIterator()
        var received = 0
        while received < bytes.count {
            guard let chunk = try await iterator.next() else {
                throw FreightError(.senderGone, "the body ended at \(received) of \(message.length) bytes")
            }
            let start = Int(chunk.offset)
            guard start + chunk.count <= bytes.count else {
                throw FreightError(.protocolViolation, "a chunk past the body's end")
            }
            try chunk.withUnsafeBytes { raw in
                bytes.withUnsafeMutableBytes { target in
                    target.baseAddress!.advanced(by: start).copyMemory(from: raw.baseAddress!, byteCount: raw.count)
                }
            }
            received += chunk.count
        }
        return (bytes, iterator)
    }

    static func freightError(_ error: any Error) -> FreightError {
        (error as? FreightError) ?? FreightError(.internalError, "\(error)")
    }

    static func json(_ record: FunctionRecord) -> String {
        let object: [String: Any] = [
            "address": record.address.description, "name": record.name, "sha256": record.digest,
            "module_bytes": record.moduleBytes, "max_instances": record.maxInstances, "config": record.config,
            "deployed_by": record.deployedBy, "version": record.version,
        ]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

/// One message's ``FunctionRun``, started at its first call, handed between the thread pool's threads: its calls
/// run one at a time (each awaited before the next), never at once, so its state needs no lock.
final class RunBox: @unchecked Sendable {
    let module: FunctionModule
    let length: UInt64
    let config: String
    let given: [String: String]
    private var run: FunctionRun?
    /// What `begin` declared and `attributes` gave, once started.
    private(set) var declared: UInt64?
    private(set) var attributes: [String: String] = [:]
    private(set) var instantiated = Duration.zero

    init(module: FunctionModule, length: UInt64, config: String, given: [String: String]) {
        self.module = module
        self.length = length
        self.config = config
        self.given = given
    }

    /// The instance, started (`begin`, `attributes`) at the first call.
    func started() throws(FreightError) -> FunctionRun {
        if let run { return run }
        let begun = ContinuousClock.now
        let run = try FunctionRun(module)
        instantiated = ContinuousClock.now - begun
        declared = try run.begin(length: length, config: config)
        attributes = try run.attributes(given)
        self.run = run
        return run
    }
}
