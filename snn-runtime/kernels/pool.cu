// Max pooling (as torch.nn.MaxPool2d) and global average pooling (as
// torch.nn.AdaptiveAvgPool2d(1) and a flatten) over x[planes][H][W] of f32, or bf16 in the
// `_bf16` twins (the same templates; max pooling keeps bf16 throughout, average pooling
// reads bf16 x and writes f32 means, and takes f32 gradients back to bf16 ones). Written by hand;
// launched by snn-runtime's nn::kernels::pool.
//   max pooling:      snn_maxpool2d_forward, snn_maxpool2d_backward (and `_wide` twins)
//   average pooling:  snn_avgpool_forward, snn_avgpool_backward
//
// Each kernel takes its sizes as `long long` and runs with 32-bit indices when every index
// fits (max pooling: a separate `_wide` kernel otherwise; average pooling: `wide`), since
// 64-bit index math costs several times more.

#define SNN_FULL_MASK 0xffffffffu

// Sizes of a max pooling: `planes` planes of H x W in, Ho x Wo out, a k x k window, stride
// s, padding pad.
template <typename I>
struct snn_pool_dims { I planes, H, W, Ho, Wo, k, s, pad; };

// Strips: a thread takes up to 4 neighbouring values of one row (columns 4j .. 4j + 3), so
// it stores 16 bytes at once and shares the row's index math among them. A plane of `rows`
// rows has rows * ceil(cols / 4) strips. When that is at most 256 (`per_block` > 0), a
// block takes `per_block` whole planes at a time and each thread keeps its row and strip
// for every plane it visits: it divides once, at the start. Otherwise (`per_block` = 0) a
// block takes 256 strips of one plane at a time, `chunks` = ceil(strips / 256) per plane.
// f(p, row, first column) does one strip.
template <typename I, typename F>
__device__ __forceinline__ void snn_pool_strips(I planes, I rows, I cols, int per_block, I chunks, F&& f) {
    const I sw = (cols + 3) / 4, ps = rows * sw;
    if (per_block > 0) {
        // ps <= 256 here.
        const int t = threadIdx.x, q = t / (int)ps;
        if (q >= per_block) return;
        const int r = t - q * (int)ps, row = r / (int)sw, j = r - row * (int)sw;
        for (I p = (I)blockIdx.x * per_block + q; p < planes; p += (I)gridDim.x * per_block) f(p, (I)row, (I)j * 4);
    } else {
        for (I item = blockIdx.x; item < planes * chunks; item += gridDim.x) {
            const I p = item / chunks, r = (item - p * chunks) * (I)blockDim.x + threadIdx.x;
            if (r < ps) {
                const I row = r / sw;
                f(p, row, (r - row * sw) * 4);
            }
        }
    }
}

