//! KV-cache decode: latency and achieved bandwidth on the GPU, as a share of the device copy
//! bandwidth measured in the same run, for B in {1, 8, 64, 256}, context 1k..128k (capped by
//! memory), D = 128, Hq/Hkv in {32/8, 32/32}, one new token; plus paged caches and the cost of
//! RoPE on read at the target points (B = 1 at >= 32k, B = 64 at >= 4k). Bytes = K and V
//! actually read + q + o (`DecodePlan::bytes_moved`). Caches are far larger than the 50 MB L2
//! except at the smallest points, which are marked. A small CPU decode runs under criterion.

use attn_kernels::attention::AttentionConfig;
use attn_kernels::decode::cuda::{decode_cuda_with_index, num_splits, DeviceKvIndex};
use attn_kernels::decode::{self, decode_cpu, DecodeOptions, KvCacheRef};
use attn_kernels::rope::RopeConfig;
use attn_kernels::tensor::{DType, Tensor};
use attn_kernels::{DeviceTensor, Gpu};
use attn_kernels_harness::bench::{bench_gpu, copy_bandwidth_gbs, median_ms};
use attn_kernels_harness::check::Rng;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const D: usize = 128;
const HQ: usize = 32;
/// Cache bytes we allow ourselves on an 80 GB GPU.
const MEMORY_CAP: usize = 60 << 30;

fn cpu(c: &mut Criterion) {
    let (b, ctx, hkv) = (1usize, 4096usize, 8usize);
    let mut rng = Rng::from_time();
    let q = Tensor::from_f32(DType::BF16, &[b, 1, HQ, D], &rng.normal_vec(b * HQ * D)).unwrap();
    let k = Tensor::from_f32(DType::BF16, &[b, ctx, hkv, D], &rng.normal_vec(b * ctx * hkv * D)).unwrap();
    let v = Tensor::from_f32(DType::BF16, &[b, ctx, hkv, D], &rng.normal_vec(b * ctx * hkv * D)).unwrap();
    let seqlens = vec![ctx as i32; b];
    let cache = KvCacheRef::Contiguous { k: &k, v: &v, cache_seqlens: &seqlens };
    let cfg = AttentionConfig { causal: true, ..AttentionConfig::default() };
    let mut g = c.benchmark_group("decode_cpu");
    g.throughput(Throughput::Bytes((2 * b * ctx * hkv * D * 2) as u64));
    g.sample_size(10);
    g.bench_function("bf16 B=1 ctx=4096 32/8 D=128", |bench| {
        bench.iter(|| decode_cpu(&cfg, &q, &cache, None, &DecodeOptions::default()).unwrap())
    });
    g.finish();
}

/// One GPU measurement: `(ms, GB/s, splits)`.
#[allow(clippy::too_many_arguments)]
fn measure(
    gpu: &Gpu,
    b: usize,
    ctx: usize,
    block: Option<usize>,
    cfg: &AttentionConfig,
    k: &DeviceTensor,
    v: &DeviceTensor,
) -> attn_kernels::Result<(f64, f64, usize)> {
    let seqlens = vec![ctx as i32; b];
    let table: Vec<i32>;
    let cache = match block {
        None => KvCacheRef::Contiguous { k, v, cache_seqlens: &seqlens },
        Some(bs) => {
            // Blocks of each sequence spread over the pool in a fixed shuffled order.
            let per = ctx.div_ceil(bs);
            let n = b * per;
            table = (0..n).map(|i| ((i * 7919) % n) as i32).collect();
            KvCacheRef::Paged { k, v, block_table: &table, max_blocks: per, cache_seqlens: &seqlens }
        }
    };
    let q = gpu.zeros(DType::BF16, &[b, 1, HQ, D])?;
    let opts = DecodeOptions::default();
    let plan = decode::plan(cfg, &q, &cache, None, &opts)?;
    let index = DeviceKvIndex::new(gpu, &cache)?;
    let mut o = gpu.alloc(DType::BF16, &plan.o_shape())?;
    let mut lse = gpu.alloc(DType::F32, &plan.lse_shape())?;
    let iters = if plan.bytes_moved() > 4e9 { 10 } else { 30 };
    let ms = median_ms(gpu, 3, iters, || {
        decode_cuda_with_index(gpu, cfg, &q, &cache, &index, None, &opts, &mut o, &mut lse)
    })?;
    Ok((ms, plan.bytes_moved() / (ms * 1e-3) / 1e9, num_splits(gpu, &plan, opts.split)))
}

