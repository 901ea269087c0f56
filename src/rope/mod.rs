//! RoPE and its scaling variants (spec section 2): configuration, frequencies, the standalone
//! `rope` op, and the exact-angle machinery fused attention reuses.
//!
//! A [`RopeConfig`] takes a model's Hugging Face `rope_scaling` dict verbatim. [`RopeConfig::resolve`]
//! computes the frequency vector `f_i` and attention factor `a` in f64 for a call whose longest
//! sequence is `n` (only `dynamic` and `longrope` depend on `n`). Rotation angles `p * f_i` are
//! always formed in f64, so they are exact before the one rounding of cos/sin to f32, even at
//! positions of 2^20 and beyond.
//!
//! Choices where the spec defers to the anchors (Hugging Face `modeling_rope_utils`):
//! - `s` is the dict's `factor`. Recent transformers versions replace it by
//!   `max_position_embeddings / original_max_position_embeddings` when the latter is in the dict;
//!   for the published configs (Qwen2.5, DeepSeek-V3, gpt-oss, Phi-3) both agree. For yarn and
//!   longrope without a `factor`, `s = L / L0`.
//! - `L0` (`original_max_position_embeddings`) is read from the dict, else from the RoPE config's
//!   own `original_max_position_embeddings` (Phi-3 keeps it beside, not inside, `rope_scaling`),
//!   else it is `max_position_embeddings`.
//! - Legacy names: `type` is accepted for `rope_type`, and `su` for `longrope`.
//! - yarn's `beta_fast`/`beta_slow` default to 32/1; `mscale`/`mscale_all_dim` are used only when
//!   both are present and non-zero (as HF's truthiness test).
//! - dynamic NTK uses `L = max_position_embeddings` and `n` = the call's largest position + 1
//!   (or the config's `seq_len`); it leaves frequencies unchanged when `n <= L`.

pub mod cpu;
pub mod cuda;
#[cfg(feature = "oracle")]
pub mod oracle;

use crate::error::{Error, Result};
use crate::tensor::{DType, TensorInfo};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::f64::consts::PI;

pub use cpu::{rope_cpu, rope_cpu_inplace};

fn default_theta() -> f64 {
    10000.0
}

/// A RoPE configuration (spec section 2), as JSON in case files and as a Rust struct.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RopeConfig {
    /// Rotated dims `d` (even, `<= D`); dims `>= d` pass through.
    pub rotary_dim: usize,
    /// Base `b` of the frequencies `t_i = b^(-2i/d)`.
    #[serde(default = "default_theta")]
    pub theta: f64,
    /// GPT-J pairs `(2i, 2i+1)` when true; NeoX pairs `(i, i + d/2)` when false.
    #[serde(default)]
    pub interleaved: bool,
    /// `L`: the model's `max_position_embeddings`.
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    /// `L0` when the model keeps it outside `rope_scaling` (Phi-3).
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
    /// The model's `rope_scaling` dict, verbatim (null or absent: plain RoPE).
    #[serde(default)]
    pub scaling: Option<Value>,
    /// Overrides `n` (sequence length) for dynamic and longrope.
    #[serde(default)]
    pub seq_len: Option<usize>,
}

/// The parsed `rope_scaling` dict.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    Default,
    Linear { factor: f64 },
    Dynamic { factor: f64 },
    Yarn {
        factor: f64,
        original_max: f64,
        beta_fast: f64,
        beta_slow: f64,
        truncate: bool,
        attention_factor: Option<f64>,
        mscale: Option<f64>,
        mscale_all_dim: Option<f64>,
    },
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max: f64 },
    LongRope { factor: f64, original_max: f64, short_factor: Vec<f64>, long_factor: Vec<f64>, attention_factor: Option<f64> },
}

/// Frequencies and attention factor for one call: everything a kernel needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedRope {
    pub rotary_dim: usize,
    pub interleaved: bool,
    /// `f_i`, `i in [0, rotary_dim / 2)`.
    pub inv_freq: Vec<f64>,
    pub attention_factor: f64,
}

fn num(dict: &serde_json::Map<String, Value>, key: &str) -> Result<Option<f64>> {
    match dict.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or_else(|| Error::config(format!("rope.scaling.{key}"), format!("expected a finite number, got {v}"))),
    }
}

