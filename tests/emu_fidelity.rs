//! Fidelity of the emulated device's warp-level instructions, and conformance of a GPU's.
//!
//! Every expectation here comes from a model of the instruction written in this file from
//! NVIDIA's PTX ISA (each model names its section by title; the numbers change between ISA
//! versions) or, for the CUDA intrinsics, from the CUDA C++ Programming Guide; never from the
//! kernels or the emulator's code. The probes are the kernels of `kernels/probe/collectives.cu`
//! (launchers in `attn_kernels::runtime::probe`), and the same tests run on whatever device
//! `gpu_for_test` returns:
//! - on the emulated device they are the emulator's fidelity tests: every result must equal the
//!   model bit for bit. For mma, whose accumulation order, rounding and subnormal handling the
//!   ISA leaves open, that is the emulator's stricter contract: exact products, exact sum, one
//!   rounding to f32;
//! - on a GPU they are the conformance test of the hardware instructions the kernels rely on:
//!   bit for bit where the ISA defines the result exactly (ldmatrix, shfl, vote, cp.async,
//!   conversions), within the ISA's stated error for `ex2.approx`, and for mma within the
//!   error the ISA's "at least single precision" accumulation allows (`mma_tolerance`; the
//!   one-hot tests have exact results, so there the bound is tight).
//!
//! The checker tests (racecheck / synccheck on probes that misbehave on purpose) are for the
//! emulator only and say so when they skip on a GPU.

use attn_kernels::runtime::probe::{self, Cvt, Misbehave, Shfl, Vote, LDMATRIX_ROWS, NOT_A_MEMBER};
use attn_kernels::{DType, Gpu};
use attn_kernels_harness::bench::gpu_for_test;
use attn_kernels_harness::check::Rng;

// ============================================================================ floating point

/// An IEEE 754 binary format: sign bit, `ebits` of biased exponent, `mbits` of fraction.
#[derive(Clone, Copy, Debug)]
struct Fmt {
    ebits: u32,
    mbits: u32,
}
const F16: Fmt = Fmt { ebits: 5, mbits: 10 };
const BF16: Fmt = Fmt { ebits: 8, mbits: 7 };
const F32: Fmt = Fmt { ebits: 8, mbits: 23 };

impl Fmt {
    fn bias(self) -> i32 {
        (1 << (self.ebits - 1)) - 1
    }
    fn exp_field(self, bits: u32) -> u32 {
        (bits >> self.mbits) & ((1 << self.ebits) - 1)
    }
    fn is_nan(self, bits: u32) -> bool {
        self.exp_field(bits) == (1 << self.ebits) - 1 && bits & ((1 << self.mbits) - 1) != 0
    }
    /// The exact value as m * 2^e (m signed); None for infinities and NaN.
    fn decode(self, bits: u32) -> Option<(i64, i32)> {
        let frac = (bits & ((1 << self.mbits) - 1)) as i64;
        let exp = self.exp_field(bits) as i32;
        let neg = (bits >> (self.ebits + self.mbits)) & 1 == 1;
        let (m, e) = match exp {
            0 => (frac, 1 - self.bias() - self.mbits as i32),
            x if x == (1 << self.ebits) - 1 => return None,
            x => (frac | 1 << self.mbits, x - self.bias() - self.mbits as i32),
        };
        Some((if neg { -m } else { m }, e))
    }
    fn to_f64(self, bits: u32) -> f64 {
        let (m, e) = self.decode(bits).expect("finite");
        m as f64 * 2f64.powi(e)
    }
    /// Any value, infinities and NaN included.
    fn to_f64_any(self, bits: u32) -> f64 {
        let neg = (bits >> (self.ebits + self.mbits)) & 1 == 1;
        match self.decode(bits) {
            Some(_) => self.to_f64(bits),
            None if self.is_nan(bits) => f64::NAN,
            None if neg => f64::NEG_INFINITY,
            None => f64::INFINITY,
        }
    }
    /// IEEE 754 round-to-nearest-even of an f32 into this (narrower) format; None for NaN.
    fn round_from_f32(self, x: f32) -> Option<u32> {
        if x.is_nan() {
            return None;
        }
        let sign = (x.is_sign_negative() as u32) << (self.ebits + self.mbits);
        let inf = sign | ((1 << self.ebits) - 1) << self.mbits;
        let a = (x as f64).abs();
        if a.is_infinite() {
            return Some(inf);
        }
        if a == 0.0 {
            return Some(sign);
        }
        // Quantum of the target at a's binade (never below the subnormal quantum); a / q is exact.
        let emin = 1 - self.bias();
        let mut e = (((a.to_bits() >> 52) & 0x7ff) as i32 - 1023).max(emin);
        let mut m = (a / 2f64.powi(e - self.mbits as i32)).round_ties_even() as u64;
        if m == 1 << (self.mbits + 1) {
            e += 1;
            m >>= 1;
        }
        if m < 1 << self.mbits {
            return Some(sign | m as u32); // subnormal or zero
        }
        let biased = e + self.bias();
        if biased >= (1 << self.ebits) - 1 {
            return Some(inf);
        }
        Some(sign | (biased as u32) << self.mbits | (m as u32 - (1 << self.mbits)))
    }
}

/// An exact sum of terms m * 2^e, rounded once to f32 at the end (round to nearest even).
/// Two's complement fixed point with bit 0 weighing 2^-LSB: wide enough for products of two
/// bf16 subnormals (2^-266) up to products of two bf16 maxima (< 2^256) and any f32.
struct ExactSum {
    limbs: [u64; 12],
}
const LSB: i32 = 400;

