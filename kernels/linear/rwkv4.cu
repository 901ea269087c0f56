// rwkv4 (spec section 4): the per-channel WKV recurrence in its numerically stable form,
// f32 state (aa, bb, pp) and math. One thread per (sequence, channel): channels are
// independent, and adjacent threads read adjacent channels of each token (coalesced).
//
//   ww = u + k;  p = max(pp, ww);  e1 = exp(pp - p);  e2 = exp(ww - p)
//   y  = (e1 aa + e2 v) / (e1 bb + e2)
//   ww = w + pp; p = max(ww, k);   e1 = exp(ww - p);  e2 = exp(k - p)
//   aa = e1 aa + e2 v;  bb = e1 bb + e2;  pp = p
//
// The log scale is carried as an unevaluated sum pp + lo (|lo| <= half an ulp of pp), as the CPU
// reference does: an f32 `w + pp` rounds a small |w| to whole ulps of pp, the same way every
// step (a 1e-4 error in y and the state after 64k steps at |w| ~ 1e-4). With the exact residual
// kept, a step where the old state stays the maximum multiplies it by exactly 1 and only moves
// the scale. aa and bb carry two-sum residuals ca, cb (the small additions would otherwise round
// away the same way), and w = -inf (pp + w not finite) takes the exact decay-0 path, never
// inf - inf. lo, ca, cb are folded in at the end, so the stored (aa, bb, pp) is the plain form.
// Step for step the same f32 operations as rwkv4_cpu (src/linear/cpu.rs), no fma contraction.
#include "params.h"
#include "common/dtype.cuh"

namespace ak::linear {

// Round-to-nearest f32 ops that nvcc may not contract into fma: the two-sum steps need exact
// rounding, and the rest must round as the CPU reference does.
__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }

// Knuth's two-sum: (s, e) with s = fl(a + b) and s + e == a + b exactly for finite inputs.
__device__ __forceinline__ float2 two_sum(float a, float b) {
    const float s = add(a, b), z = sub(s, a);
    return make_float2(s, add(sub(a, sub(s, z)), sub(b, z)));
}

constexpr int kPrefetch = 8;  // tokens whose k, v are loaded before the math needs them

template <typename T>
__device__ __forceinline__ void rwkv4_forward(const AkRwkv4Params& p) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)p.batch * p.channels) return;
    const int C = p.channels, T_ = p.seq_len;
    const int b = (int)(idx / C), c = (int)(idx % C);
    const T* k = static_cast<const T*>(p.k);
    const T* v = static_cast<const T*>(p.v);
    T* y = static_cast<T*>(p.y);
    const long long sbase = (long long)b * 3 * C + c;
    const float w = p.w[c], u = p.u[c];
    float aa = 0.f, bb = 0.f, pp = -1e38f, lo = 0.f;
    if (p.state_in) {
        aa = p.state_in[sbase];
        bb = p.state_in[sbase + C];
        pp = p.state_in[sbase + 2 * C];
    }
    const long long base = (long long)b * T_ * C + c;  // token t at base + t * C
    float ca = 0.f, cb = 0.f;  // two-sum residuals of aa and bb
    for (int t0 = 0; t0 < T_; t0 += kPrefetch) {
        // Issue the chunk's loads first; the recurrence below is a serial chain per channel.
        float kk[kPrefetch], vv[kPrefetch];
#pragma unroll
        for (int j = 0; j < kPrefetch; ++j) {
            const bool in = t0 + j < T_;
            kk[j] = in ? to_float(k[base + (long long)(t0 + j) * C]) : 0.f;
            vv[j] = in ? to_float(v[base + (long long)(t0 + j) * C]) : 0.f;
        }
#pragma unroll
        for (int j = 0; j < kPrefetch; ++j) {
            if (t0 + j < T_) {
                const float kt = kk[j], vt = vv[j];
                // Output: d = (u + k) - (pp + lo); the larger side gets factor 1.
                float d = sub(sub(add(u, kt), pp), lo);
                float e1 = d > 0.f ? expf(-d) : 1.f;
                float e2 = d > 0.f ? 1.f : expf(d);
                const float num = add(mul(e1, add(aa, ca)), mul(e2, vt));
                const float den = add(mul(e1, add(bb, cb)), e2);
                y[base + (long long)(t0 + j) * C] = from_float<T>(__fdiv_rn(num, den));
                // State: the log scale pp + w held exactly as s + l (w = -inf: decay 0, l = lo).
                const float s = add(pp, w);
                const float l = isfinite(s) ? add(lo, two_sum(pp, w).y) : lo;
                d = sub(sub(kt, s), l);
                if (d > 0.f) {  // k is the new maximum: rescale the old state
                    e1 = expf(-d);
                    const float2 a = two_sum(mul(e1, aa), vt), bs = two_sum(mul(e1, bb), 1.f);
                    aa = a.x;
                    ca = add(mul(e1, ca), a.y);
                    bb = bs.x;
                    cb = add(mul(e1, cb), bs.y);
                    pp = kt;
                    lo = 0.f;
                } else {  // the old state keeps the maximum: factor exactly 1, the scale moves
                    e2 = expf(d);
                    const float2 a = two_sum(aa, mul(e2, vt)), bs = two_sum(bb, e2);
                    aa = a.x;
                    ca = add(ca, a.y);
                    bb = bs.x;
                    cb = add(cb, bs.y);
                    const float hi = add(s, l);
                    lo = sub(l, sub(hi, s));
                    pp = hi;
                }
            }
        }
    }
    // Fold the residuals in, so the stored (aa, bb, pp) is the spec's plain f32 state.
    const float f = expf(lo);
    p.state_out[sbase] = mul(add(aa, ca), f);
    p.state_out[sbase + C] = mul(add(bb, cb), f);
    p.state_out[sbase + 2 * C] = pp;
}

}  // namespace ak::linear

// Entry points (generated from src/runtime/kernel_list.rs): ak_rwkv4_<dtype>, one per k/v/y dtype.
// Grid: ceil(batch * channels / 128) blocks of 128 threads.
#include "generated/linear_rwkv4_entries.cuh"