fn req(dict: &serde_json::Map<String, Value>, key: &str, rope_type: &str) -> Result<f64> {
    num(dict, key)?.ok_or_else(|| Error::config(format!("rope.scaling.{key}"), format!("required for rope_type `{rope_type}`")))
}

fn positive(key: &str, x: f64) -> Result<f64> {
    if x > 0.0 && x.is_finite() {
        Ok(x)
    } else {
        Err(Error::config(format!("rope.scaling.{key}"), format!("must be a positive finite number, got {x}")))
    }
}

fn factor_list(dict: &serde_json::Map<String, Value>, key: &str, half: usize) -> Result<Vec<f64>> {
    let arr = dict
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| Error::config(format!("rope.scaling.{key}"), "required list of numbers for rope_type `longrope`"))?;
    if arr.len() != half {
        return Err(Error::config(
            format!("rope.scaling.{key}"),
            format!("expected rotary_dim / 2 = {half} entries, got {}", arr.len()),
        ));
    }
    arr.iter()
        .map(|v| {
            v.as_f64()
                .filter(|x| *x > 0.0 && x.is_finite())
                .ok_or_else(|| Error::config(format!("rope.scaling.{key}"), format!("entries must be positive numbers, got {v}")))
        })
        .collect()
}

impl RopeConfig {
    /// Plain RoPE over `rotary_dim` dims with base `theta`.
    pub fn new(rotary_dim: usize, theta: f64) -> RopeConfig {
        RopeConfig {
            rotary_dim,
            theta,
            interleaved: false,
            max_position_embeddings: None,
            original_max_position_embeddings: None,
            scaling: None,
            seq_len: None,
        }
    }

    fn max_pos(&self, rope_type: &str) -> Result<f64> {
        self.max_position_embeddings
            .map(|l| l as f64)
            .ok_or_else(|| Error::config("rope.max_position_embeddings", format!("required for rope_type `{rope_type}`")))
    }

    /// Parse the scaling dict.
    pub fn scaling(&self) -> Result<RopeScaling> {
        let dict = match &self.scaling {
            None | Some(Value::Null) => return Ok(RopeScaling::Default),
            Some(Value::Object(m)) => m,
            Some(other) => return Err(Error::config("rope.scaling", format!("expected an object or null, got {other}"))),
        };
        let rope_type = dict
            .get("rope_type")
            .or_else(|| dict.get("type"))
            .and_then(Value::as_str)
            .ok_or_else(|| Error::config("rope.scaling.rope_type", "missing (neither `rope_type` nor `type` is a string)"))?;
        let half = self.rotary_dim / 2;
        let original_max = |rt: &str| -> Result<f64> {
            match num(dict, "original_max_position_embeddings")? {
                Some(v) => positive("original_max_position_embeddings", v),
                None => match self.original_max_position_embeddings {
                    Some(v) => positive("original_max_position_embeddings", v as f64),
                    None => self.max_pos(rt),
                },
            }
        };
        Ok(match rope_type {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear { factor: positive("factor", req(dict, "factor", rope_type)?)? },
            "dynamic" => {
                let factor = positive("factor", req(dict, "factor", rope_type)?)?;
                self.max_pos(rope_type)?;
                RopeScaling::Dynamic { factor }
            }
            "yarn" => {
                let original_max = original_max(rope_type)?;
                let factor = match num(dict, "factor")? {
                    Some(f) => positive("factor", f)?,
                    None => self.max_pos(rope_type)? / original_max,
                };
                RopeScaling::Yarn {
                    factor,
                    original_max,
                    beta_fast: num(dict, "beta_fast")?.unwrap_or(32.0),
                    beta_slow: num(dict, "beta_slow")?.unwrap_or(1.0),
                    truncate: match dict.get("truncate") {
                        None | Some(Value::Null) => true,
                        Some(Value::Bool(b)) => *b,
                        Some(v) => return Err(Error::config("rope.scaling.truncate", format!("expected a boolean, got {v}"))),
                    },
                    attention_factor: num(dict, "attention_factor")?,
                    mscale: num(dict, "mscale")?,
                    mscale_all_dim: num(dict, "mscale_all_dim")?,
                }
            }
            "llama3" => {
                let low = positive("low_freq_factor", req(dict, "low_freq_factor", rope_type)?)?;
                let high = positive("high_freq_factor", req(dict, "high_freq_factor", rope_type)?)?;
                if high <= low {
                    return Err(Error::config("rope.scaling.high_freq_factor", format!("must exceed low_freq_factor ({low}), got {high}")));
                }
                RopeScaling::Llama3 {
                    factor: positive("factor", req(dict, "factor", rope_type)?)?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max: positive("original_max_position_embeddings", req(dict, "original_max_position_embeddings", rope_type)?)?,
                }
            }
            "longrope" | "su" => {
                let original_max = original_max(rope_type)?;
                let factor = match num(dict, "factor")? {
                    Some(f) => positive("factor", f)?,
                    None => self.max_pos(rope_type)? / original_max,
                };
                RopeScaling::LongRope {
                    factor,
                    original_max,
                    short_factor: factor_list(dict, "short_factor", half)?,
                    long_factor: factor_list(dict, "long_factor", half)?,
                    attention_factor: num(dict, "attention_factor")?,
                }
            }
            other => {
                return Err(Error::config(
                    "rope.scaling.rope_type",
                    format!("unknown `{other}` (known: default, linear, dynamic, yarn, llama3, longrope)"),
                ))
            }
        })
    }

