//! The fused differential-attention kernels (prefill v1/v2, decode v1 over contiguous and
//! paged caches, the unfused baselines' epilogue) against the float64 oracle, plus the CPU-side
//! checks of the decode reference and validation.

use super::common::{compare, down, expect_hopper_path, f32t, gpu, pick_heads, randn, shuffle, tensor, up};
use attn_kernels::attention::{alibi_slopes, attention_cpu, AttentionArgs};
use attn_kernels::decode::{KvCacheRef, SplitPolicy};
use attn_kernels::diff_attention::cpu::DiffAttentionOutput;
use attn_kernels::diff_attention::cuda::{diff_attention_cuda_into, diff_decode_cuda_into, diff_epilogue_cuda};
use attn_kernels::decode::cuda::DeviceKvIndex;
use attn_kernels::diff_attention::oracle::diff_attention_f64;
use attn_kernels::diff_attention::{
    diff_decode_cpu, plan_diff, plan_diff_decode, DiffAttentionArgs, DiffAttentionConfig, DiffDecodeArgs, DiffVariant,
};
use attn_kernels::rope::RopeConfig;
use attn_kernels::runtime::Key;
use attn_kernels::{DType, DeviceTensor, Error, Gpu, Tensor, TensorInfo};
use attn_kernels_harness::check::Rng;

/// The spec's bound for diff_attention: twice the per-dtype bound.
fn bound(dtype: DType) -> f64 {
    2.0 * dtype.rel_tolerance()
}

// ------------------------------------------------------------------------------- prefill

#[derive(Clone, Debug)]
struct DiffSpec {
    variant: DiffVariant,
    dtype: DType,
    b: usize,
    sq: usize,
    sk: usize,
    h: usize,
    hkv: usize,
    d: usize,
    causal: bool,
    wl: i64,
    wr: i64,
    softcap: f64,
    alibi: bool,
    norm: bool,
    rope: Option<usize>,
    pos_ids: bool,
    /// Varlen: (q_len, k_len) per sequence (b, sq, sk ignored).
    varlen: Option<Vec<(usize, usize)>>,
}

#[allow(clippy::too_many_arguments)]
fn spec(variant: DiffVariant, dtype: DType, b: usize, sq: usize, sk: usize, h: usize, hkv: usize, d: usize) -> DiffSpec {
    DiffSpec {
        variant,
        dtype,
        b,
        sq,
        sk,
        h,
        hkv,
        d,
        causal: false,
        wl: -1,
        wr: -1,
        softcap: 0.0,
        alibi: false,
        norm: false,
        rope: None,
        pos_ids: false,
        varlen: None,
    }
}

/// Host inputs of one case.
struct DiffInputs {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lambda: Tensor,
    norm: Option<Tensor>,
    alibi: Option<Tensor>,
    cu_q: Option<Vec<i32>>,
    cu_k: Option<Vec<i32>>,
    pos_q: Option<Vec<i32>>,
    pos_k: Option<Vec<i32>>,
}

impl DiffInputs {
    fn args(&self) -> DiffAttentionArgs<'_, Tensor> {
        DiffAttentionArgs {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            lambda: &self.lambda,
            norm_weight: self.norm.as_ref(),
            alibi_slopes: self.alibi.as_ref(),
            cu_seqlens_q: self.cu_q.as_deref(),
            cu_seqlens_k: self.cu_k.as_deref(),
            position_ids_q: self.pos_q.as_deref(),
            position_ids_k: self.pos_k.as_deref(),
        }
    }
}

fn build(rng: &mut Rng, s: &DiffSpec) -> (DiffAttentionConfig, DiffInputs) {
    let cfg = DiffAttentionConfig {
        causal: s.causal,
        window_left: s.wl,
        window_right: s.wr,
        softcap: s.softcap,
        rope: s.rope.map(|r| RopeConfig::new(r, 10000.0)),
        variant: s.variant,
        lambda_init: Some(0.8 - 0.6 * (-0.3f64 * 2.0).exp()),
        ..DiffAttentionConfig::default()
    };
    let (kh, vh, dv) = match s.variant {
        DiffVariant::V1 => (2 * s.hkv, s.hkv, 2 * s.d),
        DiffVariant::V2 => (s.hkv, s.hkv, s.d),
    };
    let (qdims, kdims, vdims, rows_q, rows_k, cu_q, cu_k);
    match &s.varlen {
        None => {
            qdims = vec![s.b, s.sq, 2 * s.h, s.d];
            kdims = vec![s.b, s.sk, kh, s.d];
            vdims = vec![s.b, s.sk, vh, dv];
            rows_q = s.b * s.sq;
            rows_k = s.b * s.sk;
            cu_q = None;
            cu_k = None;
        }
        Some(seqs) => {
            let mut cq = vec![0i32];
            let mut ck = vec![0i32];
            for &(lq, lk) in seqs {
                cq.push(cq.last().unwrap() + lq as i32);
                ck.push(ck.last().unwrap() + lk as i32);
            }
            rows_q = *cq.last().unwrap() as usize;
            rows_k = *ck.last().unwrap() as usize;
            qdims = vec![rows_q, 2 * s.h, s.d];
            kdims = vec![rows_k, kh, s.d];
            vdims = vec![rows_k, vh, dv];
            cu_q = Some(cq);
            cu_k = Some(ck);
        }
    }
    let lambda = match s.variant {
        DiffVariant::V1 => f32t(&[s.h], &rng.uniform_vec(s.h, 0.1, 0.9)),
        DiffVariant::V2 => {
            let shape = if s.varlen.is_some() { vec![rows_q, s.h] } else { vec![s.b, s.sq, s.h] };
            f32t(&shape, &rng.uniform_vec(rows_q * s.h, 0.05, 0.95))
        }
    };
    let pos = |rng: &mut Rng, n: usize| -> Option<Vec<i32>> {
        (s.pos_ids && s.rope.is_some()).then(|| (0..n).map(|_| rng.below(5000) as i32).collect())
    };
    let inputs = DiffInputs {
        q: randn(rng, s.dtype, &qdims),
        k: randn(rng, s.dtype, &kdims),
        v: randn(rng, s.dtype, &vdims),
        lambda,
        // The norm weight in f32 or the activation dtype, as a checkpoint stores it.
        norm: s.norm.then(|| {
            let wt = if rng.below(2) == 0 { DType::F32 } else { s.dtype };
            tensor(wt, &[dv], &rng.uniform_vec(dv, 0.5, 1.5))
        }),
        alibi: s.alibi.then(|| f32t(&[s.h], &alibi_slopes(s.h))),
        cu_q,
        cu_k,
        pos_q: pos(rng, rows_q),
        pos_k: pos(rng, rows_k),
    };
    (cfg, inputs)
}

