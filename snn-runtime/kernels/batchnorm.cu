// Batch normalisation over x[N][C][P] (f32, or bf16: the `_bf16` twins) (N images, C channels, P = H * W values per plane),
// as torch.nn.BatchNorm2d. Written by hand; launched by snn-runtime's nn::kernels::batchnorm,
// whose module docs describe the passes and the fused path.
//   training forward:  snn_bn_stats, snn_bn_finalize, snn_bn_apply
//   eval forward:      snn_bn_apply
//   backward:          snn_bn_grad_sums, snn_bn_grad_finalize, snn_bn_grad_input
//   fused path:        snn_bn_stats, snn_bn_finalize, snn_bn_scale, snn_bn_grad_fused
//
// Work split, the same in every pass over x: V = 4 (float4 access) when P % 4 == 0 and
// the large tensors are 16-byte aligned, else V = 1; a plane is PU = P / V units. Block
// (tile, chunk) = (blockIdx.x, blockIdx.y). Its threads form `groups` groups of `tg`
// consecutive threads; group g owns channel c = tile * groups + g, and lane l of the group
// takes units l, l + tg, ... of c's plane in every image of the chunk, images
// [chunk * ipc, min(N, chunk * ipc + ipc)). Neighbouring lanes read neighbouring units and
// neighbouring groups neighbouring planes, so a warp's loads coalesce.
//
// x, y, dy, dx and g are f32, or bf16 in the `_bf16` twin of each kernel (the same template
// with T = snn_bf16, computing in f32 all the same); statistics and per-channel values are
// always f32.
//
// Reductions are deterministic: each thread accumulates in a fixed order, a group merges its
// lanes in a fixed tree, each (channel, chunk) writes one partial, and one warp per channel
// merges the chunks in a fixed order. No atomics.

#define SNN_BN_THREADS 256
#define SNN_FULL_MASK 0xffffffffu

template <int V> struct snn_vec { float v[V]; };

// V values at unit `unit` of p, through the read-only cache.
template <int V, typename T>
__device__ __forceinline__ snn_vec<V> snn_load(const T* __restrict__ p, long long unit) {
    snn_vec<V> r;
    if constexpr (V == 4) snn_load4(p + unit * 4, r.v);
    else r.v[0] = snn_f32(__ldg(p + unit));
    return r;
}

template <int V, typename T>
__device__ __forceinline__ void snn_store(T* __restrict__ p, long long unit, const snn_vec<V>& r) {
    if constexpr (V == 4) snn_store4(p + unit * 4, r.v);
    else p[unit] = snn_to<T>(r.v[0]);
}

// Where a thread works: its channel, lane, and the chunk's images.
struct snn_bn_place {
    long long c, n0, n1;
    int lane;
    bool active;
};

__device__ __forceinline__ snn_bn_place snn_bn_where(long long C, long long N, long long ipc, int tg, int groups) {
    snn_bn_place w;
    const int g = threadIdx.x / tg;
    w.lane = threadIdx.x - g * tg;
    w.c = (long long)blockIdx.x * groups + g;
    w.active = g < groups && w.c < C;
    w.n0 = (long long)blockIdx.y * ipc;
    w.n1 = min(N, w.n0 + ipc);
    return w;
}

// Merges statistics (count, mean, M2) b into a (Chan et al.): exact to rounding whatever the
// means, unlike sums of squares.
__device__ __forceinline__ void snn_chan(float& n, float& mean, float& m2, float nb, float meanb, float m2b) {
    if (nb == 0.0f) return;
    if (n == 0.0f) { n = nb; mean = meanb; m2 = m2b; return; }
    const float total = n + nb, delta = meanb - mean, f = nb / total;
    mean = mean + delta * f;
    m2 = m2 + m2b + (delta * (n * f)) * delta;
    n = total;
}

template <int V>
__device__ __forceinline__ void snn_bn_acc(const snn_vec<V>& a, float k, float& s1, float& s2) {
#pragma unroll
    for (int i = 0; i < V; ++i) {
        const float d = a.v[i] - k;
        s1 += d;
        s2 += d * d;
    }
}

