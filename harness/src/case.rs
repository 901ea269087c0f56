//! Case files (docs/ops.md section 7) and op dispatch: one place that maps an op name to its
//! family's case module ([`crate::cases`]).
//!
//! A case is a JSON config (with `op`) plus named tensors. `run` executes it on a [`Device`];
//! the CLI reads and writes cases as safetensors files with the config in the metadata.

use crate::cases;
use attn_kernels::tensor::{DType, Tensor, TensorInfo};
use attn_kernels::{DeviceTensor, Error, Gpu, Result};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Named tensors, in name order.
pub type Tensors = BTreeMap<String, Tensor>;

/// Where an op runs.
#[derive(Clone, Debug)]
pub enum Device {
    Cpu,
    Cuda(Gpu),
}

impl Device {
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Cuda(g) if g.info().emulated => "cuda-emu".into(),
            Device::Cuda(g) => format!("cuda:{} ({})", g.info().ordinal, g.info().name),
        }
    }
    /// The GPU handle, or the error an op should return when it needs one.
    pub fn gpu(&self) -> Option<&Gpu> {
        match self {
            Device::Cuda(g) => Some(g),
            Device::Cpu => None,
        }
    }
}

/// One case: the op config and its input tensors.
#[derive(Clone, Debug)]
pub struct Case {
    pub config: Value,
    pub inputs: Tensors,
}

impl Case {
    pub fn new(config: Value) -> Case {
        Case { config, inputs: Tensors::new() }
    }
    pub fn with(mut self, name: &str, t: Tensor) -> Case {
        self.inputs.insert(name.to_string(), t);
        self
    }
    pub fn op(&self) -> Result<&str> {
        self.config
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::config("op", "missing or not a string"))
    }
}

/// Parse an op's config struct from the case JSON (unknown keys are rejected, so typos show).
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &Value) -> Result<T> {
    let mut obj = config.clone();
    if let Some(m) = obj.as_object_mut() {
        m.remove("op");
    }
    serde_json::from_value(obj).map_err(|e| Error::config("config", e.to_string()))
}

/// A required input tensor.
pub fn input<'a>(inputs: &'a Tensors, name: &str) -> Result<&'a Tensor> {
    inputs.get(name).ok_or_else(|| Error::Case(format!("missing input tensor `{name}`")))
}

/// Reject tensors the op does not know, so a misspelt name is not silently ignored.
pub fn allow_only(inputs: &Tensors, op: &str, names: &[&str]) -> Result<()> {
    for k in inputs.keys() {
        if !names.contains(&k.as_str()) {
            return Err(Error::Case(format!("op `{op}` takes no tensor named `{k}` (accepted: {})", names.join(", "))));
        }
    }
    Ok(())
}

/// Every op name `run` knows.
pub const OPS: &[&str] = &["rope", "attention", "diff_attention", "linear_attention", "delta_rule", "rwkv4", "merge_states", "decode_attention"];

/// Run one case on `device`.
pub fn run(case: &Case, device: &Device) -> Result<Tensors> {
    let op = case.op()?;
    match op {
        "rope" => cases::rope::run_case(&case.config, &case.inputs, device),
        "attention" => cases::attention::run_case(&case.config, &case.inputs, device),
        "diff_attention" => cases::diff_attention::run_case(&case.config, &case.inputs, device),
        "linear_attention" => cases::linear::run_linear_case(&case.config, &case.inputs, device),
        "delta_rule" => cases::linear::run_delta_rule_case(&case.config, &case.inputs, device),
        "rwkv4" => cases::linear::run_rwkv4_case(&case.config, &case.inputs, device),
        "merge_states" => cases::decode::run_merge_case(&case.config, &case.inputs, device),
        "decode_attention" => cases::decode::run_decode_case(&case.config, &case.inputs, device),
        other => Err(unknown_op(other)),
    }
}

fn unknown_op(op: &str) -> Error {
    Error::config("op", format!("unknown op `{op}` (known: {})", OPS.join(", ")))
}

/// Named device tensors.
pub type DeviceTensors = BTreeMap<String, DeviceTensor>;

/// Upload every input of a case.
pub fn upload_inputs(gpu: &Gpu, inputs: &Tensors) -> Result<DeviceTensors> {
    inputs.iter().map(|(k, t)| Ok((k.clone(), gpu.upload(t)?))).collect()
}

