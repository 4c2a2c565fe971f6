// snn-runtime: what every hand-written program shares (src/launch/programs.rs puts it in
// front of each). Tensors hold f32 or bf16 values and kernels compute in f32: a kernel
// templated on the element type T loads with snn_f32 / snn_load4 and stores with snn_to<T> /
// snn_store4. bf16 values travel as their bits in an unsigned short, converted with PTX as
// in the generated kernels, so NVRTC needs no headers; the name snn_bf16 tells the launch
// layer (which reads every kernel's declaration) which 16-bit type a pointer holds.

typedef unsigned short snn_bf16;

__device__ __forceinline__ float snn_f32(float v) { return v; }
__device__ __forceinline__ float snn_f32(snn_bf16 h) { return __uint_as_float((unsigned)h << 16); }

template <typename T> __device__ __forceinline__ T snn_to(float f);
template <> __device__ __forceinline__ float snn_to<float>(float f) { return f; }
template <> __device__ __forceinline__ snn_bf16 snn_to<snn_bf16>(float f) {
    snn_bf16 h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// Four neighbouring values at p (16-byte aligned for f32, 8-byte for bf16), through the
// read-only cache; `_rw`: memory the kernel also writes.
__device__ __forceinline__ void snn_load4(const float* p, float (&v)[4]) {
    const float4 t = __ldg(reinterpret_cast<const float4*>(p));
    v[0] = t.x; v[1] = t.y; v[2] = t.z; v[3] = t.w;
}
__device__ __forceinline__ void snn_load4(const snn_bf16* p, float (&v)[4]) {
    const uint2 t = __ldg(reinterpret_cast<const uint2*>(p));
    v[0] = __uint_as_float(t.x << 16); v[1] = __uint_as_float(t.x & 0xffff0000u);
    v[2] = __uint_as_float(t.y << 16); v[3] = __uint_as_float(t.y & 0xffff0000u);
}
__device__ __forceinline__ void snn_load4_rw(const float* p, float (&v)[4]) {
    const float4 t = *reinterpret_cast<const float4*>(p);
    v[0] = t.x; v[1] = t.y; v[2] = t.z; v[3] = t.w;
}
__device__ __forceinline__ void snn_load4_rw(const snn_bf16* p, float (&v)[4]) {
    const uint2 t = *reinterpret_cast<const uint2*>(p);
    v[0] = __uint_as_float(t.x << 16); v[1] = __uint_as_float(t.x & 0xffff0000u);
    v[2] = __uint_as_float(t.y << 16); v[3] = __uint_as_float(t.y & 0xffff0000u);
}
__device__ __forceinline__ void snn_store4(float* p, const float (&v)[4]) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void snn_store4(snn_bf16* p, const float (&v)[4]) {
    uint2 t;
    t.x = (unsigned)snn_to<snn_bf16>(v[0]) | ((unsigned)snn_to<snn_bf16>(v[1]) << 16);
    t.y = (unsigned)snn_to<snn_bf16>(v[2]) | ((unsigned)snn_to<snn_bf16>(v[3]) << 16);
    *reinterpret_cast<uint2*>(p) = t;
}
