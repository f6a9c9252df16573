/// Parses and prints byte sizes: `4096`, `64KiB`, `1MiB`, `1GiB`, `1TiB` (also `KB`/`MB`/`GB` as powers of 1000).
public enum ByteCount {
    public static func parse(_ text: String) throws(FreightError) -> Int64 {
        let trimmed = text.trimmingWhitespace()
        let digits = trimmed.prefix { $0.isNumber || $0 == "." }
        let unit = trimmed.dropFirst(digits.count).trimmingWhitespace()
        guard let value = Double(digits), value >= 0 else {
            throw FreightError(
                .invalidArgument, "invalid size '\(text)': expected a number such as 4096, 64KiB or 1GiB")
        }
        let multipliers: [String: Double] = [
            "": 1, "B": 1,
            "KiB": 1024, "MiB": 1024 * 1024, "GiB": 1024 * 1024 * 1024, "TiB": 1024 * 1024 * 1024 * 1024,
            "K": 1024, "M": 1024 * 1024, "G": 1024 * 1024 * 1024,
            "KB": 1000, "MB": 1_000_000, "GB": 1_000_000_000, "TB": 1_000_000_000_000,
        ]
        guard let multiplier = multipliers[unit] else {
            throw FreightError(
                .invalidArgument, "invalid size '\(text)': unknown unit '\(unit)'; use B, KiB, MiB, GiB or TiB")
        }
        let bytes = value * multiplier
        guard bytes < 9.0e18, bytes.rounded() == bytes else {
            throw FreightError(.invalidArgument, "invalid size '\(text)': not a whole number of bytes that fits")
        }
        return Int64(bytes)
    }

    /// `1.0 GiB`, `256 MiB`, `1.0 KiB`, `17 B`.
    public static func format(_ bytes: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var index = 0
        while value >= 1024 && index < units.count - 1 {
            value /= 1024
            index += 1
        }
        if index == 0 { return "\(bytes) B" }
        if value == value.rounded() { return "\(Int(value)) \(units[index])" }
        return "\(value.formatted(decimals: 1)) \(units[index])"
    }

    /// Throughput in MB/s (10^6 bytes per second), as iperf-style tools print it.
    public static func megabytesPerSecond(bytes: Int64, seconds: Double) -> Double {
        seconds > 0 ? Double(bytes) / seconds / 1_000_000 : 0
    }
}

extension Double {
    /// Fixed-point text without Foundation.
    public func formatted(decimals: Int) -> String {
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let scaled = (self * scale).rounded()
        let negative = scaled < 0
        let magnitude = Int64(abs(scaled))
        let whole = magnitude / Int64(scale)
        var text = "\(negative ? "-" : "")\(whole)"
        if decimals > 0 {
            var fraction = String(magnitude % Int64(scale))
            while fraction.count < decimals { fraction = "0" + fraction }
            text += "." + fraction
        }
        return text
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        String(self.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
