//! Determinism (issue 10): identical inputs give bit-identical outputs, run to run, for every op.
//!
//! CPU: each case runs in rayon pools of 1, 2, 3 and 5 threads and twice in the default pool;
//! every output must be byte-for-byte the same (the work split must not change the arithmetic).
//! GPU (skipped without one, with the reason printed): each case runs three times, once on a
//! forked stream, and every output must be byte-for-byte the same.

use attn_kernels::attention::alibi_slopes;
use attn_kernels::{DType, Tensor, TensorInfo};
use attn_kernels_harness::case::{self, Case, Device, Tensors};
use attn_kernels_harness::check::Rng;
use serde_json::json;

fn ten(rng: &mut Rng, dtype: DType, shape: &[usize], scale: f32) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = rng.normal_vec(n).into_iter().map(|x| x * scale).collect();
    Tensor::from_f32(dtype, shape, &v).expect("shape matches")
}

fn f32t(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_f32(DType::F32, shape, &v).expect("shape matches")
}

fn ids(shape: &[usize], v: Vec<i32>) -> Tensor {
    Tensor::from_i32(shape, &v).expect("shape matches")
}

/// One case per op and feature, with shapes big enough that rayon splits the work.
fn cases(rng: &mut Rng, dt: DType) -> Vec<(String, Case)> {
    let mut v = Vec::new();
    let rope = json!({"rotary_dim": 64, "theta": 10000.0, "max_position_embeddings": 4096,
                      "scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024}});
    v.push((
        "rope".into(),
        Case::new(json!({"op": "rope", "rope": rope, "position_offset": 3000})).with("x", ten(rng, dt, &[2, 150, 4, 64], 1.0)),
    ));
    v.push((
        "attention causal alibi softcap gqa".into(),
        Case::new(json!({"op": "attention", "causal": true, "softcap": 20.0}))
            .with("q", ten(rng, dt, &[2, 130, 8, 64], 1.0))
            .with("k", ten(rng, dt, &[2, 170, 2, 64], 1.0))
            .with("v", ten(rng, dt, &[2, 170, 2, 64], 1.0))
            .with("alibi_slopes", f32t(&[8], alibi_slopes(8))),
    ));
    let (tq, tk) = (150usize, 210usize);
    v.push((
        "attention varlen rope window".into(),
        Case::new(json!({"op": "attention", "causal": true, "window_left": 40, "rope": rope}))
            .with("q", ten(rng, dt, &[tq, 4, 64], 1.0))
            .with("k", ten(rng, dt, &[tk, 2, 64], 1.0))
            .with("v", ten(rng, dt, &[tk, 2, 64], 1.0))
            .with("cu_seqlens_q", ids(&[4], vec![0, 50, 50, 150]))
            .with("cu_seqlens_k", ids(&[4], vec![0, 90, 100, 210])),
    ));
    v.push((
        "diff_attention v1 norm".into(),
        Case::new(json!({"op": "diff_attention", "causal": true, "lambda_init": 0.5}))
            .with("q", ten(rng, dt, &[1, 120, 8, 64], 1.0))
            .with("k", ten(rng, dt, &[1, 120, 4, 64], 1.0))
            .with("v", ten(rng, dt, &[1, 120, 2, 128], 1.0))
            .with("lambda", f32t(&[4], rng.uniform_vec(4, 0.1, 0.9)))
            .with("norm_weight", f32t(&[128], rng.uniform_vec(128, 0.5, 1.5))),
    ));
    v.push((
        "diff_attention v2".into(),
        Case::new(json!({"op": "diff_attention", "variant": "v2", "causal": true}))
            .with("q", ten(rng, dt, &[1, 100, 8, 64], 1.0))
            .with("k", ten(rng, dt, &[1, 100, 2, 64], 1.0))
            .with("v", ten(rng, dt, &[1, 100, 2, 64], 1.0))
            .with("lambda", f32t(&[1, 100, 4], rng.uniform_vec(400, 0.05, 0.95))),
    ));
    v.push((
        "decode contiguous".into(),
        Case::new(json!({"op": "decode_attention", "num_splits": 4}))
            .with("q", ten(rng, dt, &[3, 2, 8, 64], 1.0))
            .with("k_cache", ten(rng, dt, &[3, 700, 2, 64], 1.0))
            .with("v_cache", ten(rng, dt, &[3, 700, 2, 64], 1.0))
            .with("cache_seqlens", ids(&[3], vec![700, 333, 2])),
    ));
    let (nb, bs, mb) = (40usize, 16usize, 12usize);
    let mut table: Vec<i32> = (0..nb as i32).collect();
    for i in (1..table.len()).rev() {
        table.swap(i, rng.below(i + 1));
    }
    table.truncate(3 * mb);
    v.push((
        "decode paged".into(),
        Case::new(json!({"op": "decode_attention", "causal": true}))
            .with("q", ten(rng, dt, &[3, 1, 4, 64], 1.0))
            .with("k_cache", ten(rng, dt, &[nb, bs, 2, 64], 1.0))
            .with("v_cache", ten(rng, dt, &[nb, bs, 2, 64], 1.0))
            .with("cache_seqlens", ids(&[3], vec![190, 5, 100]))
            .with("block_table", ids(&[3, mb], table)),
    ));
    v.push((
        "merge_states".into(),
        Case::new(json!({"op": "merge_states"}))
            .with("o_a", ten(rng, dt, &[2, 60, 4, 64], 1.0))
            .with("o_b", ten(rng, dt, &[2, 60, 4, 64], 1.0))
            .with("lse_a", ten(rng, DType::F32, &[2, 4, 60], 2.0))
            .with("lse_b", ten(rng, DType::F32, &[2, 4, 60], 2.0)),
    ));
    let (t, h, k, vd) = (300usize, 4usize, 32usize, 32usize);
    v.push((
        "linear_attention gla bonus".into(),
        Case::new(json!({"op": "linear_attention", "scale": 1.0}))
            .with("q", ten(rng, dt, &[2, t, h, k], 1.0))
            .with("k", ten(rng, dt, &[2, t, h, k], 0.3))
            .with("v", ten(rng, dt, &[2, t, h, vd], 1.0))
            .with("g", f32t(&[2, t, h, k], rng.uniform_vec(2 * t * h * k, -0.5, 0.0)))
            .with("u", f32t(&[h, k], rng.uniform_vec(h * k, -1.0, 1.0)))
            .with("initial_state", ten(rng, DType::F32, &[2, h, k, vd], 1.0)),
    ));
    v.push((
        "linear_attention varlen".into(),
        Case::new(json!({"op": "linear_attention"}))
            .with("q", ten(rng, dt, &[1, t, h, k], 1.0))
            .with("k", ten(rng, dt, &[1, t, h, k], 0.3))
            .with("v", ten(rng, dt, &[1, t, h, vd], 1.0))
            .with("g", f32t(&[1, t, h], rng.uniform_vec(t * h, -0.2, 0.0)))
            .with("cu_seqlens", ids(&[4], vec![0, 100, 100, t as i32])),
    ));
    let kk: Vec<f32> = rng
        .normal_vec(t * h * k)
        .chunks(k)
        .flat_map(|r| {
            let n = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            r.iter().map(move |x| x / n).collect::<Vec<_>>()
        })
        .collect();
    v.push((
        "delta_rule".into(),
        Case::new(json!({"op": "delta_rule"}))
            .with("q", ten(rng, dt, &[1, t, h, k], 1.0))
            .with("k", Tensor::from_f32(dt, &[1, t, h, k], &kk).expect("shape"))
            .with("v", ten(rng, dt, &[1, t, h, vd], 1.0))
            .with("a", Tensor::from_f32(dt, &[1, t, h, k], &kk.iter().map(|x| -x).collect::<Vec<_>>()).expect("shape"))
            .with("b", Tensor::from_f32(dt, &[1, t, h, k], &kk.iter().map(|x| 0.6 * x).collect::<Vec<_>>()).expect("shape"))
            .with("g", f32t(&[1, t, h], rng.uniform_vec(t * h, -0.1, 0.0))),
    ));
    let c = 256usize;
    v.push((
        "rwkv4".into(),
        Case::new(json!({"op": "rwkv4"}))
            .with("k", ten(rng, dt, &[2, t, c], 2.0))
            .with("v", ten(rng, dt, &[2, t, c], 1.0))
            .with("w", f32t(&[c], rng.uniform_vec(c, -3.0, 0.0)))
            .with("u", f32t(&[c], rng.uniform_vec(c, -1.0, 1.0))),
    ));
    v
}

fn bytes(out: &Tensors) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    out.iter().map(|(k, t)| (k.clone(), t.shape().to_vec(), t.to_le_bytes())).collect()
}

fn assert_same(what: &str, first: &[(String, Vec<usize>, Vec<u8>)], other: &[(String, Vec<usize>, Vec<u8>)], run: &str, seed: u64) {
    assert_eq!(first.len(), other.len(), "{what}: {run}: different outputs (seed {seed})");
    for ((n1, s1, b1), (n2, s2, b2)) in first.iter().zip(other) {
        assert_eq!((n1, s1), (n2, s2), "{what}: {run}: output names/shapes differ (seed {seed})");
        if b1 != b2 {
            let at = b1.iter().zip(b2).position(|(x, y)| x != y).unwrap_or(0);
            panic!("{what}: {run}: output `{n1}` differs at byte {at} (of {}) (seed {seed})", b1.len());
        }
    }
}

#[test]
fn cpu_outputs_are_bit_identical_across_runs_and_thread_counts() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for dt in [DType::F32, DType::BF16, DType::F16] {
        for (what, case) in cases(&mut rng, dt) {
            let what = format!("{what} {dt}");
            let first = bytes(&case::run(&case, &Device::Cpu).unwrap_or_else(|e| panic!("{what}: {e}")));
            let again = bytes(&case::run(&case, &Device::Cpu).expect("second run"));
            assert_same(&what, &first, &again, "second run", seed);
            for threads in [1usize, 2, 3, 5] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("rayon pool");
                let out = pool.install(|| case::run(&case, &Device::Cpu)).expect("run in pool");
                assert_same(&what, &first, &bytes(&out), &format!("{threads} threads"), seed);
            }
        }
    }
}

#[test]
fn gpu_outputs_are_bit_identical_across_runs_and_streams() {
    let Some(gpu) = attn_kernels_harness::bench::gpu_for_test("gpu_outputs_are_bit_identical_across_runs_and_streams") else {
        return;
    };
    let forked = gpu.fork().expect("fork a stream");
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for dt in [DType::BF16, DType::F16] {
        for (what, case) in cases(&mut rng, dt) {
            let what = format!("{what} {dt}");
            let dev = Device::Cuda(gpu.clone());
            let first = match case::run(&case, &dev) {
                Ok(o) => bytes(&o),
                Err(e) => panic!("{what} on the GPU: {e} (seed {seed})"),
            };
            let again = bytes(&case::run(&case, &dev).expect("second run"));
            assert_same(&what, &first, &again, "second GPU run", seed);
            let other = bytes(&case::run(&case, &Device::Cuda(forked.clone())).expect("run on a forked stream"));
            assert_same(&what, &first, &other, "forked stream", seed);
        }
    }
}
