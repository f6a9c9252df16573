#ifndef CFREIGHT_CRC32C_H
#define CFREIGHT_CRC32C_H
#include <stdint.h>
#include <stddef.h>
/// CRC32C (Castagnoli) of `length` bytes, continuing from `crc` (0 to start).
uint32_t freight_crc32c(uint32_t crc, const void *data, size_t length);
/// 1 when the CPU's crc32 instruction is used.
int freight_crc32c_hardware(void);
#endif
