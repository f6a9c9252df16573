/// Hands out aligned regions of one range of offsets (a half of a shared-memory pool) and takes them back.
/// Pure bookkeeping: first fit over a sorted free list, neighbours merged on free. Frees are checked against what
/// was handed out, so a wrong or repeated release (from another process) is refused rather than corrupting it.
public struct RegionAllocator: Sendable, Hashable {
    public static let alignment = 4096

    public let range: Range<Int>
    /// Free ranges, sorted and never adjacent.
    private var free: [Range<Int>]
    /// Allocated regions: offset → rounded size.
    private var allocated: [Int: Int] = [:]
    public private(set) var allocatedBytes = 0

    public init(range: Range<Int>) {
        precondition(range.lowerBound % Self.alignment == 0, "pool halves start on a page")
        self.range = range
        self.free = range.isEmpty ? [] : [range]
    }

    public var capacity: Int { range.count }
    public var freeBytes: Int { capacity - allocatedBytes }
    public var regionCount: Int { allocated.count }

    public static func rounded(_ count: Int) -> Int {
        (max(count, 1) + alignment - 1) / alignment * alignment
    }

    /// The offset of a new region of at least `count` bytes, or nil when no free range is large enough.
    public mutating func allocate(_ count: Int) -> Int? {
        guard count > 0, count <= capacity else { return nil }
        let size = Self.rounded(count)
        guard let index = free.firstIndex(where: { $0.count >= size }) else { return nil }
        let offset = free[index].lowerBound
        if free[index].count == size {
            free.remove(at: index)
        } else {
            free[index] = (offset + size)..<free[index].upperBound
        }
        allocated[offset] = size
        allocatedBytes += size
        return offset
    }

    /// Whether `offset` starts a region handed out by this allocator and not yet freed.
    public func isAllocated(_ offset: Int) -> Bool { allocated[offset] != nil }

    /// The rounded size of the region at `offset`, if it is allocated.
    public func size(at offset: Int) -> Int? { allocated[offset] }

    /// Returns a region. False (and nothing changes) when `offset` is not an allocated region's start.
    @discardableResult
    public mutating func free(_ offset: Int) -> Bool {
        guard let size = allocated.removeValue(forKey: offset) else { return false }
        allocatedBytes -= size
        var region = offset..<(offset + size)
        let index = free.firstIndex { $0.lowerBound > offset } ?? free.endIndex
        var insertAt = index
        if index < free.endIndex, free[index].lowerBound == region.upperBound {
            region = region.lowerBound..<free[index].upperBound
            free.remove(at: index)
        }
        if index > 0, free[index - 1].upperBound == region.lowerBound {
            region = free[index - 1].lowerBound..<region.upperBound
            free.remove(at: index - 1)
            insertAt = index - 1
        }
        free.insert(region, at: insertAt)
        return true
    }
}
