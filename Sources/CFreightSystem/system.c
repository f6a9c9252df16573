#include "CFreightSystem.h"
#if defined(__GLIBC__)
#include <malloc.h>
#endif

void freight_tune_malloc(int mmap_threshold, int trim_threshold) {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, mmap_threshold);
    mallopt(M_TRIM_THRESHOLD, trim_threshold);
#endif
}