fn upload_args<'a>(
    gpu: &Gpu,
    inp: &'a DiffInputs,
    store: &'a mut Vec<DeviceTensor>,
) -> DiffAttentionArgs<'a, DeviceTensor> {
    store.push(up(gpu, &inp.q));
    store.push(up(gpu, &inp.k));
    store.push(up(gpu, &inp.v));
    store.push(up(gpu, &inp.lambda));
    let has_norm = inp.norm.is_some();
    let has_alibi = inp.alibi.is_some();
    if let Some(n) = &inp.norm {
        store.push(up(gpu, n));
    }
    if let Some(a) = &inp.alibi {
        store.push(up(gpu, a));
    }
    let s: &'a Vec<DeviceTensor> = store;
    let mut i = 4;
    let norm = has_norm.then(|| {
        i += 1;
        &s[i - 1]
    });
    let alibi = has_alibi.then(|| {
        i += 1;
        &s[i - 1]
    });
    DiffAttentionArgs {
        q: &s[0],
        k: &s[1],
        v: &s[2],
        lambda: &s[3],
        norm_weight: norm,
        alibi_slopes: alibi,
        cu_seqlens_q: inp.cu_q.as_deref(),
        cu_seqlens_k: inp.cu_k.as_deref(),
        position_ids_q: inp.pos_q.as_deref(),
        position_ids_k: inp.pos_k.as_deref(),
    }
}

/// Run the fused kernel into poisoned outputs and download.
fn run_diff(gpu: &Gpu, cfg: &DiffAttentionConfig, inp: &DiffInputs) -> attn_kernels::Result<DiffAttentionOutput<Tensor>> {
    let dp = plan_diff(cfg, &inp.args())?;
    let mut store = Vec::new();
    let args = upload_args(gpu, inp, &mut store);
    let mut out = DiffAttentionOutput {
        o: gpu.alloc_poisoned(dp.attn.dtype, &dp.o_shape())?,
        lse1: gpu.alloc_poisoned(DType::F32, &dp.lse_shape())?,
        lse2: gpu.alloc_poisoned(DType::F32, &dp.lse_shape())?,
    };
    diff_attention_cuda_into(gpu, cfg, &args, &mut out)?;
    Ok(DiffAttentionOutput { o: gpu.download(&out.o)?, lse1: gpu.download(&out.lse1)?, lse2: gpu.download(&out.lse2)? })
}

fn check_diff(gpu: &Gpu, rng: &mut Rng, s: &DiffSpec) {
    let (cfg, inp) = build(rng, s);
    let what = format!("{s:?}");
    let r = diff_attention_f64(&cfg, &inp.args()).unwrap();
    let out = run_diff(gpu, &cfg, &inp).unwrap_or_else(|e| panic!("{what}: {e}"));
    let tol = bound(s.dtype);
    compare(&what, rng.seed, "o", &out.o, &r.o, tol);
    compare(&what, rng.seed, "lse1", &out.lse1, &r.lse1, tol);
    compare(&what, rng.seed, "lse2", &out.lse2, &r.lse2, tol);
}

#[test]
fn v1_shapes_gqa_dtypes_norm() {
    let Some(gpu) = gpu(concat!(module_path!(), "::v1_shapes_gqa_dtypes_norm")) else { return };
    let mut rng = Rng::from_time();
    for &dtype in &[DType::F16, DType::BF16] {
        for &d in &[64, 128] {
            for &(b, sq, sk, h, hkv) in
                &[(1, 1, 1, 1, 1), (2, 77, 77, 4, 4), (1, 130, 257, 4, 2), (2, 65, 63, 6, 1), (1, 200, 130, 2, 1)]
            {
                for &norm in &[false, true] {
                    let mut s = spec(DiffVariant::V1, dtype, b, sq, sk, h, hkv, d);
                    s.norm = norm;
                    check_diff(&gpu, &mut rng, &s);
                }
            }
        }
    }
}

#[test]
fn v1_masks_softcap_alibi() {
    let Some(gpu) = gpu(concat!(module_path!(), "::v1_masks_softcap_alibi")) else { return };
    let mut rng = Rng::from_time();
    for &dtype in &[DType::F16, DType::BF16] {
        for &d in &[64, 128] {
            // (sq, sk, causal, wl, wr): bottom-right causal with Sq < Sk and Sq > Sk (fully
            // masked leading rows), sliding windows, a window that masks whole rows.
            for &(sq, sk, causal, wl, wr) in &[
                (100, 100, true, -1, -1),
                (37, 300, true, -1, -1),
                (150, 70, true, -1, -1),
                (129, 129, false, 17, 5),
                (90, 200, true, 64, -1),
                (70, 150, false, -1, 0),
                (80, 20, false, 3, -1),
            ] {
                let mut s = spec(DiffVariant::V1, dtype, 2, sq, sk, 4, 2, d);
                s.causal = causal;
                s.wl = wl;
                s.wr = wr;
                s.norm = true;
                check_diff(&gpu, &mut rng, &s);
            }
            let mut s = spec(DiffVariant::V1, dtype, 1, 96, 160, 4, 4, d);
            s.softcap = 30.0;
            s.alibi = true;
            s.causal = true;
            check_diff(&gpu, &mut rng, &s);
            s.softcap = 2.0;
            s.causal = false;
            s.norm = true;
            check_diff(&gpu, &mut rng, &s);
        }
    }
}

#[test]
fn v1_long_keys() {
    let Some(gpu) = gpu(concat!(module_path!(), "::v1_long_keys")) else { return };
    let mut rng = Rng::from_time();
    let (sk_odd, sk_long) = if gpu.info().emulated { (2049, 4096) } else { (8193, 32768) }; // emulated: still many key tiles and a partial last one; CPU time
    for &dtype in &[DType::F16, DType::BF16] {
        let mut s = spec(DiffVariant::V1, dtype, 1, 33, sk_odd, 2, 1, 128);
        s.causal = true;
        s.norm = true;
        check_diff(&gpu, &mut rng, &s);
        let mut s = spec(DiffVariant::V1, dtype, 1, 16, sk_long, 1, 1, 64);
        s.alibi = true;
        check_diff(&gpu, &mut rng, &s);
    }
}

#[test]
fn v1_rope_and_positions() {
    let Some(gpu) = gpu(concat!(module_path!(), "::v1_rope_and_positions")) else { return };
    let mut rng = Rng::from_time();
    for &dtype in &[DType::F16, DType::BF16] {
        for &(d, rot) in &[(64, 64), (128, 64), (128, 128)] {
            for &pos_ids in &[false, true] {
                // sq > sk: negative default query positions.
                for &(sq, sk) in &[(70, 133), (90, 40)] {
                    let mut s = spec(DiffVariant::V1, dtype, 2, sq, sk, 2, 2, d);
                    s.rope = Some(rot);
                    s.pos_ids = pos_ids;
                    s.causal = true;
                    s.norm = true;
                    check_diff(&gpu, &mut rng, &s);
                }
            }
        }
    }
}

