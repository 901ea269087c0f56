//! Test oracle for `rope`: a naive float64 evaluation of spec section 2, element by element.
//! It shares only the frequency computation with the library (the frequencies themselves are
//! checked against independently written formulas in tests/rope.rs).

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