// One strip of outputs: (oh, ow0 .. ow0 + 3) of plane p. The window is clipped to the image
// (padding never wins); the first maximum in row-major window order wins, and a NaN counts
// as a maximum (the window's last NaN wins), as PyTorch. argmax = (h - h_start) * k +
// (w - w_start). K, S > 0 fix the window and stride at compile time (unrolled loops, loads
// issued together); 0 takes them from d. vec: Wo % 4 == 0 and y, argmax aligned for one
// 16-byte and one 4-byte store.
template <typename I, int K, int S>
struct snn_maxpool_fwd_strip {
    template <typename T>
    static __device__ __forceinline__ void run(const T* __restrict__ x, T* __restrict__ y,
                                               unsigned char* __restrict__ argmax, const snn_pool_dims<I>& d,
                                               int vec, I p, I oh, I ow0) {
        const I k = K > 0 ? (I)K : d.k, s = S > 0 ? (I)S : d.s;
        const I hs = oh * s - d.pad, h0 = max(hs, (I)0), h1 = min(hs + k, d.H);
        const I ws = ow0 * s - d.pad;  // window start of the strip's first output
        const T* __restrict__ xp = x + p * d.H * d.W;
        float best[4];
        int arg[4];
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            const I wv = ws + v * s;
            best[v] = __int_as_float(0xff800000);  // -inf
            arg[v] = (int)((h0 - hs) * k + (max(wv, (I)0) - wv));
        }
        // Row h of every window: kw ascending per output, rows ascending, so row-major order.
        auto row = [&](I h) {
            const T* __restrict__ xr = xp + h * d.W;
            const int kh = (int)((h - hs) * k);
#pragma unroll
            for (int kw = 0; kw < (int)k; ++kw) {
#pragma unroll
                for (int v = 0; v < 4; ++v) {
                    const I w = ws + v * s + kw;
                    if (w >= 0 && w < d.W) {
                        const float val = snn_f32(__ldg(xr + w));
                        if (val > best[v] || val != val) { best[v] = val; arg[v] = kh + kw; }
                    }
                }
            }
        };
        if constexpr (K > 0) {
#pragma unroll
            for (int i = 0; i < K; ++i)
                if (h0 + i < h1) row(h0 + i);
        } else {
            for (I h = h0; h < h1; ++h) row(h);
        }
        const I o = (p * d.Ho + oh) * d.Wo + ow0;
        if (vec) {
            snn_store4(y + o, best);
            reinterpret_cast<unsigned int*>(argmax + o)[0] =
                (unsigned)arg[0] | ((unsigned)arg[1] << 8) | ((unsigned)arg[2] << 16) | ((unsigned)arg[3] << 24);
        } else {
#pragma unroll
            for (int v = 0; v < 4; ++v) {
                if (ow0 + v < d.Wo) {
                    y[o + v] = snn_to<T>(best[v]);
                    argmax[o + v] = (unsigned char)arg[v];
                }
            }
        }
    }
};

// Runs Strip<I, K, S>::run(pointers..., d, vec, p, row, first column) on every strip of
// `rows` x `cols` (snn_pool_strips), K and S fixed at compile time where the window is a
// common one: the ResNet stem's 3x3 stride-2 window and the 2x2 stride-2 one get unrolled
// code in the 32-bit kernels; the 64-bit ones (tensors of over 2^30 values) and other windows
// take the general loop (K = S = 0).
template <template <typename, int, int> class Strip, typename I, typename... P>
__device__ __forceinline__ void snn_maxpool_strips(const snn_pool_dims<I>& d, I rows, I cols, int per_block,
                                                   I chunks, int vec, P... pointers) {
    constexpr bool unrolled = sizeof(I) == 4;
    if (unrolled && d.k == 3 && d.s == 2)
        snn_pool_strips<I>(d.planes, rows, cols, per_block, chunks,
                           [&](I p, I r, I c) { Strip<I, 3, 2>::run(pointers..., d, vec, p, r, c); });
    else if (unrolled && d.k == 2 && d.s == 2)
        snn_pool_strips<I>(d.planes, rows, cols, per_block, chunks,
                           [&](I p, I r, I c) { Strip<I, 2, 2>::run(pointers..., d, vec, p, r, c); });
    else
        snn_pool_strips<I>(d.planes, rows, cols, per_block, chunks,
                           [&](I p, I r, I c) { Strip<I, 0, 0>::run(pointers..., d, vec, p, r, c); });
}

// The launches: 32-bit indices where every index fits (`_wide`: 64-bit), as separate kernels
// so that the common one is not sized for the registers of the other. All four take the
// sizes of snn_pool_dims, then the strip split of snn_pool_strips and `vec`.
extern "C" __global__ void __launch_bounds__(256)
snn_maxpool2d_forward(const float* __restrict__ x, float* __restrict__ y, unsigned char* __restrict__ argmax,
                      long long planes, long long H, long long W, long long Ho, long long Wo,
                      long long k, long long s, long long pad, int per_block, long long chunks, int vec) {
    const snn_pool_dims<int> d{(int)planes, (int)H, (int)W, (int)Ho, (int)Wo, (int)k, (int)s, (int)pad};
    snn_maxpool_strips<snn_maxpool_fwd_strip>(d, d.Ho, d.Wo, per_block, (int)chunks, vec, x, y, argmax);
}