#[test]
fn v1_v2_varlen() {
    let Some(gpu) = gpu(concat!(module_path!(), "::v1_v2_varlen")) else { return };
    let mut rng = Rng::from_time();
    let seqs = vec![(17, 17), (0, 5), (64, 100), (3, 0), (130, 129)];
    for &dtype in &[DType::F16, DType::BF16] {
        for &variant in &[DiffVariant::V1, DiffVariant::V2] {
            for &causal in &[false, true] {
                let mut s = spec(variant, dtype, 0, 0, 0, 4, 2, 64);
                s.varlen = Some(seqs.clone());
                s.causal = causal;
                s.norm = variant == DiffVariant::V1;
                s.rope = causal.then_some(64);
                check_diff(&gpu, &mut rng, &s);
            }
        }
    }
}

/// Scales that are not positive (the kernel's plain path takes the row max on raw scores, which
/// only a positive scale allows): zero (uniform weights) and negative, across clean and masked
/// key tiles (causal, Sk > Sq).
#[test]
fn v1_v2_scale_zero_or_negative() {
    let Some(gpu) = gpu(concat!(module_path!(), "::v1_v2_scale_zero_or_negative")) else { return };
    let mut rng = Rng::from_time();
    for &variant in &[DiffVariant::V1, DiffVariant::V2] {
        for &scale in &[-0.125, 0.0] {
            let mut s = spec(variant, DType::F16, 1, 70, 200, 2, 2, 64);
            s.causal = true;
            s.norm = variant == DiffVariant::V1;
            let (mut cfg, inp) = build(&mut rng, &s);
            cfg.softmax_scale = Some(scale);
            let what = format!("{s:?} scale {scale}");
            let r = diff_attention_f64(&cfg, &inp.args()).unwrap();
            let out = run_diff(&gpu, &cfg, &inp).unwrap_or_else(|e| panic!("{what}: {e}"));
            let tol = bound(s.dtype);
            compare(&what, rng.seed, "o", &out.o, &r.o, tol);
            compare(&what, rng.seed, "lse1", &out.lse1, &r.lse1, tol);
            compare(&what, rng.seed, "lse2", &out.lse2, &r.lse2, tol);
        }
    }
}

#[test]
fn v2_grid() {
    let Some(gpu) = gpu(concat!(module_path!(), "::v2_grid")) else { return };
    let mut rng = Rng::from_time();
    for &dtype in &[DType::F16, DType::BF16] {
        for &d in &[64, 128] {
            // 2H / Hkv must be even.
            for &(b, sq, sk, h, hkv) in &[(1, 1, 1, 1, 1), (2, 77, 91, 4, 4), (1, 130, 257, 4, 2), (2, 65, 63, 4, 1)] {
                for &causal in &[false, true] {
                    let mut s = spec(DiffVariant::V2, dtype, b, sq, sk, h, hkv, d);
                    s.causal = causal;
                    s.alibi = causal;
                    s.wl = if causal { 40 } else { -1 };
                    check_diff(&gpu, &mut rng, &s);
                }
            }
        }
    }
}

/// The fused GPU result equals two plain attention calls (CPU) plus the epilogue in f64.
#[test]
fn fused_equals_two_attention_calls_plus_epilogue() {
    let Some(gpu) = gpu(concat!(module_path!(), "::fused_equals_two_attention_calls_plus_epilogue")) else { return };
    let mut rng = Rng::from_time();
    for &dtype in &[DType::F16, DType::BF16] {
        for &norm in &[false, true] {
            let mut s = spec(DiffVariant::V1, dtype, 2, 97, 150, 4, 2, 64);
            s.causal = true;
            s.norm = norm;
            s.alibi = true;
            let (cfg, inp) = build(&mut rng, &s);
            let (h, hkv) = (s.h, s.hkv);
            // The even heads of q and k make the first attention map, the odd heads the second.
            let heads = |n: usize, parity: usize| (0..n).map(|i| 2 * i + parity).collect::<Vec<_>>();
            let (q1, q2) = (pick_heads(&inp.q, &heads(h, 0)), pick_heads(&inp.q, &heads(h, 1)));
            let (k1, k2) = (pick_heads(&inp.k, &heads(hkv, 0)), pick_heads(&inp.k, &heads(hkv, 1)));
            let acfg = cfg.attention_config();
            let alibi = inp.alibi.as_ref().unwrap();
            let a1 = attention_cpu(&acfg, &AttentionArgs::new(&q1, &k1, &inp.v).with_alibi(alibi)).unwrap();
            let a2 = attention_cpu(&acfg, &AttentionArgs::new(&q2, &k2, &inp.v).with_alibi(alibi)).unwrap();
            let (o1, o2) = (a1.o.to_f64_vec(), a2.o.to_f64_vec());
            let lam = inp.lambda.to_f64_vec();
            let dv = 2 * s.d;
            let mut want = vec![0f64; o1.len()];
            for (r, row) in want.chunks_mut(dv).enumerate() {
                let hh = r % h;
                for c in 0..dv {
                    row[c] = o1[r * dv + c] - lam[hh] * o2[r * dv + c];
                }
                if let Some(w) = &inp.norm {
                    let w = w.to_f64_vec();
                    let ms = row.iter().map(|x| x * x).sum::<f64>() / dv as f64 + cfg.eps;
                    let f = (1.0 - cfg.lambda_init.unwrap()) / ms.sqrt();
                    for c in 0..dv {
                        row[c] *= f * w[c];
                    }
                }
            }
            let out = run_diff(&gpu, &cfg, &inp).unwrap();
            let what = format!("two-call equivalence {s:?}");
            compare(&what, rng.seed, "o", &out.o, &want, bound(dtype));
            compare(&what, rng.seed, "lse1", &out.lse1, &a1.lse.to_f64_vec(), bound(dtype));
            compare(&what, rng.seed, "lse2", &out.lse2, &a2.lse.to_f64_vec(), bound(dtype));
        }
    }
}

