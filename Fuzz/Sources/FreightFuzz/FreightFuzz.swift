import FreightFuzzing

#if canImport(Glibc)
    import Glibc
#endif

/// libFuzzer's entry: every input goes to `FuzzTargets.run` (Sources/FreightFuzzing).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    if let data { FuzzTargets.run(Array(UnsafeBufferPointer(start: data, count: count))) }
    return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
func runDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

/// SwiftPM points `main` at this symbol for an executable target; libFuzzer brings a `main` of its own. The link
/// allows both (scripts/fuzz.sh), and whichever is taken runs libFuzzer's driver over `fuzzOne`.
@_cdecl("FreightFuzz_main")
public func fuzzMain(
    _ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    var count = argc
    var arguments = argv
    return runDriver(&count, &arguments, fuzzOne)
}
