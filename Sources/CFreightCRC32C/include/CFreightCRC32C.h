#ifndef CFREIGHT_CRC32C_H
#define CFREIGHT_CRC32C_H
#include <stdint.h>
#include <stddef.h>
/// CRC32C (Castagnoli) of `length` bytes, continuing from `crc` (0 to start).
uint32_t freight_crc32c(uint32_t crc, const void *data, size_t length);
/// Copies `length` bytes from `source` to `destination` (which must not overlap) and returns their CRC32C,
/// continuing from `crc`, in one pass.
uint32_t freight_crc32c_copy(uint32_t crc, void *destination, const void *source, size_t length);
/// 1 when the CPU's crc32 instruction is used.
int freight_crc32c_hardware(void);
#endif
