import CFreightSystem
import FreightCore

#if canImport(Glibc)
    import Glibc
#endif

/// NVIDIA's CUDA driver API, loaded at run time (docs/gpu.md, "No build-time CUDA"): `libcuda.so.1` is opened with
/// `dlopen` and the few functions Freight calls are resolved with `dlsym` under their versioned names. Nothing links
/// against CUDA, so Freight builds and runs on a machine without a driver or a GPU; ``load(library:)`` then says
/// plainly which is missing. The driver's calls are thread-safe; this type holds only resolved function pointers.
public final class CUDADriver: @unchecked Sendable {  // immutable after load: C function pointers and the handle
    /// `CUresult`: 0 is success.
    public typealias Result = Int32
    /// `CUDA_ERROR_NOT_READY`: queued work not done yet (an event query's "no").
    static let notReady: Result = 600

    /// The driver API's functions Freight calls, as `@convention(c)` types of cuda.h's signatures: `CUresult` is an
    /// `Int32`, `CUdevice` an `Int32`, `CUdeviceptr` a `UInt64`, contexts, streams and events opaque pointers, and an
    /// IPC handle 64 bytes passed by value (`freight_cu_ipc_mem_handle`, C's layout).
    struct API {
        typealias Init = @convention(c) (UInt32) -> Result
        typealias DriverGetVersion = @convention(c) (UnsafeMutablePointer<Int32>) -> Result
        typealias DeviceGetCount = @convention(c) (UnsafeMutablePointer<Int32>) -> Result
        typealias DeviceGet = @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Result
        typealias DeviceGetName = @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> Result
        typealias DeviceGetAttribute = @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> Result
        typealias DeviceTotalMem = @convention(c) (UnsafeMutablePointer<Int>, Int32) -> Result
        /// `CUuuid` is 16 bytes: a pointer to them.
        typealias DeviceGetUuid = @convention(c) (UnsafeMutablePointer<UInt8>, Int32) -> Result
        typealias GetErrorText = @convention(c) (Result, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Result
        typealias PrimaryCtxRetain = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, Int32) -> Result
        typealias PrimaryCtxRelease = @convention(c) (Int32) -> Result
        typealias CtxSetCurrent = @convention(c) (OpaquePointer?) -> Result
        typealias MemAlloc = @convention(c) (UnsafeMutablePointer<UInt64>, Int) -> Result
        typealias MemFree = @convention(c) (UInt64) -> Result
        typealias MemGetAddressRange =
            @convention(c) (UnsafeMutablePointer<UInt64>?, UnsafeMutablePointer<Int>?, UInt64)
            -> Result
        typealias MemHostRegister = @convention(c) (UnsafeMutableRawPointer, Int, UInt32) -> Result
        typealias MemHostUnregister = @convention(c) (UnsafeMutableRawPointer) -> Result
        typealias MemcpyDtoHAsync = @convention(c) (UnsafeMutableRawPointer, UInt64, Int, OpaquePointer?) -> Result
        typealias MemcpyHtoDAsync = @convention(c) (UInt64, UnsafeRawPointer, Int, OpaquePointer?) -> Result
        typealias MemcpyDtoDAsync = @convention(c) (UInt64, UInt64, Int, OpaquePointer?) -> Result
        typealias StreamCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UInt32) -> Result
        typealias ObjectCall = @convention(c) (OpaquePointer?) -> Result
        typealias EventCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UInt32) -> Result
        typealias EventRecord = @convention(c) (OpaquePointer?, OpaquePointer?) -> Result
        typealias IpcGetMemHandle = @convention(c) (UnsafeMutablePointer<freight_cu_ipc_mem_handle>, UInt64) -> Result
        typealias IpcOpenMemHandle =
            @convention(c) (UnsafeMutablePointer<UInt64>, freight_cu_ipc_mem_handle, UInt32)
            -> Result
        typealias IpcCloseMemHandle = @convention(c) (UInt64) -> Result

        var cuInit: Init
        var cuDriverGetVersion: DriverGetVersion
        var cuDeviceGetCount: DeviceGetCount
        var cuDeviceGet: DeviceGet
        var cuDeviceGetName: DeviceGetName
        var cuDeviceGetAttribute: DeviceGetAttribute
        var cuDeviceTotalMem: DeviceTotalMem
        var cuDeviceGetUuid: DeviceGetUuid
        var cuGetErrorName: GetErrorText
        var cuGetErrorString: GetErrorText
        var cuDevicePrimaryCtxRetain: PrimaryCtxRetain
        var cuDevicePrimaryCtxRelease: PrimaryCtxRelease
        var cuCtxSetCurrent: CtxSetCurrent
        var cuMemAlloc: MemAlloc
        var cuMemFree: MemFree
        var cuMemGetAddressRange: MemGetAddressRange
        var cuMemHostRegister: MemHostRegister
        var cuMemHostUnregister: MemHostUnregister
        var cuMemcpyDtoHAsync: MemcpyDtoHAsync
        var cuMemcpyHtoDAsync: MemcpyHtoDAsync
        var cuMemcpyDtoDAsync: MemcpyDtoDAsync
        var cuStreamCreate: StreamCreate
        var cuStreamDestroy: ObjectCall
        var cuStreamSynchronize: ObjectCall
        var cuEventCreate: EventCreate
        var cuEventRecord: EventRecord
        var cuEventQuery: ObjectCall
        var cuEventSynchronize: ObjectCall
        var cuEventDestroy: ObjectCall
        var cuIpcGetMemHandle: IpcGetMemHandle
        var cuIpcOpenMemHandle: IpcOpenMemHandle
        var cuIpcCloseMemHandle: IpcCloseMemHandle

        init(_ symbol: (String) throws(FreightError) -> UnsafeMutableRawPointer) throws(FreightError) {
            func resolve<T>(_ name: String, _ type: T.Type) throws(FreightError) -> T {
                unsafeBitCast(try symbol(name), to: type)
            }
            cuInit = try resolve("cuInit", Init.self)
            cuDriverGetVersion = try resolve("cuDriverGetVersion", DriverGetVersion.self)
            cuDeviceGetCount = try resolve("cuDeviceGetCount", DeviceGetCount.self)
            cuDeviceGet = try resolve("cuDeviceGet", DeviceGet.self)
            cuDeviceGetName = try resolve("cuDeviceGetName", DeviceGetName.self)
            cuDeviceGetAttribute = try resolve("cuDeviceGetAttribute", DeviceGetAttribute.self)
            cuDeviceTotalMem = try resolve("cuDeviceTotalMem_v2", DeviceTotalMem.self)
            cuDeviceGetUuid = try resolve("cuDeviceGetUuid_v2", DeviceGetUuid.self)
            cuGetErrorName = try resolve("cuGetErrorName", GetErrorText.self)
            cuGetErrorString = try resolve("cuGetErrorString", GetErrorText.self)
            cuDevicePrimaryCtxRetain = try resolve("cuDevicePrimaryCtxRetain", PrimaryCtxRetain.self)
            cuDevicePrimaryCtxRelease = try resolve("cuDevicePrimaryCtxRelease_v2", PrimaryCtxRelease.self)
            cuCtxSetCurrent = try resolve("cuCtxSetCurrent", CtxSetCurrent.self)
            cuMemAlloc = try resolve("cuMemAlloc_v2", MemAlloc.self)
            cuMemFree = try resolve("cuMemFree_v2", MemFree.self)
            cuMemGetAddressRange = try resolve("cuMemGetAddressRange_v2", MemGetAddressRange.self)
            cuMemHostRegister = try resolve("cuMemHostRegister_v2", MemHostRegister.self)
            cuMemHostUnregister = try resolve("cuMemHostUnregister", MemHostUnregister.self)
            cuMemcpyDtoHAsync = try resolve("cuMemcpyDtoHAsync_v2", MemcpyDtoHAsync.self)
            cuMemcpyHtoDAsync = try resolve("cuMemcpyHtoDAsync_v2", MemcpyHtoDAsync.self)
            cuMemcpyDtoDAsync = try resolve("cuMemcpyDtoDAsync_v2", MemcpyDtoDAsync.self)
            cuStreamCreate = try resolve("cuStreamCreate", StreamCreate.self)
            cuStreamDestroy = try resolve("cuStreamDestroy_v2", ObjectCall.self)
            cuStreamSynchronize = try resolve("cuStreamSynchronize", ObjectCall.self)
            cuEventCreate = try resolve("cuEventCreate", EventCreate.self)
            cuEventRecord = try resolve("cuEventRecord", EventRecord.self)
            cuEventQuery = try resolve("cuEventQuery", ObjectCall.self)
            cuEventSynchronize = try resolve("cuEventSynchronize", ObjectCall.self)
            cuEventDestroy = try resolve("cuEventDestroy_v2", ObjectCall.self)
            cuIpcGetMemHandle = try resolve("cuIpcGetMemHandle", IpcGetMemHandle.self)
            cuIpcOpenMemHandle = try resolve("cuIpcOpenMemHandle_v2", IpcOpenMemHandle.self)
            cuIpcCloseMemHandle = try resolve("cuIpcCloseMemHandle", IpcCloseMemHandle.self)
        }
    }

    /// The library's path as opened, for messages.
    public let library: String
    // The handle stays open for the process's life: the resolved pointers point into it.
    private let handle: UnsafeMutableRawPointer
    let api: API

    /// Every function Freight resolves, under the names the driver exports them by (in the order they are resolved).
    public static let requiredSymbols = [
        "cuInit", "cuDriverGetVersion", "cuDeviceGetCount", "cuDeviceGet", "cuDeviceGetName", "cuDeviceGetAttribute",
        "cuDeviceTotalMem_v2", "cuDeviceGetUuid_v2", "cuGetErrorName", "cuGetErrorString", "cuDevicePrimaryCtxRetain",
        "cuDevicePrimaryCtxRelease_v2", "cuCtxSetCurrent", "cuMemAlloc_v2", "cuMemFree_v2", "cuMemGetAddressRange_v2",
        "cuMemHostRegister_v2", "cuMemHostUnregister", "cuMemcpyDtoHAsync_v2", "cuMemcpyHtoDAsync_v2",
        "cuMemcpyDtoDAsync_v2", "cuStreamCreate", "cuStreamDestroy_v2", "cuStreamSynchronize", "cuEventCreate",
        "cuEventRecord",
        "cuEventQuery", "cuEventSynchronize", "cuEventDestroy_v2", "cuIpcGetMemHandle", "cuIpcOpenMemHandle_v2",
        "cuIpcCloseMemHandle",
    ]

    /// Opens the driver and initialises it. Throws `FreightError` with `.io` when there is no driver (the library
    /// cannot be opened, or is not CUDA's) and with `.connectionFailed` when the driver finds no GPU.
    public static func load(library: String = "libcuda.so.1") throws(FreightError) -> CUDADriver {
        guard let handle = dlopen(library, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "dlopen failed"
            throw FreightError(.io, "no NVIDIA driver: \(library) cannot be opened (\(reason))")
        }
        let api: API
        do {
            api = try API { name throws(FreightError) in
                guard let pointer = dlsym(handle, name) else {
                    throw FreightError(.io, "\(library) has no \(name): it is not NVIDIA's CUDA driver, or too old")
                }
                return pointer
            }
        } catch {
            dlclose(handle)
            throw error
        }
        let driver = CUDADriver(library: library, handle: handle, api: api)
        let code = api.cuInit(0)
        guard code == 0 else {
            throw FreightError(
                .connectionFailed, "cuInit failed: \(driver.describe(code)) (no GPU visible to this process?)")
        }
        return driver
    }

    private init(library: String, handle: UnsafeMutableRawPointer, api: API) {
        self.library = library
        self.handle = handle
        self.api = api
    }

    /// `NAME: description` of a `CUresult`.
    public func describe(_ code: Result) -> String {
        var name: UnsafePointer<CChar>?
        var text: UnsafePointer<CChar>?
        _ = api.cuGetErrorName(code, &name)
        _ = api.cuGetErrorString(code, &text)
        let named = name.map { String(cString: $0) } ?? "CUDA error \(code)"
        return text.map { "\(named): \(String(cString: $0))" } ?? named
    }

    func check(_ code: Result, _ call: String) throws(FreightError) {
        guard code == 0 else { throw FreightError(.internalError, "\(call) failed: \(describe(code))") }
    }

    /// The driver's CUDA version, as `major.minor`.
    public func version() throws(FreightError) -> String {
        var version: Int32 = 0
        try check(api.cuDriverGetVersion(&version), "cuDriverGetVersion")
        return "\(version / 1000).\(version % 1000 / 10)"
    }

    /// A GPU's UUID as `nvidia-smi -L` writes it (`GPU-` and 32 hex digits in groups of 8-4-4-4-12): what names
    /// a GPU across processes, whose ordinals `CUDA_VISIBLE_DEVICES` may renumber.
    func uuid(of device: Int32) throws(FreightError) -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        try check(api.cuDeviceGetUuid(&bytes, device), "cuDeviceGetUuid")
        return GPUName.text(bytes)
    }

    /// What the driver says of each GPU it sees.
    public func devices() throws(FreightError) -> [CUDADevice] {
        var count: Int32 = 0
        try check(api.cuDeviceGetCount(&count), "cuDeviceGetCount")
        var found: [CUDADevice] = []
        for ordinal in 0..<count {
            var device: Int32 = 0
            try check(api.cuDeviceGet(&device, ordinal), "cuDeviceGet")
            var name = [CChar](repeating: 0, count: 256)
            try check(api.cuDeviceGetName(&name, Int32(name.count), device), "cuDeviceGetName")
            var bytes = 0
            try check(api.cuDeviceTotalMem(&bytes, device), "cuDeviceTotalMem")
            let uuid = try self.uuid(of: device)
            func attribute(_ id: CUDADevice.Attribute) throws(FreightError) -> Int {
                var value: Int32 = 0
                try check(api.cuDeviceGetAttribute(&value, id.rawValue, device), "cuDeviceGetAttribute(\(id))")
                return Int(value)
            }
            found.append(
                CUDADevice(
                    index: Int(ordinal), uuid: uuid,
                    name: String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self),
                    memoryBytes: bytes, pciBus: try attribute(.pciBusID),
                    canMapHostMemory: try attribute(.canMapHostMemory) == 1,
                    unifiedAddressing: try attribute(.unifiedAddressing) == 1,
                    asyncEngines: try attribute(.asyncEngineCount)))
        }
        return found
    }
}

