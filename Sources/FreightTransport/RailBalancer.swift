/// Spreads a link's chunks over its rails by measured throughput (docs/topology.md). Pure: time and the byte
/// counters come in as values.
///
/// Each rail's rate is what its connections drained (bytes the kernel took) per second over the samples in which it
/// had a queue the whole time, smoothed; a rail never measured keeps its nominal rate (the NIC's), or the mean of
/// the others. The next chunk goes to the rail with the earliest expected completion, (queued + chunk) / rate, so
/// a rail twice as fast carries twice the bytes and a shaped or congested rail gets less.
public struct RailBalancer: Sendable {
    /// Shortest interval a rate is measured over.
    public static let sampleNanos: UInt64 = 50_000_000
    /// Weight of a new sample in the smoothed rate.
    public static let smoothing = 0.25
    /// Rate assumed for a rail nobody stated or measured, bytes per second (only the ratio between rails matters).
    public static let unknownBytesPerSecond = 1e9

    /// Bytes per second per rail, measured where it has been.
    public private(set) var rates: [Double]
    public private(set) var measured: [Bool]
    private var lastDrained: [UInt64]
    private var lastBusy: [Bool]
    private var lastNanos: UInt64?

    /// - Parameter nominalBytesPerSecond: per rail; 0 where unknown.
    public init(nominalBytesPerSecond: [Double]) {
        let known = nominalBytesPerSecond.filter { $0 > 0 }
        let fallback = known.isEmpty ? Self.unknownBytesPerSecond : known.reduce(0, +) / Double(known.count)
        rates = nominalBytesPerSecond.map { $0 > 0 ? $0 : fallback }
        measured = Array(repeating: false, count: nominalBytesPerSecond.count)
        lastDrained = Array(repeating: 0, count: nominalBytesPerSecond.count)
        lastBusy = Array(repeating: false, count: nominalBytesPerSecond.count)
    }

    /// Takes a sample of each rail's drained-bytes counter and queue (nil: the rail has no connection).
    public mutating func observe(nowNanos: UInt64, drained: [UInt64], pending: [Int?]) {
        precondition(drained.count == rates.count && pending.count == rates.count)
        guard let last = lastNanos else {
            start(nowNanos, drained, pending)
            return
        }
        guard nowNanos >= last &+ Self.sampleNanos else { return }
        let seconds = Double(nowNanos - last) / 1e9
        for rail in rates.indices {
            let busy = (pending[rail] ?? 0) > 0
            // A counter that went back belongs to a new connection: no sample this time.
            if lastBusy[rail], busy, drained[rail] >= lastDrained[rail] {
                let rate = Double(drained[rail] - lastDrained[rail]) / seconds
                if rate > 0 {
                    rates[rail] = measured[rail] ? rates[rail] * (1 - Self.smoothing) + rate * Self.smoothing : rate
                    measured[rail] = true
                }
            }
        }
        start(nowNanos, drained, pending)
    }

    private mutating func start(_ now: UInt64, _ drained: [UInt64], _ pending: [Int?]) {
        lastNanos = now
        lastDrained = drained
        lastBusy = pending.map { ($0 ?? 0) > 0 }
    }

    /// The rail expected to finish a chunk of `chunkBytes` first; nil when no rail is connected.
    public func choose(pending: [Int?], chunkBytes: Int) -> Int? {
        var best: (rail: Int, seconds: Double)?
        for (rail, queued) in pending.enumerated() {
            guard let queued else { continue }
            let seconds = Double(queued + chunkBytes) / rates[rail]
            if best == nil || seconds < best!.seconds { best = (rail, seconds) }
        }
        return best?.rail
    }
}