    /// Check the config against a head dim `head_dim` (the tensor's last dimension).
    pub fn validate(&self, head_dim: usize) -> Result<()> {
        if self.rotary_dim == 0 || self.rotary_dim % 2 != 0 {
            return Err(Error::config("rope.rotary_dim", format!("must be even and positive, got {}", self.rotary_dim)));
        }
        if self.rotary_dim > head_dim {
            return Err(Error::config("rope.rotary_dim", format!("{} exceeds the head dim {head_dim}", self.rotary_dim)));
        }
        if !(self.theta > 1.0 && self.theta.is_finite()) {
            return Err(Error::config("rope.theta", format!("must be a finite number > 1, got {}", self.theta)));
        }
        self.scaling()?;
        Ok(())
    }

    /// Frequencies and attention factor for a call whose sequence length (largest position + 1)
    /// is `n`; the config's `seq_len`, when set, takes precedence.
    pub fn resolve(&self, n: usize) -> Result<ResolvedRope> {
        if self.rotary_dim == 0 || self.rotary_dim % 2 != 0 {
            return Err(Error::config("rope.rotary_dim", format!("must be even and positive, got {}", self.rotary_dim)));
        }
        let n = self.seq_len.unwrap_or(n) as f64;
        let d = self.rotary_dim as f64;
        let b = self.theta;
        let half = self.rotary_dim / 2;
        let base: Vec<f64> = (0..half).map(|i| b.powf(-2.0 * i as f64 / d)).collect();
        let (inv_freq, attention_factor) = match self.scaling()? {
            RopeScaling::Default => (base, 1.0),
            RopeScaling::Linear { factor } => (base.iter().map(|t| t / factor).collect(), 1.0),
            RopeScaling::Dynamic { factor } => {
                let l = self.max_pos("dynamic")?;
                if n > l {
                    let b2 = b * ((factor * n / l) - (factor - 1.0)).powf(d / (d - 2.0));
                    ((0..half).map(|i| b2.powf(-2.0 * i as f64 / d)).collect(), 1.0)
                } else {
                    (base, 1.0)
                }
            }
            RopeScaling::Yarn { factor, original_max, beta_fast, beta_slow, truncate, attention_factor, mscale, mscale_all_dim } => {
                let c = |r: f64| d * (original_max / (2.0 * PI * r)).ln() / (2.0 * b.ln());
                let (mut lo, mut hi) = (c(beta_fast), c(beta_slow));
                if truncate {
                    lo = lo.floor();
                    hi = hi.ceil();
                }
                lo = lo.max(0.0);
                hi = hi.min(d - 1.0);
                if lo == hi {
                    hi += 0.001;
                }
                let f = base
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let ramp = ((i as f64 - lo) / (hi - lo)).clamp(0.0, 1.0);
                        (t / factor) * ramp + t * (1.0 - ramp)
                    })
                    .collect();
                let g = |s: f64, m: f64| if s <= 1.0 { 1.0 } else { 0.1 * m * s.ln() + 1.0 };
                let a = match (attention_factor, mscale, mscale_all_dim) {
                    (Some(a), _, _) => a,
                    (None, Some(m), Some(ma)) if m != 0.0 && ma != 0.0 => g(factor, m) / g(factor, ma),
                    _ => g(factor, 1.0),
                };
                (f, a)
            }
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max } => {
                let f = base
                    .iter()
                    .map(|&t| {
                        let w = 2.0 * PI / t;
                        if w < original_max / high_freq_factor {
                            t
                        } else if w > original_max / low_freq_factor {
                            t / factor
                        } else {
                            let k = (original_max / w - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - k) * t / factor + k * t
                        }
                    })
                    .collect();
                (f, 1.0)
            }
            RopeScaling::LongRope { factor, original_max, short_factor, long_factor, attention_factor } => {
                let ext = if n > original_max { &long_factor } else { &short_factor };
                let f = base.iter().zip(ext).map(|(t, e)| t / e).collect();
                let a = attention_factor.unwrap_or_else(|| {
                    if factor <= 1.0 {
                        1.0
                    } else {
                        (1.0 + factor.ln() / original_max.ln()).sqrt()
                    }
                });
                (f, a)
            }
        };
        Ok(ResolvedRope { rotary_dim: self.rotary_dim, interleaved: self.interleaved, inv_freq, attention_factor })
    }
}

