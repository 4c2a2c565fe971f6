// snn-runtime (hand-written): the losses of snn_nn::loss on time-averaged [T, B, K]
// outputs, one block per sample, with fixed-tree block reductions. The launches are in
// src/nn/loss.rs.
#define SNN_THREADS 256

// The output of class k of the block's sample summed over time, in time order.
__device__ __forceinline__ float snn_time_sum(const float* __restrict__ out, const long long steps,
                                             const long long stride, const long long row, const long long k) {
    float s = 0.0f;
    for (long long t = 0; t < steps; ++t) s += out[t * stride + row + k];
    return s;
}

// The class with the largest time sum, the first one on ties (as torch.argmax); its sum
// goes to *best_sum. Every thread gets both.
__device__ long long snn_block_argmax(const float* __restrict__ out, const long long steps,
                                      const long long stride, const long long row,
                                      const long long classes, float* best_sum) {
    __shared__ float sv[SNN_THREADS];
    __shared__ long long sk[SNN_THREADS];
    float v = 0.0f; // unused until k_best names a class
    long long k_best = classes;
    for (long long k = threadIdx.x; k < classes; k += SNN_THREADS) {
        const float s = snn_time_sum(out, steps, stride, row, k);
        if (k_best == classes || s > v) { v = s; k_best = k; }
    }
    sv[threadIdx.x] = v;
    sk[threadIdx.x] = k_best;
    __syncthreads();
    for (int w = SNN_THREADS / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) {
            const float ov = sv[threadIdx.x + w];
            const long long ok = sk[threadIdx.x + w];
            if (ok < classes && (sk[threadIdx.x] == classes || ov > sv[threadIdx.x] ||
                                 (ov == sv[threadIdx.x] && ok < sk[threadIdx.x]))) {
                sv[threadIdx.x] = ov;
                sk[threadIdx.x] = ok;
            }
        }
        __syncthreads();
    }
    const long long k = sk[0];
    *best_sum = sv[0];
    __syncthreads();
    return k;
}

// Sums `x` over the block in a fixed tree; every thread gets the sum.
__device__ float snn_block_sum(float x) {
    __shared__ float s[SNN_THREADS];
    s[threadIdx.x] = x;
    __syncthreads();
    for (int w = SNN_THREADS / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
        __syncthreads();
    }
    const float r = s[0];
    __syncthreads();
    return r;
}

// F.cross_entropy(output.mean(0), labels): sample_loss[b] = logsumexp(z) - z[label],
// grad = (softmax(z) - onehot) * inv_count * inv_steps at every step (inv_count = 1 / B).
extern "C" __global__ void snn_cross_entropy_rate(
    const float* __restrict__ out, const unsigned* __restrict__ labels, float* __restrict__ grad,
    float* __restrict__ sample_loss, float* __restrict__ sample_correct,
    const long long steps, const long long batch, const long long classes,
    const float steps_f, const float inv_count, const float inv_steps) {
    const long long b = blockIdx.x, row = b * classes, stride = batch * classes;
    const long long label = labels[b];
    float best;
    const long long k_best = snn_block_argmax(out, steps, stride, row, classes, &best);
    const float m = __fdiv_rn(best, steps_f);
    float local = 0.0f;
    for (long long k = threadIdx.x; k < classes; k += SNN_THREADS) {
        const float z = __fdiv_rn(snn_time_sum(out, steps, stride, row, k), steps_f);
        local += expf(z - m);
    }
    const float lse = m + logf(snn_block_sum(local));
    for (long long k = threadIdx.x; k < classes; k += SNN_THREADS) {
        const float z = __fdiv_rn(snn_time_sum(out, steps, stride, row, k), steps_f);
        const float g = (expf(z - lse) - (k == label ? 1.0f : 0.0f)) * inv_count * inv_steps;
        for (long long t = 0; t < steps; ++t) grad[t * stride + row + k] = g;
    }
    if (threadIdx.x == 0) {
        const float z = __fdiv_rn(snn_time_sum(out, steps, stride, row, label), steps_f);
        sample_loss[b] = lse - z;
        sample_correct[b] = k_best == label ? 1.0f : 0.0f;
    }
}

// F.mse_loss(output.mean(0), one_hot(labels)): sample_loss[b] = sum_k (r_k - y_k)^2,
// grad = 2 (r - y) * inv_count * inv_steps at every step (inv_count = 1 / (B * K)).
extern "C" __global__ void snn_mse_rate(
    const float* __restrict__ out, const unsigned* __restrict__ labels, float* __restrict__ grad,
    float* __restrict__ sample_loss, float* __restrict__ sample_correct,
    const long long steps, const long long batch, const long long classes,
    const float steps_f, const float inv_count, const float inv_steps) {
    const long long b = blockIdx.x, row = b * classes, stride = batch * classes;
    const long long label = labels[b];
    float best;
    const long long k_best = snn_block_argmax(out, steps, stride, row, classes, &best);
    float local = 0.0f;
    for (long long k = threadIdx.x; k < classes; k += SNN_THREADS) {
        const float r = __fdiv_rn(snn_time_sum(out, steps, stride, row, k), steps_f);
        const float diff = r - (k == label ? 1.0f : 0.0f);
        local += diff * diff;
        const float g = 2.0f * diff * inv_count * inv_steps;
        for (long long t = 0; t < steps; ++t) grad[t * stride + row + k] = g;
    }
    const float total = snn_block_sum(local);
    if (threadIdx.x == 0) {
        sample_loss[b] = total;
        sample_correct[b] = k_best == label ? 1.0f : 0.0f;
    }
}
