/// An error a person can act on: a code that can grow, and a message that says what went wrong.
public struct FreightError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        enum Value: UInt32, Sendable {
            case invalidAddress = 1
            case noRoute = 2
            case protocolViolation = 3
            case resourceExhausted = 4
            case receiverGone = 5
            case senderGone = 6
            case nodeGone = 7
            case checksumMismatch = 8
            case connectionFailed = 9
            case cancelled = 10
            case invalidArgument = 11
            case duplicate = 12
            case io = 13
            case internalError = 14
            case permissionDenied = 15
            case timedOut = 16
            case functionFailed = 17
        }
        let value: Value

        public static let invalidAddress = Code(value: .invalidAddress)
        public static let noRoute = Code(value: .noRoute)
        public static let protocolViolation = Code(value: .protocolViolation)
        public static let resourceExhausted = Code(value: .resourceExhausted)
        public static let receiverGone = Code(value: .receiverGone)
        public static let senderGone = Code(value: .senderGone)
        public static let nodeGone = Code(value: .nodeGone)
        public static let checksumMismatch = Code(value: .checksumMismatch)
        public static let connectionFailed = Code(value: .connectionFailed)
        public static let cancelled = Code(value: .cancelled)
        public static let invalidArgument = Code(value: .invalidArgument)
        public static let duplicate = Code(value: .duplicate)
        public static let io = Code(value: .io)
        public static let internalError = Code(value: .internalError)
        /// An access list or an identity check refused it (docs/hardening.md).
        public static let permissionDenied = Code(value: .permissionDenied)
        /// No answer within the time asked for (a request's reply).
        public static let timedOut = Code(value: .timedOut)
        /// A WebAssembly filter or function failed the message: it trapped, ran out of fuel or memory, or broke its
        /// ABI (docs/functions.md).
        public static let functionFailed = Code(value: .functionFailed)

        /// The number carried on the wire.
        public var rawValue: UInt32 { value.rawValue }

        /// A code read from the wire; unknown numbers become `internalError` so that old nodes tolerate new codes.
        public init(rawValue: UInt32) {
            self.value = Value(rawValue: rawValue) ?? .internalError
        }

        init(value: Value) { self.value = value }

        public var description: String { String(describing: value) }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    public static func noRoute(_ address: String) -> FreightError {
        FreightError(.noRoute, "no route to \(address)")
    }
}
