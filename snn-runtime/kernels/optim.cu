// snn-runtime (hand-written): fused optimizer steps, the gradient norm and scaling, over
// flat f32 buffers. The launches are in src/nn/optim.rs. Every elementwise kernel takes
// `vec4`: when all its pointers are 16-byte aligned, the first `n / 4 * 4` elements go as
// float4 and the rest one by one. The arithmetic is snn_nn::optim's, operation for
// operation (the runtime compiles without fused multiply-adds).
#define SNN_THREADS 256

// torch.lerp's formula: the form depends on the weight, for accuracy near both ends.
__device__ __forceinline__ float snn_lerp(float s, float e, float w) {
    return fabsf(w) < 0.5f ? s + w * (e - s) : e - (e - s) * (1.0f - w);
}

struct SnnAdam {
    float decay, wd, w1, b2, w2, step_size, bc2_sqrt, eps;
    int use_decay, use_wd;
};

__device__ __forceinline__ void snn_adam1(const SnnAdam& a, float& p, float g, float& m, float& v) {
    if (a.use_decay) p = p * a.decay;
    if (a.use_wd) g = g + a.wd * p;
    m = snn_lerp(m, g, a.w1);
    v = v * a.b2 + a.w2 * (g * g);
    const float denom = __fdiv_rn(sqrtf(v), a.bc2_sqrt) + a.eps;
    p = p - a.step_size * __fdiv_rn(m, denom);
}

// Adam and AdamW (decay = 1 - lr * wd and use_wd = 0 for AdamW).
extern "C" __global__ void snn_adam_step(
    float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
    float* __restrict__ v, const long long n, const int vec4,
    const float decay, const float wd, const float w1, const float b2, const float w2,
    const float step_size, const float bc2_sqrt, const float eps,
    const int use_decay, const int use_wd) {
    const SnnAdam a = {decay, wd, w1, b2, w2, step_size, bc2_sqrt, eps, use_decay, use_wd};
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long first = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long n4 = vec4 ? n / 4 : 0;
    for (long long i = first; i < n4; i += stride) {
        float4 P = reinterpret_cast<float4*>(p)[i], M = reinterpret_cast<float4*>(m)[i];
        float4 V = reinterpret_cast<float4*>(v)[i];
        const float4 G = reinterpret_cast<const float4*>(g)[i];
        snn_adam1(a, P.x, G.x, M.x, V.x);
        snn_adam1(a, P.y, G.y, M.y, V.y);
        snn_adam1(a, P.z, G.z, M.z, V.z);
        snn_adam1(a, P.w, G.w, M.w, V.w);
        reinterpret_cast<float4*>(p)[i] = P;
        reinterpret_cast<float4*>(m)[i] = M;
        reinterpret_cast<float4*>(v)[i] = V;
    }
    for (long long i = n4 * 4 + first; i < n; i += stride) {
        snn_adam1(a, p[i], g[i], m[i], v[i]);
    }
}

struct SnnSgd {
    float lr, wd, momentum, one_minus_dampening;
    int use_wd, first, nesterov;
};

__device__ __forceinline__ void snn_sgd1(const SnnSgd& s, float& p, float g, float& b) {
    if (s.use_wd) g = g + s.wd * p;
    b = s.first ? g : b * s.momentum + s.one_minus_dampening * g;
    g = s.nesterov ? g + s.momentum * b : b;
    p = p - s.lr * g;
}

__device__ __forceinline__ void snn_sgd0(const SnnSgd& s, float& p, float g) {
    if (s.use_wd) g = g + s.wd * p;
    p = p - s.lr * g;
}

