import ArgumentParser
import CFreightSystem
import Foundation
import FreightCore
import FreightWAN
import Synchronization

/// `freight-wan`: a packet-level WAN between network namespaces (docs/wan.md). Each link is a TUN device in each of
/// two namespaces; this process reads the IP packets one side sends and writes them to the other side after the
/// link's delay, through its rate limit and bounded queue, with its loss and reordering; it can cut a link and
/// restore it. The devices go when the process ends.
@main
struct WANCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "freight-wan",
        abstract: "A packet-level WAN between network namespaces: delay, rate, bounded queue, loss, reordering, cuts.",
        subcommands: [Run.self, Control.self],
        defaultSubcommand: Run.self)
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Makes the links and carries their packets until stopped (SIGINT or SIGTERM).")

    @Option(
        name: .customLong("link"),
        help: "NAMESPACE=ADDRESS,NAMESPACE=ADDRESS: one link, a TUN device wanN in each namespace (repeatable).")
    var links: [String]

    @Option(help: "A Unix socket to take commands on (see `freight-wan control`).")
    var control: String?

    @Option(help: "The devices' MTU.")
    var mtu: Int32 = 65000

    @Option(help: "Seed of the random loss and reordering.")
    var seed: UInt64 = 1

    @Argument(help: "Settings of every link and direction: rate=1gbit rtt=50ms queue=4MiB loss=0.1% reorder=1%.")
    var settings: [String] = []

    func run() throws {
        var initial = WANSettings()
        do { try initial.apply(settings) } catch { throw ValidationError(error.message) }
        var made: [EmulatedLink] = []
        for (index, text) in links.enumerated() {
            let sides = text.split(separator: ",").map { $0.split(separator: "=", maxSplits: 1).map(String.init) }
            guard sides.count == 2, sides.allSatisfy({ $0.count == 2 }) else {
                throw ValidationError("--link takes NAMESPACE=ADDRESS,NAMESPACE=ADDRESS, not '\(text)'")
            }
            let device = "wan\(index)"
            var fds: [Int32] = []
            for (side, other) in [(sides[0], sides[1]), (sides[1], sides[0])] {
                let path = side[0].hasPrefix("/") ? side[0] : "/var/run/netns/\(side[0])"
                let fd = freight_tun_open(path, device, side[1], other[1], mtu)
                guard fd >= 0 else {
                    throw ValidationError(
                        "cannot make TUN device \(device) with \(side[1]) in \(path): \(String(cString: strerror(errno)))"
                    )
                }
                fds.append(fd)
            }
            made.append(
                EmulatedLink(
                    index: index, name: text, a: fds[0], b: fds[1], settings: initial, seed: seed &+ UInt64(index)))
        }
        guard !made.isEmpty else { throw ValidationError("give at least one --link") }
        for link in made { link.start() }
        if let control { try ControlServer(path: control, links: made).start() }
        print("ready: \(made.count) link(s), \(initial.description)")
        fflush(nil)
        while true { sleep(3600) }
    }
}

struct Control: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sends a command to a running freight-wan and prints its answer.",
        discussion: """
            Commands: `stats` (counters of every link and direction, JSON); `set [link=N] SETTINGS...` \
            (rate=… rtt=… delay=… queue=… loss=… reorder=… reorder-delay=…); `cut [link=N]`; `restore [link=N]`.
            """)

    @Argument(help: "The control socket of a running freight-wan.")
    var socket: String

    @Argument(help: "The command and its words.")
    var words: [String]

    func run() throws {
        do {
            print(try WANControl.send(words.joined(separator: " "), to: socket))
        } catch {
            throw ValidationError(error.message)
        }
    }
}

/// A link's two directions, each carried by a thread of its own.
final class EmulatedLink: Sendable {
    let index: Int
    let name: String
    let directions: [Direction]

    init(index: Int, name: String, a: Int32, b: Int32, settings: WANSettings, seed: UInt64) {
        self.index = index
        self.name = name
        directions = [
            Direction(from: a, to: b, settings: settings, seed: seed &* 2),
            Direction(from: b, to: a, settings: settings, seed: seed &* 2 &+ 1),
        ]
    }

    func start() {
        for direction in directions {
            let thread = Thread { direction.carry() }
            thread.name = "wan\(index)"
            thread.start()
        }
    }

    func change(_ words: [String]) throws(FreightError) {
        for direction in directions { try direction.change(words) }
    }

