import Foundation
import FreightCore
import FreightDirectory
import FreightEtcd
import FreightWire
import Testing

/// How the etcd directory writes and reads its keys: round trips, prefix ranges, and records it must not trust.
@Suite struct EtcdLayoutTests {
    let layout = EtcdLayout(cluster: "prod")

    @Test func functionsRoundTripOnNoLease() throws {
        let record = FunctionRecord(
            address: try Address("tools/crc"), digest: String(repeating: "0f", count: 32), moduleBytes: 2189,
            maxInstances: 4, config: "", version: 77, deployedBy: "n2", name: "checksum")
        let key = layout.functionKey(record.address)
        #expect(String(decoding: key, as: UTF8.self) == "/freight/prod/functions/tools/crc")
        #expect(layout.decode(key: key, value: try layout.functionValue(record)) == .function(record))
        #expect(layout.functionAddress(from: key) == record.address)
        // A value for another address, or one that is not a record, is not trusted.
        let other = layout.functionKey(try Address("tools/other"))
        #expect(layout.decode(key: other, value: try layout.functionValue(record)) == nil)
        #expect(layout.decode(key: key, value: Data([0xff, 0x01])) == nil)
    }

    @Test func endpointsAndNodesRoundTrip() throws {
        let record = EndpointRecord(
            key: EndpointKey(node: "n7", id: 42), pattern: try AddressPattern("llm/*/3"), group: "decoders", app: "kv")
        let key = layout.endpointKey(record.key)
        #expect(String(decoding: key, as: UTF8.self) == "/freight/prod/endpoints/n7/42")
        #expect(layout.decode(key: key, value: try layout.endpointValue(record)) == .endpoint(record))
        #expect(layout.endpointKey(from: key) == record.key)

        let nodeKey = layout.nodeKey("n7")
        let node = NodeRecord(
            name: "n7", listen: try NodeAddress("127.0.0.7:7400"), incarnation: 9, transports: ["tcp"],
            rails: [try NodeAddress("198.18.0.7:7400"), try NodeAddress("198.18.1.7:7400")],
            topology: Topology(
                gpus: [
                    .init(
                        index: 0, model: "H100", numa: 0, pcieSwitch: "sw0", nvlinkDomain: "rack-1",
                        nvlinkGbitPerSecond: 3600)
                ],
                nics: [.init(name: "mlx5_0", address: "198.18.0.7", rail: 0, pcieSwitch: "sw0", gbitPerSecond: 400)]))
        let value = try layout.nodeValue(node)
        #expect(layout.decode(key: nodeKey, value: value) == .node(node))
        // A record that breaks a limit is skipped, not trusted.
        var bad = node.wire
        bad.rails = Array(repeating: "198.18.0.7:7400", count: Limits.railsMax + 1)
        #expect(layout.decode(key: nodeKey, value: try bad.serializedData()) == nil)
        // A topology that breaks one is dropped; the node stays.
        var odd = node.wire
        odd.topology.nics.append(odd.topology.nics[0])
        #expect(
            layout.decode(key: nodeKey, value: try odd.serializedData())
                == .node(
                    NodeRecord(
                        name: "n7", listen: node.listen, incarnation: 9, transports: ["tcp"], rails: node.rails)))
        #expect(layout.nodeName(from: nodeKey) == "n7")
    }

    @Test func prefixRangeEndsAfterEveryKeyOfThePrefix() {
        let end = EtcdLayout.rangeEnd(of: layout.prefix)
        #expect(String(decoding: end, as: UTF8.self) == "/freight/prod0")
        for key in [layout.nodeKey("a"), layout.endpointKey(EndpointKey(node: "z", id: .max))] {
            #expect(key.lexicographicallyPrecedes(end) && !key.lexicographicallyPrecedes(layout.prefix))
        }
        #expect(EtcdLayout.rangeEnd(of: Data([0x61, 0xFF])) == Data([0x62]))
        #expect(EtcdLayout.rangeEnd(of: Data([0xFF])) == Data([0]))
    }

    @Test func untrustworthyRecordsAreSkipped() throws {
        let good = try layout.endpointValue(
            EndpointRecord(key: EndpointKey(node: "n1", id: 1), pattern: try AddressPattern("a/b")))
        let cases: [(String, Data)] = [
            ("/freight/prod/endpoints/N1/1", good),  // not a node name
            ("/freight/prod/endpoints/n1/x", good),  // not an id
            ("/freight/prod/endpoints/n1/1/2", good),  // too deep
            ("/freight/other/endpoints/n1/1", good),  // another cluster
            ("/freight/prod/endpoints/n1/1", Data([0xFF, 0x01, 0x02])),  // not protobuf
            ("/freight/prod/nodes/n1", good),  // an endpoint value under a node key
            ("/freight/prod/something/else", good),
        ]
        for (key, value) in cases {
            #expect(layout.decode(key: Data(key.utf8), value: value) == nil, "\(key)")
        }
        // A pattern that does not parse is refused too.
        var bad = Freight_Wire_V1_Endpoint()
        bad.pattern = "Not A Pattern"
        #expect(layout.decode(key: Data("/freight/prod/endpoints/n1/1".utf8), value: try bad.serializedData()) == nil)
    }

    /// The largest record the limits allow still fits one control frame (mesh gossip sends records whole).
    @Test func theLargestNodeRecordFitsAControlFrame() throws {
        let name = String(repeating: "x", count: Limits.topologyNameBytesMax)
        let topology = Topology(
            gpus: (0..<Limits.topologyGPUsMax).map {
                .init(
                    index: $0, model: name, numa: 1023, pcieSwitch: name, nvlinkDomain: name,
                    nvlinkGbitPerSecond: 123_456.789)
            },
            nics: (0..<Limits.topologyNICsMax).map {
                .init(
                    name: "\($0)" + name.dropFirst(2), address: name, rail: 1023, pcieSwitch: name, numa: 1023,
                    gbitPerSecond: 123_456.789)
            })
        try topology.validate()
        let record = NodeRecord(
            name: String(repeating: "n", count: 64), listen: try NodeAddress("[fd00::1]:65535"), incarnation: .max,
            transports: ["tcp", "unix", "shared-memory"],
            rails: try (0..<Limits.railsMax).map { try NodeAddress("[fd00::\($0)]:65535") }, topology: topology)
        let bytes = try record.wire.serializedBytes() as [UInt8]
        #expect(bytes.count < Limits.controlFrameBytesMax - 1024, "\(bytes.count) bytes")
        #expect(try NodeRecord(wire: Freight_Wire_V1_Member(serializedBytes: bytes)) == record)
    }
}
