//! Test helpers: fresh random inputs, the error measure of docs/ops.md, and the references written
//! in plain candle ops, evaluated in f64 on candle's CPU device.
//!
//! Tolerances: every op's output is compared, after the op rounds it to its dtype, with an f64
//! evaluation of the same formulas on the same (rounded) inputs, so the bound is the library's
//! accuracy contract of docs/ops.md (`rel = ||out - ref|| / ||ref||`): 1e-5 for f32, 1.5e-2 for
//! bf16, twice that for diff_attention. The f64 references themselves are exact to ~1e-15,
//! far below.

#![allow(dead_code)]

use candle_core::{DType, Device, IndexOp, Result, Tensor, D};
use std::sync::atomic::{AtomicU64, Ordering};

pub const F32_BOUND: f64 = 1e-5;
pub const BF16_BOUND: f64 = 1.5e-2;

/// A splitmix64 stream; the seed is fresh per run (time and a counter) unless
/// `ATTN_KERNELS_SEED` replays one, and is printed so a failure can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(test: &str) -> Rng {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = match std::env::var("ATTN_KERNELS_SEED") {
            Ok(s) => s.parse().expect("ATTN_KERNELS_SEED must be an integer"),
            Err(_) => {
                let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
                t ^ COUNTER.fetch_add(0x9e37_79b9, Ordering::Relaxed).rotate_left(17) ^ (std::process::id() as u64) << 32
            }
        };
        println!("{test}: seed {seed} (replay with ATTN_KERNELS_SEED={seed})");
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A CPU f32 tensor of `shape` with entries uniform in [lo, hi) (never all zeros).
    pub fn tensor(&mut self, shape: &[usize], lo: f32, hi: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.uniform(lo, hi)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }
}

pub fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

/// `||out - ref|| / ||ref||` with the non-finite rules of docs/ops.md (the library's own).
pub fn rel(out: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(out.dims(), reference.dims(), "shape mismatch");
    attn_kernels::tensor::rel_error(&f64s(out), &f64s(reference))
}

#[track_caller]
pub fn assert_close(what: &str, out: &Tensor, reference: &Tensor, bound: f64) {
    let r = rel(out, reference);
    println!("{what}: rel {r:.3e} (bound {bound:.1e})");
    assert!(r <= bound, "{what}: rel error {r:.3e} exceeds {bound:.1e}");
}

/// Plain RoPE parameters of a reference: frequencies `f_i`, attention factor, pairing.
#[derive(Clone, Debug)]
pub struct RefRope {
    pub rotary_dim: usize,
    pub inv_freq: Vec<f64>,
    pub factor: f64,
    pub interleaved: bool,
}

impl RefRope {
    /// `f_i = theta^(-2i/d) / linear_factor`.
    pub fn plain(rotary_dim: usize, theta: f64, linear_factor: f64, interleaved: bool) -> RefRope {
        let inv_freq = (0..rotary_dim / 2).map(|i| theta.powf(-2.0 * i as f64 / rotary_dim as f64) / linear_factor).collect();
        RefRope { rotary_dim, inv_freq, factor: 1.0, interleaved }
    }

    /// Rotate `x [.., S, H, D]` (f64) with the row positions `pos [S]` (dimension -3 is the row).
    pub fn apply(&self, x: &Tensor, pos: &[i64]) -> Result<Tensor> {
        let (d, half) = (self.rotary_dim, self.rotary_dim / 2);
        let dims = x.dims().to_vec();
        let head_dim = dims[dims.len() - 1];
        let s = pos.len();
        let angles: Vec<f64> = pos.iter().flat_map(|&p| self.inv_freq.iter().map(move |&f| p as f64 * f)).collect();
        let ang = Tensor::from_vec(angles, (s, 1, half), x.device())?; // [S, 1 (heads), d/2]
        let (cos, sin) = (ang.cos()?, ang.sin()?);
        let rot = x.narrow(D::Minus1, 0, d)?;
        let (x1, x2) = if self.interleaved {
            let mut pairs = dims.clone();
            *pairs.last_mut().unwrap() = half;
            pairs.push(2);
            let r = rot.reshape(pairs)?;
            (r.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?, r.narrow(D::Minus1, 1, 1)?.squeeze(D::Minus1)?)
        } else {
            (rot.narrow(D::Minus1, 0, half)?, rot.narrow(D::Minus1, half, half)?)
        };
        let y1 = ((x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)? * self.factor)?;
        let y2 = ((x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)? * self.factor)?;
        let rotated = if self.interleaved {
            Tensor::stack(&[y1, y2], D::Minus1)?.flatten_from(dims.len() - 1)?
        } else {
            Tensor::cat(&[y1, y2], D::Minus1)?
        };
        if d == head_dim {
            Ok(rotated)
        } else {
            Tensor::cat(&[rotated, x.narrow(D::Minus1, d, head_dim - d)?], D::Minus1)
        }
    }
}

