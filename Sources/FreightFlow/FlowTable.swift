import FreightCore
import FreightDirectory
import FreightWire

/// Every message passing through one node, as a pure state machine (docs/core.md): each event is a
/// `mutating func` that appends ``FlowAction``s to a buffer its owner carries out and reuses. No I/O, no clock.
///
/// It also owns what the flows cost the node: memory reserved against the budget, messages in flight per upstream,
/// messages in flight per endpoint (the load the delivery planner balances on), and the delivered/failed counts.
public struct FlowTable: Sendable {
    public struct Configuration: Sendable {
        /// This node's name: the hop it adds to paths and deliveries.
        public var nodeName: String
        /// Most body bytes of one message this node holds beyond what every branch acknowledged.
        public var windowBytes: Int
        /// Memory this node commits to messages in flight; each reserves up to its window.
        public var memoryBudgetBytes: Int
        /// The chunk size of messages whose sender did not choose one.
        public var chunkBytesDefault: Int
        /// How long a message whose link broke is held for the link to come back (`Limits.resumeHoldSeconds`).
        public var resumeHold: Duration
        /// Most of the budget one upstream (an app session, a peer) may reserve (docs/hardening.md).
        public var partyShareBytes: Int
        /// A message whose upstream has credit and sends nothing this long is aborted (`Limits.idleSeconds`).
        public var idle: Duration
        /// A branch that holds the message's other branches back, taking nothing for this long, is cut with
        /// `slow receiver` (`Limits.slowReceiverSeconds`).
        public var slowReceiver: Duration

        public init(
            nodeName: String, windowBytes: Int, memoryBudgetBytes: Int, chunkBytesDefault: Int,
            resumeHold: Duration = .seconds(Limits.resumeHoldSeconds), partyShareBytes: Int? = nil,
            idle: Duration = .seconds(Limits.idleSeconds), slowReceiver: Duration = .seconds(Limits.slowReceiverSeconds)
        ) {
            self.nodeName = nodeName
            self.windowBytes = windowBytes
            self.memoryBudgetBytes = memoryBudgetBytes
            self.chunkBytesDefault = chunkBytesDefault
            self.resumeHold = resumeHold
            self.partyShareBytes = partyShareBytes ?? memoryBudgetBytes / 2
            self.idle = idle
            self.slowReceiver = slowReceiver
        }
    }

    /// Where a new message goes at this node, as its owner planned it from the directory.
    public struct Plan: Sendable {
        public var branches: [Flow.Branch]
        /// The body is lent from one shared buffer and every receiver takes shared regions: no node holds it.
        public var shared: Bool
        /// The upstream can send again from an offset (``Flow/upstreamResends``).
        public var upstreamResends: Bool

        public init(branches: [Flow.Branch], shared: Bool = false, upstreamResends: Bool = false) {
            self.branches = branches
            self.shared = shared
            self.upstreamResends = upstreamResends
        }
    }

    public let configuration: Configuration
    public internal(set) var flows: [UInt64: Flow] = [:]
    /// Bytes of the memory budget reserved by flows.
    public private(set) var reservedBytes = 0
    public private(set) var delivered: UInt64 = 0
    public private(set) var failed: UInt64 = 0
    /// Times an upstream sent every byte of credit it had been given before the message's end: it waits for more.
    public private(set) var creditStalls: UInt64 = 0
    var flowsByUpstream: [FlowPort: Int] = [:]
    /// Bytes of the budget reserved by each party's flows.
    var reservedByParty: [Party: Int] = [:]
    var endpointLoad: [EndpointKey: Int] = [:]
    /// The time as the owner last said (``advance(to:actions:)``), in nanoseconds of a monotonic clock.
    public private(set) var nowNanos: UInt64 = 0
    /// Outcomes sent to peers lately, by message: a peer whose link broke before the outcome arrived asks again
    /// (OPEN resume) and is answered from here. Kept for the hold time, at most `Limits.outcomesRememberedMax`.
    private var recentOutcomes: [UInt64: (upstream: FlowPort, frame: Frame, atNanos: UInt64)] = [:]
    /// Remembered outcomes oldest first, from `recentHead` on (entries before it are forgotten; compacted now and
    /// then, so that forgetting costs nothing per message).
    private var recentOrder: [UInt64] = []
    private var recentHead = 0

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    public var count: Int { flows.count }
    /// The messages in flight, by id.
    public var messageIDs: [UInt64] { Array(flows.keys) }
    /// Messages in flight to an endpoint through this node.
    public func load(_ key: EndpointKey) -> Int { endpointLoad[key, default: 0] }
    /// Messages in flight from an upstream port.
    public func messages(from port: FlowPort) -> Int { flowsByUpstream[port, default: 0] }
    /// Why `port` may start no more messages here (small ones included, NodeEngine+Small).
    public func tooManyMessages(from port: FlowPort) -> FreightError {
        FreightError(
            .resourceExhausted,
            "\(port) has \(Limits.messagesPerConnectionMax) messages in flight through node \(name), the most allowed")
    }
    /// Who a message's reservation counts against: the app session that sent it to this node, or, for a message
    /// relayed by a peer, the app it came from as the peer names it (`node/app`): one app's messages cannot fill a
    /// relay's share of its peer, and so starve the other apps behind that peer.
    public enum Party: Hashable, Sendable {
        case port(FlowPort)
        case source(FlowPort, String)

        public init(upstream: FlowPort, header: Freight_Wire_V1_MessageHeader) {
            if case .peer = upstream { self = .source(upstream, header.source) } else { self = .port(upstream) }
        }
    }

