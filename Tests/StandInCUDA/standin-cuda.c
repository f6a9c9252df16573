// A stand-in for NVIDIA's CUDA driver library (libcuda.so.1), for Freight's tests on machines without a GPU.
//
// It is not a GPU and says so in its device name: one "device" whose memory is host memory in POSIX shared memory
// objects (so that an IPC handle opened in another process maps the same bytes, as CUDA IPC does), copies done with
// memcpy when they are queued, and events complete as soon as they are recorded. It exports the driver API
// functions Freight resolves (Sources/FreightCUDA) with the C signatures of cuda.h, so Freight's loader, its error
// reporting and everything built on the calls run the same code against it as against the real driver. Figures
// measured with it are host memcpy figures and are never reported as GPU figures (docs/gpu.md).
//
// Environment: FREIGHT_STANDIN_CUDA_DEVICES=0 makes cuInit fail with CUDA_ERROR_NO_DEVICE, as a driver on a
// machine whose GPUs are hidden from the process does.
//
// Built by the tests themselves (FreightTesting.StandInCUDA) with the toolchain's clang:
//   clang -shared -fPIC -O1 -o libcuda-standin.so.1 standin-cuda.c -lpthread
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void *CUcontext;
typedef void *CUstream;
typedef void *CUevent;
typedef struct {
    char reserved[64];
} CUipcMemHandle;

enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_MAP_FAILED = 205,
    CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED = 712,
    CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED = 713,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
};

#define DEVICE_MEMORY (1ULL << 30)
#define ALLOCATIONS_MAX 4096
#define REGISTERED_MAX 256

