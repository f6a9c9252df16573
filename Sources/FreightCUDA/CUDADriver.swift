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

    typealias Init = @convention(c) (UInt32) -> Result
    typealias DriverGetVersion = @convention(c) (UnsafeMutablePointer<Int32>) -> Result
    typealias DeviceGetCount = @convention(c) (UnsafeMutablePointer<Int32>) -> Result
    typealias DeviceGet = @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Result
    typealias DeviceGetName = @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> Result
    typealias DeviceGetAttribute = @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> Result
    typealias DeviceTotalMem = @convention(c) (UnsafeMutablePointer<Int>, Int32) -> Result
    typealias GetErrorText = @convention(c) (Result, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Result

    /// The library's path as opened, for messages.
    public let library: String
    // The handle stays open for the process's life: the resolved pointers point into it.
    private let handle: UnsafeMutableRawPointer
    private let cuInit: Init
    private let cuDriverGetVersion: DriverGetVersion
    private let cuDeviceGetCount: DeviceGetCount
    private let cuDeviceGet: DeviceGet
    private let cuDeviceGetName: DeviceGetName
    private let cuDeviceGetAttribute: DeviceGetAttribute
    private let cuDeviceTotalMem: DeviceTotalMem
    private let cuGetErrorName: GetErrorText
    private let cuGetErrorString: GetErrorText

    /// The functions every use needs, under the names the driver exports them by.
    public static let requiredSymbols = [
        "cuInit", "cuDriverGetVersion", "cuDeviceGetCount", "cuDeviceGet", "cuDeviceGetName", "cuDeviceGetAttribute",
        "cuDeviceTotalMem_v2", "cuGetErrorName", "cuGetErrorString",
    ]

    /// Opens the driver and initialises it. Throws `FreightError` with `.io` when there is no driver (the library
    /// cannot be opened, or is not CUDA's) and with `.connectionFailed` when the driver finds no GPU.
    public static func load(library: String = "libcuda.so.1") throws(FreightError) -> CUDADriver {
        guard let handle = dlopen(library, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "dlopen failed"
            throw FreightError(.io, "no NVIDIA driver: \(library) cannot be opened (\(reason))")
        }
        func symbol<T>(_ name: String, as type: T.Type) throws(FreightError) -> T {
            guard let pointer = dlsym(handle, name) else {
                throw FreightError(.io, "\(library) has no \(name): it is not NVIDIA's CUDA driver, or too old")
            }
            return unsafeBitCast(pointer, to: type)
        }
        let driver: CUDADriver
        do {
            driver = CUDADriver(
                library: library, handle: handle, cuInit: try symbol("cuInit", as: Init.self),
                cuDriverGetVersion: try symbol("cuDriverGetVersion", as: DriverGetVersion.self),
                cuDeviceGetCount: try symbol("cuDeviceGetCount", as: DeviceGetCount.self),
                cuDeviceGet: try symbol("cuDeviceGet", as: DeviceGet.self),
                cuDeviceGetName: try symbol("cuDeviceGetName", as: DeviceGetName.self),
                cuDeviceGetAttribute: try symbol("cuDeviceGetAttribute", as: DeviceGetAttribute.self),
                cuDeviceTotalMem: try symbol("cuDeviceTotalMem_v2", as: DeviceTotalMem.self),
                cuGetErrorName: try symbol("cuGetErrorName", as: GetErrorText.self),
                cuGetErrorString: try symbol("cuGetErrorString", as: GetErrorText.self))
        } catch {
            dlclose(handle)
            throw error
        }
        let code = driver.cuInit(0)
        guard code == 0 else {
            throw FreightError(
                .connectionFailed, "cuInit failed: \(driver.describe(code)) (no GPU visible to this process?)")
        }
        return driver
    }

    private init(
        library: String, handle: UnsafeMutableRawPointer, cuInit: @escaping Init,
        cuDriverGetVersion: @escaping DriverGetVersion, cuDeviceGetCount: @escaping DeviceGetCount,
        cuDeviceGet: @escaping DeviceGet, cuDeviceGetName: @escaping DeviceGetName,
        cuDeviceGetAttribute: @escaping DeviceGetAttribute, cuDeviceTotalMem: @escaping DeviceTotalMem,
        cuGetErrorName: @escaping GetErrorText, cuGetErrorString: @escaping GetErrorText
    ) {
        self.library = library
        self.handle = handle
        self.cuInit = cuInit
        self.cuDriverGetVersion = cuDriverGetVersion
        self.cuDeviceGetCount = cuDeviceGetCount
        self.cuDeviceGet = cuDeviceGet
        self.cuDeviceGetName = cuDeviceGetName
        self.cuDeviceGetAttribute = cuDeviceGetAttribute
        self.cuDeviceTotalMem = cuDeviceTotalMem
        self.cuGetErrorName = cuGetErrorName
        self.cuGetErrorString = cuGetErrorString
    }

    /// `NAME: description` of a `CUresult`.
    public func describe(_ code: Result) -> String {
        var name: UnsafePointer<CChar>?
        var text: UnsafePointer<CChar>?
        _ = cuGetErrorName(code, &name)
        _ = cuGetErrorString(code, &text)
        let named = name.map { String(cString: $0) } ?? "CUDA error \(code)"
        return text.map { "\(named): \(String(cString: $0))" } ?? named
    }

    func check(_ code: Result, _ call: String) throws(FreightError) {
        guard code == 0 else { throw FreightError(.internalError, "\(call) failed: \(describe(code))") }
    }

    /// The driver's CUDA version, as `major.minor`.
    public func version() throws(FreightError) -> String {
        var version: Int32 = 0
        try check(cuDriverGetVersion(&version), "cuDriverGetVersion")
        return "\(version / 1000).\(version % 1000 / 10)"
    }

    /// What the driver says of each GPU it sees.
    public func devices() throws(FreightError) -> [CUDADevice] {
        var count: Int32 = 0
        try check(cuDeviceGetCount(&count), "cuDeviceGetCount")
        var found: [CUDADevice] = []
        for ordinal in 0..<count {
            var device: Int32 = 0
            try check(cuDeviceGet(&device, ordinal), "cuDeviceGet")
            var name = [CChar](repeating: 0, count: 256)
            try check(cuDeviceGetName(&name, Int32(name.count), device), "cuDeviceGetName")
            var bytes = 0
            try check(cuDeviceTotalMem(&bytes, device), "cuDeviceTotalMem")
            func attribute(_ id: CUDADevice.Attribute) throws(FreightError) -> Int {
                var value: Int32 = 0
                try check(cuDeviceGetAttribute(&value, id.rawValue, device), "cuDeviceGetAttribute(\(id))")
                return Int(value)
            }
            found.append(
                CUDADevice(
                    index: Int(ordinal),
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
    public var name: String
    public var memoryBytes: Int
    public var pciBus: Int
    /// Host memory can be pinned and mapped for this GPU's copy engines (staging between nodes).
    public var canMapHostMemory: Bool
    /// One address space for host and device (CUDA IPC and pointer queries need it).
    public var unifiedAddressing: Bool
    /// Copy engines that run beside the compute engine: 2 copy in both directions at once.
    public var asyncEngines: Int
}