    /// Bytes of the budget a party's messages reserve.
    public func reserved(by party: Party) -> Int { reservedByParty[party, default: 0] }
    /// Bytes of the budget the messages an app session sent reserve.
    public func reserved(by port: FlowPort) -> Int { reserved(by: .port(port)) }
    public subscript(id: UInt64) -> Flow? { flows[id] }

    private var name: String { configuration.nodeName }

    // MARK: Open

    /// An OPEN from `port`. The header is checked against its limits first; then `plan` (the owner's directory
    /// lookup, given the messages in flight per endpoint) says where the message goes; then the per-upstream limit and the memory budget admit it. A message
    /// refused at any step is answered with ABORT and counted failed. Returns the flow started, if any.
    @discardableResult
    /// With `rerouted`, the OPEN is a resume for a message this node never held (it moved here from a gateway that
    /// went away, docs/gateways.md): its branches are opened with resume, and its chunks wait for the offset they
    /// answer with (``ResumeGate``).
    public mutating func open(
        _ open: Freight_Wire_V1_Open, from port: FlowPort, rerouted: Bool = false, actions: inout [FlowAction],
        plan: (Freight_Wire_V1_MessageHeader, _ load: (EndpointKey) -> Int) throws(FreightError) -> Plan
    ) -> Flow? {
        let id = open.header.id
        if case .peer = port, let existing = flows[id], existing.upstream == port,
            existing.length == open.header.length
        {
            // The same OPEN again from the same upstream: its control stripe broke before it heard from this node
            // (the OPEN or the answer may have been lost). Answered as a resume: where this node is, and from where
            // to send again.
            resume(open, from: port, recording: false, actions: &actions)
            return existing
        }
        if case .peer = port, flows[id] == nil, let entry = recentOutcomes[id], entry.upstream == port {
            actions.append(.send(entry.frame, to: port))
            return nil
        }
        do throws(FreightError) {
            let header = try checked(open)
            let load = endpointLoad
            let planned = try plan(header) { load[$0, default: 0] }
            return try start(
                header: header, upstream: port, plan: planned, path: open.path + [name], rerouted: rerouted,
                windowHint: min(open.windowHint, UInt64(Limits.windowHintMax)),
                part: open.hasPart ? open.part : nil, actions: &actions)
        } catch {
            failed += 1
            actions.append(.send(.abort(id, error), to: port))
            return nil
        }
    }

    /// The header of an OPEN, checked against every limit, with the default chunk size filled in.
    public func checked(_ open: Freight_Wire_V1_Open) throws(FreightError) -> Freight_Wire_V1_MessageHeader {
        var header = open.header
        let id = header.id
        guard id != 0 else { throw FreightError(.protocolViolation, "message id 0 is reserved") }
        guard flows[id] == nil else { throw FreightError(.duplicate, "message id \(id) is already in flight here") }
        let headerBytes = header.encodedSize
        guard headerBytes <= Limits.headerBytesMax else {
            throw FreightError(
                .invalidArgument, "message header of \(headerBytes) bytes is over \(Limits.headerBytesMax)")
        }
        if header.chunkBytes == 0 { header.chunkBytes = UInt32(configuration.chunkBytesDefault) }
        guard (Limits.chunkBytesMin...Limits.chunkBytesMax).contains(Int(header.chunkBytes)) else {
            throw FreightError(
                .invalidArgument,
                "chunk size \(header.chunkBytes) is out of range \(Limits.chunkBytesMin)...\(Limits.chunkBytesMax)")
        }
        guard header.length <= UInt64(Int64.max) else {
            throw FreightError(.invalidArgument, "length \(header.length) is too large")
        }
        guard header.attributes.count <= Limits.attributesMax else {
            throw FreightError(
                .invalidArgument, "\(header.attributes.count) attributes, at most \(Limits.attributesMax)")
        }
        guard open.path.count < Limits.membersMax else { throw FreightError(.protocolViolation, "path too long") }
        return header
    }

