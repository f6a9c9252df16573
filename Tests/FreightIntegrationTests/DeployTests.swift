import Foundation
import FreightTesting
import Testing

/// The deployment files (docs/deploy.md): the image builds from the release binary and runs Freight; the Kubernetes
/// overlays render, pass the schemas and checkov; and the node DaemonSet's command line, expanded as the kubelet
/// expands it, starts a node that takes its name, address and directory from the pod's environment alone.
@Suite(.serialized) struct DeployTests {
    static var root: String { FreightProcess.repositoryRoot ?? FileManager.default.currentDirectoryPath }

    static func onPath(_ program: String) -> Bool {
        (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").contains {
            FileManager.default.isExecutableFile(atPath: "\($0)/\(program)")
        }
    }

    /// Runs a program of the repository (a script) to its end.
    static func run(_ arguments: [String], timeout: Duration) async throws -> (status: Int32, output: String) {
        let process = try FreightProcess(Array(arguments.dropFirst()), executable: arguments[0])
        defer { process.stop() }
        let status = try await process.waitForExit(timeout: timeout)
        return (status, process.stdoutLines.joined(separator: "\n") + "\n" + process.stderr)
    }

    /// Builds the image from the release binary with buildah, then runs `freight --help` and `freight demo` in it
    /// (`buildah run --isolation chroot`: no Docker engine): the image holds everything Freight needs at run time.
    @Test(
        .enabled(if: getuid() == 0 && onPath("buildah"), "needs root and buildah (apt-get install buildah)"),
        .enabled(if: ProcessCluster.releaseBinary != nil, "needs the release build (swift build -c release)"),
        .timeLimit(.minutes(10)))
    func theImageRunsFreight() async throws {
        let out = NSTemporaryDirectory() + "freight-image-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let tag = "test-\(UInt32.random(in: 0...UInt32.max))"
        let built = try await Self.run(
            ["\(Self.root)/deploy/image/build.sh", "--binary", ProcessCluster.releaseBinary!, "--out", out, tag],
            timeout: .seconds(300))
        #expect(built.status == 0, "\(built.output)")
        #expect(FileManager.default.fileExists(atPath: "\(out)/freight-image.oci.tar"), "the OCI archive")
        let buildah = ["/usr/bin/env", "buildah", "--storage-driver", "vfs"]
        // The image and its working container go whatever happens (awaited: a test process may end right after).
        var made: [[String]] = [buildah + ["rmi", "freight:\(tag)"]]
        do {
            let container = try await Self.run(buildah + ["from", "--quiet", "freight:\(tag)"], timeout: .seconds(120))
            try #require(container.status == 0, "\(container.output)")
            let name = try #require(container.output.split(separator: "\n").first.map(String.init))
            made.insert(buildah + ["rm", name], at: 0)
            let help = try await Self.run(
                buildah + ["run", "--isolation", "chroot", name, "--", "/usr/bin/freight", "--help"],
                timeout: .seconds(60))
            #expect(help.status == 0 && help.output.contains("USAGE: freight"), "\(help.output)")
            let demo = try await Self.run(
                buildah + ["run", "--isolation", "chroot", name, "--", "/usr/bin/freight", "demo"],
                timeout: .seconds(400))
            #expect(demo.status == 0 && demo.output.contains("every byte checked"), "\(demo.output.suffix(3000))")
            // What the image runs as: the non-root user the Containerfile names.
            let user = try await Self.run(
                buildah + ["inspect", "--format", "{{.OCIv1.Config.User}}\n", name], timeout: .seconds(60))
            #expect(user.output.hasPrefix("65532:65532"), "\(user.output)")
        } catch {
            for command in made { _ = try? await Self.run(command, timeout: .seconds(60)) }
            throw error
        }
        for command in made { _ = try? await Self.run(command, timeout: .seconds(60)) }
    }

