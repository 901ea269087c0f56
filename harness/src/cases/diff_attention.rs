//! Case files and `check` rows of `diff_attention`.

use super::attention;
use crate::case::{self, Device, DeviceTensors, Tensors};
use crate::check::{CheckCase, Reference, Rng, Work};
use attn_kernels::diff_attention::oracle::diff_attention_f64;
use attn_kernels::diff_attention::{cuda, diff_attention_cpu, DiffAttentionArgs, DiffAttentionConfig};
use attn_kernels::tensor::{DType, Tensor};
use attn_kernels::{Gpu, Result};

/// Diff-attention arguments from case tensors.
pub fn case_args(inputs: &Tensors) -> Result<DiffAttentionArgs<'_, Tensor>> {
    let a = attention::case_args(inputs)?;
    Ok(DiffAttentionArgs {
        q: a.q,
        k: a.k,
        v: a.v,
        lambda: case::input(inputs, "lambda")?,
        norm_weight: inputs.get("norm_weight"),
        alibi_slopes: a.alibi_slopes,
        cu_seqlens_q: a.cu_seqlens_q,
        cu_seqlens_k: a.cu_seqlens_k,
        position_ids_q: a.position_ids_q,
        position_ids_k: a.position_ids_k,
    })
}

/// `attn-kernels run` for op `diff_attention`.
pub fn run_case(config: &serde_json::Value, inputs: &Tensors, device: &Device) -> Result<Tensors> {
    let cfg: DiffAttentionConfig = case::parse_config(config)?;
    let mut names = attention::CASE_TENSORS.to_vec();
    names.extend(["lambda", "norm_weight"]);
    case::allow_only(inputs, "diff_attention", &names)?;
    let args = case_args(inputs)?;
    let out = match device {
        Device::Cpu => diff_attention_cpu(&cfg, &args)?,
        Device::Cuda(gpu) => cuda::diff_attention_cuda_host(gpu, &cfg, &args)?,
    };
    Ok(Tensors::from([("o".to_string(), out.o), ("lse1".to_string(), out.lse1), ("lse2".to_string(), out.lse2)]))
}

/// `run_resident` for op `diff_attention`: float tensors from the device copies, index tensors
/// from the host copies in `inputs`; outputs `o`, `lse1`, `lse2` stay on the device.
pub fn run_resident(
    config: &serde_json::Value,
    inputs: &Tensors,
    resident: &DeviceTensors,
    gpu: &Gpu,
) -> Result<DeviceTensors> {
    let cfg: DiffAttentionConfig = case::parse_config(config)?;
    let host = case_args(inputs)?;
    let on_device = |name: &str, present: bool| present.then(|| case::resident_input(resident, name)).transpose();
    let args = DiffAttentionArgs {
        q: case::resident_input(resident, "q")?,
        k: case::resident_input(resident, "k")?,
        v: case::resident_input(resident, "v")?,
        lambda: case::resident_input(resident, "lambda")?,
        norm_weight: on_device("norm_weight", host.norm_weight.is_some())?,
        alibi_slopes: on_device("alibi_slopes", host.alibi_slopes.is_some())?,
        cu_seqlens_q: host.cu_seqlens_q,
        cu_seqlens_k: host.cu_seqlens_k,
        position_ids_q: host.position_ids_q,
        position_ids_k: host.position_ids_k,
    };
    let out = cuda::diff_attention_cuda(gpu, &cfg, &args)?;
    Ok(DeviceTensors::from([("o".to_string(), out.o), ("lse1".to_string(), out.lse1), ("lse2".to_string(), out.lse2)]))
}

/// The float64 oracle of a case with op `diff_attention`.
pub fn diff_attention_oracle_case(case: &case::Case) -> Result<Reference> {
    let cfg: DiffAttentionConfig = case::parse_config(&case.config)?;
    let args = case_args(&case.inputs)?;
    let r = diff_attention_f64(&cfg, &args)?;
    Ok(Reference::from([("o".to_string(), r.o), ("lse1".to_string(), r.lse1), ("lse2".to_string(), r.lse2)]))
}

/// `check` rows for differential attention: v1 with the fused norm and v2, bf16, causal.
pub fn check_cases() -> Vec<CheckCase> {
    let (b, s, h, hkv, d) = (1usize, 512usize, 8usize, 4usize, 64usize);
    let mut rng = Rng::from_time();
    let dtype = DType::BF16;
    let mk = |rng: &mut Rng, shape: &[usize]| {
        Tensor::from_f32(dtype, shape, &rng.normal_vec(shape.iter().product())).expect("shape matches")
    };
    let f32t = |shape: &[usize], v: Vec<f32>| Tensor::from_f32(DType::F32, shape, &v).expect("shape matches");
    let pairs = (b * s * (s + 1) / 2 * 2 * h) as f64;
    let v1 = case::Case::new(serde_json::json!({"op": "diff_attention", "causal": true, "lambda_init": 0.8 - 0.6 * (-0.3f64 * 3.0).exp()}))
        .with("q", mk(&mut rng, &[b, s, 2 * h, d]))
        .with("k", mk(&mut rng, &[b, s, 2 * hkv, d]))
        .with("v", mk(&mut rng, &[b, s, hkv, 2 * d]))
        .with("lambda", f32t(&[h], rng.uniform_vec(h, 0.1, 0.9)))
        .with("norm_weight", f32t(&[2 * d], rng.uniform_vec(2 * d, 0.5, 1.5)));
    let dd = 2 * d;
    let v2 = case::Case::new(serde_json::json!({"op": "diff_attention", "variant": "v2", "causal": true}))
        .with("q", mk(&mut rng, &[b, s, 2 * h, dd]))
        .with("k", mk(&mut rng, &[b, s, hkv, dd]))
        .with("v", mk(&mut rng, &[b, s, hkv, dd]))
        .with("lambda", f32t(&[b, s, h], rng.uniform_vec(b * s * h, 0.05, 0.95)));
    vec![
        CheckCase {
            op: "diff_attention",
            shape: format!("v1 q[{b},{s},{},{d}] kv{hkv} causal norm", 2 * h),
            dtype,
            case: v1,
            work: Work::Flops(pairs * 2.0 * (d + 2 * d) as f64),
            tol_factor: 2.0,
            oracle: diff_attention_oracle_case,
        },
        CheckCase {
            op: "diff_attention",
            shape: format!("v2 q[{b},{s},{},{dd}] kv{hkv} causal", 2 * h),
            dtype,
            case: v2,
            work: Work::Flops(pairs * 2.0 * (2 * dd) as f64),
            tol_factor: 2.0,
            oracle: diff_attention_oracle_case,
        },
    ]
}