    private mutating func start(
        header: Freight_Wire_V1_MessageHeader, upstream: FlowPort, plan: Plan, path: [String], rerouted: Bool,
        windowHint: UInt64 = 0, part: Freight_Wire_V1_Part? = nil, actions: inout [FlowAction]
    ) throws(FreightError) -> Flow {
        guard messages(from: upstream) < Limits.messagesPerConnectionMax else { throw tooManyMessages(from: upstream) }
        // Every message reserves at least the smallest chunk, so the budget also bounds how many are open. A
        // shared-buffer message between apps of this node holds no bytes here: only its regions are lent.
        var window = plan.shared ? max(header.length, 1) : max(UInt64(configuration.windowBytes), windowHint)
        var reserve =
            plan.shared ? Limits.chunkBytesMin : Int(min(max(header.length, UInt64(Limits.chunkBytesMin)), window))
        let party = Party(upstream: upstream, header: header)
        // Under memory pressure a message gets its share of what the limit holds rather than a refusal (docs/wan.md,
        // "Many messages"): when not even a chunk is left, the windows of the messages under the same limit (its
        // party's share, or the whole budget) shrink to an even share of it, and the new one takes that share.
        let chunk = Int(header.chunkBytes)
        if !plan.shared, reserve > left(for: party) {
            var share = reserve
            if configuration.partyShareBytes - reserved(by: party) < min(reserve, chunk) {
                share = min(share, shrink(party: party, toShareOf: configuration.partyShareBytes))
            }
            if configuration.memoryBudgetBytes - reservedBytes < min(reserve, chunk) {
                share = min(share, shrink(party: nil, toShareOf: configuration.memoryBudgetBytes))
            }
            let fits = min(share, left(for: party)) / chunk * chunk
            if fits >= min(reserve, chunk) {
                reserve = min(reserve, fits)
                window = UInt64(reserve)
            }
        }
        // A relayed message (from a peer, or a gateway's port) whose party's share is all credit granted and not yet
        // come back opens with one chunk while the node's budget has room, past the share: the hop before it
        // admitted it and holds its bytes, and a refusal here would fail a message that its own node took in only
        // because this one granted credit to others a moment sooner (docs/wan.md, "Many messages"). Bounded by the
        // budget and by the messages one connection may have open.
        var pastShare = false
        if !plan.shared, reserved(by: party) + min(reserve, chunk) > configuration.partyShareBytes,
            reservedBytes + min(reserve, chunk) <= configuration.memoryBudgetBytes
        {
            if case .session = upstream {
            } else {
                reserve = min(reserve, chunk)
                window = UInt64(reserve)
                pastShare = true
            }
        }
        guard reservedBytes + reserve <= configuration.memoryBudgetBytes else {
            throw FreightError(
                .resourceExhausted,
                "node \(name) is at its memory budget (\(ByteCount.format(Int64(configuration.memoryBudgetBytes))) in flight); try again"
            )
        }
        guard pastShare || reserved(by: party) + reserve <= configuration.partyShareBytes else {
            let who = if case .peer = upstream { "\(header.source) (through \(upstream))" } else { "\(upstream)" }
            throw FreightError(
                .resourceExhausted,
                "\(who) has \(ByteCount.format(Int64(reserved(by: party)))) of node \(name)'s memory budget in flight, and one party may have \(ByteCount.format(Int64(configuration.partyShareBytes))); try again"
            )
        }
        var flow = Flow(
            id: header.id, header: header, upstream: upstream, branches: plan.branches, path: path,
            reservedBytes: reserve, windowBytes: window, shared: plan.shared, upstreamResends: plan.upstreamResends)
        flow.upstreamProgressNanos = nowNanos
        flow.startedNanos = nowNanos
        flow.windowHint = windowHint
        flow.part = part
        if rerouted { flow.gate = .awaitingOffset }
        for index in flow.branches.indices { flow.branches[index].progressNanos = nowNanos }
        reservedBytes += reserve
        reservedByParty[party, default: 0] += reserve
        flowsByUpstream[upstream, default: 0] += 1
        for branch in plan.branches {
            for target in branch.targets { endpointLoad[target, default: 0] += 1 }
        }
        flows[header.id] = flow
        for branch in flow.branches where branch.isOpen {
            actions.append(.send(.open(Self.openFrame(flow, branch, resume: rerouted)), to: branch.port))
        }
        finishIfComplete(header.id, actions: &actions)
        return flow
    }

    /// Bytes a new message of `party` may still reserve: what is left of the budget and of the party's share.
    private func left(for party: Party) -> Int {
        min(configuration.memoryBudgetBytes - reservedBytes, configuration.partyShareBytes - reserved(by: party))
    }

    /// Shrinks the windows of `party`'s messages (every message's, for nil) to an even share of `limit` among them
    /// and one more, in whole chunks; returns that share. A message keeps reserved what it was granted and its
    /// branches have not acknowledged (it may still arrive), and gives the rest back as they do (``settle(_:)``).
    private mutating func shrink(party: Party?, toShareOf limit: Int) -> Int {
        let ids = flows.values.filter { flow in
            !flow.shared && (party == nil || Party(upstream: flow.upstream, header: flow.header) == party)
        }.map(\.id)
        let share = max(Limits.chunkBytesMin, limit / (ids.count + 1))
        for id in ids {
            let chunk = UInt64(flows[id]!.header.chunkBytes)
            let window = max(chunk, UInt64(share) / chunk * chunk)
            guard flows[id]!.windowBytes > window else { continue }
            flows[id]!.windowBytes = window
            settle(id)
        }
        return share
    }

    /// Gives back what message `id` reserves beyond its window and beyond what it was granted and not yet
    /// acknowledged everywhere (its window shrank under memory pressure).
    private mutating func settle(_ id: UInt64) {
        guard let flow = flows[id], !flow.shared else { return }
        let outstanding = Int(flow.upstreamCredit - min(flow.upstreamAcked, flow.upstreamCredit))
        let needed = max(Int(min(max(flow.length, UInt64(Limits.chunkBytesMin)), flow.windowBytes)), outstanding)
        guard flow.reservedBytes > needed else { return }
        let freed = flow.reservedBytes - needed
        flows[id]!.reservedBytes = needed
        reservedBytes -= freed
        let party = Party(upstream: flow.upstream, header: flow.header)
        reservedByParty[party, default: 0] -= freed
    }