/// The unfused baselines' epilogue (`ak_diff_epilogue_{f16,bf16}`): `o = a - lambda_h b`, then
/// the optional RMSNorm times `norm_scale`, with `a`, `b` whole or split in column halves
/// (`a_hi`, `b_hi`), against the same formula in f64 on the rounded inputs.
#[test]
fn epilogue_gpu_matches_f64() {
    let Some(gpu) = gpu(concat!(module_path!(), "::epilogue_gpu_matches_f64")) else { return };
    let mut rng = Rng::from_time();
    let (rows, h, norm_scale, eps) = ([2usize, 37usize], 3usize, 0.35f32, 1e-5f32);
    for dtype in [DType::F16, DType::BF16] {
        // Dv 96: a warp's second pass over the columns is partial.
        for dv in [64usize, 96, 256] {
            for split in [false, true] {
                for norm in [false, true] {
                    let full = [rows[0], rows[1], h, dv];
                    let a = randn(&mut rng, dtype, &full);
                    let b = randn(&mut rng, dtype, &full);
                    let lambda = f32t(&[h], &rng.uniform_vec(h, 0.1, 0.9));
                    let w = norm.then(|| f32t(&[dv], &rng.uniform_vec(dv, 0.5, 1.5)));
                    // Split form: columns [0, Dv/2) in a / b, [Dv/2, Dv) in a_hi / b_hi.
                    let halves = |t: &Tensor| {
                        let x = t.to_f32_vec();
                        let (lo, hi): (Vec<_>, Vec<_>) = x.chunks(dv).map(|r| (r[..dv / 2].to_vec(), r[dv / 2..].to_vec())).unzip();
                        let shape = [rows[0], rows[1], h, dv / 2];
                        (up(&gpu, &tensor(dtype, &shape, &lo.concat())), up(&gpu, &tensor(dtype, &shape, &hi.concat())))
                    };
                    let (da, da_hi, db, db_hi) = if split {
                        let ((a0, a1), (b0, b1)) = (halves(&a), halves(&b));
                        (a0, Some(a1), b0, Some(b1))
                    } else {
                        (up(&gpu, &a), None, up(&gpu, &b), None)
                    };
                    let (dl, dw) = (up(&gpu, &lambda), w.as_ref().map(|w| up(&gpu, w)));
                    let mut o = gpu.alloc_poisoned(dtype, &full).unwrap();
                    diff_epilogue_cuda(&gpu, &da, da_hi.as_ref(), &db, db_hi.as_ref(), &dl, dw.as_ref(), norm_scale, eps, &mut o)
                        .unwrap();
                    let (av, bv, lam) = (a.to_f64_vec(), b.to_f64_vec(), lambda.to_f64_vec());
                    let mut want = vec![0f64; av.len()];
                    for (r, row) in want.chunks_mut(dv).enumerate() {
                        for c in 0..dv {
                            row[c] = av[r * dv + c] - lam[r % h] * bv[r * dv + c];
                        }
                        if let Some(w) = &w {
                            let w = w.to_f64_vec();
                            let den = row.iter().map(|x| x * x).sum::<f64>() / dv as f64 + eps as f64;
                            let f = if den > 0.0 { norm_scale as f64 / den.sqrt() } else { 0.0 };
                            for c in 0..dv {
                                row[c] *= f * w[c];
                            }
                        }
                    }
                    let what = format!("epilogue {dtype} Dv {dv} split={split} norm={norm}");
                    compare(&what, rng.seed, "o", &down(&gpu, &o), &want, dtype.rel_tolerance());
                }
            }
        }
    }
    // a_hi without b_hi is refused before any launch.
    let a = up(&gpu, &randn(&mut rng, DType::F16, &[4, 2, 32]));
    let lambda = up(&gpu, &f32t(&[2], &[0.5, 0.5]));
    let mut o = gpu.alloc(DType::F16, &[4, 2, 64]).unwrap();
    let e = diff_epilogue_cuda(&gpu, &a, Some(&a), &a, None, &lambda, None, 1.0, 1e-5, &mut o).unwrap_err();
    assert_eq!(e.argument(), Some("b_hi"), "{e}");
}

#[test]
fn prefill_gpu_bad_input() {
    let Some(gpu) = gpu(concat!(module_path!(), "::prefill_gpu_bad_input")) else { return };
    let mut rng = Rng::from_time();
    // d = 96: valid for the CPU, unsupported on the GPU.
    let (cfg, inp) = build(&mut rng, &spec(DiffVariant::V1, DType::F16, 1, 8, 8, 2, 1, 96));
    let mut store = Vec::new();
    let args = upload_args(&gpu, &inp, &mut store);
    match attn_kernels::diff_attention::cuda::diff_attention_cuda(&gpu, &cfg, &args) {
        Err(Error::Unsupported { arg, .. }) => assert_eq!(arg, "q"),
        other => panic!("expected Unsupported(q), got {other:?}"),
    }
    // f32 on the GPU.
    let (cfg, inp) = build(&mut rng, &spec(DiffVariant::V1, DType::F32, 1, 8, 8, 2, 1, 64));
    let mut store = Vec::new();
    let args = upload_args(&gpu, &inp, &mut store);
    match attn_kernels::diff_attention::cuda::diff_attention_cuda(&gpu, &cfg, &args) {
        Err(Error::Unsupported { arg, .. }) => assert_eq!(arg, "q"),
        other => panic!("expected Unsupported(q), got {other:?}"),
    }
    // Wrong lambda shape; wrong output shape.
    let (cfg, inp) = build(&mut rng, &spec(DiffVariant::V1, DType::F16, 1, 8, 8, 2, 1, 64));
    let mut store = Vec::new();
    let mut args = upload_args(&gpu, &inp, &mut store);
    let bad_lambda = up(&gpu, &f32t(&[3], &[0.5; 3]));
    let good_lambda = args.lambda;
    args.lambda = &bad_lambda;
    match attn_kernels::diff_attention::cuda::diff_attention_cuda(&gpu, &cfg, &args) {
        Err(Error::Shape { arg, .. }) => assert_eq!(arg, "lambda"),
        other => panic!("expected Shape(lambda), got {other:?}"),
    }
    args.lambda = good_lambda;
    let mut out = DiffAttentionOutput {
        o: gpu.alloc(DType::F16, &[1, 8, 2, 64]).unwrap(),
        lse1: gpu.alloc(DType::F32, &[1, 2, 8]).unwrap(),
        lse2: gpu.alloc(DType::F32, &[1, 2, 8]).unwrap(),
    };
    match diff_attention_cuda_into(&gpu, &cfg, &args, &mut out) {
        Err(Error::Shape { arg, .. }) => assert_eq!(arg, "o"),
        other => panic!("expected Shape(o), got {other:?}"),
    }
}

// ------------------------------------------------------------------------------- decode

/// One decode case: per-sequence keys (the source of truth), the same keys in a contiguous and
/// a paged cache, and the oracle inputs (varlen, one query row per sequence).
struct DecodeCase {
    cfg: DiffAttentionConfig,
    q: Tensor,
    lambda: Tensor,
    norm: Option<Tensor>,
    alibi: Option<Tensor>,
    seqlens: Vec<i32>,
    k_contig: Tensor,
    v_contig: Tensor,
    k_paged: Tensor,
    v_paged: Tensor,
    block_table: Vec<i32>,
    max_blocks: usize,
    /// Oracle: float64 `o [B, H, 2d]` (as [B, 1, H, 2d]) and lse as [B, H, 1].
    ref_o: Vec<f64>,
    ref_lse1: Vec<f64>,
    ref_lse2: Vec<f64>,
}