// partial[(c * chunks + chunk) * 2 + {0, 1}] = mean and M2 of channel c over the chunk.
template <int V, typename T>
__device__ __forceinline__ void snn_bn_stats(const T* __restrict__ x, float* __restrict__ partial,
                                             long long C, long long N, long long PU, long long ipc,
                                             int tg, int groups, float* s_n, float* s_mean, float* s_m2) {
    const snn_bn_place w = snn_bn_where(C, N, ipc, tg, groups);
    const int t = threadIdx.x;
    const long long stride = C * PU;
    float cnt = 0.0f, mean = 0.0f, m2 = 0.0f;
    if (w.active && w.lane < PU) {
        // Sums of deviations from the thread's first value: no cancellation when the mean
        // is far from zero.
        const float k = snn_f32(x[((w.n0 * C + w.c) * PU + w.lane) * V]);
        float s1 = 0.0f, s2 = 0.0f;
        long long units = 0;
        for (long long u = w.lane; u < PU; u += tg, ++units) {
            long long off = (w.n0 * C + w.c) * PU + u, n = w.n0;
            for (; n + 4 <= w.n1; n += 4, off += 4 * stride) {
                const snn_vec<V> a = snn_load<V>(x, off), b = snn_load<V>(x, off + stride);
                const snn_vec<V> d = snn_load<V>(x, off + 2 * stride), e = snn_load<V>(x, off + 3 * stride);
                snn_bn_acc<V>(a, k, s1, s2);
                snn_bn_acc<V>(b, k, s1, s2);
                snn_bn_acc<V>(d, k, s1, s2);
                snn_bn_acc<V>(e, k, s1, s2);
            }
            for (; n < w.n1; ++n, off += stride) snn_bn_acc<V>(snn_load<V>(x, off), k, s1, s2);
        }
        cnt = (float)(units * (w.n1 - w.n0) * V);
        mean = k + s1 / cnt;
        m2 = fmaxf(s2 - s1 * (s1 / cnt), 0.0f);
    }
    s_n[t] = cnt; s_mean[t] = mean; s_m2[t] = m2;
    // Lane l merges lane l + s at level s: a fixed tree within each group.
    for (int s = 1; s < tg; s <<= 1) {
        __syncthreads();
        if (w.active && (w.lane & (2 * s - 1)) == 0 && w.lane + s < tg) {
            float n = s_n[t], m = s_mean[t], q = s_m2[t];
            snn_chan(n, m, q, s_n[t + s], s_mean[t + s], s_m2[t + s]);
            s_n[t] = n; s_mean[t] = m; s_m2[t] = q;
        }
    }
    if (w.active && w.lane == 0) {
        const long long i = (w.c * gridDim.y + blockIdx.y) * 2;
        partial[i] = s_mean[t];
        partial[i + 1] = s_m2[t];
    }
}

extern "C" __global__ void __launch_bounds__(SNN_BN_THREADS, 4)
snn_bn_stats(const float* __restrict__ x, float* __restrict__ partial, long long C, long long N,
             long long PU, long long ipc, int tg, int groups, int vec) {
    __shared__ float s_n[SNN_BN_THREADS], s_mean[SNN_BN_THREADS], s_m2[SNN_BN_THREADS];
    if (vec == 4) snn_bn_stats<4>(x, partial, C, N, PU, ipc, tg, groups, s_n, s_mean, s_m2);
    else snn_bn_stats<1>(x, partial, C, N, PU, ipc, tg, groups, s_n, s_mean, s_m2);
}

extern "C" __global__ void __launch_bounds__(SNN_BN_THREADS, 4)
snn_bn_stats_bf16(const snn_bf16* __restrict__ x, float* __restrict__ partial, long long C, long long N,
             long long PU, long long ipc, int tg, int groups, int vec) {
    __shared__ float s_n[SNN_BN_THREADS], s_mean[SNN_BN_THREADS], s_m2[SNN_BN_THREADS];
    if (vec == 4) snn_bn_stats<4>(x, partial, C, N, PU, ipc, tg, groups, s_n, s_mean, s_m2);
    else snn_bn_stats<1>(x, partial, C, N, PU, ipc, tg, groups, s_n, s_mean, s_m2);
}