    /// Widens message `id`'s window to `window` bytes (a gateway sends it across a WAN link whose round trip needs
    /// more than the node's window: docs/wan.md, "Windows"), reserving the difference of the memory budget; a flow
    /// the budget or its party's share cannot widen keeps its window. Returns the window it has.
    @discardableResult
    public mutating func widen(_ id: UInt64, window: UInt64) -> UInt64? {
        guard var flow = flows[id] else { return nil }
        guard !flow.shared, window > flow.windowBytes else { return flow.windowBytes }
        let reserve = Int(min(max(flow.length, UInt64(Limits.chunkBytesMin)), window))
        let more = max(0, reserve - flow.reservedBytes)
        let party = Party(upstream: flow.upstream, header: flow.header)
        guard reservedBytes + more <= configuration.memoryBudgetBytes,
            reserved(by: party) + more <= configuration.partyShareBytes
        else { return flow.windowBytes }
        reservedBytes += more
        reservedByParty[party, default: 0] += more
        flow.reservedBytes += more
        flow.windowBytes = window
        flow.windowHint = max(flow.windowHint, window)
        if case .peer = flow.upstream { flow.tellsUpstreamWindow = true }
        flows[id] = flow
        return window
    }

    /// The OPEN that tells `branch` of `flow` (with `resume`: the message resumes after a broken link).
    static func openFrame(_ flow: Flow, _ branch: Flow.Branch, resume: Bool = false) -> Freight_Wire_V1_Open {
        var open = Freight_Wire_V1_Open()
        open.header = flow.header
        open.path = flow.path
        open.shared = flow.shared
        open.resume = resume
        open.windowHint = flow.windowHint
        if let part = flow.part { open.part = part }
        open.targets = branch.targets.map { key in
            var ref = Freight_Wire_V1_EndpointRef()
            ref.node = key.node
            ref.id = key.id
            return ref
        }
        return open
    }

    // MARK: Chunks

    /// A chunk of `count` bytes at `offset` from `port`, checked before its bytes go on: the flow exists (chunks of a
    /// message that already ended are still in the pipe and are dropped), `port` sends it, and it lies within the
    /// credit granted and the message. Returns the flow with the chunk counted, or nil to drop it; a chunk past the
    /// credit aborts the message both ways.
    public mutating func admit(
        _ id: UInt64, offset: UInt64, count: Int, from port: FlowPort, countLimit: Int = Limits.chunkBytesMax,
        actions: inout [FlowAction]
    ) -> Flow? {
        guard let slot = flows.index(forKey: id) else { return nil }
        let flow = flows.values[slot]
        guard flow.upstream == port else {
            actions.append(.warning("\(port) sent a chunk of message \(id) it does not send; dropped"))
            return nil
        }
        if let gate = flow.gate {
            // Sent before the upstream heard where to send again from: let through where it fits, else dropped (the
            // same bytes come again).
            guard case .resending(let from) = gate, offset >= from else { return nil }
            let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
            guard !overflow, end <= flow.upstreamCredit, end <= flow.length, count <= countLimit else { return nil }
        }
        let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
        guard !overflow, end <= flow.upstreamCredit, end <= flow.length, count <= countLimit else {
            abort(
                id,
                FreightError(
                    .protocolViolation, "chunk [\(offset), +\(count)) is beyond the credit \(flow.upstreamCredit)"),
                notifyUpstream: true, actions: &actions)
            return nil
        }
        flows.values[slot].bytesForwarded += UInt64(count)
        if end > flow.admittedEnd { flows.values[slot].admittedEnd = end }
        flows.values[slot].upstreamProgressNanos = nowNanos
        if end == flow.upstreamCredit && end < flow.length { creditStalls += 1 }
        if flow.resendAwaited == offset { flows.values[slot].resendAwaited = nil }
        // Bytes from it: the upstream still sends this message, so it is not held for a broken link any more.
        if flow.upstreamLostNanos != nil { flows.values[slot].upstreamLostNanos = nil }
        return flow
    }

    // MARK: Acknowledgements and outcomes

