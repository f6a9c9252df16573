/// A name that messages are sent to: `/`-separated segments of `[a-z0-9._-]`, e.g. `llm/decode/3`.
///
/// At most ``Limits/addressSegmentsMax`` segments and ``Limits/addressBytesMax`` bytes; case-sensitive; no empty segment.
public struct Address: Hashable, Sendable, CustomStringConvertible, Comparable {
    public let segments: [String]
    /// The address as text: what it was parsed from, which is its segments joined by `/` (kept, as every message
    /// that goes to it names it).
    public let description: String

    public init(_ text: String) throws(FreightError) {
        self.segments = try AddressGrammar.parse(text, allowWildcards: false)
        self.description = text
    }

    public static func == (lhs: Address, rhs: Address) -> Bool { lhs.description == rhs.description }
    public func hash(into hasher: inout Hasher) { hasher.combine(description) }

    public static func < (lhs: Address, rhs: Address) -> Bool { lhs.description < rhs.description }
}

/// An address in which `*` stands for one segment and a final `**` for zero or more: `llm/*/3`, `llm/**`.
public struct AddressPattern: Hashable, Sendable, CustomStringConvertible {
    public enum Segment: Hashable, Sendable {
        case literal(String)
        case one  // *
        case rest  // ** (last only)
    }

    public let segments: [Segment]

    public init(_ text: String) throws(FreightError) {
        let parts = try AddressGrammar.parse(text, allowWildcards: true)
        self.segments = parts.map { part in
            switch part {
            case "*": .one
            case "**": .rest
            default: .literal(part)
            }
        }
    }

    /// The pattern that matches exactly one address.
    public init(_ address: Address) {
        self.segments = address.segments.map { .literal($0) }
    }

    /// True when the pattern has no wildcard, so it names one address.
    public var isLiteral: Bool {
        segments.allSatisfy { if case .literal = $0 { true } else { false } }
    }

    public var description: String {
        segments.map { segment in
            switch segment {
            case .literal(let text): text
            case .one: "*"
            case .rest: "**"
            }
        }.joined(separator: "/")
    }

    /// Whether `address` is one of the addresses this pattern stands for.
    public func matches(_ address: Address) -> Bool {
        Self.match(segments[...], address.segments[...])
    }

    private static func match(_ pattern: ArraySlice<Segment>, _ address: ArraySlice<String>) -> Bool {
        guard let head = pattern.first else { return address.isEmpty }
        switch head {
        case .rest:
            return true
        case .one:
            return !address.isEmpty && match(pattern.dropFirst(), address.dropFirst())
        case .literal(let text):
            return address.first == text && match(pattern.dropFirst(), address.dropFirst())
        }
    }

    /// Whether every address `other` matches is matched by this pattern too (an access list's prefix and the
    /// pattern an app registers).
    public func covers(_ other: AddressPattern) -> Bool {
        Self.cover(segments[...], other.segments[...])
    }

    private static func cover(_ wide: ArraySlice<Segment>, _ narrow: ArraySlice<Segment>) -> Bool {
        switch (wide.first, narrow.first) {
        case (nil, nil): return true
        case (.rest?, _): return true  // `**` matches whatever is left, wildcards included
        case (nil, _), (_, nil), (_, .rest?): return false  // `**` is matched only by `**`
        case (.one?, .one?), (.one?, .literal?):
            return cover(wide.dropFirst(), narrow.dropFirst())
        case (.literal(let a)?, .literal(let b)?):
            return a == b && cover(wide.dropFirst(), narrow.dropFirst())
        case (.literal?, .one?):
            return false
        }
    }

    /// The pattern that matches exactly the addresses both match, or nil when none does: `a/**` ∩ `*/b` is `a/b`,
    /// `ckpt/**` ∩ `ckpt/eu/**` is `ckpt/eu/**` (a route narrowed by a gateway's export or import patterns).
    public func intersection(_ other: AddressPattern) -> AddressPattern? {
        Self.intersect(segments[...], other.segments[...]).map { AddressPattern(segments: $0) }
    }

    private init(segments: [Segment]) { self.segments = segments }