// SGD; `buf` (the momentum buffer) is null without momentum.
extern "C" __global__ void snn_sgd_step(
    float* __restrict__ p, const float* __restrict__ g, float* __restrict__ buf,
    const long long n, const int vec4, const float lr, const float wd, const float momentum,
    const float one_minus_dampening, const int use_wd, const int first, const int nesterov) {
    const SnnSgd s = {lr, wd, momentum, one_minus_dampening, use_wd, first, nesterov};
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long start = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long n4 = vec4 ? n / 4 : 0;
    for (long long i = start; i < n4; i += stride) {
        float4 P = reinterpret_cast<float4*>(p)[i];
        const float4 G = reinterpret_cast<const float4*>(g)[i];
        if (buf) {
            float4 B = reinterpret_cast<float4*>(buf)[i];
            snn_sgd1(s, P.x, G.x, B.x);
            snn_sgd1(s, P.y, G.y, B.y);
            snn_sgd1(s, P.z, G.z, B.z);
            snn_sgd1(s, P.w, G.w, B.w);
            reinterpret_cast<float4*>(buf)[i] = B;
        } else {
            snn_sgd0(s, P.x, G.x);
            snn_sgd0(s, P.y, G.y);
            snn_sgd0(s, P.z, G.z);
            snn_sgd0(s, P.w, G.w);
        }
        reinterpret_cast<float4*>(p)[i] = P;
    }
    for (long long i = n4 * 4 + start; i < n; i += stride) {
        if (buf) snn_sgd1(s, p[i], g[i], buf[i]);
        else snn_sgd0(s, p[i], g[i]);
    }
}

// Sums `x` over the block in a fixed tree; every thread gets the sum.
__device__ __forceinline__ double snn_block_sum(double x, double* s) {
    s[threadIdx.x] = x;
    __syncthreads();
    for (int w = SNN_THREADS / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
        __syncthreads();
    }
    const double r = s[0];
    __syncthreads();
    return r;
}

// Pass 1: partial[block] = sum of squares of the block's grid-stride share, in f64.
extern "C" __global__ void snn_sum_squares_partial(
    const float* __restrict__ x, const long long n, const int vec4, double* __restrict__ partial) {
    __shared__ double s[SNN_THREADS];
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long start = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long n4 = vec4 ? n / 4 : 0;
    double acc = 0.0;
    for (long long i = start; i < n4; i += stride) {
        const float4 X = reinterpret_cast<const float4*>(x)[i];
        acc += (double)X.x * X.x + (double)X.y * X.y + (double)X.z * X.z + (double)X.w * X.w;
    }
    for (long long i = n4 * 4 + start; i < n; i += stride) acc += (double)x[i] * x[i];
    const double total = snn_block_sum(acc, s);
    if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// Pass 2 (one block): norm[0] = sqrt(sum of the partials) as f64 and norm[1] as its f32.
extern "C" __global__ void snn_sum_squares_final(
    const double* __restrict__ partial, const int count, double* __restrict__ norm) {
    __shared__ double s[SNN_THREADS];
    double acc = 0.0;
    for (int i = threadIdx.x; i < count; i += SNN_THREADS) acc += partial[i];
    const double total = snn_block_sum(acc, s);
    if (threadIdx.x == 0) {
        norm[0] = sqrt(total);
        reinterpret_cast<float*>(norm + 1)[0] = (float)sqrt(total);
    }
}

__device__ __forceinline__ void snn_scale4(float4& X, float f) {
    X.x = X.x * f; X.y = X.y * f; X.z = X.z * f; X.w = X.w * f;
}

__device__ __forceinline__ void snn_scale_all(float* __restrict__ x, const long long n, const int vec4, const float factor) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long start = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long n4 = vec4 ? n / 4 : 0;
    for (long long i = start; i < n4; i += stride) {
        float4 X = reinterpret_cast<float4*>(x)[i];
        snn_scale4(X, factor);
        reinterpret_cast<float4*>(x)[i] = X;
    }
    for (long long i = n4 * 4 + start; i < n; i += stride) x[i] = x[i] * factor;
}

// x *= factor.
extern "C" __global__ void snn_scale(float* __restrict__ x, const long long n, const int vec4, const float factor) {
    snn_scale_all(x, n, vec4, factor);
}

// clip_grad_norm_: x *= max_norm / (norm + 1e-6) where that is below 1 (never for NaN).
extern "C" __global__ void snn_clip_scale(
    float* __restrict__ x, const long long n, const int vec4, const double* __restrict__ norm,
    const double max_norm) {
    const double coef = max_norm / (norm[0] + 1e-6);
    if (coef < 1.0) snn_scale_all(x, n, vec4, (float)coef);
}
