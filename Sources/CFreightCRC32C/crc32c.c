// CRC32C (Castagnoli), hardware-accelerated with the SSE4.2 crc32 instruction where the CPU has it,
// with a table-driven fallback. The result matches RFC 3720 (iSCSI): crc32c("123456789") == 0xE3069283.
#include "CFreightCRC32C.h"
#include <string.h>

static uint32_t table[8][256];

static void build_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t crc = i;
        for (int k = 0; k < 8; k++) crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
        table[0][i] = crc;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
    }
}

static uint32_t crc32c_software(uint32_t crc, const unsigned char *p, size_t n) {
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        word ^= crc;
        crc = table[7][word & 0xff] ^ table[6][(word >> 8) & 0xff] ^ table[5][(word >> 16) & 0xff] ^
              table[4][(word >> 24) & 0xff] ^ table[3][(word >> 32) & 0xff] ^ table[2][(word >> 40) & 0xff] ^
              table[1][(word >> 48) & 0xff] ^ table[0][word >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__)
#include <nmmintrin.h>

// GF(2) matrix helpers (as zlib's crc32_combine) to compute the operator "append len zero bytes".
static uint32_t gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    while (vec) { if (vec & 1) sum ^= *mat; vec >>= 1; mat++; }
    return sum;
}
static void gf2_square(uint32_t *square, const uint32_t *mat) {
    for (int n = 0; n < 32; n++) square[n] = gf2_times(mat, mat[n]);
}
// Builds the 32x32 matrix that advances a CRC state over `len` zero bytes.
static void zeros_operator(uint32_t *result, size_t len) {
    uint32_t odd[32], even[32];
    odd[0] = 0x82F63B78u;
    uint32_t row = 1;
    for (int n = 1; n < 32; n++) { odd[n] = row; row <<= 1; }
    gf2_square(even, odd);  // 2 bits
    gf2_square(odd, even);  // 4 bits = 1 byte (odd now advances one zero byte... after squaring twice: 4 bits)
    // identity
    for (int n = 0; n < 32; n++) result[n] = 1u << n;
    // odd advances 4 bits; square once more for 1 byte
    gf2_square(even, odd);  // 8 bits = 1 byte
    uint32_t *cur = even, *other = odd;
    while (len) {
        if (len & 1) {
            uint32_t tmp[32];
            for (int n = 0; n < 32; n++) tmp[n] = gf2_times(cur, result[n]);
            memcpy(result, tmp, sizeof(tmp));
        }
        len >>= 1;
        if (!len) break;
        gf2_square(other, cur);
        uint32_t *swap = cur; cur = other; other = swap;
    }
}

#define BLOCK 8192
static uint32_t shift_block[32];
static uint32_t shift_2block[32];

// With `dst`, the bytes are also copied there as they are read: one pass over them instead of a copy and then a
// checksum (a node writing a chunk into a receiver's shared pool). Measured inside the node (8 MiB app to app), as
// fast as memcpy followed by the checksum; ordinary stores: non-temporal ones measured the same on average but
// with occasional runs at a third of the speed.
__attribute__((target("sse4.2")))
static uint32_t crc32c_hw_1way(uint32_t crc, unsigned char *dst, const unsigned char *p, size_t n) {
    uint64_t c = crc;
    while (n && ((uintptr_t)p & 7)) {
        if (dst) *dst++ = *p;
        c = _mm_crc32_u8((uint32_t)c, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        if (dst) { memcpy(dst, &word, 8); dst += 8; }
        c = _mm_crc32_u64(c, word);
        p += 8;
        n -= 8;
    }
    while (n--) {
        if (dst) *dst++ = *p;
        c = _mm_crc32_u8((uint32_t)c, *p++);
    }
    return (uint32_t)c;
}

// Three independent streams hide the instruction's 3-cycle latency; they are joined by shifting
// the first two through the rest of the block in software (zero-bytes CRC via GF(2) matrices).
__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t crc, unsigned char *dst, const unsigned char *p, size_t n) {
    if (n < 3 * BLOCK) return crc32c_hw_1way(crc, dst, p, n);
    while (n && ((uintptr_t)p & 7)) {
        if (dst) *dst++ = *p;
        crc = _mm_crc32_u8(crc, *p++);
        n--;
    }
    while (n >= 3 * BLOCK) {
        uint64_t a = crc, b = 0, c = 0;
        const unsigned char *pa = p, *pb = p + BLOCK, *pc = p + 2 * BLOCK;
        if (dst) {
            unsigned char *da = dst, *db = dst + BLOCK, *dc = dst + 2 * BLOCK;
            for (size_t i = 0; i < BLOCK; i += 8) {
                uint64_t wa, wb, wc;
                memcpy(&wa, pa + i, 8);
                memcpy(&wb, pb + i, 8);
                memcpy(&wc, pc + i, 8);
                memcpy(da + i, &wa, 8);
                memcpy(db + i, &wb, 8);
                memcpy(dc + i, &wc, 8);
                a = _mm_crc32_u64(a, wa);
                b = _mm_crc32_u64(b, wb);
                c = _mm_crc32_u64(c, wc);
            }
            dst += 3 * BLOCK;
        } else {
            for (size_t i = 0; i < BLOCK; i += 8) {
                uint64_t wa, wb, wc;
                memcpy(&wa, pa + i, 8);
                memcpy(&wb, pb + i, 8);
                memcpy(&wc, pc + i, 8);
                a = _mm_crc32_u64(a, wa);
                b = _mm_crc32_u64(b, wb);
                c = _mm_crc32_u64(c, wc);
            }
        }
        // crc(A||B||C) = shift(crc(A), 2 blocks) ^ shift(crc0(B), 1 block) ^ crc0(C), with raw (non-inverted) states.
        crc = gf2_times(shift_2block, (uint32_t)a) ^ gf2_times(shift_block, (uint32_t)b) ^ (uint32_t)c;
        p += 3 * BLOCK;
        n -= 3 * BLOCK;
    }
    return crc32c_hw_1way(crc, dst, p, n);
}

