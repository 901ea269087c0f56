//! RoPE on the GPU against the CPU reference: every rope_type, both layouts, partial rotary,
//! position ids and varlen, positions up to 2^20, in place and out of place, poisoned outputs.

use super::common::{gpu, randn};
use attn_kernels::rope::cuda::{rope_cuda, rope_cuda_inplace, rope_cuda_into};
use attn_kernels::rope::{rope_cpu, RopeArgs, RopeConfig, RopeOpConfig};
use attn_kernels::tensor::{rel_error, DType, Tensor, TensorInfo};
use attn_kernels::Error;
use attn_kernels_harness::check::Rng;
use serde_json::json;

fn scalings() -> Vec<serde_json::Value> {
    let short: Vec<f64> = (0..32).map(|i| 1.0 + 0.1 * i as f64).collect();
    let long: Vec<f64> = (0..32).map(|i| 1.0 + 2.0 * i as f64).collect();
    vec![
        serde_json::Value::Null,
        json!({"rope_type": "linear", "factor": 2.0}),
        json!({"rope_type": "dynamic", "factor": 2.0}),
        json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048}),
        json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 2048}),
        json!({"rope_type": "longrope", "short_factor": short, "long_factor": long, "original_max_position_embeddings": 2048}),
    ]
}

#[test]
fn rope_gpu_matches_cpu() {
    let Some(gpu) = gpu(concat!(module_path!(), "::rope_gpu_matches_cpu")) else { return };
    let mut rng = Rng::from_time();
    let (b, s, h, d) = (3usize, 77usize, 5usize, 128usize);
    for scaling in scalings() {
        for interleaved in [false, true] {
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                for offset in [0i64, (1 << 20) - 100] {
                    let rope: RopeConfig = serde_json::from_value(json!({"rotary_dim": 64, "theta": 10000.0,
                        "interleaved": interleaved, "max_position_embeddings": 4096, "scaling": scaling})).unwrap();
                    let op = RopeOpConfig { rope, position_offset: offset };
                    let x = randn(&mut rng, dtype, &[b, s, h, d]);
                    let want = rope_cpu(&op, &RopeArgs { x: &x, position_ids: None, cu_seqlens: None }).unwrap();
                    let xd = gpu.upload(&x).unwrap();
                    let mut yd = gpu.alloc_poisoned(dtype, x.shape()).unwrap();
                    rope_cuda_into(&gpu, &op, &RopeArgs { x: &xd, position_ids: None, cu_seqlens: None }, &mut yd).unwrap();
                    let got = gpu.download(&yd).unwrap();
                    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
                    assert!(g.iter().all(|v| v.is_finite()), "unwritten (NaN-poisoned) elements remain");
                    let err = rel_error(&g, &w);
                    assert!(err <= dtype.rel_tolerance(), "{scaling} {dtype} interleaved={interleaved} offset={offset}: rel {err:e} seed {}", rng.seed);
                }
            }
        }
    }
}

#[test]
fn rope_gpu_position_ids_varlen_inplace() {
    let Some(gpu) = gpu(concat!(module_path!(), "::rope_gpu_position_ids_varlen_inplace")) else { return };
    let mut rng = Rng::from_time();
    let (total, h, d) = (300usize, 4usize, 96usize);
    let x = randn(&mut rng, DType::BF16, &[total, h, d]);
    let op = RopeOpConfig { rope: RopeConfig::new(96, 1e6), position_offset: 7 };
    let cu = [0, 100, 100, 300];
    let ids: Vec<i32> = (0..total).map(|_| rng.below(1 << 20) as i32).collect();
    for (pos, cus) in [(Some(ids.as_slice()), None), (None, Some(&cu[..]))] {
        let want = rope_cpu(&op, &RopeArgs { x: &x, position_ids: pos, cu_seqlens: cus }).unwrap();
        let xd = gpu.upload(&x).unwrap();
        let yd = rope_cuda(&gpu, &op, &RopeArgs { x: &xd, position_ids: pos, cu_seqlens: cus }).unwrap();
        let err = rel_error(&gpu.download(&yd).unwrap().to_f64_vec(), &want.to_f64_vec());
        assert!(err <= DType::BF16.rel_tolerance(), "rel {err:e}");
        let mut xi = gpu.upload(&x).unwrap();
        rope_cuda_inplace(&gpu, &op, &mut xi, pos, cus).unwrap();
        assert_eq!(gpu.download(&xi).unwrap(), gpu.download(&yd).unwrap(), "in place differs from out of place");
    }
}

