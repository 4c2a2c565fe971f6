// snn-runtime (hand-written): u8 -> f32 conversion of uploaded batches. The launch is in
// src/staging.rs. `__fdiv_rn` rounds to nearest whatever `--prec-div` says, so the
// intensities equal the CPU's `f32::from(v) / 255.0` bit for bit.

// out[i] = in[i] / 255 (unit != 0: pixel intensities in [0, 1]) or in[i] (event counts).
extern "C" __global__ void snn_u8_to_f32(
    const unsigned char* __restrict__ in, float* __restrict__ out,
    const long long n, const int unit) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const float v = (float)in[i];
        out[i] = unit ? __fdiv_rn(v, 255.0f) : v;
    }
}
