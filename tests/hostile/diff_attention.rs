//! `diff_attention`: both variants, the per-head lambda, the norm weight.

use crate::attention::{attn_options, bad_attn_option, Geo};
use crate::cases::bad_case_file;
use crate::rng::{perturb, R};
use crate::rope::{bad_rope, rope_config};
use crate::spec::{ex, ft, it, ok, Expect, Kind, Spec};
use attn_kernels::DType;
use serde_json::json;

/// A random `diff_attention` call (v1 or v2) with one defect or none, and what it must return.
pub fn diff_case(r: &mut R) -> (Spec, Expect) {
    let defect = r.range(0, 30);
    let v2 = match defect {
        3..=6 | 14..=16 => false,
        7..=10 => true,
        _ => r.bool(),
    };
    let vl = r.bool();
    let geo = Geo::new(r, vl);
    let dt = r.float();
    let hkv = r.range(1, 2);
    let h = hkv * r.range(1, 2);
    let d = r.range(1, 4);
    let mut spec = Spec::new("diff_attention", json!({}));
    attn_options(r, &mut spec.config);
    let lam_shape = if v2 {
        spec.cfg("variant", json!("v2"));
        spec.t("q", ft(dt, &geo.shape(true, 2 * h, d)));
        spec.t("k", ft(dt, &geo.shape(false, hkv, d)));
        spec.t("v", ft(dt, &geo.shape(false, hkv, d)));
        if geo.varlen {
            vec![geo.sq, h]
        } else {
            vec![geo.b, geo.sq, h]
        }
    } else {
        spec.t("q", ft(dt, &geo.shape(true, 2 * h, d)));
        spec.t("k", ft(dt, &geo.shape(false, 2 * hkv, d)));
        spec.t("v", ft(dt, &geo.shape(false, hkv, 2 * d)));
        if r.bool() || matches!(defect, 14..=16) {
            // f32 or the activation dtype.
            let wt = if r.bool() { DType::F32 } else { dt };
            spec.t("norm_weight", ft(wt, &[2 * d]));
            spec.cfg("lambda_init", json!(0.2));
        }
        vec![h]
    };
    spec.t("lambda", ft(DType::F32, &lam_shape));
    geo.add_index(&mut spec);
    if r.bool() {
        spec.t("alibi_slopes", ft(DType::F32, &[h]));
    }
    if d >= 2 && r.bool() {
        spec.cfg("rope", rope_config(r, d));
    }
    let want = match defect {
        0 => {
            spec.set_shape("q", geo.shape(true, 2 * h + 1, d));
            ex(Kind::Shape, "q")
        }
        1 => {
            for n in ["q", "k", "v"] {
                spec.set_dtype(n, DType::I32);
            }
            ex(Kind::DType, "q")
        }
        2 => {
            let rk = r.bad_rank(&[if geo.varlen { 3 } else { 4 }]);
            spec.set_shape("q", r.shape(rk));
            ex(Kind::Shape, "q")
        }
        3 => {
            spec.set_shape("k", geo.shape(false, 2 * hkv + 1, d));
            ex(Kind::Shape, "k")
        }
        4 => {
            spec.set_shape("v", geo.shape(false, hkv + r.range(1, 2), 2 * d));
            ex(Kind::Shape, "v")
        }
        5 => {
            spec.set_shape("v", geo.shape(false, hkv, 2 * d + r.pick(&[1, 2])));
            ex(Kind::Shape, "v")
        }
        6 => {
            // H % Hkv != 0 (v1).
            let hkv = r.range(2, 3);
            let h = hkv + r.range(1, hkv - 1);
            spec.tensors.remove("alibi_slopes");
            spec.set_shape("q", geo.shape(true, 2 * h, d));
            spec.set_shape("k", geo.shape(false, 2 * hkv, d));
            spec.set_shape("v", geo.shape(false, hkv, 2 * d));
            spec.set_shape("lambda", vec![h]);
            ex(Kind::Invalid, "k")
        }
        7 => {
            spec.set_shape("k", geo.shape(false, 0, d));
            spec.set_shape("v", geo.shape(false, 0, d));
            ex(Kind::Invalid, "k")
        }
        8 => {
            spec.set_shape("v", geo.shape(false, hkv + 1, d));
            ex(Kind::Shape, "v")
        }
        9 => {
            spec.set_shape("v", geo.shape(false, hkv, d + 1));
            ex(Kind::Shape, "v")
        }
        10 => {
            // 2H / Hkv not an even integer (v2).
            let (h, hkv) = r.pick(&[(3usize, 2usize), (1, 4), (3, 3), (5, 2), (1, 1)]);
            spec.tensors.remove("alibi_slopes");
            spec.set_shape("q", geo.shape(true, 2 * h, d));
            spec.set_shape("k", geo.shape(false, hkv, d));
            spec.set_shape("v", geo.shape(false, hkv, d));
            let lam = if geo.varlen { vec![geo.sq, h] } else { vec![geo.b, geo.sq, h] };
            spec.set_shape("lambda", lam);
            if (2 * h) % hkv == 0 && (2 * h / hkv) % 2 == 0 {
                return (spec, ok());
            }
            ex(Kind::Invalid, "k")
        }
        11 => {
            spec.set_dtype("lambda", r.other_dtype(DType::F32));
            ex(Kind::DType, "lambda")
        }
        12 => {
            let s = perturb(r, &lam_shape);
            spec.set_shape("lambda", s);
            ex(Kind::Shape, "lambda")
        }
        13 => {
            if r.bool() {
                spec.cfg("eps", json!(r.pick(&[-1e-5, -1.0])));
            } else {
                spec.rust_float = Some(("eps", r.pick(&[f64::NAN, f64::INFINITY])));
                spec.plan_only = true;
            }
            ex(Kind::Config, "eps")
        }
        14 => {
            // Neither f32 nor the activation dtype.
            let bad: Vec<DType> = [DType::F16, DType::BF16, DType::I32].into_iter().filter(|&x| x != dt).collect();
            spec.set_dtype("norm_weight", r.pick(&bad));
            ex(Kind::DType, "norm_weight")
        }
        15 => {
            let s = r.pick(&[vec![d], vec![2 * d + 1], vec![1, 2 * d], vec![]]);
            spec.set_shape("norm_weight", s);
            ex(Kind::Shape, "norm_weight")
        }
        16 => {
            if r.bool() {
                spec.config.as_object_mut().expect("object").remove("lambda_init");
            } else {
                spec.rust_float = Some(("lambda_init", r.pick(&[f64::NAN, f64::NEG_INFINITY])));
                spec.plan_only = true;
            }
            ex(Kind::Config, "lambda_init")
        }
        17 if v2 => {
            spec.t("norm_weight", ft(DType::F32, &[2 * d]));
            spec.cfg("lambda_init", json!(0.5));
            ex(Kind::Invalid, "norm_weight")
        }
        18..=19 => bad_attn_option(r, &mut spec),
        20 => {
            let o = r.other_dtype(dt);
            spec.set_dtype("k", o);
            ex(Kind::DType, "k")
        }
        21 if geo.varlen => {
            let which = r.pick(&["cu_seqlens_q", "cu_seqlens_k"]);
            let total = if which == "cu_seqlens_q" { geo.sq } else { geo.sk };
            spec.t(which, it(r.bad_cu(total)));
            ex(Kind::Invalid, which)
        }
        22 => {
            let (c, key) = bad_rope(r, d);
            spec.cfg("rope", c);
            ex(Kind::Config, key)
        }
        23 => {
            spec.cfg("variant", json!(r.pick(&["v3", "V1", "1"])));
            spec.case_only = true;
            ex(Kind::Config, "config")
        }
        24..=25 => bad_case_file(r, &mut spec),
        _ => ok(),
    };
    (spec, want)
}

#[test]
fn hostile_diff_attention() {
    crate::property("diff_attention", 1500, diff_case);
}