// Carry-less multiplication (VPCLMULQDQ on 512-bit registers): four 64-byte accumulators fold 256 bytes per
// step, about three times the rate of the crc32 instruction, which has one execution port. Folding a 16-byte lane
// L forward by D bytes replaces it with clmul(L.lo, K(8D+32)) ^ clmul(L.hi, K(8D-32)), XORed into the data D bytes
// on, where K(n) is x^n mod P(x), bit-reflected, shifted left by one (the reflected form of the Intel white paper
// "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ"). What is left is 16 bytes whose CRC from zero,
// continued over the tail, is the CRC of the whole; the crc32 instruction finishes it.
#include <immintrin.h>
#define K_256_LO 0x0dcb17aa4ULL
#define K_256_HI 0x0b9e02b86ULL
#define K_64_LO  0x0740eef02ULL
#define K_64_HI  0x09e4addf8ULL
#define K_48_LO  0x01c291d04ULL
#define K_48_HI  0x1d82c63daULL
#define K_32_LO  0x1384aa63aULL
#define K_32_HI  0x0ba4fc28eULL
#define K_16_LO  0x0f20c0dfeULL
#define K_16_HI  0x14cd00bd6ULL

__attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul")))
static inline __m512i fold512(__m512i x, __m512i k) {
    return _mm512_xor_si512(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11));
}

__attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul")))
static inline __m128i fold128(__m128i x, uint64_t lo, uint64_t hi) {
    __m128i k = _mm_set_epi64x((long long)hi, (long long)lo);
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

// Folds the largest multiple of 256 bytes (at least 256) of `p` and returns the raw CRC state after them; with
// `dst` the bytes are copied there too. `*done` says how many bytes were consumed.
__attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.2")))
static uint32_t crc32c_fold(uint32_t crc, unsigned char *dst, const unsigned char *p, size_t n, size_t *done) {
    __m512i x0 = _mm512_loadu_si512((const void *)p);
    __m512i x1 = _mm512_loadu_si512((const void *)(p + 64));
    __m512i x2 = _mm512_loadu_si512((const void *)(p + 128));
    __m512i x3 = _mm512_loadu_si512((const void *)(p + 192));
    if (dst) {
        _mm512_storeu_si512((void *)dst, x0);
        _mm512_storeu_si512((void *)(dst + 64), x1);
        _mm512_storeu_si512((void *)(dst + 128), x2);
        _mm512_storeu_si512((void *)(dst + 192), x3);
    }
    x0 = _mm512_xor_si512(x0, _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)crc)));
    size_t i = 256;
    const __m512i k256 = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)K_256_HI, (long long)K_256_LO));
    for (; i + 256 <= n; i += 256) {
        __m512i d0 = _mm512_loadu_si512((const void *)(p + i));
        __m512i d1 = _mm512_loadu_si512((const void *)(p + i + 64));
        __m512i d2 = _mm512_loadu_si512((const void *)(p + i + 128));
        __m512i d3 = _mm512_loadu_si512((const void *)(p + i + 192));
        if (dst) {
            _mm512_storeu_si512((void *)(dst + i), d0);
            _mm512_storeu_si512((void *)(dst + i + 64), d1);
            _mm512_storeu_si512((void *)(dst + i + 128), d2);
            _mm512_storeu_si512((void *)(dst + i + 192), d3);
        }
        x0 = _mm512_xor_si512(fold512(x0, k256), d0);
        x1 = _mm512_xor_si512(fold512(x1, k256), d1);
        x2 = _mm512_xor_si512(fold512(x2, k256), d2);
        x3 = _mm512_xor_si512(fold512(x3, k256), d3);
    }
    const __m512i k64 = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)K_64_HI, (long long)K_64_LO));
    x1 = _mm512_xor_si512(fold512(x0, k64), x1);
    x2 = _mm512_xor_si512(fold512(x1, k64), x2);
    x3 = _mm512_xor_si512(fold512(x2, k64), x3);
    __m128i r = _mm512_extracti32x4_epi32(x3, 3);
    r = _mm_xor_si128(r, fold128(_mm512_extracti32x4_epi32(x3, 0), K_48_LO, K_48_HI));
    r = _mm_xor_si128(r, fold128(_mm512_extracti32x4_epi32(x3, 1), K_32_LO, K_32_HI));
    r = _mm_xor_si128(r, fold128(_mm512_extracti32x4_epi32(x3, 2), K_16_LO, K_16_HI));
    uint64_t c = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(r));
    c = _mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(r, 1));
    *done = i;
    return (uint32_t)c;
}

