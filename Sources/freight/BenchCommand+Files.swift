import Foundation
import FreightClient
import FreightCore
import FreightTesting
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

extension BenchCommand {
    /// Sources larger than this are sparse files (every page the kernel's zero page): two copies of a file that
    /// size, source and output, would not fit in the memory of the machines this runs on when the folder is tmpfs.
    static let sparseSourceBytes: Int64 = 4 << 30

    /// File to file through two nodes (docs/small-messages-and-files.md): an app on n1 sends a file of `--folder`
    /// (the node reads it with `sendfile`), an app on n2 writes it to a file of the same folder (`recv --out`'s
    /// path: a partial file renamed when whole), one message at a time; and the same file to an app that reads and
    /// drops it (the sending side alone). Beside them, in the same run: `dd` writing as many bytes into the same
    /// folder (what the folder takes in), and app to app from memory (the fabric's rate).
    func fileBench(
        _ fabric: InProcessFabric, sizes: [Int64], totalBytes: Int64, chunkBytes: Int, windowBytes: Int,
        report: (Result) -> Void
    ) async throws {
        let base = folder ?? (FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory())
        let work = "\(base)/freight-bench-files-\(getpid())"
        guard mkdir(work, 0o700) == 0 else {
            throw FreightError(.io, "cannot create \(work): \(String(cString: strerror(errno)))")
        }
        defer { try? FileManager.default.removeItem(atPath: work) }
        let receiver = try await FreightClient.connect(
            to: fabric.socket(1), label: "bench-file-rx", windowBytes: windowBytes)
        let sender = try await FreightClient.connect(to: fabric.socket(0), label: "bench-file-tx")
        defer {
            Task {
                await sender.close()
                await receiver.close()
            }
        }
        for size in sizes {
            let count = Int(max(1, totalBytes / size))
            let source = "\(work)/source.bin"
            try writeSource(source, size: size)
            defer { unlink(source) }
            // dd, file to file, dd again, in a row: each writes into pages the one before just freed; the best
            // of three rounds of each (one past 4 GiB). On a VM whose host takes back memory the guest freed a while
            // ago, a page written for the first time in a while costs microseconds, for dd as for anyone
            // (docs/small-messages-and-files.md), and a single round measures mostly that.
            var dd: [Double] = []
            var files: [Result] = []
            for round in 0..<(size > Self.sparseSourceBytes ? 1 : 3) {
                dd.append(try ddRate(into: "\(work)/dd.bin", size: size))
                files.append(
                    try await sendFile(
                        fabric, source, size: size, count: count, chunkBytes: chunkBytes,
                        into: "\(work)/received.bin", round: round, receiver: receiver, sender: sender))
            }
            dd.append(try ddRate(into: "\(work)/dd.bin", size: size))
            let file = files.max { $0.megabytesPerSecond < $1.megabytesPerSecond }!
            let fromFile = try await sendFile(
                fabric, source, size: size, count: count, chunkBytes: chunkBytes, into: nil, round: 0,
                receiver: receiver, sender: sender)
            let app = try await appToApp(
                fabric, size: size, count: count, parallel: 1, chunkBytes: chunkBytes, windowBytes: windowBytes)
            report(fromFile)
            report(file)
            report(app)
            if !self.output.json {
                let vsApp = fromFile.megabytesPerSecond / app.megabytesPerSecond * 100
                let vsDD = file.megabytesPerSecond / dd.max()! * 100
                let spread = { (rates: [Double]) in
                    "\(rates.min()!.formatted(decimals: 0))–\(rates.max()!.formatted(decimals: 0)) MB/s"
                }
                printLine(
                    "file \(ByteCount.format(size))\(size > Self.sparseSourceBytes ? " (sparse source)" : ""): from a file \(vsApp.formatted(decimals: 0))% of app to app; file to file \(vsDD.formatted(decimals: 0))% of dd into \(base), best against best (file to file \(spread(files.map(\.megabytesPerSecond))), dd \(spread(dd)))"
                )
            }
        }
    }

    /// `count` messages of the file `source` from an app of n1 to an app of n2, one at a time, which writes each to
    /// the file `into` (removed once whole, as the next comes) or, without one, reads and drops it.
    private func sendFile(
        _ fabric: InProcessFabric, _ source: String, size: Int64, count: Int, chunkBytes: Int, into output: String?,
        round: Int, receiver: FreightClient, sender: FreightClient
    ) async throws -> Result {
        let address = "bench/file/\(output == nil ? "drain" : "file")/\(size)/\(round)"
        let subscription = try await receiver.receive(address)
        try await fabric.waitForEndpoints(try Address(address), count: 1)
        let receiving = Task {
            var received = 0
            for try await message in subscription {
                if let output {
                    _ = try await message.write(toFile: output)
                    unlink(output)
                } else {
                    _ = try await message.drain()
                }
                received += 1
                if received == count { break }
            }
        }
        let cpu = ProcessStats.cpuSeconds()
        let started = ContinuousClock.now
        for _ in 0..<count {
            let delivery = try await sender.send(
                to: address, body: .file(path: source), options: SendOptions(chunkBytes: chunkBytes))
            guard delivery.failures.isEmpty else {
                throw FreightError(.io, "file bench: \(delivery.failures[0].error.message)")
            }
        }
        try await receiving.value
        return Result(
            path: output == nil ? "file>app" : "file", size: size, messages: count, seconds: seconds(since: started),
            cpuSeconds: ProcessStats.cpuSeconds() - cpu)
    }

    /// The source file: the size's generated pattern, or a sparse file past ``sparseSourceBytes``.
    private func writeSource(_ path: String, size: Int64) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw FreightError(.io, "cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        if size > Self.sparseSourceBytes {
            guard ftruncate(fd, off_t(size)) == 0 else { throw FreightError(.io, "cannot size \(path)") }
            return
        }
        let block = 1 << 20
        var buffer = [UInt8](repeating: 0, count: block)
        var offset: Int64 = 0
        while offset < size {
            let count = Int(min(Int64(block), size - offset))
            let written = buffer.withUnsafeMutableBytes { raw in
                PatternFill.fill(UnsafeMutableRawBufferPointer(rebasing: raw[..<count]), seed: 17, offset: offset)
                return pwrite(fd, raw.baseAddress!, count, off_t(offset))
            }
            guard written == count else { throw FreightError(.io, "cannot write \(path)") }
            offset += Int64(count)
        }
    }

    /// `dd if=/dev/zero of=PATH bs=1M count=N`'s rate in MB/s (the file removed after).
    private func ddRate(into path: String, size: Int64) throws -> Double {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/dd")
        process.arguments = [
            "if=/dev/zero", "of=\(path)", "bs=1M", "count=\(max(1, size >> 20))", "status=none",
        ]
        let started = ContinuousClock.now
        try process.run()
        process.waitUntilExit()
        let elapsed = seconds(since: started)
        unlink(path)
        guard process.terminationStatus == 0 else { throw FreightError(.io, "dd into \(path) failed") }
        return ByteCount.megabytesPerSecond(bytes: max(1, size >> 20) << 20, seconds: elapsed)
    }
}
