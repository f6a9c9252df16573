import FreightCore
import FreightTransport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A node maps descriptors that apps send it only when they are sealed pools of exactly the declared size: a file
/// that could shrink under the mapping would fault the node when touched.
@Suite struct SharedMappingTests {
    @Test func createdPoolsAreSealedAndAdoptable() throws {
        let pool = try SharedMapping.create(size: 1 << 20, name: "test")
        pool.base.storeBytes(of: 0xAB, as: UInt8.self)
        #expect(ftruncate(pool.fd, 4096) != 0, "a pool cannot shrink")
        let copy = try SharedMapping.adopt(fd: dup(pool.fd), size: 1 << 20, writable: false)
        #expect(copy.base.load(as: UInt8.self) == 0xAB, "both mappings are the same memory")
        #expect(copy.bytes(offset: (1 << 20) - 1, length: 1) != nil)
        #expect(copy.bytes(offset: 1 << 20, length: 1) == nil)
        #expect(copy.bytes(offset: UInt64.max, length: 2) == nil)
    }

    @Test func refusesWhatIsNotASealedPoolOfTheDeclaredSize() throws {
        let pool = try SharedMapping.create(size: 1 << 20, name: "test")
        #expect(throws: FreightError.self) { try SharedMapping.adopt(fd: dup(pool.fd), size: 2 << 20, writable: false) }
        var pipes: [Int32] = [-1, -1]
        #expect(pipe(&pipes) == 0)
        close(pipes[1])
        #expect(throws: FreightError.self) { try SharedMapping.adopt(fd: pipes[0], size: 4096, writable: false) }
        // An ordinary file could be truncated by its owner after the node mapped it.
        let path = "/tmp/freight-unsealed-\(getpid())"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        unlink(path)
        #expect(ftruncate(fd, 4096) == 0)
        #expect(throws: FreightError.self) { try SharedMapping.adopt(fd: fd, size: 4096, writable: false) }
    }
}