// One warp per channel merges the chunks' partials in a fixed order: lane l takes chunks
// l, l + 32, ..., then a fixed shuffle tree. Writes the batch mean and 1 / sqrt(var + eps)
// and updates the running statistics (the running variance with the unbiased variance).
// Synchronised batch-norm merges the partials of `ranks` ranks, each split alike, gathered
// rank after rank ([ranks][C][chunks][2]): the statistics of the whole batch, the same bits
// on every rank. One rank merges exactly as ever.
extern "C" __global__ void __launch_bounds__(SNN_BN_THREADS)
snn_bn_finalize(const float* __restrict__ partial, float* __restrict__ mean_out,
                float* __restrict__ inv_std_out, float* __restrict__ running_mean,
                float* __restrict__ running_var, long long C, long long N, long long P,
                long long ipc, int chunks, int ranks, float eps, float momentum, float unbias) {
    const long long c = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x & 31;
    if (c >= C) return;  // the whole warp
    float n = 0.0f, mean = 0.0f, m2 = 0.0f;
    for (int k = lane; k < chunks * ranks; k += 32) {
        const int r = k / chunks, kc = k - r * chunks;
        const long long n0 = (long long)kc * ipc, n1 = min(N, n0 + ipc);
        const long long i = (((long long)r * C + c) * chunks + kc) * 2;
        snn_chan(n, mean, m2, (float)((n1 - n0) * P), partial[i], partial[i + 1]);
    }
    for (int off = 16; off > 0; off >>= 1) {
        const float nb = __shfl_down_sync(SNN_FULL_MASK, n, off);
        const float mb = __shfl_down_sync(SNN_FULL_MASK, mean, off);
        const float qb = __shfl_down_sync(SNN_FULL_MASK, m2, off);
        if (lane + off < 32) snn_chan(n, mean, m2, nb, mb, qb);
    }
    if (lane == 0) {
        const float var = m2 / n;
        mean_out[c] = mean;
        inv_std_out[c] = 1.0f / sqrtf(var + eps);
        running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mean;
        running_var[c] = (1.0f - momentum) * running_var[c] + momentum * (var * unbias);
    }
}

// gamma * inv_std, with inv_std = spread (training: the batch's inv_std) or, when from_var,
// 1 / sqrt(spread + eps) (eval: spread is the running variance). snn_bn_apply and
// snn_bn_scale both take their factor from here, so the fused path's scale equals it bit
// for bit.
__device__ __forceinline__ float snn_bn_scale_of(float gamma, float spread, float eps, int from_var) {
    const float inv_std = from_var ? 1.0f / sqrtf(spread + eps) : spread;
    return gamma * inv_std;
}

// scale[c] = snn_bn_scale_of(gamma[c], spread[c]), one thread per channel. `scale` may be
// exactly `gamma` or `spread` (each thread reads its channel before writing it).
extern "C" __global__ void __launch_bounds__(SNN_BN_THREADS)
snn_bn_scale(const float* gamma, const float* spread, float* scale, float eps, int from_var, long long C) {
    const long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (c < C) scale[c] = snn_bn_scale_of(gamma[c], spread[c], eps, from_var);
}

// y = (x - mean) * (gamma * inv_std) + beta. Training passes the batch mean and inv_std;
// eval (from_var = 1) passes the running mean and variance, and inv_std = 1 / sqrt(var + eps).
template <int V, typename T>
__device__ __forceinline__ void snn_bn_apply(const T* __restrict__ x, T* __restrict__ y,
                                             const float* __restrict__ mean, const float* __restrict__ spread,
                                             const float* __restrict__ gamma, const float* __restrict__ beta,
                                             float eps, int from_var, long long C, long long N, long long PU,
                                             long long ipc, int tg, int groups) {
    const snn_bn_place w = snn_bn_where(C, N, ipc, tg, groups);
    if (!w.active) return;
    const float m = mean[w.c];
    const float scale = snn_bn_scale_of(gamma[w.c], spread[w.c], eps, from_var), shift = beta[w.c];
    const long long stride = C * PU;
    for (long long u = w.lane; u < PU; u += tg) {
        long long off = (w.n0 * C + w.c) * PU + u, n = w.n0;
        for (; n + 4 <= w.n1; n += 4, off += 4 * stride) {
            snn_vec<V> a = snn_load<V>(x, off), b = snn_load<V>(x, off + stride);
            snn_vec<V> d = snn_load<V>(x, off + 2 * stride), e = snn_load<V>(x, off + 3 * stride);
#pragma unroll
            for (int i = 0; i < V; ++i) {
                a.v[i] = (a.v[i] - m) * scale + shift;
                b.v[i] = (b.v[i] - m) * scale + shift;
                d.v[i] = (d.v[i] - m) * scale + shift;
                e.v[i] = (e.v[i] - m) * scale + shift;
            }
            snn_store<V>(y, off, a);
            snn_store<V>(y, off + stride, b);
            snn_store<V>(y, off + 2 * stride, d);
            snn_store<V>(y, off + 3 * stride, e);
        }
        for (; n < w.n1; ++n, off += stride) {
            snn_vec<V> a = snn_load<V>(x, off);
#pragma unroll
            for (int i = 0; i < V; ++i) a.v[i] = (a.v[i] - m) * scale + shift;
            snn_store<V>(y, off, a);
        }
    }
}

