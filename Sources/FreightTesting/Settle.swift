/// Waits until a counter stops moving: how backpressure tests look at a bound. Sleeping a fixed time and then
/// reading the counter lets a slow machine pass with no flow control at all (it simply had not got far yet); waiting
/// until nothing has moved for `quiet` means the sender really is held, and only then is its bound checked.
/// Returns the settled value, or nil when it was still moving at `timeout`.
public func settled<T: Equatable & Sendable>(
    quiet: Duration = .milliseconds(500), timeout: Duration = .seconds(30), _ read: () async throws -> T
) async throws -> T? {
    let deadline = ContinuousClock.now + timeout
    var last = try await read()
    var since = ContinuousClock.now
    while ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(25))
        let now = try await read()
        if now != last {
            last = now
            since = ContinuousClock.now
        } else if ContinuousClock.now - since >= quiet {
            return now
        }
    }
    return nil
}
