import FreightCore
import Testing

/// The semaphore that bounds a function's instances at a node: a limit that holds, waiters served in order, a
/// limit that moves, and a close that frees every waiter.
@Suite struct SlotsTests {
    @Test func theLimitHoldsAndAReleaseLetsTheNextOneIn() async throws {
        let slots = Slots(limit: 2)
        #expect(await slots.acquire())
        #expect(await slots.acquire())
        let third = Task { await slots.acquire() }
        try await Task.sleep(for: .milliseconds(50))
        #expect(slots.taken == 2, "a third slot was taken over the limit")
        slots.release()
        #expect(await third.value)
        #expect(slots.taken == 2)
    }

    @Test func aRaisedLimitWakesWaitersAndALoweredOneHoldsNewcomers() async throws {
        let slots = Slots(limit: 1)
        #expect(await slots.acquire())
        let waiting = Task { await slots.acquire() }
        try await Task.sleep(for: .milliseconds(50))
        slots.setLimit(2)
        #expect(await waiting.value)
        slots.setLimit(1)
        slots.release()
        let late = Task { await slots.acquire() }
        try await Task.sleep(for: .milliseconds(50))
        #expect(slots.taken == 1, "a slot was taken while the lowered limit was reached")
        slots.release()
        #expect(await late.value)
    }

    @Test func closingFailsWaitersAndLaterAcquires() async throws {
        let slots = Slots(limit: 1)
        #expect(await slots.acquire())
        let waiting = Task { await slots.acquire() }
        try await Task.sleep(for: .milliseconds(50))
        slots.close()
        #expect(await waiting.value == false)
        #expect(await slots.acquire() == false)
    }

    @Test func aCancelledWaiterGivesUpItsPlace() async throws {
        let slots = Slots(limit: 1)
        #expect(await slots.acquire())
        let cancelled = Task { await slots.acquire() }
        try await Task.sleep(for: .milliseconds(50))
        cancelled.cancel()
        #expect(await cancelled.value == false)
        slots.release()
        #expect(await slots.acquire(), "the slot went to the cancelled waiter")
    }
}