impl ExactSum {
    fn new() -> Self {
        ExactSum { limbs: [0; 12] }
    }
    fn add(&mut self, m: i64, e: i32) {
        if m == 0 {
            return;
        }
        let shift = (e + LSB) as usize;
        let wide = (m.unsigned_abs() as u128) << (shift % 64);
        let parts = [wide as u64, (wide >> 64) as u64];
        let mut carry = false;
        for i in shift / 64..self.limbs.len() {
            let p = parts.get(i - shift / 64).copied().unwrap_or(0);
            let (r, c) = if m > 0 {
                let (s, c1) = self.limbs[i].overflowing_add(p);
                let (s, c2) = s.overflowing_add(carry as u64);
                (s, c1 || c2)
            } else {
                let (s, b1) = self.limbs[i].overflowing_sub(p);
                let (s, b2) = s.overflowing_sub(carry as u64);
                (s, b1 || b2)
            };
            self.limbs[i] = r;
            carry = c;
        }
    }
    fn bit(limbs: &[u64; 12], i: usize) -> u64 {
        (limbs[i / 64] >> (i % 64)) & 1
    }
    fn to_f32(&self) -> f32 {
        let neg = self.limbs[11] >> 63 == 1;
        let mut mag = self.limbs;
        if neg {
            let mut carry = true;
            for l in mag.iter_mut() {
                let (s, c) = (!*l).overflowing_add(carry as u64);
                *l = s;
                carry = c;
            }
        }
        let Some(top) = (0..768).rev().find(|&i| Self::bit(&mag, i) == 1) else { return 0.0 };
        // Last kept bit: 24 significant bits, or the subnormal quantum 2^-149.
        let q = (top as i32 - LSB - 23).max(-149);
        let p = (q + LSB) as usize;
        let mut m = (p..=top).rev().fold(0u64, |acc, i| acc << 1 | Self::bit(&mag, i));
        let half = Self::bit(&mag, p - 1) == 1;
        let sticky = (0..p - 1).any(|i| Self::bit(&mag, i) == 1);
        if half && (sticky || m & 1 == 1) {
            m += 1;
        }
        let r = (m as f64 * 2f64.powi(q)) as f32; // exact, or +inf past the f32 range
        if neg {
            -r
        } else {
            r
        }
    }
}

// ============================================================================ test plumbing

/// The device under test: the emulator (fidelity, bit exact) or a GPU (conformance).
struct Dut {
    gpu: Gpu,
    emulated: bool,
}

fn device(test: &str) -> Option<Dut> {
    let gpu = gpu_for_test(&format!("emu_fidelity::{test}"))?;
    let emulated = gpu.info().emulated;
    eprintln!("{test}: on {} ({})", gpu.info().name, if emulated { "fidelity" } else { "conformance" });
    Some(Dut { gpu, emulated })
}

fn rand_u32(rng: &mut Rng) -> u32 {
    rng.below(1 << 32) as u32
}

/// A random finite value of `fmt` (as bits) with exponent in [-spread, spread] around 1, or a
/// subnormal one time in `subnormal_one_in`.
fn rand_float(rng: &mut Rng, fmt: Fmt, spread: i32, subnormal_one_in: usize) -> u32 {
    let sign = (rng.below(2) as u32) << (fmt.ebits + fmt.mbits);
    let frac = rand_u32(rng) & ((1 << fmt.mbits) - 1);
    if subnormal_one_in > 0 && rng.below(subnormal_one_in) == 0 {
        return sign | frac;
    }
    let e = fmt.bias() + rng.below((2 * spread + 1) as usize) as i32 - spread;
    sign | (e as u32) << fmt.mbits | frac
}

// ============================================================================ mma.sync m16n8k16

// Fragment layouts from the PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point
// type". With g = lane / 4, t = lane % 4, and each 32-bit register's elements low half first:
// - A (16 x 16): a0..a7 in registers 0..3; rows g (a0, a1, a4, a5) and g + 8 (a2, a3, a6, a7);
//   column 2t + (i & 1), plus 8 for a4..a7.
// - B (16 x 8, K x N): b0..b3 in registers 0..1; row 2t + (i & 1), plus 8 for b2, b3; column g.
// - C and D (16 x 8, f32): c0..c3; rows g (c0, c1) and g + 8 (c2, c3); column 2t + (i & 1).
fn a_pos(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane / 4, lane % 4);
    let row = if i % 4 < 2 { g } else { g + 8 };
    (row, 2 * t + (i & 1) + if i >= 4 { 8 } else { 0 })
}
fn b_pos(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane / 4, lane % 4);
    (2 * t + (i & 1) + if i >= 2 { 8 } else { 0 }, g)
}
fn c_pos(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane / 4, lane % 4);
    (if i < 2 { g } else { g + 8 }, 2 * t + (i & 1))
}
fn half_of(reg: u32, i: usize) -> u32 {
    if i % 2 == 0 {
        reg & 0xffff
    } else {
        reg >> 16
    }
}

/// Matrices (as 16-bit patterns / f32) -> per-lane fragments.
fn to_fragments(a: &[[u32; 16]; 16], b: &[[u32; 8]; 16], c: &[[f32; 8]; 16]) -> ([[u32; 4]; 32], [[u32; 2]; 32], [[f32; 4]; 32]) {
    let mut fa = [[0u32; 4]; 32];
    let mut fb = [[0u32; 2]; 32];
    let mut fc = [[0f32; 4]; 32];
    for l in 0..32 {
        for i in 0..8 {
            let (r, k) = a_pos(l, i);
            fa[l][i / 2] |= a[r][k] << (16 * (i % 2));
        }
        for i in 0..4 {
            let (k, n) = b_pos(l, i);
            fb[l][i / 2] |= b[k][n] << (16 * (i % 2));
            let (r, n) = c_pos(l, i);
            fc[l][i] = c[r][n];
        }
    }
    (fa, fb, fc)
}