    /// A branch acknowledged bytes and granted credit.
    public mutating func ack(_ ack: Freight_Wire_V1_Ack, from port: FlowPort, actions: inout [FlowAction]) {
        // Changed in place (`flows.values[slot]`): a copy would copy the flow's branches on every ACK.
        guard let slot = flows.index(forKey: ack.messageID), let index = flows.values[slot].openBranch(port) else {
            return
        }
        let length = flows.values[slot].length
        guard ack.ackedOffset <= length, ack.ackedOffset <= ack.creditOffset || ack.creditOffset == 0 else {
            return abort(
                ack.messageID, FreightError(.protocolViolation, "\(port) acknowledged past the message"),
                notifyUpstream: true, actions: &actions)
        }
        if ack.windowHint > flows.values[slot].windowBytes, case .peer = port {
            // A node after this one widened its window for the WAN: this one does too, and tells the one before. Only
            // a node of the cluster is heard: an app, or another cluster, may not make this node hold more.
            widen(ack.messageID, window: min(ack.windowHint, UInt64(Limits.windowHintMax)))
        }
        let now = nowNanos
        func apply(_ flow: inout Flow) -> (acked: UInt64, credit: UInt64)? {
            let credit = max(flow.branches[index].creditOffset, min(ack.creditOffset, length))
            if ack.ackedOffset > flow.branches[index].ackedOffset || credit > flow.branches[index].creditOffset {
                flow.branches[index].progressNanos = now
            }
            flow.branches[index].ackedOffset = max(flow.branches[index].ackedOffset, ack.ackedOffset)
            flow.branches[index].creditOffset = credit
            return flow.upstreamUpdate()
        }
        let update = apply(&flows.values[slot])
        if update != nil, flows.values[slot].reservedBytes > Int(flows.values[slot].windowBytes) {
            settle(ack.messageID)
        }
        if ack.hasResendFrom { flows.values[slot].rewinds += 1 }
        if ack.hasResendFrom, flows.values[slot].gate == .awaitingOffset {
            flows.values[slot].gate = .resending(from: ack.resendFrom)
        }
        let flow = flows.values[slot]
        actions.append(.branchProgress(messageID: ack.messageID, port: port, acked: flow.branches[index].ackedOffset))
        if ack.hasResendFrom {
            guard flow.rewinds <= Limits.rewindsPerMessageMax else {
                return failBranch(
                    ack.messageID, port: port,
                    FreightError(
                        .resourceExhausted,
                        "\(port) asked for message \(String(ack.messageID, radix: 16)) again over \(Limits.rewindsPerMessageMax) times"
                    ), tellBranch: true, actions: &actions)
            }
            // Bytes past `resendFrom` were lost on the way to this branch: the source sends them again.
            actions.append(.branchRewound(messageID: ack.messageID, port: port))
            guard flow.upstreamResends else {
                let error =
                    ack.resendCode == FreightError.Code.checksumMismatch.rawValue
                    ? FreightError(
                        .checksumMismatch,
                        "the chunk at offset \(ack.resendFrom) of \(flow.length) failed its CRC32C check on its way to \(port), and the sender cannot send it again"
                    )
                    : FreightError(
                        .nodeGone,
                        "the link to \(port) broke at offset \(ack.resendFrom) of \(flow.length) and the sender cannot send again"
                    )
                return failBranch(ack.messageID, port: port, error, tellBranch: true, actions: &actions)
            }
            var upstream = Freight_Wire_V1_Ack()
            upstream.messageID = ack.messageID
            upstream.ackedOffset = flow.upstreamAcked
            upstream.creditOffset = flow.upstreamCredit
            upstream.resendFrom = ack.resendFrom
            upstream.resendCode = ack.resendCode
            actions.append(.send(.ack(upstream), to: flow.upstream))
        } else if let update, flow.tellsUpstreamWindow {
            flows.values[slot].tellsUpstreamWindow = false
            var upstream = Freight_Wire_V1_Ack()
            upstream.messageID = ack.messageID
            upstream.ackedOffset = update.acked
            upstream.creditOffset = update.credit
            upstream.windowHint = flow.windowBytes
            actions.append(.send(.ack(upstream), to: flow.upstream))
        } else if let update {
            actions.append(.send(.ack(ack.messageID, acked: update.acked, credit: update.credit), to: flow.upstream))
        }
    }

    /// A branch delivered: every endpoint behind it holds all bytes. `done` speaks for that branch only (an app's
    /// DONE is rewritten by the owner to name the app's own endpoints).
    public mutating func done(_ done: Freight_Wire_V1_Done, from port: FlowPort, actions: inout [FlowAction]) {
        guard let slot = flows.index(forKey: done.messageID), let index = flows.values[slot].openBranch(port) else {
            return
        }
        func apply(_ flow: inout Flow) -> (acked: UInt64, credit: UInt64)? {
            flow.branches[index].ackedOffset = flow.length
            flow.branches[index].state = .done(done)
            // Other branches still open: upstream hears how far they all are now (DONE is this branch's final ACK).
            return flow.allBranchesFinished ? nil : flow.upstreamUpdate()
        }
        let update = apply(&flows.values[slot])
        let upstream = flows.values[slot].upstream
        actions.append(.branchEnded(messageID: done.messageID, port: port))
        if let update {
            actions.append(.send(.ack(done.messageID, acked: update.acked, credit: update.credit), to: upstream))
        }
        finishIfComplete(done.messageID, actions: &actions)
    }

    /// An ABORT from `port`: from upstream it ends the message on every branch; from a branch it fails that branch.
    public mutating func abort(_ abort: Freight_Wire_V1_Abort, from port: FlowPort, actions: inout [FlowAction]) {
        guard let flow = flows[abort.messageID] else { return }
        if flow.upstream == port {
            return self.abort(abort.messageID, abort.error, notifyUpstream: false, actions: &actions)
        }
        failBranch(abort.messageID, port: port, abort.error, acked: abort.ackedOffset, actions: &actions)
    }

    /// Ends one open branch of a flow with `error`: the one path every kind of branch failure takes (an ABORT from
    /// the branch, its port gone, or this node unable to serve it). Upstream hears the new minimum over the branches
    /// still open, or the outcome when it was the last. With `tellBranch` the branch's receiver is sent the ABORT.
    /// `acked` overrides the branch's acknowledged offset (a receiver's ABORT says how far it got).
    public mutating func failBranch(
        _ id: UInt64, port: FlowPort, _ error: FreightError, acked: UInt64? = nil, tellBranch: Bool = false,
        actions: inout [FlowAction]
    ) {
        guard let slot = flows.index(forKey: id), let index = flows.values[slot].pendingBranch(port) else { return }
        func apply(_ flow: inout Flow) -> (acked: UInt64, credit: UInt64)? {
            let held = acked ?? flow.branches[index].ackedOffset
            flow.branches[index].state = .failed(error, acked: held)
            return flow.allBranchesFinished ? nil : flow.upstreamUpdate()
        }
        let branchAcked = flows.values[slot].branches[index].ackedOffset
        let update = apply(&flows.values[slot])
        let upstream = flows.values[slot].upstream
        actions.append(.branchEnded(messageID: id, port: port))
        if tellBranch { actions.append(.send(.abort(id, error, ackedOffset: branchAcked), to: port)) }
        if let update { actions.append(.send(.ack(id, acked: update.acked, credit: update.credit), to: upstream)) }
        finishIfComplete(id, actions: &actions)
    }

