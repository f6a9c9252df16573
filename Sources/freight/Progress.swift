import Foundation
import FreightCore
import Synchronization

/// A progress bar on stderr for transfers that take over a second, shown only when stderr is a terminal.
final class ProgressBar: Sendable {
    private let total: UInt64
    private let label: String
    private let done = Atomic<UInt64>(0)
    private let started = ContinuousClock.now
    private let enabled: Bool

    init(total: UInt64, label: String) {
        self.total = total
        self.label = label
        self.enabled = isatty(2) != 0
    }

    func update(_ bytes: UInt64) { done.store(bytes, ordering: .relaxed) }

    /// Redraws every 200 ms until the task is cancelled, then clears the line.
    func run() async {
        guard enabled else { return }
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(200))
            let elapsed = ContinuousClock.now - started
            guard elapsed > .seconds(1), !Task.isCancelled else { continue }
            draw(elapsed: elapsed)
        }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }

    private func draw(elapsed: Duration) {
        let bytes = done.load(ordering: .relaxed)
        let fraction = total == 0 ? 1 : min(1, Double(bytes) / Double(total))
        let width = 30
        let filled = Int(fraction * Double(width))
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let rate = ByteCount.megabytesPerSecond(bytes: Int64(bytes), seconds: seconds)
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        let line =
            "\r\(label) [\(bar)] \(Int(fraction * 100))% \(ByteCount.format(Int64(bytes)))/\(ByteCount.format(Int64(total))) \(rate.formatted(decimals: 0)) MB/s"
        FileHandle.standardError.write(Data(line.utf8))
    }
}
