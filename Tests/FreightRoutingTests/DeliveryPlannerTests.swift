import FreightCore
import FreightDirectory
import FreightRouting
import Testing

@Suite struct DeliveryPlannerTests {
    let planner = DeliveryPlanner(localNode: "n1")

    func record(_ node: String, _ id: UInt64, _ pattern: String, group: String? = nil) throws -> EndpointRecord {
        EndpointRecord(key: .init(node: node, id: id), pattern: try AddressPattern(pattern), group: group)
    }

    @Test func everyUngroupedEndpointGetsTheMessage() throws {
        let matches = [try record("n2", 1, "a/b"), try record("n3", 1, "a/**")]
        #expect(planner.plan(matches: matches, load: { _ in 0 }, tieBreak: 0).count == 2)
    }

    @Test func aGroupGetsItOnceAtTheCheapestMember() throws {
        let matches = [
            try record("n2", 1, "a/b", group: "g"), try record("n1", 5, "a/b", group: "g"),
            try record("n3", 1, "a/b", group: "g"),
        ]
        for tie in 0..<5 {
            let plan = planner.plan(matches: matches, load: { _ in 0 }, tieBreak: UInt64(tie))
            #expect(plan.map(\.key) == [.init(node: "n1", id: 5)])
        }
    }

    @Test func thenTheLeastLoadedThenRotation() throws {
        let matches = [try record("n2", 1, "a/b", group: "g"), try record("n3", 1, "a/b", group: "g")]
        let loaded = planner.plan(matches: matches, load: { $0.node == "n2" ? 3 : 0 }, tieBreak: 0)
        #expect(loaded.map(\.key.node) == ["n3"])
        let picks = Set(
            (0..<4).map { planner.plan(matches: matches, load: { _ in 0 }, tieBreak: UInt64($0))[0].key.node })
        #expect(picks == ["n2", "n3"])
    }

    @Test func groupsAreScopedToTheirPattern() throws {
        let matches = [
            try record("n2", 1, "a/b", group: "g"), try record("n3", 1, "a/*", group: "g"), try record("n2", 2, "a/b"),
        ]
        #expect(planner.plan(matches: matches, load: { _ in 0 }, tieBreak: 0).count == 3)
    }
}
