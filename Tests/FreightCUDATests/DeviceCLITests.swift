import Foundation
import FreightCore
import FreightTesting
import Testing

/// Device bodies through the CLI, as a user tries them (docs/gpu.md): `freight send --device` puts a generated body
/// in GPU memory and sends it from there; `freight recv --gpu 0` reads it in place. Against the stand-in driver
/// (host memory behind the driver API, not a GPU), with a node process on 127.0.0.151.
@Suite(.serialized)
struct DeviceCLITests {
    static func node(andAnother: Bool = false, n1Arguments: [String] = []) async throws -> ProcessCluster {
        let cluster = try ProcessCluster()
        do {
            let n1 = try await cluster.startNode(
                name: "n1", host: "127.0.0.151", join: [], extraArguments: n1Arguments)
            if andAnother {
                try await cluster.startNode(name: "n2", host: "127.0.0.152", join: [n1.listen])
                try await cluster.waitForMesh()
            }
            return cluster
        } catch {
            cluster.stop()
            throw error
        }
    }

    static func objects(_ lines: [String]) -> [[String: Any]] {
        lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// Two 24 MiB bodies from GPU memory reach a receiver that opens GPU 0 in its GPU's memory, byte for byte the
    /// generated pattern; the sender's report names the receiver.
    @Test func aDeviceBodySentFromTheCLIArrivesInGPUMemory() async throws {
        let driver = try StandInCUDA.library()
        let cluster = try await Self.node()
        defer { cluster.stop() }
        let recv = try await cluster.receiver(
            "gpu/cli", at: "n1", ["--gpu", "0", "--cuda-driver", driver, "--check", "--count", "2"])
        defer { recv.stop() }
        let send = try await FreightProcess.run([
            "send", "gpu/cli", "--size", "24MiB", "--device", "--cuda-driver", driver, "--count", "2", "--json",
            "--via", cluster.node("n1").socket,
        ])
        #expect(send.status == 0, "\(send.stderr) \(send.stdout)")
        let delivered = Self.objects(send.stdout).filter { $0["event"] as? String == "delivered" }
        #expect(delivered.count == 2, "\(send.stdout)")
        #expect(delivered.allSatisfy { ($0["failures"] as? [Any])?.isEmpty == true }, "\(send.stdout)")
        #expect(try await recv.waitForExit(timeout: .seconds(60)) == 0, "\(recv.stderr)")
        let received = Self.objects(recv.stdoutLines).filter { $0["event"] as? String == "received" }
        #expect(received.count == 2, "\(recv.stdoutLines)")
        for message in received {
            #expect(message["gpu"] as? String == "handed-over", "\(message)")
            #expect(message["checked"] as? Bool == true, "\(message)")
            #expect(message["bytes"] as? Int == 24 << 20)
        }
    }

    /// A receiver that did not name the GPU gets the device body staged through host memory, every byte the
    /// generated pattern; a receiver that names it gets a second one in place.
    @Test func aReceiverThatDoesNotOpenTheGPUGetsTheBodyStaged() async throws {
        let driver = try StandInCUDA.library()
        let cluster = try await Self.node()
        defer { cluster.stop() }
        let recv = try await cluster.receiver("gpu/host", at: "n1", ["--check", "--count", "1"])
        defer { recv.stop() }
        let staged = try await FreightProcess.run([
            "send", "gpu/host", "--size", "20MiB", "--device", "--cuda-driver", driver, "--via",
            cluster.node("n1").socket,
        ])
        #expect(staged.status == 0, "\(staged.stderr)")
        #expect(try await recv.waitForExit(timeout: .seconds(30)) == 0, "\(recv.stderr)")
        let received = Self.objects(recv.stdoutLines).first { $0["event"] as? String == "received" }
        #expect(received?["checked"] as? Bool == true, "\(recv.stdoutLines)")
        #expect(received?["bytes"] as? Int == 20 << 20)
    }

    /// Between two nodes a device body is staged: GPU → the sender's pool → the link → the receiver's pool → its
    /// GPU, where `recv --gpu` reads it back byte for byte.
    @Test func aDeviceBodyToAnotherNodeIsStagedIntoItsGPU() async throws {
        let driver = try StandInCUDA.library()
        let cluster = try await Self.node(andAnother: true)
        defer { cluster.stop() }
        let recv = try await cluster.receiver(
            "gpu/far", at: "n2", ["--gpu", "0", "--cuda-driver", driver, "--check", "--count", "1"])
        defer { recv.stop() }
        let sent = try await FreightProcess.run([
            "send", "gpu/far", "--size", "40MiB", "--device", "--cuda-driver", driver, "--via",
            cluster.node("n1").socket,
        ])
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(try await recv.waitForExit(timeout: .seconds(60)) == 0, "\(recv.stderr)")
        let received = Self.objects(recv.stdoutLines).first { $0["event"] as? String == "received" }
        #expect(received?["gpu"] as? String == "staged", "\(recv.stdoutLines)")
        #expect(received?["checked"] as? Bool == true, "\(recv.stdoutLines)")
        #expect(received?["path"] as? [String] == ["n1", "n2"], "\(recv.stdoutLines)")
        // Without a driver, --device says so before it connects.
        let noDriver = try await FreightProcess.run([
            "send", "gpu/none", "--size", "1", "--device", "--cuda-driver", "/nonexistent/libcuda.so.1",
        ])
        #expect(noDriver.status != 0 && noDriver.stderr.contains("libcuda"), "\(noDriver.stderr)")
    }

    /// A node whose driver sees a GPU offers its planner the GPU transports (`--cuda-driver`): two apps on GPU 0 of
    /// that node are planned a CUDA IPC hand-over, a GPU body to another node is planned staged; a node without a
    /// driver plans shared memory and says why there is no hand-over.
    @Test func aNodeWithADriverPlansTheGPUTransports() async throws {
        let driver = try StandInCUDA.library()
        let cluster = try await Self.node(andAnother: true, n1Arguments: ["--cuda-driver", driver])
        defer { cluster.stop() }
        let here = try await cluster.receiver("gpu/plan-n1", at: "n1")
        defer { here.stop() }
        let there = try await cluster.receiver("gpu/plan-n2", at: "n2", seenAt: "n2")
        defer { there.stop() }
        func explain(_ address: String, via node: String) async throws -> (kinds: [String], notes: [String]) {
            let result = try await FreightProcess.run([
                "resolve", address, "--explain", "--size", "1GiB", "--from-gpu", "0", "--to-gpu", "0", "--json",
                "--via", cluster.node(node).socket,
            ])
            #expect(result.status == 0, "\(result.stderr)")
            let plan =
                try JSONSerialization.jsonObject(with: Data((result.stdout.first ?? "{}").utf8)) as? [String: Any]
            let kinds = ((plan?["paths"] as? [[String: Any]]) ?? []).compactMap { $0["kind"] as? String }
            return (kinds, plan?["notes"] as? [String] ?? [])
        }
        #expect(try await explain("gpu/plan-n1", via: "n1").kinds == ["cuda-ipc"])
        let staged = try await explain("gpu/plan-n2", via: "n1")
        #expect(staged.notes.contains { $0.contains("staged GPU → pinned pool") }, "\(staged)")
        let none = try await explain("gpu/plan-n2", via: "n2")
        #expect(none.kinds == ["shared-memory"], "\(none)")
        #expect(none.notes.contains { $0.contains("has no CUDA IPC") }, "\(none)")
    }
}
