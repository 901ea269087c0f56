// RoPE on the device: exact-angle cos/sin from the two-level table of AkRopeTable
// (kernels/params.h), and rotation of one pair. Shared by the standalone rope kernel and every
// attention kernel that fuses RoPE.
#pragma once
#include "params.h"

namespace ak {

// (cos, sin) of position `pos` times frequency `i` (i < rotary_dim / 2).
// Table entries are f64 values rounded once to f32; the angle-addition step adds a few ulps.
__device__ __forceinline__ float2 rope_cos_sin(const AkRopeTable& t, int pos, int i) {
    const int half = t.rotary_dim >> 1;
    // In 64 bits: a table for positions near 2^31 has n_hi * AK_ROPE_LO_SIZE = 2^31 rows' worth.
    const long long max_pos = (long long)t.n_hi * AK_ROPE_LO_SIZE - 1;
    pos = pos < 0 ? 0 : ((long long)pos > max_pos ? (int)max_pos : pos);  // out of range: clamp, never read OOB
    const int hi = pos / AK_ROPE_LO_SIZE;
    const int lo = pos - hi * AK_ROPE_LO_SIZE;
    const float2 l = reinterpret_cast<const float2*>(t.lo)[lo * half + i];
    if (hi == 0) return l;
    const float2 h = reinterpret_cast<const float2*>(t.hi)[hi * half + i];
    return make_float2(fmaf(h.x, l.x, -h.y * l.y), fmaf(h.y, l.x, h.x * l.y));
}

// Index of the partner element of pair `i`: NeoX (i, i + d/2), GPT-J (2i, 2i+1).
__device__ __forceinline__ int2 rope_pair(const AkRopeTable& t, int i) {
    return t.interleaved ? make_int2(2 * i, 2 * i + 1) : make_int2(i, i + (t.rotary_dim >> 1));
}

// Rotate one pair (x1, x2) by (c, s) and scale by the attention factor.
__device__ __forceinline__ float2 rope_rotate(float x1, float x2, float2 cs, float factor) {
    return make_float2(factor * (x1 * cs.x - x2 * cs.y), factor * (x2 * cs.x + x1 * cs.y));
}

}  // namespace ak
