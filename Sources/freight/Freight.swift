import ArgumentParser
import Foundation
import FreightClient
import FreightCore
import FreightDirectory
import FreightTransport

@main
struct Freight: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "freight",
        abstract: "A message fabric for AI platforms: large messages, by name, over the fastest path.",
        subcommands: [
            NodeCommand.self, SendCommand.self, RecvCommand.self, ResolveCommand.self, StatusCommand.self,
            TopCommand.self, DemoCommand.self, BenchCommand.self, TopologyCommand.self, CertCommand.self,
            FunctionCommand.self, GPUCommand.self,
        ]
    )
}

/// Where commands find their node: `--via`, else `$FREIGHT_NODE`, else the default socket.
struct ViaOption: ParsableArguments {
    @Option(
        name: .customLong("via"),
        help: "The node: a Unix socket path or HOST:PORT (default $FREIGHT_NODE or /tmp/freight.sock).")
    var via: String?
    @Option(
        name: .customLong("shared-memory"),
        help: "Bodies through shared memory with the node (Unix socket only): auto, off or required.")
    var sharedMemoryMode = "auto"
    @Option(
        name: .customLong("shared-pool"),
        help:
            "Each half of this app's shared-memory pool (default 64MiB; freight send takes up to 256MiB for large messages): an app has at most its send pool in flight, and a WAN needs its window."
    )
    var sharedPool: String?

    /// The secret of the node's access-list token this app presents ($FREIGHT_TOKEN; apps over TCP need one when
    /// the node has an access list). Kept out of the command line, where other users of the machine could read it.
    var token: String? { ProcessInfo.processInfo.environment["FREIGHT_TOKEN"].flatMap { $0.isEmpty ? nil : $0 } }

    func address() throws -> NodeAddress {
        let text = via ?? ProcessInfo.processInfo.environment["FREIGHT_NODE"] ?? defaultSocketPath
        return try NodeAddress(text)
    }

    /// What `--shared-memory` and `--shared-pool` ask for; `sending` bytes at once (a sender's messages in flight)
    /// size the send half when `--shared-pool` is not given: 64 MiB up to 256 MiB, so that an app's pool does not cap
    /// the window a WAN needs (docs/wan.md, "Windows").
    func sharedMemory(sending: Int64 = 0) throws -> SharedMemory {
        var receive = Limits.sharedPoolHalfBytesDefault
        var send = Int(min(max(sending, Int64(receive)), 4 * Int64(Limits.sharedPoolHalfBytesDefault)))
        if let sharedPool {
            let bytes = try ByteCount.parse(sharedPool)
            guard bytes >= Int64(Limits.chunkBytesMin), bytes <= Int64(Limits.sharedPoolBytesMax) else {
                throw FreightError(
                    .invalidArgument,
                    "--shared-pool \(sharedPool): \(Limits.chunkBytesMin) bytes to \(ByteCount.format(Int64(Limits.sharedPoolBytesMax)))"
                )
            }
            (send, receive) = (Int(bytes), Int(bytes))
        }
        switch sharedMemoryMode {
        case "auto": return .automatic(sendBytes: send, receiveBytes: receive)
        case "off": return .off
        case "required": return .required(sendBytes: send, receiveBytes: receive)
        default: throw FreightError(.invalidArgument, "--shared-memory \(sharedMemoryMode): use auto, off or required")
        }
    }
}

let defaultSocketPath = "/tmp/freight.sock"

struct OutputOptions: ParsableArguments {
    @Flag(name: .customLong("json"), help: "Print one JSON object per line.")
    var json = false
}

/// Prints a one-line reason on stderr and exits non-zero: the contract of every command.
func fail(_ error: any Error) -> Never {
    let message: String
    if let error = error as? FreightError {
        message = error.message
    } else {
        message = "\(error)"
    }
    FileHandle.standardError.write(Data((message + "\n").utf8))
    exit(1)
}

func printLine(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}

func printJSON(_ object: [String: Any]) {
    guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
    FileHandle.standardOutput.write(data + Data("\n".utf8))
}