extern "C" __global__ void __launch_bounds__(256)
snn_maxpool2d_forward_bf16(const snn_bf16* __restrict__ x, snn_bf16* __restrict__ y, unsigned char* __restrict__ argmax,
                      long long planes, long long H, long long W, long long Ho, long long Wo,
                      long long k, long long s, long long pad, int per_block, long long chunks, int vec) {
    const snn_pool_dims<int> d{(int)planes, (int)H, (int)W, (int)Ho, (int)Wo, (int)k, (int)s, (int)pad};
    snn_maxpool_strips<snn_maxpool_fwd_strip>(d, d.Ho, d.Wo, per_block, (int)chunks, vec, x, y, argmax);
}

extern "C" __global__ void __launch_bounds__(256)
snn_maxpool2d_forward_wide(const float* __restrict__ x, float* __restrict__ y, unsigned char* __restrict__ argmax,
                           long long planes, long long H, long long W, long long Ho, long long Wo,
                           long long k, long long s, long long pad, int per_block, long long chunks, int vec) {
    const snn_pool_dims<long long> d{planes, H, W, Ho, Wo, k, s, pad};
    snn_maxpool_strips<snn_maxpool_fwd_strip>(d, d.Ho, d.Wo, per_block, chunks, vec, x, y, argmax);
}

extern "C" __global__ void __launch_bounds__(256)
snn_maxpool2d_forward_wide_bf16(const snn_bf16* __restrict__ x, snn_bf16* __restrict__ y, unsigned char* __restrict__ argmax,
                           long long planes, long long H, long long W, long long Ho, long long Wo,
                           long long k, long long s, long long pad, int per_block, long long chunks, int vec) {
    const snn_pool_dims<long long> d{planes, H, W, Ho, Wo, k, s, pad};
    snn_maxpool_strips<snn_maxpool_fwd_strip>(d, d.Ho, d.Wo, per_block, chunks, vec, x, y, argmax);
}

// One strip of inputs: (h, w0 .. w0 + 3) of plane p, each the sum of dy over the outputs
// whose window chose it, added in row-major output order (the CPU reference's order): the
// windows containing row h and a strip column, rows then columns ascending; a window whose
// argmax row is h adds its dy to the strip column it names, if any. An argmax outside the
// window names no input. K, S as in the forward (a strip meets at most (K - 1) / S + 1
// window rows and (K + 2) / S + 1 window columns). vec: W % 4 == 0 and dx 16-byte aligned.
template <typename I, int K, int S>
struct snn_maxpool_bwd_strip {
    template <typename T>
    static __device__ __forceinline__ void run(const unsigned char* __restrict__ argmax,
                                               const T* __restrict__ dy, T* __restrict__ dx,
                                               const snn_pool_dims<I>& d, int vec, I p, I h, I w0) {
        const I k = K > 0 ? (I)K : d.k, s = S > 0 ? (I)S : d.s;
        // Windows oh with oh * s - pad <= h < oh * s - pad + k; likewise for the columns.
        const I ah = h + d.pad - k, aw = w0 + d.pad - k;
        const I oh0 = ah < 0 ? (I)0 : ah / s + 1, oh1 = min((h + d.pad) / s, d.Ho - 1);
        const I ow0 = aw < 0 ? (I)0 : aw / s + 1, ow1 = min((min(w0 + 4, d.W) - 1 + d.pad) / s, d.Wo - 1);
        const I base = p * d.Ho * d.Wo;
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        auto window = [&](I oh, I ow) {
            const I o = base + oh * d.Wo + ow;
            const int kh = (int)(h + d.pad - oh * s);
            // The chosen column within the window, when the window chose row h.
            const unsigned rel = (unsigned)((int)__ldg(argmax + o) - kh * (int)k);
            const float g = snn_f32(__ldg(dy + o));
            if (rel < (unsigned)k) {
                const I col = ow * s - d.pad + (I)rel - w0;
#pragma unroll
                for (int v = 0; v < 4; ++v)
                    if (col == v) acc[v] += g;
            }
        };
        if constexpr (K > 0) {
#pragma unroll
            for (int i = 0; i < (K - 1) / S + 1; ++i) {
                if (oh0 + i <= oh1) {
#pragma unroll
                    for (int j = 0; j < (K + 2) / S + 1; ++j)
                        if (ow0 + j <= ow1) window(oh0 + i, ow0 + j);
                }
            }
        } else {
            for (I oh = oh0; oh <= oh1; ++oh)
                for (I ow = ow0; ow <= ow1; ++ow) window(oh, ow);
        }
        T* __restrict__ out = dx + (p * d.H + h) * d.W + w0;
        if (vec) {
            snn_store4(out, acc);
        } else {
#pragma unroll
            for (int v = 0; v < 4; ++v)
                if (w0 + v < d.W) out[v] = snn_to<T>(acc[v]);
        }
    }
};