extern "C" __global__ void __launch_bounds__(SNN_BN_THREADS, 4)
snn_bn_apply(const float* __restrict__ x, float* __restrict__ y, const float* __restrict__ mean,
             const float* __restrict__ spread, const float* __restrict__ gamma,
             const float* __restrict__ beta, float eps, int from_var, long long C, long long N,
             long long PU, long long ipc, int tg, int groups, int vec) {
    if (vec == 4) snn_bn_apply<4>(x, y, mean, spread, gamma, beta, eps, from_var, C, N, PU, ipc, tg, groups);
    else snn_bn_apply<1>(x, y, mean, spread, gamma, beta, eps, from_var, C, N, PU, ipc, tg, groups);
}

extern "C" __global__ void __launch_bounds__(SNN_BN_THREADS, 4)
snn_bn_apply_bf16(const snn_bf16* __restrict__ x, snn_bf16* __restrict__ y, const float* __restrict__ mean,
             const float* __restrict__ spread, const float* __restrict__ gamma,
             const float* __restrict__ beta, float eps, int from_var, long long C, long long N,
             long long PU, long long ipc, int tg, int groups, int vec) {
    if (vec == 4) snn_bn_apply<4>(x, y, mean, spread, gamma, beta, eps, from_var, C, N, PU, ipc, tg, groups);
    else snn_bn_apply<1>(x, y, mean, spread, gamma, beta, eps, from_var, C, N, PU, ipc, tg, groups);
}

template <int V>
__device__ __forceinline__ void snn_bn_grad_acc(const snn_vec<V>& xv, const snn_vec<V>& g, float m,
                                                float& sdy, float& sdyx) {
#pragma unroll
    for (int i = 0; i < V; ++i) {
        sdy += g.v[i];
        sdyx += g.v[i] * (xv.v[i] - m);
    }
}

// partial[(c * chunks + chunk) * 2 + {0, 1}] = sum(dy) and sum(dy * (x - mean)) over the chunk.
template <int V, typename T>
__device__ __forceinline__ void snn_bn_grad_sums(const T* __restrict__ x, const T* __restrict__ dy,
                                                 const float* __restrict__ mean, float* __restrict__ partial,
                                                 long long C, long long N, long long PU, long long ipc,
                                                 int tg, int groups, float* s_a, float* s_b) {
    const snn_bn_place w = snn_bn_where(C, N, ipc, tg, groups);
    const int t = threadIdx.x;
    const long long stride = C * PU;
    float sdy = 0.0f, sdyx = 0.0f;
    if (w.active) {
        const float m = mean[w.c];
        for (long long u = w.lane; u < PU; u += tg) {
            long long off = (w.n0 * C + w.c) * PU + u, n = w.n0;
            for (; n + 2 <= w.n1; n += 2, off += 2 * stride) {
                const snn_vec<V> xa = snn_load<V>(x, off), xb = snn_load<V>(x, off + stride);
                const snn_vec<V> ga = snn_load<V>(dy, off), gb = snn_load<V>(dy, off + stride);
                snn_bn_grad_acc<V>(xa, ga, m, sdy, sdyx);
                snn_bn_grad_acc<V>(xb, gb, m, sdy, sdyx);
            }
            for (; n < w.n1; ++n, off += stride)
                snn_bn_grad_acc<V>(snn_load<V>(x, off), snn_load<V>(dy, off), m, sdy, sdyx);
        }
    }
    s_a[t] = sdy; s_b[t] = sdyx;
    for (int s = 1; s < tg; s <<= 1) {
        __syncthreads();
        if (w.active && (w.lane & (2 * s - 1)) == 0 && w.lane + s < tg) {
            s_a[t] += s_a[t + s];
            s_b[t] += s_b[t + s];
        }
    }
    if (w.active && w.lane == 0) {
        const long long i = (w.c * gridDim.y + blockIdx.y) * 2;
        partial[i] = s_a[t];
        partial[i + 1] = s_b[t];
    }
}

