// snn-runtime: elementwise f32 sums (a residual add; a gradient accumulated for a tensor
// used twice). 16-byte accesses when all three tensors are 16-byte aligned, then a scalar
// tail. No `__restrict__`: `out` may be `a` or `b` itself (each element is read, then
// written, by the same thread).

// out[i] = a[i] + b[i], grid-stride.
extern "C" __global__ void snn_add(const float* a, const float* b, float* out, long long n) {
    const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long step = (long long)gridDim.x * blockDim.x;
    long long done = 0;
    const unsigned long long addresses = reinterpret_cast<unsigned long long>(a) |
                                         reinterpret_cast<unsigned long long>(b) |
                                         reinterpret_cast<unsigned long long>(out);
    if ((addresses & 15) == 0) {
        const long long n4 = n / 4;
        const float4* a4 = reinterpret_cast<const float4*>(a);
        const float4* b4 = reinterpret_cast<const float4*>(b);
        float4* o4 = reinterpret_cast<float4*>(out);
        for (long long i = first; i < n4; i += step) {
            const float4 p = a4[i], q = b4[i];
            o4[i] = make_float4(p.x + q.x, p.y + q.y, p.z + q.z, p.w + q.w);
        }
        done = n4 * 4;
    }
    for (long long i = done + first; i < n; i += step) out[i] = a[i] + b[i];
}
