import FreightFuzzing

/// libFuzzer's entry: every input goes to ``FuzzTargets/run(_:)`` (Sources/FreightFuzzing).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    FuzzTargets.run(Array(UnsafeBufferPointer(start: data, count: count)))
    return 0
}