#[allow(clippy::too_many_arguments)]
fn decode_case(
    rng: &mut Rng,
    dtype: DType,
    seqlens: &[usize],
    h: usize,
    hkv: usize,
    d: usize,
    block_size: usize,
    wl: i64,
    softcap: f64,
    alibi: bool,
    norm: bool,
) -> DecodeCase {
    let b = seqlens.len();
    let s_max = seqlens.iter().copied().max().unwrap_or(0) + 3;
    let row = hkv * 2 * d;
    let cfg = DiffAttentionConfig {
        window_left: wl,
        softcap,
        lambda_init: Some(0.8 - 0.6 * (-0.3f64 * 5.0).exp()),
        ..DiffAttentionConfig::default()
    };
    // Per-sequence keys and values.
    let keys: Vec<Vec<f32>> = seqlens.iter().map(|&l| rng.normal_vec(l * row)).collect();
    let vals: Vec<Vec<f32>> = seqlens.iter().map(|&l| rng.normal_vec(l * row)).collect();
    // Contiguous cache, junk beyond each length.
    let mut kc = rng.normal_vec(b * s_max * row);
    let mut vc = rng.normal_vec(b * s_max * row);
    for i in 0..b {
        kc[i * s_max * row..][..keys[i].len()].copy_from_slice(&keys[i]);
        vc[i * s_max * row..][..vals[i].len()].copy_from_slice(&vals[i]);
    }
    // Paged cache: shuffled block ids, unused table entries -1.
    let max_blocks = s_max.div_ceil(block_size);
    let need: Vec<usize> = seqlens.iter().map(|&l| l.div_ceil(block_size)).collect();
    let num_blocks = need.iter().sum::<usize>() + 2;
    let mut ids: Vec<usize> = (0..num_blocks).collect();
    shuffle(rng, &mut ids);
    let mut table = vec![-1i32; b * max_blocks];
    let mut kp = rng.normal_vec(num_blocks * block_size * row);
    let mut vp = rng.normal_vec(num_blocks * block_size * row);
    let mut next = 0;
    for i in 0..b {
        for blk in 0..need[i] {
            let id = ids[next];
            next += 1;
            table[i * max_blocks + blk] = id as i32;
            for r in 0..block_size {
                let j = blk * block_size + r;
                if j < seqlens[i] {
                    kp[(id * block_size + r) * row..][..row].copy_from_slice(&keys[i][j * row..][..row]);
                    vp[(id * block_size + r) * row..][..row].copy_from_slice(&vals[i][j * row..][..row]);
                }
            }
        }
    }
    let q = randn(rng, dtype, &[b, 1, 2 * h, d]);
    let lambda = f32t(&[h], &rng.uniform_vec(h, 0.1, 0.9));
    let norm = norm.then(|| {
        let wt = if rng.below(2) == 0 { DType::F32 } else { dtype };
        tensor(wt, &[2 * d], &rng.uniform_vec(2 * d, 0.5, 1.5))
    });
    let alibi = alibi.then(|| f32t(&[h], &alibi_slopes(h)));
    // Oracle over the packed per-sequence keys (varlen, one query per sequence).
    let total: usize = seqlens.iter().sum();
    let kpk: Vec<f32> = keys.concat();
    let vpk: Vec<f32> = vals.concat();
    let kt = Tensor::from_f32(dtype, &[total, 2 * hkv, d], &kpk).unwrap();
    let vt = Tensor::from_f32(dtype, &[total, hkv, 2 * d], &vpk).unwrap();
    let qv = q.clone().reshape(&[b, 2 * h, d]).unwrap();
    let cu_q: Vec<i32> = (0..=b as i32).collect();
    let mut cu_k = vec![0i32];
    for &l in seqlens {
        cu_k.push(cu_k.last().unwrap() + l as i32);
    }
    let mut args = DiffAttentionArgs::new(&qv, &kt, &vt, &lambda).with_varlen(&cu_q, &cu_k);
    args.norm_weight = norm.as_ref();
    args.alibi_slopes = alibi.as_ref();
    let r = diff_attention_f64(&cfg, &args).unwrap();
    let tr = |x: &[f64]| {
        let mut y = vec![0f64; x.len()];
        for hh in 0..h {
            for bb in 0..b {
                y[bb * h + hh] = x[hh * b + bb];
            }
        }
        y
    };
    DecodeCase {
        ref_lse1: tr(&r.lse1),
        ref_lse2: tr(&r.lse2),
        ref_o: r.o,
        cfg,
        lambda,
        norm,
        alibi,
        seqlens: seqlens.iter().map(|&l| l as i32).collect(),
        k_contig: Tensor::from_f32(dtype, &[b, s_max, hkv, 2 * d], &kc).unwrap(),
        v_contig: Tensor::from_f32(dtype, &[b, s_max, hkv, 2 * d], &vc).unwrap(),
        k_paged: Tensor::from_f32(dtype, &[num_blocks, block_size, hkv, 2 * d], &kp).unwrap(),
        v_paged: Tensor::from_f32(dtype, &[num_blocks, block_size, hkv, 2 * d], &vp).unwrap(),
        block_table: table,
        max_blocks,
        q,
    }
}

impl DecodeCase {
    fn cache<'a, T>(&'a self, paged: bool, k: &'a T, v: &'a T) -> KvCacheRef<'a, T> {
        if paged {
            KvCacheRef::Paged {
                k,
                v,
                block_table: &self.block_table,
                max_blocks: self.max_blocks,
                cache_seqlens: &self.seqlens,
            }
        } else {
            KvCacheRef::Contiguous { k, v, cache_seqlens: &self.seqlens }
        }
    }
    fn check(&self, what: &str, seed: u64, out: &DiffAttentionOutput<Tensor>, tol: f64) {
        compare(what, seed, "o", &out.o, &self.ref_o, tol);
        compare(what, seed, "lse1", &out.lse1, &self.ref_lse1, tol);
        compare(what, seed, "lse2", &out.lse2, &self.ref_lse2, tol);
    }
}

/// CPU: the decode reference (gather + diff_attention_cpu) against the oracle, both layouts.
#[test]
fn decode_cpu_reference_matches_oracle() {
    let mut rng = Rng::from_time();
    for &dtype in &[DType::F32, DType::BF16] {
        let c = decode_case(&mut rng, dtype, &[5, 0, 37, 16], 4, 2, 16, 4, -1, 0.0, true, true);
        for &paged in &[false, true] {
            let (k, v) = if paged { (&c.k_paged, &c.v_paged) } else { (&c.k_contig, &c.v_contig) };
            let args = DiffDecodeArgs {
                q: &c.q,
                cache: c.cache(paged, k, v),
                lambda: &c.lambda,
                norm_weight: c.norm.as_ref(),
                alibi_slopes: c.alibi.as_ref(),
            };
            let out = diff_decode_cpu(&c.cfg, &args).unwrap();
            let tol = if dtype == DType::F32 { 1e-5 } else { bound(dtype) };
            c.check(&format!("decode cpu paged={paged} {dtype}"), rng.seed, &out, tol);
        }
    }
}

