/// A GPU's UUID as `nvidia-smi -L` writes it: `GPU-` and 32 hex digits in groups of 8-4-4-4-12. What names a GPU
/// across processes (their ordinals differ where `CUDA_VISIBLE_DEVICES` renumbers them): an app says in its HELLO
/// which GPUs it opens CUDA IPC handles on (`cuda-ipc:GPU-…`), and a lent device allocation names its GPU by these
/// 16 bytes (docs/gpu.md).
public enum GPUName {
    public static let byteCount = 16
    /// The HELLO capability of an app that opens CUDA IPC handles on GPU `name`.
    public static let capabilityPrefix = "cuda-ipc:"

    public static func text(_ bytes: [UInt8]) -> String {
        let hex = bytes.prefix(byteCount).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }
        let groups = [0..<4, 4..<6, 6..<8, 8..<10, 10..<16].map { $0.clamped(to: 0..<hex.count) }.map {
            hex[$0].joined()
        }
        return "GPU-" + groups.joined(separator: "-")
    }

    /// The 16 bytes of `GPU-…`; nil when it is not one.
    public static func bytes(_ text: String) -> [UInt8]? {
        guard text.hasPrefix("GPU-") else { return nil }
        let digits = Array(text.dropFirst(4).filter { $0 != "-" }.utf8)
        guard digits.count == 2 * byteCount else { return nil }
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[index..<index + 2], as: UTF8.self), radix: 16) else {
                return nil
            }
            bytes.append(byte)
        }
        return bytes
    }
}