/// Zero-filled cache tensors `[blocks, rows, hkv, D]` (contents do not change the timing).
fn cache_tensors(
    gpu: &Gpu,
    b: usize,
    ctx: usize,
    hkv: usize,
    block: Option<usize>,
) -> attn_kernels::Result<(DeviceTensor, DeviceTensor)> {
    let shape = match block {
        None => vec![b, ctx, hkv, D],
        Some(bs) => vec![b * ctx.div_ceil(bs), bs, hkv, D],
    };
    Ok((gpu.zeros(DType::BF16, &shape)?, gpu.zeros(DType::BF16, &shape)?))
}

fn gpu(_c: &mut Criterion) {
    let Some(gpu) = bench_gpu() else { return };
    let copy = copy_bandwidth_gbs(&gpu, 1 << 30, 20).unwrap();
    println!(
        "decode gpu: {} ({} SMs) — device copy bandwidth {copy:.0} GB/s (read + write, same run)",
        gpu.info().name,
        gpu.info().multiprocessors
    );
    println!("bf16, D = 128, Hq = 32, one new token, causal; bytes = K + V read + q + o");
    println!("{:<40} {:>7} {:>10} {:>9} {:>8}", "case", "splits", "ms", "GB/s", "% copy");
    let causal = AttentionConfig { causal: true, ..AttentionConfig::default() };
    for hkv in [8usize, 32] {
        for b in [1usize, 8, 64, 256] {
            for ctx in [1024usize, 4096, 16384, 32768, 65536, 131072] {
                let bytes = 2 * b * ctx * hkv * D * 2;
                if bytes > MEMORY_CAP {
                    println!(
                        "{:<40} skipped: cache {:.0} GB > {} GB cap",
                        format!("32/{hkv} B={b} ctx={ctx}"),
                        bytes as f64 / 1e9,
                        MEMORY_CAP >> 30
                    );
                    continue;
                }
                let note = if bytes < 100 << 20 { " (L2-sized)" } else { "" };
                let run = || -> attn_kernels::Result<(f64, f64, usize)> {
                    let (k, v) = cache_tensors(&gpu, b, ctx, hkv, None)?;
                    measure(&gpu, b, ctx, None, &causal, &k, &v)
                };
                match run() {
                    Ok((ms, gbs, splits)) => println!(
                        "{:<40} {splits:>7} {ms:>10.4} {gbs:>9.0} {:>7.1}%{note}",
                        format!("32/{hkv} B={b} ctx={ctx} contiguous"),
                        100.0 * gbs / copy
                    ),
                    Err(e) => println!("{:<40} error: {e}", format!("32/{hkv} B={b} ctx={ctx}")),
                }
            }
        }
    }

    // Target points: paged caches and RoPE on read (cost relative to the same call without).
    println!("\ntarget points (>= 85% of copy bandwidth, RoPE on read <= 5% slower)");
    println!("{:<40} {:>7} {:>10} {:>9} {:>8} {:>9}", "case", "splits", "ms", "GB/s", "% copy", "rope +%");
    let rope = AttentionConfig { rope: Some(RopeConfig::new(D, 500000.0)), ..causal.clone() };
    for (b, ctx) in [(1usize, 32768usize), (1, 131072), (64, 4096), (64, 16384)] {
        for block in [None, Some(16usize), Some(64)] {
            let hkv = 8;
            let run = || -> attn_kernels::Result<((f64, f64, usize), (f64, f64, usize))> {
                let (k, v) = cache_tensors(&gpu, b, ctx, hkv, block)?;
                let plain = measure(&gpu, b, ctx, block, &causal, &k, &v)?;
                let rot = measure(&gpu, b, ctx, block, &rope, &k, &v)?;
                Ok((plain, rot))
            };
            let layout = block.map_or("contiguous".to_string(), |bs| format!("paged{bs}"));
            let name = format!("32/8 B={b} ctx={ctx} {layout}");
            match run() {
                Ok(((ms, gbs, splits), (rms, _, _))) => println!(
                    "{name:<40} {splits:>7} {ms:>10.4} {gbs:>9.0} {:>7.1}% {:>8.1}%",
                    100.0 * gbs / copy,
                    100.0 * (rms / ms - 1.0)
                ),
                Err(e) => println!("{name:<40} error: {e}"),
            }
        }
    }
}

criterion_group!(benches, cpu, gpu);
criterion_main!(benches);
