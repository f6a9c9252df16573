#ifndef CFREIGHT_CRC32C_H
#define CFREIGHT_CRC32C_H
#include <stdint.h>
#include <stddef.h>
/// CRC32C (Castagnoli) of `length` bytes, continuing from `crc` (0 to start).
uint32_t freight_crc32c(uint32_t crc, const void *data, size_t length);
/// Copies `length` bytes from `source` to `destination` (which must not overlap) and returns their CRC32C,
/// continuing from `crc`, in one pass.
uint32_t freight_crc32c_copy(uint32_t crc, void *destination, const void *source, size_t length);
/// The implementations: a table (everywhere), the SSE4.2 crc32 instruction, carry-less folding (AVX-512 VPCLMULQDQ).
enum { FREIGHT_CRC32C_TABLE = 0, FREIGHT_CRC32C_INSTRUCTION = 1, FREIGHT_CRC32C_FOLD = 2 };
/// A bit per implementation this CPU can run (1 << FREIGHT_CRC32C_...).
int freight_crc32c_methods(void);
/// CRC32C with one named implementation (the fastest available one when it cannot run here); copies the bytes to
/// `destination` too unless it is NULL. For tests and measurements: the others pick the fastest.
uint32_t freight_crc32c_using(int method, uint32_t crc, void *destination, const void *source, size_t length);
#endif
