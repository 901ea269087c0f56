//! The element types of tensors.

use serde::{Deserialize, Serialize};

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    BF16,
    I32,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
        }
    }
    /// Whether this is a floating-point activation type (f32, f16, bf16).
    pub fn is_float(self) -> bool {
        !matches!(self, DType::I32)
    }
    /// The code used in `kernels/params.h` (`AkDType`).
    pub fn kernel_code(self) -> i32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::BF16 => 2,
            DType::I32 => -1,
        }
    }
    /// Relative-error bound of the spec (section 0) for outputs of this type.
    pub fn rel_tolerance(self) -> f64 {
        match self {
            DType::F32 => 1e-5,
            DType::F16 => 3e-3,
            DType::BF16 => 1.5e-2,
            DType::I32 => 0.0,
        }
    }
    /// Parse "f32" / "float32" / "f16" / "float16" / "half" / "bf16" / "bfloat16" / "i32" / "int32".
    pub fn parse(s: &str) -> Option<DType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "float" => DType::F32,
            "f16" | "float16" | "half" => DType::F16,
            "bf16" | "bfloat16" => DType::BF16,
            "i32" | "int32" => DType::I32,
            _ => return None,
        })
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