extern "C" __global__ void __launch_bounds__(256)
snn_maxpool2d_backward(const unsigned char* __restrict__ argmax, const float* __restrict__ dy,
                       float* __restrict__ dx,
                       long long planes, long long H, long long W, long long Ho, long long Wo,
                       long long k, long long s, long long pad, int per_block, long long chunks, int vec) {
    const snn_pool_dims<int> d{(int)planes, (int)H, (int)W, (int)Ho, (int)Wo, (int)k, (int)s, (int)pad};
    snn_maxpool_strips<snn_maxpool_bwd_strip>(d, d.H, d.W, per_block, (int)chunks, vec, argmax, dy, dx);
}

extern "C" __global__ void __launch_bounds__(256)
snn_maxpool2d_backward_bf16(const unsigned char* __restrict__ argmax, const snn_bf16* __restrict__ dy,
                       snn_bf16* __restrict__ dx,
                       long long planes, long long H, long long W, long long Ho, long long Wo,
                       long long k, long long s, long long pad, int per_block, long long chunks, int vec) {
    const snn_pool_dims<int> d{(int)planes, (int)H, (int)W, (int)Ho, (int)Wo, (int)k, (int)s, (int)pad};
    snn_maxpool_strips<snn_maxpool_bwd_strip>(d, d.H, d.W, per_block, (int)chunks, vec, argmax, dy, dx);
}

extern "C" __global__ void __launch_bounds__(256)
snn_maxpool2d_backward_wide(const unsigned char* __restrict__ argmax, const float* __restrict__ dy,
                            float* __restrict__ dx,
                            long long planes, long long H, long long W, long long Ho, long long Wo,
                            long long k, long long s, long long pad, int per_block, long long chunks, int vec) {
    const snn_pool_dims<long long> d{planes, H, W, Ho, Wo, k, s, pad};
    snn_maxpool_strips<snn_maxpool_bwd_strip>(d, d.H, d.W, per_block, chunks, vec, argmax, dy, dx);
}

extern "C" __global__ void __launch_bounds__(256)
snn_maxpool2d_backward_wide_bf16(const unsigned char* __restrict__ argmax, const snn_bf16* __restrict__ dy,
                            snn_bf16* __restrict__ dx,
                            long long planes, long long H, long long W, long long Ho, long long Wo,
                            long long k, long long s, long long pad, int per_block, long long chunks, int vec) {
    const snn_pool_dims<long long> d{planes, H, W, Ho, Wo, k, s, pad};
    snn_maxpool_strips<snn_maxpool_bwd_strip>(d, d.H, d.W, per_block, chunks, vec, argmax, dy, dx);
}