/// The PTX ISA's d = a * b + c ("Multiply-and-Accumulate Instruction: mma") on the fragments,
/// each d computed exactly and rounded once; also each d's GPU tolerance (`mma_tolerance`).
fn mma_model(fmt: Fmt, fa: &[[u32; 4]; 32], fb: &[[u32; 2]; 32], fc: &[[f32; 4]; 32]) -> ([[f32; 4]; 32], [[f64; 4]; 32]) {
    let mut a = [[0u32; 16]; 16];
    let mut b = [[0u32; 8]; 16];
    let mut c = [[0f32; 8]; 16];
    for l in 0..32 {
        for i in 0..8 {
            let (r, k) = a_pos(l, i);
            a[r][k] = half_of(fa[l][i / 2], i);
        }
        for i in 0..4 {
            let (k, n) = b_pos(l, i);
            b[k][n] = half_of(fb[l][i / 2], i);
            let (r, n) = c_pos(l, i);
            c[r][n] = fc[l][i];
        }
    }
    let mut d = [[0f32; 4]; 32];
    let mut tol = [[0f64; 4]; 32];
    for l in 0..32 {
        for i in 0..4 {
            let (r, n) = c_pos(l, i);
            let mut sum = ExactSum::new();
            let (cm, ce) = F32.decode(c[r][n].to_bits()).expect("finite c");
            sum.add(cm, ce);
            let subnormal = |fmt: Fmt, x: u32| fmt.exp_field(x) == 0 && x & ((1 << (fmt.ebits + fmt.mbits)) - 1) != 0;
            let (mut abs_sum, mut flushable) = ((c[r][n] as f64).abs(), 0.0);
            if c[r][n].is_subnormal() {
                flushable += (c[r][n] as f64).abs();
            }
            // Special values follow IEEE 754 arithmetic: inf x 0 and inf - inf are NaN, NaN
            // propagates, an infinite product makes the sum infinite.
            let (mut nan, mut pos_inf, mut neg_inf) = (false, false, false);
            for k in 0..16 {
                match (fmt.decode(a[r][k]), fmt.decode(b[k][n])) {
                    (Some((am, ae)), Some((bm, be))) => {
                        sum.add(am * bm, ae + be); // a 16-bit float product is exact
                        let p = (fmt.to_f64(a[r][k]) * fmt.to_f64(b[k][n])).abs();
                        abs_sum += p;
                        if subnormal(fmt, a[r][k]) || subnormal(fmt, b[k][n]) {
                            flushable += p;
                        }
                    }
                    _ => {
                        let p = fmt.to_f64_any(a[r][k]) * fmt.to_f64_any(b[k][n]);
                        nan |= p.is_nan();
                        pos_inf |= p == f64::INFINITY;
                        neg_inf |= p == f64::NEG_INFINITY;
                    }
                }
            }
            d[l][i] = if nan || (pos_inf && neg_inf) {
                f32::NAN
            } else if pos_inf || neg_inf {
                if pos_inf { f32::INFINITY } else { f32::NEG_INFINITY }
            } else {
                sum.to_f32()
            };
            tol[l][i] = mma_tolerance(abs_sum, flushable);
        }
    }
    (d, tol)
}

/// Allowed |d - exact| on a GPU. The ISA's "Precision and rounding" for f16 and bf16 mma: the
/// products and the accumulation are "at least single precision"; the accumulation order,
/// rounding and the handling of subnormal inputs are unspecified. The weakest conforming sum
/// then adds the 17 addends (c and 16 exact products) in any order in f32, truncating: at most
/// 16 x 2^-23 x sum|addend| (to first order), plus one final rounding (2^-23 x |d|). We allow
/// 18 x 2^-23 x sum|addend|, plus the whole of any addend with a subnormal operand (it may be
/// flushed), plus the f32 subnormal quantum. A fragment-layout or dtype error is off by whole
/// terms, far above this; the one-hot tests, whose results are exact, pin the layout exactly.
fn mma_tolerance(abs_sum: f64, flushable: f64) -> f64 {
    18.0 * 2f64.powi(-23) * abs_sum + flushable + 2f64.powi(-149)
}

fn check_mma(dut: &Dut, fmt: Fmt, fa: &[[u32; 4]; 32], fb: &[[u32; 2]; 32], fc: &[[f32; 4]; 32], what: &str) {
    let dtype = if fmt.mbits == F16.mbits { DType::F16 } else { DType::BF16 };
    let got = probe::mma(&dut.gpu, dtype, fa, fb, fc).unwrap_or_else(|e| panic!("{what}: {e}"));
    let (want, tol) = mma_model(fmt, fa, fb, fc);
    for l in 0..32 {
        for i in 0..4 {
            let (g, w) = (got[l][i], want[l][i]);
            let ok = if w.is_nan() {
                g.is_nan()
            } else if dut.emulated || w.is_infinite() {
                g.to_bits() == w.to_bits()
            } else {
                ((g as f64) - (w as f64)).abs() <= tol[l][i]
            };
            let (gb, wb, at) = (g.to_bits(), w.to_bits(), c_pos(l, i));
            assert!(ok, "{what} {dtype}: lane {l} d{i} (D{at:?}) = {g:e} ({gb:#010x}), model {w:e} ({wb:#010x})");
        }
    }
}

