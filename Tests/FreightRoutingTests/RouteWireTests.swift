import FreightCore
import FreightRouting
import FreightWire
import Testing

/// ROUTES frames (docs/wire-protocol.md): route advertisements on the wire, split under the control frame limit and
/// checked where they arrive.
@Suite struct RouteWireTests {
    static func route(_ pattern: String, _ path: [String], cost: UInt64 = 7) -> ClusterRoute {
        ClusterRoute(pattern: try! AddressPattern(pattern), origin: path.last!, path: path, cost: cost)
    }

    @Test func advertisementsGoAndComeBackWhole() throws {
        let advertisement = RouteAdvertisement(
            announced: [Self.route("ckpt/eu/**", ["b", "c"]), Self.route("llm/*/3", ["b"], cost: 0)],
            withdrawn: [RouteKey(try AddressPattern("old/**"), origin: "d")])
        let frames = advertisement.wireFrames()
        #expect(frames.count == 1)
        #expect(try RouteAdvertisement(wire: frames[0]) == advertisement)
        // A keepalive is one empty frame.
        #expect(RouteAdvertisement().wireFrames().count == 1)
        #expect(try RouteAdvertisement(wire: RouteAdvertisement().wireFrames()[0]).isEmpty)
    }

    @Test func aLargeTableIsSplitUnderTheControlFrameLimit() throws {
        let announced = (0..<20_000).map {
            Self.route("tenant-\($0)/models/**", ["b", "c", "d"], cost: UInt64($0))
        }
        let withdrawn = (0..<5_000).map { RouteKey(try! AddressPattern("gone-\($0)/**"), origin: "e") }
        let frames = RouteAdvertisement(announced: announced, withdrawn: withdrawn).wireFrames()
        #expect(frames.count > 1)
        var back = RouteAdvertisement()
        for frame in frames {
            let encoded = try FrameEncoder.encode(.routes(frame))
            #expect(encoded.readableBytes <= Limits.controlFrameBytesMax + WireV1.frameHeaderBytes)
            let part = try RouteAdvertisement(wire: frame)
            back.announced += part.announced
            back.withdrawn += part.withdrawn
        }
        #expect(back.announced == announced)
        #expect(back.withdrawn == withdrawn)
    }

    @Test func badEntriesAreRefusedNamingWhy() {
        var badPattern = Freight_Wire_V1_Routes()
        badPattern.announced = [
            .with {
                $0.pattern = "a/**/b"; $0.origin = "C"; $0.path = ["C"]
            }
        ]
        var badCluster = Freight_Wire_V1_Routes()
        badCluster.announced = [
            .with {
                $0.pattern = "a/**"; $0.origin = "C D"; $0.path = ["C D"]
            }
        ]
        var longPath = Freight_Wire_V1_Routes()
        longPath.announced = [
            .with {
                $0.pattern = "a/**"; $0.origin = "Z"; $0.path = (0...Limits.clusterPathMax).map { "c\($0)" }
            }
        ]
        var badWithdrawal = Freight_Wire_V1_Routes()
        badWithdrawal.withdrawn = [
            .with {
                $0.pattern = ""; $0.origin = "C"
            }
        ]
        for frame in [badPattern, badCluster, longPath, badWithdrawal] {
            #expect(throws: FreightError.self) { try RouteAdvertisement(wire: frame) }
        }
    }
}