    /// An app, an in-process port or a peer is gone: flows it sent are aborted downstream; its branches fail with
    /// `error` and how far they got.
    public mutating func portGone(_ port: FlowPort, error: FreightError, actions: inout [FlowAction]) {
        for id in Array(flows.keys) {
            guard let flow = flows[id] else { continue }
            if flow.upstream == port {
                let gone =
                    switch port {
                    case .session, .local: "the sending app went away"
                    case .peer(let node): "node \(node), which relayed the message, went away"
                    }
                let code: FreightError.Code = port.isLocal ? .senderGone : .nodeGone
                abort(
                    id, FreightError(code, "\(gone) after \(flow.bytesForwarded) of \(flow.length) bytes"),
                    notifyUpstream: false, actions: &actions)
                continue
            }
            while let index = flows[id]?.pendingBranch(port) {
                let acked = flows[id]!.branches[index].ackedOffset
                failBranch(
                    id, port: port,
                    FreightError(error.code, "\(error.message); \(acked) of \(flow.length) bytes acknowledged"),
                    actions: &actions)
            }
        }
    }

    /// Ends a message at this node: every open branch is sent ABORT with how far it got, and upstream too when
    /// `notifyUpstream` (the failure was found here, not told by upstream).
    public mutating func abort(
        _ id: UInt64, _ error: FreightError, notifyUpstream: Bool, actions: inout [FlowAction]
    ) {
        guard let flow = flows[id] else { return }
        failed += 1
        release(flow, failure: error, actions: &actions)
        for branch in flow.branches where branch.isPending {
            actions.append(.send(.abort(id, error, ackedOffset: branch.ackedOffset), to: branch.port))
        }
        if notifyUpstream {
            actions.append(.send(.abort(id, error, ackedOffset: flow.upstreamAcked), to: flow.upstream))
        }
    }

    /// Reports the outcome upstream once every branch has finished, and releases the flow.
    private mutating func finishIfComplete(_ id: UInt64, actions: inout [FlowAction]) {
        guard let flow = flows[id], flow.allBranchesFinished else { return }
        let outcome = flow.outcome(nodeName: name)
        var failure: FreightError?
        switch outcome {
        case .done: delivered += 1
        case .abort(let abort):
            failed += 1
            failure = FreightError(FreightError.Code(rawValue: abort.code), abort.reason)
        default: failed += 1
        }
        release(flow, failure: failure, actions: &actions)
        actions.append(.send(outcome, to: flow.upstream))
        if case .peer = flow.upstream { remember(outcome, of: id, for: flow.upstream) }
    }

    private mutating func remember(_ outcome: Frame, of id: UInt64, for upstream: FlowPort) {
        if recentOutcomes.count >= Limits.outcomesRememberedMax { forgetOldestOutcome() }
        if recentOutcomes.updateValue((upstream, outcome, nowNanos), forKey: id) == nil { recentOrder.append(id) }
    }

    private mutating func forgetOldestOutcome() {
        guard recentHead < recentOrder.count else { return }
        recentOutcomes[recentOrder[recentHead]] = nil
        recentHead += 1
        if recentHead >= Limits.outcomesRememberedMax {
            recentOrder.removeFirst(recentHead)
            recentHead = 0
        }
    }

    private mutating func release(_ flow: Flow, failure: FreightError?, actions: inout [FlowAction]) {
        flows[flow.id] = nil
        reservedBytes -= flow.reservedBytes
        let party = Party(upstream: flow.upstream, header: flow.header)
        if let reserved = reservedByParty[party], reserved > flow.reservedBytes {
            reservedByParty[party] = reserved - flow.reservedBytes
        } else {
            reservedByParty[party] = nil
        }
        if let count = flowsByUpstream[flow.upstream], count > 1 {
            flowsByUpstream[flow.upstream] = count - 1
        } else {
            flowsByUpstream[flow.upstream] = nil
        }
        for branch in flow.branches {
            for target in branch.targets {
                if let load = endpointLoad[target], load > 1 {
                    endpointLoad[target] = load - 1
                } else {
                    endpointLoad[target] = nil
                }
            }
        }
        actions.append(
            .finished(
                FlowEnd(
                    messageID: flow.id, address: flow.header.destination,
                    traceparent: flow.header.traceparent, length: flow.length,
                    bytes: flow.bytesForwarded, startedNanos: flow.startedNanos, endedNanos: nowNanos,
                    failure: failure?.code, reason: failure?.message, resumes: flow.resumes.count,
                    upstream: flow.upstream,
                    branches: flow.branches.map { branch in
                        switch branch.state {
                        case .done(let done):
                            FlowEnd.BranchEnd(
                                port: branch.port, bytes: flow.length, delivered: !done.deliveries.isEmpty)
                        default: FlowEnd.BranchEnd(port: branch.port, bytes: branch.ackedOffset, delivered: false)
                        }
                    })))
    }

    // MARK: Broken links and resume (docs/core.md)

    /// Time passes: flows held for a link, and branches suspended on one, past the hold time fail with the offset
    /// they reached; outcomes remembered past it are forgotten.
    /// Moves the table's clock to `now` without looking for what timed out (``advance(to:actions:)`` does): an owner
    /// says the time as events come, so that a flow's start and end (``FlowEnd``) are as exact as its clock.
    public mutating func observe(now: UInt64) {
        nowNanos = max(nowNanos, now)
    }

