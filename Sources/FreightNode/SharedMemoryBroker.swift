import FreightCore
import FreightFlow
import FreightTransport
import FreightWire

#if canImport(Glibc)
    import Glibc
#endif

/// A pool an app lent its node (one sealed memfd): the app's send pool, which the app allocates, or its receive
/// pool, which this node allocates (`receive`). docs/shared-memory.md.
final class NodePool: @unchecked Sendable {  // confined to the node's event loop
    let id: UInt32
    let mapping: SharedMapping
    let owner: UInt64
    var ownerAlive = true
    var receive: RegionAllocator?
    /// Loans of this pool's regions not yet returned.
    var loansOut = 0
    /// Sessions whose descriptor link has this pool.
    var pushedTo: Set<UInt64> = []
    /// A device allocation the app lent (docs/gpu.md): its GPU and CUDA IPC handle. The node never reads it.
    let device: DeviceLend?

    init(id: UInt32, mapping: SharedMapping, owner: UInt64, allocatesHere: Bool, device: DeviceLend? = nil) {
        self.id = id
        self.mapping = mapping
        self.owner = owner
        self.receive = allocatesHere ? RegionAllocator(range: 0..<mapping.size) : nil
        self.device = device
    }

    /// A file the app lent for sending (not mapped here: read with `sendfile` and `pread` only).
    var isFile: Bool { !mapping.isMapped && device == nil }

    func contains(_ region: SharedRegion) -> Bool {
        region.pool == id && region.length > 0 && mapping.contains(offset: region.offset, length: region.length)
    }
}

/// A device allocation lent as a pool: which GPU it lives on (16 bytes of UUID) and the IPC handle that opens it.
struct DeviceLend: Hashable {
    var gpu: [UInt8]
    var handle: [UInt8]

    var gpuName: String { GPUName.text(gpu) }
}

/// One SHARED frame's region, counted by its uses at this node (writes to peers in progress, apps' holds).
/// At zero it goes back: to the owning app by RELEASE, or to this node's allocator for a receive pool.
final class Loan: @unchecked Sendable {  // confined to the node's event loop
    let pool: NodePool
    let region: SharedRegion
    var uses = 1

    init(pool: NodePool, region: SharedRegion) {
        self.pool = pool
        self.region = region
        pool.loansOut += 1
    }
}

/// The node's shared memory (docs/shared-memory.md): the pools apps lent it, the budget they count against, and
/// every loan of a region until its last use ends. It owns no connection: what goes back to an app goes through
/// ``release``, which the node sets.
final class SharedMemoryBroker: @unchecked Sendable {  // confined to the node's event loop
    let nodeName: String
    let budgetBytes: Int
    private(set) var pools: [UInt32: NodePool] = [:]
    private var nextPoolID: UInt32 = 1
    /// Most one app's pools may take of the budget.
    var shareBytes: Int { budgetBytes / 2 }
    /// Bytes of every pool attached, counted against ``budgetBytes``.
    private(set) var poolBytes = 0
    /// Shared regions sent to a branch's peer with `sendfile`: the kernel sends the pool's pages by reference, so a
    /// region is in use until the branch acknowledges the bytes past its end (then they have been read out of every
    /// socket) or the branch ends.
    private var branchLoans: [UInt64: [(port: FlowPort, end: UInt64, loan: Loan)]] = [:]
    /// Gives a region of an app's send pool back to the app (its owner session) when its last use ended.
    var release: (_ owner: UInt64, _ region: SharedRegion) -> Void = { _, _ in }
    /// A device pool closed: the sessions it was pushed to close their handles.
    var withdrawn: (NodePool) -> Void = { _ in }

    init(nodeName: String, budgetBytes: Int) {
        self.nodeName = nodeName
        self.budgetBytes = budgetBytes
    }

    /// Regions lent and not yet back, over every pool.
    var regionsLent: Int { pools.values.reduce(0) { $0 + $1.loansOut } }

    // MARK: Pools

