//! CPU throughput of the linear-attention recurrences in tokens/s (one token = one step of
//! every head): GLA-style `linear_attention`, RWKV-6 bonus form, RWKV-7 `delta_rule`, and
//! `rwkv4` (one token = one step of every channel). Shapes are model-like (H = 8, K = V = 64;
//! C = 1024) and small enough for a 2-core machine.

use attn_kernels::linear::*;
use attn_kernels::tensor::{DType, Tensor};
use attn_kernels_harness::check::Rng;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn tensor(rng: &mut Rng, dtype: DType, shape: &[usize], scale: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_f32(dtype, shape, &rng.normal_vec(n).iter().map(|x| x * scale).collect::<Vec<_>>()).unwrap()
}

fn recurrences(c: &mut Criterion) {
    let mut rng = Rng::from_time();
    let (b, t, h, k, v) = (2usize, 2048usize, 8usize, 64usize, 64usize);
    let dt = DType::BF16;
    let q = tensor(&mut rng, dt, &[b, t, h, k], 1.0);
    let kk = tensor(&mut rng, dt, &[b, t, h, k], 0.2);
    let vv = tensor(&mut rng, dt, &[b, t, h, v], 1.0);
    let g = Tensor::from_f32(DType::F32, &[b, t, h, k], &rng.uniform_vec(b * t * h * k, -0.1, 0.0)).unwrap();
    let u = tensor(&mut rng, DType::F32, &[h, k], 1.0);
    let a = tensor(&mut rng, dt, &[b, t, h, k], 0.1);

    let mut grp = c.benchmark_group("linear_cpu");
    grp.sample_size(10);
    grp.throughput(Throughput::Elements((b * t) as u64));
    let label = format!("[{b},{t},{h},{k}] v{v} bf16");
    grp.bench_function(format!("linear_attention GLA {label}"), |bench| {
        bench.iter(|| {
            linear_attention_cpu(&LinearAttentionConfig::default(), &LinearArgs::new(&q, &kk, &vv).with_g(&g)).unwrap()
        })
    });
    grp.bench_function(format!("linear_attention RWKV-6 bonus {label}"), |bench| {
        let cfg = LinearAttentionConfig { scale: Some(1.0) };
        bench.iter(|| linear_attention_cpu(&cfg, &LinearArgs::new(&q, &kk, &vv).with_g(&g).with_u(&u)).unwrap())
    });
    grp.bench_function(format!("delta_rule {label}"), |bench| {
        let cfg = DeltaRuleConfig { scale: Some(1.0) };
        bench.iter(|| delta_rule_cpu(&cfg, &DeltaRuleArgs::new(&q, &kk, &vv, &a, &a).with_g(&g)).unwrap())
    });

    let ch = 1024usize;
    let k4 = tensor(&mut rng, dt, &[b, t, ch], 3.0);
    let v4 = tensor(&mut rng, dt, &[b, t, ch], 1.0);
    let w = Tensor::from_f32(
        DType::F32,
        &[ch],
        &rng.uniform_vec(ch, -3.0, 1.0).iter().map(|x| -x.exp()).collect::<Vec<_>>(),
    )
    .unwrap();
    let u4 = tensor(&mut rng, DType::F32, &[ch], 1.0);
    grp.bench_function(format!("rwkv4 [{b},{t},{ch}] bf16"), |bench| {
        bench.iter(|| rwkv4_cpu(&Rwkv4Config::default(), &Rwkv4Args::new(&k4, &v4, &w, &u4)).unwrap())
    });
    grp.finish();
}

criterion_group!(benches, recurrences);
criterion_main!(benches);
