import FreightCore
import FreightDirectory

/// What a watcher of endpoints is told.
public enum EndpointEvent: Sendable {
    case added(EndpointRecord)
    case removed(EndpointRecord)
    /// Every endpoint that existed when the watch began has been reported.
    case synced
}

extension NodeEngine {
    /// Endpoints overlapping `pattern` as they appear and go away: first those known now, then `synced`, then
    /// changes. A watcher that falls `Limits.watchBacklogMax` events behind has its stream ended with an error.
    public func watch(_ pattern: AddressPattern) async throws -> AsyncThrowingStream<EndpointEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream<EndpointEvent, any Error>.makeStream(
            bufferingPolicy: .bufferingOldest(Limits.watchBacklogMax))
        let id = try await eventLoop.submit { [self] () -> UInt64 in
            let id = nextWatcherID
            nextWatcherID += 1
            for record in index.overlapping(pattern) { continuation.yield(.added(record)) }
            continuation.yield(.synced)
            watchers[id] = (pattern, continuation)
            index.onChange = { [unowned self] change in endpointsChanged(change) }
            return id
        }.get()
        continuation.onTermination = { [weak self] _ in
            guard let self else { return }
            eventLoop.execute {
                self.watchers[id] = nil
                if self.watchers.isEmpty { self.index.onChange = nil }
            }
        }
        return stream
    }

    func endpointsChanged(_ change: EndpointIndex.Change) {
        let (record, event): (EndpointRecord, EndpointEvent) =
            switch change {
            case .added(let record): (record, .added(record))
            case .removed(let record): (record, .removed(record))
            }
        for (id, watcher) in watchers where watcher.pattern.overlaps(record.pattern) {
            if case .dropped = watcher.continuation.yield(event) {
                watchers[id] = nil
                watcher.continuation.finish(
                    throwing: FreightError(
                        .resourceExhausted,
                        "the watch fell \(Limits.watchBacklogMax) changes behind; watch again"))
            }
        }
        if watchers.isEmpty { index.onChange = nil }
    }
}
