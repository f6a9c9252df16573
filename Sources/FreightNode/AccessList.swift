import FreightCore

#if canImport(Glibc)
    import Glibc
#endif

/// Who an app is, as its node knows it: the peer credentials of its Unix-socket connection (`SO_PEERCRED`), and
/// the token it presented, if any (docs/hardening.md).
public struct AppIdentity: Sendable, Hashable, CustomStringConvertible {
    public var uid: UInt32?
    public var gid: UInt32?
    public var pid: Int32?
    /// The name of the token it presented, as the access list defines it.
    public var token: String?

    public init(uid: UInt32? = nil, gid: UInt32? = nil, pid: Int32? = nil, token: String? = nil) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.token = token
    }

    public var description: String {
        if let token { return "token \(token)" }
        if let uid { return "uid \(uid)" + (pid.map { " (pid \($0))" } ?? "") }
        return "an app without credentials"
    }
}

/// Which apps may receive on and send to which addresses: `freight node --access FILE` (docs/hardening.md). Pure:
/// parsed from text, asked with an identity, an action and an address or pattern.
///
/// ```
/// # A token and its secret: apps over TCP and gRPC present the secret (FREIGHT_TOKEN).
/// token ci 3f9c1e…
/// # allow IDENTITY ACTIONS PREFIX…   identity: uid:N, gid:N, token:NAME or any; actions: receive, send, filter
/// allow uid:1000 receive,send team-a/**
/// allow token:ci send jobs/**
/// allow any receive public/**
/// ```
/// `receive` lets an app register endpoints on patterns within a prefix; `send` lets it open messages to
/// addresses within one; `filter` lets it attach WebAssembly filters (gRPC `AttachFilter`) on patterns within one. What no rule allows is refused, with the rules that apply named.
public struct AccessList: Sendable {
    public enum Action: String, Sendable, CaseIterable {
        /// `filter`: attach WebAssembly filters on patterns within a prefix, and detach them (docs/functions.md).
        case receive, send, filter
    }

    enum Principal: Hashable, Sendable, CustomStringConvertible {
        case uid(UInt32)
        case gid(UInt32)
        case token(String)
        case any

        var description: String {
            switch self {
            case .uid(let uid): "uid:\(uid)"
            case .gid(let gid): "gid:\(gid)"
            case .token(let name): "token:\(name)"
            case .any: "any"
            }
        }

        func includes(_ identity: AppIdentity) -> Bool {
            switch self {
            case .uid(let uid): identity.uid == uid
            case .gid(let gid): identity.gid == gid
            case .token(let name): identity.token == name
            case .any: true
            }
        }
    }

    struct Rule: Sendable {
        var principal: Principal
        var actions: Set<Action>
        var prefixes: [AddressPattern]
        var line: Int
    }

    /// Rules and tokens a file may hold, and the shortest secret a token may have.
    public static let rulesMax = 4096
    public static let tokensMax = 4096
    public static let secretBytesMin = 16
    public static let fileBytesMax = 1 << 20

    private(set) var rules: [Rule] = []
    /// Token names by secret.
    private var secrets: [(name: String, secret: [UInt8])] = []

    public init() {}

