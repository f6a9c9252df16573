import CFreightSystem
import FreightCore

/// One GPU through the driver: its primary context (the one CUDA's runtime, PyTorch and CuPy use too), made current
/// on the calling thread before each call, since a context is current per thread. Device memory is named by its
/// address (`CUdeviceptr`, a `UInt64`); streams and events are ``CUDAStream`` and ``CUDAEvent``.
public final class CUDAGPU: @unchecked Sendable {  // immutable: the driver, an ordinal and the context's address
    public let driver: CUDADriver
    public let index: Int
    /// `GPU-…`, as `nvidia-smi -L` writes it: names this GPU to other processes.
    public let uuid: String
    private let context: UInt

    /// Retains GPU `index`'s primary context (released when this value goes).
    public init(_ driver: CUDADriver, index: Int) throws(FreightError) {
        var device: Int32 = 0
        try driver.check(driver.api.cuDeviceGet(&device, Int32(index)), "cuDeviceGet(\(index))")
        let uuid = try driver.uuid(of: device)
        var context: OpaquePointer?
        try driver.check(driver.api.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain")
        self.driver = driver
        self.index = index
        self.uuid = uuid
        self.context = UInt(bitPattern: context)
    }

    deinit {
        _ = driver.api.cuDevicePrimaryCtxRelease(Int32(index))
    }

    private var api: CUDADriver.API { driver.api }

    private func current() throws(FreightError) {
        try driver.check(api.cuCtxSetCurrent(OpaquePointer(bitPattern: context)), "cuCtxSetCurrent")
    }

    // MARK: Device memory

    /// `count` bytes of device memory; free them with ``free(_:)``.
    public func allocate(_ count: Int) throws(FreightError) -> UInt64 {
        try current()
        var pointer: UInt64 = 0
        try driver.check(api.cuMemAlloc(&pointer, count), "cuMemAlloc(\(count))")
        return pointer
    }

    public func free(_ pointer: UInt64) throws(FreightError) {
        try current()
        try driver.check(api.cuMemFree(pointer), "cuMemFree")
    }

    /// The allocation `pointer` lies in: its base and size (an IPC handle names a whole allocation).
    public func allocation(containing pointer: UInt64) throws(FreightError) -> (base: UInt64, count: Int) {
        try current()
        var base: UInt64 = 0
        var count = 0
        try driver.check(api.cuMemGetAddressRange(&base, &count, pointer), "cuMemGetAddressRange")
        return (base, count)
    }

    // MARK: Pinned host memory

    /// Pins `count` bytes of host memory at `pointer` for this GPU's copy engines (`CU_MEMHOSTREGISTER_PORTABLE`:
    /// for every context), as a shared-memory pool is pinned for staging.
    public func pin(_ pointer: UnsafeMutableRawPointer, count: Int) throws(FreightError) {
        try current()
        try driver.check(api.cuMemHostRegister(pointer, count, 1), "cuMemHostRegister(\(count))")
    }

    public func unpin(_ pointer: UnsafeMutableRawPointer) throws(FreightError) {
        try current()
        try driver.check(api.cuMemHostUnregister(pointer), "cuMemHostUnregister")
    }

    // MARK: Copies, streams and events

    /// Queues a copy of `count` bytes from device memory at `source` to host memory at `destination` on `stream`.
    public func copy(
        toHost destination: UnsafeMutableRawPointer, from source: UInt64, count: Int, on stream: CUDAStream
    ) throws(FreightError) {
        try current()
        try driver.check(
            api.cuMemcpyDtoHAsync(destination, source, count, stream.pointer), "cuMemcpyDtoHAsync(\(count))")
    }

    /// Queues a copy of `count` bytes from host memory at `source` to device memory at `destination` on `stream`.
    public func copy(toDevice destination: UInt64, from source: UnsafeRawPointer, count: Int, on stream: CUDAStream)
        throws(FreightError)
    {
        try current()
        try driver.check(
            api.cuMemcpyHtoDAsync(destination, source, count, stream.pointer), "cuMemcpyHtoDAsync(\(count))")
    }

    /// Queues a copy of `count` bytes between two places in device memory (this GPU's, or another process's opened
    /// from its IPC handle) on `stream`.
    public func copy(deviceTo destination: UInt64, from source: UInt64, count: Int, on stream: CUDAStream)
        throws(FreightError)
    {
        try current()
        try driver.check(
            api.cuMemcpyDtoDAsync(destination, source, count, stream.pointer), "cuMemcpyDtoDAsync(\(count))")
    }

    /// A stream that does not wait for the legacy default stream (`CU_STREAM_NON_BLOCKING`).
    public func makeStream() throws(FreightError) -> CUDAStream {
        try current()
        var stream: OpaquePointer?
        try driver.check(api.cuStreamCreate(&stream, 1), "cuStreamCreate")
        return CUDAStream(address: UInt(bitPattern: stream))
    }

    public func destroy(_ stream: CUDAStream) throws(FreightError) {
        try current()
        try driver.check(api.cuStreamDestroy(stream.pointer), "cuStreamDestroy")
    }

    /// Waits until everything queued on `stream` is done.
    public func synchronize(_ stream: CUDAStream) throws(FreightError) {
        try current()
        try driver.check(api.cuStreamSynchronize(stream.pointer), "cuStreamSynchronize")
    }

    /// An event without timing (`CU_EVENT_DISABLE_TIMING`), the cheap kind that marks a point in a stream.
    public func makeEvent() throws(FreightError) -> CUDAEvent {
        try current()
        var event: OpaquePointer?
        try driver.check(api.cuEventCreate(&event, 2), "cuEventCreate")
        return CUDAEvent(address: UInt(bitPattern: event))
    }

    /// Marks the point `stream` has reached in its queue.
    public func record(_ event: CUDAEvent, on stream: CUDAStream) throws(FreightError) {
        try current()
        try driver.check(api.cuEventRecord(event.pointer, stream.pointer), "cuEventRecord")
    }

    /// Whether the work before `event`'s mark is done (`CUDA_ERROR_NOT_READY` is "not yet").
    public func isComplete(_ event: CUDAEvent) throws(FreightError) -> Bool {
        try current()
        let code = api.cuEventQuery(event.pointer)
        if code == CUDADriver.notReady { return false }
        try driver.check(code, "cuEventQuery")
        return true
    }

    public func synchronize(_ event: CUDAEvent) throws(FreightError) {
        try current()
        try driver.check(api.cuEventSynchronize(event.pointer), "cuEventSynchronize")
    }

    public func destroy(_ event: CUDAEvent) throws(FreightError) {
        try current()
        try driver.check(api.cuEventDestroy(event.pointer), "cuEventDestroy")
    }

    // MARK: IPC

    /// The IPC handle of the allocation whose base is `base`: another process on this GPU opens it to map the same
    /// memory (``open(_:)``).
    public func ipcHandle(of base: UInt64) throws(FreightError) -> CUDAIPCHandle {
        try current()
        var handle = freight_cu_ipc_mem_handle()
        try driver.check(api.cuIpcGetMemHandle(&handle, base), "cuIpcGetMemHandle")
        return CUDAIPCHandle(withUnsafeBytes(of: handle.reserved) { Array($0) })
    }

    /// Maps the allocation `handle` names into this process (`CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS`); close it with
    /// ``close(opened:)``.
    public func open(_ handle: CUDAIPCHandle) throws(FreightError) -> UInt64 {
        try current()
        var raw = freight_cu_ipc_mem_handle()
        withUnsafeMutableBytes(of: &raw.reserved) { $0.copyBytes(from: handle.bytes) }
        var pointer: UInt64 = 0
        try driver.check(api.cuIpcOpenMemHandle(&pointer, raw, 1), "cuIpcOpenMemHandle")
        return pointer
    }

    public func close(opened pointer: UInt64) throws(FreightError) {
        try current()
        try driver.check(api.cuIpcCloseMemHandle(pointer), "cuIpcCloseMemHandle")
    }
}

/// A CUDA stream (`CUstream`), by address.
public struct CUDAStream: Sendable, Hashable {
    let address: UInt
    var pointer: OpaquePointer? { OpaquePointer(bitPattern: address) }
}

/// A CUDA event (`CUevent`), by address.
public struct CUDAEvent: Sendable, Hashable {
    let address: UInt
    var pointer: OpaquePointer? { OpaquePointer(bitPattern: address) }
}

/// A `CUipcMemHandle`: 64 bytes that name one allocation of device memory to other processes on its GPU.
public struct CUDAIPCHandle: Sendable, Hashable {
    public static let count = 64
    public let bytes: [UInt8]

    /// Fails unless `bytes` are exactly ``count`` long (a handle from the wire is checked before it is opened).
    public init(_ bytes: [UInt8]) {
        precondition(bytes.count == Self.count, "an IPC handle is \(Self.count) bytes")
        self.bytes = bytes
    }

    public init(checking bytes: [UInt8]) throws(FreightError) {
        guard bytes.count == Self.count else {
            throw FreightError(.invalidArgument, "a CUDA IPC handle is \(Self.count) bytes, not \(bytes.count)")
        }
        self.bytes = bytes
    }
}