#[test]
fn mma_one_hot_positions() {
    // Each A element alone (all others +0) against a random B: D's non-zero row and values
    // show exactly where the instruction found that element; likewise each B element against a
    // random A; and A = B = 0 passes C through to D. The results are single exact products, so
    // they are exact on a GPU too.
    let Some(dut) = device("mma_one_hot_positions") else { return };
    let mut rng = Rng::from_time();
    for fmt in [F16, BF16] {
        let one = fmt.round_from_f32(1.0).unwrap();
        let rb: [[u32; 8]; 16] = std::array::from_fn(|_| std::array::from_fn(|_| rand_float(&mut rng, fmt, 4, 0)));
        let ra: [[u32; 16]; 16] = std::array::from_fn(|_| std::array::from_fn(|_| rand_float(&mut rng, fmt, 4, 0)));
        let zc = [[0f32; 8]; 16];
        for r in 0..16 {
            for k in 0..16 {
                let mut a = [[0u32; 16]; 16];
                a[r][k] = one;
                let (fa, fb, fc) = to_fragments(&a, &rb, &zc);
                check_mma(&dut, fmt, &fa, &fb, &fc, &format!("one-hot A[{r}][{k}] seed {}", rng.seed));
            }
        }
        for k in 0..16 {
            for n in 0..8 {
                let mut b = [[0u32; 8]; 16];
                b[k][n] = one;
                let (fa, fb, fc) = to_fragments(&ra, &b, &zc);
                check_mma(&dut, fmt, &fa, &fb, &fc, &format!("one-hot B[{k}][{n}] seed {}", rng.seed));
            }
        }
        let c: [[f32; 8]; 16] = std::array::from_fn(|_| std::array::from_fn(|_| rng.normal() + 0.5));
        let (fa, fb, fc) = to_fragments(&[[0; 16]; 16], &[[0; 8]; 16], &c);
        check_mma(&dut, fmt, &fa, &fb, &fc, &format!("C pass-through seed {}", rng.seed));
    }
}

#[test]
fn mma_random_operands() {
    // Random fragments: values spread over 2^-8..2^8, or the whole f16 range, or 2^-60..2^60 in
    // bf16 (addends spanning far more bits than an f64), some runs with one subnormal operand
    // in 16; random C.
    let Some(dut) = device("mma_random_operands") else { return };
    let mut rng = Rng::from_time();
    for (fmt, spread, sub) in [(F16, 8, 16), (F16, 14, 0), (BF16, 8, 0), (BF16, 60, 0), (BF16, 8, 16)] {
        for trial in 0..12 {
            let fa: [[u32; 4]; 32] = std::array::from_fn(|_| {
                std::array::from_fn(|_| rand_float(&mut rng, fmt, spread, sub) | rand_float(&mut rng, fmt, spread, sub) << 16)
            });
            let fb: [[u32; 2]; 32] = std::array::from_fn(|_| {
                std::array::from_fn(|_| rand_float(&mut rng, fmt, spread, sub) | rand_float(&mut rng, fmt, spread, sub) << 16)
            });
            let fc: [[f32; 4]; 32] = std::array::from_fn(|_| std::array::from_fn(|_| rng.normal() * 64.0));
            check_mma(&dut, fmt, &fa, &fb, &fc, &format!("random trial {trial} spread 2^{spread} seed {}", rng.seed));
        }
    }
}

#[test]
fn mma_cancellation_rounds_once() {
    // Each row of A holds pairs x, -x against equal B entries, so large products cancel
    // exactly and the result is the small remainder plus C: a sum rounded after every addend in
    // f32 (or in a different order) differs from the exact, once-rounded value the model gives.
    let Some(dut) = device("mma_cancellation_rounds_once") else { return };
    let mut rng = Rng::from_time();
    for fmt in [F16, BF16] {
        for trial in 0..8 {
            let mut a = [[0u32; 16]; 16];
            let mut b = [[0u32; 8]; 16];
            for r in 0..16 {
                for k in (0..14).step_by(2) {
                    let x = rand_float(&mut rng, fmt, 6, 0);
                    a[r][k] = x;
                    a[r][k + 1] = x ^ 1 << (fmt.ebits + fmt.mbits); // -x
                }
                // Two small terms (2^-6 .. 2^-2) survive the cancellation.
                a[r][14] = rand_float(&mut rng, fmt, 2, 0) - (4 << fmt.mbits);
                a[r][15] = rand_float(&mut rng, fmt, 2, 0) - (4 << fmt.mbits);
            }
            for k in 0..16 {
                for n in 0..8 {
                    b[k][n] = if k % 2 == 1 && k < 14 { b[k - 1][n] } else { rand_float(&mut rng, fmt, 6, 0) };
                }
            }
            let c: [[f32; 8]; 16] = std::array::from_fn(|_| std::array::from_fn(|_| rng.normal() * 2f32.powi(-10) + 1.0));
            let (fa, fb, fc) = to_fragments(&a, &b, &c);
            check_mma(&dut, fmt, &fa, &fb, &fc, &format!("cancellation trial {trial} seed {}", rng.seed));
        }
    }
}

