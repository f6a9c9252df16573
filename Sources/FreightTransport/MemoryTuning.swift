import CFreightSystem

/// Keeps the C allocator from handing chunk-sized buffers back to the kernel after every write. Without this,
/// glibc returns freed memory of an event loop's arena each time its write queue drains, and every page of the next
/// chunk faults back in (docs/performance.md).
public enum MemoryTuning {
    public static func apply() {
        freight_tune_malloc(32 * 1024 * 1024, 512 * 1024 * 1024)
    }

    /// Entries dropped at once past which the memory they held is handed back to the kernel (the trim threshold
    /// above keeps up to 512 MiB otherwise): a peer that announced a million endpoints and left.
    public static let trimAfterDroppedEntries = 10_000

    /// Hands the allocator's free memory back to the kernel.
    public static func returnFreeMemory() {
        freight_trim_memory()
    }
}