    var stats: String {
        let parts = zip(["a_to_b", "b_to_a"], directions).map { "\"\($0)\":\($1.stats)" }
        return
            "{\"link\":\(index),\"settings\":\"\(directions[0].settings.description)\",\(parts.joined(separator: ","))}"
    }
}

/// One direction of a link: reads packets from `from`, writes them to `to` when the path lets them out.
final class Direction: Sendable {
    let from: Int32
    let to: Int32
    let path: Mutex<WANPath<[UInt8]>>

    init(from: Int32, to: Int32, settings: WANSettings, seed: UInt64) {
        self.from = from
        self.to = to
        path = Mutex(WANPath(settings: settings, seed: seed))
    }

    var settings: WANSettings { path.withLock { $0.settings } }

    func change(_ words: [String]) throws(FreightError) {
        var settings = self.settings
        try settings.apply(words)
        path.withLock { $0.apply(settings) }
    }

    var stats: String {
        let c = path.withLock { $0.counters }
        return
            "{\"packets_in\":\(c.packetsIn),\"bytes_in\":\(c.bytesIn),\"packets_out\":\(c.packetsOut),\"bytes_out\":\(c.bytesOut),\"dropped_queue\":\(c.droppedQueue),\"dropped_loss\":\(c.droppedLoss),\"dropped_cut\":\(c.droppedCut),\"reordered\":\(c.reordered)}"
    }

    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    func carry() {
        _ = fcntl(from, F_SETFL, fcntl(from, F_GETFL) | O_NONBLOCK)
        var buffer = [UInt8](repeating: 0, count: 65536)
        var due: [[UInt8]] = []
        while true {
            let next = path.withLock { $0.nextDeparture }
            let now = Self.now()
            var timeout: Int32 = 100
            if let next { timeout = next <= now ? 0 : Int32(min(100, (next - now + 999_999) / 1_000_000)) }
            var poll = pollfd(fd: from, events: Int16(POLLIN), revents: 0)
            _ = Glibc.poll(&poll, 1, timeout)
            if poll.revents & Int16(POLLIN) != 0 {
                for _ in 0..<256 {
                    let count = buffer.withUnsafeMutableBytes { read(from, $0.baseAddress, $0.count) }
                    guard count > 0 else { break }
                    let packet = Array(buffer[0..<count])
                    let arrived = Self.now()
                    path.withLock { $0.arrive(packet, bytes: count, at: arrived) }
                }
            }
            let departed = Self.now()
            path.withLock { $0.depart(until: departed) { due.append($0) } }
            for packet in due { _ = packet.withUnsafeBytes { write(to, $0.baseAddress, $0.count) } }
            due.removeAll(keepingCapacity: true)
        }
    }
}

/// Commands over a Unix socket, one line each way per connection.
struct ControlServer: Sendable {
    let path: String
    let links: [EmulatedLink]

    func start() throws {
        let listener = freight_unix_listen(path, 16, 0)
        guard listener >= 0 else {
            throw ValidationError("cannot listen on \(path): \(String(cString: strerror(errno)))")
        }
        let thread = Thread { [self] in
            while true {
                let connection = freight_accept(listener)
                guard connection >= 0 else { continue }
                _ = freight_set_receive_timeout(connection, 2000)
                let line = WANControl.readLine(connection, max: WANControl.commandBytesMax)
                let answer = handle(line) + "\n"
                _ = answer.withCString { write(connection, $0, strlen($0)) }
                close(connection)
            }
        }
        thread.start()
    }

    func handle(_ line: String) -> String {
        var words = line.split(separator: " ").map(String.init)
        guard let command = words.first else { return "error: empty command" }
        words.removeFirst()
        var chosen = links
        if let which = words.firstIndex(where: { $0.hasPrefix("link=") }) {
            guard let index = Int(words[which].dropFirst(5)), links.indices.contains(index) else {
                return "error: no link \(words[which].dropFirst(5))"
            }
            chosen = [links[index]]
            words.remove(at: which)
        }
        do throws(FreightError) {
            switch command {
            case "stats":
                return "{\"links\":[\(chosen.map(\.stats).joined(separator: ","))]}"
            case "set":
                for link in chosen { try link.change(words) }
            case "cut", "restore":
                for link in chosen { try link.change([command]) }
            default:
                return "error: unknown command '\(command)' (stats, set, cut, restore)"
            }
        } catch {
            return "error: \(error.message)"
        }
        return
            "ok: \(chosen.map { "link \($0.index): \($0.directions[0].settings.description)" }.joined(separator: "; "))"
    }
}
