import Foundation
import FreightCore

/// One HTTP/1.1 GET over a plain blocking connection, for tests that read a node's admin port or a Prometheus
/// server's API: the status, the headers and the body (chunked bodies decoded), with reads bounded in time and size.
public enum HTTPGet {
    public struct Response: Sendable {
        public let status: Int
        public let headers: [String: String]
        public let body: String
    }

    public static let responseBytesMax = 16 << 20

    /// GETs `path` from `hostAndPort` (`HOST:PORT`, IPv4).
    public static func get(_ hostAndPort: String, _ path: String, timeoutSeconds: Int = 10) async throws -> Response {
        guard let colon = hostAndPort.lastIndex(of: ":"),
            let port = Int(hostAndPort[hostAndPort.index(after: colon)...])
        else { throw FreightError(.invalidArgument, "not HOST:PORT: \(hostAndPort)") }
        let host = String(hostAndPort[..<colon])
        // Blocking reads: off the cooperative pool.
        return try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(
                    with: Result {
                        try fetch(host: host, port: port, path: path, timeoutSeconds: timeoutSeconds)
                    })
            }
        }
    }

    static func fetch(host: String, port: Int, path: String, timeoutSeconds: Int) throws -> Response {
        let fd = try BlockingSocket.connect(host: host, port: port, readTimeoutSeconds: timeoutSeconds)
        defer { close(fd) }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\n\r\n".utf8)
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw FreightError(.io, "write to \(host):\(port) failed") }
            sent += n
        }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { break }
            guard n > 0 else { throw FreightError(.io, "read from \(host):\(port) failed (errno \(errno))") }
            bytes += buffer[..<n]
            guard bytes.count <= responseBytesMax else { throw FreightError(.resourceExhausted, "response too large") }
        }
        let text = String(decoding: bytes, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else {
            throw FreightError(.protocolViolation, "no HTTP header in \(text.prefix(200))")
        }
        let lines = text[..<split.lowerBound].components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else {
            throw FreightError(.protocolViolation, "bad status line \(lines[0])")
        }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            headers[line[..<colon].lowercased()] = value
        }
        var body = String(text[split.upperBound...])
        if headers["transfer-encoding"]?.lowercased() == "chunked" { body = dechunked(body) }
        return Response(status: status, headers: headers, body: body)
    }

    static func dechunked(_ text: String) -> String {
        var rest = Substring(text)
        var body = ""
        while let lineEnd = rest.range(of: "\r\n") {
            let sizeText = rest[..<lineEnd.lowerBound].split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16), size > 0 else { break }
            let start = lineEnd.upperBound
            let utf8 = rest.utf8
            guard let end = utf8.index(start, offsetBy: size, limitedBy: utf8.endIndex) else { break }
            body += String(rest[start..<end])
            rest = rest[end...].dropFirst(2)
        }
        return body
    }
}