/// CPU: decode validation errors name the argument.
#[test]
fn decode_bad_input() {
    let mut rng = Rng::from_time();
    let c = decode_case(&mut rng, DType::F16, &[9, 4], 2, 1, 64, 4, -1, 0.0, false, false);
    fn args(c: &DecodeCase, paged: bool) -> DiffDecodeArgs<'_, Tensor> {
        DiffDecodeArgs {
            q: &c.q,
            cache: if paged { c.cache(true, &c.k_paged, &c.v_paged) } else { c.cache(false, &c.k_contig, &c.v_contig) },
            lambda: &c.lambda,
            norm_weight: None,
            alibi_slopes: None,
        }
    }
    plan_diff_decode(&c.cfg, &args(&c, false)).unwrap();
    // v2 and RoPE are not supported in decode.
    let mut cfg = c.cfg.clone();
    cfg.variant = DiffVariant::V2;
    assert!(
        matches!(plan_diff_decode(&cfg, &args(&c, false)), Err(Error::Unsupported { arg, .. }) if arg == "variant")
    );
    let mut cfg = c.cfg.clone();
    cfg.rope = Some(RopeConfig::new(64, 10000.0));
    assert!(matches!(plan_diff_decode(&cfg, &args(&c, false)), Err(Error::Unsupported { arg, .. }) if arg == "rope"));
    // Two new tokens.
    let q2 = randn(&mut rng, DType::F16, &[2, 2, 4, 64]);
    let mut a = args(&c, false);
    a.q = &q2;
    assert!(matches!(plan_diff_decode(&c.cfg, &a), Err(Error::Unsupported { arg, .. }) if arg == "q"));
    // Wrong q head dim.
    let q3 = randn(&mut rng, DType::F16, &[2, 1, 4, 32]);
    a.q = &q3;
    assert!(matches!(plan_diff_decode(&c.cfg, &a), Err(Error::Shape { arg, .. }) if arg == "q"));
    // Block id out of range.
    let mut bad = c.block_table.clone();
    bad[0] = 1000;
    let a = DiffDecodeArgs {
        q: &c.q,
        cache: KvCacheRef::Paged {
            k: &c.k_paged,
            v: &c.v_paged,
            block_table: &bad,
            max_blocks: c.max_blocks,
            cache_seqlens: &c.seqlens,
        },
        lambda: &c.lambda,
        norm_weight: None,
        alibi_slopes: None,
    };
    assert!(matches!(plan_diff_decode(&c.cfg, &a), Err(Error::InvalidArgument { arg, .. }) if arg == "block_table"));
    // Length beyond the cache.
    let long = vec![1000, 4];
    let a = DiffDecodeArgs {
        q: &c.q,
        cache: KvCacheRef::Contiguous { k: &c.k_contig, v: &c.v_contig, cache_seqlens: &long },
        lambda: &c.lambda,
        norm_weight: None,
        alibi_slopes: None,
    };
    assert!(matches!(plan_diff_decode(&c.cfg, &a), Err(Error::InvalidArgument { arg, .. }) if arg == "cache_seqlens"));
    // Norm without lambda_init.
    let w = f32t(&[128], &[1.0; 128]);
    let mut a = args(&c, false);
    a.norm_weight = Some(&w);
    let mut cfg = c.cfg.clone();
    cfg.lambda_init = None;
    assert!(matches!(plan_diff_decode(&cfg, &a), Err(Error::Config { key, .. }) if key == "lambda_init"));
}

fn run_decode_gpu(
    gpu: &Gpu,
    c: &DecodeCase,
    paged: bool,
    split: SplitPolicy,
) -> attn_kernels::Result<DiffAttentionOutput<Tensor>> {
    let put = |t: &Tensor| up(gpu, t);
    let (k, v) = if paged { (put(&c.k_paged), put(&c.v_paged)) } else { (put(&c.k_contig), put(&c.v_contig)) };
    let (q, lambda) = (put(&c.q), put(&c.lambda));
    let norm = c.norm.as_ref().map(put);
    let alibi = c.alibi.as_ref().map(put);
    let args = DiffDecodeArgs {
        q: &q,
        cache: c.cache(paged, &k, &v),
        lambda: &lambda,
        norm_weight: norm.as_ref(),
        alibi_slopes: alibi.as_ref(),
    };
    let p = plan_diff_decode(&c.cfg, &args)?;
    let index = DeviceKvIndex::new(gpu, &args.cache)?;
    let mut out = DiffAttentionOutput {
        o: gpu.alloc_poisoned(p.dtype, &p.o_shape())?,
        lse1: gpu.alloc_poisoned(DType::F32, &p.lse_shape())?,
        lse2: gpu.alloc_poisoned(DType::F32, &p.lse_shape())?,
    };
    diff_decode_cuda_into(gpu, &c.cfg, &args, &index, split, &mut out)?;
    Ok(DiffAttentionOutput { o: gpu.download(&out.o)?, lse1: gpu.download(&out.lse1)?, lse2: gpu.download(&out.lse2)? })
}

#[test]
fn decode_gpu_both_layouts_and_splits() {
    let Some(gpu) = gpu(concat!(module_path!(), "::decode_gpu_both_layouts_and_splits")) else { return };
    let mut rng = Rng::from_time();
    for &dtype in &[DType::F16, DType::BF16] {
        for &d in &[64, 128] {
            for &(ref lens, h, hkv, bs, wl, softcap, alibi, norm) in &[
                (vec![1usize, 33, 100, 0], 2usize, 2usize, 16usize, -1i64, 0.0f64, false, false),
                (vec![257, 5, 1000], 4, 1, 32, -1, 0.0, true, true),
                (vec![700, 64], 4, 2, 64, 100, 20.0, false, true),
                (vec![3000], 2, 1, 128, -1, 0.0, true, false),
                // Groups of 3 (one partial chunk of the 4-head kernel) and 12 (chunks 8 + 4).
                (vec![200, 31], 3, 1, 32, -1, 0.0, true, true),
                (vec![77, 500], 12, 1, 16, 300, 0.0, true, true),
                (vec![129], 16, 2, 64, -1, 5.0, false, true),
            ] {
                let c = decode_case(&mut rng, dtype, lens, h, hkv, d, bs, wl, softcap, alibi, norm);
                for &paged in &[false, true] {
                    for &split in
                        &[SplitPolicy::Fixed(1), SplitPolicy::Fixed(3), SplitPolicy::Fixed(17), SplitPolicy::Auto]
                    {
                        let what = format!("decode {dtype} d={d} lens={lens:?} h={h} hkv={hkv} bs={bs} wl={wl} paged={paged} {split:?}");
                        let out = run_decode_gpu(&gpu, &c, paged, split).unwrap_or_else(|e| panic!("{what}: {e}"));
                        c.check(&what, rng.seed, &out, bound(dtype));
                    }
                }
            }
        }
    }
}

#[test]
fn decode_gpu_long_context() {
    let Some(gpu) = gpu(concat!(module_path!(), "::decode_gpu_long_context")) else { return };
    let mut rng = Rng::from_time();
    let lens: [usize; 2] = if gpu.info().emulated { [2500, 2049] } else { [20000, 16385] }; // emulated: ~10 splits instead of ~80, partial blocks; CPU time
    for &dtype in &[DType::F16, DType::BF16] {
        let c = decode_case(&mut rng, dtype, &lens, 2, 1, 128, 256, -1, 0.0, false, true);
        for &paged in &[false, true] {
            let out = run_decode_gpu(&gpu, &c, paged, SplitPolicy::Auto).unwrap();
            c.check(&format!("decode long {dtype} paged={paged}"), rng.seed, &out, bound(dtype));
        }
    }
}