impl ResolvedRope {
    /// `(cos, sin)` of the angle `pos * f_i`, formed and evaluated in f64.
    pub fn cos_sin(&self, pos: i64, i: usize) -> (f64, f64) {
        let (s, c) = (pos as f64 * self.inv_freq[i]).sin_cos();
        (c, s)
    }

    /// Indices of pair `i`: NeoX `(i, i + d/2)`, GPT-J `(2i, 2i + 1)`.
    pub fn pair(&self, i: usize) -> (usize, usize) {
        if self.interleaved {
            (2 * i, 2 * i + 1)
        } else {
            (i, i + self.rotary_dim / 2)
        }
    }

    /// Rotate one head vector in place (`x.len() >= rotary_dim`), with exact f64 angles and
    /// the rotation evaluated in f64 before the one rounding to f32.
    pub fn rotate(&self, x: &mut [f32], pos: i64) {
        let a = self.attention_factor;
        for i in 0..self.rotary_dim / 2 {
            let (c, s) = self.cos_sin(pos, i);
            let (i1, i2) = self.pair(i);
            let (x1, x2) = (x[i1] as f64, x[i2] as f64);
            x[i1] = (a * (x1 * c - x2 * s)) as f32;
            x[i2] = (a * (x2 * c + x1 * s)) as f32;
        }
    }

    /// The two-level cos/sin tables of `AkRopeTable` (kernels/params.h), computed in f64 and
    /// rounded once to f32: `lo[j] = cs(j f)`, `hi[m] = cs(m LO f)`, enough rows of `hi` that
    /// positions `0..=max_pos` (and at least `0..2^20`) are covered.
    pub fn host_tables(&self, max_pos: usize) -> (Vec<f32>, Vec<f32>, usize) {
        let lo_rows = crate::runtime::params::AK_ROPE_LO_SIZE as usize;
        let n_hi = (max_pos / lo_rows + 1).max(lo_rows);
        let half = self.rotary_dim / 2;
        let build = |rows: usize, step: f64| {
            let mut t = Vec::with_capacity(rows * half * 2);
            for r in 0..rows {
                for &f in &self.inv_freq {
                    let (s, c) = (r as f64 * step * f).sin_cos();
                    t.push(c as f32);
                    t.push(s as f32);
                }
            }
            t
        };
        (build(lo_rows, 1.0), build(n_hi, lo_rows as f64), n_hi)
    }
}

// ------------------------------------------------------------------------- the `rope` op

/// Config of the standalone `rope` op (case-file keys `rope`, `position_offset`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RopeOpConfig {
    pub rope: RopeConfig,
    /// Position of row 0 of each sequence when `position_ids` is absent.
    #[serde(default)]
    pub position_offset: i64,
}

