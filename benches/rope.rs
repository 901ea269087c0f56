//! RoPE throughput: CPU (rayon) and GPU, in GB/s (bytes read + written). On a GPU the device
//! copy bandwidth is measured in the same run and the kernel is reported as a share of it
//! (goal: at least 80%). Inputs are larger than the H100's 50 MB L2.

use attn_kernels::rope::cuda::rope_cuda_into;
use attn_kernels::rope::{rope_cpu, RopeArgs, RopeConfig, RopeOpConfig};
use attn_kernels::tensor::{DType, Tensor};
use attn_kernels_harness::bench::{bench_gpu, copy_bandwidth_gbs, median_ms};
use attn_kernels_harness::check::Rng;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;

fn yarn() -> RopeOpConfig {
    let rope: RopeConfig = serde_json::from_value(json!({"rotary_dim": 128, "theta": 1e6, "max_position_embeddings": 131072,
        "scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}})).unwrap();
    RopeOpConfig { rope, position_offset: 0 }
}

fn cpu(c: &mut Criterion) {
    let (b, s, h, d) = (1usize, 2048usize, 32usize, 128usize);
    let mut rng = Rng::from_time();
    let x = Tensor::from_f32(DType::BF16, &[b, s, h, d], &rng.normal_vec(b * s * h * d)).unwrap();
    let op = yarn();
    let mut g = c.benchmark_group("rope_cpu");
    g.throughput(Throughput::Bytes((2 * x_bytes(&[b, s, h, d], DType::BF16)) as u64));
    g.sample_size(10);
    g.bench_function("bf16 [1,2048,32,128] yarn", |bench| {
        bench.iter(|| rope_cpu(&op, &RopeArgs { x: &x, position_ids: None, cu_seqlens: None }).unwrap())
    });
    g.finish();
}

fn x_bytes(shape: &[usize], dtype: DType) -> usize {
    shape.iter().product::<usize>() * dtype.size()
}

fn gpu(_c: &mut Criterion) {
    let Some(gpu) = bench_gpu() else { return };
    let copy = copy_bandwidth_gbs(&gpu, 1 << 30, 20).unwrap();
    println!("rope gpu: {} — device copy bandwidth {copy:.0} GB/s (same run)", gpu.info().name);
    println!("{:<34} {:>10} {:>10} {:>8}", "case", "ms", "GB/s", "% copy");
    let mut rng = Rng::from_time();
    for (dtype, b, s) in [(DType::BF16, 8usize, 4096usize), (DType::F16, 8, 4096), (DType::F32, 4, 4096)] {
        let (h, d) = (32usize, 128usize);
        let shape = [b, s, h, d];
        let x = gpu.upload(&Tensor::from_f32(dtype, &shape, &rng.normal_vec(b * s * h * d)).unwrap()).unwrap();
        let mut y = gpu.alloc(dtype, &shape).unwrap();
        let op = yarn();
        let args = RopeArgs { x: &x, position_ids: None, cu_seqlens: None };
        let ms = median_ms(&gpu, 5, 50, || rope_cuda_into(&gpu, &op, &args, &mut y)).unwrap();
        let gbs = 2.0 * x_bytes(&shape, dtype) as f64 / (ms * 1e-3) / 1e9;
        println!("{:<34} {ms:>10.4} {gbs:>10.0} {:>7.1}%", format!("{dtype} {shape:?} yarn"), 100.0 * gbs / copy);
    }
}

criterion_group!(benches, cpu, gpu);
criterion_main!(benches);
