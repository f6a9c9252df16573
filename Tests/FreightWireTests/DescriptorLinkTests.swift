import FreightCore
import FreightTransport
import Testing

/// The descriptor link's messages for device allocations (docs/gpu.md): what an app lends and what a node pushes
/// read back as written, and anything else is refused with a reason, never trusted.
@Suite struct DescriptorLinkTests {
    static let gpu = Array("freight-stand-in".utf8)
    static let handle = (0..<64).map { UInt8($0) }

    @Test func aDeviceAttachReadsBackAsWritten() throws {
        let attach = DescriptorLink.DeviceAttach(token: 7, bytes: 1 << 30, gpu: Self.gpu, handle: Self.handle)
        #expect(try DescriptorLink.decodeDeviceAttach(DescriptorLink.encode(attach)) == attach)
        // Nor is it taken for a pool or file attach.
        #expect(throws: FreightError.self) { try DescriptorLink.decodeAttach(DescriptorLink.encode(attach)) }
        #expect(throws: FreightError.self) { try DescriptorLink.decodeFileAttach(DescriptorLink.encode(attach)) }
    }

    @Test func malformedDeviceAttachesAreRefused() {
        let good = DescriptorLink.encode(
            DescriptorLink.DeviceAttach(token: 7, bytes: 4096, gpu: Self.gpu, handle: Self.handle))
        var empty = DescriptorLink.encode(
            DescriptorLink.DeviceAttach(token: 7, bytes: 0, gpu: Self.gpu, handle: Self.handle))
        #expect(throws: FreightError.self) { try DescriptorLink.decodeDeviceAttach(empty) }
        empty[4] = 9  // another version
        for bytes in [Array(good.dropLast()), good + [0], empty, Array("FRGX".utf8) + good.dropFirst(4)] {
            #expect(throws: FreightError.self) { try DescriptorLink.decodeDeviceAttach(bytes) }
        }
    }

    @Test func devicePoolsAndWithdrawalsReadBackAsWritten() throws {
        let pushed = DescriptorLink.Message.devicePool(id: 9, bytes: 1 << 20, gpu: Self.gpu, handle: Self.handle)
        #expect(try DescriptorLink.decodeMessage(DescriptorLink.encode(pushed)) == pushed)
        #expect(try DescriptorLink.decodeMessage(DescriptorLink.encode(.withdrawn(id: 9))) == .withdrawn(id: 9))
        // A device pool whose handle is cut short, or of no bytes, is a violation.
        var cut = DescriptorLink.encode(pushed)
        cut.removeLast()
        #expect(throws: FreightError.self) { try DescriptorLink.decodeMessage(cut) }
        let none = DescriptorLink.encode(.devicePool(id: 9, bytes: 0, gpu: Self.gpu, handle: Self.handle))
        #expect(throws: FreightError.self) { try DescriptorLink.decodeMessage(none) }
    }

    @Test func gpuNamesReadBackAsNvidiaSmiWritesThem() {
        let name = GPUName.text(Self.gpu)
        #expect(name == "GPU-66726569-6768-742d-7374-616e642d696e")
        #expect(GPUName.bytes(name) == Self.gpu)
        for text in ["GPU-66", "66726569-6768-742d-7374-616e642d696e", "GPU-zz726569-6768-742d-7374-616e642d696e"] {
            #expect(GPUName.bytes(text) == nil, "\(text)")
        }
    }
}