#[test]
fn mma_rounds_once_past_double_precision() {
    // Every D = c + 8 * 8 + 2^-14 * 2^-14 with c = 2^30: the middle term is half an f32 ulp of
    // 2^30, the last one breaks the tie upwards, so the exact sum rounds to 2^30 + 2^7. The
    // addends span 58 bits: summed in f64 first, the 2^-28 is lost, the f64 sum is the tie and
    // the f32 rounding goes to even (2^30), i.e. two roundings. Mirrored with c = 2^30 + 2^7 and
    // a negative tie-breaker (exact result 2^30 + 2^7, tie-to-even 2^30 + 2^8). The emulated
    // device gave 2^30 and 2^30 + 2^8 here before its mma summed exactly.
    let Some(dut) = device("mma_rounds_once_past_double_precision") else { return };
    for fmt in [F16, BF16] {
        let bits = |x: f32| fmt.round_from_f32(x).unwrap();
        for (c0, tiny) in [(2f32.powi(30), 2f32.powi(-14)), (2f32.powi(30) + 128.0, -(2f32.powi(-14)))] {
            let mut a = [[0u32; 16]; 16];
            let mut b = [[0u32; 8]; 16];
            for r in 0..16 {
                a[r][3] = bits(8.0);
                a[r][11] = bits(tiny);
            }
            for n in 0..8 {
                b[3][n] = bits(8.0);
                b[11][n] = bits(2f32.powi(-14));
            }
            let (fa, fb, fc) = to_fragments(&a, &b, &[[c0; 8]; 16]);
            let (want, _) = mma_model(fmt, &fa, &fb, &fc);
            assert_eq!(want[0][0], 2f32.powi(30) + 128.0, "the model itself");
            check_mma(&dut, fmt, &fa, &fb, &fc, &format!("c {c0:e}, tie-breaker {tiny:e}"));
        }
    }
}

#[test]
fn mma_non_finite_operands() {
    // Infinities, NaN and zeros dropped into random A and B: rows and columns that meet them
    // become +-inf or NaN (inf x 0, inf - inf) by IEEE 754 rules; only NaN-ness is compared for
    // NaN results, not payloads.
    let Some(dut) = device("mma_non_finite_operands") else { return };
    let mut rng = Rng::from_time();
    for fmt in [F16, BF16] {
        let sign = 1u32 << (fmt.ebits + fmt.mbits);
        let inf = ((1u32 << fmt.ebits) - 1) << fmt.mbits;
        let specials = [inf, inf | sign, inf | 1 << (fmt.mbits - 1), 0, sign];
        for trial in 0..16 {
            let mut a: [[u32; 16]; 16] = std::array::from_fn(|_| std::array::from_fn(|_| rand_float(&mut rng, fmt, 4, 0)));
            let mut b: [[u32; 8]; 16] = std::array::from_fn(|_| std::array::from_fn(|_| rand_float(&mut rng, fmt, 4, 0)));
            for _ in 0..3 {
                a[rng.below(16)][rng.below(16)] = specials[rng.below(specials.len())];
                b[rng.below(16)][rng.below(8)] = specials[rng.below(specials.len())];
            }
            let c: [[f32; 8]; 16] = std::array::from_fn(|_| std::array::from_fn(|_| rng.normal()));
            let (fa, fb, fc) = to_fragments(&a, &b, &c);
            check_mma(&dut, fmt, &fa, &fb, &fc, &format!("non-finite trial {trial} seed {}", rng.seed));
        }
    }
}

// ============================================================================ ldmatrix

// PTX ISA "Warp-level matrix load instruction: ldmatrix": with .num = .x1/.x2/.x4, the 8 row
// addresses of matrix i come from lanes 8i..8i+7 (lane 8i + j gives row j); register i of
// every lane receives a piece of matrix i. Without .trans (figure "ldmatrix
// fragment layout for one 8x8 Matrix with 16-bit elements") lane l gets row l / 4, columns
// 2 (l % 4) and 2 (l % 4) + 1 (low half first), so four consecutive lanes hold one row. With
// .trans the matrix is read as column-major: lane l gets element (row 2 (l % 4), column l / 4)
// and (row 2 (l % 4) + 1, column l / 4) of the rows as addressed.
fn ldmatrix_model(num: usize, trans: bool, smem: &[u16], rows: &[u32; 32]) -> [[u32; 4]; 32] {
    let elem = |m: usize, r: usize, c: usize| smem[rows[8 * m + r] as usize * 8 + c] as u32;
    std::array::from_fn(|l| {
        std::array::from_fn(|m| {
            if m >= num {
                return 0;
            }
            let (r, c) = (l / 4, 2 * (l % 4));
            if trans {
                elem(m, c, r) | elem(m, c + 1, r) << 16
            } else {
                elem(m, r, c) | elem(m, r, c + 1) << 16
            }
        })
    })
}

#[test]
fn ldmatrix_all_forms() {
    // Distinct 16-bit values everywhere, rows addressed in random order (with repeats), every
    // .num with and without .trans. Lanes whose addresses .x1/.x2 ignore still point at rows.
    let Some(dut) = device("ldmatrix_all_forms") else { return };
    let mut rng = Rng::from_time();
    for trial in 0..6 {
        let base = rand_u32(&mut rng) as u16;
        let smem: [u16; LDMATRIX_ROWS * 8] = std::array::from_fn(|i| base.wrapping_add((i as u16).wrapping_mul(0x9e37)));
        let rows: [u32; 32] = std::array::from_fn(|l| {
            if trial == 0 {
                l as u32
            } else {
                rng.below(LDMATRIX_ROWS) as u32
            }
        });
        for num in [1, 2, 4] {
            for trans in [false, true] {
                let got = probe::ldmatrix(&dut.gpu, num, trans, &smem, &rows).unwrap();
                let want = ldmatrix_model(num, trans, &smem, &rows);
                for l in 0..32 {
                    assert_eq!(got[l], want[l], "ldmatrix .x{num} trans={trans} lane {l} rows {rows:?} seed {}", rng.seed);
                }
            }
        }
    }
}

