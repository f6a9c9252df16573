import Foundation
import Testing

/// Runs a seeded simulation over the seeds the environment names: `<prefix>_SEED=N` replays one, `<prefix>_SEEDS=N`
/// runs N (scripts/simulate.sh), else `slice` (the test command's bounded share). Records the first three failures,
/// each with its seed and how to replay it.
func runSeeds(_ prefix: String, slice: Int, salt: UInt64, suite: String, _ run: (UInt64) -> String?) {
    let environment = ProcessInfo.processInfo.environment
    let seeds: [UInt64]
    if let one = environment["\(prefix)_SEED"].flatMap(UInt64.init) {
        seeds = [one]
    } else {
        let count = environment["\(prefix)_SEEDS"].flatMap(Int.init) ?? slice
        seeds = (0..<UInt64(count)).map { $0 &* salt &+ 1 }
    }
    var failures = 0
    for seed in seeds where failures < 3 {
        guard let problem = run(seed) else { continue }
        failures += 1
        Issue.record("seed \(seed): \(problem) (replay: \(prefix)_SEED=\(seed) swift test --filter \(suite))")
    }
}
