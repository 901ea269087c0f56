//! CPU backend of attention: a tiled online-softmax (flash-style) computation.
//!
//! Inputs are widened to f32 once (and RoPE applied once per q and k head vector). Work is split
//! into tasks of (sequence, lane, block of [`BLOCK_Q`] query rows), run in parallel with rayon.
//! A task walks the key blocks of [`BLOCK_K`] rows that its rows may see (blocks outside every
//! row's causal / window range are skipped), keeps a running max `m`, sum `l` and output
//! accumulator per row in f32, and never holds more than one block of scores: memory per task is
//! `O(BLOCK_Q * (BLOCK_K + Dv))`, never `Sq x Sk`. Within a block the exponentials and the
//! `P V` products are summed into a block partial first, then merged into the running sums, so
//! long sequences accumulate rounding error per block, not per key.
//!
//! A "lane" is one softmax map: a query head slice, a key head slice and a value head slice of
//! the token rows plus an ALiBi slope. Plain attention has one lane per query head; differential
//! attention uses two per output head and combines them (see `crate::diff_attention`).

use super::{plan, AttentionArgs, AttentionConfig, AttentionOutput, AttentionPlan};
use crate::error::Result;
use crate::tensor::{f32_data, Tensor};
use rayon::prelude::*;

/// Query rows per task.
pub const BLOCK_Q: usize = 64;
/// Key rows per tile.
pub const BLOCK_K: usize = 64;

/// One softmax map: element offsets of its q, k and v head vectors within a token row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lane {
    pub q_off: usize,
    pub k_off: usize,
    pub v_off: usize,
    /// ALiBi slope `m_h`, if ALiBi is on.
    pub slope: Option<f32>,
}

/// Token-major f32 inputs: row `t` of q is `q[t * q_row ..][.. q_row]`, and so on.
pub(crate) struct Rows<'a> {
    pub q: &'a [f32],
    pub q_row: usize,
    pub k: &'a [f32],
    pub k_row: usize,
    pub v: &'a [f32],
    pub v_row: usize,
}

/// Normalised outputs of every lane: `o [total_q, lanes, Dv]` and `lse [total_q, lanes]`.
pub(crate) struct LaneOutputs {
    pub o: Vec<f32>,
    pub lse: Vec<f32>,
}

/// Widen a tensor to f32 and, when `rope` is set, rotate each of its `heads` head vectors of
/// `head_dim` in every token row at that row's position.
pub(crate) fn load_rows(t: &Tensor, heads: usize, head_dim: usize, rope: Option<(&crate::rope::ResolvedRope, &[i64])>) -> Vec<f32> {
    let mut x = t.to_f32_vec();
    if let Some((r, positions)) = rope {
        let row = heads * head_dim;
        if row > 0 {
            x.par_chunks_mut(row).zip(positions.par_iter()).for_each(|(xr, &pos)| {
                for hv in xr.chunks_exact_mut(head_dim) {
                    r.rotate(hv, pos);
                }
            });
        }
    }
    x
}