// y[r] = mean of row r of x[rows][plane]. `lanes` (a power of two up to 32) threads share a
// row: lane j adds elements j, j + lanes, ... in order, then a fixed shuffle tree; a warp
// takes 32 / lanes neighbouring rows, so its loads stay contiguous.
template <typename I, typename T>
__device__ __forceinline__ void snn_avgpool_fwd(const T* __restrict__ x, float* __restrict__ y,
                                                I rows, I plane, int lanes) {
    const int lane = threadIdx.x & 31, sub = lane & (lanes - 1), per_warp = 32 / lanes;
    const I warp = ((I)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const I step = (I)gridDim.x * (blockDim.x / 32) * per_warp;
    const float count = (float)plane;
    // `base` is the same for the whole warp, so every lane reaches the shuffles.
    for (I base = warp * per_warp; base < rows; base += step) {
        const I r = base + lane / lanes;
        float sum = 0.0f;
        if (r < rows) {
            const T* __restrict__ xr = x + r * plane;
            for (I j = sub; j < plane; j += lanes) sum += snn_f32(__ldg(xr + j));
        }
        for (int off = lanes / 2; off > 0; off >>= 1) sum += __shfl_down_sync(SNN_FULL_MASK, sum, off, lanes);
        if (r < rows && sub == 0) y[r] = sum / count;
    }
}

extern "C" __global__ void snn_avgpool_forward(const float* __restrict__ x, float* __restrict__ y,
                                               long long rows, long long plane, int lanes, int wide) {
    if (wide) snn_avgpool_fwd<long long>(x, y, rows, plane, lanes);
    else snn_avgpool_fwd<int>(x, y, (int)rows, (int)plane, lanes);
}

extern "C" __global__ void snn_avgpool_forward_bf16(const snn_bf16* __restrict__ x, float* __restrict__ y,
                                               long long rows, long long plane, int lanes, int wide) {
    if (wide) snn_avgpool_fwd<long long>(x, y, rows, plane, lanes);
    else snn_avgpool_fwd<int>(x, y, (int)rows, (int)plane, lanes);
}

// dx[r][j] = dy[r] / plane, V values (one 4-value store when V = 4) per thread and step.
template <typename I, int V, typename T>
__device__ __forceinline__ void snn_avgpool_bwd(const float* __restrict__ dy, T* __restrict__ dx,
                                                I units, I plane_units, float count) {
    for (I u = (I)blockIdx.x * blockDim.x + threadIdx.x; u < units; u += (I)gridDim.x * blockDim.x) {
        const float g = __ldg(dy + u / plane_units) / count;
        if constexpr (V == 4) {
            const float v[4] = {g, g, g, g};
            snn_store4(dx + 4 * u, v);
        } else {
            dx[u] = snn_to<T>(g);
        }
    }
}

extern "C" __global__ void snn_avgpool_backward(const float* __restrict__ dy, float* __restrict__ dx,
                                                long long rows, long long plane, int vec, int wide) {
    const float count = (float)plane;
    if (vec == 4) {
        if (wide) snn_avgpool_bwd<long long, 4>(dy, dx, rows * (plane / 4), plane / 4, count);
        else snn_avgpool_bwd<int, 4>(dy, dx, (int)(rows * (plane / 4)), (int)(plane / 4), count);
    } else {
        if (wide) snn_avgpool_bwd<long long, 1>(dy, dx, rows * plane, plane, count);
        else snn_avgpool_bwd<int, 1>(dy, dx, (int)(rows * plane), (int)plane, count);
    }
}

extern "C" __global__ void snn_avgpool_backward_bf16(const float* __restrict__ dy, snn_bf16* __restrict__ dx,
                                                long long rows, long long plane, int vec, int wide) {
    const float count = (float)plane;
    if (vec == 4) {
        if (wide) snn_avgpool_bwd<long long, 4>(dy, dx, rows * (plane / 4), plane / 4, count);
        else snn_avgpool_bwd<int, 4>(dy, dx, (int)(rows * (plane / 4)), (int)(plane / 4), count);
    } else {
        if (wide) snn_avgpool_bwd<long long, 1>(dy, dx, rows * plane, plane, count);
        else snn_avgpool_bwd<int, 1>(dy, dx, (int)(rows * plane), (int)plane, count);
    }
}
