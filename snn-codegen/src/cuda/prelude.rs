//! Device helpers every generated source starts with: storage conversions, the spike,
//! and the reductions. A host build of the same source (the CPU check of the emitted
//! code) defines `SNN_PRELUDE` and its own versions of these.

/// The helpers, guarded so that a host build can replace them.
pub const PRELUDE: &str = r#"#ifndef SNN_PRELUDE
#define SNN_PRELUDE
// Storage conversions: `snn_ld_<dtype>` reads one stored element as f32, `snn_st_<dtype>`
// stores an f32, and the `4` variants move 4 consecutive elements with one vector access.
// Half-precision values travel as raw 16-bit patterns; arithmetic is always f32. (Inline
// PTX instead of cuda_fp16.h/cuda_bf16.h keeps NVRTC free of headers.)
__device__ __forceinline__ float snn_ld_f32(float x) { return x; }
__device__ __forceinline__ float snn_st_f32(float x) { return x; }
__device__ __forceinline__ float snn_ld_f64(double x) { return (float)x; }
__device__ __forceinline__ double snn_st_f64(float x) { return (double)x; }
__device__ __forceinline__ float snn_ld_u8(unsigned char x) { return (float)x; }
__device__ __forceinline__ unsigned char snn_st_u8(float x) { return x >= 0.5f ? 1 : 0; }
__device__ __forceinline__ float snn_ld_i8(signed char x) { return (float)x; }
__device__ __forceinline__ signed char snn_st_i8(float x) { return x >= 0.5f ? 1 : (x <= -0.5f ? -1 : 0); }
__device__ __forceinline__ float snn_ld_f16(unsigned short h) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ unsigned short snn_st_f16(float f) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
__device__ __forceinline__ float snn_ld_bf16(unsigned short h) {
    return __uint_as_float(((unsigned int)h) << 16);
}
__device__ __forceinline__ unsigned short snn_st_bf16(float f) {
    unsigned short h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
#define SNN_VEC4(NAME, T, V)                                                                 \
    __device__ __forceinline__ void snn_ld4_##NAME(const T* p, float* v) {                  \
        const V r = *reinterpret_cast<const V*>(p);                                          \
        v[0] = snn_ld_##NAME(r.x); v[1] = snn_ld_##NAME(r.y);                                \
        v[2] = snn_ld_##NAME(r.z); v[3] = snn_ld_##NAME(r.w);                                \
    }                                                                                        \
    __device__ __forceinline__ void snn_st4_##NAME(T* p, const float* v) {                  \
        V r;                                                                                 \
        r.x = snn_st_##NAME(v[0]); r.y = snn_st_##NAME(v[1]);                                \
        r.z = snn_st_##NAME(v[2]); r.w = snn_st_##NAME(v[3]);                                \
        *reinterpret_cast<V*>(p) = r;                                                        \
    }
SNN_VEC4(f32, float, float4)
SNN_VEC4(f16, unsigned short, ushort4)
SNN_VEC4(bf16, unsigned short, ushort4)
SNN_VEC4(u8, unsigned char, uchar4)
SNN_VEC4(i8, signed char, char4)
#undef SNN_VEC4
// Whether `p` may be accessed 4 elements of `bytes` bytes at a time.
__device__ __forceinline__ bool snn_aligned4(const void* p, int bytes) {
    return ((unsigned long long)p & (unsigned long long)(4 * bytes - 1)) == 0;
}

__device__ __forceinline__ float snn_spike(float h) { return h >= 0.0f ? 1.0f : 0.0f; }
__device__ __forceinline__ float snn_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Sum of `v` over the block, added to `*dst` by one atomic. Every thread of the block must
// call it (blockDim.x a multiple of 32, at most 1024).
__device__ __forceinline__ void snn_block_sum_atomic(float v, float* dst) {
    __shared__ float warp_sums[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x >> 5) ? warp_sums[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
        if (lane == 0) atomicAdd(dst, v);
    }
}

// Adds `v` to `*dst` with one atomic per distinct address in the warp: lanes that share an
// address (a per-channel gradient whose channel spans part of the warp) sum their values
// first, so a layer with small planes does not serialise on a few addresses.
__device__ __forceinline__ void snn_atomic_add(float* dst, float v) {
    const unsigned mask = __activemask();
    const unsigned long long addr = (unsigned long long)dst;
    if (mask == 0xffffffffu && __all_sync(mask, __shfl_sync(mask, addr, 0) == addr)) {
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(mask, v, o);
        if ((threadIdx.x & 31) == 0) atomicAdd(dst, v);
        return;
    }
    const unsigned peers = __match_any_sync(mask, addr);
    const int lane = threadIdx.x & 31;
    if (!__any_sync(mask, peers != (1u << lane))) {
        atomicAdd(dst, v);  // every address is a lane's own
        return;
    }
    float sum = 0.0f;
    for (int src = 0; src < 32; ++src) {
        if (!((mask >> src) & 1u)) continue;  // the same for every lane of `mask`
        const float o = __shfl_sync(mask, v, src);
        if ((peers >> src) & 1u) sum += o;
    }
    if (lane == __ffs(peers) - 1) atomicAdd(dst, sum);
}

#endif
"#;

/// The deterministic second phase of param-gradient reduction (backward sources only).
pub const REDUCE: &str = r#"// Deterministic second phase: reduced[y * gridDim.x + c] += the sum of the partials of the
// elements that share gradient value c, over chunk y of them (gridDim.y chunks), in a fixed
// order. One block per (value, chunk); blockDim.x a power of two from 32 to 1024. shape: 0
// scalar, 1 per-channel, 2 per-neuron. With many chunks, a second launch (shape 2, with
// `channels` = values and `inner` = 1) sums the chunks' results, again in a fixed order.
extern "C" __global__ void snn_reduce_param_grad(
    const float* __restrict__ partials, float* __restrict__ reduced, const long long n,
    const long long channels, const long long inner, const int shape) {
    __shared__ float sums[1024];
    const long long c = blockIdx.x, neurons = channels * inner;
    const long long count = shape == 0 ? n : (shape == 1 ? n / channels : n / neurons);
    const long long per = (count + gridDim.y - 1) / gridDim.y;
    const long long q0 = blockIdx.y * per, q1 = q0 + per < count ? q0 + per : count;
    float v = 0.0f;
    for (long long q = q0 + threadIdx.x; q < q1; q += blockDim.x) {
        long long i = q;
        if (shape == 1) i = ((q / inner) * channels + c) * inner + q % inner;
        if (shape == 2) i = q * neurons + c;
        v += partials[i];
    }
    sums[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sums[threadIdx.x] += sums[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) reduced[(long long)blockIdx.y * gridDim.x + c] += sums[0];
}
"#;
