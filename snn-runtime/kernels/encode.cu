// snn-runtime (hand-written): rate encoding with Philox-4x32-10, bit-identical to the CPU
// encoder snn_data::encode (integer arithmetic and one exact float product). The launch
// is in src/encode.rs; a test there checks these constants against snn_data::encode's.

// Philox-4x32's round multipliers and key increments (Weyl constants).
#define SNN_PHILOX_M0 0xd2511f53u
#define SNN_PHILOX_M1 0xcd9e8d57u
#define SNN_PHILOX_W0 0x9e3779b9u
#define SNN_PHILOX_W1 0xbb67ae85u

__device__ __forceinline__ unsigned snn_philox_word(unsigned c0, unsigned c1, unsigned c2, unsigned c3,
                                                    unsigned k0, unsigned k1, unsigned word) {
    for (int round = 0; round < 10; ++round) {
        if (round > 0) { k0 += SNN_PHILOX_W0; k1 += SNN_PHILOX_W1; }
        const unsigned hi0 = __umulhi(SNN_PHILOX_M0, c0), lo0 = SNN_PHILOX_M0 * c0;
        const unsigned hi1 = __umulhi(SNN_PHILOX_M1, c2), lo1 = SNN_PHILOX_M1 * c2;
        const unsigned n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    }
    return word == 0 ? c0 : (word == 1 ? c1 : (word == 2 ? c2 : c3));
}

// out[t, b, j] = 1 if the draw for (seed, samples[b], t, j) is below intensity[b, j], else 0.
extern "C" __global__ void snn_rate_encode(
    const float* __restrict__ intensity, // [B, P], values in [0, 1]
    const unsigned long long* __restrict__ samples, // [B], dataset index of each image
    float* __restrict__ out, // [T, B, P]
    const long long steps, const long long batch, const long long pixels,
    const unsigned long long seed) {
    const long long total = steps * batch * pixels;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const long long t = idx / (batch * pixels), rem = idx % (batch * pixels);
        const long long b = rem / pixels, j = rem % pixels;
        const unsigned long long s = samples[b];
        const unsigned r = snn_philox_word((unsigned)(j >> 2), (unsigned)t, (unsigned)s, (unsigned)(s >> 32),
                                           (unsigned)seed, (unsigned)(seed >> 32), (unsigned)(j & 3));
        const float u = (float)(r >> 8) * (1.0f / 16777216.0f);
        out[idx] = u < intensity[rem] ? 1.0f : 0.0f;
    }
}