// ============================================================================ shfl.sync

// PTX ISA "Data Movement and Conversion Instructions: shfl.sync": operand c packs a
// segment mask in c[12:8] and a clamp value in c[4:0]; for lane L, maxLane = (L & segmask) |
// (clamp & ~segmask) and minLane = L & segmask; with bval = b[4:0], the source lane j and its
// validity are: up: L - bval, valid if j >= maxLane; down: L + bval, valid if j <= maxLane;
// bfly: L ^ bval, valid if j <= maxLane; idx: minLane | (bval & ~segmask), valid if j <= maxLane.
// An invalid j reads the lane's own value. The CUDA intrinsics select a sub-warp `width` with
// segmask = 32 - width and clamp 31 (0 for __shfl_up_sync).
fn shfl_model(kind: Shfl, width: u32, values: &[u32; 32], b: &[u32; 32]) -> [u32; 32] {
    let seg = (32 - width) as i32 & 0x1f;
    let clamp = if kind == Shfl::Up { 0 } else { 0x1f };
    std::array::from_fn(|lane| {
        let l = lane as i32;
        let (max_lane, min_lane) = ((l & seg) | (clamp & !seg), l & seg);
        let bval = (b[lane] & 0x1f) as i32;
        let (j, valid) = match kind {
            Shfl::Up => (l - bval, l - bval >= max_lane),
            Shfl::Down => (l + bval, l + bval <= max_lane),
            Shfl::Xor => (l ^ bval, (l ^ bval) <= max_lane),
            Shfl::Idx => (min_lane | (bval & !seg), (min_lane | (bval & !seg)) <= max_lane),
        };
        values[if valid { j as usize } else { lane }]
    })
}

const SHFL_KINDS: [Shfl; 4] = [Shfl::Idx, Shfl::Xor, Shfl::Up, Shfl::Down];

#[test]
fn shfl_all_kinds_and_widths() {
    // Random values, per-lane b in 0..64 (so b >= width and b >= 32 occur), widths 32..4.
    let Some(dut) = device("shfl_all_kinds_and_widths") else { return };
    let mut rng = Rng::from_time();
    for trial in 0..4 {
        for kind in SHFL_KINDS {
            for width in [32, 16, 8, 4] {
                let values: [u32; 32] = std::array::from_fn(|_| rand_u32(&mut rng));
                let b: [u32; 32] = std::array::from_fn(|_| rng.below(if trial == 0 { width as usize } else { 64 }) as u32);
                let got = probe::shfl(&dut.gpu, kind, width, &values, &b).unwrap();
                let want = shfl_model(kind, width, &values, &b);
                assert_eq!(got, want, "{kind:?} width {width} b {b:?} seed {}", rng.seed);
            }
        }
    }
}

#[test]
fn shfl_out_of_range_at_sub_warp_widths() {
    // The CUDA C++ Programming Guide's rules for width < 32, spelled out case by case (lane
    // value = 100 + lane): a source lane beyond the width wraps within the lane's own segment;
    // up/down past the segment's edge return the lane's own value; xor may reach an earlier
    // segment but a later one returns the lane's own value.
    let Some(dut) = device("shfl_out_of_range_at_sub_warp_widths") else { return };
    let values: [u32; 32] = std::array::from_fn(|l| 100 + l as u32);
    let same = |b: u32| [b; 32];
    let check = |kind: Shfl, width: u32, b: u32, want: &dyn Fn(usize) -> usize| {
        let got = probe::shfl(&dut.gpu, kind, width, &values, &same(b)).unwrap();
        for l in 0..32 {
            assert_eq!(got[l], 100 + want(l) as u32, "{kind:?} width {width} b {b}: lane {l}");
        }
    };
    for width in [16usize, 8, 4] {
        let seg = |l: usize| l / width * width;
        // __shfl_sync: source lane taken modulo the width, inside the lane's segment.
        check(Shfl::Idx, width as u32, width as u32 + 3, &|l| seg(l) + 3 % width);
        check(Shfl::Idx, width as u32, 33, &|l| seg(l) + 1);
        // __shfl_up_sync: lanes below `delta` in their segment keep their value.
        check(Shfl::Up, width as u32, 3, &|l| if l % width >= 3 { l - 3 } else { l });
        check(Shfl::Up, width as u32, width as u32, &|l| l);
        // __shfl_down_sync: lanes whose source would leave the segment keep their value.
        check(Shfl::Down, width as u32, 3, &|l| if l % width + 3 < width { l + 3 } else { l });
        // __shfl_xor_sync with a mask >= width: the odd segments reach back to the even ones,
        // the even ones would reach forward and keep their value.
        check(Shfl::Xor, width as u32, width as u32, &|l| if (l / width) % 2 == 1 { l - width } else { l });
        check(Shfl::Xor, width as u32, 1, &|l| l ^ 1);
    }
}

// ============================================================================ vote.sync

// PTX ISA "Parallel Synchronization and Communication Instructions: vote.sync":
// ballot sets bit L of the result to lane L's predicate for the lanes of membermask (others
// contribute 0); .any is true if some lane of the mask has a true predicate, .all if all do.
// The CUDA intrinsics __any_sync / __all_sync return non-zero for true.
fn vote_model(kind: Vote, mask: u32, preds: &[bool; 32]) -> [Option<u32>; 32] {
    let ballot = (0..32).filter(|&l| mask >> l & 1 == 1 && preds[l]).fold(0u32, |acc, l| acc | 1 << l);
    std::array::from_fn(|l| {
        (mask >> l & 1 == 1).then_some(match kind {
            Vote::Ballot => ballot,
            Vote::Any => (ballot != 0) as u32,
            Vote::All => (ballot == mask) as u32,
        })
    })
}

