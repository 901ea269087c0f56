//! GPU throughput of the recurrent linear-attention kernels (`kernels/linear/recurrent.cu`,
//! `rwkv4.cu`).
//!
//! - prefill: tokens/s (one token = one step of every head of one sequence) for
//!   B = 8, H = 32, K = V = 64 and 128, T = 1k .. 16k, bf16: GLA-style `linear_attention`
//!   (per-token-key decay), RWKV-6 (plus bonus), RWKV-7 `delta_rule`; the chunked kernel
//!   (LinearMode::Auto) beside the recurrent one for linear_attention.
//! - decode: one token for 1 .. 1024 sequences through a 1024-slot state pool, H = 32, in GB/s
//!   (state read and written once, plus q, k, v, g, a, b and o) against the device copy bandwidth
//!   measured in the same run. Target (H100): >= 75% of copy from 256 sequences on. Below ~64
//!   sequences the states fit in L2 and the figure is not a DRAM bandwidth.
//!
//! Without a GPU (or without compiled kernels) it prints why and measures nothing.

use attn_kernels::linear::cuda::*;
use attn_kernels::linear::*;
use attn_kernels::tensor::{DType, Tensor};
use attn_kernels::{DeviceTensor, Gpu, Result};
use attn_kernels_harness::bench::{bench_gpu, copy_bandwidth_gbs, median_ms};
use attn_kernels_harness::check::Rng;
use criterion::{criterion_group, criterion_main, Criterion};

