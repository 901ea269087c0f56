//! Determinism: identical inputs give bit-identical outputs, run to run, for every op.
//!
//! CPU: each case runs in rayon pools of 1, 2, 3 and 5 threads and twice in the default pool;
//! every output must be byte-for-byte the same (the work split must not change the arithmetic).
//! GPU (skipped without one, with the reason printed): each case runs three times, once on a
//! forked stream, and every output must be byte-for-byte the same.

mod common;

use attn_kernels::attention::alibi_slopes;
use attn_kernels::{DType, TensorInfo};
use attn_kernels_harness::case::{self, Case, Device, Tensors};
use attn_kernels_harness::check::Rng;
use common::{f32t, gpu, i32t, ids, randn, randn_scaled, shuffle, tensor, unit_rows};
use serde_json::json;

/// One case per op and feature, with shapes big enough that rayon splits the work.
fn cases(rng: &mut Rng, dt: DType) -> Vec<(String, Case)> {
    let mut v = Vec::new();
    let rope = json!({"rotary_dim": 64, "theta": 10000.0, "max_position_embeddings": 4096,
                      "scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024}});
    v.push((
        "rope".into(),
        Case::new(json!({"op": "rope", "rope": rope, "position_offset": 3000})).with("x", randn(rng, dt, &[2, 150, 4, 64])),
    ));
    v.push((
        "attention causal alibi softcap gqa".into(),
        Case::new(json!({"op": "attention", "causal": true, "softcap": 20.0}))
            .with("q", randn(rng, dt, &[2, 130, 8, 64]))
            .with("k", randn(rng, dt, &[2, 170, 2, 64]))
            .with("v", randn(rng, dt, &[2, 170, 2, 64]))
            .with("alibi_slopes", f32t(&[8], &alibi_slopes(8))),
    ));
    let (tq, tk) = (150usize, 210usize);
    v.push((
        "attention varlen rope window".into(),
        Case::new(json!({"op": "attention", "causal": true, "window_left": 40, "rope": rope}))
            .with("q", randn(rng, dt, &[tq, 4, 64]))
            .with("k", randn(rng, dt, &[tk, 2, 64]))
            .with("v", randn(rng, dt, &[tk, 2, 64]))
            .with("cu_seqlens_q", ids(&[0, 50, 50, 150]))
            .with("cu_seqlens_k", ids(&[0, 90, 100, 210])),
    ));
    v.push((
        "diff_attention v1 norm".into(),
        Case::new(json!({"op": "diff_attention", "causal": true, "lambda_init": 0.5}))
            .with("q", randn(rng, dt, &[1, 120, 8, 64]))
            .with("k", randn(rng, dt, &[1, 120, 4, 64]))
            .with("v", randn(rng, dt, &[1, 120, 2, 128]))
            .with("lambda", f32t(&[4], &rng.uniform_vec(4, 0.1, 0.9)))
            .with("norm_weight", f32t(&[128], &rng.uniform_vec(128, 0.5, 1.5))),
    ));
    v.push((
        "diff_attention v2".into(),
        Case::new(json!({"op": "diff_attention", "variant": "v2", "causal": true}))
            .with("q", randn(rng, dt, &[1, 100, 8, 64]))
            .with("k", randn(rng, dt, &[1, 100, 2, 64]))
            .with("v", randn(rng, dt, &[1, 100, 2, 64]))
            .with("lambda", f32t(&[1, 100, 4], &rng.uniform_vec(400, 0.05, 0.95))),
    ));
    v.push((
        "decode contiguous".into(),
        Case::new(json!({"op": "decode_attention", "num_splits": 4}))
            .with("q", randn(rng, dt, &[3, 2, 8, 64]))
            .with("k_cache", randn(rng, dt, &[3, 700, 2, 64]))
            .with("v_cache", randn(rng, dt, &[3, 700, 2, 64]))
            .with("cache_seqlens", ids(&[700, 333, 2])),
    ));
    let (nb, bs, mb) = (40usize, 16usize, 12usize);
    let mut table: Vec<i32> = (0..nb as i32).collect();
    shuffle(rng, &mut table);
    table.truncate(3 * mb);
    v.push((
        "decode paged".into(),
        Case::new(json!({"op": "decode_attention", "causal": true}))
            .with("q", randn(rng, dt, &[3, 1, 4, 64]))
            .with("k_cache", randn(rng, dt, &[nb, bs, 2, 64]))
            .with("v_cache", randn(rng, dt, &[nb, bs, 2, 64]))
            .with("cache_seqlens", ids(&[190, 5, 100]))
            .with("block_table", i32t(&[3, mb], &table)),
    ));
    v.push((
        "merge_states".into(),
        Case::new(json!({"op": "merge_states"}))
            .with("o_a", randn(rng, dt, &[2, 60, 4, 64]))
            .with("o_b", randn(rng, dt, &[2, 60, 4, 64]))
            .with("lse_a", randn_scaled(rng, DType::F32, &[2, 4, 60], 2.0))
            .with("lse_b", randn_scaled(rng, DType::F32, &[2, 4, 60], 2.0)),
    ));
    let (t, h, k, vd) = (300usize, 4usize, 32usize, 32usize);
    v.push((
        "linear_attention gla bonus".into(),
        Case::new(json!({"op": "linear_attention", "scale": 1.0}))
            .with("q", randn(rng, dt, &[2, t, h, k]))
            .with("k", randn_scaled(rng, dt, &[2, t, h, k], 0.3))
            .with("v", randn(rng, dt, &[2, t, h, vd]))
            .with("g", f32t(&[2, t, h, k], &rng.uniform_vec(2 * t * h * k, -0.5, 0.0)))
            .with("u", f32t(&[h, k], &rng.uniform_vec(h * k, -1.0, 1.0)))
            .with("initial_state", randn(rng, DType::F32, &[2, h, k, vd])),
    ));
    v.push((
        "linear_attention varlen".into(),
        Case::new(json!({"op": "linear_attention"}))
            .with("q", randn(rng, dt, &[1, t, h, k]))
            .with("k", randn_scaled(rng, dt, &[1, t, h, k], 0.3))
            .with("v", randn(rng, dt, &[1, t, h, vd]))
            .with("g", f32t(&[1, t, h], &rng.uniform_vec(t * h, -0.2, 0.0)))
            .with("cu_seqlens", ids(&[0, 100, 100, t as i32])),
    ));
    let kk = unit_rows(&rng.normal_vec(t * h * k), k);
    v.push((
        "delta_rule".into(),
        Case::new(json!({"op": "delta_rule"}))
            .with("q", randn(rng, dt, &[1, t, h, k]))
            .with("k", tensor(dt, &[1, t, h, k], &kk))
            .with("v", randn(rng, dt, &[1, t, h, vd]))
            .with("a", tensor(dt, &[1, t, h, k], &kk.iter().map(|x| -x).collect::<Vec<_>>()))
            .with("b", tensor(dt, &[1, t, h, k], &kk.iter().map(|x| 0.6 * x).collect::<Vec<_>>()))
            .with("g", f32t(&[1, t, h], &rng.uniform_vec(t * h, -0.1, 0.0))),
    ));
    let c = 256usize;
    v.push((
        "rwkv4".into(),
        Case::new(json!({"op": "rwkv4"}))
            .with("k", randn_scaled(rng, dt, &[2, t, c], 2.0))
            .with("v", randn(rng, dt, &[2, t, c]))
            .with("w", f32t(&[c], &rng.uniform_vec(c, -3.0, 0.0)))
            .with("u", f32t(&[c], &rng.uniform_vec(c, -1.0, 1.0))),
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
    let Some(gpu) = gpu("gpu_outputs_are_bit_identical_across_runs_and_streams") else { return };
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
