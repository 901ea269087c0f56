//! CPU paths of decode, append and merge_states: the references the GPU is tested against.
//!
//! Decode gathers each sequence's visible keys out of the cache (contiguous or paged) into a
//! packed varlen batch in f32 and runs [`attention_cpu`] on it, so decode is, by construction,
//! the plain attention op on the gathered cache.

use super::{plan, plan_append, plan_merge, CacheLayout, DecodeOptions, DecodePlan, KvCacheMut, KvCacheRef};
use crate::attention::{attention_cpu, AttentionArgs, AttentionConfig, AttentionOutput};
use crate::error::Result;
use crate::rope::RopeConfig;
use crate::tensor::{f32_data, DType, Storage, Tensor, TensorInfo};
use half::{bf16, f16};

/// Cache row of key `j` of sequence `b`: `(block, row)` (contiguous: block = b).
pub(crate) fn key_slot(layout: &CacheLayout, table: Option<(&[i32], usize)>, b: usize, j: usize) -> (usize, usize) {
    match (layout, table) {
        (CacheLayout::Paged { block_size, .. }, Some((t, max_blocks))) => {
            (t[b * max_blocks + j / block_size] as usize, j % block_size)
        }
        _ => (b, j),
    }
}

/// Gather the first `seqlens[b]` keys of every sequence: `[total_k, H, D]` f32 row-major.
fn gather(plan: &DecodePlan, cache: &KvCacheRef<'_, Tensor>, data: &[f32], width: usize) -> Vec<f32> {
    let h = plan.heads_kv;
    let rows_per_block = match plan.layout {
        CacheLayout::Contiguous { s_max } => s_max,
        CacheLayout::Paged { block_size, .. } => block_size,
    };
    let total: usize = plan.seqlens.iter().sum();
    let mut out = Vec::with_capacity(total * h * width);
    for (b, &sk) in plan.seqlens.iter().enumerate() {
        for j in 0..sk {
            let (blk, row) = key_slot(&plan.layout, cache.block_table(), b, j);
            let start = (blk * rows_per_block + row) * h * width;
            out.extend_from_slice(&data[start..start + h * width]);
        }
    }
    out
}

/// Decode on the CPU: validates through [`plan`], then attention over the gathered cache.
/// `opts.split` is ignored (the CPU does not split).
pub fn decode_cpu(
    cfg: &AttentionConfig,
    q: &Tensor,
    cache: &KvCacheRef<'_, Tensor>,
    alibi_slopes: Option<&Tensor>,
    opts: &DecodeOptions,
) -> Result<AttentionOutput<Tensor>> {
    let p = plan(cfg, q, cache, alibi_slopes, opts)?;
    if let Some(a) = alibi_slopes {
        f32_data("alibi_slopes", a)?;
    }
    let (b, sq, hq, hkv, d, dv) = (p.batch, p.seqlen_q, p.heads_q, p.heads_kv, p.head_dim, p.head_dim_v);
    if b == 0 {
        return Ok(AttentionOutput {
            o: Tensor::zeros(p.dtype, &p.o_shape())?,
            lse: Tensor::zeros(DType::F32, &p.lse_shape())?,
        });
    }
    let total_k: usize = p.seqlens.iter().sum();
    let k = gather(&p, cache, &cache.k().to_f32_vec(), d);
    let v = gather(&p, cache, &cache.v().to_f32_vec(), dv);
    let mut qf = q.to_f32_vec();
    let mut acfg = cfg.clone();
    if let (Some(r), false) = (&p.rope, p.rope_keys) {
        // Keys in the cache are already rotated: rotate q here, at P(i), and attend without RoPE.
        for (bi, &sk) in p.seqlens.iter().enumerate() {
            for i in 0..sq {
                let pos = i as i64 + sk as i64 - sq as i64;
                for h in 0..hq {
                    let start = ((bi * sq + i) * hq + h) * d;
                    r.rotate(&mut qf[start..start + d], pos);
                }
            }
        }
        acfg.rope = None;
    }
    let qt = Tensor::from_f32(DType::F32, &[b * sq, hq, d], &qf)?;
    let kt = Tensor::from_f32(DType::F32, &[total_k, hkv, d], &k)?;
    let vt = Tensor::from_f32(DType::F32, &[total_k, hkv, dv], &v)?;
    let cu_q: Vec<i32> = (0..=b).map(|i| (i * sq) as i32).collect();
    let mut cu_k = vec![0i32];
    for &s in &p.seqlens {
        cu_k.push(cu_k.last().copied().unwrap_or(0) + s as i32);
    }
    let mut args = AttentionArgs::new(&qt, &kt, &vt).with_varlen(&cu_q, &cu_k);
    if let Some(a) = alibi_slopes {
        args = args.with_alibi(a);
    }
    let out = attention_cpu(&acfg, &args)?;
    // o: [total_q, Hq, Dv] is already [B, Sq, Hq, Dv]; lse: [Hq, total_q] -> [B, Hq, Sq].
    let o = out.o.to_f32_vec();
    let lse_v = out.lse.to_f32_vec();
    let mut lse = vec![0f32; b * hq * sq];
    for bi in 0..b {
        for h in 0..hq {
            for i in 0..sq {
                lse[(bi * hq + h) * sq + i] = lse_v[h * (b * sq) + bi * sq + i];
            }
        }
    }
    Ok(AttentionOutput {
        o: Tensor::from_f32(p.dtype, &p.o_shape(), &o)?,
        lse: Tensor::from_f32(DType::F32, &p.lse_shape(), &lse)?,
    })
}

