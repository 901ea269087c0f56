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
use crate::tensor::{f32_data, DType, Tensor};
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

/// Result of one task.
struct TaskOut {
    seq: usize,
    lane: usize,
    row0: usize,
    /// `[rows, Dv]`, normalised.
    o: Vec<f32>,
    lse: Vec<f32>,
}

/// Rows of the register micro-tiles.
const MR: usize = 4;
/// Columns of the register micro-tiles.
const NR: usize = 8;

/// `s[r][j] = sum_c q[r][c] kt[c][j]` for rows `r0 .. r0 + MR` and columns `j0 .. j0 + NR`:
/// a 4 x 8 block of accumulators kept in registers while the head dim streams past.
#[inline(always)]
fn score_tile(q: &[f32], d: usize, kt: &[f32], r0: usize, j0: usize, s: &mut [f32]) {
    let mut acc = [[0f32; NR]; MR];
    let qr: [&[f32]; MR] = std::array::from_fn(|i| &q[(r0 + i) * d..][..d]);
    for (c, krow) in kt.chunks_exact(BLOCK_K).take(d).enumerate() {
        let k = &krow[j0..j0 + NR];
        for i in 0..MR {
            let a = qr[i][c];
            for t in 0..NR {
                acc[i][t] += a * k[t];
            }
        }
    }
    for i in 0..MR {
        s[(r0 + i) * BLOCK_K + j0..][..NR].copy_from_slice(&acc[i]);
    }
}

/// `o[r][c] += sum_j p[r][j] vt[j][c]` for rows `r0 .. r0 + MR`, columns `c0 .. c0 + NR`,
/// keys `0 .. nk`: the block's `P V` is summed in registers, then added once.
#[inline(always)]
fn pv_tile(p: &[f32], vt: &[f32], dv: usize, nk: usize, r0: usize, c0: usize, o: &mut [f32]) {
    let mut acc = [[0f32; NR]; MR];
    for j in 0..nk {
        let v = &vt[j * dv + c0..][..NR];
        for i in 0..MR {
            let w = p[(r0 + i) * BLOCK_K + j];
            for t in 0..NR {
                acc[i][t] += w * v[t];
            }
        }
    }
    for i in 0..MR {
        for (a, b) in o[(r0 + i) * dv + c0..][..NR].iter_mut().zip(&acc[i]) {
            *a += b;
        }
    }
}

