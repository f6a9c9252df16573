import ArgumentParser
import FreightCore
import FreightSecurity

/// `freight cert`: a cluster's certificate authority and the certificates its nodes prove themselves with
/// (docs/hardening.md, "Nodes prove who they are").
struct CertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cert",
        abstract: "Make a cluster's certificate authority and issue node certificates (mutual TLS between nodes).",
        subcommands: [Authority.self, Issue.self]
    )

    struct Authority: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a certificate authority: DIR/authority.pem and DIR/authority-key.pem (mode 600).")

        @Option(name: .customLong("out"), help: "Directory to write the authority into.")
        var out: String
        @Option(name: .customLong("name"), help: "The authority's name in its certificate.")
        var name = "Freight cluster authority"
        @Option(name: .customLong("days"), help: "Days the authority is valid.")
        var days = 3650

        func run() throws {
            do {
                try CertificateAuthority.create(name: name, days: days).write(to: out)
                printLine(
                    "authority written to \(out)/\(CertificateAuthority.certificateFile) and \(CertificateAuthority.keyFile)"
                )
            } catch {
                fail(error)
            }
        }
    }

    struct Issue: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Issue a node certificate signed by an authority: DIR/node.pem, DIR/node-key.pem, DIR/authority.pem.")

        @Option(name: .customLong("cluster"), help: "The cluster the certificate's holder belongs to.")
        var cluster: String
        @Option(name: .customLong("node"), help: "The node name it is for (default: any node of the cluster).")
        var node: String?
        @Option(name: .customLong("authority"), help: "Directory of the authority (freight cert authority).")
        var authority: String
        @Option(name: .customLong("out"), help: "Directory to write the certificate, its key and the authority's into.")
        var out: String
        @Option(name: .customLong("days"), help: "Days the certificate is valid.")
        var days = 365

        func run() throws {
            do {
                let identity = NodeIdentity(cluster: cluster, node: node)
                guard NodeIdentity(uri: identity.uri) == identity else {
                    throw FreightError(.invalidArgument, "cluster and node names may not contain '/'")
                }
                try CertificateAuthority.load(from: authority).issue(identity, days: days, into: out)
                printLine(
                    "certificate for \(identity) written to \(out)/\(CertificateAuthority.nodeCertificateFile) and \(CertificateAuthority.nodeKeyFile)"
                )
            } catch {
                fail(error)
            }
        }
    }
}

/// The node flags that give its links mutual TLS.
struct LinkSecurityOptions: ParsableArguments {
    @Option(name: .customLong("tls-authority"), help: "The cluster authority's certificate (authority.pem).")
    var authority: String?
    @Option(name: .customLong("tls-cert"), help: "This node's certificate (node.pem, from freight cert issue).")
    var certificate: String?
    @Option(name: .customLong("tls-key"), help: "This node's key (node-key.pem).")
    var key: String?
    @Flag(
        name: .customLong("encrypt-links"),
        help: "Encrypt links between nodes, not only authenticate them (the same on every node of a cluster).")
    var encrypt = false

    func load(cluster: String, name: String) throws -> LinkSecurity? {
        switch (authority, certificate, key) {
        case (nil, nil, nil):
            guard !encrypt else { throw FreightError(.invalidArgument, "--encrypt-links needs --tls-cert") }
            return nil
        case (let authority?, let certificate?, let key?):
            return try LinkSecurity(
                cluster: cluster, name: name, authority: authority, certificate: certificate, key: key,
                encrypts: encrypt)
        default:
            throw FreightError(.invalidArgument, "--tls-authority, --tls-cert and --tls-key go together")
        }
    }
}