/// Overwrite `values.len()` elements of `t` starting at element `start`, rounding once to its dtype.
fn write_f32(t: &mut Tensor, start: usize, values: &[f32]) -> Result<()> {
    let shape = t.shape().to_vec();
    let taken = std::mem::replace(t, Tensor::zeros(DType::F32, &[0])?);
    let mut storage = taken.into_storage();
    let range = start..start + values.len();
    match &mut storage {
        Storage::F32(v) => v[range].copy_from_slice(values),
        Storage::F16(v) => v[range].iter_mut().zip(values).for_each(|(o, &x)| *o = f16::from_f32(x)),
        Storage::BF16(v) => v[range].iter_mut().zip(values).for_each(|(o, &x)| *o = bf16::from_f32(x)),
        Storage::I32(_) => unreachable!("validated: caches are float tensors"),
    }
    *t = Tensor::from_storage(&shape, storage)?;
    Ok(())
}

/// Append `k_new, v_new [B, Sq_new, Hkv, D|Dv]` at rows `cache_seqlens[b] + t` of the cache,
/// rotating K at those positions when `rope` is given. Returns the new lengths
/// (`cache_seqlens[b] + Sq_new`); the caller stores them. Nothing is written on error.
pub fn append_kv_cpu(
    cache: &mut KvCacheMut<'_, Tensor>,
    k_new: &Tensor,
    v_new: &Tensor,
    rope: Option<&RopeConfig>,
) -> Result<Vec<i32>> {
    let p = plan_append(&cache.as_ref(), k_new, v_new, rope)?;
    let table: Option<(Vec<i32>, usize)> = cache.as_ref().block_table().map(|(t, m)| (t.to_vec(), m));
    let rows_per_block = match p.layout {
        CacheLayout::Contiguous { s_max } => s_max,
        CacheLayout::Paged { block_size, .. } => block_size,
    };
    let (h, d, dv) = (p.heads_kv, p.head_dim, p.head_dim_v);
    let kn = k_new.to_f32_vec();
    let vn = v_new.to_f32_vec();
    let mut k_rows = Vec::with_capacity(p.batch * p.seqlen_new);
    for b in 0..p.batch {
        for t in 0..p.seqlen_new {
            let pos = p.old_seqlens[b] + t;
            let (blk, row) = key_slot(&p.layout, table.as_ref().map(|(t, m)| (t.as_slice(), *m)), b, pos);
            let src = (b * p.seqlen_new + t) * h;
            let mut krow = kn[src * d..(src + h) * d].to_vec();
            if let Some(r) = &p.rope {
                for hh in 0..h {
                    r.rotate(&mut krow[hh * d..(hh + 1) * d], pos as i64);
                }
            }
            k_rows.push(((blk * rows_per_block + row) * h, krow, src));
        }
    }
    let (kc, vc) = cache.kv_mut();
    for (dst, krow, src) in k_rows {
        write_f32(kc, dst * d, &krow)?;
        write_f32(vc, dst * dv, &vn[src * dv..(src + h) * dv])?;
    }
    Ok(p.old_seqlens.iter().map(|&s| (s + p.seqlen_new) as i32).collect())
}

/// Merge two states in f32 (see docs/merge_states.md). `o` in the inputs' dtype, `lse` f32.
pub(crate) fn merge_one(oa: &[f32], la: f32, ob: &[f32], lb: f32, out: &mut [f32]) -> f32 {
    let m = la.max(lb);
    if m == f32::NEG_INFINITY {
        out.fill(0.0);
        return f32::NEG_INFINITY;
    }
    let (wa, wb) = ((la - m).exp(), (lb - m).exp());
    let inv = 1.0 / (wa + wb);
    for ((o, &a), &b) in out.iter_mut().zip(oa).zip(ob) {
        let mut acc = 0.0f32;
        if wa > 0.0 {
            acc = wa * a;
        }
        if wb > 0.0 {
            acc = wb.mul_add(b, acc);
        }
        *o = acc * inv;
    }
    m + wa.min(wb).ln_1p()
}

/// `merge_states` on the CPU: `(o, lse)` over the union of the two key sets.
pub fn merge_states_cpu(o_a: &Tensor, lse_a: &Tensor, o_b: &Tensor, lse_b: &Tensor) -> Result<(Tensor, Tensor)> {
    let (b, s, h, dv, _varlen) = plan_merge(o_a, lse_a, o_b, lse_b)?;
    let (oa, ob) = (o_a.to_f32_vec(), o_b.to_f32_vec());
    let (la, lb) = (f32_data("lse_a", lse_a)?, f32_data("lse_b", lse_b)?);
    let mut o = vec![0f32; oa.len()];
    let mut lse = vec![0f32; la.len()];
    if la.is_empty() {
        // No rows (a zero dim, possibly next to a huge one): nothing to loop over.
        return Ok((
            Tensor::from_f32(o_a.dtype(), o_a.shape(), &o)?,
            Tensor::from_f32(DType::F32, lse_a.shape(), &lse)?,
        ));
    }
    for bi in 0..b {
        for si in 0..s {
            for hi in 0..h {
                let row = ((bi * s + si) * h + hi) * dv;
                let li = (bi * h + hi) * s + si;
                lse[li] = merge_one(&oa[row..row + dv], la[li], &ob[row..row + dv], lb[li], &mut o[row..row + dv]);
            }
        }
    }
    Ok((Tensor::from_f32(o_a.dtype(), o_a.shape(), &o)?, Tensor::from_f32(DType::F32, lse_a.shape(), &lse)?))
}
