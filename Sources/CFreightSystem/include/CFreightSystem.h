#ifndef CFREIGHT_SYSTEM_H
#define CFREIGHT_SYSTEM_H
/// Keeps glibc from trimming freed chunk buffers back to the kernel (see MemoryTuning.swift).
void freight_tune_malloc(int mmap_threshold, int trim_threshold);
#endif