    /// Every overlay renders, validates strictly against the Kubernetes schemas, and passes checkov, as does the
    /// Containerfile (deploy/check.sh; the Python tools come from PyPI into .build-deploy).
    @Test(
        .enabled(if: onPath("kubectl"), "needs kubectl 1.21 or later to render the overlays"), .timeLimit(.minutes(10)))
    func theManifestsRenderValidateAndPassCheckov() async throws {
        let checked = try await Self.run(["\(Self.root)/deploy/check.sh"], timeout: .seconds(540))
        #expect(checked.status == 0, "\(checked.output.suffix(4000))")
        #expect(checked.output.contains("every object of every overlay valid"), "\(checked.output.suffix(2000))")
        #expect(checked.output.contains("no failed check"), "\(checked.output.suffix(2000))")
    }

    /// The node DaemonSet's arguments, with `$(VAR)` expanded from the pod's environment as the kubelet does (its
    /// ConfigMap, and the downward API's node name and pod IP; the directory pointed at an etcd started here, as an
    /// overlay points it at an existing one), start a node that answers on its admin port's probes and says who it
    /// is: no per-machine configuration.
    @Test(
        .enabled(if: onPath("kubectl"), "needs kubectl 1.21 or later to render the overlays"),
        .enabled(if: EtcdServer.available, "needs etcd"), .timeLimit(.minutes(10)))
    func theNodeDaemonSetStartsANodeFromThePodsEnvironment() async throws {
        // The one overlay this needs, rendered here (the checks of every overlay are the test above's).
        let folder = NSTemporaryDirectory() + "freight-pod-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let rendered = "\(folder)/single-cluster.yaml"
        let render = try await Self.run(
            [
                "/bin/sh", "-c",
                "kubectl kustomize \(Self.root)/deploy/kubernetes/overlays/single-cluster > \(rendered)",
            ], timeout: .seconds(120))
        try #require(render.status == 0, "\(render.output)")
        let etcd = try await EtcdServer.start()
        defer { etcd.stop() }
        let host = "127.0.0.131"
        let expanded = try await Self.run(
            [
                "\(Self.root)/.build-deploy/venv/bin/python", "\(Self.root)/scripts/pod-args.py",
                rendered, "DaemonSet/freight-node", "node",
                "spec.nodeName=gpu-host-7", "status.podIP=\(host)", "--env", "FREIGHT_DIRECTORY=\(etcd.url)",
            ], timeout: .seconds(60))
        try #require(expanded.status == 0, "\(expanded.output)")
        let line = try #require(expanded.output.split(separator: "\n").first.map(String.init))
        let pod = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        var arguments = try #require(pod["args"] as? [String])
        // The socket directory is a host path mounted at /run/freight: here, the test's own folder.
        arguments = arguments.map { $0.replacingOccurrences(of: "/run/freight", with: folder) }
        #expect(arguments.contains("--name=gpu-host-7") && arguments.contains("--listen=\(host):7400"), "\(arguments)")
        let node = try FreightProcess(arguments)
        defer { node.stop() }
        let deadline = ContinuousClock.now + .seconds(60)
        var ready: HTTPGet.Response?
        while ContinuousClock.now < deadline, node.isRunning {
            if let response = try? await HTTPGet.get("\(host):7402", "/readyz", timeoutSeconds: 2),
                response.status == 200
            {
                ready = response
                break
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        try #require(ready != nil, "the node never answered /readyz: \(node.stderr.suffix(3000))")
        let live = try await HTTPGet.get("\(host):7402", "/healthz")
        #expect(live.status == 200)
        let status = try await FreightProcess.run(["status", "--via", "\(folder)/node.sock", "--json"])
        let object = try #require(
            status.stdout.first.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] })
        #expect(object["name"] as? String == "gpu-host-7")
        #expect(object["cluster"] as? String == "freight", "the ConfigMap's cluster")
        #expect(object["listen"] as? String == "\(host):7400")
        #expect((object["directory"] as? String)?.contains("etcd") == true, "\(object["directory"] ?? "")")
        // The node announced itself in etcd under the name the pod gave it.
        let keys = try await etcd.etcdctl(["get", "--prefix", "--keys-only", "/freight/"])
        #expect(keys.stdout.contains { $0.contains("gpu-host-7") }, "\(keys.stdout)")
    }
}
