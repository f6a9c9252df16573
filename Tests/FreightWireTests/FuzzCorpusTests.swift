import Foundation
import FreightFuzzing
import Testing

/// The bounded slice of fuzzing in the test command: every input of the committed corpus (Fuzz/corpus, grown by
/// scripts/fuzz.sh, crashes found kept there once fixed) goes through the same targets libFuzzer runs, which trap on
/// a crash or a broken limit.
@Suite struct FuzzCorpusTests {
    static var corpus: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Fuzz/corpus")
    }

    @Test func everyCorpusInputPassesTheFuzzTargets() throws {
        let files = try FileManager.default.contentsOfDirectory(at: Self.corpus, includingPropertiesForKeys: nil)
        #expect(files.count >= 13, "the corpus has the seeds it was committed with")
        for file in files {
            FuzzTargets.run(Array(try Data(contentsOf: file)))
        }
    }
}
