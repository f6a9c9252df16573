import FreightCore
import FreightDirectory
import Testing

/// Function records (docs/functions.md, "Function endpoints"): the newer record of an address wins everywhere,
/// removals stay until the table needs room, records from the network are checked, and placement keeps the
/// cluster within a function's instances.
@Suite struct FunctionRecordTests {
    static let digest = String(repeating: "ab", count: 32)

    static func record(_ address: String, version: UInt64, by node: String = "n1", removed: Bool = false) throws
        -> FunctionRecord
    {
        FunctionRecord(
            address: try Address(address), digest: digest, moduleBytes: 100, maxInstances: 2, config: "x=1",
            version: version, deployedBy: node, removed: removed, name: "checksum")
    }

    @Test func theNewerRecordWinsInAnyOrder() throws {
        let old = try Self.record("tools/crc", version: 1)
        let new = try Self.record("tools/crc", version: 2, by: "n0")
        let removal = try Self.record("tools/crc", version: 3, removed: true)
        for order in [[old, new, removal], [removal, new, old], [new, removal, old]] {
            var table = FunctionTable()
            for record in order { table.merge(record) }
            #expect(table[try Address("tools/crc")] == nil, "a removal lost to an older record")
            #expect(table.live.isEmpty)
        }
        var table = FunctionTable()
        let tookNew = table.merge(new)
        let tookOld = table.merge(old)
        #expect(tookNew && !tookOld, "an older record replaced a newer one")
        #expect(table[try Address("tools/crc")]?.deployedBy == "n0")
        // The same nanosecond on two nodes: the greater node name wins on both.
        var a = FunctionTable()
        var b = FunctionTable()
        let fromN1 = try Self.record("tools/crc", version: 5, by: "n1")
        let fromN2 = try Self.record("tools/crc", version: 5, by: "n2")
        a.merge(fromN1)
        a.merge(fromN2)
        b.merge(fromN2)
        b.merge(fromN1)
        #expect(a.live == b.live && a.live.first?.deployedBy == "n2")
    }

    @Test func aFullTableDropsItsOldestRemovalFirstAndKeepsLiveFunctions() throws {
        var table = FunctionTable()
        for index in 0..<Limits.functionsMax - 1 { table.merge(try Self.record("f/\(index)", version: 10)) }
        table.merge(try Self.record("gone/a", version: 1, removed: true))
        #expect(table.records.count == Limits.functionsMax)
        let tookNew = table.merge(try Self.record("f/new", version: 11))
        #expect(tookNew, "a removal should have made room")
        #expect(table.records[try Address("gone/a")] == nil)
        let tookMore = table.merge(try Self.record("f/more", version: 12))
        #expect(!tookMore, "a full table of live functions took one more")
        #expect(table.live.count == Limits.functionsMax)
    }

    @Test func recordsFromTheNetworkAreChecked() throws {
        let good = try Self.record("tools/crc", version: 1)
        #expect(try FunctionRecord(wire: good.wire) == good)
        var wire = good.wire
        wire.digest = "not-hex"
        #expect(throws: FreightError.self) { try FunctionRecord(wire: wire) }
        wire = good.wire
        wire.maxInstances = 0
        #expect(throws: FreightError.self) { try FunctionRecord(wire: wire) }
        wire = good.wire
        wire.address = "tools/*"
        #expect(throws: FreightError.self) { try FunctionRecord(wire: wire) }
        wire = good.wire
        wire.config = String(repeating: "c", count: Limits.functionConfigBytesMax + 1)
        #expect(throws: FreightError.self) { try FunctionRecord(wire: wire) }
        #expect(FunctionRecord.reservedRefusal(try Address("_fn/deploy")) != nil)
        #expect(FunctionRecord.reservedRefusal(try Address("_inbox/n1/x")) != nil)
        #expect(FunctionRecord.reservedRefusal(try Address("tools/crc")) == nil)
    }

    @Test func placementKeepsTheClusterWithinItsInstances() throws {
        let hosts = (1...5).map { "n\($0)" }
        for instances in [1, 2, 3, 5, 7, 64] {
            for name in ["tools/crc", "a", "llm/tokenize/7"] {
                let address = try Address(name)
                let shares = hosts.map {
                    FunctionPlacement.share(of: $0, address: address, maxInstances: instances, hosts: hosts)
                }
                #expect(shares.reduce(0, +) == instances, "\(name) × \(instances): \(shares)")
                #expect(shares.filter { $0 > 0 }.count == min(instances, hosts.count))
                #expect(shares.max()! - shares.filter { $0 > 0 }.min()! <= 1, "uneven: \(shares)")
                // Every node computes the same answer whatever order it lists the hosts in.
                let reversed = hosts.map {
                    FunctionPlacement.share(
                        of: $0, address: address, maxInstances: instances, hosts: hosts.reversed())
                }
                #expect(reversed == shares)
            }
        }
        #expect(FunctionPlacement.share(of: "n9", address: try Address("a"), maxInstances: 3, hosts: hosts) == 0)
    }

    /// Rendezvous hashing: a host that leaves moves only the single-instance functions it served.
    @Test func aHostLeavingMovesOnlyWhatItServed() throws {
        let hosts = (1...6).map { "n\($0)" }
        let remaining = Array(hosts.dropLast())
        var moved = 0
        for index in 0..<200 {
            let address = try Address("f/\(index)")
            let before = hosts.first {
                FunctionPlacement.share(of: $0, address: address, maxInstances: 1, hosts: hosts) == 1
            }
            let after = remaining.first {
                FunctionPlacement.share(of: $0, address: address, maxInstances: 1, hosts: remaining) == 1
            }
            if before != after {
                #expect(before == "n6", "f/\(index) moved from \(before ?? "-") though n6 left")
                moved += 1
            }
        }
        #expect(moved > 10 && moved < 70, "n6 served \(moved) of 200 functions")
    }
}
