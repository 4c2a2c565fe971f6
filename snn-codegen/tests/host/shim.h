// Host stand-ins for what the generated CUDA sources use, so that a source compiles with
// g++ and runs one thread at a time: the CPU check of the emitted code. The prelude's
// device helpers are replaced (SNN_PRELUDE) by plain C++ with the same results.
#include <cmath>
#include <cstdint>
#include <cstring>

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
#define SNN_PRELUDE

struct snn_dim { unsigned x = 0, y = 0, z = 0; };
static snn_dim threadIdx, blockIdx, blockDim, gridDim;
static inline void __syncthreads() {}

#include <math.h>

static inline float snn_ld_f32(float x) { return x; }
static inline float snn_st_f32(float x) { return x; }
static inline float snn_ld_f64(double x) { return (float)x; }
static inline double snn_st_f64(float x) { return (double)x; }
static inline float snn_ld_u8(unsigned char x) { return (float)x; }
static inline unsigned char snn_st_u8(float x) { return x >= 0.5f ? 1 : 0; }
static inline float snn_ld_i8(signed char x) { return (float)x; }
static inline signed char snn_st_i8(float x) { return x >= 0.5f ? 1 : (x <= -0.5f ? -1 : 0); }
static inline float snn_ld_f16(unsigned short h) { _Float16 f; std::memcpy(&f, &h, 2); return (float)f; }
static inline unsigned short snn_st_f16(float x) { _Float16 f = (_Float16)x; unsigned short h; std::memcpy(&h, &f, 2); return h; }
static inline float snn_ld_bf16(unsigned short h) { unsigned int u = (unsigned int)h << 16; float f; std::memcpy(&f, &u, 4); return f; }
static inline unsigned short snn_st_bf16(float x) {
    unsigned int u; std::memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
#define SNN_HOST_VEC4(NAME, T)                                                              \
    static inline void snn_ld4_##NAME(const T* p, float* v) { for (int l = 0; l < 4; ++l) v[l] = snn_ld_##NAME(p[l]); } \
    static inline void snn_st4_##NAME(T* p, const float* v) { for (int l = 0; l < 4; ++l) p[l] = snn_st_##NAME(v[l]); }
SNN_HOST_VEC4(f32, float)
SNN_HOST_VEC4(f16, unsigned short)
SNN_HOST_VEC4(bf16, unsigned short)
SNN_HOST_VEC4(u8, unsigned char)
SNN_HOST_VEC4(i8, signed char)
static inline bool snn_aligned4(const void* p, int bytes) { return ((unsigned long long)p % (unsigned long long)(4 * bytes)) == 0; }
static inline float snn_spike(float h) { return h >= 0.0f ? 1.0f : 0.0f; }
static inline float snn_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
// One thread at a time: a block sum is a plain sum.
static inline void snn_block_sum_atomic(float v, float* dst) { *dst += v; }
static inline void snn_atomic_add(float* dst, float v) { *dst += v; }