extern "C" __global__ void __launch_bounds__(SNN_BN_THREADS, 4)
snn_bn_grad_sums(const float* __restrict__ x, const float* __restrict__ dy, const float* __restrict__ mean,
                 float* __restrict__ partial, long long C, long long N, long long PU, long long ipc,
                 int tg, int groups, int vec) {
    __shared__ float s_a[SNN_BN_THREADS], s_b[SNN_BN_THREADS];
    if (vec == 4) snn_bn_grad_sums<4>(x, dy, mean, partial, C, N, PU, ipc, tg, groups, s_a, s_b);
    else snn_bn_grad_sums<1>(x, dy, mean, partial, C, N, PU, ipc, tg, groups, s_a, s_b);
}

extern "C" __global__ void __launch_bounds__(SNN_BN_THREADS, 4)
snn_bn_grad_sums_bf16(const snn_bf16* __restrict__ x, const snn_bf16* __restrict__ dy, const float* __restrict__ mean,
                 float* __restrict__ partial, long long C, long long N, long long PU, long long ipc,
                 int tg, int groups, int vec) {
    __shared__ float s_a[SNN_BN_THREADS], s_b[SNN_BN_THREADS];
    if (vec == 4) snn_bn_grad_sums<4>(x, dy, mean, partial, C, N, PU, ipc, tg, groups, s_a, s_b);
    else snn_bn_grad_sums<1>(x, dy, mean, partial, C, N, PU, ipc, tg, groups, s_a, s_b);
}

// One warp per channel: dbeta = sum(dy), dgamma = sum(dy * (x - mean)) * inv_std, merging
// the chunks in a fixed order.
extern "C" __global__ void __launch_bounds__(SNN_BN_THREADS)
snn_bn_grad_finalize(const float* __restrict__ partial, const float* __restrict__ inv_std,
                     float* __restrict__ dgamma, float* __restrict__ dbeta, long long C, int chunks) {
    const long long c = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x & 31;
    if (c >= C) return;  // the whole warp
    float a = 0.0f, b = 0.0f;
    for (int k = lane; k < chunks; k += 32) {
        const long long i = (c * chunks + k) * 2;
        a += partial[i];
        b += partial[i + 1];
    }
    for (int off = 16; off > 0; off >>= 1) {
        a += __shfl_down_sync(SNN_FULL_MASK, a, off);
        b += __shfl_down_sync(SNN_FULL_MASK, b, off);
    }
    if (lane == 0) {
        dbeta[c] = a;
        dgamma[c] = b * inv_std[c];
    }
}

