//! Fused differential attention vs the unfused baselines built from this library's own plain
//! kernels, all measured in the same run:
//! - prefill, d = 128, seqlen 4k..16k: fused v1 (with the RMSNorm) vs (a) two
//!   `attention_cuda` calls with the 2d-wide V + the subtract/RMSNorm epilogue kernel, and (b) four
//!   calls over the V halves (the vLLM way) + the epilogue. TFLOP/s count both maps,
//!   12 N^2 d per head (non-causal), for every row (the baselines do the same useful work); the
//!   plain attention kernel's own TFLOP/s (D = 128 with Dv = 128 and Dv = 256) is the reference
//!   for "at least 90% of the plain kernel".
//! - decode, context >= 16k: fused split-KV decode vs (a) two decode calls + epilogue and (b)
//!   four calls + epilogue, in ms and GB/s of the bytes the fused kernel must move, with the
//!   device copy bandwidth measured in the same run.
//!
//! Baseline inputs are prepared untimed in the layout each baseline wants (q1, q2, k1, k2 and the
//! V halves as separate contiguous tensors). The plain decode kernel needs D == Dv, so decode
//! baseline (a) runs it with D = Dv = 2d on the `[k1 | k2]` cache and a zero-padded query
//! (`[q1 | 0]`, `[0 | q2]`, scale 1/sqrt(d)): it reads 4d bytes-elements per key and call where
//! a D != Dv kernel would read 3d. Without a GPU the bench prints why and does nothing.

use attn_kernels::attention::cuda::attention_cuda_into;
use attn_kernels::attention::{AttentionArgs, AttentionConfig};
use attn_kernels::decode::cuda::{decode_cuda_with_index, DeviceKvIndex};
use attn_kernels::decode::{DecodeOptions, KvCacheRef, SplitPolicy};
use attn_kernels::diff_attention::cpu::DiffAttentionOutput;
use attn_kernels::diff_attention::cuda::{diff_attention_cuda_into, diff_decode_cuda_into, diff_epilogue_cuda};
use attn_kernels::diff_attention::{plan_diff, plan_diff_decode, DiffAttentionArgs, DiffAttentionConfig, DiffDecodeArgs};
use attn_kernels::tensor::{rel_error, DType, Tensor};
use attn_kernels::{DeviceTensor, Gpu, Result};
use attn_kernels_harness::bench::{bench_gpu, copy_bandwidth_gbs, median_ms};
use criterion::{criterion_group, criterion_main, Criterion};

const WARMUP: usize = 3;
const ITERS: usize = 20;