/// Options of the reference attention.
#[derive(Clone, Debug, Default)]
pub struct RefOpts {
    pub scale: f64,
    pub causal: bool,
    pub window_left: i64,
    pub window_right: i64,
    pub softcap: f64,
    pub alibi: Option<Vec<f32>>,
    pub rope: Option<RefRope>,
    /// RoPE positions of the query / key rows of one sequence (default `P(i)` / `j`).
    pub pos_q: Option<Vec<i64>>,
    pub pos_k: Option<Vec<i64>>,
}

/// Attention of one sequence in plain candle ops, f64: `q [Sq, Hq, D]`, `k [Sk, Hkv, D]`,
/// `v [Sk, Hkv, Dv]` (any float dtype, widened) give `o [Sq, Hq, Dv]` and `lse [Hq, Sq]`.
/// Fully masked rows get `o = 0`, `lse = -inf`.
pub fn ref_attention_seq(q: &Tensor, k: &Tensor, v: &Tensor, o: &RefOpts) -> Result<(Tensor, Tensor)> {
    let (q, k, v) = (q.to_dtype(DType::F64)?, k.to_dtype(DType::F64)?, v.to_dtype(DType::F64)?);
    let (sq, hq, _) = q.dims3()?;
    let (sk, hkv, _) = k.dims3()?;
    let dv = v.dim(2)?;
    let dev = q.device().clone();
    if sq == 0 {
        return Ok((Tensor::zeros((0, hq, dv), DType::F64, &dev)?, Tensor::zeros((hq, 0), DType::F64, &dev)?));
    }
    // Query positions in key coordinates: P(i) = i + Sk - Sq.
    let p: Vec<i64> = (0..sq as i64).map(|i| i + sk as i64 - sq as i64).collect();
    let (q, k) = match &o.rope {
        Some(r) => {
            let pq = o.pos_q.clone().unwrap_or_else(|| p.clone());
            let pk = o.pos_k.clone().unwrap_or_else(|| (0..sk as i64).collect());
            (r.apply(&q, &pq)?, r.apply(&k, &pk)?)
        }
        None => (q, k),
    };
    if sk == 0 {
        let lse = Tensor::full(f64::NEG_INFINITY, (hq, sq), &dev)?;
        return Ok((Tensor::zeros((sq, hq, dv), DType::F64, &dev)?, lse));
    }
    // GQA: query head h reads kv head h / (Hq / Hkv).
    let group = hq / hkv;
    let idx = Tensor::from_vec((0..hq as u32).map(|h| h / group as u32).collect::<Vec<_>>(), hq, &dev)?;
    let k = k.index_select(&idx, 1)?;
    let v = v.index_select(&idx, 1)?;
    let (qh, kh, vh) = (q.transpose(0, 1)?.contiguous()?, k.transpose(0, 1)?.contiguous()?, v.transpose(0, 1)?.contiguous()?);
    let mut s = (qh.matmul(&kh.t()?)? * o.scale)?; // [Hq, Sq, Sk]
    if o.softcap > 0.0 {
        s = ((s / o.softcap)?.tanh()? * o.softcap)?;
    }
    let pi = Tensor::from_vec(p.iter().map(|&x| x as f64).collect::<Vec<_>>(), (sq, 1), &dev)?;
    let j = Tensor::arange(0.0f64, sk as f64, &dev)?.reshape((1, sk))?;
    let diff = pi.broadcast_sub(&j)?; // P(i) - j, [Sq, Sk]
    if let Some(slopes) = &o.alibi {
        let m = Tensor::from_vec(slopes.iter().map(|&x| x as f64).collect::<Vec<_>>(), (hq, 1, 1), &dev)?;
        s = s.broadcast_sub(&m.broadcast_mul(&diff.abs()?.unsqueeze(0)?)?)?;
    }
    // sees(i, j) as a 0/1 mask, [Sq, Sk].
    let mut sees = Tensor::ones((sq, sk), DType::F64, &dev)?;
    if o.causal {
        sees = (sees * diff.ge(0.0)?.to_dtype(DType::F64)?)?; // j <= P(i)
    }
    if o.window_left >= 0 {
        sees = (sees * diff.le(o.window_left as f64)?.to_dtype(DType::F64)?)?; // j >= P(i) - wl
    }
    if o.window_right >= 0 {
        sees = (sees * diff.ge(-o.window_right as f64)?.to_dtype(DType::F64)?)?; // j <= P(i) + wr
    }
    let neg_inf = Tensor::full(f64::NEG_INFINITY, (hq, sq, sk), &dev)?;
    let s = sees.unsqueeze(0)?.broadcast_as((hq, sq, sk))?.ne(0.0)?.where_cond(&s, &neg_inf)?;
    // Softmax with fully masked rows: max -inf -> use 0, sum 0 -> o = 0, lse = ln 0 = -inf.
    let m = s.max_keepdim(D::Minus1)?;
    let m = m.ne(f64::NEG_INFINITY)?.where_cond(&m, &m.zeros_like()?)?;
    let e = s.broadcast_sub(&m)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    let lse = (sum.log()? + &m)?.squeeze(D::Minus1)?; // [Hq, Sq]
    let denom = sum.eq(0.0)?.where_cond(&sum.ones_like()?, &sum)?;
    let out = e.broadcast_div(&denom)?.matmul(&vh)?; // [Hq, Sq, Dv]
    Ok((out.transpose(0, 1)?.contiguous()?, lse))
}