// dx = gamma * inv_std * (dy - dbeta / n - x_hat * dgamma / n), x_hat = (x - mean) * inv_std.
template <int V, typename T>
__device__ __forceinline__ void snn_bn_grad_input(const T* __restrict__ x, const T* __restrict__ dy,
                                                  T* __restrict__ dx, const float* __restrict__ mean,
                                                  const float* __restrict__ inv_std, const float* __restrict__ gamma,
                                                  const float* __restrict__ dgamma, const float* __restrict__ dbeta,
                                                  float inv_n, long long C, long long N, long long PU,
                                                  long long ipc, int tg, int groups) {
    const snn_bn_place w = snn_bn_where(C, N, ipc, tg, groups);
    if (!w.active) return;
    const float m = mean[w.c], is = inv_std[w.c];
    const float scale = gamma[w.c] * is, mean_dy = dbeta[w.c] * inv_n, mean_dyx = dgamma[w.c] * inv_n;
    const long long stride = C * PU;
    for (long long u = w.lane; u < PU; u += tg) {
        long long off = (w.n0 * C + w.c) * PU + u, n = w.n0;
        for (; n + 2 <= w.n1; n += 2, off += 2 * stride) {
            const snn_vec<V> xa = snn_load<V>(x, off), xb = snn_load<V>(x, off + stride);
            snn_vec<V> ga = snn_load<V>(dy, off), gb = snn_load<V>(dy, off + stride);
#pragma unroll
            for (int i = 0; i < V; ++i) {
                ga.v[i] = scale * (ga.v[i] - mean_dy - ((xa.v[i] - m) * is) * mean_dyx);
                gb.v[i] = scale * (gb.v[i] - mean_dy - ((xb.v[i] - m) * is) * mean_dyx);
            }
            snn_store<V>(dx, off, ga);
            snn_store<V>(dx, off + stride, gb);
        }
        for (; n < w.n1; ++n, off += stride) {
            const snn_vec<V> xa = snn_load<V>(x, off);
            snn_vec<V> ga = snn_load<V>(dy, off);
#pragma unroll
            for (int i = 0; i < V; ++i) ga.v[i] = scale * (ga.v[i] - mean_dy - ((xa.v[i] - m) * is) * mean_dyx);
            snn_store<V>(dx, off, ga);
        }
    }
}

extern "C" __global__ void __launch_bounds__(SNN_BN_THREADS, 4)
snn_bn_grad_input(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx,
                  const float* __restrict__ mean, const float* __restrict__ inv_std,
                  const float* __restrict__ gamma, const float* __restrict__ dgamma,
                  const float* __restrict__ dbeta, float inv_n, long long C, long long N, long long PU,
                  long long ipc, int tg, int groups, int vec) {
    if (vec == 4) snn_bn_grad_input<4>(x, dy, dx, mean, inv_std, gamma, dgamma, dbeta, inv_n, C, N, PU, ipc, tg, groups);
    else snn_bn_grad_input<1>(x, dy, dx, mean, inv_std, gamma, dgamma, dbeta, inv_n, C, N, PU, ipc, tg, groups);
}

extern "C" __global__ void __launch_bounds__(SNN_BN_THREADS, 4)
snn_bn_grad_input_bf16(const snn_bf16* __restrict__ x, const snn_bf16* __restrict__ dy, snn_bf16* __restrict__ dx,
                  const float* __restrict__ mean, const float* __restrict__ inv_std,
                  const float* __restrict__ gamma, const float* __restrict__ dgamma,
                  const float* __restrict__ dbeta, float inv_n, long long C, long long N, long long PU,
                  long long ipc, int tg, int groups, int vec) {
    if (vec == 4) snn_bn_grad_input<4>(x, dy, dx, mean, inv_std, gamma, dgamma, dbeta, inv_n, C, N, PU, ipc, tg, groups);
    else snn_bn_grad_input<1>(x, dy, dx, mean, inv_std, gamma, dgamma, dbeta, inv_n, C, N, PU, ipc, tg, groups);
}

// A load of memory that the kernel also writes (no read-only cache path).
template <int V, typename T>
__device__ __forceinline__ snn_vec<V> snn_load_rw(const T* __restrict__ p, long long unit) {
    snn_vec<V> r;
    if constexpr (V == 4) snn_load4_rw(p + unit * 4, r.v);
    else r.v[0] = snn_f32(p[unit]);
    return r;
}

template <int V>
__device__ __forceinline__ void snn_bn_fused_step(const snn_vec<V>& xv, snn_vec<V>& gv, float m, float c1, float c0) {
#pragma unroll
    for (int i = 0; i < V; ++i) gv.v[i] = gv.v[i] + c1 * (xv.v[i] - m) + c0;
}

