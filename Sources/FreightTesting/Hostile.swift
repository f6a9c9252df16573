import Foundation
import FreightCore
import FreightWire

/// A steady stream of checked messages between two apps, run beside an attack: its rate before and during the
/// attack says whether the attack harmed anyone else. `freight send --count` on one node, `freight recv --check` on
/// the other; both stop by themselves (the count is bounded) and by ``stop()``.
public final class CheckedStream: Sendable {
    public let sender: FreightProcess
    public let receiver: FreightProcess

    /// Starts the receiver on `to` and the sender on `from`, and waits until messages flow.
    public static func start(
        _ cluster: ProcessCluster, address: String = "stream/checked", from: String = "n1", to: String = "n2",
        size: String = "256KiB", count: Int = 200_000
    ) async throws -> CheckedStream {
        let receiver = try await cluster.receiver(address, at: to, ["--check"], seenAt: from)
        let sender: FreightProcess
        do {
            sender = try FreightProcess(
                [
                    "send", address, "--size", size, "--count", "\(count)", "--parallel", "1", "--via",
                    cluster.node(from).socket, "--json",
                ], executable: cluster.executable)
        } catch {
            receiver.stop()
            throw error
        }
        let stream = CheckedStream(sender: sender, receiver: receiver)
        do {
            let deadline = ContinuousClock.now + .seconds(20)
            while stream.delivered < 20 {
                guard ContinuousClock.now < deadline, sender.isRunning else {
                    throw FreightError(.internalError, "the checked stream did not start: \(sender.stderr)")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        } catch {
            stream.stop()
            throw error
        }
        return stream
    }

    init(sender: FreightProcess, receiver: FreightProcess) {
        self.sender = sender
        self.receiver = receiver
    }

    /// Messages the sender was told were delivered.
    public var delivered: Int { sender.stdoutLines.count { $0.contains("\"delivered\"") } }

    /// Messages delivered per second over `span` from now.
    public func rate(over span: Duration) async throws -> Double {
        let start = delivered
        let began = ContinuousClock.now
        try await Task.sleep(for: span)
        let seconds =
            Double((ContinuousClock.now - began).components.attoseconds) / 1e18
            + Double((ContinuousClock.now - began).components.seconds)
        return Double(delivered - start) / seconds
    }

    /// The longest time without a delivery over `span` from now, polled every few milliseconds: how long anything
    /// held the stream up (its rate alone hides a short stall and is noisy on a shared machine).
    public func longestGap(over span: Duration) async throws -> Duration {
        let end = ContinuousClock.now + span
        var last = (count: delivered, at: ContinuousClock.now)
        var longest: Duration = .zero
        while ContinuousClock.now < end {
            try await Task.sleep(for: .milliseconds(5))
            let now = ContinuousClock.now
            let count = delivered
            if count != last.count {
                last = (count, now)
            } else {
                longest = max(longest, now - last.at)
            }
        }
        return longest
    }

    /// Lines of the receiver or the sender that say a message failed or did not check.
    public var failures: [String] {
        receiver.stdoutLines.filter { $0.contains("\"checked\":false") || $0.contains("\"failed\"") }
            + sender.stdoutLines.filter { $0.contains("\"failures\":[{") }
    }

    public func stop() {
        sender.stop()
        receiver.stop()
    }
}

/// The highest resident memory of a process while an attack lasts, sampled every 100 ms until ``stop()``.
public final class PeakMemory: Sendable {
    private let sampling: Task<Int, Never>

    /// Starts sampling process `pid`, whose memory was `start` bytes.
    public init(of pid: Int32, from start: Int) {
        sampling = Task {
            var peak = start
            while !Task.isCancelled {
                peak = max(peak, Int(ProcessStats.residentBytes(of: pid)))
                try? await Task.sleep(for: .milliseconds(100))
            }
            return peak
        }
    }

    /// Stops sampling; the peak seen, in bytes.
    public func stop() async -> Int {
        sampling.cancel()
        return await sampling.value
    }
}

/// Connections from strangers, opened by hand: plain blocking sockets from chosen source addresses, so a test can
/// hold thousands of them and see which the node closed.
public enum Strangers {
    /// Opens `count` TCP connections to `host:port`, from the addresses `sources` in turn, and writes `prefix` on
    /// each. Connections the node refused at once count as opened and closed. Returns the descriptors; the caller
    /// closes them (``closeAll(_:)``). A connect that fails on this side (a source port the kernel cannot give, with
    /// earlier tests' connections from the same addresses still in TIME_WAIT) is tried again from another
    /// ephemeral port, at most 3 times.
    public static func open(
        count: Int, host: String, port: Int, sources: [String], prefix: [UInt8]
    ) -> [Int32] {
        var fds: [Int32] = []
        fds.reserveCapacity(count)
        var failures = 0
        var index = 0
        while index < count {
            defer { index += 1 }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { break }
            var timeout = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var source = sockaddr_in()
            source.sin_family = sa_family_t(AF_INET)
            inet_pton(AF_INET, sources[index % sources.count], &source.sin_addr)
            var target = sockaddr_in()
            target.sin_family = sa_family_t(AF_INET)
            target.sin_port = in_port_t(UInt16(port).bigEndian)
            inet_pton(AF_INET, host, &target.sin_addr)
            let connected = withUnsafePointer(to: &source) { sourcePointer in
                withUnsafePointer(to: &target) { targetPointer in
                    sourcePointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sourceAddress in
                        targetPointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { targetAddress in
                            bind(fd, sourceAddress, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                                && connect(fd, targetAddress, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                        }
                    }
                }
            }
            guard connected else {
                close(fd)
                failures += 1
                if failures <= 3 { index -= 1 }
                continue
            }
            if !prefix.isEmpty {
                _ = prefix.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
            fds.append(fd)
        }
        return fds
    }

    /// Writes one byte of a HELLO frame's header on each connection (the header of a control frame that never
    /// completes); returns how many writes the kernel took.
    @discardableResult
    public static func trickle(_ fds: [Int32], byte: UInt8 = 0) -> Int {
        var taken = 0
        for fd in fds {
            var value = byte
            if send(fd, &value, 1, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) == 1 { taken += 1 }
        }
        return taken
    }

    /// How many of `fds` the node has closed (end of file or reset on a read that does not wait).
    public static func closedCount(_ fds: [Int32]) -> Int {
        var closed = 0
        var buffer = [UInt8](repeating: 0, count: 4096)
        for fd in fds {
            while true {
                let read = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                if read > 0 { continue }
                if read == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) { closed += 1 }
                break
            }
        }
        return closed
    }

    /// A TCP socket listening on `host` (port chosen by the kernel) that never accepts: connections to it complete
    /// in the kernel's backlog and then hear nothing. Returns the socket and its port; the caller closes it.
    public static func silentListener(host: String) throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw FreightError(.io, "socket failed") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, host, &address.sin_addr)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 64) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else {
            close(fd)
            throw FreightError(.io, "cannot listen on \(host)")
        }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    /// Runs blocking work (connects, sleeps) on a thread of its own, off the tasks' shared threads. `lowPriority`:
    /// the thread runs at the lowest CPU priority (nice 19), so that on a machine of two cores an attacker stands
    /// for a host elsewhere and takes its CPU from nobody while the node under attack does its share of the work.
    public static func onThread<T: Sendable>(lowPriority: Bool = false, _ body: @escaping @Sendable () -> T) async
        -> T
    {
        await withCheckedContinuation { continuation in
            Thread {
                // On Linux a `who` of 0 names the calling thread alone.
                if lowPriority { setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19) }
                continuation.resume(returning: body())
            }.start()
        }
    }

    public static func closeAll(_ fds: [Int32]) {
        for fd in fds { close(fd) }
    }

    /// The wire-v1 preface.
    public static var preface: [UInt8] { WireV1.preface }
}
