//! Chunked tensor-core prefill of `linear_attention` against the recurrent kernel, in tokens/s,
//! at B = 8, H = 32, K = V = 128, T = 4k and 16k (the target: at least 5x the recurrent
//! kernel at 16k). GLA-style per-key decays (the tensor-core diagonal path), RWKV-6-style
//! strong per-key decays with the bonus `u` (f32 diagonal path) and Mamba-2-style scalar
//! decays. Inputs (1 to 4 GB) are far larger than the H100's 50 MB L2. Without a GPU it prints
//! why and measures nothing.

use attn_kernels::linear::chunked::linear_attention_chunked_cuda;
use attn_kernels::linear::cuda::{linear_attention_cuda, LinearMode};
use attn_kernels::linear::{LinearArgs, LinearAttentionConfig};
use attn_kernels::tensor::{DType, Tensor};
use attn_kernels_harness::bench::{bench_gpu, median_ms};
use attn_kernels_harness::check::Rng;
use criterion::{criterion_group, criterion_main, Criterion};

#[derive(Clone, Copy, Debug)]
enum Decay {
    /// GLA: per-key g = logsigmoid(x) / 16, small.
    Gla,
    /// RWKV-6: per-key g = -exp(x), up to a few per step, with the bonus u.
    Rwkv6,
    /// Mamba-2 / simple GLA: one scalar per (token, head).
    Scalar,
}

/// `n` values cycling through `pool`, times `s`.
fn tiled(pool: Vec<f32>, n: usize, s: f32) -> Vec<f32> {
    pool.iter().cycle().take(n).map(|x| x * s).collect()
}

fn gpu(_c: &mut Criterion) {
    let Some(gpu) = bench_gpu() else { return };
    let (b, h, k, v) = (8usize, 32usize, 128usize, 128usize);
    let mut rng = Rng::from_time();
    println!("linear_attention chunked vs recurrent on {} (B={b} H={h} K={k} V={v}, bf16)", gpu.info().name);
    println!("{:<26} {:>10} {:>12} {:>10} {:>12} {:>8}", "case", "chunked ms", "Mtok/s", "recur. ms", "Mtok/s", "speedup");
    for t in [4096usize, 16384] {
        let rows = b * t;
        // A million random values repeated: drawing 10^9 normals would dominate the bench run.
        let rand = |rng: &mut Rng, n: usize, s: f32| tiled(rng.normal_vec(1 << 20), n, s);
        let up = |shape: &[usize], vals: &[f32]| gpu.upload(&Tensor::from_f32(DType::BF16, shape, vals).unwrap()).unwrap();
        let q = up(&[b, t, h, k], &rand(&mut rng, rows * h * k, 1.0));
        let kk = up(&[b, t, h, k], &rand(&mut rng, rows * h * k, (k as f32).powf(-0.5)));
        let vv = up(&[b, t, h, v], &rand(&mut rng, rows * h * v, 1.0));
        for decay in [Decay::Gla, Decay::Rwkv6, Decay::Scalar] {
            let (g, u) = match decay {
                Decay::Gla => {
                    let g: Vec<f32> = (0..1 << 20).map(|_| -(1.0 + (-rng.normal()).exp()).ln() / 16.0).collect();
                    (up(&[b, t, h, k], &tiled(g, rows * h * k, 1.0)), None)
                }
                Decay::Rwkv6 => {
                    let g: Vec<f32> = (0..1 << 20).map(|_| -rng.uniform(-6.0, 1.0).exp()).collect();
                    (up(&[b, t, h, k], &tiled(g, rows * h * k, 1.0)), Some(up(&[h, k], &rand(&mut rng, h * k, 0.5))))
                }
                Decay::Scalar => {
                    let g: Vec<f32> = (0..rows * h).map(|_| -rng.uniform(0.001, 0.5)).collect();
                    (up(&[b, t, h], &g), None)
                }
            };
            let args = LinearArgs { q: &q, k: &kk, v: &vv, g: Some(&g), u: u.as_ref(), initial_state: None, cu_seqlens: None };
            let cfg = LinearAttentionConfig::default();
            let chunked = median_ms(&gpu, 3, 10, || linear_attention_chunked_cuda(&gpu, &cfg, &args).map(|_| ()));
            let recurrent = median_ms(&gpu, 1, 3, || linear_attention_cuda(&gpu, &cfg, &args, LinearMode::Recurrent).map(|_| ()));
            let mtok = |ms: f64| rows as f64 / (ms * 1e-3) / 1e6;
            let case = format!("T={t} {decay:?}");
            match (chunked, recurrent) {
                (Ok(c), Ok(r)) => {
                    println!("{case:<26} {c:>10.3} {:>12.1} {r:>10.3} {:>12.1} {:>7.2}x", mtok(c), mtok(r), r / c)
                }
                (c, r) => println!("{case:<26} chunked: {c:?}  recurrent: {r:?}"),
            }
        }
    }
}

criterion_group!(benches, gpu);
criterion_main!(benches);
