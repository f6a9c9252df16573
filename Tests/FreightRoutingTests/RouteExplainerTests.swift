import FreightCore
import FreightDirectory
import FreightRouting
import Testing

/// The explainer alone: views and measured rates in, plans out.
@Suite struct RouteExplainerTests {
    let explainer = RouteExplainer(
        localNode: "dgx0", capabilities: .thisBuild,
        views: ["dgx0": Simulated.dgxH100("dgx0", number: 1), "dgx1": Simulated.dgxH100("dgx1", number: 2)],
        measuredGbitPerSecond: ["dgx1": [0: 12.5, 3: 99]])

    @Test func measuredRatesApplyOnlyTowardsThePeerTheyWereMeasuredOn() {
        let towards = explainer.views(towards: "dgx1")["dgx0"]!.rails
        #expect(towards[0].measuredGbitPerSecond == 12.5 && towards[3].measuredGbitPerSecond == 99)
        #expect(towards[1].measuredGbitPerSecond == nil)
        #expect(explainer.views(towards: "dgx2")["dgx0"]!.rails[0].measuredGbitPerSecond == nil)
    }

    @Test func oneRailAlignedPlanPerEndpointAndGPUsInRange() throws {
        let endpoints = (1...3).map {
            EndpointRecord(key: EndpointKey(node: "dgx1", id: UInt64($0)), pattern: try! AddressPattern("kv/\($0)"))
        }
        let plans = try explainer.explain(bytes: 1 << 30, fromGPU: 3, toGPU: nil, endpoints: endpoints)
        #expect(plans.map(\.endpoint.key.id) == [1, 2, 3])
        #expect(plans.allSatisfy { $0.plan.paths.contains { $0.rail == 3 } }, "GPU 3 leaves by its own rail")
        #expect(throws: FreightError.self) {
            try explainer.explain(bytes: 1, fromGPU: Limits.topologyIndexMax, toGPU: nil, endpoints: endpoints)
        }
    }

    @Test func plannedRailsNarrowOnlyWhenThePlannerChoseSome() {
        #expect(explainer.plannedRails(gpu: 3, to: "dgx1", bytes: 1 << 30, railCount: 8) == [3])
        #expect(explainer.plannedRails(gpu: 3, to: "dgx1", bytes: 1 << 30, railCount: 1) == nil, "one rail: all")
        #expect(explainer.plannedRails(gpu: 3, to: "nowhere", bytes: 1 << 30, railCount: 8) == nil)
        #expect(explainer.plannedRails(gpu: -1, to: "dgx1", bytes: 1 << 30, railCount: 8) == nil)
    }
}
