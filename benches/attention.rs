//! Attention prefill throughput on the GPU (kernels/attention/prefill.cu).
//!
//! Shapes follow the issue: batch x seqlen = 16k tokens, hidden 2048 (H = 2048 / D heads, MHA),
//! D = 64 and 128, seqlen 512 .. 16k, causal and not; variants plain, ALiBi and fused RoPE
//! (YaRN). FLOPs = 4 * B * H * Sq * Sk * D, halved when causal. Every tensor is 64 MiB, above
//! the H100's 50 MB L2. Timing: CUDA events around 10 back-to-back launches (so host-side
//! validation overlaps the GPU work), 3 warm-up rounds, median of 15; criterion measures the same
//! launches through `iter_custom` with event times. Also reports device copy bandwidth of a
//! 1 GiB buffer for context. Without a GPU it prints why and exits.
//!
//! Run: `cargo bench --bench attention` (criterion filters apply to the criterion part, e.g.
//! `cargo bench --bench attention -- d128`). `ATTN_BENCH_QUICK=1` skips criterion and prints
//! only the table.

use attn_kernels::attention::cuda::attention_cuda_into;
use attn_kernels::attention::{alibi_slopes, AttentionArgs, AttentionConfig};
use attn_kernels::rope::RopeConfig;
use attn_kernels::{DType, DeviceTensor, Gpu, Result, Tensor};
use criterion::Criterion;
use std::time::Duration;

const TOKENS: usize = 16 * 1024;
const HIDDEN: usize = 2048;
const LAUNCHES_PER_SAMPLE: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    Plain,
    Alibi,
    RopeYarn,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Alibi => "alibi",
            Variant::RopeYarn => "rope-yarn",
        }
    }
}

