import FreightCore
import FreightDirectory
import FreightTransport
import FreightWire
import NIOPosix
import Testing

@testable import FreightNode

/// A status reply is one control frame however large the cluster: peers past what fits are counted, not listed.
@Suite struct StatusLimitTests {
    @Test func aThousandPeersFitOneFrame() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let engine = NodeEngine(
            configuration: NodeConfiguration(
                name: "n0", listen: try NodeAddress("127.0.0.1:0"), rails: ["127.0.0.1"]),
            eventLoop: group.next())
        try await engine.eventLoop.submit {
            for index in 0..<Limits.membersMax {
                let record = NodeRecord(
                    name: "node-with-a-long-name-\(index)",
                    listen: .tcp(host: "198.18.\(index / 250).\(index % 250)", port: 7400),
                    incarnation: UInt64(index + 1),
                    rails: (0..<Limits.railsMax).map { .tcp(host: "198.19.\($0).\(index % 250)", port: 7400) })
                engine.learn(record)
            }
        }.get()
        let status = try await engine.statusSnapshot()
        let bytes = try status.serializedBytes() as [UInt8]
        #expect(bytes.count <= Limits.controlFrameBytesMax)
        #expect(status.peers.count + Int(status.peersOmitted) == Limits.membersMax)
        #expect(status.peersOmitted > 0 && status.peers.count > 100)
        // Listed in name order.
        #expect(status.peers.map(\.name) == status.peers.map(\.name).sorted())
        try await group.shutdownGracefully()
    }
}
