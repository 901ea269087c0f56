//! The standalone `rope` op as a candle custom op.

use crate::common::{ak_err, device_ready, from_host, to_host};
use attn_kernels as ak;
use ak::rope::{RopeArgs, RopeOpConfig};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// Rotate `x` (docs/ops.md section 3, standalone `rope`): `x [B, S, H, D]` (positions
/// `position_ids [B * S]` or `position_offset + s`), or `x [total, H, D]` with `position_ids
/// [total]`, or `cu_seqlens [N + 1]` (positions restart in every sequence), or neither (one
/// sequence). Every RoPE scaling of `cfg.rope` applies; dims from `rotary_dim` on are copied.
/// Returns a new tensor of x's shape and dtype.
pub fn rope(x: &Tensor, cfg: &RopeOpConfig, position_ids: Option<&[i32]>, cu_seqlens: Option<&[i32]>) -> Result<Tensor> {
    let op = RopeOp { cfg: cfg.clone(), position_ids: position_ids.map(<[i32]>::to_vec), cu_seqlens: cu_seqlens.map(<[i32]>::to_vec) };
    let x = device_ready(x)?;
    #[cfg(feature = "cuda")]
    let x = crate::cuda_ops::rope_rows_uniform(&x)?;
    x.apply_op1_no_bwd(&op)
}

pub(crate) struct RopeOp {
    pub cfg: RopeOpConfig,
    pub position_ids: Option<Vec<i32>>,
    pub cu_seqlens: Option<Vec<i32>>,
}

impl RopeOp {
    pub(crate) fn args<'a, T: ak::TensorInfo>(&'a self, x: &'a T) -> RopeArgs<'a, T> {
        RopeArgs { x, position_ids: self.position_ids.as_deref(), cu_seqlens: self.cu_seqlens.as_deref() }
    }
}

impl CustomOp1 for RopeOp {
    fn name(&self) -> &'static str {
        "attn-kernels-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = to_host("x", s, l)?;
        from_host(ak::rope::rope_cpu(&self.cfg, &self.args(&x)).map_err(ak_err)?)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda_ops::rope(self, s, l)
    }
}