/// Fast uniform(-1, 1) values (xorshift): the bench needs gigabytes of inputs quickly.
fn fill(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

/// Heads `src_head(h)`, columns `cols` of a `[rows, H_src, W]` row-major buffer, as `[rows, n, cols.len()]`.
fn slice_heads(
    x: &[f32],
    rows: usize,
    hs: usize,
    w: usize,
    n: usize,
    cols: std::ops::Range<usize>,
    src_head: impl Fn(usize) -> usize,
) -> Vec<f32> {
    let mut y = Vec::with_capacity(rows * n * cols.len());
    for r in 0..rows {
        for h in 0..n {
            y.extend_from_slice(&x[(r * hs + src_head(h)) * w..][cols.clone()]);
        }
    }
    y
}

fn up(gpu: &Gpu, dtype: DType, shape: &[usize], v: &[f32]) -> DeviceTensor {
    gpu.upload(&Tensor::from_f32(dtype, shape, v).expect("shape")).expect("upload")
}

fn tflops(flops: f64, ms: f64) -> f64 {
    flops / (ms * 1e-3) / 1e12
}

fn prefill(gpu: &Gpu) -> Result<()> {
    let dtype = DType::BF16;
    let (h, hkv, d) = (16usize, 16usize, 128usize);
    println!(
        "\n== prefill v1 (norm), {dtype}, H = {h} (2H = {} q heads), Hkv = {hkv}, d = {d}, V width {}",
        2 * h,
        2 * d
    );
    println!(
        "{:<22} {:>9} {:>8} {:>9} {:>8} {:>9} {:>8} {:>7} {:>7} {:>9} {:>9} {:>9}",
        "B x N (mask)",
        "fused ms",
        "TF/s",
        "(a) ms",
        "TF/s",
        "(b) ms",
        "TF/s",
        "a/fused",
        "b/fused",
        "plain128",
        "plain256",
        "fused/p256"
    );
    for &(n, causal) in &[(4096usize, false), (8192, false), (16384, false), (8192, true)] {
        let b = (32768 / n).max(1);
        let rows = b * n;
        let qh = fill(rows * 2 * h * d, 1);
        let kh = fill(rows * 2 * hkv * d, 2);
        let vh = fill(rows * hkv * 2 * d, 3);
        let lam: Vec<f32> = (0..h).map(|i| 0.2 + 0.5 * i as f32 / h as f32).collect();
        let w: Vec<f32> = (0..2 * d).map(|i| 0.5 + (i % 7) as f32 * 0.1).collect();
        let q = up(gpu, dtype, &[b, n, 2 * h, d], &qh);
        let k = up(gpu, dtype, &[b, n, 2 * hkv, d], &kh);
        let v = up(gpu, dtype, &[b, n, hkv, 2 * d], &vh);
        let lambda = up(gpu, DType::F32, &[h], &lam);
        let norm = up(gpu, DType::F32, &[2 * d], &w);
        let cfg = DiffAttentionConfig { causal, lambda_init: Some(0.2), ..DiffAttentionConfig::default() };
        let args = DiffAttentionArgs::new(&q, &k, &v, &lambda).with_norm(&norm);
        let dp = plan_diff(&cfg, &args)?;
        let mut out = DiffAttentionOutput {
            o: gpu.alloc(dtype, &dp.o_shape())?,
            lse1: gpu.alloc(DType::F32, &dp.lse_shape())?,
            lse2: gpu.alloc(DType::F32, &dp.lse_shape())?,
        };
        let fused_ms = median_ms(gpu, WARMUP, ITERS, || diff_attention_cuda_into(gpu, &cfg, &args, &mut out))?;

        // Baseline inputs, untimed.
        let q1 = up(gpu, dtype, &[b, n, h, d], &slice_heads(&qh, rows, 2 * h, d, h, 0..d, |i| 2 * i));
        let q2 = up(gpu, dtype, &[b, n, h, d], &slice_heads(&qh, rows, 2 * h, d, h, 0..d, |i| 2 * i + 1));
        let k1 = up(gpu, dtype, &[b, n, hkv, d], &slice_heads(&kh, rows, 2 * hkv, d, hkv, 0..d, |g| 2 * g));
        let k2 = up(gpu, dtype, &[b, n, hkv, d], &slice_heads(&kh, rows, 2 * hkv, d, hkv, 0..d, |g| 2 * g + 1));
        let v_lo = up(gpu, dtype, &[b, n, hkv, d], &slice_heads(&vh, rows, hkv, 2 * d, hkv, 0..d, |g| g));
        let v_hi = up(gpu, dtype, &[b, n, hkv, d], &slice_heads(&vh, rows, hkv, 2 * d, hkv, d..2 * d, |g| g));
        let acfg = AttentionConfig { causal, ..AttentionConfig::default() };
        let mut o1 = gpu.alloc(dtype, &[b, n, h, 2 * d])?;
        let mut o2 = gpu.alloc(dtype, &[b, n, h, 2 * d])?;
        let mut o_base = gpu.alloc(dtype, &[b, n, h, 2 * d])?;
        let scale = 1.0 - 0.2f32;
        let mut run_a = || -> Result<()> {
            attention_cuda_into(gpu, &acfg, &AttentionArgs::new(&q1, &k1, &v), &mut o1, None)?;
            attention_cuda_into(gpu, &acfg, &AttentionArgs::new(&q2, &k2, &v), &mut o2, None)?;
            diff_epilogue_cuda(gpu, &o1, None, &o2, None, &lambda, Some(&norm), scale, cfg.eps as f32, &mut o_base)
        };
        let a_ms = median_ms(gpu, WARMUP, ITERS, &mut run_a);
        // Sanity: fused and baseline (a) agree.
        let agree = match &a_ms {
            Ok(_) => {
                let x = gpu.download(&out.o)?.to_f64_vec();
                let y = gpu.download(&o_base)?.to_f64_vec();
                format!("{:.1e}", rel_error(&x, &y))
            }
            Err(_) => "-".into(),
        };
        let mut parts: Vec<DeviceTensor> = (0..4).map(|_| gpu.alloc(dtype, &[b, n, h, d])).collect::<Result<_>>()?;
        let mut run_b = || -> Result<()> {
            let [p11, p12, p21, p22] = &mut parts[..] else { unreachable!() };
            attention_cuda_into(gpu, &acfg, &AttentionArgs::new(&q1, &k1, &v_lo), p11, None)?;
            attention_cuda_into(gpu, &acfg, &AttentionArgs::new(&q1, &k1, &v_hi), p12, None)?;
            attention_cuda_into(gpu, &acfg, &AttentionArgs::new(&q2, &k2, &v_lo), p21, None)?;
            attention_cuda_into(gpu, &acfg, &AttentionArgs::new(&q2, &k2, &v_hi), p22, None)?;
            diff_epilogue_cuda(
                gpu,
                p11,
                Some(p12),
                p21,
                Some(p22),
                &lambda,
                Some(&norm),
                scale,
                cfg.eps as f32,
                &mut o_base,
            )
        };
        let b_ms = median_ms(gpu, WARMUP, ITERS, &mut run_b);
        // The plain kernel alone (one map), for the 90% target.
        let plain128 = median_ms(gpu, WARMUP, ITERS, || {
            attention_cuda_into(gpu, &acfg, &AttentionArgs::new(&q1, &k1, &v_lo), &mut parts[0], None)
        });
        let plain256 = median_ms(gpu, WARMUP, ITERS, || {
            attention_cuda_into(gpu, &acfg, &AttentionArgs::new(&q1, &k1, &v), &mut o1, None)
        });

        let causal_factor = if causal { 0.5 } else { 1.0 };
        let nn = (n * n) as f64 * causal_factor * b as f64;
        let diff_flops = 12.0 * nn * d as f64 * h as f64;
        let fmt = |r: &Result<f64>, flops: f64| match r {
            Ok(ms) => (format!("{ms:.3}"), format!("{:.0}", tflops(flops, *ms))),
            Err(e) => {
                eprintln!("  baseline unavailable: {e}");
                ("-".into(), "-".into())
            }
        };
        let (ams, atf) = fmt(&a_ms, diff_flops);
        let (bms, btf) = fmt(&b_ms, diff_flops);
        let ratio = |r: &Result<f64>| r.as_ref().map_or("-".into(), |ms| format!("{:.2}x", ms / fused_ms));
        let p128 =
            plain128.as_ref().map_or("-".into(), |ms| format!("{:.0}", tflops(4.0 * nn * d as f64 * h as f64, *ms)));
        let p256_tf = plain256.as_ref().map(|ms| tflops(6.0 * nn * d as f64 * h as f64, *ms));
        let fused_tf = tflops(diff_flops, fused_ms);
        println!(
            "{:<22} {fused_ms:>9.3} {fused_tf:>8.0} {ams:>9} {atf:>8} {bms:>9} {btf:>8} {:>7} {:>7} {p128:>9} {:>9} {:>9}   rel(fused, a) = {agree}",
            format!("{b} x {n}{}", if causal { " causal" } else { "" }),
            ratio(&a_ms),
            ratio(&b_ms),
            p256_tf.as_ref().map_or("-".into(), |t| format!("{t:.0}")),
            p256_tf.as_ref().map_or("-".into(), |t| format!("{:.0}%", 100.0 * fused_tf / t)),
        );
    }
    Ok(())
}

fn decode(gpu: &Gpu, copy_gbs: f64) -> Result<()> {
    let dtype = DType::BF16;
    let d = 128usize;
    println!("\n== decode v1 (norm), {dtype}, d = {d}; GB/s of the bytes the fused kernel must move; copy = {copy_gbs:.0} GB/s");
    println!(
        "{:<30} {:>9} {:>7} {:>6} {:>9} {:>7} {:>9} {:>7} {:>7} {:>7} {:>10}",
        "B x ctx, H/Hkv",
        "fused ms",
        "GB/s",
        "%copy",
        "(a) ms",
        "GB/s",
        "(b) ms",
        "GB/s",
        "a/fused",
        "b/fused",
        "paged ms"
    );
    for &(b, ctx, h, hkv) in &[(4usize, 16384usize, 16usize, 16usize), (2, 65536, 16, 16), (4, 32768, 32, 8)] {
        let row = hkv * 2 * d;
        let kh = fill(b * ctx * row, 11);
        let vh = fill(b * ctx * row, 12);
        let qh = fill(b * 2 * h * d, 13);
        let lam: Vec<f32> = (0..h).map(|i| 0.2 + 0.5 * i as f32 / h as f32).collect();
        let w: Vec<f32> = (0..2 * d).map(|i| 0.5 + (i % 7) as f32 * 0.1).collect();
        let kc = up(gpu, dtype, &[b, ctx, hkv, 2 * d], &kh);
        let vc = up(gpu, dtype, &[b, ctx, hkv, 2 * d], &vh);
        let q = up(gpu, dtype, &[b, 1, 2 * h, d], &qh);
        let lambda = up(gpu, DType::F32, &[h], &lam);
        let norm = up(gpu, DType::F32, &[2 * d], &w);
        let seqlens = vec![ctx as i32; b];
        let cfg = DiffAttentionConfig { lambda_init: Some(0.2), ..DiffAttentionConfig::default() };
        let cache = KvCacheRef::Contiguous { k: &kc, v: &vc, cache_seqlens: &seqlens };
        let args = DiffDecodeArgs { q: &q, cache, lambda: &lambda, norm_weight: Some(&norm), alibi_slopes: None };
        let p = plan_diff_decode(&cfg, &args)?;
        let index = DeviceKvIndex::new(gpu, &cache)?;
        let mut out = DiffAttentionOutput {
            o: gpu.alloc(dtype, &p.o_shape())?,
            lse1: gpu.alloc(DType::F32, &p.lse_shape())?,
            lse2: gpu.alloc(DType::F32, &p.lse_shape())?,
        };
        let fused_ms = median_ms(gpu, WARMUP, ITERS, || {
            diff_decode_cuda_into(gpu, &cfg, &args, &index, SplitPolicy::Auto, &mut out)
        })?;
        let bytes = p.bytes_moved();
        let gbs = |ms: f64| bytes / (ms * 1e-3) / 1e9;

        // Paged copy of the same cache (block 256, identity table), fused only.
        let bs = 256usize;
        let max_blocks = ctx / bs;
        let table: Vec<i32> = (0..(b * max_blocks) as i32).collect();
        let kp = gpu.upload(&gpu.download(&kc)?.reshape(&[b * max_blocks, bs, hkv, 2 * d])?)?;
        let vp = gpu.upload(&gpu.download(&vc)?.reshape(&[b * max_blocks, bs, hkv, 2 * d])?)?;
        let pcache = KvCacheRef::Paged { k: &kp, v: &vp, block_table: &table, max_blocks, cache_seqlens: &seqlens };
        let pargs = DiffDecodeArgs { cache: pcache, ..args };
        let pindex = DeviceKvIndex::new(gpu, &pcache)?;
        let paged_ms = median_ms(gpu, WARMUP, ITERS, || {
            diff_decode_cuda_into(gpu, &cfg, &pargs, &pindex, SplitPolicy::Auto, &mut out)
        })?;
        drop((kp, vp));

        // (a): two plain decode calls with D = Dv = 2d on the [k1 | k2] cache, zero-padded q.
        let mut q1p = vec![0f32; b * h * 2 * d];
        let mut q2p = vec![0f32; b * h * 2 * d];
        for bb in 0..b {
            for hh in 0..h {
                let src = |m: usize| &qh[((bb * 2 * h) + 2 * hh + m) * d..][..d];
                q1p[(bb * h + hh) * 2 * d..][..d].copy_from_slice(src(0));
                q2p[(bb * h + hh) * 2 * d + d..][..d].copy_from_slice(src(1));
            }
        }
        let q1p = up(gpu, dtype, &[b, 1, h, 2 * d], &q1p);
        let q2p = up(gpu, dtype, &[b, 1, h, 2 * d], &q2p);
        let acfg = AttentionConfig { softmax_scale: Some(1.0 / (d as f64).sqrt()), ..AttentionConfig::default() };
        let opts = DecodeOptions::default();
        let kv_index = DeviceKvIndex::new(gpu, &cache)?;
        let mut o1 = gpu.alloc(dtype, &[b, 1, h, 2 * d])?;
        let mut o2 = gpu.alloc(dtype, &[b, 1, h, 2 * d])?;
        let mut lse = gpu.alloc(DType::F32, &[b, h, 1])?;
        let mut o_base = gpu.alloc(dtype, &[b, 1, h, 2 * d])?;
        let a_ms = median_ms(gpu, WARMUP, ITERS, || {
            decode_cuda_with_index(gpu, &acfg, &q1p, &cache, &kv_index, None, &opts, &mut o1, &mut lse)?;
            decode_cuda_with_index(gpu, &acfg, &q2p, &cache, &kv_index, None, &opts, &mut o2, &mut lse)?;
            diff_epilogue_cuda(gpu, &o1, None, &o2, None, &lambda, Some(&norm), 0.8, cfg.eps as f32, &mut o_base)
        });
        let agree = match &a_ms {
            Ok(_) => {
                let x = gpu.download(&out.o)?.to_f64_vec();
                let y = gpu.download(&o_base)?.to_f64_vec();
                format!("{:.1e}", rel_error(&x, &y))
            }
            Err(e) => format!("(a) unavailable: {e}"),
        };
        drop((q1p, q2p, o1, o2));

        // (b): four plain decode calls with D = Dv = d over split caches.
        let rows = b * ctx;
        let half = |src: &[f32], cols: std::ops::Range<usize>| {
            up(gpu, dtype, &[b, ctx, hkv, d], &slice_heads(src, rows, hkv, 2 * d, hkv, cols, |g| g))
        };
        let (k1, k2) = (half(&kh, 0..d), half(&kh, d..2 * d));
        let (v_lo, v_hi) = (half(&vh, 0..d), half(&vh, d..2 * d));
        drop((kh, vh));
        let q1 = up(gpu, dtype, &[b, 1, h, d], &slice_heads(&qh, b, 2 * h, d, h, 0..d, |i| 2 * i));
        let q2 = up(gpu, dtype, &[b, 1, h, d], &slice_heads(&qh, b, 2 * h, d, h, 0..d, |i| 2 * i + 1));
        let caches = [(&k1, &v_lo), (&k1, &v_hi), (&k2, &v_lo), (&k2, &v_hi)].map(|(k, v)| KvCacheRef::Contiguous {
            k,
            v,
            cache_seqlens: &seqlens,
        });
        let idx = DeviceKvIndex::new(gpu, &caches[0])?;
        let acfg = AttentionConfig::default();
        let mut parts: Vec<DeviceTensor> = (0..4).map(|_| gpu.alloc(dtype, &[b, 1, h, d])).collect::<Result<_>>()?;
        let b_ms = median_ms(gpu, WARMUP, ITERS, || {
            let [p11, p12, p21, p22] = &mut parts[..] else { unreachable!() };
            decode_cuda_with_index(gpu, &acfg, &q1, &caches[0], &idx, None, &opts, p11, &mut lse)?;
            decode_cuda_with_index(gpu, &acfg, &q1, &caches[1], &idx, None, &opts, p12, &mut lse)?;
            decode_cuda_with_index(gpu, &acfg, &q2, &caches[2], &idx, None, &opts, p21, &mut lse)?;
            decode_cuda_with_index(gpu, &acfg, &q2, &caches[3], &idx, None, &opts, p22, &mut lse)?;
            diff_epilogue_cuda(
                gpu,
                p11,
                Some(p12),
                p21,
                Some(p22),
                &lambda,
                Some(&norm),
                0.8,
                cfg.eps as f32,
                &mut o_base,
            )
        });
        let fmt = |r: &Result<f64>| match r {
            Ok(ms) => (format!("{ms:.3}"), format!("{:.0}", gbs(*ms)), format!("{:.2}x", ms / fused_ms)),
            Err(e) => {
                eprintln!("  baseline unavailable: {e}");
                ("-".into(), "-".into(), "-".into())
            }
        };
        let (ams, ag, ar) = fmt(&a_ms);
        let (bms, bg, br) = fmt(&b_ms);
        println!(
            "{:<30} {fused_ms:>9.3} {:>7.0} {:>5.0}% {ams:>9} {ag:>7} {bms:>9} {bg:>7} {ar:>7} {br:>7} {paged_ms:>10.3}   rel(fused, a) = {agree}",
            format!("{b} x {ctx}, {h}/{hkv}"),
            gbs(fused_ms),
            100.0 * gbs(fused_ms) / copy_gbs,
        );
    }
    Ok(())
}

fn gpu_benches(_c: &mut Criterion) {
    let Some(gpu) = bench_gpu() else { return };
    let copy = match copy_bandwidth_gbs(&gpu, 1 << 30, 20) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("diff_attention bench: copy bandwidth probe failed: {e}");
            return;
        }
    };
    println!("diff_attention gpu: {} — device copy bandwidth {copy:.0} GB/s (same run)", gpu.info().name);
    if let Err(e) = prefill(&gpu) {
        eprintln!("prefill bench failed: {e}");
    }
    if let Err(e) = decode(&gpu, copy) {
        eprintln!("decode bench failed: {e}");
    }
}

criterion_group!(benches, gpu_benches);
criterion_main!(benches);
