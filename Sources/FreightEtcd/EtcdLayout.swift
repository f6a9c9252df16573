import Foundation
import FreightCore
import FreightDirectory
import FreightWire
import SwiftProtobuf

/// Where a cluster's directory lives in etcd (docs/directory.md), and how its keys and values are written and read.
/// Pure: no I/O.
public struct EtcdLayout: Sendable {
    public let prefix: Data

    public init(cluster: String) {
        prefix = Data("/freight/\(cluster)/".utf8)
    }

    public enum Entry: Sendable, Equatable {
        case node(NodeRecord)
        case endpoint(EndpointRecord)
        case function(FunctionRecord)
    }

    public func nodeKey(_ name: String) -> Data { prefix + Data("nodes/\(name)".utf8) }

    public func endpointKey(_ key: EndpointKey) -> Data { prefix + Data("endpoints/\(key.node)/\(key.id)".utf8) }

    /// A function's key: cluster-wide, on no lease (docs/functions.md).
    public func functionKey(_ address: Address) -> Data { prefix + Data("functions/\(address)".utf8) }

    public func functionValue(_ record: FunctionRecord) throws -> Data {
        try record.wire.serializedData()
    }

    public func functionAddress(from key: Data) -> Address? {
        guard let rest = relative(key), rest.hasPrefix("functions/") else { return nil }
        return try? Address(String(rest.dropFirst("functions/".count)))
    }

    public func ownEndpointsPrefix(_ node: String) -> Data { prefix + Data("endpoints/\(node)/".utf8) }

    /// The end of the range of keys that start with `prefix` (etcd's `range_end` for a prefix).
    public static func rangeEnd(of prefix: Data) -> Data {
        var bytes = [UInt8](prefix)
        while let last = bytes.last {
            if last < 0xFF {
                bytes[bytes.count - 1] = last + 1
                return Data(bytes)
            }
            bytes.removeLast()
        }
        return Data([0])
    }

    public func nodeValue(_ record: NodeRecord) throws -> Data {
        try record.wire.serializedData()
    }

    public func endpointValue(_ record: EndpointRecord) throws -> Data {
        try record.wire.serializedData()
    }

    func put(_ key: Data, value: Data, lease: Int64) -> Etcdserverpb_RequestOp {
        .with {
            $0.requestPut = .with {
                $0.key = key
                $0.value = value
                $0.lease = lease
            }
        }
    }

    private func relative(_ key: Data) -> Substring? {
        guard key.starts(with: prefix), let text = String(data: key.dropFirst(prefix.count), encoding: .utf8) else {
            return nil
        }
        return Substring(text)
    }

    public func nodeName(from key: Data) -> String? {
        guard let rest = relative(key), rest.hasPrefix("nodes/") else { return nil }
        let name = String(rest.dropFirst("nodes/".count))
        return AddressGrammar.isName(name) ? name : nil
    }

    public func endpointKey(from key: Data) -> EndpointKey? {
        guard let rest = relative(key), rest.hasPrefix("endpoints/") else { return nil }
        let parts = rest.dropFirst("endpoints/".count).split(separator: "/")
        guard parts.count == 2, AddressGrammar.isName(String(parts[0])), let id = UInt64(parts[1]) else { return nil }
        return EndpointKey(node: String(parts[0]), id: id)
    }

    /// What a key and its value say; nil for keys and values this version does not understand (they are skipped,
    /// never trusted).
    public func decode(key: Data, value: Data) -> Entry? {
        if let name = nodeName(from: key) {
            guard let member = try? Freight_Wire_V1_Member(serializedBytes: value), member.name == name,
                let record = try? NodeRecord(wire: member)
            else { return nil }
            return .node(record)
        }
        if let address = functionAddress(from: key) {
            guard let wire = try? Freight_Wire_V1_FunctionRecord(serializedBytes: value),
                let record = try? FunctionRecord(wire: wire), record.address == address, !record.removed
            else { return nil }
            return .function(record)
        }
        if let endpointKey = endpointKey(from: key) {
            guard let endpoint = try? Freight_Wire_V1_Endpoint(serializedBytes: value),
                let record = EndpointRecord(key: endpointKey, wire: endpoint)
            else { return nil }
            return .endpoint(record)
        }
        return nil
    }
}