// The fused path's backward (see the runtime's nn::kernels::batchnorm). g holds
// scale * dL/dy on entry; per channel dgamma = inv_std * grad_scale and dbeta = grad_shift
// (written by lane 0 of chunk 0's group), and in place g += c1 * (x - mean) + c0 with c1 = -scale * inv_std * dgamma / M and
// c0 = -scale * dbeta / M, each thread computing its channel's coefficients itself (no
// per-channel launch). 12 bytes per value: read x and g, write g.
template <int V, typename T>
__device__ __forceinline__ void snn_bn_grad_fused(const T* __restrict__ x, T* __restrict__ g,
                                                  const float* __restrict__ mean, const float* __restrict__ inv_std,
                                                  const float* __restrict__ scale, const float* __restrict__ grad_scale,
                                                  const float* __restrict__ grad_shift, float* __restrict__ dgamma,
                                                  float* __restrict__ dbeta, float inv_m, long long C, long long N,
                                                  long long PU, long long ipc, int tg, int groups) {
    const snn_bn_place w = snn_bn_where(C, N, ipc, tg, groups);
    if (!w.active) return;
    const float m = mean[w.c], is = inv_std[w.c], sc = scale[w.c];
    const float dg = is * grad_scale[w.c], db = grad_shift[w.c];
    if (blockIdx.y == 0 && w.lane == 0) {
        dgamma[w.c] = dg;
        dbeta[w.c] = db;
    }
    const float c1 = -(sc * is * dg * inv_m), c0 = -(sc * db * inv_m);
    const long long stride = C * PU;
    for (long long u = w.lane; u < PU; u += tg) {
        long long off = (w.n0 * C + w.c) * PU + u, n = w.n0;
        for (; n + 2 <= w.n1; n += 2, off += 2 * stride) {
            const snn_vec<V> xa = snn_load<V>(x, off), xb = snn_load<V>(x, off + stride);
            snn_vec<V> ga = snn_load_rw<V>(g, off), gb = snn_load_rw<V>(g, off + stride);
            snn_bn_fused_step<V>(xa, ga, m, c1, c0);
            snn_bn_fused_step<V>(xb, gb, m, c1, c0);
            snn_store<V>(g, off, ga);
            snn_store<V>(g, off + stride, gb);
        }
        for (; n < w.n1; ++n, off += stride) {
            snn_vec<V> ga = snn_load_rw<V>(g, off);
            snn_bn_fused_step<V>(snn_load<V>(x, off), ga, m, c1, c0);
            snn_store<V>(g, off, ga);
        }
    }
}

extern "C" __global__ void __launch_bounds__(SNN_BN_THREADS, 4)
snn_bn_grad_fused(const float* __restrict__ x, float* __restrict__ g, const float* __restrict__ mean,
                  const float* __restrict__ inv_std, const float* __restrict__ scale,
                  const float* __restrict__ grad_scale, const float* __restrict__ grad_shift,
                  float* __restrict__ dgamma, float* __restrict__ dbeta, float inv_m, long long C,
                  long long N, long long PU, long long ipc, int tg, int groups, int vec) {
    if (vec == 4) snn_bn_grad_fused<4>(x, g, mean, inv_std, scale, grad_scale, grad_shift, dgamma, dbeta, inv_m, C, N, PU, ipc, tg, groups);
    else snn_bn_grad_fused<1>(x, g, mean, inv_std, scale, grad_scale, grad_shift, dgamma, dbeta, inv_m, C, N, PU, ipc, tg, groups);
}

extern "C" __global__ void __launch_bounds__(SNN_BN_THREADS, 4)
snn_bn_grad_fused_bf16(const snn_bf16* __restrict__ x, snn_bf16* __restrict__ g, const float* __restrict__ mean,
                  const float* __restrict__ inv_std, const float* __restrict__ scale,
                  const float* __restrict__ grad_scale, const float* __restrict__ grad_shift,
                  float* __restrict__ dgamma, float* __restrict__ dbeta, float inv_m, long long C,
                  long long N, long long PU, long long ipc, int tg, int groups, int vec) {
    if (vec == 4) snn_bn_grad_fused<4>(x, g, mean, inv_std, scale, grad_scale, grad_shift, dgamma, dbeta, inv_m, C, N, PU, ipc, tg, groups);
    else snn_bn_grad_fused<1>(x, g, mean, inv_std, scale, grad_scale, grad_shift, dgamma, dbeta, inv_m, C, N, PU, ipc, tg, groups);
}