fn dev(gpu: &Gpu, rng: &mut Rng, dtype: DType, shape: &[usize], lo: f32, hi: f32) -> DeviceTensor {
    let n = shape.iter().product();
    gpu.upload(&Tensor::from_f32(dtype, shape, &rng.uniform_vec(n, lo, hi)).unwrap()).unwrap()
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Op {
    /// linear_attention, per-token-key decay (GLA / RWKV-6 without bonus).
    Gla,
    /// linear_attention with bonus u (RWKV-6).
    Rwkv6,
    /// delta_rule, RWKV-7 parameterisation.
    Rwkv7,
}

struct Inputs {
    q: DeviceTensor,
    k: DeviceTensor,
    v: DeviceTensor,
    g: DeviceTensor,
    u: DeviceTensor,
    a: DeviceTensor,
    b: DeviceTensor,
}

fn inputs(gpu: &Gpu, rng: &mut Rng, op: Op, dims: [usize; 4], vd: usize) -> Inputs {
    let [b, t, h, k] = dims;
    let dt = DType::BF16;
    let small = |gpu: &Gpu, rng: &mut Rng| dev(gpu, rng, dt, &[1], 0.0, 1.0);
    Inputs {
        q: dev(gpu, rng, dt, &[b, t, h, k], -1.0, 1.0),
        k: dev(gpu, rng, dt, &[b, t, h, k], -0.2, 0.2),
        v: dev(gpu, rng, dt, &[b, t, h, vd], -1.0, 1.0),
        g: dev(gpu, rng, dt, &[b, t, h, k], -0.5, -0.01),
        u: dev(gpu, rng, dt, &[h, k], -1.0, 1.0),
        a: if op == Op::Rwkv7 { dev(gpu, rng, dt, &[b, t, h, k], -0.2, 0.0) } else { small(gpu, rng) },
        b: if op == Op::Rwkv7 { dev(gpu, rng, dt, &[b, t, h, k], 0.0, 0.2) } else { small(gpu, rng) },
    }
}

fn run(gpu: &Gpu, op: Op, x: &Inputs, mode: LinearMode) -> Result<()> {
    match op {
        Op::Gla | Op::Rwkv6 => {
            let mut args = LinearArgs::new(&x.q, &x.k, &x.v).with_g(&x.g);
            if op == Op::Rwkv6 {
                args = args.with_u(&x.u);
            }
            linear_attention_cuda(gpu, &LinearAttentionConfig::default(), &args, mode).map(drop)
        }
        Op::Rwkv7 => {
            let args = DeltaRuleArgs::new(&x.q, &x.k, &x.v, &x.a, &x.b).with_g(&x.g);
            delta_rule_cuda_mode(gpu, &DeltaRuleConfig { scale: Some(1.0) }, &args, mode).map(drop)
        }
    }
}

fn run_slots(gpu: &Gpu, op: Op, x: &Inputs, pool: &mut StatePool, ids: &[i32]) -> Result<()> {
    match op {
        Op::Gla | Op::Rwkv6 => {
            let mut args = LinearArgs::new(&x.q, &x.k, &x.v).with_g(&x.g);
            if op == Op::Rwkv6 {
                args = args.with_u(&x.u);
            }
            linear_attention_cuda_slots(gpu, &LinearAttentionConfig::default(), &args, pool, ids).map(drop)
        }
        Op::Rwkv7 => {
            let args = DeltaRuleArgs::new(&x.q, &x.k, &x.v, &x.a, &x.b).with_g(&x.g);
            delta_rule_cuda_slots(gpu, &DeltaRuleConfig { scale: Some(1.0) }, &args, pool, ids).map(drop)
        }
    }
}

fn prefill(gpu: &Gpu, rng: &mut Rng) {
    println!("\nprefill (bf16, B = 8, H = 32): tokens/s = B*T / time");
    println!("{:<40} {:>10} {:>12}", "case", "ms", "Mtok/s");
    let (b, h) = (8usize, 32usize);
    for kd in [64usize, 128] {
        for t in [1024usize, 4096, 16384] {
            for op in [Op::Gla, Op::Rwkv6, Op::Rwkv7] {
                let x = inputs(gpu, rng, op, [b, t, h, kd], kd);
                let modes: &[LinearMode] =
                    if op == Op::Rwkv7 { &[LinearMode::Recurrent] } else { &[LinearMode::Recurrent, LinearMode::Auto] };
                for &mode in modes {
                    let iters = if t >= 16384 { 3 } else { 5 };
                    let label = format!("{op:?} K=V={kd} T={t} {mode:?}");
                    match median_ms(gpu, 1, iters, || run(gpu, op, &x, mode)) {
                        Ok(ms) => println!("{label:<40} {ms:>10.3} {:>12.1}", (b * t) as f64 / (ms * 1e-3) / 1e6),
                        Err(e) => println!("{label:<40} error: {e}"),
                    }
                }
            }
        }
    }
}

fn decode(gpu: &Gpu, rng: &mut Rng, copy: f64) {
    println!("\ndecode (bf16 inputs, f32 state pool of 1024 slots, H = 32, T = 1)");
    println!("{:<34} {:>10} {:>10} {:>8}", "case", "ms", "GB/s", "% copy");
    let h = 32usize;
    let slots = 1024usize;
    for kd in [64usize, 128] {
        let mut pool = StatePool::new(gpu, slots, h, kd, kd).unwrap();
        for op in [Op::Gla, Op::Rwkv6, Op::Rwkv7] {
            for n in [1usize, 4, 16, 64, 256, 512, 1024] {
                let x = inputs(gpu, rng, op, [n, 1, h, kd], kd);
                let mut ids: Vec<i32> = (0..slots as i32).collect();
                for i in (1..slots).rev() {
                    ids.swap(i, rng.below(i + 1));
                }
                ids.truncate(n);
                // State read + written, plus q, k, g (a, b) [n, H, K] bf16, v and o [n, H, V] bf16.
                let per_key_inputs = if op == Op::Rwkv7 { 5 } else { 3 };
                let bytes = n * h * (2 * kd * kd * 4 + per_key_inputs * kd * 2 + 2 * kd * 2) + if op == Op::Rwkv6 { h * kd * 2 } else { 0 };
                let label = format!("{op:?} K=V={kd} N={n}");
                match median_ms(gpu, 3, 20, || run_slots(gpu, op, &x, &mut pool, &ids)) {
                    Ok(ms) => {
                        let gbs = bytes as f64 / (ms * 1e-3) / 1e9;
                        println!("{label:<34} {ms:>10.4} {gbs:>10.0} {:>7.1}%", 100.0 * gbs / copy);
                    }
                    Err(e) => println!("{label:<34} error: {e}"),
                }
            }
        }
    }
}

fn rwkv4(gpu: &Gpu, rng: &mut Rng) {
    println!("\nrwkv4 (bf16, C = 4096): tokens/s = B*T / time");
    println!("{:<34} {:>10} {:>12}", "case", "ms", "Mtok/s");
    let c = 4096usize;
    for (b, t) in [(8usize, 4096usize), (256, 1)] {
        let k = dev(gpu, rng, DType::BF16, &[b, t, c], -1.0, 1.0);
        let v = dev(gpu, rng, DType::BF16, &[b, t, c], -1.0, 1.0);
        let w = dev(gpu, rng, DType::F32, &[c], -1.0, -0.01);
        let u = dev(gpu, rng, DType::F32, &[c], -1.0, 1.0);
        let args = Rwkv4Args::new(&k, &v, &w, &u);
        let label = format!("rwkv4 B={b} T={t}");
        match median_ms(gpu, 2, 10, || rwkv4_cuda(gpu, &Rwkv4Config::default(), &args).map(drop)) {
            Ok(ms) => println!("{label:<34} {ms:>10.4} {:>12.1}", (b * t) as f64 / (ms * 1e-3) / 1e6),
            Err(e) => println!("{label:<34} error: {e}"),
        }
    }
}

fn gpu_benches(_c: &mut Criterion) {
    let Some(gpu) = bench_gpu() else { return };
    let copy = match copy_bandwidth_gbs(&gpu, 1 << 30, 20) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("linear gpu benches skipped: copy bandwidth probe failed: {e}");
            return;
        }
    };
    println!("linear gpu: {} — device copy bandwidth {copy:.0} GB/s (same run)", gpu.info().name);
    let mut rng = Rng::from_time();
    decode(&gpu, &mut rng, copy);
    prefill(&gpu, &mut rng);
    rwkv4(&gpu, &mut rng);
}

criterion_group!(benches, gpu_benches);
criterion_main!(benches);
