import FreightCore
import FreightDirectory
import FreightTransport

/// The apps attached to this node, and which of them are not being read until the outputs their bytes go to drain.
/// Loop-confined, like the sessions it holds.
struct AppSessions {
    private(set) var byID: [UInt64: AppSession] = [:]
    /// App sessions not being read until the outputs they wait on drain, by the session's connection id.
    private var paused: [UInt64: (input: FrameConnection, waitingOn: Set<UInt64>)] = [:]

    subscript(id: UInt64) -> AppSession? { byID[id] }

    var all: Dictionary<UInt64, AppSession>.Values { byID.values }

    mutating func add(_ session: AppSession) { byID[session.id] = session }

    @discardableResult
    mutating func remove(_ id: UInt64) -> AppSession? { byID.removeValue(forKey: id) }

    /// The session whose descriptor link names `token`.
    func session(token: UInt64) -> AppSession? { byID.values.first { $0.token == token } }

    /// The session `connection` belongs to.
    func session(on connection: FrameConnection) -> AppSession? {
        byID[connection.id].flatMap { $0.connection === connection ? $0 : nil }
    }

    /// An app that sends faster than a branch takes its bytes stops being read until the full outputs drain, so
    /// what a relay holds stays within the write water marks (and in cache) rather than growing to the message's
    /// window. Only app sessions are paused: a peer's stripe carries many messages, and one slow branch must not
    /// stall them.
    mutating func pause(_ input: FrameConnection, until outputs: Set<UInt64>) {
        guard !outputs.isEmpty else { return }
        if paused[input.id] == nil { input.setReading(false) }
        paused[input.id, default: (input, [])].waitingOn.formUnion(outputs)
    }

    /// `output` can take bytes again: apps waiting on it alone are read again.
    mutating func drained(_ output: FrameConnection) {
        guard !paused.isEmpty else { return }
        for (id, entry) in paused where entry.waitingOn.contains(output.id) {
            let waiting = entry.waitingOn.subtracting([output.id])
            if waiting.isEmpty {
                paused[id] = nil
                entry.input.setReading(true)
            } else {
                paused[id]?.waitingOn = waiting
            }
        }
    }

    /// `connection` closed: it waits on nothing, and nothing waits on it any more.
    mutating func closed(_ connection: FrameConnection) {
        paused[connection.id] = nil
        for (id, entry) in paused where entry.waitingOn.contains(connection.id) {
            paused[id] = nil
            entry.input.setReading(true)
        }
    }
}

/// This node's own endpoints, registered by its apps and its in-process sinks, and the port that delivers to each.
/// The index holds them too, beside every other node's; this is where they are owned.
struct LocalEndpoints {
    let nodeName: String
    private var entries: [UInt64: (record: EndpointRecord, port: Port)] = [:]
    /// Each endpoint's pattern as text, for delivery reports (made once: small messages need it each).
    private var addresses: [UInt64: String] = [:]
    private var nextID: UInt64 = 1

    init(nodeName: String) { self.nodeName = nodeName }

    subscript(id: UInt64) -> (record: EndpointRecord, port: Port)? { entries[id] }

    /// The pattern endpoint `id` registered, as text.
    func address(of id: UInt64) -> String? { addresses[id] }

    var count: Int { entries.count }
    var records: [EndpointRecord] { entries.values.map(\.record) }

    /// A new endpoint on `pattern`, served by `port`.
    mutating func add(
        pattern: AddressPattern, group: String?, app: String, port: Port, route: RemoteRoute? = nil
    ) -> EndpointRecord {
        let record = EndpointRecord(
            key: EndpointKey(node: nodeName, id: nextID), pattern: pattern, group: group, app: app, route: route)
        nextID += 1
        entries[record.key.id] = (record, port)
        addresses[record.key.id] = pattern.description
        return record
    }

    /// Replaces what an endpoint of this node says of itself (a gateway's route whose path or cost changed).
    mutating func update(_ record: EndpointRecord, port: Port) {
        guard entries[record.key.id] != nil else { return }
        entries[record.key.id] = (record, port)
        addresses[record.key.id] = record.pattern.description
    }

    @discardableResult
    mutating func remove(_ id: UInt64) -> EndpointRecord? {
        addresses[id] = nil
        return entries.removeValue(forKey: id)?.record
    }
}