struct allocation {
    uintptr_t base;
    size_t size;
    int owned;  // allocated here (freed with cuMemFree) rather than opened from a handle
    char name[48];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int initialised;
static struct allocation allocations[ALLOCATIONS_MAX];
static unsigned long long allocated;
static unsigned long long serial;
static struct {
    uintptr_t base;
    size_t size;
} registered[REGISTERED_MAX];
static int primary_context = 1;
static int next_object = 1;

static struct allocation *find(uintptr_t pointer) {
    for (int i = 0; i < ALLOCATIONS_MAX; i++) {
        struct allocation *a = &allocations[i];
        if (a->base != 0 && pointer >= a->base && pointer < a->base + a->size) return a;
    }
    return NULL;
}

static struct allocation *slot(void) {
    for (int i = 0; i < ALLOCATIONS_MAX; i++) {
        if (allocations[i].base == 0) return &allocations[i];
    }
    return NULL;
}

CUresult cuInit(unsigned int flags) {
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    const char *devices = getenv("FREIGHT_STANDIN_CUDA_DEVICES");
    if (devices != NULL && strcmp(devices, "0") == 0) return CUDA_ERROR_NO_DEVICE;
    initialised = 1;
    return CUDA_SUCCESS;
}

#define REQUIRE_INIT() \
    if (!initialised) return CUDA_ERROR_NOT_INITIALIZED

CUresult cuDriverGetVersion(int *version) {
    if (version == NULL) return CUDA_ERROR_INVALID_VALUE;
    *version = 12040;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int *count) {
    REQUIRE_INIT();
    if (count == NULL) return CUDA_ERROR_INVALID_VALUE;
    *count = 1;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice *device, int ordinal) {
    REQUIRE_INIT();
    if (device == NULL) return CUDA_ERROR_INVALID_VALUE;
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *device = 0;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char *name, int length, CUdevice device) {
    REQUIRE_INIT();
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (name == NULL || length <= 0) return CUDA_ERROR_INVALID_VALUE;
    snprintf(name, (size_t)length, "Freight stand-in (host memory, not a GPU)");
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int *value, int attribute, CUdevice device) {
    REQUIRE_INIT();
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (value == NULL) return CUDA_ERROR_INVALID_VALUE;
    switch (attribute) {
        case 19: *value = 1; break;  // CAN_MAP_HOST_MEMORY
        case 33: *value = 0; break;  // PCI_BUS_ID
        case 40: *value = 2; break;  // ASYNC_ENGINE_COUNT
        case 41: *value = 1; break;  // UNIFIED_ADDRESSING
        default: *value = 0; break;
    }
    return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice device) {
    REQUIRE_INIT();
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (bytes == NULL) return CUDA_ERROR_INVALID_VALUE;
    *bytes = DEVICE_MEMORY;
    return CUDA_SUCCESS;
}

// The stand-in's one device has a fixed UUID ("GPU-" 66726569-6768-742d-7374-616e642d696e, "freight-stand-in"),
// or the 32 hex digits FREIGHT_STANDIN_CUDA_UUID gives: two processes given different ones are on different GPUs.
CUresult cuDeviceGetUuid_v2(unsigned char *uuid, CUdevice device) {
    REQUIRE_INIT();
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (uuid == NULL) return CUDA_ERROR_INVALID_VALUE;
    memcpy(uuid, "freight-stand-in", 16);
    const char *given = getenv("FREIGHT_STANDIN_CUDA_UUID");
    if (given != NULL && strlen(given) == 32) {
        for (int i = 0; i < 16; i++) {
            unsigned int byte = 0;
            if (sscanf(given + 2 * i, "%2x", &byte) != 1) return CUDA_ERROR_INVALID_VALUE;
            uuid[i] = (unsigned char)byte;
        }
    }
    return CUDA_SUCCESS;
}

static const char *error_name(CUresult code) {
    switch (code) {
        case CUDA_SUCCESS: return "CUDA_SUCCESS";
        case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
        case CUDA_ERROR_OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
        case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
        case CUDA_ERROR_NO_DEVICE: return "CUDA_ERROR_NO_DEVICE";
        case CUDA_ERROR_INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
        case CUDA_ERROR_MAP_FAILED: return "CUDA_ERROR_MAP_FAILED";
        case CUDA_ERROR_INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
        case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
        case CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED: return "CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED";
        case CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED: return "CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED";
        default: return NULL;
    }
}

CUresult cuGetErrorName(CUresult code, const char **name) {
    if (name == NULL) return CUDA_ERROR_INVALID_VALUE;
    *name = error_name(code);
    return *name == NULL ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

CUresult cuGetErrorString(CUresult code, const char **text) {
    if (text == NULL) return CUDA_ERROR_INVALID_VALUE;
    switch (code) {
        case CUDA_ERROR_NO_DEVICE: *text = "no CUDA-capable device is detected"; break;
        case CUDA_ERROR_OUT_OF_MEMORY: *text = "out of memory"; break;
        case CUDA_ERROR_INVALID_VALUE: *text = "invalid argument"; break;
        case CUDA_ERROR_NOT_INITIALIZED: *text = "initialization error"; break;
        case CUDA_ERROR_INVALID_HANDLE: *text = "invalid resource handle"; break;
        case CUDA_ERROR_MAP_FAILED: *text = "mapping of buffer object failed"; break;
        default: *text = error_name(code); break;
    }
    return *text == NULL ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext *context, CUdevice device) {
    REQUIRE_INIT();
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (context == NULL) return CUDA_ERROR_INVALID_VALUE;
    *context = &primary_context;
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRelease_v2(CUdevice device) {
    REQUIRE_INIT();
    return device == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

CUresult cuCtxSetCurrent(CUcontext context) {
    REQUIRE_INIT();
    return context == NULL || context == &primary_context ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

// Device memory: a POSIX shared memory object per allocation, so that another process can map it from its handle.
static CUresult map_object(const char *name, size_t size, int create, void **mapped) {
    int fd = shm_open(name, create ? (O_RDWR | O_CREAT | O_EXCL) : O_RDWR, 0600);
    if (fd < 0) return create ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_ERROR_INVALID_HANDLE;
    if (create && ftruncate(fd, (off_t)size) != 0) {
        close(fd);
        shm_unlink(name);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        if (create) shm_unlink(name);
        return CUDA_ERROR_MAP_FAILED;
    }
    *mapped = p;
    return CUDA_SUCCESS;
}

CUresult cuMemAlloc_v2(CUdeviceptr *pointer, size_t size) {
    REQUIRE_INIT();
    if (pointer == NULL || size == 0) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    struct allocation *a = slot();
    if (a == NULL || allocated + size > DEVICE_MEMORY) {
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    char name[48];
    snprintf(name, sizeof name, "/freight-standin-cuda-%d-%llu", (int)getpid(), ++serial);
    void *mapped = NULL;
    CUresult result = map_object(name, size, 1, &mapped);
    if (result == CUDA_SUCCESS) {
        a->base = (uintptr_t)mapped;
        a->size = size;
        a->owned = 1;
        memcpy(a->name, name, sizeof name);
        allocated += size;
        *pointer = (CUdeviceptr)a->base;
    }
    pthread_mutex_unlock(&lock);
    return result;
}

CUresult cuMemFree_v2(CUdeviceptr pointer) {
    REQUIRE_INIT();
    pthread_mutex_lock(&lock);
    struct allocation *a = find((uintptr_t)pointer);
    if (a == NULL || !a->owned || a->base != (uintptr_t)pointer) {
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_INVALID_VALUE;
    }
    munmap((void *)a->base, a->size);
    shm_unlink(a->name);
    allocated -= a->size;
    memset(a, 0, sizeof *a);
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size, CUdeviceptr pointer) {
    REQUIRE_INIT();
    pthread_mutex_lock(&lock);
    struct allocation *a = find((uintptr_t)pointer);
    if (a != NULL) {
        if (base) *base = a->base;
        if (size) *size = a->size;
    }
    pthread_mutex_unlock(&lock);
    return a == NULL ? CUDA_ERROR_NOT_FOUND : CUDA_SUCCESS;
}

CUresult cuMemHostRegister_v2(void *pointer, size_t size, unsigned int flags) {
    REQUIRE_INIT();
    (void)flags;
    if (pointer == NULL || size == 0) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    int free_slot = -1;
    for (int i = 0; i < REGISTERED_MAX; i++) {
        if (registered[i].base == (uintptr_t)pointer) {
            pthread_mutex_unlock(&lock);
            return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
        }
        if (registered[i].base == 0 && free_slot < 0) free_slot = i;
    }
    if (free_slot < 0) {
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    registered[free_slot].base = (uintptr_t)pointer;
    registered[free_slot].size = size;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

CUresult cuMemHostUnregister(void *pointer) {
    REQUIRE_INIT();
    pthread_mutex_lock(&lock);
    for (int i = 0; i < REGISTERED_MAX; i++) {
        if (registered[i].base == (uintptr_t)pointer) {
            registered[i].base = 0;
            registered[i].size = 0;
            pthread_mutex_unlock(&lock);
            return CUDA_SUCCESS;
        }
    }
    pthread_mutex_unlock(&lock);
    return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
}

// Copies are checked against the allocations they touch, as the real driver's are, then done at once.
static int inside(uintptr_t pointer, size_t size) {
    pthread_mutex_lock(&lock);
    struct allocation *a = find(pointer);
    int ok = a != NULL && pointer + size <= a->base + a->size;
    pthread_mutex_unlock(&lock);
    return ok;
}

CUresult cuMemcpyDtoHAsync_v2(void *host, CUdeviceptr device, size_t size, CUstream stream) {
    REQUIRE_INIT();
    (void)stream;
    if (host == NULL || !inside((uintptr_t)device, size)) return CUDA_ERROR_INVALID_VALUE;
    memcpy(host, (const void *)(uintptr_t)device, size);
    return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr device, const void *host, size_t size, CUstream stream) {
    REQUIRE_INIT();
    (void)stream;
    if (host == NULL || !inside((uintptr_t)device, size)) return CUDA_ERROR_INVALID_VALUE;
    memcpy((void *)(uintptr_t)device, host, size);
    return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr destination, CUdeviceptr source, size_t size, CUstream stream) {
    REQUIRE_INIT();
    (void)stream;
    if (!inside((uintptr_t)destination, size) || !inside((uintptr_t)source, size)) return CUDA_ERROR_INVALID_VALUE;
    memmove((void *)(uintptr_t)destination, (const void *)(uintptr_t)source, size);
    return CUDA_SUCCESS;
}

CUresult cuStreamCreate(CUstream *stream, unsigned int flags) {
    REQUIRE_INIT();
    (void)flags;
    if (stream == NULL) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    *stream = (CUstream)(uintptr_t)(next_object++);
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

CUresult cuStreamDestroy_v2(CUstream stream) {
    REQUIRE_INIT();
    return stream == NULL ? CUDA_ERROR_INVALID_HANDLE : CUDA_SUCCESS;
}

CUresult cuStreamSynchronize(CUstream stream) {
    REQUIRE_INIT();
    (void)stream;
    return CUDA_SUCCESS;
}

CUresult cuEventCreate(CUevent *event, unsigned int flags) {
    REQUIRE_INIT();
    (void)flags;
    if (event == NULL) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    *event = (CUevent)(uintptr_t)(next_object++);
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

CUresult cuEventRecord(CUevent event, CUstream stream) {
    REQUIRE_INIT();
    (void)stream;
    return event == NULL ? CUDA_ERROR_INVALID_HANDLE : CUDA_SUCCESS;
}

CUresult cuEventQuery(CUevent event) {
    REQUIRE_INIT();
    return event == NULL ? CUDA_ERROR_INVALID_HANDLE : CUDA_SUCCESS;
}

CUresult cuEventSynchronize(CUevent event) {
    REQUIRE_INIT();
    return event == NULL ? CUDA_ERROR_INVALID_HANDLE : CUDA_SUCCESS;
}

CUresult cuEventDestroy_v2(CUevent event) {
    REQUIRE_INIT();
    return event == NULL ? CUDA_ERROR_INVALID_HANDLE : CUDA_SUCCESS;
}

// An IPC handle names the allocation's shared memory object and its size; the bytes are opaque to callers.
struct handle_contents {
    char name[48];
    unsigned long long size;
};

CUresult cuIpcGetMemHandle(CUipcMemHandle *handle, CUdeviceptr pointer) {
    REQUIRE_INIT();
    if (handle == NULL) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    struct allocation *a = find((uintptr_t)pointer);
    if (a == NULL || !a->owned || a->base != (uintptr_t)pointer) {
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_INVALID_VALUE;
    }
    struct handle_contents contents;
    memset(&contents, 0, sizeof contents);
    memcpy(contents.name, a->name, sizeof contents.name);
    contents.size = a->size;
    pthread_mutex_unlock(&lock);
    memset(handle, 0, sizeof *handle);
    memcpy(handle->reserved, &contents, sizeof contents);
    return CUDA_SUCCESS;
}

CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *pointer, CUipcMemHandle handle, unsigned int flags) {
    REQUIRE_INIT();
    (void)flags;
    if (pointer == NULL) return CUDA_ERROR_INVALID_VALUE;
    struct handle_contents contents;
    memcpy(&contents, handle.reserved, sizeof contents);
    contents.name[sizeof contents.name - 1] = 0;
    if (strncmp(contents.name, "/freight-standin-cuda-", 22) != 0 || contents.size == 0) {
        return CUDA_ERROR_INVALID_HANDLE;
    }
    pthread_mutex_lock(&lock);
    struct allocation *a = slot();
    if (a == NULL) {
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    void *mapped = NULL;
    CUresult result = map_object(contents.name, (size_t)contents.size, 0, &mapped);
    if (result == CUDA_SUCCESS) {
        a->base = (uintptr_t)mapped;
        a->size = (size_t)contents.size;
        a->owned = 0;
        memcpy(a->name, contents.name, sizeof a->name);
        *pointer = (CUdeviceptr)a->base;
    }
    pthread_mutex_unlock(&lock);
    return result;
}

CUresult cuIpcCloseMemHandle(CUdeviceptr pointer) {
    REQUIRE_INIT();
    pthread_mutex_lock(&lock);
    struct allocation *a = find((uintptr_t)pointer);
    if (a == NULL || a->owned || a->base != (uintptr_t)pointer) {
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_INVALID_VALUE;
    }
    munmap((void *)a->base, a->size);
    memset(a, 0, sizeof *a);
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}
