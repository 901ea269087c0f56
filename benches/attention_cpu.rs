//! CPU attention and differential attention throughput (the CPU reference path, so that
//! regressions show). Criterion's throughput is the useful FLOP count (allowed (i, j) pairs
//! times `2 (D + Dv)` per map), so its "elem/s" reads as FLOP/s; TFLOP/s is also printed from a
//! separate timed run.

use attn_kernels::attention::{alibi_slopes, attention_cpu, plan, AttentionArgs, AttentionConfig};
use attn_kernels::diff_attention::{diff_attention_cpu, DiffAttentionArgs, DiffAttentionConfig};
use attn_kernels::rope::RopeConfig;
use attn_kernels::tensor::{DType, Tensor};
use attn_kernels_harness::check::Rng;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use std::time::Instant;

fn rand_t(rng: &mut Rng, dtype: DType, shape: &[usize]) -> Tensor {
    Tensor::from_f32(dtype, shape, &rng.normal_vec(shape.iter().product())).unwrap()
}

fn yarn(d: usize) -> RopeConfig {
    serde_json::from_value(json!({"rotary_dim": d, "theta": 1e6, "max_position_embeddings": 131072,
        "scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}))
    .unwrap()
}

/// Median seconds of `n` runs of `f`.
fn time_s(n: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[n / 2]
}

fn attention(c: &mut Criterion) {
    let mut rng = Rng::from_time();
    let (b, s, hq, hkv, d) = (1usize, 2048usize, 8usize, 2usize, 128usize);
    let q = rand_t(&mut rng, DType::BF16, &[b, s, hq, d]);
    let k = rand_t(&mut rng, DType::BF16, &[b, s, hkv, d]);
    let v = rand_t(&mut rng, DType::BF16, &[b, s, hkv, d]);
    let slopes = Tensor::from_f32(DType::F32, &[hq], &alibi_slopes(hq)).unwrap();
    let mut g = c.benchmark_group("attention_cpu");
    g.sample_size(10);
    let cases = [
        ("bf16 [1,2048,8,128] kv2 causal", AttentionConfig { causal: true, ..Default::default() }, false),
        ("bf16 [1,2048,8,128] kv2 full", AttentionConfig::default(), false),
        ("bf16 [1,2048,8,128] kv2 causal alibi yarn", AttentionConfig { causal: true, rope: Some(yarn(d)), ..Default::default() }, true),
        ("bf16 [1,2048,8,128] kv2 window 256", AttentionConfig { window_left: 256, window_right: 0, ..Default::default() }, false),
    ];
    for (name, cfg, alibi) in cases {
        let mut args = AttentionArgs::new(&q, &k, &v);
        if alibi {
            args = args.with_alibi(&slopes);
        }
        let flops = plan(&cfg, &args).unwrap().flops();
        let secs = time_s(3, || {
            attention_cpu(&cfg, &args).unwrap();
        });
        println!("attention_cpu {name}: {:.1} ms, {:.4} TFLOP/s", secs * 1e3, flops / secs / 1e12);
        g.throughput(Throughput::Elements(flops as u64));
        g.bench_function(name, |bench| bench.iter(|| attention_cpu(&cfg, &args).unwrap()));
    }
    g.finish();
}

fn diff_attention(c: &mut Criterion) {
    let mut rng = Rng::from_time();
    let (b, s, h, hkv, d) = (1usize, 1024usize, 8usize, 4usize, 64usize);
    let q = rand_t(&mut rng, DType::BF16, &[b, s, 2 * h, d]);
    let k = rand_t(&mut rng, DType::BF16, &[b, s, 2 * hkv, d]);
    let v = rand_t(&mut rng, DType::BF16, &[b, s, hkv, 2 * d]);
    let lambda = Tensor::from_f32(DType::F32, &[h], &rng.uniform_vec(h, 0.1, 0.9)).unwrap();
    let w = Tensor::from_f32(DType::F32, &[2 * d], &rng.uniform_vec(2 * d, 0.5, 1.5)).unwrap();
    let cfg = DiffAttentionConfig { causal: true, lambda_init: Some(0.5), ..Default::default() };
    let args = DiffAttentionArgs::new(&q, &k, &v, &lambda).with_norm(&w);
    let flops = (b * s * (s + 1) / 2 * 2 * h) as f64 * 2.0 * (d + 2 * d) as f64;
    let secs = time_s(3, || {
        diff_attention_cpu(&cfg, &args).unwrap();
    });
    let name = "v1 bf16 q[1,1024,16,64] kv4 causal norm";
    println!("diff_attention_cpu {name}: {:.1} ms, {:.4} TFLOP/s", secs * 1e3, flops / secs / 1e12);
    let mut g = c.benchmark_group("diff_attention_cpu");
    g.sample_size(10);
    g.throughput(Throughput::Elements(flops as u64));
    g.bench_function(name, |bench| bench.iter(|| diff_attention_cpu(&cfg, &args).unwrap()));
    g.finish();
}

criterion_group!(benches, attention, diff_attention);
criterion_main!(benches);
