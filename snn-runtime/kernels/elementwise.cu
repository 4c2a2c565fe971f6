// snn-runtime: elementwise sums (a residual add; a gradient accumulated for a tensor used
// twice) over f32 or bf16 (`_bf16`) tensors, the conversions between the two, and spikes
// (-1, 0 or 1) narrowed to one signed byte and widened back. Four
// values per access when every tensor is 16-byte aligned, then a scalar tail. No
// `__restrict__` on the sums: `out` may be `a` or `b` itself (each element is read, then
// written, by the same thread, so the loads do not go through the read-only cache).

// out[i] = a[i] + b[i] (computed in f32), grid-stride.
template <typename T>
__device__ __forceinline__ void snn_add_impl(const T* a, const T* b, T* out, long long n) {
    const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long step = (long long)gridDim.x * blockDim.x;
    long long done = 0;
    const unsigned long long addresses = reinterpret_cast<unsigned long long>(a) |
                                         reinterpret_cast<unsigned long long>(b) |
                                         reinterpret_cast<unsigned long long>(out);
    if ((addresses & 15) == 0) {
        const long long n4 = n / 4;
        for (long long i = first; i < n4; i += step) {
            float p[4], q[4];
            snn_load4_rw(a + 4 * i, p);
            snn_load4_rw(b + 4 * i, q);
#pragma unroll
            for (int k = 0; k < 4; ++k) p[k] += q[k];
            snn_store4(out + 4 * i, p);
        }
        done = n4 * 4;
    }
    for (long long i = done + first; i < n; i += step) out[i] = snn_to<T>(snn_f32(a[i]) + snn_f32(b[i]));
}

extern "C" __global__ void snn_add(const float* a, const float* b, float* out, long long n) {
    snn_add_impl(a, b, out, n);
}

extern "C" __global__ void snn_add_bf16(const snn_bf16* a, const snn_bf16* b, snn_bf16* out, long long n) {
    snn_add_impl(a, b, out, n);
}

// y[i] = x[i] in y's type (bf16: rounded to nearest even), grid-stride, four at a time
// when both are 16-byte aligned.
template <typename S, typename D>
__device__ __forceinline__ void snn_convert_impl(const S* __restrict__ x, D* __restrict__ y, long long n) {
    const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long step = (long long)gridDim.x * blockDim.x;
    long long done = 0;
    if (((reinterpret_cast<unsigned long long>(x) | reinterpret_cast<unsigned long long>(y)) & 15) == 0) {
        const long long n4 = n / 4;
        for (long long i = first; i < n4; i += step) {
            float v[4];
            snn_load4(x + 4 * i, v);
            snn_store4(y + 4 * i, v);
        }
        done = n4 * 4;
    }
    for (long long i = done + first; i < n; i += step) y[i] = snn_to<D>(snn_f32(x[i]));
}

extern "C" __global__ void snn_f32_to_bf16(const float* __restrict__ x, snn_bf16* __restrict__ y, long long n) {
    snn_convert_impl(x, y, n);
}

extern "C" __global__ void snn_bf16_to_f32(const snn_bf16* __restrict__ x, float* __restrict__ y, long long n) {
    snn_convert_impl(x, y, n);
}

// Spikes, exactly -1, 0 or 1, in one signed byte (y = x, exactly), grid-stride.
template <typename S>
__device__ __forceinline__ void snn_to_i8_impl(const S* __restrict__ x, signed char* __restrict__ y, long long n) {
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
        y[i] = (signed char)__float2int_rn(snn_f32(x[i]));
}

// Spikes in one signed byte widened back (y = x, exactly), grid-stride.
template <typename D>
__device__ __forceinline__ void snn_from_i8_impl(const signed char* __restrict__ x, D* __restrict__ y, long long n) {
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
        y[i] = snn_to<D>((float)x[i]);
}

extern "C" __global__ void snn_f32_to_i8(const float* __restrict__ x, signed char* __restrict__ y, long long n) {
    snn_to_i8_impl(x, y, n);
}

extern "C" __global__ void snn_bf16_to_i8(const snn_bf16* __restrict__ x, signed char* __restrict__ y, long long n) {
    snn_to_i8_impl(x, y, n);
}

extern "C" __global__ void snn_i8_to_f32(const signed char* __restrict__ x, float* __restrict__ y, long long n) {
    snn_from_i8_impl(x, y, n);
}

extern "C" __global__ void snn_i8_to_bf16(const signed char* __restrict__ x, snn_bf16* __restrict__ y, long long n) {
    snn_from_i8_impl(x, y, n);
}
