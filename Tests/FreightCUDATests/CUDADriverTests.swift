import FreightCUDA
import FreightCore
import Testing

/// The CUDA driver loaded at run time (docs/gpu.md): on a machine without NVIDIA's driver, or with a library that is
/// not it, Freight says plainly what is missing instead of failing to start or to build.
@Suite struct CUDADriverTests {
    @Test func aMissingDriverIsSaidPlainly() throws {
        let error = #expect(throws: FreightError.self) {
            try CUDADriver.load(library: "libcuda-freight-absent.so.1")
        }
        #expect(error?.code == .io)
        #expect(error?.message.contains("no NVIDIA driver") == true, "\(String(describing: error))")
        #expect(error?.message.contains("libcuda-freight-absent.so.1") == true)
    }

    /// A library that opens but is not CUDA's (the C library) is refused, naming the first function it lacks.
    @Test func aLibraryThatIsNotTheDriverIsRefused() throws {
        let error = #expect(throws: FreightError.self) { try CUDADriver.load(library: "libc.so.6") }
        #expect(error?.message.contains("has no cuInit") == true, "\(String(describing: error))")
    }

    /// Where this machine has the driver, it initialises and describes its GPUs; where it has none, the default
    /// load fails with one of the two plain reasons (no driver, or no GPU), never anything else.
    @Test func theDefaultLoadEitherWorksOrSaysWhy() throws {
        do {
            let driver = try CUDADriver.load()
            let devices = try driver.devices()
            #expect(devices.map(\.index) == Array(devices.indices))
            #expect(devices.allSatisfy { !$0.name.isEmpty && $0.memoryBytes > 0 })
        } catch {
            #expect(
                error.message.contains("no NVIDIA driver") || error.message.contains("cuInit failed"),
                "\(error.message)")
        }
    }
}