    private static func intersect(_ a: ArraySlice<Segment>, _ b: ArraySlice<Segment>) -> [Segment]? {
        switch (a.first, b.first) {
        case (nil, nil): return []
        case (.rest?, _): return Array(b)  // `**` takes whatever the other has left, itself included
        case (_, .rest?): return Array(a)
        case (nil, _), (_, nil): return nil
        case (.literal(let x)?, .literal(let y)?):
            guard x == y else { return nil }
            return intersect(a.dropFirst(), b.dropFirst()).map { [.literal(x)] + $0 }
        case (.literal(let x)?, .one?), (.one?, .literal(let x)?):
            return intersect(a.dropFirst(), b.dropFirst()).map { [.literal(x)] + $0 }
        case (.one?, .one?):
            return intersect(a.dropFirst(), b.dropFirst()).map { [.one] + $0 }
        }
    }

    /// Whether some address matches both patterns (used by `resolve` with a pattern).
    public func overlaps(_ other: AddressPattern) -> Bool {
        Self.overlap(segments[...], other.segments[...])
    }

    private static func overlap(_ a: ArraySlice<Segment>, _ b: ArraySlice<Segment>) -> Bool {
        switch (a.first, b.first) {
        case (nil, nil): return true
        case (.rest?, _), (_, .rest?): return true
        case (nil, _), (_, nil): return false
        case (.literal(let x)?, .literal(let y)?): return x == y && overlap(a.dropFirst(), b.dropFirst())
        default: return overlap(a.dropFirst(), b.dropFirst())
        }
    }
}

/// The grammar of addresses and patterns, shared by both so that errors read the same; its alphabet also names
/// nodes, clusters and groups.
public enum AddressGrammar {
    /// Whether `text` is a non-empty name of the address alphabet `[a-z0-9._-]`, at most `bytesMax` bytes.
    public static func isName(_ text: String, bytesMax: Int = Limits.nameBytesMax) -> Bool {
        !text.isEmpty && text.utf8.count <= bytesMax && text.utf8.allSatisfy(isAllowed)
    }

    static func parse(_ text: String, allowWildcards: Bool) throws(FreightError) -> [String] {
        let kind = allowWildcards ? "pattern" : "address"
        guard !text.isEmpty else {
            throw FreightError(.invalidAddress, "invalid \(kind) '': it is empty")
        }
        guard text.utf8.count <= Limits.addressBytesMax else {
            throw FreightError(
                .invalidAddress,
                "invalid \(kind) '\(text.prefix(32))…': \(text.utf8.count) bytes, at most \(Limits.addressBytesMax)"
            )
        }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count <= Limits.addressSegmentsMax else {
            throw FreightError(
                .invalidAddress,
                "invalid \(kind) '\(text)': \(parts.count) segments, at most \(Limits.addressSegmentsMax)"
            )
        }
        for (index, part) in parts.enumerated() {
            // Only for the reason of a refusal: a valid address makes no text of its own.
            var position: String { "segment \(index + 1) '\(part)'" }
            if part.isEmpty {
                throw FreightError(.invalidAddress, "invalid \(kind) '\(text)': segment \(index + 1) is empty")
            }
            if part == "*" || part == "**" {
                guard allowWildcards else {
                    throw FreightError(
                        .invalidAddress,
                        "invalid address '\(text)': \(position) is a wildcard; wildcards belong in patterns"
                    )
                }
                if part == "**" && index != parts.count - 1 {
                    throw FreightError(.invalidAddress, "invalid pattern '\(text)': \(position): '**' may only be last")
                }
                continue
            }
            for byte in part.utf8 where !isAllowed(byte) {
                let shown = byte < 0x80 ? String(UnicodeScalar(byte)) : String(format: "\\x%02x", byte)
                throw FreightError(
                    .invalidAddress,
                    "invalid \(kind) '\(text)': \(position) has '\(shown)'; allowed are a-z 0-9 . _ -"
                )
            }
        }
        return parts
    }

    @inline(__always)
    public static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
            true
        default:
            false
        }
    }
}

extension String {
    fileprivate init(format: String, _ byte: UInt8) {
        let digits = Array("0123456789abcdef")
        self = "\\x" + String(digits[Int(byte >> 4)]) + String(digits[Int(byte & 0xf)])
    }
}