#[test]
fn rope_gpu_bad_inputs() {
    let Some(gpu) = gpu(concat!(module_path!(), "::rope_gpu_bad_inputs")) else { return };
    let x = gpu.upload(&Tensor::from_f32(DType::F16, &[2, 8, 2, 64], &[0.25; 2048]).unwrap()).unwrap();
    let op = RopeOpConfig { rope: RopeConfig::new(64, 1e4), position_offset: 0 };
    let mut wrong = gpu.alloc(DType::F16, &[2, 8, 2, 32]).unwrap();
    let e = rope_cuda_into(&gpu, &op, &RopeArgs { x: &x, position_ids: None, cu_seqlens: None }, &mut wrong).unwrap_err();
    assert_eq!(e.argument(), Some("y"));
    let mut wrong_dtype = gpu.alloc(DType::BF16, &[2, 8, 2, 64]).unwrap();
    let e = rope_cuda_into(&gpu, &op, &RopeArgs { x: &x, position_ids: None, cu_seqlens: None }, &mut wrong_dtype).unwrap_err();
    assert!(matches!(e, Error::DType { .. }));
    let e = rope_cuda(&gpu, &op, &RopeArgs { x: &x, position_ids: Some(&[1, 2]), cu_seqlens: None }).unwrap_err();
    assert_eq!(e.argument(), Some("position_ids"));
}

/// Planned once, launched per tensor: position ids uploaded once, three tensors (out of
/// place and in place) on a fork of the planning handle against the CPU; a tensor unlike the plan
/// is a typed error.
#[test]
fn rope_planned_once_launched_per_tensor() {
    use attn_kernels::rope::cuda::RopeLaunch;
    let Some(gpu) = gpu(concat!(module_path!(), "::rope_planned_once_launched_per_tensor")) else { return };
    let mut rng = Rng::from_time();
    let (total, h, d) = (150usize, 4usize, 128usize);
    let op = RopeOpConfig { rope: RopeConfig::new(128, 5e5), position_offset: 3 };
    let ids: Vec<i32> = (0..total).map(|_| rng.below(1 << 16) as i32).collect();
    let first = gpu.upload(&randn(&mut rng, DType::BF16, &[total, h, d])).unwrap();
    let launch = RopeLaunch::new(&gpu, &op, &RopeArgs { x: &first, position_ids: Some(&ids), cu_seqlens: None }).unwrap();
    let fork = gpu.fork().unwrap();
    for i in 0..3 {
        let x = randn(&mut rng, DType::BF16, &[total, h, d]);
        let want = rope_cpu(&op, &RopeArgs { x: &x, position_ids: Some(&ids), cu_seqlens: None }).unwrap();
        let mut xd = fork.upload(&x).unwrap();
        let mut yd = fork.alloc_poisoned(DType::BF16, x.shape()).unwrap();
        launch.launch(&fork, &xd, &mut yd).unwrap();
        launch.launch_inplace(&fork, &mut xd).unwrap();
        let (y, xi) = (fork.download(&yd).unwrap(), fork.download(&xd).unwrap());
        let err = rel_error(&y.to_f64_vec(), &want.to_f64_vec());
        assert!(err <= DType::BF16.rel_tolerance(), "tensor {i}: rel {err:e}, seed {}", rng.seed);
        assert_eq!(y, xi, "tensor {i}: in place differs from out of place");
    }
    let other = fork.upload(&randn(&mut rng, DType::BF16, &[total, h + 1, d])).unwrap();
    let mut y = fork.alloc(DType::BF16, &[total, h + 1, d]).unwrap();
    let e = launch.launch(&fork, &other, &mut y).unwrap_err();
    assert_eq!(e.argument(), Some("x"), "{e}");
}
