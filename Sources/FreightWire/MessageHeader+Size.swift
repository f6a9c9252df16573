extension Freight_Wire_V1_MessageHeader {
    /// An upper bound on the header's encoded size, found without encoding it: each string at its length plus
    /// the largest tag and length prefix (6 bytes), each attribute as a map entry of two such strings inside one
    /// more prefix, every number at its widest. A node checks the header limit against this bound and encodes
    /// the header to count it exactly only when the bound is over the limit.
    public var encodedSizeBound: Int {
        // id: tag + 8; length and deadline: tag + 10-byte varint each; priority, chunk_bytes: tag + 5.
        var bytes = 9 + 11 + 11 + 6 + 6
        bytes += 6 + source.utf8.count
        bytes += 6 + destination.utf8.count
        bytes += 6 + contentType.utf8.count
        bytes += 6 + traceparent.utf8.count
        bytes += 6 + tracestate.utf8.count
        for (key, value) in attributes { bytes += 6 + 6 + key.utf8.count + 6 + value.utf8.count }
        return bytes
    }

    /// The header's exact encoded size when it is over `limit`; nil when it is not. The header is encoded only
    /// when its bound is over the limit.
    public func encodedSize(ifOver limit: Int) -> Int? {
        guard encodedSizeBound > limit else { return nil }
        let bytes = (try? serializedBytes() as [UInt8])?.count ?? Int.max
        return bytes > limit ? bytes : nil
    }
}