/// Which prefill kernel runs: on compute capability 9.0 (the emulated device presents 9.0 unless
/// ATTN_KERNELS_EMU_CC says 8.0) the sm_90a kernel for every plan (v1 and v2, d = 64 and 128,
/// masks, ALiBi, softcap, GQA, varlen, fused RoPE through the query and key pre-passes); below
/// 9.0 (or with ATTN_KERNELS_ATTENTION_PATH=mma) the mma.sync kernel. Each pick then matches the
/// float64 oracle.
#[test]
fn hopper_path_dispatch() {
    use attn_kernels::diff_attention::cuda::DiffAttentionLaunch;
    let Some(gpu) = gpu(concat!(module_path!(), "::hopper_path_dispatch")) else { return };
    let hopper = expect_hopper_path(&gpu, "hopper_path_dispatch");
    let mut rng = Rng::from_time();
    let mut cases = Vec::new();
    let mut s = spec(DiffVariant::V1, DType::BF16, 1, 130, 70, 4, 2, 64);
    s.causal = true;
    s.norm = true;
    cases.push(s);
    let mut s = spec(DiffVariant::V1, DType::F16, 1, 64, 200, 2, 1, 128);
    (s.alibi, s.softcap, s.norm) = (true, 10.0, true);
    cases.push(s);
    let mut s = spec(DiffVariant::V2, DType::F16, 2, 70, 90, 2, 2, 64);
    (s.wl, s.wr) = (30, 0);
    cases.push(s);
    let mut s = spec(DiffVariant::V2, DType::BF16, 1, 60, 90, 2, 1, 128);
    (s.rope, s.pos_ids, s.causal) = (Some(64), true, true);
    cases.push(s);
    let mut s = spec(DiffVariant::V1, DType::BF16, 1, 0, 0, 2, 1, 64);
    (s.rope, s.causal, s.varlen) = (Some(32), true, Some(vec![(50, 90), (1, 1), (70, 40)]));
    cases.push(s);
    for s in cases {
        let (cfg, inp) = build(&mut rng, &s);
        let launch = DiffAttentionLaunch::new(&gpu, &cfg, &inp.args()).unwrap();
        let sm90 = matches!(launch.kernel().key, Key::DiffPrefillSm90 { .. });
        assert_eq!(sm90, hopper, "{:?} picked {}; {s:?}", gpu.info().compute_capability, launch.kernel().name);
        check_diff(&gpu, &mut rng, &s);
    }
}

/// The persistent sm_90a kernel (one block per SM walking the block tiles) with more tiles than
/// SMs, so blocks run several and the ring, the Q area and the exchange carry over between
/// tiles: dense with one query block per diff head (v1 at d = 128: two exchange rounds; v2),
/// then varlen with an empty sequence whose tiles the blocks skip. On other paths (compute
/// capability 8.x) the same cases check the mma.sync kernel.
#[test]
fn persistent_blocks_take_several_tiles() {
    let Some(gpu) = gpu(concat!(module_path!(), "::persistent_blocks_take_several_tiles")) else { return };
    let sms = gpu.info().multiprocessors.max(1) as usize;
    let mut rng = Rng::from_time();
    let h = sms + 4;
    let hkv = (1..=4).rev().find(|g| h % g == 0).unwrap_or(1);
    let mut s = spec(DiffVariant::V1, DType::BF16, 1, 40, 70, h, hkv, 128);
    (s.causal, s.norm) = (true, true);
    check_diff(&gpu, &mut rng, &s);
    let mut s = spec(DiffVariant::V2, DType::F16, 1, 40, 150, h, hkv, 64);
    s.alibi = true;
    check_diff(&gpu, &mut rng, &s);
    // 3 sequences (10, 0 and 150 queries: 3 query blocks each in the numbering) x h heads.
    let h = sms.div_ceil(9) + 1;
    for causal in [false, true] {
        let mut s = spec(DiffVariant::V1, DType::BF16, 1, 0, 0, h, 1, 64);
        (s.causal, s.norm, s.varlen) = (causal, true, Some(vec![(10, 50), (0, 40), (150, 130)]));
        check_diff(&gpu, &mut rng, &s);
    }
}

/// Every prefill instance (variant x dtype x d x ALiBi x softcap: each its own sm_90a entry point
/// on compute capability 9.0) on one small causal GQA shape with a partial last tile, against the
/// float64 oracle.
#[test]
fn every_prefill_instance() {
    let Some(gpu) = gpu(concat!(module_path!(), "::every_prefill_instance")) else { return };
    let mut rng = Rng::from_time();
    for variant in [DiffVariant::V1, DiffVariant::V2] {
        for dtype in [DType::F16, DType::BF16] {
            for d in [64, 128] {
                for (alibi, softcap) in [(false, false), (true, false), (false, true), (true, true)] {
                    let mut s = spec(variant, dtype, 1, 70, 90, 2, 1, d);
                    (s.causal, s.alibi, s.norm) = (true, alibi, variant == DiffVariant::V1);
                    s.softcap = if softcap { 8.0 } else { 0.0 };
                    check_diff(&gpu, &mut rng, &s);
                }
            }
        }
    }
}

/// CPU: every kernel the Rust side can launch is in the kernel table and exported by its compiled
/// module, and the dynamic shared memory each needs fits the opt-in limit of an A100 (163 KB) /
/// H100 (227 KB).
#[test]
fn kernel_names_and_smem_match_the_build() {
    use attn_kernels::diff_attention::cuda::{decode_smem_bytes, launched_kernels, prefill_smem_bytes};
    let compiled = attn_kernels::runtime::kernels_compiled();
    for key in launched_kernels() {
        let k = attn_kernels::runtime::find_kernel(key).unwrap_or_else(|| panic!("no kernel {key:?} in the table"));
        let m = attn_kernels::runtime::MODULES
            .iter()
            .find(|m| m.name == k.module)
            .unwrap_or_else(|| panic!("no module {} in the build", k.module));
        assert!(m.kernels.contains(&k.name), "module {} does not export {} (exports {:?})", k.module, k.name, m.kernels);
        if compiled {
            assert!(m.ptxas_report.contains(k.name), "no ptxas report for {}", k.name);
        }
        // sm_90a kernels need an H100's limit only
        let limit = if matches!(k.key, Key::DiffPrefillSm90 { .. }) { 232_448 } else { 166_912 };
        assert!(k.smem_bytes <= limit, "{k:?}");
    }
    for variant in [DiffVariant::V1, DiffVariant::V2] {
        for d in [64, 128] {
            assert!(prefill_smem_bytes(variant, d) <= 166_912, "{variant:?} d={d}");
        }
    }
    assert_eq!(prefill_smem_bytes(DiffVariant::V1, 128), 163_840);
    for gm in [1, 2, 4, 8] {
        assert!(decode_smem_bytes(128, gm) <= 100 * 1024);
    }
}

