//! Case files and `check` rows of `attention` (shared with `diff_attention`: the q/k/v and index
//! tensors, [`case_args`]).

use crate::case::{self, Device, DeviceTensors, Tensors};
use crate::check::{CheckCase, Reference, Rng, Work};
use attn_kernels::attention::cuda::attention_cuda;
use attn_kernels::attention::oracle::attention_f64;
use attn_kernels::attention::{alibi_slopes, attention_cpu, read_dims, AttentionArgs, AttentionConfig};
use attn_kernels::tensor::{expect_rank, i32_data, DType, Tensor, TensorInfo};
use attn_kernels::{Error, Gpu, Result};

/// Host index data of an optional int32 case tensor, with its expected shapes checked.
pub fn opt_i32<'a>(inputs: &'a Tensors, name: &str) -> Result<Option<&'a Tensor>> {
    match inputs.get(name) {
        None => Ok(None),
        Some(t) => {
            i32_data(name, t)?;
            Ok(Some(t))
        }
    }
}

/// Check that a position-id tensor has shape `[B, S]` (dense) or `[total]` (varlen).
pub fn check_ids_shape(name: &str, t: &Tensor, varlen: bool, dense_bs: (usize, usize), total: usize) -> Result<()> {
    let ok = if varlen { t.shape() == [total] } else { t.shape() == [dense_bs.0, dense_bs.1] };
    if !ok {
        let want = if varlen { format!("[{total}] (varlen)") } else { format!("[{}, {}]", dense_bs.0, dense_bs.1) };
        return Err(Error::shape(name, want, t.shape()));
    }
    Ok(())
}

/// The tensor names `attention` case files may carry.
pub const CASE_TENSORS: &[&str] =
    &["q", "k", "v", "alibi_slopes", "cu_seqlens_q", "cu_seqlens_k", "position_ids_q", "position_ids_k"];

/// Arguments from case-file tensors (shared with `diff_attention`): q, k, v, ALiBi and the index
/// tensors, with the index tensors' ranks and shapes checked.
pub fn case_args(inputs: &Tensors) -> Result<AttentionArgs<'_, Tensor>> {
    let q = case::input(inputs, "q")?;
    let k = case::input(inputs, "k")?;
    let v = case::input(inputs, "v")?;
    let cu_q = opt_i32(inputs, "cu_seqlens_q")?;
    let cu_k = opt_i32(inputs, "cu_seqlens_k")?;
    let pid_q = opt_i32(inputs, "position_ids_q")?;
    let pid_k = opt_i32(inputs, "position_ids_k")?;
    for (name, t) in [("cu_seqlens_q", cu_q), ("cu_seqlens_k", cu_k)] {
        if let Some(t) = t {
            expect_rank(name, t, 1, "[N + 1]")?;
        }
    }
    let varlen = cu_q.is_some() || cu_k.is_some();
    let dims = read_dims(q, k, v, varlen)?;
    if let Some(t) = pid_q {
        check_ids_shape("position_ids_q", t, varlen, (dims.b, dims.sq), dims.sq)?;
    }
    if let Some(t) = pid_k {
        check_ids_shape("position_ids_k", t, varlen, (dims.b, dims.sk), dims.sk)?;
    }
    Ok(AttentionArgs {
        q,
        k,
        v,
        alibi_slopes: inputs.get("alibi_slopes"),
        cu_seqlens_q: cu_q.and_then(Tensor::as_i32),
        cu_seqlens_k: cu_k.and_then(Tensor::as_i32),
        position_ids_q: pid_q.and_then(Tensor::as_i32),
        position_ids_k: pid_k.and_then(Tensor::as_i32),
    })
}

/// `attn-kernels run` for op `attention`.
pub fn run_case(config: &serde_json::Value, inputs: &Tensors, device: &Device) -> Result<Tensors> {
    let cfg: AttentionConfig = case::parse_config(config)?;
    case::allow_only(inputs, "attention", CASE_TENSORS)?;
    let out = match device {
        Device::Cpu => attention_cpu(&cfg, &case_args(inputs)?)?,
        Device::Cuda(gpu) => {
            // Upload, `run_resident`, download.
            let resident = case::upload_inputs(gpu, inputs)?;
            return case::download_all(gpu, &run_resident(config, inputs, &resident, gpu)?);
        }
    };
    Ok(Tensors::from([("o".to_string(), out.o), ("lse".to_string(), out.lse)]))
}

/// `run_resident` for op `attention`: q, k, v (and alibi_slopes) from the device copies, index
/// tensors from the host copies in `inputs`; outputs `o` and `lse` stay on the device.
pub fn run_resident(
    config: &serde_json::Value,
    inputs: &Tensors,
    resident: &DeviceTensors,
    gpu: &Gpu,
) -> Result<DeviceTensors> {
    let cfg: AttentionConfig = case::parse_config(config)?;
    let host = case_args(inputs)?;
    let args = AttentionArgs {
        q: case::resident_input(resident, "q")?,
        k: case::resident_input(resident, "k")?,
        v: case::resident_input(resident, "v")?,
        alibi_slopes: match host.alibi_slopes {
            Some(_) => Some(case::resident_input(resident, "alibi_slopes")?),
            None => None,
        },
        cu_seqlens_q: host.cu_seqlens_q,
        cu_seqlens_k: host.cu_seqlens_k,
        position_ids_q: host.position_ids_q,
        position_ids_k: host.position_ids_k,
    };
    let out = attention_cuda(gpu, &cfg, &args)?;
    Ok(DeviceTensors::from([("o".to_string(), out.o), ("lse".to_string(), out.lse)]))
}

/// The float64 oracle of a case with op `attention`.
pub fn attention_oracle_case(case: &case::Case) -> Result<Reference> {
    let cfg: AttentionConfig = case::parse_config(&case.config)?;
    let args = case_args(&case.inputs)?;
    let (o, lse) = attention_f64(&cfg, &args)?;
    Ok(Reference::from([("o".to_string(), o), ("lse".to_string(), lse)]))
}

/// `check` rows for attention: a realistic prefill shape (bf16, causal, ALiBi, YaRN RoPE, GQA)
/// small enough for the CPU path and the float64 oracle to finish in seconds.
pub fn check_cases() -> Vec<CheckCase> {
    let (b, s, hq, hkv, d) = (1usize, 1024usize, 8usize, 2usize, 128usize);
    let mut rng = Rng::from_time();
    let dtype = DType::BF16;
    let mk = |rng: &mut Rng, shape: &[usize]| {
        Tensor::from_f32(dtype, shape, &rng.normal_vec(shape.iter().product())).expect("shape matches")
    };
    let config = serde_json::json!({
        "op": "attention",
        "causal": true,
        "rope": {"rotary_dim": d, "theta": 10000.0, "max_position_embeddings": 131072,
                 "scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}},
    });
    let case = case::Case::new(config)
        .with("q", mk(&mut rng, &[b, s, hq, d]))
        .with("k", mk(&mut rng, &[b, s, hkv, d]))
        .with("v", mk(&mut rng, &[b, s, hkv, d]))
        .with("alibi_slopes", Tensor::from_f32(DType::F32, &[hq], &alibi_slopes(hq)).expect("shape matches"));
    let pairs = (b * s * (s + 1) / 2 * hq) as f64;
    vec![CheckCase {
        op: "attention",
        shape: format!("q[{b},{s},{hq},{d}] kv{hkv} causal alibi yarn"),
        dtype,
        case,
        work: Work::Flops(pairs * 2.0 * (2 * d) as f64),
        tol_factor: 1.0,
        oracle: attention_oracle_case,
    }]
}
