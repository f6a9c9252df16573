import Foundation
import FreightCore
import FreightDirectory
import FreightTransport
import FreightWire

/// The cluster's function records (docs/functions.md, "Function endpoints"): bound and unbound here by the node's
/// function host, kept in the directory (gossiped between nodes in the mesh; etcd's `functions/` keys otherwise).
extension NodeEngine {
    /// Binds `record` to its address across the cluster; returns once the directory holds it.
    public func bindFunction(_ record: FunctionRecord) async throws {
        try await change(record.address, to: record)
    }

    /// Unbinds the function at `address`; throws `notFound` when none is bound there.
    public func unbindFunction(_ address: Address) async throws -> FunctionRecord {
        let bound = try await eventLoop.submit { [self] in functionTable[address] }.get()
        guard var removal = bound else {
            throw FreightError(.invalidAddress, "no function is bound to \(address)")
        }
        removal.removed = true
        removal.version = max(removal.version + 1, Self.wallClockNanos)
        removal.deployedBy = name
        try await change(address, to: removal)
        return bound!
    }

    /// The functions bound in the cluster now, as this node knows them.
    public func boundFunctions() async throws -> [FunctionRecord] {
        try await eventLoop.submit { [self] in functionTable.live }.get()
    }

    /// The newest version a record of `address` may take here: later than every one this node has seen.
    public func nextFunctionVersion(_ address: Address) async throws -> UInt64 {
        try await eventLoop.submit { [self] in
            max(Self.wallClockNanos, (functionTable.records[address]?.version ?? 0) + 1)
        }.get()
    }

    static var wallClockNanos: UInt64 { UInt64(max(0, Date().timeIntervalSince1970 * 1e9)) }

    private func change(_ address: Address, to record: FunctionRecord) async throws {
        if let directory = configuration.directory {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                directory.function(address, record.removed ? nil : record) { error in
                    if let error { continuation.resume(throwing: error) } else { continuation.resume() }
                }
            }
            // The watch brings it back too; applying it now lets the caller read what it wrote.
            try await eventLoop.submit { [self] in
                if record.removed { functionTable.forget(address) } else { functionTable.merge(record) }
            }.get()
            return
        }
        let taken = try await eventLoop.submit { [self] in
            guard functionTable.merge(record) else { return false }
            sendFunctions([record], to: Array(members.values))
            return true
        }.get()
        guard taken else {
            throw FreightError(
                .resourceExhausted,
                "the cluster holds \(Limits.functionsMax) functions already, or a newer one is bound to \(address)")
        }
    }

    /// Sends `records` to `peers` in FUNCTIONS frames under the control-frame limit.
    func sendFunctions(_ records: [FunctionRecord], to peers: [Member]) {
        guard usesMesh, !records.isEmpty else { return }
        var frames: [Freight_Wire_V1_Functions] = []
        var part = Freight_Wire_V1_Functions()
        var bytes = 0
        for record in records {
            let wire = record.wire
            let size = wire.serializedSizeEstimate
            if bytes + size > Limits.controlFrameBytesMax - Self.controlFrameHeadroomBytes, !part.records.isEmpty {
                frames.append(part)
                part = Freight_Wire_V1_Functions()
                bytes = 0
            }
            part.records.append(wire)
            bytes += size
        }
        frames.append(part)
        for peer in peers {
            guard let control = peer.link.control else { continue }
            for frame in frames { control.send(.functions(frame)) }
        }
    }

    /// A peer's function records: the newer ones are taken and passed on to the other peers, so a change reaches
    /// the whole mesh and stops where it is known.
    func functionsReceived(_ list: Freight_Wire_V1_Functions, from member: Member) {
        var changed: [FunctionRecord] = []
        for wire in list.records.prefix(Limits.functionsMax) {
            do {
                let record = try FunctionRecord(wire: wire)
                if functionTable.merge(record) { changed.append(record) }
            } catch {
                logger.warning("node \(member.name) sent a function record that is not valid: \(error.message)")
            }
        }
        guard !changed.isEmpty else { return }
        for record in changed {
            logger.info(
                "function \(record.address) \(record.removed ? "unbound" : "bound to module \(record.digest.prefix(12))") by \(record.deployedBy)"
            )
        }
        sendFunctions(changed, to: members.values.filter { $0.name != member.name })
    }
}

extension Freight_Wire_V1_FunctionRecord {
    /// About its encoded size: its strings and a few bytes of tags and numbers.
    var serializedSizeEstimate: Int {
        address.utf8.count + digest.utf8.count + config.utf8.count + deployedBy.utf8.count + name.utf8.count + 48
    }
}
