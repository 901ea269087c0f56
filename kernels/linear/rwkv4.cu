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
// the scale. lo is folded into aa and bb at the end, so the stored (aa, bb, pp) is the plain form.
#include "params.h"
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace {

template <typename T> __device__ __forceinline__ float to_f32(T x);
template <> __device__ __forceinline__ float to_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f32<__half>(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

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
    for (int t0 = 0; t0 < T_; t0 += kPrefetch) {
        // Issue the chunk's loads first; the recurrence below is a serial chain per channel.
        float kk[kPrefetch], vv[kPrefetch];
#pragma unroll
        for (int j = 0; j < kPrefetch; ++j) {
            const bool in = t0 + j < T_;
            kk[j] = in ? to_f32(k[base + (long long)(t0 + j) * C]) : 0.f;
            vv[j] = in ? to_f32(v[base + (long long)(t0 + j) * C]) : 0.f;
        }
#pragma unroll
        for (int j = 0; j < kPrefetch; ++j) {
            if (t0 + j < T_) {
                const float kt = kk[j], vt = vv[j];
                // Output: d = (u + k) - (pp + lo); the larger side gets factor 1.
                float d = ((u + kt) - pp) - lo;
                float e1 = d > 0.f ? expf(-d) : 1.f;
                float e2 = d > 0.f ? 1.f : expf(d);
                y[base + (long long)(t0 + j) * C] = from_f32<T>((e1 * aa + e2 * vt) / (e1 * bb + e2));
                // State: ww = pp + w as sum + err exactly (two-sum), then p = max(ww, k).
                const float sum = pp + w, bw = sum - pp;
                const float l = lo + ((pp - (sum - bw)) + (w - bw));
                d = (kt - sum) - l;
                if (d > 0.f) {  // k is the new maximum: rescale the old state
                    e1 = expf(-d);
                    aa = e1 * aa + vt;
                    bb = e1 * bb + 1.f;
                    pp = kt;
                    lo = 0.f;
                } else {  // the old state keeps the maximum: factor exactly 1
                    e2 = expf(d);
                    aa += e2 * vt;
                    bb += e2;
                    const float hi = sum + l;
                    lo = l - (hi - sum);
                    pp = hi;
                }
            }
        }
    }
    const float f = expf(lo);
    p.state_out[sbase] = aa * f;
    p.state_out[sbase + C] = bb * f;
    p.state_out[sbase + 2 * C] = pp;
}

}  // namespace

// Grid: ceil(batch * channels / 128) blocks of 128 threads; one entry per k/v/y dtype.
extern "C" __global__ void __launch_bounds__(128) ak_rwkv4_f32(const AkRwkv4Params p) { rwkv4_forward<float>(p); }
extern "C" __global__ void __launch_bounds__(128) ak_rwkv4_f16(const AkRwkv4Params p) { rwkv4_forward<__half>(p); }
extern "C" __global__ void __launch_bounds__(128) ak_rwkv4_bf16(const AkRwkv4Params p) { rwkv4_forward<__nv_bfloat16>(p); }