/// Download every output.
pub fn download_all(gpu: &Gpu, outputs: &DeviceTensors) -> Result<Tensors> {
    outputs.iter().map(|(k, t)| Ok((k.clone(), gpu.download(t)?))).collect()
}

/// Run a case whose inputs are already on the GPU (`resident`, from [`upload_inputs`]); the
/// outputs stay there. Index tensors (cu_seqlens, position ids, block tables) are read from the
/// host copies in `case.inputs` so they can be validated. This is what `bench` times.
pub fn run_resident(case: &Case, gpu: &Gpu, resident: &DeviceTensors) -> Result<DeviceTensors> {
    let op = case.op()?;
    match op {
        "rope" => cases::rope::run_resident(&case.config, &case.inputs, resident, gpu),
        "attention" => cases::attention::run_resident(&case.config, &case.inputs, resident, gpu),
        "diff_attention" => cases::diff_attention::run_resident(&case.config, &case.inputs, resident, gpu),
        "merge_states" => cases::decode::run_merge_resident(&case.config, &case.inputs, resident, gpu),
        "decode_attention" => cases::decode::run_decode_resident(&case.config, &case.inputs, resident, gpu),
        other if OPS.contains(&other) => {
            Err(Error::unsupported("device", format!("op `{other}` has no resident CUDA path in this build")))
        }
        other => Err(unknown_op(other)),
    }
}

/// A device input by name.
pub fn resident_input<'a>(resident: &'a DeviceTensors, name: &str) -> Result<&'a DeviceTensor> {
    resident.get(name).ok_or_else(|| Error::Case(format!("missing input tensor `{name}`")))
}

// ------------------------------------------------------------------------- safetensors I/O

fn st_dtype(d: DType) -> safetensors::Dtype {
    match d {
        DType::F32 => safetensors::Dtype::F32,
        DType::F16 => safetensors::Dtype::F16,
        DType::BF16 => safetensors::Dtype::BF16,
        DType::I32 => safetensors::Dtype::I32,
    }
}

/// Read a case file: tensors plus the `config` metadata key.
pub fn read_case(path: &Path) -> Result<Case> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::Case(format!("{}: not a safetensors file: {e}", path.display())))?;
    let config_text = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("config"))
        .ok_or_else(|| Error::Case(format!("{}: metadata has no `config` key", path.display())))?;
    let config: Value =
        serde_json::from_str(config_text).map_err(|e| Error::Case(format!("`config` metadata is not JSON: {e}")))?;
    if !config.is_object() {
        return Err(Error::Case("`config` metadata must be a JSON object".into()));
    }
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Case(format!("{}: malformed safetensors: {e}", path.display())))?;
    let mut inputs = Tensors::new();
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::I32 => DType::I32,
            other => return Err(Error::Case(format!("tensor `{name}` has unsupported dtype {other:?}"))),
        };
        let t = Tensor::from_le_bytes(&name, dtype, view.shape(), view.data())?;
        inputs.insert(name, t);
    }
    Ok(Case { config, inputs })
}

/// Serialize tensors plus metadata to safetensors bytes.
pub fn to_safetensors(tensors: &Tensors, metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let owned: Vec<(String, Vec<u8>, DType, Vec<usize>)> =
        tensors.iter().map(|(k, t)| (k.clone(), t.to_le_bytes(), t.dtype(), t.shape().to_vec())).collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(k, b, d, s)| {
            safetensors::tensor::TensorView::new(st_dtype(*d), s.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::Case(format!("tensor `{k}`: {e}")))
        })
        .collect::<Result<_>>()?;
    safetensors::tensor::serialize(views, &Some(metadata)).map_err(|e| Error::Case(e.to_string()))
}

/// Write a case (inputs) file.
pub fn write_case(path: &Path, case: &Case) -> Result<()> {
    let meta = HashMap::from([("config".to_string(), case.config.to_string())]);
    write_atomic(path, &to_safetensors(&case.inputs, meta)?)
}

/// Write an output file: the tensors, the echoed config and the device that ran it.
pub fn write_outputs(path: &Path, config: &Value, device: &str, outputs: &Tensors) -> Result<()> {
    let meta = HashMap::from([("config".to_string(), config.to_string()), ("device".to_string(), device.to_string())]);
    write_atomic(path, &to_safetensors(outputs, meta)?)
}

/// Write through a temporary file and rename, so a failure never leaves a partial file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::Io(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::Io(format!("{}: {e}", path.display()))
    })
}