/// Deterministic pseudo-random values in [-1, 1) (xorshift), cheap enough for 100M elements.
fn values(n: usize, mut state: u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

struct Inputs {
    q: DeviceTensor,
    k: DeviceTensor,
    v: DeviceTensor,
    o: DeviceTensor,
    lse: DeviceTensor,
    slopes: DeviceTensor,
}

fn make_inputs(gpu: &Gpu, d: usize) -> Result<Inputs> {
    let h = HIDDEN / d;
    let shape = [1, TOKENS, h, d];
    let up = |seed: u64| gpu.upload(&Tensor::from_f32(DType::BF16, &shape, &values(TOKENS * HIDDEN, seed))?);
    Ok(Inputs {
        q: up(0x9e3779b97f4a7c15)?,
        k: up(0xbf58476d1ce4e5b9)?,
        v: up(0x94d049bb133111eb)?,
        o: gpu.alloc(DType::BF16, &shape)?,
        lse: gpu.alloc(DType::F32, &[1, h, TOKENS])?,
        slopes: gpu.upload(&Tensor::from_f32(DType::F32, &[h], &alibi_slopes(h))?)?,
    })
}

/// Reshape every buffer to batch `b` of `seqlen` (same bytes, 16k tokens).
fn reshape(x: Inputs, b: usize, s: usize, h: usize, d: usize) -> Result<Inputs> {
    Ok(Inputs {
        q: x.q.reshape(&[b, s, h, d])?,
        k: x.k.reshape(&[b, s, h, d])?,
        v: x.v.reshape(&[b, s, h, d])?,
        o: x.o.reshape(&[b, s, h, d])?,
        lse: x.lse.reshape(&[b, h, s])?,
        slopes: x.slopes,
    })
}

fn config(variant: Variant, causal: bool, d: usize) -> AttentionConfig {
    let mut cfg = AttentionConfig { causal, ..AttentionConfig::default() };
    if variant == Variant::RopeYarn {
        let rope = serde_json::json!({
            "rotary_dim": d, "theta": 10000.0, "max_position_embeddings": 131072,
            "scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
        });
        cfg.rope = Some(serde_json::from_value::<RopeConfig>(rope).expect("yarn config"));
    }
    cfg
}

fn launch(gpu: &Gpu, cfg: &AttentionConfig, variant: Variant, x: &mut Inputs) -> Result<()> {
    let mut args = AttentionArgs::new(&x.q, &x.k, &x.v);
    if variant == Variant::Alibi {
        args = args.with_alibi(&x.slopes);
    }
    attention_cuda_into(gpu, cfg, &args, &mut x.o, Some(&mut x.lse))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Milliseconds per launch (median over samples of LAUNCHES_PER_SAMPLE launches).
fn time_launch(gpu: &Gpu, cfg: &AttentionConfig, variant: Variant, x: &mut Inputs, samples: usize) -> Result<f64> {
    let times = gpu.time_ms(3, samples, || {
        for _ in 0..LAUNCHES_PER_SAMPLE {
            launch(gpu, cfg, variant, x)?;
        }
        Ok(())
    })?;
    Ok(median(times.iter().map(|&t| t as f64 / LAUNCHES_PER_SAMPLE as f64).collect()))
}

fn copy_bandwidth(gpu: &Gpu) -> Result<f64> {
    let n = (1usize << 30) / 4;
    let src = gpu.zeros(DType::F32, &[n])?;
    let mut dst = gpu.alloc(DType::F32, &[n])?;
    let times = gpu.time_ms(2, 10, || gpu.copy(&src, &mut dst))?;
    let ms = median(times.iter().map(|&t| t as f64).collect());
    Ok(2.0 * (1u64 << 30) as f64 / (ms * 1e-3) / 1e9) // read + write
}

fn run(gpu: &Gpu) -> Result<()> {
    let info = gpu.info();
    println!(
        "# attention prefill on {} (cc {}.{}, {} SMs, driver {})",
        info.name, info.compute_capability.0, info.compute_capability.1, info.multiprocessors, info.driver_version
    );
    println!("device copy bandwidth (1 GiB, read + write): {:.0} GB/s", copy_bandwidth(gpu)?);
    let quick = std::env::var("ATTN_BENCH_QUICK").is_ok_and(|v| v == "1");
    let mut crit = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();

    println!("\n| D | seqlen | batch | causal | variant | ms | TFLOP/s |");
    println!("|---|---|---|---|---|---|---|");
    for d in [64usize, 128] {
        let h = HIDDEN / d;
        let mut x = make_inputs(gpu, d)?;
        for s in [512usize, 1024, 2048, 4096, 8192, 16384] {
            let b = TOKENS / s;
            x = reshape(x, b, s, h, d)?;
            for causal in [false, true] {
                let flops = 4.0 * (b * h) as f64 * (s * s) as f64 * d as f64 / if causal { 2.0 } else { 1.0 };
                for variant in [Variant::Plain, Variant::Alibi, Variant::RopeYarn] {
                    let cfg = config(variant, causal, d);
                    let ms = time_launch(gpu, &cfg, variant, &mut x, 15)?;
                    println!(
                        "| {d} | {s} | {b} | {causal} | {} | {ms:.3} | {:.1} |",
                        variant.name(),
                        flops / (ms * 1e-3) / 1e12
                    );
                    if !quick {
                        let name = format!(
                            "attention/d{d}/s{s}/{}/{}",
                            if causal { "causal" } else { "full" },
                            variant.name()
                        );
                        crit.bench_function(&name, |bench| {
                            bench.iter_custom(|iters| {
                                let t = gpu
                                    .time_ms(0, 1, || {
                                        for _ in 0..iters {
                                            launch(gpu, &cfg, variant, &mut x)?;
                                        }
                                        Ok(())
                                    })
                                    .expect("timed launches");
                                Duration::from_secs_f64(t[0] as f64 * 1e-3)
                            })
                        });
                    }
                }
            }
        }
    }
    if !quick {
        crit.final_summary();
    }
    Ok(())
}

fn main() {
    let gpu = match Gpu::first() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipped: attention GPU benches need a GPU: {e}");
            return;
        }
    };
    if let Err(e) = run(&gpu) {
        eprintln!("attention bench failed: {e}");
        std::process::exit(1);
    }
}
