// snn-runtime (hand-written): the weight taps of a convolution whose output is one pixel
// and whose window holds the whole input (src/nn/conv/taps.rs). Gather copies the taps
// that touch the input out of the [out, in, k, k] weight into a dense [out, in, h, w]
// block for cuBLAS; scatter writes the block's gradient back into the whole weight
// gradient, zero at the taps that only ever see padding. f32 or bf16 (the `_bf16` twins).

template <typename T>
__device__ __forceinline__ void snn_taps_gather_impl(const T* __restrict__ w, T* __restrict__ taps,
                                                     long long filters, long long k, long long h,
                                                     long long wd, long long pad) {
    const long long plane = h * wd, total = filters * plane;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long f = i / plane, r = i % plane;
        taps[i] = w[f * k * k + (pad + r / wd) * k + pad + r % wd];
    }
}

template <typename T>
__device__ __forceinline__ void snn_taps_scatter_impl(const T* __restrict__ dtaps, T* __restrict__ dw,
                                                      long long filters, long long k, long long h,
                                                      long long wd, long long pad) {
    const long long total = filters * k * k;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long f = i / (k * k), r = i % (k * k);
        const long long ih = r / k - pad, iw = r % k - pad;
        const bool touches = ih >= 0 && ih < h && iw >= 0 && iw < wd;
        dw[i] = touches ? dtaps[(f * h + ih) * wd + iw] : snn_to<T>(0.0f);
    }
}

extern "C" __global__ void snn_taps_gather(const float* __restrict__ w, float* __restrict__ taps,
                                           const long long filters, const long long k,
                                           const long long h, const long long wd,
                                           const long long pad) {
    snn_taps_gather_impl(w, taps, filters, k, h, wd, pad);
}

extern "C" __global__ void snn_taps_gather_bf16(const snn_bf16* __restrict__ w,
                                                snn_bf16* __restrict__ taps, const long long filters,
                                                const long long k, const long long h,
                                                const long long wd, const long long pad) {
    snn_taps_gather_impl(w, taps, filters, k, h, wd, pad);
}

extern "C" __global__ void snn_taps_scatter(const float* __restrict__ dtaps, float* __restrict__ dw,
                                            const long long filters, const long long k,
                                            const long long h, const long long wd,
                                            const long long pad) {
    snn_taps_scatter_impl(dtaps, dw, filters, k, h, wd, pad);
}

extern "C" __global__ void snn_taps_scatter_bf16(const snn_bf16* __restrict__ dtaps,
                                                 snn_bf16* __restrict__ dw, const long long filters,
                                                 const long long k, const long long h,
                                                 const long long wd, const long long pad) {
    snn_taps_scatter_impl(dtaps, dw, filters, k, h, wd, pad);
}
