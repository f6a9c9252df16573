import FreightCore
import FreightDirectory
import FreightWire

/// A message that moves to another gateway mid-way (docs/gateways.md, "Resume through another gateway"): the node
/// that sent it to a gateway that went away moves the branch to another gateway of its cluster that reaches the same
/// cluster (``reroute(_:from:to:actions:)``), and the far cluster's gateway that held the message lets the new
/// gateway's link take it over (``adopt(_:by:)``, through ``resume(_:from:recording:mayAdopt:actions:)``).
extension FlowTable {
    /// Moves the suspended branch of message `id` on `port` to `branch` (another gateway's port) and opens it there
    /// with resume: the far side answers with where its receiver is, and the upstream sends again from there. True
    /// when the branch moved.
    @discardableResult
    public mutating func reroute(
        _ id: UInt64, from port: FlowPort, to branch: Flow.Branch, actions: inout [FlowAction]
    ) -> Bool {
        guard let flow = flows[id],
            let index = flow.branches.firstIndex(where: {
                guard $0.port == port, case .suspended = $0.state else { return false }
                return true
            }),
            !flow.branches.contains(where: { $0.port == branch.port && $0.isPending })
        else { return false }
        let old = flow.branches[index]
        var moved = branch
        // What the old way acknowledged stays acknowledged; credit comes from the new way's answer.
        moved.ackedOffset = old.ackedOffset
        moved.creditOffset = old.ackedOffset
        moved.state = .open
        moved.progressNanos = nowNanos
        for target in old.targets {
            if let load = endpointLoad[target], load > 1 {
                endpointLoad[target] = load - 1
            } else {
                endpointLoad[target] = nil
            }
        }
        for target in moved.targets { endpointLoad[target, default: 0] += 1 }
        flows[id]!.branches[index] = moved
        // The old way may still stand (a gateway whose own link closed): it lets the message go.
        actions.append(
            .send(
                .abort(id, FreightError(.cancelled, "message moved to \(moved.port)"), ackedOffset: old.ackedOffset),
                to: port))
        actions.append(.send(.open(Self.openFrame(flows[id]!, moved, resume: true)), to: moved.port))
        return true
    }

    /// The gateway that branch `port` of message `id` goes to no longer reaches the branch's cluster (its link there
    /// closed, and its routes left the directory): the branch is suspended as for a broken link, to move to another
    /// gateway at once (``reroute(_:from:to:actions:)``). Only where the upstream sends again; true when suspended.
    @discardableResult
    public mutating func suspend(_ id: UInt64, port: FlowPort, actions: inout [FlowAction]) -> Bool {
        guard let flow = flows[id], flow.upstreamResends, let index = flow.openBranch(port) else { return false }
        flows[id]!.branches[index].state = .suspended(sinceNanos: nowNanos)
        actions.append(.branchRewound(messageID: id, port: port))
        return true
    }

    /// `port` takes message `id` over as its upstream: what the old upstream reserved and sent counts against the
    /// new one, and its chunks pass the gate of a resumed message (``ResumeGate``).
    mutating func adopt(_ id: UInt64, by port: FlowPort) {
        guard let flow = flows[id], flow.upstream != port else { return }
        let reserved = flow.reservedBytes
        let old = Party(upstream: flow.upstream, header: flow.header)
        let new = Party(upstream: port, header: flow.header)
        if let held = reservedByParty[old], held > reserved {
            reservedByParty[old] = held - reserved
        } else {
            reservedByParty[old] = nil
        }
        reservedByParty[new, default: 0] += reserved
        if let count = flowsByUpstream[flow.upstream], count > 1 {
            flowsByUpstream[flow.upstream] = count - 1
        } else {
            flowsByUpstream[flow.upstream] = nil
        }
        flowsByUpstream[port, default: 0] += 1
        flows[id]!.upstream = port
        if flow.upstreamAcked < flow.length { flows[id]!.gate = .resending(from: flow.upstreamAcked) }
    }
}