/// Inputs of the standalone op: `x [B, S, H, D]`, or `[total, H, D]` (then `cu_seqlens` or
/// `position_ids [total]` gives positions). Index data is host-side so it can be validated.
pub struct RopeArgs<'a, T: TensorInfo> {
    pub x: &'a T,
    pub position_ids: Option<&'a [i32]>,
    pub cu_seqlens: Option<&'a [i32]>,
}

/// Everything resolved for one call.
#[derive(Clone, Debug)]
pub struct RopePlan {
    pub rows: usize,
    /// Rows per sequence for the `offset + row % seqlen` rule (rank-4 input), else `rows`.
    pub seqlen: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub dtype: DType,
    /// Position of every row, computed on the host (validated).
    pub positions: Vec<i64>,
    pub max_position: usize,
    pub resolved: ResolvedRope,
}

/// Validate a standalone rope call and resolve frequencies.
pub fn plan_rope<T: TensorInfo>(cfg: &RopeOpConfig, args: &RopeArgs<'_, T>) -> Result<RopePlan> {
    let x = args.x;
    crate::tensor::expect_dtype("x", x, &[DType::F32, DType::F16, DType::BF16])?;
    let s = x.shape();
    if !(3..=4).contains(&s.len()) {
        return Err(Error::shape("x", "[B, S, H, D] or [total, H, D]", s));
    }
    // Element and byte counts first: nothing below may allocate in proportion to a bogus shape.
    let numel = crate::tensor::checked_numel("x", s)?;
    numel.checked_mul(x.dtype().size()).ok_or_else(|| Error::invalid("x", format!("byte size of {s:?} overflows")))?;
    let too_big = || Error::invalid("x", format!("shape {s:?} exceeds the int32 index range"));
    let (rows, seqlen, heads, head_dim) = match s.len() {
        4 => (s[0].checked_mul(s[1]).ok_or_else(too_big)?, s[1], s[2], s[3]),
        _ => (s[0], s[0], s[1], s[2]),
    };
    cfg.rope.validate(head_dim)?;
    let row_len = heads.checked_mul(head_dim).ok_or_else(too_big)?;
    if rows > i32::MAX as usize || row_len > i32::MAX as usize {
        return Err(too_big());
    }
    let positions: Vec<i64> = match (args.position_ids, args.cu_seqlens) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid("position_ids", "give either position_ids or cu_seqlens, not both"));
        }
        (Some(ids), None) => {
            if ids.len() != rows {
                let want = if s.len() == 4 { format!("[{}, {}]", s[0], s[1]) } else { format!("[{rows}]") };
                return Err(Error::shape("position_ids", want, &[ids.len()]));
            }
            if let Some((i, p)) = ids.iter().enumerate().find(|(_, &p)| p < 0) {
                return Err(Error::invalid("position_ids", format!("entry {i} is negative ({p})")));
            }
            ids.iter().map(|&p| p as i64).collect()
        }
        (None, Some(cu)) => {
            if s.len() != 3 {
                return Err(Error::invalid("cu_seqlens", "only with x of shape [total, H, D]"));
            }
            let cu = crate::tensor::check_cu_seqlens("cu_seqlens", cu, rows)?;
            let mut p = vec![0i64; if numel == 0 { 0 } else { rows }];
            for w in cu.windows(2).filter(|_| numel > 0) {
                for (r, slot) in p[w[0]..w[1]].iter_mut().enumerate() {
                    *slot = cfg.position_offset + r as i64;
                }
            }
            p
        }
        // An empty tensor (no heads) has nothing to rotate: no per-row positions either.
        (None, None) if numel == 0 => Vec::new(),
        (None, None) => (0..rows).map(|r| cfg.position_offset + (r % seqlen.max(1)) as i64).collect(),
    };
    if cfg.position_offset < 0 {
        return Err(Error::invalid("position_offset", format!("must be >= 0, got {}", cfg.position_offset)));
    }
    let max_position = positions.iter().copied().max().unwrap_or(0);
    if max_position > i32::MAX as i64 - 1 {
        return Err(Error::invalid("position_offset", format!("positions reach {max_position}, beyond int32")));
    }
    let resolved = cfg.rope.resolve(max_position as usize + 1)?;
    Ok(RopePlan {
        rows,
        seqlen,
        heads,
        head_dim,
        dtype: x.dtype(),
        positions,
        max_position: max_position as usize,
        resolved,
    })
}
