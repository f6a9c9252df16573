#ifndef CFREIGHT_SYSTEM_H
#define CFREIGHT_SYSTEM_H
#include <stddef.h>
#include <sys/types.h>

/// Keeps glibc from trimming freed chunk buffers back to the kernel (see MemoryTuning.swift).
void freight_tune_malloc(int mmap_threshold, int trim_threshold);
/// Returns the allocator's free memory to the kernel (glibc `malloc_trim`): after a large table was dropped.
void freight_trim_memory(void);

/// An anonymous shared-memory file of `size` bytes (memfd, close-on-exec), sealed so that it can never shrink
/// or grow: a process that maps it can never be made to touch memory past its end. -1 with errno on failure.
int freight_memfd(const char *name, off_t size);
/// 0 when `fd` is a file of exactly `size` bytes sealed against shrinking; -1 otherwise.
int freight_memfd_check(int fd, off_t size);

/// Allocates the blocks of `[offset, offset + length)` of a file (`fallocate(2)`, mode 0: the size grows to cover
/// them). Returns 0, or the errno: EOPNOTSUPP where the filesystem cannot, ENOSPC where it is full.
int freight_fallocate(int fd, off_t offset, off_t length);

/// Whether a node may send from `fd` with `sendfile` in its event loop: 0 when it is open for reading through the
/// page cache (not O_PATH, not O_DIRECT) on a local filesystem (tmpfs, ext2/3/4, xfs, btrfs, f2fs, zfs); 1 when its
/// open mode is wrong; 2 when its filesystem is another (a network or user-space one may keep a read waiting).
int freight_lendable_file(int fd);

/// A listening Unix socket at `path` (an existing file there is removed first); -1 on failure.
/// `seqpacket` picks SOCK_SEQPACKET (message boundaries kept) over SOCK_STREAM; connect takes the same flag.
int freight_unix_listen(const char *path, int backlog, int seqpacket);
int freight_unix_connect_type(const char *path, int seqpacket);
/// Sets a receive timeout in milliseconds on a socket.
int freight_set_receive_timeout(int sock, int millis);
/// accept(2) with close-on-exec, retried on EINTR; -1 once the socket is shut down.
int freight_accept(int sock);

/// Sends `length` bytes with `count` descriptors attached (SCM_RIGHTS, at most 4). Returns bytes sent or -1.
ssize_t freight_send_with_fds(int sock, const void *data, size_t length, const int *fds, int count, int flags);
/// Receives up to `capacity` bytes and up to `capacity_fds` (at most 4) descriptors into `fds`, the count in
/// *count; extra descriptors are closed. Returns bytes received, 0 at end of stream, -1 on error.
ssize_t freight_recv_with_fds(int sock, void *data, size_t capacity, int *fds, int capacity_fds, int *count);

/// Reads straight into a receive pool: the allocation hooks of a SwiftNIO `ByteBufferAllocator` whose next
/// allocation on this thread is a given address (a region of a mapped pool) instead of new memory.
/// `freight_direct_arm` records `address` as lent and makes it the next allocation on the calling thread; it
/// returns 0 (nothing armed) when `FREIGHT_DIRECT_SLOTS` addresses are lent already. The hooks never read, write
/// or free a lent address: `freight_direct_free` only forgets it; every other address is the C allocator's.
#define FREIGHT_DIRECT_SLOTS 256
int freight_direct_arm(void *address);
/// Disarms the calling thread (an armed address that was not allocated is forgotten).
void freight_direct_disarm(void);
void *freight_direct_allocate(size_t size);
void *freight_direct_reallocate(void *pointer, size_t old_size, size_t new_size);
void freight_direct_free(void *pointer);
void freight_direct_copy(void *destination, const void *source, size_t count);
/// Addresses lent and not yet freed (for tests).
int freight_direct_outstanding(void);

/// A TUN device `name` (IFF_TUN, no packet information) made inside the network namespace at `netns_path` (empty
/// or NULL: this one), given `address` with `peer` at the other end (point to point, IPv4) and `mtu`, and set up.
/// The calling thread returns to its own namespace. Returns the device's descriptor (close-on-exec), or -1 with
/// errno. The device goes when the descriptor is closed.
int freight_tun_open(const char *netns_path, const char *name, const char *address, const char *peer, int mtu);

/// CUDA's `CUipcMemHandle` (cuda.h): 64 opaque bytes, passed by value to `cuIpcOpenMemHandle`. Declared here so that
/// Swift calls the driver, which Freight loads at run time (Sources/FreightCUDA), with C's struct-passing rules.
typedef struct {
    char reserved[64];
} freight_cu_ipc_mem_handle;
#endif
