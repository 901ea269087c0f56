//! Case files and `check` rows of the standalone `rope` op.

use crate::case::{self, Device, DeviceTensors, Tensors};
use crate::check::{CheckCase, Reference, Rng, Work};
use attn_kernels::rope::oracle::rope_f64;
use attn_kernels::rope::{cuda, plan_rope, rope_cpu, RopeArgs, RopeOpConfig};
use attn_kernels::tensor::{i32_data, DType, Tensor};
use attn_kernels::{Gpu, Result};
use serde_json::Value;

/// The tensor names `rope` case files may carry.
const CASE_TENSORS: &[&str] = &["x", "position_ids", "cu_seqlens"];

fn index_input<'a>(inputs: &'a Tensors, name: &str) -> Result<Option<&'a [i32]>> {
    inputs.get(name).map(|t| i32_data(name, t)).transpose()
}

/// `attn-kernels run` for op `rope`: tensors `x [position_ids] [cu_seqlens]`, output `y`.
pub fn run_case(config: &Value, inputs: &Tensors, device: &Device) -> Result<Tensors> {
    case::allow_only(inputs, "rope", CASE_TENSORS)?;
    let cfg: RopeOpConfig = case::parse_config(config)?;
    let x = case::input(inputs, "x")?;
    let position_ids = index_input(inputs, "position_ids")?;
    let cu_seqlens = index_input(inputs, "cu_seqlens")?;
    let y = match device {
        Device::Cpu => rope_cpu(&cfg, &RopeArgs { x, position_ids, cu_seqlens })?,
        Device::Cuda(gpu) => {
            let resident = case::upload_inputs(gpu, inputs)?;
            return case::download_all(gpu, &run_resident(config, inputs, &resident, gpu)?);
        }
    };
    Ok(Tensors::from([("y".to_string(), y)]))
}

/// `rope` with `x` resident on the device (index data from the host copies in `inputs`).
pub fn run_resident(config: &Value, inputs: &Tensors, resident: &DeviceTensors, gpu: &Gpu) -> Result<DeviceTensors> {
    case::allow_only(inputs, "rope", CASE_TENSORS)?;
    let cfg: RopeOpConfig = case::parse_config(config)?;
    let x = case::resident_input(resident, "x")?;
    let position_ids = index_input(inputs, "position_ids")?;
    let cu_seqlens = index_input(inputs, "cu_seqlens")?;
    let y = cuda::rope_cuda(gpu, &cfg, &RopeArgs { x, position_ids, cu_seqlens })?;
    Ok(DeviceTensors::from([("y".to_string(), y)]))
}

/// The float64 oracle of a `rope` case.
pub fn rope_oracle_case(c: &case::Case) -> Result<Reference> {
    let cfg: RopeOpConfig = case::parse_config(&c.config)?;
    let x = case::input(&c.inputs, "x")?;
    let ids = c.inputs.get("position_ids").map(|t| i32_data("position_ids", t)).transpose()?;
    let cu = c.inputs.get("cu_seqlens").map(|t| i32_data("cu_seqlens", t)).transpose()?;
    let plan = plan_rope(&cfg, &RopeArgs { x, position_ids: ids, cu_seqlens: cu })?;
    let y = rope_f64(&x.to_f64_vec(), plan.heads, plan.head_dim, &plan.positions, &plan.resolved);
    Ok(Reference::from([("y".to_string(), y)]))
}

/// A realistic rope case: Llama-3.1-8B-like q, 32 heads of 128, YaRN scaling, positions near 2^20.
pub fn check_cases() -> Vec<CheckCase> {
    let (b, s, h, d) = (4usize, 1024usize, 32usize, 128usize);
    let mut rng = Rng::from_time();
    let mut cases = Vec::new();
    for (dtype, scaling, offset) in [
        (DType::BF16, serde_json::json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}), (1usize << 20) - 2048),
        (DType::F32, serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}), 0),
    ] {
        let x = Tensor::from_f32(dtype, &[b, s, h, d], &rng.normal_vec(b * s * h * d)).expect("shape matches");
        let config = serde_json::json!({
            "op": "rope",
            "rope": {"rotary_dim": d, "theta": 500000.0, "max_position_embeddings": 131072, "scaling": scaling},
            "position_offset": offset,
        });
        cases.push(CheckCase {
            op: "rope",
            shape: format!("x[{b},{s},{h},{d}] @{offset}"),
            dtype,
            case: case::Case::new(config).with("x", x),
            work: Work::Bytes((2 * b * s * h * d * dtype.size()) as f64),
            tol_factor: 1.0,
            oracle: rope_oracle_case,
        });
    }
    cases
}