#[test]
fn vote_ballot_any_all_over_masks() {
    let Some(dut) = device("vote_ballot_any_all_over_masks") else { return };
    let mut rng = Rng::from_time();
    for trial in 0..12 {
        let mask = match trial {
            0..=3 => !0,
            4 => 1,
            5 => 0x8000_0001,
            _ => rand_u32(&mut rng) | 1 << rng.below(32),
        };
        let preds: [bool; 32] = std::array::from_fn(|_| match trial {
            0 => true,
            1 => false,
            _ => rng.below(2) == 1,
        });
        for kind in [Vote::Ballot, Vote::Any, Vote::All] {
            let got = probe::vote(&dut.gpu, kind, mask, &preds).unwrap();
            let want = vote_model(kind, mask, &preds);
            for l in 0..32 {
                let ok = match (want[l], kind) {
                    (None, _) => got[l] == NOT_A_MEMBER,
                    (Some(w), Vote::Ballot) => got[l] == w,
                    (Some(w), _) => (got[l] != 0) == (w != 0),
                };
                let (g, w, seed) = (got[l], want[l], rng.seed);
                assert!(ok, "{kind:?} mask {mask:#010x} lane {l}: got {g:#x}, model {w:?} preds {preds:?} seed {seed}");
            }
        }
    }
}

// ============================================================================ cp.async

// PTX ISA "Data Movement and Conversion Instructions: cp.async": src-size bytes
// are copied and the rest of the cp-size destination is filled with zeros. "cp.async.wait_group":
// wait_group N returns once at most the N most recent committed groups of the
// thread are pending, all earlier ones complete. Other threads see the data after a barrier.
fn cp_async_model(src: &[u8; 512], lane: usize, size: u32) -> [u8; 16] {
    std::array::from_fn(|i| if (i as u32) < size { src[16 * lane + i] } else { 0 })
}

#[test]
fn cp_async_zero_fill_and_groups() {
    let Some(dut) = device("cp_async_zero_fill_and_groups") else { return };
    let mut rng = Rng::from_time();
    for trial in 0..4 {
        let src: [u8; 512] = std::array::from_fn(|_| rng.below(255) as u8 + 1); // no zero bytes
        let sizes: [u32; 32] = std::array::from_fn(|l| if trial == 0 { (l % 17) as u32 } else { rng.below(17) as u32 });
        let got = probe::cp_async(&dut.gpu, &src, &sizes).unwrap();
        for l in 0..32 {
            let next = (l + 1) % 32;
            let (size, seed) = (sizes[next], rng.seed);
            assert_eq!(got[l], cp_async_model(&src, next, size), "slot of lane {next}, src-size {size} seed {seed}");
        }
        let got = probe::cp_async_two_groups(&dut.gpu, &src, &sizes).unwrap();
        for l in 0..32 {
            let next = (l + 1) % 32;
            let (a, b) = (cp_async_model(&src, next, sizes[next]), cp_async_model(&src, next, 16 - sizes[next]));
            assert_eq!(got[l], (a, b), "groups of lane {next}, src-size {} seed {}", sizes[next], rng.seed);
        }
    }
}

// ============================================================================ ex2.approx.ftz.f32

// PTX ISA "Floating Point Instructions: ex2": d = 2^a, at most 2 ulp from the
// correctly rounded result over the whole input range; -Inf -> +0, +-0 -> 1, +Inf -> +Inf,
// NaN -> NaN; .ftz flushes subnormal inputs and results to sign-preserving zero. The model is
// the correctly rounded value with the flushes applied: 2^x in f64 (within 2^-52 of the true
// value) rounded to f32, which is correct unless 2^x lies that close to an f32 rounding boundary
// (never on one: 2^x of a non-integer float is irrational), about one input in 2^28.
fn ex2_exact_f64(x: f32) -> f64 {
    let x = if x.is_subnormal() { 0.0 } else { x };
    (x as f64).exp2()
}
fn ex2_model(x: f32) -> f32 {
    let y = ex2_exact_f64(x) as f32;
    if y.is_subnormal() {
        0.0
    } else {
        y
    }
}
fn ulp_distance(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32 // both >= 0 here
}
/// On a GPU: within 2 ulp of the model, the special inputs exact; where the exact 2^x lies
/// within 2 ulp of the smallest normal, either side of the flush is accepted.
fn ex2_conforms(x: f32, got: f32) -> bool {
    let want = ex2_model(x);
    if want.is_nan() {
        return got.is_nan();
    }
    if x.is_infinite() || x == 0.0 || x.is_subnormal() {
        return got.to_bits() == want.to_bits();
    }
    if got.is_nan() || got.is_sign_negative() {
        return false;
    }
    if ulp_distance(got, want) <= 2 {
        return true;
    }
    let lo = f32::MIN_POSITIVE as f64;
    (ex2_exact_f64(x) - lo).abs() <= 2.0 * lo * 2f64.powi(-23) && (got == 0.0 || ulp_distance(got, f32::MIN_POSITIVE) <= 2)
}

