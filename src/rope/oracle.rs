//! Test oracle for `rope`: a naive float64 evaluation of spec section 2, element by element.
//! It shares only the frequency computation with the library (the frequencies themselves are
//! checked against independently written formulas in tests/rope.rs).

use crate::case::{self, Case};
use crate::check::Reference;
use crate::error::Result;

/// `y` for `x [rows, heads, head_dim]` flattened, with one position per row.
pub fn rope_f64(x: &[f64], heads: usize, head_dim: usize, positions: &[i64], r: &super::ResolvedRope) -> Vec<f64> {
    let mut y = x.to_vec();
    let d = r.rotary_dim;
    for (row, &p) in positions.iter().enumerate() {
        for h in 0..heads {
            let base = (row * heads + h) * head_dim;
            for i in 0..d / 2 {
                let (i1, i2) = if r.interleaved { (2 * i, 2 * i + 1) } else { (i, i + d / 2) };
                let phi = p as f64 * r.inv_freq[i];
                let (x1, x2) = (x[base + i1], x[base + i2]);
                y[base + i1] = r.attention_factor * (x1 * phi.cos() - x2 * phi.sin());
                y[base + i2] = r.attention_factor * (x2 * phi.cos() + x1 * phi.sin());
            }
        }
    }
    y
}

/// Oracle for a `rope` case file.
pub fn rope_oracle_case(c: &Case) -> Result<Reference> {
    let cfg: super::RopeOpConfig = case::parse_config(&c.config)?;
    let x = case::input(&c.inputs, "x")?;
    let ids = c.inputs.get("position_ids").map(|t| crate::tensor::i32_data("position_ids", t)).transpose()?;
    let cu = c.inputs.get("cu_seqlens").map(|t| crate::tensor::i32_data("cu_seqlens", t)).transpose()?;
    let plan = super::plan_rope(&cfg, &super::RopeArgs { x, position_ids: ids, cu_seqlens: cu })?;
    let y = rope_f64(&x.to_f64_vec(), plan.heads, plan.head_dim, &plan.positions, &plan.resolved);
    Ok(Reference::from([("y".to_string(), y)]))
}