/// Dense reference: `[B, S, H, D]` tensors, outputs `o [B, Sq, Hq, Dv]`, `lse [B, Hq, Sq]`.
pub fn ref_attention(q: &Tensor, k: &Tensor, v: &Tensor, o: &RefOpts) -> Result<(Tensor, Tensor)> {
    let b = q.dim(0)?;
    let mut os = Vec::new();
    let mut lses = Vec::new();
    for i in 0..b {
        let (oi, li) = ref_attention_seq(&q.i(i)?, &k.i(i)?, &v.i(i)?, o)?;
        os.push(oi);
        lses.push(li);
    }
    Ok((Tensor::stack(&os, 0)?, Tensor::stack(&lses, 0)?))
}

/// Varlen reference: packed `[total, H, D]` tensors and offsets; `o [total_q, Hq, Dv]`,
/// `lse [Hq, total_q]`.
pub fn ref_attention_varlen(q: &Tensor, k: &Tensor, v: &Tensor, cu_q: &[i32], cu_k: &[i32], o: &RefOpts) -> Result<(Tensor, Tensor)> {
    let mut os = Vec::new();
    let mut lses = Vec::new();
    for n in 0..cu_q.len() - 1 {
        let (q0, q1) = (cu_q[n] as usize, cu_q[n + 1] as usize);
        let (k0, k1) = (cu_k[n] as usize, cu_k[n + 1] as usize);
        let (oi, li) = ref_attention_seq(&q.narrow(0, q0, q1 - q0)?, &k.narrow(0, k0, k1 - k0)?, &v.narrow(0, k0, k1 - k0)?, o)?;
        os.push(oi);
        lses.push(li);
    }
    Ok((Tensor::cat(&os, 0)?, Tensor::cat(&lses, 1)?))
}
