// snn-runtime (hand-written): per-channel bias of [N, C, P] tensors (convolutions and
// linear layers), f32 or bf16 (the `_bf16` twins), forward and gradient. The gradient sums
// in double precision in an order fixed by the shape alone, so it is the same on every run
// and every device. The launches are in src/nn/bias.rs.

template <typename T>
__device__ __forceinline__ void snn_bias_add_impl(T* __restrict__ y, const float* __restrict__ bias,
                                                  long long total, long long channels, long long plane) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        y[i] = snn_to<T>(snn_f32(y[i]) + bias[(i / plane) % channels]);
    }
}

extern "C" __global__ void snn_bias_add(float* __restrict__ y, const float* __restrict__ bias,
                                        const long long total, const long long channels,
                                        const long long plane) {
    snn_bias_add_impl(y, bias, total, channels, plane);
}

extern "C" __global__ void snn_bias_add_bf16(snn_bf16* __restrict__ y, const float* __restrict__ bias,
                                             const long long total, const long long channels,
                                             const long long plane) {
    snn_bias_add_impl(y, bias, total, channels, plane);
}

// partial[c * gridDim.y + s] = the sum of dy[n, c, :] over the images n of chunk s.
template <typename T>
__device__ __forceinline__ void snn_bias_grad_partial_impl(const T* __restrict__ dy, double* __restrict__ partial,
                                                           long long images, long long channels,
                                                           long long plane, long long chunk) {
    __shared__ double sums[256];
    const long long c = blockIdx.x;
    const long long first = (long long)blockIdx.y * chunk;
    const long long last = first + chunk < images ? first + chunk : images;
    const long long count = (last - first) * plane;
    double acc = 0.0;
    for (long long j = threadIdx.x; j < count; j += 256) {
        const long long n = first + j / plane, p = j % plane;
        acc += (double)snn_f32(dy[(n * channels + c) * plane + p]);
    }
    sums[threadIdx.x] = acc;
    __syncthreads();
    for (int width = 128; width > 0; width >>= 1) {
        if (threadIdx.x < width) sums[threadIdx.x] += sums[threadIdx.x + width];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[c * gridDim.y + blockIdx.y] = sums[0];
}

extern "C" __global__ void __launch_bounds__(256) snn_bias_grad_partial(
    const float* __restrict__ dy, double* __restrict__ partial, const long long images,
    const long long channels, const long long plane, const long long chunk) {
    snn_bias_grad_partial_impl(dy, partial, images, channels, plane, chunk);
}

extern "C" __global__ void __launch_bounds__(256) snn_bias_grad_partial_bf16(
    const snn_bf16* __restrict__ dy, double* __restrict__ partial, const long long images,
    const long long channels, const long long plane, const long long chunk) {
    snn_bias_grad_partial_impl(dy, partial, images, channels, plane, chunk);
}

// dbias[c] = the sum of partial[c, :], in order.
extern "C" __global__ void snn_bias_grad_finish(const double* __restrict__ partial,
                                                float* __restrict__ dbias,
                                                const long long channels,
                                                const long long splits) {
    const long long c = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (c >= channels) return;
    double acc = 0.0;
    for (long long s = 0; s < splits; ++s) acc += partial[c * splits + s];
    dbias[c] = (float)acc;
}