/// RoPE positions of every query row and every key row (position ids, or `P(i)` and `j`).
pub(crate) fn rope_positions(plan: &AttentionPlan, ids_q: Option<&[i32]>, ids_k: Option<&[i32]>) -> (Vec<i64>, Vec<i64>) {
    let mut pq = vec![0i64; plan.total_q];
    let mut pk = vec![0i64; plan.total_k];
    for (n, s) in plan.seqs.iter().enumerate() {
        for i in 0..s.q_len {
            let t = s.q_start + i;
            pq[t] = ids_q.map_or_else(|| plan.key_position(n, i), |ids| ids[t] as i64);
        }
        for j in 0..s.k_len {
            let t = s.k_start + j;
            pk[t] = ids_k.map_or(j as i64, |ids| ids[t] as i64);
        }
    }
    (pq, pk)
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let split = n - n % 8;
    let mut acc = [0f32; 8];
    for (x, y) in a[..split].chunks_exact(8).zip(b[..split].chunks_exact(8)) {
        for t in 0..8 {
            acc[t] += x[t] * y[t];
        }
    }
    let mut tail = 0f32;
    for (x, y) in a[split..].iter().zip(&b[split..]) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[inline]
fn axpy(out: &mut [f32], p: f32, x: &[f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o += p * v;
    }
}

/// Result of one task.
struct TaskOut {
    seq: usize,
    lane: usize,
    row0: usize,
    /// `[rows, Dv]`, normalised.
    o: Vec<f32>,
    lse: Vec<f32>,
}

/// One task: query rows `row0 .. row0 + rows` of sequence `n`, one lane.
fn run_task(plan: &AttentionPlan, x: &Rows<'_>, lane: &Lane, n: usize, row0: usize, rows: usize) -> (Vec<f32>, Vec<f32>) {
    let (d, dv) = (plan.head_dim, plan.head_dim_v);
    let seq = plan.seqs[n];
    let scale = plan.scale;
    let cap = plan.softcap;
    let ranges: Vec<(usize, usize)> = (0..rows).map(|r| plan.key_range(n, row0 + r)).collect();
    let mut m = vec![f32::NEG_INFINITY; rows];
    let mut l = vec![0f32; rows];
    let mut acc = vec![0f32; rows * dv];
    let mut scores = vec![0f32; BLOCK_K];
    let mut part = vec![0f32; dv];

    // Key rows any row of the block may see (lo and hi are non-decreasing in the row).
    let k_first = ranges.iter().map(|r| r.0).min().unwrap_or(0);
    let k_end = ranges.iter().map(|r| r.1).max().unwrap_or(0);
    let mut j0 = k_first - k_first % BLOCK_K;
    while j0 < k_end {
        let j1 = (j0 + BLOCK_K).min(seq.k_len);
        for r in 0..rows {
            let (lo, hi) = ranges[r];
            let (jlo, jhi) = (lo.max(j0), hi.min(j1));
            if jlo >= jhi {
                continue;
            }
            let t = seq.q_start + row0 + r;
            let qv = &x.q[t * x.q_row + lane.q_off..][..d];
            let p_i = plan.key_position(n, row0 + r);
            let s = &mut scores[..jhi - jlo];
            let mut block_max = f32::NEG_INFINITY;
            for (c, j) in (jlo..jhi).enumerate() {
                let kv = &x.k[(seq.k_start + j) * x.k_row + lane.k_off..][..d];
                let mut sc = scale * dot(qv, kv);
                if cap > 0.0 {
                    sc = cap * (sc / cap).tanh();
                }
                if let Some(slope) = lane.slope {
                    sc -= slope * (p_i - j as i64).unsigned_abs() as f32;
                }
                s[c] = sc;
                block_max = block_max.max(sc);
            }
            let m_new = m[r].max(block_max);
            if m_new == f32::NEG_INFINITY {
                continue; // every score is -inf: nothing to add
            }
            part.fill(0.0);
            let mut psum = 0f32;
            for (c, j) in (jlo..jhi).enumerate() {
                let p = (s[c] - m_new).exp();
                psum += p;
                axpy(&mut part, p, &x.v[(seq.k_start + j) * x.v_row + lane.v_off..][..dv]);
            }
            let o = &mut acc[r * dv..][..dv];
            if m[r] == m_new {
                l[r] += psum;
                for (a, &b) in o.iter_mut().zip(&part) {
                    *a += b;
                }
            } else {
                let corr = (m[r] - m_new).exp(); // 0 on the first block
                l[r] = l[r] * corr + psum;
                for (a, &b) in o.iter_mut().zip(&part) {
                    *a = *a * corr + b;
                }
                m[r] = m_new;
            }
        }
        j0 = j1;
    }

    let mut lse = vec![f32::NEG_INFINITY; rows];
    for r in 0..rows {
        let o = &mut acc[r * dv..][..dv];
        if l[r] > 0.0 {
            let inv = 1.0 / l[r];
            o.iter_mut().for_each(|a| *a *= inv);
            lse[r] = m[r] + l[r].ln();
        } else {
            o.fill(0.0); // fully masked row
        }
    }
    (acc, lse)
}

/// Run every lane over every sequence; outputs token-major (`o [total_q, lanes, Dv]`,
/// `lse [total_q, lanes]`).
pub(crate) fn attend_lanes(plan: &AttentionPlan, x: &Rows<'_>, lanes: &[Lane]) -> LaneOutputs {
    let dv = plan.head_dim_v;
    let nl = lanes.len();
    let mut tasks = Vec::new();
    for (n, s) in plan.seqs.iter().enumerate() {
        for lane in 0..nl {
            for row0 in (0..s.q_len).step_by(BLOCK_Q) {
                tasks.push((n, lane, row0));
            }
        }
    }
    let results: Vec<TaskOut> = tasks
        .into_par_iter()
        .map(|(n, lane, row0)| {
            let rows = BLOCK_Q.min(plan.seqs[n].q_len - row0);
            let (o, lse) = run_task(plan, x, &lanes[lane], n, row0, rows);
            TaskOut { seq: n, lane, row0, o, lse }
        })
        .collect();
    let mut o = vec![0f32; plan.total_q * nl * dv];
    let mut lse = vec![f32::NEG_INFINITY; plan.total_q * nl];
    for r in results {
        let q0 = plan.seqs[r.seq].q_start + r.row0;
        for (i, (orow, &l)) in r.o.chunks_exact(dv).zip(&r.lse).enumerate() {
            let t = q0 + i;
            o[(t * nl + r.lane) * dv..][..dv].copy_from_slice(orow);
            lse[t * nl + r.lane] = l;
        }
    }
    LaneOutputs { o, lse }
}

/// Attention on the CPU (spec section 1). Validates through [`plan`]; `o` in q's dtype,
/// `lse` f32 (`[B, Hq, Sq]`, varlen `[Hq, total_q]`).
pub fn attention_cpu(cfg: &AttentionConfig, args: &AttentionArgs<'_, Tensor>) -> Result<AttentionOutput<Tensor>> {
    let p = plan(cfg, args)?;
    let slopes = match args.alibi_slopes {
        Some(a) => Some(f32_data("alibi_slopes", a)?.to_vec()),
        None => None,
    };
    let (d, dv, hq, hkv) = (p.head_dim, p.head_dim_v, p.heads_q, p.heads_kv);
    let (pos_q, pos_k) = rope_positions(&p, args.position_ids_q, args.position_ids_k);
    let rope_q = p.rope.as_ref().map(|r| (r, pos_q.as_slice()));
    let rope_k = p.rope.as_ref().map(|r| (r, pos_k.as_slice()));
    let q = load_rows(args.q, hq, d, rope_q);
    let k = load_rows(args.k, hkv, d, rope_k);
    let v = args.v.to_f32_vec();
    let rows = Rows { q: &q, q_row: hq * d, k: &k, k_row: hkv * d, v: &v, v_row: hkv * dv };
    let group = hq / hkv;
    let lanes: Vec<Lane> = (0..hq)
        .map(|h| Lane { q_off: h * d, k_off: (h / group) * d, v_off: (h / group) * dv, slope: slopes.as_ref().map(|s| s[h]) })
        .collect();
    let out = attend_lanes(&p, &rows, &lanes);
    let mut lse = vec![0f32; p.total_q * hq];
    for (n, s) in p.seqs.iter().enumerate() {
        for i in 0..s.q_len {
            for h in 0..hq {
                lse[p.lse_index(n, h, i)] = out.lse[(s.q_start + i) * hq + h];
            }
        }
    }
    Ok(AttentionOutput { o: Tensor::from_f32(p.dtype, &p.o_shape(), &out.o)?, lse: Tensor::from_f32(crate::tensor::DType::F32, &p.lse_shape(), &lse)? })
}