    public mutating func advance(to now: UInt64, actions: inout [FlowAction]) {
        nowNanos = max(nowNanos, now)
        let hold = UInt64(configuration.resumeHold.components.seconds) * 1_000_000_000
        let seconds = configuration.resumeHold.components.seconds
        for id in Array(flows.keys) {
            guard let flow = flows[id] else { continue }
            if let lost = flow.upstreamLostNanos, nowNanos &- lost >= hold {
                abort(
                    id,
                    FreightError(
                        .nodeGone,
                        "the link from \(flow.upstream) broke at offset \(flow.upstreamAcked) of \(flow.length) and did not come back within \(seconds) s"
                    ), notifyUpstream: false, actions: &actions)
                continue
            }
            if expireIdle(flow, actions: &actions) { continue }
            for branch in flow.branches {
                guard case .suspended(let since) = branch.state, nowNanos &- since >= hold else { continue }
                failBranch(
                    id, port: branch.port,
                    FreightError(
                        .nodeGone,
                        "the link to \(branch.port) broke at offset \(branch.ackedOffset) of \(flow.length) and did not come back within \(seconds) s"
                    ), actions: &actions)
            }
        }
        while recentHead < recentOrder.count {
            let oldest = recentOrder[recentHead]
            guard let entry = recentOutcomes[oldest] else {
                forgetOldestOutcome()
                continue
            }
            guard nowNanos &- entry.atNanos >= hold else { break }
            forgetOldestOutcome()
        }
    }

    /// No party stalls the others (docs/hardening.md): a message whose upstream has credit and has sent nothing
    /// for the idle time is aborted, its reservation returned; a branch that holds the others back (it granted
    /// least, while another waits for more) and took nothing for the slow-receiver time is cut with `slow
    /// receiver`, and the others go on. True when the flow ended.
    private mutating func expireIdle(_ flow: Flow, actions: inout [FlowAction]) -> Bool {
        let idle = UInt64(configuration.idle.components.seconds) * 1_000_000_000
        let waitingForUpstream =
            flow.upstreamLostNanos == nil && !flow.shared && flow.admittedEnd < flow.upstreamCredit
            && flow.resendAwaited == nil
        if waitingForUpstream, nowNanos &- flow.upstreamProgressNanos >= idle {
            abort(
                flow.id,
                FreightError(
                    .senderGone,
                    "\(flow.upstream) sent no bytes of message \(String(flow.id, radix: 16)) for \(configuration.idle.components.seconds) s (at offset \(flow.admittedEnd) of \(flow.length)); its reservation is returned"
                ), notifyUpstream: true, actions: &actions)
            return true
        }
        let open = flow.branches.filter(\.isOpen)
        guard open.count > 1, let slowest = open.min(by: { $0.creditOffset < $1.creditOffset }),
            slowest.creditOffset < flow.length,
            open.contains(where: { $0.creditOffset > slowest.creditOffset }),
            nowNanos &- slowest.progressNanos >= UInt64(configuration.slowReceiver.components.seconds) * 1_000_000_000
        else { return false }
        failBranch(
            flow.id, port: slowest.port,
            FreightError(
                .receiverGone,
                "slow receiver: \(slowest.port) took no bytes of message \(String(flow.id, radix: 16)) for \(configuration.slowReceiver.components.seconds) s while the other receivers went on; cut at offset \(slowest.ackedOffset) of \(flow.length)"
            ), tellBranch: true, actions: &actions)
        return flows[flow.id] == nil
    }

    /// Every connection the peer sends on broke (its stripes to this node), and the peer resumes: flows from it are
    /// held for it to come back and re-open them (``resume(_:from:actions:)``), until the hold time passes. A flow
    /// whose upstream cannot send again (a detour, docs/wan.md) ends at once: nothing would come to resume it.
    public mutating func upstreamLost(_ peer: FlowPort, actions: inout [FlowAction]) {
        for (id, flow) in flows where flow.upstream == peer && flow.upstreamLostNanos == nil {
            guard flow.upstreamResends else {
                abort(
                    id,
                    FreightError(
                        .nodeGone,
                        "\(peer), which sent message \(String(id, radix: 16)), is unreachable after \(flow.bytesForwarded) of \(flow.length) bytes"
                    ), notifyUpstream: true, actions: &actions)
                continue
            }
            flows[id]!.upstreamLostNanos = nowNanos
        }
    }

    /// Every stripe this node sends on to `peer` broke, and the peer resumes: branches to it are suspended until the
    /// link is back (``linkRestored(_:actions:)``) or the hold time passes; where the upstream cannot send again
    /// they fail as with a node gone.
    /// Nothing this node says reaches the peer now (its credit, its acknowledgements), so flows from it are held
    /// too, whatever its own stripes here look like.
    public mutating func linkLost(_ peer: FlowPort, error: FreightError, actions: inout [FlowAction]) {
        upstreamLost(peer, actions: &actions)
        for id in Array(flows.keys) {
            guard let flow = flows[id] else { continue }
            for index in flow.branches.indices where flow.branches[index].port == peer && flow.branches[index].isOpen {
                if flow.upstreamResends {
                    flows[id]!.branches[index].state = .suspended(sinceNanos: nowNanos)
                    actions.append(.branchRewound(messageID: id, port: peer))
                } else {
                    let acked = flow.branches[index].ackedOffset
                    failBranch(
                        id, port: peer,
                        FreightError(error.code, "\(error.message); \(acked) of \(flow.length) bytes acknowledged"),
                        actions: &actions)
                }
            }
        }
    }

