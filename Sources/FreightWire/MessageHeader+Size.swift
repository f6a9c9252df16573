extension Freight_Wire_V1_MessageHeader {
    /// The header's encoded size, counted without encoding it (SwiftProtobuf's own count is internal to it): the
    /// proto3 binary rules for these fields, unknown fields included, so a node checks the header limit on every
    /// OPEN without building the bytes. `HeaderSizeTests` holds it equal to `serializedBytes().count`.
    public var encodedSize: Int {
        var bytes = unknownFields.data.count
        if id != 0 { bytes += 1 + 8 }
        bytes += Self.varintField(length) + Self.varintField(deadlineUnixNanos)
        bytes += Self.varintField(UInt64(priority)) + Self.varintField(UInt64(chunkBytes))
        bytes += Self.stringField(source) + Self.stringField(destination) + Self.stringField(contentType)
        bytes += Self.stringField(traceparent) + Self.stringField(tracestate)
        bytes += Self.stringField(replyTo)
        for (key, value) in attributes {
            // A map entry always carries its key and value, empty or not.
            bytes += Self.lengthDelimited(Self.lengthDelimited(key.utf8.count) + Self.lengthDelimited(value.utf8.count))
        }
        return bytes
    }

    /// A string field: nothing when empty (proto3 leaves defaults out).
    private static func stringField(_ text: String) -> Int { text.isEmpty ? 0 : lengthDelimited(text.utf8.count) }

    /// Tag (fields 1…15: one byte), length, bytes.
    private static func lengthDelimited(_ count: Int) -> Int { 1 + varintBytes(UInt64(count)) + count }

    /// Tag and value of a varint field; nothing when it is zero (proto3 leaves defaults out).
    private static func varintField(_ value: UInt64) -> Int { value == 0 ? 0 : 1 + varintBytes(value) }

    private static func varintBytes(_ value: UInt64) -> Int { max(1, (64 - value.leadingZeroBitCount + 6) / 7) }
}