    /// Maps an app's two pools (the descriptors are adopted, or closed, either way) if they fit the budget; they
    /// count once ``register(_:_:)`` takes them.
    func map(
        _ attach: DescriptorLink.Attach, send: Int32, receive: Int32, owner: UInt64
    ) throws(FreightError) -> (send: NodePool, receive: NodePool) {
        let asked = attach.sendBytes + attach.receiveBytes
        // Pools count at their declared size (a sparse pool too: the node may map and touch all of it), and one app
        // may lend at most its share of the budget, so that it cannot keep the others out (docs/hardening.md).
        guard asked <= shareBytes else {
            for fd in [send, receive] { close(fd) }
            throw FreightError(
                .resourceExhausted,
                "pools of \(ByteCount.format(Int64(asked))) are over one app's share of node \(nodeName)'s shared-memory budget (\(ByteCount.format(Int64(shareBytes))) of \(ByteCount.format(Int64(budgetBytes))))"
            )
        }
        guard poolBytes + asked <= budgetBytes else {
            for fd in [send, receive] { close(fd) }
            throw FreightError(
                .resourceExhausted,
                "node \(nodeName) is at its shared-memory budget: \(ByteCount.format(Int64(poolBytes))) of \(ByteCount.format(Int64(budgetBytes))) in use, \(ByteCount.format(Int64(asked))) asked"
            )
        }
        // Both are adopted (or closed) before either error is reported, so no descriptor leaks.
        let sendResult = Result { () throws(FreightError) in
            try SharedMapping.adopt(fd: send, size: attach.sendBytes, writable: false)
        }
        let receiveResult = Result { () throws(FreightError) in
            try SharedMapping.adopt(fd: receive, size: attach.receiveBytes, writable: true)
        }
        let sendPool = NodePool(id: nextPoolID, mapping: try sendResult.get(), owner: owner, allocatesHere: false)
        let receivePool = NodePool(
            id: nextPoolID &+ 1, mapping: try receiveResult.get(), owner: owner, allocatesHere: true)
        nextPoolID &+= 2
        return (sendPool, receivePool)
    }

    func register(_ pools: NodePool...) {
        for pool in pools {
            self.pools[pool.id] = pool
            poolBytes += pool.mapping.size
        }
    }

    /// A file an app lent for sending, as a pool of its own (it counts against no budget: its pages are the file's,
    /// not memory the node holds).
    func lendFile(fd: Int32, size: Int, owner: UInt64) -> NodePool {
        let pool = NodePool(
            id: nextPoolID, mapping: .lentFile(fd: fd, size: size), owner: owner, allocatesHere: false)
        nextPoolID &+= 1
        pools[pool.id] = pool
        return pool
    }

    /// A device allocation an app lent for sending, as a pool of its own: counted against no budget (its bytes are
    /// the GPU's, never mapped here).
    func lendDevice(_ device: DeviceLend, size: Int, owner: UInt64) -> NodePool {
        let pool = NodePool(
            id: nextPoolID, mapping: .unmapped(size: size), owner: owner, allocatesHere: false, device: device)
        nextPoolID &+= 1
        pools[pool.id] = pool
        return pool
    }

    /// The app that lent `pool` is gone: the pool closes once every loan of it is back.
    func ownerGone(_ pool: NodePool) {
        pool.ownerAlive = false
        closeIfUnused(pool)
    }

    /// A session is gone: no descriptor link has any pool for it any more.
    func sessionGone(_ session: UInt64) {
        for pool in pools.values { pool.pushedTo.remove(session) }
    }

    private func closeIfUnused(_ pool: NodePool) {
        guard !pool.ownerAlive, pool.loansOut == 0, pools[pool.id] === pool else { return }
        pools[pool.id] = nil
        if pool.device != nil {
            withdrawn(pool)
        } else if !pool.isFile {
            poolBytes -= pool.mapping.size
        }
    }

    // MARK: Loans

    /// A region of a receive pool for a chunk arriving for its app, when the pool has room.
    func receiveRegion(in pool: NodePool, bytes: Int) -> Loan? {
        guard bytes > 0, let offset = pool.receive?.allocate(bytes) else { return nil }
        return Loan(pool: pool, region: SharedRegion(pool: pool.id, offset: UInt64(offset), length: UInt64(bytes)))
    }

    /// One use of a loan ended; at zero the region goes back to its owner.
    func returnUse(_ loan: Loan) {
        loan.uses -= 1
        guard loan.uses == 0 else { return }
        let pool = loan.pool
        pool.loansOut -= 1
        if pool.receive != nil {
            pool.receive?.free(Int(loan.region.offset))
        } else if pool.ownerAlive && !pool.isFile {
            // A lent file's regions need no RELEASE: the app sends them by credit, not by room in a pool.
            release(pool.owner, loan.region)
        }
        closeIfUnused(pool)
    }

    /// One use of `loan` stays with the branch to `port` of message `id` until it acknowledges `end`.
    func lend(_ loan: Loan, to port: FlowPort, of id: UInt64, until end: UInt64) {
        branchLoans[id, default: []].append((port, end, loan))
    }

    /// Returns the loans of a branch for bytes below `through` (all of them with `.max`: the branch ended or its
    /// bytes go again).
    func settle(_ id: UInt64, port: FlowPort, through: UInt64) {
        guard !branchLoans.isEmpty, let slot = branchLoans.index(forKey: id) else { return }
        var settled: [Loan] = []
        branchLoans.values[slot].removeAll { entry in
            guard entry.port == port, entry.end <= through else { return false }
            settled.append(entry.loan)
            return true
        }
        if branchLoans.values[slot].isEmpty { branchLoans.remove(at: slot) }
        for loan in settled { returnUse(loan) }
    }

    /// The message ended: every loan its branches kept goes back.
    func finished(_ id: UInt64) {
        guard !branchLoans.isEmpty, let loans = branchLoans.removeValue(forKey: id) else { return }
        for entry in loans { returnUse(entry.loan) }
    }
}
