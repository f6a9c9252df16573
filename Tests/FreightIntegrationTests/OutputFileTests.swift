import Foundation
import FreightCore
import FreightTesting
import Testing

/// `freight recv --out`: a body is written under a hidden partial name and takes its own name only when whole, and
/// a write that fails (a full disk) fails the message for both apps with the reason (docs/small-messages-and-files.md).
@Suite(.serialized) struct OutputFileTests {
    static let mebibyte = 1 << 20

    static func files(in folder: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
    }

    static func isPartial(_ name: String) -> Bool { name.hasPrefix(".") && name.hasSuffix(".freight-partial") }

    /// Runs a system command to its end.
    static func system(_ path: String, _ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// While the body arrives only a hidden partial file is in the folder; once delivered, only the whole file
    /// under its own name, checked against its generated pattern.
    @Test func aBodyTakesItsNameOnlyWhenWhole() async throws {
        let cluster = try await ProcessCluster.start(nodes: 2)
        defer { cluster.stop() }
        let out = "\(cluster.directory)/out"
        let recv = try await cluster.receiver(
            "files/whole", at: "n2", ["--out", out, "--count", "1", "--check", "--rate", "64MiB"])
        defer { recv.stop() }
        let send = try FreightProcess(
            ["send", "files/whole", "--size", "192MiB", "--via", cluster.node("n1").socket, "--json"])
        defer { send.stop() }
        var seenPartial = false
        var seenEarly: [String]?
        let deadline = ContinuousClock.now + .seconds(30)
        while send.isRunning, ContinuousClock.now < deadline {
            // A file under its own name is always whole (the sender may still be ending once it was renamed).
            let names = Self.files(in: out)
            if !names.isEmpty {
                let early = names.filter {
                    !Self.isPartial($0)
                        && (try? FileManager.default.attributesOfItem(atPath: "\(out)/\($0)")[.size] as? Int)
                            != 192 * Self.mebibyte
                }
                if !early.isEmpty { seenEarly = seenEarly ?? early }
                seenPartial = seenPartial || names.contains(where: Self.isPartial)
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(seenPartial, "the body was never seen arriving")
        #expect(seenEarly == nil, "a file under its own name that is not whole: \(seenEarly ?? [])")
        #expect(try await send.waitForExit(timeout: .seconds(30)) == 0, "\(send.stderr)")
        #expect(try await recv.waitForExit(timeout: .seconds(30)) == 0, "\(recv.stderr)")
        let received = try #require(recv.jsonLines.first { $0["event"] as? String == "received" })
        #expect(received["checked"] as? Bool == true, "\(received)")
        let names = Self.files(in: out)
        #expect(names.count == 1 && !Self.isPartial(names[0]), "\(names)")
        let size = try FileManager.default.attributesOfItem(atPath: "\(out)/\(names[0])")[.size] as? Int
        #expect(size == 192 * Self.mebibyte)
    }

    /// A sender killed mid-body: the receiver reports the message failed and leaves no file at all, partial or not.
    @Test func aMessageThatFailsLeavesNoFile() async throws {
        let cluster = try await ProcessCluster.start(nodes: 2)
        defer { cluster.stop() }
        let out = "\(cluster.directory)/out"
        let recv = try await cluster.receiver("files/cut", at: "n2", ["--out", out, "--rate", "64MiB"])
        defer { recv.stop() }
        let send = try FreightProcess(["send", "files/cut", "--size", "1GiB", "--via", cluster.node("n1").socket])
        defer { send.stop() }
        let deadline = ContinuousClock.now + .seconds(30)
        while !Self.files(in: out).contains(where: Self.isPartial), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        try await Task.sleep(for: .milliseconds(500))
        #expect(send.isRunning, "the transfer must still be going when the sender dies")
        send.kill(SIGKILL)
        let failed = try await recv.waitForLine(timeout: .seconds(20)) { $0.contains("\"failed\"") }
        #expect(failed.contains("sending app went away"), "\(failed)")
        try await Task.sleep(for: .milliseconds(200))
        #expect(Self.files(in: out).isEmpty, "\(Self.files(in: out))")
        #expect(recv.isRunning, "a failed message does not end the receiver")
    }

    /// A disk too small for the body by less than its last chunk: the write of the last bytes fails, and the
    /// message fails for both apps with the reason (it was not delivered: its DONE leaves only once the receiving
    /// app handled every byte), and no partial file stays.
    @Test func aFullDiskFailsTheMessageForBothAppsWithTheReason() async throws {
        let cluster = try await ProcessCluster.start(nodes: 2)
        defer { cluster.stop() }
        let small = "\(cluster.directory)/small"
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        // 32 MiB less 768 KiB: the last 1 MiB chunk of a 32 MiB body does not fit.
        try #require(try Self.system("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=32000k", "tmpfs", small]) == 0)
        defer { _ = try? Self.system("/usr/bin/umount", [small]) }
        let recv = try await cluster.receiver("files/full", at: "n2", ["--out", small, "--count", "1"])
        defer { recv.stop() }
        let sent = try await FreightProcess.run([
            "send", "files/full", "--size", "32MiB", "--via", cluster.node("n1").socket,
        ])
        #expect(sent.status != 0, "a body the disk could not hold was reported delivered: \(sent.stdout)")
        #expect(sent.stderr.contains("No space left on device"), "\(sent.stderr)")
        #expect(try await recv.waitForExit(timeout: .seconds(20)) != 0)
        let failed = recv.jsonLines.first { $0["event"] as? String == "failed" }
        #expect((failed?["reason"] as? String)?.contains("No space left on device") == true, "\(recv.stdoutLines)")
        #expect(Self.files(in: small).isEmpty, "\(Self.files(in: small))")
    }
}
