import Synchronization

/// A counting semaphore for tasks whose limit may change (a function's share of instances moves as nodes come and go):
/// `acquire` waits while `limit` are taken, in arrival order.
public final class Slots: Sendable {
    private struct State {
        var limit: Int
        var taken = 0
        var waiting: [(id: UInt64, continuation: CheckedContinuation<Bool, Never>)] = []
        var nextID: UInt64 = 0
        var closed = false
    }

    private let state: Mutex<State>

    public init(limit: Int) { state = Mutex(State(limit: limit)) }

    public var taken: Int { state.withLock { $0.taken } }

    /// Takes a slot; false when the slots were closed (or the task cancelled) meanwhile.
    public func acquire() async -> Bool {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let answer: Bool? = state.withLock { state in
                    if state.closed || Task.isCancelled { return false }
                    if state.taken < state.limit, state.waiting.isEmpty {
                        state.taken += 1
                        return true
                    }
                    state.waiting.append((id, continuation))
                    return nil
                }
                if let answer { continuation.resume(returning: answer) }
            }
        } onCancel: {
            let found = state.withLock { state -> CheckedContinuation<Bool, Never>? in
                guard let index = state.waiting.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiting.remove(at: index).continuation
            }
            found?.resume(returning: false)
        }
    }

    public func release() {
        let next = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            state.taken -= 1
            return takeWaiting(&state)
        }
        next?.resume(returning: true)
    }

    public func setLimit(_ limit: Int) {
        var woken: [CheckedContinuation<Bool, Never>] = []
        state.withLock { state in
            state.limit = limit
            while let next = takeWaiting(&state) { woken.append(next) }
        }
        for continuation in woken { continuation.resume(returning: true) }
    }

    /// Fails every waiter and every later `acquire`.
    public func close() {
        let waiting = state.withLock { state in
            state.closed = true
            defer { state.waiting = [] }
            return state.waiting.map(\.continuation)
        }
        for continuation in waiting { continuation.resume(returning: false) }
    }

    private func takeWaiting(_ state: inout State) -> CheckedContinuation<Bool, Never>? {
        guard state.taken < state.limit, !state.waiting.isEmpty else { return nil }
        state.taken += 1
        return state.waiting.removeFirst().continuation
    }
}