/// Planned once, launched per layer: v1 varlen with RoPE position ids, ALiBi and the norm (weight
/// in the activation dtype or f32, drawn per run), three layers of fresh tensors on a fork of the
/// planning handle against the float64 oracle; tensors unlike the plan are typed errors.
#[test]
fn prefill_planned_once_launched_per_layer() {
    use attn_kernels::diff_attention::cuda::{DiffAttentionLaunch, DiffTensors};
    let Some(gpu) = gpu(concat!(module_path!(), "::prefill_planned_once_launched_per_layer")) else { return };
    let mut rng = Rng::from_time();
    let mut s = spec(DiffVariant::V1, DType::BF16, 1, 0, 0, 4, 2, 64);
    s.causal = true;
    s.alibi = true;
    s.norm = true;
    s.rope = Some(64);
    s.pos_ids = true;
    s.varlen = Some(vec![(70, 90), (0, 40), (130, 200)]);
    let (cfg, first) = build(&mut rng, &s);
    let launch = DiffAttentionLaunch::new(&gpu, &cfg, &first.args()).unwrap();
    let layer_gpu = gpu.fork().unwrap();
    for layer in 0..3 {
        let (_, mut inp) = build(&mut rng, &s);
        (inp.cu_q, inp.cu_k, inp.pos_q, inp.pos_k) = (first.cu_q.clone(), first.cu_k.clone(), first.pos_q.clone(), first.pos_k.clone());
        if let (Some(w), Some(w0)) = (&inp.norm, &first.norm) {
            inp.norm = Some(tensor(w0.dtype(), w.shape(), &w.to_f32_vec()));
        }
        let want = diff_attention_f64(&cfg, &inp.args()).unwrap();
        let mut store = Vec::new();
        let args = upload_args(&layer_gpu, &inp, &mut store);
        let out = launch.launch_alloc(&layer_gpu, DiffTensors::of(&args)).unwrap();
        let what = format!("layer {layer}");
        let tol = bound(s.dtype);
        compare(&what, rng.seed, "o", &down(&layer_gpu, &out.o), &want.o, tol);
        compare(&what, rng.seed, "lse1", &down(&layer_gpu, &out.lse1), &want.lse1, tol);
        compare(&what, rng.seed, "lse2", &down(&layer_gpu, &out.lse2), &want.lse2, tol);
    }
    let mut store = Vec::new();
    let args = upload_args(&layer_gpu, &first, &mut store);
    let x = DiffTensors::of(&args);
    let e = launch.launch_alloc(&layer_gpu, DiffTensors { norm_weight: None, ..x }).map(|_| ()).unwrap_err();
    assert_eq!(e.argument(), Some("norm_weight"), "{e}");
    let e = launch.launch_alloc(&layer_gpu, DiffTensors { q: x.k, ..x }).map(|_| ()).unwrap_err();
    assert_eq!(e.argument(), Some("q"), "{e}");
}

/// Fused decode planned once per step, launched per layer: three layers (fresh q, caches, lambda
/// and norm weight; same lengths) on a fork of the planning handle with 3 splits, each against its
/// float64 oracle; tensors unlike the plan are typed errors.
#[test]
fn decode_planned_once_launched_per_layer() {
    use attn_kernels::diff_attention::cuda::DiffDecodeLaunch;
    let Some(gpu) = gpu(concat!(module_path!(), "::decode_planned_once_launched_per_layer")) else { return };
    let mut rng = Rng::from_time();
    let lens = [300usize, 41, 129];
    // Layers of one model store their norm weights in one dtype (drawn per case): keep those
    // whose weight has the first case's dtype.
    let mut cases: Vec<DecodeCase> = Vec::new();
    while cases.len() < 3 {
        let c = decode_case(&mut rng, DType::BF16, &lens, 4, 2, 64, 16, -1, 0.0, true, true);
        let dt = |c: &DecodeCase| c.norm.as_ref().map(|w| w.dtype());
        if cases.first().is_none_or(|c0| dt(c0) == dt(&c)) {
            cases.push(c);
        }
    }
    let upload = |g: &Gpu, c: &DecodeCase| {
        [&c.q, &c.k_contig, &c.v_contig, &c.lambda, c.norm.as_ref().unwrap(), c.alibi.as_ref().unwrap()].map(|t| up(g, t))
    };
    let first = upload(&gpu, &cases[0]);
    let mut launch = DiffDecodeLaunch::new(&gpu, &cases[0].cfg, &args_of(&cases[0], &first), SplitPolicy::Fixed(3)).unwrap();
    let layer_gpu = gpu.fork().unwrap();
    for (layer, c) in cases.iter().enumerate() {
        let t = upload(&layer_gpu, c);
        let args = args_of(c, &t);
        let p = launch.plan().clone();
        let mut out = DiffAttentionOutput {
            o: layer_gpu.alloc_poisoned(p.dtype, &p.o_shape()).unwrap(),
            lse1: layer_gpu.alloc_poisoned(DType::F32, &p.lse_shape()).unwrap(),
            lse2: layer_gpu.alloc_poisoned(DType::F32, &p.lse_shape()).unwrap(),
        };
        launch.launch(&layer_gpu, &args, &mut out).unwrap();
        let host = DiffAttentionOutput { o: down(&layer_gpu, &out.o), lse1: down(&layer_gpu, &out.lse1), lse2: down(&layer_gpu, &out.lse2) };
        c.check(&format!("layer {layer}"), rng.seed, &host, bound(DType::BF16));
    }
    let t = upload(&layer_gpu, &cases[0]);
    let args = args_of(&cases[0], &t);
    let p = launch.plan().clone();
    let mut out = DiffAttentionOutput {
        o: layer_gpu.alloc(p.dtype, &p.o_shape()).unwrap(),
        lse1: layer_gpu.alloc(DType::F32, &p.lse_shape()).unwrap(),
        lse2: layer_gpu.alloc(DType::F32, &p.lse_shape()).unwrap(),
    };
    let e = launch.launch(&layer_gpu, &DiffDecodeArgs { alibi_slopes: None, ..args }, &mut out).unwrap_err();
    assert_eq!(e.argument(), Some("alibi_slopes"), "{e}");
    let e = launch.launch(&layer_gpu, &DiffDecodeArgs { lambda: args.q, ..args }, &mut out).unwrap_err();
    assert_eq!(e.argument(), Some("lambda"), "{e}");
}

/// The decode arguments of a case's contiguous cache from its uploaded tensors.
fn args_of<'a>(c: &'a DecodeCase, t: &'a [DeviceTensor; 6]) -> DiffDecodeArgs<'a, DeviceTensor> {
    let [q, k, v, lambda, norm, alibi] = t;
    DiffDecodeArgs { q, cache: c.cache(false, k, v), lambda, norm_weight: Some(norm), alibi_slopes: Some(alibi) }
}