#[test]
fn ex2_approx_ftz_inputs() {
    let Some(dut) = device("ex2_approx_ftz_inputs") else { return };
    let mut rng = Rng::from_time();
    let mut x: Vec<f32> = vec![
        0.0, -0.0, 1.0, -1.0, 0.5, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN, f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE, 1e-45, -1e-45, f32::MAX, f32::MIN, 1e30, -1e30, f32::from_bits(0x42ff_ffff), 128.0,
        -126.0, -126.5, -127.0, -149.0, -150.0, -126.0 + 2f32.powi(-17), 1e-7, -1e-7,
    ];
    x.extend((-160..=130).map(|i| i as f32));
    x.extend((0..2000).map(|_| rng.uniform(-140.0, 130.0)));
    x.extend((0..500).map(|_| rng.normal()));
    x.extend((0..200).map(|_| f32::from_bits(rand_u32(&mut rng) & 0x807f_ffff))); // subnormals
    x.extend((0..300).map(|_| f32::from_bits(rand_u32(&mut rng)))); // anything, NaN included
    let got = probe::ex2_approx_ftz(&dut.gpu, &x).unwrap();
    for (&xi, &g) in x.iter().zip(&got) {
        let want = ex2_model(xi);
        let ok = if dut.emulated { g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()) } else { ex2_conforms(xi, g) };
        let (xb, gb, wb, seed) = (xi.to_bits(), g.to_bits(), want.to_bits(), rng.seed);
        assert!(ok, "ex2.approx.ftz({xi:e} = {xb:#010x}) = {g:e} ({gb:#010x}), model {want:e} ({wb:#010x}) seed {seed}");
    }
}

// ============================================================================ conversions

// f32 -> f16 / bf16 with round to nearest, ties to even (the _rn intrinsics; PTX cvt.rn.f16.f32
// and cvt.rn.bf16.f32): IEEE 754 rounding including subnormal results and overflow to
// infinity; a NaN stays a NaN (its payload is not checked). The pair intrinsics put their first
// argument in the low half.
#[test]
fn conversions_round_to_nearest_even() {
    let Some(dut) = device("conversions_round_to_nearest_even") else { return };
    let mut rng = Rng::from_time();
    for (fmt, half, pair) in [(F16, Cvt::Half, Cvt::Half2), (BF16, Cvt::Bfloat16, Cvt::Bfloat162)] {
        let max = fmt.to_f64(((1 << fmt.ebits) - 2) << fmt.mbits | ((1 << fmt.mbits) - 1)) as f32;
        let mut x: Vec<f32> = vec![
            0.0, -0.0, 1.0, -1.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN, max, -max,
            f32::MIN_POSITIVE, 1e-45, -1e-45, 65504.0, 65520.0 - 2f32.powi(-8), 65520.0, 65536.0, 2f32.powi(-24), 2f32.powi(-25),
            3.0 * 2f32.powi(-25), 2f32.powi(-26), 2f32.powi(-133), 2f32.powi(-134), 3.0 * 2f32.powi(-134),
        ];
        // Ties: the midpoint of two neighbouring values of the format (exact in f32), both signs,
        // normal and subnormal.
        for _ in 0..400 {
            let h = rand_u32(&mut rng) & ((1 << (fmt.ebits + fmt.mbits)) - 2);
            if fmt.exp_field(h) == (1 << fmt.ebits) - 1 {
                continue;
            }
            let mid = (fmt.to_f64(h) + fmt.to_f64(h + 1)) / 2.0;
            let s = if rng.below(2) == 1 { -1.0 } else { 1.0 };
            x.push((s * mid) as f32);
        }
        x.extend((0..1500).map(|_| f32::from_bits(rand_u32(&mut rng))));
        x.extend((0..500).map(|_| rng.normal() * 1000.0));
        x.extend((0..300).map(|_| f32::from_bits(rand_u32(&mut rng) & 0x807f_ffff)));
        if x.len() % 2 == 1 {
            x.push(0.25);
        }
        let got = probe::convert(&dut.gpu, half, &x).unwrap();
        let got_pairs = probe::convert(&dut.gpu, pair, &x).unwrap();
        for (i, &xi) in x.iter().enumerate() {
            let want = fmt.round_from_f32(xi);
            for (g, form) in [(got[i], half), (got_pairs[i], pair)] {
                let ok = match want {
                    None => fmt.is_nan(g as u32),
                    Some(w) => g as u32 == w,
                };
                assert!(ok, "{form:?}({xi:e} = {:#010x}) = {g:#06x}, model {want:#06x?} seed {}", xi.to_bits(), rng.seed);
            }
        }
    }
}

// ============================================================================ checkers

#[test]
fn checkers_fire_on_misbehaving_probes() {
    let Some(dut) = device("checkers_fire_on_misbehaving_probes") else { return };
    if !dut.emulated {
        eprintln!(
            "checkers_fire_on_misbehaving_probes: skipped on a GPU (the probes break the execution rules on \
             purpose; only the emulated device checks them)"
        );
        return;
    }
    for (kind, checker) in [
        (Misbehave::ReadBeforeCpAsyncWait, "racecheck"),
        (Misbehave::LaneSkipsSyncwarp, "synccheck"),
        (Misbehave::SharedRaceInWarp, "racecheck"),
    ] {
        match probe::misbehave(&dut.gpu, kind) {
            Ok(()) => panic!("{kind:?}: the emulator accepted it; {checker} should have fired"),
            Err(e) => assert!(e.to_string().contains(checker), "{kind:?}: expected a {checker} finding, got: {e}"),
        }
    }
    probe::misbehave(&dut.gpu, Misbehave::SharedOrderedBySyncwarp).expect("the __syncwarp-ordered version is correct");
}