    /// Some stripes of the link to `peer` broke and others stand: the bytes in flight on them are lost, so every live
    /// branch to it has its upstream send again from what the branch acknowledged.
    public mutating func stripeLost(_ peer: FlowPort, actions: inout [FlowAction]) {
        for id in Array(flows.keys) {
            guard let flow = flows[id], let index = flow.openBranch(peer) else { continue }
            var ack = Freight_Wire_V1_Ack()
            ack.messageID = id
            ack.ackedOffset = flow.branches[index].ackedOffset
            ack.creditOffset = flow.branches[index].creditOffset
            ack.resendFrom = flow.branches[index].ackedOffset
            self.ack(ack, from: peer, actions: &actions)
        }
    }

    /// This node's control stripe to `peer` broke, so acknowledgements and outcomes on it may be lost: the latest of
    /// each goes again (acknowledgements are cumulative; a repeated outcome is ignored). A request to send again
    /// that no chunk has answered yet goes again with it: lost, the sender would wait for credit and this node for
    /// bytes, each for ever.
    public mutating func controlLost(_ peer: FlowPort, actions: inout [FlowAction]) {
        // An OPEN to the peer that nothing answered yet may have been lost with the stripe: sent again (a peer that
        // has it answers as to a resume).
        for flow in flows.values {
            for branch in flow.branches where branch.port == peer && branch.isOpen && !branch.heard {
                actions.append(.send(.open(Self.openFrame(flow, branch)), to: peer))
            }
        }
        for flow in flows.values where flow.upstream == peer {
            actions.append(
                .send(
                    .ack(
                        flow.id, acked: flow.upstreamAcked, credit: flow.upstreamCredit,
                        resendFrom: flow.resendAwaited), to: peer))
        }
        for id in recentOrder[recentHead...] {
            if let entry = recentOutcomes[id], entry.upstream == peer { actions.append(.send(entry.frame, to: peer)) }
        }
    }

    /// The link to `peer` is back: every branch suspended on it opens again with OPEN resume; the peer answers
    /// with where its receiver is (``resume(_:from:actions:)``).
    /// Flows from the peer that were held go on, and their latest acknowledgement goes again (it may have been
    /// lost with the link).
    public mutating func linkRestored(_ peer: FlowPort, actions: inout [FlowAction]) {
        // Flows from the peer stay held until it shows it still sends them (a chunk, or its OPEN resume): asked to
        // send again from what this node acknowledged, a peer that still has the message answers with bytes, and
        // one that gave it up (its side's hold time passed first) answers nothing, so the hold here ends it too.
        for (id, flow) in flows where flow.upstream == peer && flow.upstreamLostNanos != nil {
            if flow.upstreamAcked >= flow.length {
                flows[id]!.upstreamLostNanos = nil  // it owes nothing more
            } else {
                flows[id]!.resendAwaited = flow.upstreamAcked
            }
        }
        controlLost(peer, actions: &actions)
        for id in Array(flows.keys) {
            guard let flow = flows[id] else { continue }
            for index in flow.branches.indices where flow.branches[index].port == peer {
                guard case .suspended = flow.branches[index].state else { continue }
                flows[id]!.branches[index].state = .open
                // A branch that never heard from the peer may never have reached it: a plain OPEN, which a peer that
                // has the message answers as a resume, and one that has not opens.
                let branch = flow.branches[index]
                let open = Self.openFrame(flow, branch, resume: branch.heard)
                actions.append(.send(.open(open), to: peer))
            }
        }
    }

    /// OPEN resume from `port`: the message's link broke and is back. The flow held for it goes on, and the sender
    /// is told to send again from what this node acknowledged; the receiving apps are told where it resumed. A
    /// message that ended meanwhile has its outcome sent again; one this node no longer holds is refused.
    /// With `recording` false (an OPEN repeated after a lost control stripe, not a broken link) the offset is not
    /// listed among the message's resumes.
    /// With `mayAdopt`, the owner lets another upstream take the message over (another gateway of the cluster it
    /// came from, docs/gateways.md): it sends the bytes from here on.
    public mutating func resume(
        _ open: Freight_Wire_V1_Open, from port: FlowPort, recording: Bool = true,
        mayAdopt: (Flow) -> Bool = { _ in false }, actions: inout [FlowAction]
    ) {
        let id = open.header.id
        if let flow = flows[id], flow.upstream != port, mayAdopt(flow) { adopt(id, by: port) }
        guard let flow = flows[id], flow.upstream == port else {
            if let entry = recentOutcomes[id], entry.upstream == port {
                actions.append(.send(entry.frame, to: port))
            } else {
                actions.append(
                    .send(
                        .abort(
                            id,
                            FreightError(
                                .nodeGone,
                                "message \(String(id, radix: 16)) is no longer held at node \(name): its hold time passed or the node restarted"
                            )), to: port))
            }
            return
        }
        let offset = flow.upstreamAcked
        flows[id]!.upstreamLostNanos = nil
        if offset < flow.length { flows[id]!.resendAwaited = offset }
        if recording && flow.resumes.count < Limits.resumesRecordedMax { flows[id]!.resumes.append(offset) }
        actions.append(
            .send(.ack(id, acked: offset, credit: flow.upstreamCredit, resendFrom: offset), to: port))
        guard recording else { return }
        var notice = Freight_Wire_V1_Open()
        notice.header = flow.header
        notice.resume = true
        notice.resumedAt = offset
        for branch in flow.branches where branch.isOpen && branch.port.isLocal {
            actions.append(.send(.open(notice), to: branch.port))
        }
    }
}