/// One GPU as the driver describes it.
public struct CUDADevice: Sendable, Hashable {
    /// `CUdevice_attribute` values Freight reads (cuda.h).
    enum Attribute: Int32, CustomStringConvertible {
        case canMapHostMemory = 19
        case pciBusID = 33
        case asyncEngineCount = 40
        case unifiedAddressing = 41

        var description: String {
            switch self {
            case .canMapHostMemory: "CAN_MAP_HOST_MEMORY"
            case .pciBusID: "PCI_BUS_ID"
            case .asyncEngineCount: "ASYNC_ENGINE_COUNT"
            case .unifiedAddressing: "UNIFIED_ADDRESSING"
            }
        }
    }

    public var index: Int
    /// `GPU-…`, as `nvidia-smi -L` writes it.
    public var uuid: String
    public var name: String
    public var memoryBytes: Int
    public var pciBus: Int
    /// Host memory can be pinned and mapped for this GPU's copy engines (staging between nodes).
    public var canMapHostMemory: Bool
    /// One address space for host and device (CUDA IPC and pointer queries need it).
    public var unifiedAddressing: Bool
    /// Copy engines that run beside the compute engine: 2 copy in both directions at once.
    public var asyncEngines: Int

    /// Another process on this GPU can map its memory from an IPC handle (CUDA IPC needs unified addressing): the
    /// planner's `cuda-ipc` capability.
    public var sharesByIPC: Bool { unifiedAddressing }
    /// Its copy engines can read and write pinned host memory: the planner's `gpu-staged` capability.
    public var stagesThroughHost: Bool { canMapHostMemory }
    /// The transports this GPU allows, by the planner's names.
    public var transports: [String] { (sharesByIPC ? ["cuda-ipc"] : []) + (stagesThroughHost ? ["gpu-staged"] : []) }
}