static int fold_available(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("pclmul") &&
           __builtin_cpu_supports("sse4.2");
}

// Carry-less folding for the bulk, the crc32 instruction for the rest (only called where both exist).
static uint32_t crc32c_fast(uint32_t crc, unsigned char *dst, const unsigned char *p, size_t n) {
    if (n >= 512) {
        size_t done = 0;
        crc = crc32c_fold(crc, dst, p, n, &done);
        p += done;
        n -= done;
        if (dst) dst += done;
    }
    return crc32c_hw(crc, dst, p, n);
}
#endif

// The tables and the method are set up once when the library loads, before any thread can use them.
static void crc32c_setup(void);
__attribute__((constructor)) static void crc32c_load(void) { crc32c_setup(); }

int freight_crc32c_methods(void) {
    int methods = 1 << FREIGHT_CRC32C_TABLE;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) methods |= 1 << FREIGHT_CRC32C_INSTRUCTION;
    if (fold_available()) methods |= 1 << FREIGHT_CRC32C_FOLD;
#endif
    return methods;
}

static int available = 0, fastest = FREIGHT_CRC32C_TABLE;

static void crc32c_setup(void) {
    build_table();
#if defined(__x86_64__)
    zeros_operator(shift_block, BLOCK);
    zeros_operator(shift_2block, 2 * BLOCK);
#endif
    available = freight_crc32c_methods();
    fastest = (available & (1 << FREIGHT_CRC32C_FOLD))          ? FREIGHT_CRC32C_FOLD
              : (available & (1 << FREIGHT_CRC32C_INSTRUCTION)) ? FREIGHT_CRC32C_INSTRUCTION
                                                                : FREIGHT_CRC32C_TABLE;
}

static uint32_t crc32c_run(int method, uint32_t crc, void *destination, const void *source, size_t length) {
    const unsigned char *p = (const unsigned char *)source;
    unsigned char *dst = (unsigned char *)destination;
    crc = ~crc;
    switch (method) {
#if defined(__x86_64__)
    case FREIGHT_CRC32C_FOLD:
        return ~crc32c_fast(crc, dst, p, length);
    case FREIGHT_CRC32C_INSTRUCTION:
        return ~crc32c_hw(crc, dst, p, length);
#endif
    default:
        if (dst && length) memcpy(dst, p, length);
        return ~crc32c_software(crc, p, length);
    }
}

uint32_t freight_crc32c_using(int method, uint32_t crc, void *destination, const void *source, size_t length) {
    if (method < 0 || method > FREIGHT_CRC32C_FOLD || !(available & (1 << method))) method = fastest;
    return crc32c_run(method, crc, destination, source, length);
}

uint32_t freight_crc32c(uint32_t crc, const void *data, size_t length) {
    return crc32c_run(fastest, crc, NULL, data, length);
}

uint32_t freight_crc32c_copy(uint32_t crc, void *destination, const void *source, size_t length) {
    return crc32c_run(fastest, crc, destination, source, length);
}
