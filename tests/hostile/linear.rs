//! The linear-attention recurrences: `linear_attention`, `delta_rule` and `rwkv4`.

use crate::cases::bad_case_file;
use crate::rng::{perturb, R};
use crate::spec::{ex, ft, it, it2, ok, Expect, Kind, Spec};
use attn_kernels::DType;
use serde_json::json;

/// A random `linear_attention` or `delta_rule` call (`op`) with one defect or none, and what
/// it must return.
pub fn linear_case(r: &mut R, op: &'static str) -> (Spec, Expect) {
    let defect = r.range(0, 30);
    let dt = r.float();
    let varlen = match defect {
        13 | 14 => true,
        12 => false,
        _ => r.bool(),
    };
    let (h, kd, vd) = (r.range(1, 3), r.range(1, 4), r.range(1, 4));
    let (b, t, n_seqs, lens) = if varlen {
        let lens: Vec<usize> = (0..r.range(1, 3)).map(|_| r.range(0, 3)).collect();
        (1, lens.iter().sum(), lens.len(), lens)
    } else {
        let b = r.range(0, 2);
        (b, r.range(0, 3), b, vec![])
    };
    let mut spec = Spec::new(op, json!({}));
    if r.bool() {
        spec.cfg("scale", json!(r.pick(&[1.0, 0.0, -0.5, 0.125])));
    }
    spec.t("q", ft(dt, &[b, t, h, kd]));
    spec.t("k", ft(dt, &[b, t, h, kd]));
    spec.t("v", ft(dt, &[b, t, h, vd]));
    if op == "delta_rule" {
        spec.t("a", ft(dt, &[b, t, h, kd]));
        spec.t("b", ft(dt, &[b, t, h, kd]));
    }
    if varlen {
        spec.t("cu_seqlens", it(R::cu(&lens)));
    }
    let g_shapes = [vec![b, t, h, kd], vec![b, t, h], vec![h, kd], vec![h]];
    if r.bool() {
        let gd = if r.bool() { DType::F32 } else { dt };
        spec.t("g", ft(gd, &r.pick(&g_shapes)));
    }
    if op == "linear_attention" && (r.bool() || matches!(defect, 20 | 21)) {
        spec.t("u", ft(if r.bool() { DType::F32 } else { dt }, &[h, kd]));
    }
    let state = vec![n_seqs, h, kd, vd];
    if r.bool() {
        spec.t("initial_state", ft(DType::F32, &state));
    }
    let want = match defect {
        0 => {
            for n in ["q", "k", "v", "a", "b"] {
                if spec.tensors.contains_key(n) {
                    spec.set_dtype(n, DType::I32);
                }
            }
            ex(Kind::DType, "q")
        }
        1 => {
            let rk = r.bad_rank(&[4]);
            spec.set_shape("q", r.shape(rk));
            ex(Kind::Shape, "q")
        }
        2 => {
            // H = 0 or K = 0 (k, v, a, b follow q).
            let zero_h = r.bool();
            for n in ["q", "k", "a", "b", "v"] {
                if let Some(x) = spec.tensors.get_mut(n) {
                    if zero_h {
                        x.shape[2] = 0;
                    } else if n != "v" {
                        x.shape[3] = 0;
                    }
                }
            }
            ex(Kind::Shape, "q")
        }
        3 => {
            let o = r.other_dtype(dt);
            spec.set_dtype("k", o);
            ex(Kind::DType, "k")
        }
        4 => {
            let sh = perturb(r, &spec.shape("k"));
            spec.set_shape("k", sh);
            ex(Kind::Shape, "k")
        }
        5 => {
            let o = r.other_dtype(dt);
            spec.set_dtype("v", o);
            ex(Kind::DType, "v")
        }
        6 => {
            let rk = r.bad_rank(&[4]);
            spec.set_shape("v", r.shape(rk));
            ex(Kind::Shape, "v")
        }
        7 => {
            let mut vs = spec.shape("v");
            let i = r.range(0, 2);
            vs[i] += r.range(1, 2);
            spec.set_shape("v", vs);
            ex(Kind::Shape, "v")
        }
        8 => {
            spec.set_shape("v", vec![b, t, h, 0]);
            ex(Kind::Shape, "v")
        }
        9 if spec.tensors.contains_key("g") => {
            let bad = match dt {
                DType::F32 => r.pick(&[DType::F16, DType::BF16, DType::I32]),
                DType::F16 => r.pick(&[DType::BF16, DType::I32]),
                _ => r.pick(&[DType::F16, DType::I32]),
            };
            spec.set_dtype("g", bad);
            ex(Kind::DType, "g")
        }
        10 => {
            let base = r.pick(&g_shapes);
            let mut sh = perturb(r, &base);
            if r.bool() {
                let rk = r.range(0, 5);
                sh = r.shape(rk);
            }
            if g_shapes.contains(&sh) {
                return (spec, ok());
            }
            spec.t("g", ft(DType::F32, &sh));
            ex(Kind::Shape, "g")
        }
        11 => {
            spec.t("initial_state", ft(r.other_dtype(DType::F32), &state));
            ex(Kind::DType, "initial_state")
        }
        12 => {
            // cu_seqlens with B != 1.
            let b = r.pick(&[0usize, 2, 3]);
            for n in ["q", "k", "v", "a", "b"] {
                if let Some(x) = spec.tensors.get_mut(n) {
                    x.shape[0] = b;
                }
            }
            spec.tensors.remove("g");
            spec.tensors.remove("initial_state");
            spec.t("cu_seqlens", it(vec![0, t as i32]));
            ex(Kind::Shape, "q")
        }
        13 => {
            spec.t("cu_seqlens", it(r.bad_cu(t)));
            ex(Kind::Invalid, "cu_seqlens")
        }
        14 => {
            spec.case_only = true;
            let data = spec.tensors["cu_seqlens"].ints.clone().unwrap_or_default();
            if r.bool() {
                let n = data.len();
                spec.t("cu_seqlens", it2(n, 1, data));
                ex(Kind::Shape, "cu_seqlens")
            } else {
                let n = data.len();
                spec.t("cu_seqlens", ft(DType::F32, &[n]));
                ex(Kind::DType, "cu_seqlens")
            }
        }
        15 => {
            let sh = perturb(r, &state);
            spec.t("initial_state", ft(DType::F32, &sh));
            ex(Kind::Shape, "initial_state")
        }
        16 => {
            if r.bool() {
                spec.rust_float = Some(("scale", r.pick(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY])));
                spec.plan_only = true;
            } else {
                spec.cfg("scale", json!(r.pick(&[1e300, -1e40, 3.5e38])));
            }
            ex(Kind::Invalid, "scale")
        }
        17 if op == "delta_rule" => {
            let which = r.pick(&["a", "b"]);
            let o = r.other_dtype(dt);
            spec.set_dtype(which, o);
            ex(Kind::DType, which)
        }
        18 if op == "delta_rule" => {
            let which = r.pick(&["a", "b"]);
            let sh = perturb(r, &spec.shape(which));
            spec.set_shape(which, sh);
            ex(Kind::Shape, which)
        }
        19 if op == "delta_rule" => {
            spec.case_only = true;
            spec.t("u", ft(DType::F32, &[h, kd]));
            ex(Kind::Case, "")
        }
        20 if op == "linear_attention" => {
            let bad = match dt {
                DType::F32 => r.pick(&[DType::F16, DType::BF16, DType::I32]),
                DType::F16 => r.pick(&[DType::BF16, DType::I32]),
                _ => r.pick(&[DType::F16, DType::I32]),
            };
            spec.set_dtype("u", bad);
            ex(Kind::DType, "u")
        }
        21 if op == "linear_attention" => {
            let sh = r.pick(&[vec![h], vec![kd, h + 1], vec![h, kd + 1], vec![1, h, kd]]);
            spec.set_shape("u", sh);
            ex(Kind::Shape, "u")
        }
        22 | 23 => bad_case_file(r, &mut spec),
        _ => ok(),
    };
    (spec, want)
}