/// One task: query rows `row0 .. row0 + rows` of sequence `n`, one lane. Returns the normalised
/// output rows `[rows, Dv]` and their LSE.
fn run_task(plan: &AttentionPlan, x: &Rows<'_>, lane: &Lane, n: usize, row0: usize, rows: usize) -> (Vec<f32>, Vec<f32>) {
    let (d, dv) = (plan.head_dim, plan.head_dim_v);
    let seq = plan.seqs[n];
    let (scale, cap) = (plan.scale, plan.softcap);
    let rows_pad = rows.div_ceil(MR) * MR;
    let ranges: Vec<(usize, usize)> = (0..rows).map(|r| plan.key_range(n, row0 + r)).collect();

    // The task's query rows (zero padding up to a multiple of MR).
    let mut qt = vec![0f32; rows_pad * d];
    for r in 0..rows {
        let t = seq.q_start + row0 + r;
        qt[r * d..][..d].copy_from_slice(&x.q[t * x.q_row + lane.q_off..][..d]);
    }
    let mut kt = vec![0f32; d * BLOCK_K]; // K tile, transposed: [d][BLOCK_K]
    let mut vt = vec![0f32; BLOCK_K * dv]; // V tile: [BLOCK_K][dv]
    let mut sp = vec![0f32; rows_pad * BLOCK_K]; // scores, then probabilities
    // Softmax statistics and one row of scores in f64: near |s| = 1e4 an f32 score is off by
    // ~5e-4 (half an ulp), which alone breaks the f32 bound. For f32 inputs the dot product is
    // redone in f64 as well; for f16/bf16 the f32 dot is far inside their bounds.
    let exact_dot = plan.dtype == DType::F32;
    let mut s64 = vec![0f64; BLOCK_K];
    let mut m = vec![f64::NEG_INFINITY; rows];
    let mut l = vec![0f64; rows];
    let mut acc = vec![0f32; rows_pad * dv];
    let dv_main = dv - dv % NR;

    // Key rows any row of the task may see (lo and hi are non-decreasing in the row).
    let k_first = ranges.iter().filter(|r| r.0 < r.1).map(|r| r.0).min().unwrap_or(0);
    let k_end = ranges.iter().filter(|r| r.0 < r.1).map(|r| r.1).max().unwrap_or(0);
    let mut j0 = k_first - k_first % BLOCK_K;
    while j0 < k_end {
        let j1 = (j0 + BLOCK_K).min(seq.k_len);
        let nk = j1 - j0;
        // Rows with at least one allowed key in this block.
        let active = |r: usize| ranges[r].0.max(j0) < ranges[r].1.min(j1);
        let Some(r_lo) = (0..rows).find(|&r| active(r)) else {
            j0 = j1;
            continue;
        };
        let r_hi = (0..rows).rev().find(|&r| active(r)).map_or(r_lo, |r| r + 1);
        let (g_lo, g_hi) = (r_lo - r_lo % MR, r_hi.div_ceil(MR) * MR);

        // Stage the tiles.
        for j in 0..nk {
            let kr = &x.k[(seq.k_start + j0 + j) * x.k_row + lane.k_off..][..d];
            for (c, &val) in kr.iter().enumerate() {
                kt[c * BLOCK_K + j] = val;
            }
            vt[j * dv..][..dv].copy_from_slice(&x.v[(seq.k_start + j0 + j) * x.v_row + lane.v_off..][..dv]);
        }
        let nk_pad = nk.div_ceil(NR) * NR;
        for j in nk..nk_pad {
            for c in 0..d {
                kt[c * BLOCK_K + j] = 0.0;
            }
        }

        // S = Q K^T for the active row groups.
        for r0 in (g_lo..g_hi).step_by(MR) {
            for c0 in (0..nk_pad).step_by(NR) {
                score_tile(&qt, d, &kt, r0, c0, &mut sp);
            }
        }

        // Masks, softcap, ALiBi and the online-softmax update, row by row.
        for r in g_lo..g_hi {
            let srow = &mut sp[r * BLOCK_K..][..BLOCK_K];
            if r >= rows || !active(r) {
                srow[..nk].fill(0.0);
                continue;
            }
            let (jlo, jhi) = (ranges[r].0.max(j0) - j0, ranges[r].1.min(j1) - j0);
            let p_i = plan.key_position(n, row0 + r);
            let mut block_max = f64::NEG_INFINITY;
            for (c, (sv, s_exact)) in srow[..nk].iter().zip(s64.iter_mut()).enumerate() {
                if c < jlo || c >= jhi {
                    *s_exact = f64::NEG_INFINITY;
                    continue;
                }
                let dot = if exact_dot {
                    (0..d).map(|e| qt[r * d + e] as f64 * kt[e * BLOCK_K + c] as f64).sum::<f64>()
                } else {
                    *sv as f64
                };
                let mut sc = scale as f64 * dot;
                if cap > 0.0 {
                    sc = cap as f64 * (sc / cap as f64).tanh();
                }
                if let Some(slope) = lane.slope {
                    sc -= slope as f64 * (p_i - (j0 + c) as i64).unsigned_abs() as f64;
                }
                *s_exact = sc;
                block_max = block_max.max(sc);
            }
            let m_new = m[r].max(block_max);
            if m_new == f64::NEG_INFINITY {
                srow[..nk].fill(0.0); // every score is -inf: nothing to add
                continue;
            }
            let mut psum = 0f64;
            for (sv, &sc) in srow[..nk].iter_mut().zip(&s64) {
                let p = if sc == f64::NEG_INFINITY { 0.0 } else { (sc - m_new).exp() };
                *sv = p as f32;
                psum += p;
            }
            if m[r] == m_new {
                l[r] += psum;
            } else {
                let corr = (m[r] - m_new).exp(); // 0 on the first block
                l[r] = l[r] * corr + psum;
                acc[r * dv..][..dv].iter_mut().for_each(|a| *a *= corr as f32);
                m[r] = m_new;
            }
        }

        // O += P V for the active row groups.
        for r0 in (g_lo..g_hi).step_by(MR) {
            for c0 in (0..dv_main).step_by(NR) {
                pv_tile(&sp, &vt, dv, nk, r0, c0, &mut acc);
            }
            for r in r0..r0 + MR {
                for c in dv_main..dv {
                    let sum: f32 = (0..nk).map(|j| sp[r * BLOCK_K + j] * vt[j * dv + c]).sum();
                    acc[r * dv + c] += sum;
                }
            }
        }
        j0 = j1;
    }

    acc.truncate(rows * dv);
    let mut lse = vec![f32::NEG_INFINITY; rows];
    for r in 0..rows {
        let o = &mut acc[r * dv..][..dv];
        if l[r] > 0.0 {
            let inv = (1.0 / l[r]) as f32;
            o.iter_mut().for_each(|a| *a *= inv);
            lse[r] = (m[r] + l[r].ln()) as f32;
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