    /// Parses the file's text; an error names the line.
    public static func parse(_ text: String) throws(FreightError) -> AccessList {
        guard text.utf8.count <= fileBytesMax else {
            throw FreightError(.invalidArgument, "access list is over \(fileBytesMax) bytes")
        }
        var list = AccessList()
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = index + 1
            let words = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
                .split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard let keyword = words.first else { continue }
            func bad(_ why: String) -> FreightError {
                FreightError(.invalidArgument, "access list line \(line): \(why)")
            }
            switch keyword {
            case "token":
                guard words.count == 3, AddressGrammar.isName(words[1]) else {
                    throw bad("expected 'token NAME SECRET'")
                }
                guard words[2].utf8.count >= secretBytesMin else {
                    throw bad("the secret of token \(words[1]) is shorter than \(secretBytesMin) characters")
                }
                guard !list.secrets.contains(where: { $0.name == words[1] }), list.secrets.count < tokensMax else {
                    throw bad("token \(words[1]) is defined twice, or there are over \(tokensMax) tokens")
                }
                list.secrets.append((words[1], Array(words[2].utf8)))
            case "allow":
                guard words.count >= 4 else { throw bad("expected 'allow IDENTITY ACTIONS PREFIX…'") }
                let principal: Principal
                let identity = words[1]
                if identity == "any" {
                    principal = .any
                } else if identity.hasPrefix("uid:"), let uid = UInt32(identity.dropFirst(4)) {
                    principal = .uid(uid)
                } else if identity.hasPrefix("gid:"), let gid = UInt32(identity.dropFirst(4)) {
                    principal = .gid(gid)
                } else if identity.hasPrefix("token:"), AddressGrammar.isName(String(identity.dropFirst(6))) {
                    principal = .token(String(identity.dropFirst(6)))
                } else {
                    throw bad("identity '\(identity)' is not uid:N, gid:N, token:NAME or any")
                }
                var actions: Set<Action> = []
                for word in words[2].split(separator: ",") {
                    guard let action = Action(rawValue: String(word)) else {
                        throw bad("action '\(word)' is not receive, send or filter")
                    }
                    actions.insert(action)
                }
                var prefixes: [AddressPattern] = []
                for word in words[3...] {
                    do {
                        prefixes.append(try AddressPattern(word))
                    } catch {
                        throw bad("prefix '\(word)': \(error.message)")
                    }
                }
                guard list.rules.count < rulesMax else { throw bad("over \(rulesMax) rules") }
                list.rules.append(Rule(principal: principal, actions: actions, prefixes: prefixes, line: line))
            default:
                throw bad("unknown keyword '\(keyword)' (token, allow)")
            }
        }
        for rule in list.rules {
            if case .token(let name) = rule.principal, !list.secrets.contains(where: { $0.name == name }) {
                throw FreightError(
                    .invalidArgument, "access list line \(rule.line): token \(name) is not defined (token NAME SECRET)")
            }
        }
        return list
    }

    /// Whether the list holds token secrets (so its file must be readable by its owner only).
    public var definesTokens: Bool { !secrets.isEmpty }

    /// The name of the token whose secret is `secret`, compared in constant time; nil when none is.
    public func token(secret: String) -> String? {
        let given = Array(secret.utf8)
        var found: String?
        for (name, expected) in secrets {
            var difference = UInt8(given.count == expected.count ? 0 : 1)
            for index in 0..<expected.count {
                difference |= expected[index] ^ (index < given.count ? given[index] : 0)
            }
            if difference == 0 { found = name }
        }
        return found
    }

    /// Nil when `identity` may do `action` on `pattern` (a pattern to register, or the address of a message);
    /// otherwise the refusal, naming the rules that apply.
    public func refusal(_ identity: AppIdentity, _ action: Action, _ pattern: AddressPattern) -> FreightError? {
        let applying = rules.filter { $0.principal.includes(identity) && $0.actions.contains(action) }
        if applying.contains(where: { rule in rule.prefixes.contains { $0.covers(pattern) } }) { return nil }
        let verb =
            switch action {
            case .receive: "receive on"
            case .send: "send to"
            case .filter: "attach filters on"
            }
        guard !applying.isEmpty else {
            return FreightError(
                .permissionDenied,
                "\(identity) may not \(verb) \(pattern): no rule of the access list lets it \(action)")
        }
        let allowed = applying.flatMap { $0.prefixes.map(\.description) }.joined(separator: " ")
        let lines = applying.map { String($0.line) }.joined(separator: ", ")
        return FreightError(
            .permissionDenied,
            "\(identity) may not \(verb) \(pattern): the access list (line \(lines)) lets it \(action) only on \(allowed)"
        )
    }
}