/// A random `rwkv4` call with one defect or none, and what it must return.
pub fn rwkv4_case(r: &mut R) -> (Spec, Expect) {
    let defect = r.range(0, 16);
    let dt = r.float();
    let (b, t, c) = (r.range(0, 2), r.range(0, 3), r.range(1, 5));
    let mut spec = Spec::new("rwkv4", json!({}));
    spec.t("k", ft(dt, &[b, t, c]));
    spec.t("v", ft(dt, &[b, t, c]));
    spec.t("w", ft(DType::F32, &[c]));
    spec.t("u", ft(DType::F32, &[c]));
    if r.bool() {
        spec.t("initial_state", ft(DType::F32, &[b, 3, c]));
    }
    let want = match defect {
        0 => {
            spec.set_dtype("k", DType::I32);
            spec.set_dtype("v", DType::I32);
            ex(Kind::DType, "k")
        }
        1 => {
            let rk = r.bad_rank(&[3]);
            spec.set_shape("k", r.shape(rk));
            ex(Kind::Shape, "k")
        }
        2 => {
            spec.set_shape("k", vec![b, t, 0]);
            spec.set_shape("v", vec![b, t, 0]);
            ex(Kind::Shape, "k")
        }
        3 => {
            let o = r.other_dtype(dt);
            spec.set_dtype("v", o);
            ex(Kind::DType, "v")
        }
        4 => {
            let sh = perturb(r, &[b, t, c]);
            spec.set_shape("v", sh);
            ex(Kind::Shape, "v")
        }
        5 | 6 => {
            let which = r.pick(&["w", "u"]);
            spec.set_dtype(which, r.other_dtype(DType::F32));
            ex(Kind::DType, which)
        }
        7 | 8 => {
            let which = r.pick(&["w", "u"]);
            let sh = r.pick(&[vec![c + 1], vec![1, c], vec![], vec![3, c]]);
            spec.set_shape(which, sh);
            ex(Kind::Shape, which)
        }
        9 => {
            spec.t("initial_state", ft(r.other_dtype(DType::F32), &[b, 3, c]));
            ex(Kind::DType, "initial_state")
        }
        10 => {
            let sh = r.pick(&[vec![b, 2, c], vec![b + 1, 3, c], vec![b, 3, c + 1], vec![3, c]]);
            spec.t("initial_state", ft(DType::F32, &sh));
            ex(Kind::Shape, "initial_state")
        }
        11 | 12 => bad_case_file(r, &mut spec),
        _ => ok(),
    };
    (spec, want)
}

#[test]
fn hostile_linear_attention() {
    crate::property("linear_attention", 1500, |r| linear_case(r, "linear_attention"));
}

#[test]
fn hostile_delta_rule() {
    crate::property("delta_rule", 1000, |r| linear_case(r, "delta_rule"));
}

#[test]
fn hostile_rwkv4() {
    crate::property("rwkv4", 800, rwkv4_case);
}
