#define _GNU_SOURCE
#include "CFreightSystem.h"
#include <errno.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

void freight_tune_malloc(int mmap_threshold, int trim_threshold) {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, mmap_threshold);
    mallopt(M_TRIM_THRESHOLD, trim_threshold);
#endif
}

void freight_trim_memory(void) {
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
}

int freight_memfd(const char *name, off_t size) {
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return -1;
    if (ftruncate(fd, size) != 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int freight_memfd_check(int fd, off_t size) {
    struct stat info;
    if (fstat(fd, &info) != 0 || info.st_size != size) return -1;
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK)) return -1;
    return 0;
}

static int unix_address(const char *path, struct sockaddr_un *address) {
    memset(address, 0, sizeof(*address));
    address->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(address->sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(address->sun_path, path);
    return 0;
}

int freight_unix_connect_type(const char *path, int seqpacket) {
    struct sockaddr_un address;
    if (unix_address(path, &address) != 0) return -1;
    int fd = socket(AF_UNIX, (seqpacket ? SOCK_SEQPACKET : SOCK_STREAM) | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&address, sizeof(address)) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int freight_unix_listen(const char *path, int backlog, int seqpacket) {
    struct sockaddr_un address;
    if (unix_address(path, &address) != 0) return -1;
    int fd = socket(AF_UNIX, (seqpacket ? SOCK_SEQPACKET : SOCK_STREAM) | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    unlink(path);
    if (bind(fd, (struct sockaddr *)&address, sizeof(address)) != 0 || listen(fd, backlog) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int freight_set_receive_timeout(int sock, int millis) {
    struct timeval timeout = {.tv_sec = millis / 1000, .tv_usec = (millis % 1000) * 1000};
    return setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
}

ssize_t freight_send_with_fds(int sock, const void *data, size_t length, const int *fds, int count, int flags) {
    if (count < 0 || count > 4) {
        errno = EINVAL;
        return -1;
    }
    struct iovec io = {.iov_base = (void *)data, .iov_len = length};
    union {
        char buffer[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } control;
    struct msghdr message;
    memset(&message, 0, sizeof(message));
    message.msg_iov = &io;
    message.msg_iovlen = 1;
    if (count > 0) {
        memset(&control, 0, sizeof(control));
        message.msg_control = control.buffer;
        message.msg_controllen = CMSG_SPACE(sizeof(int) * count);
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int) * count);
        memcpy(CMSG_DATA(header), fds, sizeof(int) * count);
    }
    ssize_t sent;
    do {
        sent = sendmsg(sock, &message, flags | MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    return sent;
}

ssize_t freight_recv_with_fds(int sock, void *data, size_t capacity, int *fds, int capacity_fds, int *count) {
    struct iovec io = {.iov_base = data, .iov_len = capacity};
    union {
        char buffer[CMSG_SPACE(sizeof(int) * 8)];
        struct cmsghdr align;
    } control;
    struct msghdr message;
    memset(&message, 0, sizeof(message));
    message.msg_iov = &io;
    message.msg_iovlen = 1;
    message.msg_control = control.buffer;
    message.msg_controllen = sizeof(control.buffer);
    *count = 0;
    ssize_t received;
    do {
        received = recvmsg(sock, &message, MSG_CMSG_CLOEXEC);
    } while (received < 0 && errno == EINTR);
    if (received < 0) return -1;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level == SOL_SOCKET && header->cmsg_type == SCM_RIGHTS) {
            int n = (int)((header->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            int got[8];
            if (n > 8) n = 8;
            memcpy(got, CMSG_DATA(header), sizeof(int) * n);
            for (int i = 0; i < n; i++) {
                if (*count < capacity_fds && *count < 4) fds[(*count)++] = got[i];
                else close(got[i]);  // never leak a descriptor nobody asked for
            }
        }
    }
    return received;
}

int freight_accept(int sock) {
    int fd;
    do {
        fd = accept4(sock, NULL, NULL, SOCK_CLOEXEC);
    } while (fd < 0 && (errno == EINTR || errno == ECONNABORTED));
    return fd;
}

// MARK: Direct reads into a receive pool

#include <pthread.h>
#include <stdlib.h>

static void *direct_slots[FREIGHT_DIRECT_SLOTS];
static int direct_count;
static pthread_mutex_t direct_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread void *direct_next;

static int direct_index(void *pointer) {
    for (int i = 0; i < FREIGHT_DIRECT_SLOTS; i++) {
        if (direct_slots[i] == pointer) return i;
    }
    return -1;
}

int freight_direct_arm(void *address) {
    freight_direct_disarm();
    pthread_mutex_lock(&direct_lock);
    int slot = direct_count < FREIGHT_DIRECT_SLOTS ? direct_index(NULL) : -1;
    if (slot >= 0) {
        direct_slots[slot] = address;
        direct_count++;
    }
    pthread_mutex_unlock(&direct_lock);
    if (slot < 0) return 0;
    direct_next = address;
    return 1;
}

/// Forgets `pointer` when it is lent; returns 1 when it was.
static int direct_forget(void *pointer) {
    pthread_mutex_lock(&direct_lock);
    int slot = direct_index(pointer);
    if (slot >= 0) {
        direct_slots[slot] = NULL;
        direct_count--;
    }
    pthread_mutex_unlock(&direct_lock);
    return slot >= 0;
}

void freight_direct_disarm(void) {
    if (direct_next == NULL) return;
    direct_forget(direct_next);
    direct_next = NULL;
}

void *freight_direct_allocate(size_t size) {
    void *armed = direct_next;
    if (armed != NULL) {
        direct_next = NULL;
        return armed;
    }
    void *pointer = malloc(size);
    return pointer != NULL ? pointer : malloc(1);
}

void *freight_direct_reallocate(void *pointer, size_t old_size, size_t new_size) {
    if (pointer != NULL && direct_forget(pointer)) {
        // A lent region is never grown in place: new memory, and the pool's bytes copied out.
        void *fresh = malloc(new_size);
        if (fresh != NULL) memcpy(fresh, pointer, old_size < new_size ? old_size : new_size);
        return fresh;
    }
    return realloc(pointer, new_size);
}

void freight_direct_free(void *pointer) {
    if (!direct_forget(pointer)) free(pointer);
}

void freight_direct_copy(void *destination, const void *source, size_t count) {
    memcpy(destination, source, count);
}

int freight_direct_outstanding(void) {
    pthread_mutex_lock(&direct_lock);
    int count = direct_count;
    pthread_mutex_unlock(&direct_lock);
    return count;
}

// MARK: TUN devices for the WAN emulator (freight-wan)

#if defined(__linux__)
#include <sched.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/ioctl.h>

static int tun_configure(const char *name, const char *address, const char *peer, int mtu) {
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    int result = -1;
    struct sockaddr_in *in = (struct sockaddr_in *)&ifr.ifr_addr;
    in->sin_family = AF_INET;
    if (inet_pton(AF_INET, address, &in->sin_addr) != 1) { errno = EINVAL; goto done; }
    if (ioctl(sock, SIOCSIFADDR, &ifr) != 0) goto done;
    in = (struct sockaddr_in *)&ifr.ifr_dstaddr;
    in->sin_family = AF_INET;
    if (inet_pton(AF_INET, peer, &in->sin_addr) != 1) { errno = EINVAL; goto done; }
    if (ioctl(sock, SIOCSIFDSTADDR, &ifr) != 0) goto done;
    ifr.ifr_mtu = mtu;
    if (ioctl(sock, SIOCSIFMTU, &ifr) != 0) goto done;
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) != 0) goto done;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(sock, SIOCSIFFLAGS, &ifr) != 0) goto done;
    result = 0;
done:;
    int saved = errno;
    close(sock);
    errno = saved;
    return result;
}

int freight_tun_open(const char *netns_path, const char *name, const char *address, const char *peer, int mtu) {
    int home = -1, fd = -1, saved = 0;
    if (netns_path != NULL && netns_path[0] != 0) {
        home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (home < 0) return -1;
        int target = open(netns_path, O_RDONLY | O_CLOEXEC);
        if (target < 0) { saved = errno; close(home); errno = saved; return -1; }
        int entered = setns(target, CLONE_NEWNET);
        saved = errno;
        close(target);
        if (entered != 0) { close(home); errno = saved; return -1; }
    }
    fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
        strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
        if (ioctl(fd, TUNSETIFF, &ifr) != 0 || tun_configure(name, address, peer, mtu) != 0) {
            saved = errno;
            close(fd);
            fd = -1;
            errno = saved;
        }
    }
    saved = errno;
    if (home >= 0) {
        if (setns(home, CLONE_NEWNET) != 0 && fd >= 0) { close(fd); fd = -1; saved = EPERM; }
        close(home);
    }
    errno = saved;
    return fd;
}
#else
int freight_tun_open(const char *netns_path, const char *name, const char *address, const char *peer, int mtu) {
    errno = ENOTSUP;
    return -1;
}
#endif

int freight_fallocate(int fd, off_t offset, off_t length) {
    return fallocate(fd, 0, offset, length) == 0 ? 0 : errno;
}

int freight_lendable_file(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || (flags & O_ACCMODE) == O_WRONLY || (flags & (O_PATH | O_DIRECT)) != 0) return 1;
    struct statfs info;
    if (fstatfs(fd, &info) != 0) return 2;
    switch ((unsigned long)info.f_type) {
    case 0x01021994UL: /* tmpfs */
    case 0xEF53UL: /* ext2, ext3, ext4 */
    case 0x58465342UL: /* xfs */
    case 0x9123683EUL: /* btrfs */
    case 0xF2F52010UL: /* f2fs */
    case 0x2FC12FC1UL: /* zfs */
        return 0;
    default:
        return 2;
    }
}
