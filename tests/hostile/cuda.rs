//! The CUDA entry points' own checks, beyond the plans (on the GPU or the emulated device).

use crate::common::gpu;
use crate::spec::{check, Kind, Spec};
use attn_kernels::attention::{self, AttentionArgs, AttentionConfig};
use attn_kernels::linear::cuda::{linear_attention_cuda_slots, StatePool};
use attn_kernels::linear::{LinearArgs, LinearAttentionConfig};
use attn_kernels::{DType, Result, Tensor};
use serde_json::json;

/// The CUDA entry points' own checks (beyond the plans): unsupported head dims and dtypes,
/// caller-owned outputs of the wrong shape or dtype, state-pool slot ids out of range,
/// duplicated or miscounted. Skipped (with the reason printed) without a GPU.
#[test]
fn hostile_cuda_entry_points() {
    let Some(gpu) = gpu(concat!(module_path!(), "::hostile_cuda_entry_points")) else { return };
    let up = |dt: DType, shape: &[usize]| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin()).collect();
        gpu.upload(&Tensor::from_f32(dt, shape, &v).expect("shape")).expect("upload")
    };
    let expect = |what: &str, got: Result<()>, kind: Kind, arg: &'static str| {
        let spec = Spec::new("cuda", json!({}));
        if let Err(e) = check(what, &spec, kind, &[arg], Ok(got)) {
            panic!("{e}");
        }
    };
    let cfg = AttentionConfig::default();
    // Attention: head dims without a kernel, f32, outputs of the wrong shape or dtype.
    for (dt, d, dv, arg) in [(DType::BF16, 32, 32, "q"), (DType::F16, 96, 96, "q"), (DType::BF16, 64, 32, "v"), (DType::F32, 64, 64, "q")] {
        let (q, k, v) = (up(dt, &[1, 5, 2, d]), up(dt, &[1, 7, 1, d]), up(dt, &[1, 7, 1, dv]));
        let got = attention::cuda::attention_cuda(&gpu, &cfg, &AttentionArgs::new(&q, &k, &v)).map(|_| ());
        expect(&format!("attention_cuda {dt} D={d} Dv={dv}"), got, Kind::Unsupported, arg);
    }
    let (q, k, v) = (up(DType::BF16, &[1, 5, 2, 64]), up(DType::BF16, &[1, 7, 1, 64]), up(DType::BF16, &[1, 7, 1, 64]));
    for (shape, dt, kind) in [(vec![1, 5, 2, 32], DType::BF16, Kind::Shape), (vec![1, 5, 2, 64], DType::F32, Kind::DType), (vec![5, 2, 64], DType::BF16, Kind::Shape)] {
        let mut o = gpu.alloc(dt, &shape).expect("alloc");
        let got = attention::cuda::attention_cuda_into(&gpu, &cfg, &AttentionArgs::new(&q, &k, &v), &mut o, None);
        expect(&format!("attention_cuda_into o {dt} {shape:?}"), got, kind, "o");
    }
    let mut o = gpu.alloc(DType::BF16, &[1, 5, 2, 64]).expect("alloc");
    let mut lse = gpu.alloc(DType::F32, &[1, 5, 2]).expect("alloc");
    let got = attention::cuda::attention_cuda_into(&gpu, &cfg, &AttentionArgs::new(&q, &k, &v), &mut o, Some(&mut lse));
    expect("attention_cuda_into lse [B, Sq, H]", got, Kind::Shape, "lse");
    // State pool slots: out of range, duplicated, miscounted; an initial_state with a pool.
    let (b, t, h, kd, vd) = (3usize, 1usize, 2usize, 16usize, 16usize);
    let (q, k, v) = (up(DType::BF16, &[b, t, h, kd]), up(DType::BF16, &[b, t, h, kd]), up(DType::BF16, &[b, t, h, vd]));
    let s0 = up(DType::F32, &[b, h, kd, vd]);
    let lcfg = LinearAttentionConfig::default();
    let mut pool = StatePool::new(&gpu, 5, h, kd, vd).expect("pool");
    for (ids, what) in [
        (vec![0, 1, 5], "out of range"),
        (vec![0, -1, 2], "negative"),
        (vec![0, 1, i32::MAX], "i32::MAX"),
        (vec![2, 0, 2], "duplicated"),
        (vec![0, 1], "too few"),
        (vec![0, 1, 2, 3], "too many"),
    ] {
        let got = linear_attention_cuda_slots(&gpu, &lcfg, &LinearArgs::new(&q, &k, &v), &mut pool, &ids).map(|_| ());
        expect(&format!("slots {what}"), got, Kind::Invalid, "slot_ids");
    }
    let got = linear_attention_cuda_slots(&gpu, &lcfg, &LinearArgs::new(&q, &k, &v).with_initial_state(&s0), &mut pool, &[0, 1, 2]).map(|_| ());
    expect("slots with initial_state", got, Kind::Invalid, "initial_state");
    let mut wrong_pool = StatePool::new(&gpu, 5, h, kd, vd + 1).expect("pool");
    let got = linear_attention_cuda_slots(&gpu, &lcfg, &LinearArgs::new(&q, &k, &v), &mut wrong_pool, &[0, 1, 2]).map(|_| ());
    expect("slots pool of the wrong shape", got, Kind::Shape, "pool.state");
    // Valid: the same call with good slots succeeds.
    linear_attention_cuda_slots(&gpu, &lcfg, &LinearArgs::new(&q, &k, &v), &mut pool, &[4, 0, 2]).expect("valid slots");
}

/// The fused differential prefill adds positions and windows in 32-bit ints: more than 2^30
/// tokens in all (query plus key rows) is refused before anything is uploaded (shapes only, no
/// memory: the tensors are `Fake`).
#[test]
fn diff_prefill_refuses_more_than_2_pow_30_tokens() {
    use crate::spec::Fake;
    use attn_kernels::diff_attention::cuda::DiffAttentionLaunch;
    use attn_kernels::diff_attention::{DiffAttentionArgs, DiffAttentionConfig};
    let Some(gpu) = gpu(concat!(module_path!(), "::diff_prefill_refuses_more_than_2_pow_30_tokens")) else { return };
    let (h, d) = (1usize, 64usize);
    let cfg = DiffAttentionConfig::default();
    for (sq, sk, ok) in [(1usize << 29, 1usize << 29, false), ((1 << 29) - 1, 1 << 29, true)] {
        let q = Fake { dtype: DType::BF16, shape: vec![1, sq, 2 * h, d] };
        let k = Fake { dtype: DType::BF16, shape: vec![1, sk, 2 * h, d] };
        let v = Fake { dtype: DType::BF16, shape: vec![1, sk, h, 2 * d] };
        let lambda = Fake { dtype: DType::F32, shape: vec![h] };
        let got = DiffAttentionLaunch::new(&gpu, &cfg, &DiffAttentionArgs::new(&q, &k, &v, &lambda)).map(|_| ());
        if ok {
            got.unwrap_or_else(|e| panic!("Sq = {sq}, Sk = {sk} is under the limit: {e}"));
        } else {
            let e = got.expect_err("2^30 tokens must be refused");
            crate::common::assert_err(&e, crate::common::ErrKind::Unsupported, "q", "diff prefill at 2^30 tokens");
            assert!(e.to_string().contains("2^30 tokens"), "the token limit, not another check: {e}");
        }
    }
}
