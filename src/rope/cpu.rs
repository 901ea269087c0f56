//! CPU reference of the standalone `rope` op: rayon over rows, f64 angles and rotation.

use super::{plan_rope, RopeArgs, RopeOpConfig};
use crate::error::Result;
use crate::tensor::{Tensor, TensorInfo};
use rayon::prelude::*;

/// Rotate `x` out of place.
pub fn rope_cpu(cfg: &RopeOpConfig, args: &RopeArgs<'_, Tensor>) -> Result<Tensor> {
    let plan = plan_rope(cfg, args)?;
    let row_len = plan.heads * plan.head_dim;
    let mut y = args.x.to_f32_vec();
    let r = &plan.resolved;
    let half = r.rotary_dim / 2;
    y.par_chunks_mut(row_len.max(1)).zip(plan.positions.par_iter()).for_each(|(row, &pos)| {
        // One cos/sin per frequency, shared by every head of the row.
        let cs: Vec<(f64, f64)> = (0..half).map(|i| r.cos_sin(pos, i)).collect();
        let a = r.attention_factor;
        for head in row.chunks_mut(plan.head_dim) {
            for (i, &(c, s)) in cs.iter().enumerate() {
                let (i1, i2) = r.pair(i);
                let (x1, x2) = (head[i1] as f64, head[i2] as f64);
                head[i1] = (a * (x1 * c - x2 * s)) as f32;
                head[i2] = (a * (x2 * c + x1 * s)) as f32;
            }
        }
    });
    Tensor::from_f32(plan.dtype, args.x.shape(), &y)
}

/// Rotate `x` in place.
pub fn rope_cpu_inplace(cfg: &RopeOpConfig, x: &mut Tensor, position_ids: Option<&[i32]>, cu_seqlens: Option<&[i32]>) -> Result<()> {
    let y = rope_cpu(cfg, &RopeArgs { x, position_ids, cu_seqlens })?;
    *x = y;
    Ok(())
}
