import Foundation
import FreightCore
import Synchronization

/// What `freight recv --summary` counts: messages and bytes received and messages failed, printed once a second
/// and as totals at the end, in place of a line per message (which, at tens of thousands of small messages a
/// second, costs the receiver more than the messages do).
final class Tally: Sendable {
    private let messages = Atomic<Int>(0)
    private let bytes = Atomic<UInt64>(0)
    private let failures = Atomic<Int>(0)
    private let started = ContinuousClock.now
    /// What the last line reported, and when: each line says what arrived since the one before.
    private let last = Mutex<(messages: Int, bytes: UInt64, failures: Int, at: ContinuousClock.Instant)>(
        (0, 0, 0, ContinuousClock.now))

    func received(bytes count: UInt64) {
        messages.add(1, ordering: .relaxed)
        bytes.add(count, ordering: .relaxed)
    }

    func failed() { failures.add(1, ordering: .relaxed) }

    /// A line a second while anything arrived in it, until cancelled.
    func reportEverySecond(json: Bool) async {
        while (try? await Task.sleep(for: .seconds(1))) != nil {
            report(json: json, final: false)
        }
    }

    /// Prints what arrived since the last line (nothing when nothing did), or with `final` the totals.
    func report(json: Bool, final: Bool) {
        let now = ContinuousClock.now
        let count = messages.load(ordering: .relaxed)
        let total = bytes.load(ordering: .relaxed)
        let failed = failures.load(ordering: .relaxed)
        let since = last.withLock { last in
            defer { last = (count, total, failed, now) }
            return last
        }
        let (newMessages, newBytes, newFailures) =
            final
            ? (count, total, failed) : (count - since.messages, total - since.bytes, failed - since.failures)
        guard final || newMessages > 0 || newFailures > 0 else { return }
        let seconds = Self.seconds(now - (final ? started : since.at))
        let rate = seconds > 0 ? Double(newMessages) / seconds : 0
        let megabytes = seconds > 0 ? Double(newBytes) / seconds / 1e6 : 0
        if json {
            printJSON([
                "event": final ? "total" : "summary", "messages": newMessages, "bytes": newBytes,
                "failed": newFailures, "seconds": seconds, "messages_per_second": rate, "mbps": megabytes,
            ])
        } else {
            let what = final ? "in all" : "in the last \(seconds.formatted(decimals: 1)) s"
            printLine(
                "received \(newMessages) messages (\(ByteCount.format(Int64(newBytes)))) \(what): \(Int(rate.rounded())) messages/s, \(megabytes.formatted(decimals: 1)) MB/s\(newFailures > 0 ? ", \(newFailures) failed" : "")"
            )
        }
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
