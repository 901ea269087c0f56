//! `attention`, and what the attention family (attention, diff_attention, decode) shares: the
//! q/k geometry, the config options and their defects.

use crate::cases::bad_case_file;
use crate::rng::R;
use crate::rope::{bad_rope, rope_config};
use crate::spec::{ex, ft, it, it2, ok, Expect, Kind, Spec, Ten};
use attn_kernels::DType;
use serde_json::{json, Value};

/// Valid attention-style geometry shared by attention and diff_attention.
#[derive(Clone, Debug)]
pub struct Geo {
    pub varlen: bool,
    pub b: usize,
    pub sq: usize,
    pub sk: usize,
    pub lens_q: Vec<usize>,
    pub lens_k: Vec<usize>,
}

impl Geo {
    pub fn new(r: &mut R, varlen: bool) -> Geo {
        if varlen {
            let n = r.range(1, 3);
            let lens_q: Vec<usize> = (0..n).map(|_| r.range(0, 3)).collect();
            let lens_k: Vec<usize> = (0..n).map(|_| r.range(0, 3)).collect();
            Geo { varlen, b: 1, sq: lens_q.iter().sum(), sk: lens_k.iter().sum(), lens_q, lens_k }
        } else {
            Geo { varlen, b: r.range(0, 2), sq: r.range(0, 3), sk: r.range(0, 3), lens_q: vec![], lens_k: vec![] }
        }
    }
    /// Shape of a q-side (`rows_q = true`) or k-side tensor with `heads` heads of width `w`.
    pub fn shape(&self, rows_q: bool, heads: usize, w: usize) -> Vec<usize> {
        let s = if rows_q { self.sq } else { self.sk };
        if self.varlen {
            vec![s, heads, w]
        } else {
            vec![self.b, s, heads, w]
        }
    }
    pub fn add_index(&self, spec: &mut Spec) {
        if self.varlen {
            spec.t("cu_seqlens_q", it(R::cu(&self.lens_q)));
            spec.t("cu_seqlens_k", it(R::cu(&self.lens_k)));
        }
    }
    /// Position ids of the q or k rows (dense `[B, S]`, varlen `[total]`).
    pub fn ids(&self, r: &mut R, rows_q: bool) -> Ten {
        let s = if rows_q { self.sq } else { self.sk };
        let n = if self.varlen { s } else { self.b * s };
        let data: Vec<i32> = (0..n).map(|_| r.int(0, 40) as i32).collect();
        if self.varlen {
            it(data)
        } else {
            it2(self.b, s, data)
        }
    }
}

/// Options shared by attention, diff_attention and decode configs.
pub fn attn_options(r: &mut R, config: &mut Value) {
    let c = config.as_object_mut().expect("object");
    if r.bool() {
        c.insert("causal".into(), json!(true));
    }
    if r.bool() {
        c.insert("window_left".into(), json!(r.int(-3, 3)));
        c.insert("window_right".into(), json!(r.int(-3, 3)));
    }
    if r.bool() {
        c.insert("softcap".into(), json!(r.pick(&[0.0, 5.0, 30.0])));
    }
    if r.bool() {
        c.insert("softmax_scale".into(), json!(r.pick(&[0.5, -0.25, 0.0, 2.0])));
    }
}

/// Options-level defects shared by the attention family: (spec edit, expectation).
pub fn bad_attn_option(r: &mut R, spec: &mut Spec) -> Expect {
    match r.range(0, 3) {
        0 => {
            spec.rust_float = Some(("softmax_scale", r.pick(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY])));
            spec.plan_only = true;
            ex(Kind::Config, "softmax_scale")
        }
        1 => {
            spec.rust_float = Some(("softcap", r.pick(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY])));
            spec.plan_only = true;
            ex(Kind::Config, "softcap")
        }
        2 => {
            spec.cfg("softcap", json!(r.pick(&[-1.0, -1e-30, -50.0])));
            ex(Kind::Config, "softcap")
        }
        _ => {
            // A float NaN cannot be written in JSON; a wrong JSON type is a config parse error.
            spec.cfg(r.pick(&["causal", "window_left", "softcap"]), json!("yes"));
            spec.case_only = true;
            ex(Kind::Config, "config")
        }
    }
}

/// A random `attention` call with one defect (or none, in a share of the draws) and what it
/// must return.
pub fn attention_case(r: &mut R) -> (Spec, Expect) {
    let defect = r.range(0, 34);
    let want_varlen = match defect {
        15..=19 | 33 => true,
        3 => false,
        _ => r.bool(),
    };
    let geo = Geo::new(r, want_varlen);
    let dt = r.float();
    let hkv = r.range(1, 3);
    let hq = hkv * r.range(1, 3);
    let d = r.range(1, 6);
    let dv = r.range(1, 6);
    let mut spec = Spec::new("attention", json!({}));
    attn_options(r, &mut spec.config);
    spec.t("q", ft(dt, &geo.shape(true, hq, d)));
    spec.t("k", ft(dt, &geo.shape(false, hkv, d)));
    spec.t("v", ft(dt, &geo.shape(false, hkv, dv)));
    geo.add_index(&mut spec);
    if r.bool() {
        spec.t("alibi_slopes", ft(DType::F32, &[hq]));
    }
    let with_rope = d >= 2 && (r.bool() || matches!(defect, 25 | 26));
    if with_rope {
        spec.cfg("rope", rope_config(r, d));
        if r.bool() {
            spec.t("position_ids_q", geo.ids(r, true));
        }
        if r.bool() {
            spec.t("position_ids_k", geo.ids(r, false));
        }
    }
    let v = geo.varlen;
    let want = match defect {
        0 => {
            let rk = r.bad_rank(&[if v { 3 } else { 4 }]);
            spec.set_shape("q", r.shape(rk));
            ex(Kind::Shape, "q")
        }
        1 => {
            let rk = r.bad_rank(&[if v { 3 } else { 4 }]);
            spec.set_shape("k", r.shape(rk));
            ex(Kind::Shape, "k")
        }
        2 => {
            let rk = r.bad_rank(&[if v { 3 } else { 4 }]);
            spec.set_shape("v", r.shape(rk));
            ex(Kind::Shape, "v")
        }
        3 => {
            // Dense: k's batch differs from q's (v follows k).
            let mut ks = spec.shape("k");
            ks[0] += r.range(1, 2);
            let mut vs = spec.shape("v");
            vs[0] = ks[0];
            spec.set_shape("k", ks);
            spec.set_shape("v", vs);
            ex(Kind::Shape, "k")
        }
        4 => {
            let mut vs = spec.shape("v");
            let i = if v { 0 } else { r.range(0, 1) };
            vs[i] += r.range(1, 2);
            spec.set_shape("v", vs);
            ex(Kind::Shape, "v")
        }
        5 => {
            // Hq % Hkv != 0.
            let hkv = r.range(2, 4);
            let hq = hkv * r.range(0, 2) + r.range(1, hkv - 1);
            spec.tensors.remove("alibi_slopes");
            spec.set_shape("q", geo.shape(true, hq, d));
            spec.set_shape("k", geo.shape(false, hkv, d));
            spec.set_shape("v", geo.shape(false, hkv, dv));
            ex(Kind::Invalid, "k")
        }
        6 => {
            spec.tensors.remove("alibi_slopes");
            spec.set_shape("q", geo.shape(true, 0, d));
            ex(Kind::Invalid, "q")
        }
        7 => {
            spec.set_shape("k", geo.shape(false, 0, d));
            spec.set_shape("v", geo.shape(false, 0, dv));
            ex(Kind::Invalid, "k")
        }
        8 => {
            spec.set_shape("k", geo.shape(false, hkv, d + r.range(1, 3)));
            ex(Kind::Shape, "k")
        }
        9 => {
            spec.set_shape("v", geo.shape(false, hkv + r.range(1, 2), dv));
            ex(Kind::Shape, "v")
        }
        10 => {
            for n in ["q", "k", "v"] {
                spec.set_dtype(n, DType::I32);
            }
            ex(Kind::DType, "q")
        }
        11 => {
            let o = r.other_dtype(dt);
            spec.set_dtype("k", o);
            ex(Kind::DType, "k")
        }
        12 => {
            let o = r.other_dtype(dt);
            spec.set_dtype("v", o);
            ex(Kind::DType, "v")
        }
        13 => {
            spec.cfg("rope", Value::Null);
            spec.tensors.remove("position_ids_q");
            spec.tensors.remove("position_ids_k");
            spec.set_shape("q", geo.shape(true, hq, 0));
            spec.set_shape("k", geo.shape(false, hkv, 0));
            ex(Kind::Invalid, "q")
        }
        14 => {
            spec.set_shape("v", geo.shape(false, hkv, 0));
            ex(Kind::Invalid, "v")
        }
        15 => {
            spec.tensors.remove("cu_seqlens_k");
            ex(Kind::Invalid, "cu_seqlens_k")
        }
        16 => {
            spec.tensors.remove("cu_seqlens_q");
            ex(Kind::Invalid, "cu_seqlens_q")
        }
        17 => {
            let which = r.pick(&["cu_seqlens_q", "cu_seqlens_k"]);
            let total = if which == "cu_seqlens_q" { geo.sq } else { geo.sk };
            spec.t(which, it(r.bad_cu(total)));
            ex(Kind::Invalid, which)
        }
        18 => {
            // Both valid, different numbers of sequences.
            let mut cq = vec![0i32; geo.lens_q.len() + 1];
            cq.push(geo.sq as i32);
            spec.t("cu_seqlens_q", it(cq));
            spec.t("cu_seqlens_k", it(R::cu(&geo.lens_k)));
            ex(Kind::Invalid, "cu_seqlens_k")
        }
        19 => {
            // Case files: cu_seqlens of rank 2, or not int32.
            spec.case_only = true;
            let which = r.pick(&["cu_seqlens_q", "cu_seqlens_k"]);
            let data = spec.tensors[which].ints.clone().unwrap_or_default();
            if r.bool() {
                let n = data.len();
                spec.t(which, it2(1, n, data));
                ex(Kind::Shape, which)
            } else {
                let n = data.len();
                spec.t(which, ft(DType::F32, &[n]));
                ex(Kind::DType, which)
            }
        }
        20..=22 => bad_attn_option(r, &mut spec),
        23 => {
            spec.t("alibi_slopes", ft(r.other_dtype(DType::F32), &[hq]));
            ex(Kind::DType, "alibi_slopes")
        }
        24 => {
            let s = r.pick(&[vec![hq + 1], vec![1, hq], vec![], vec![hq, 1]]);
            spec.t("alibi_slopes", ft(DType::F32, &s));
            ex(Kind::Shape, "alibi_slopes")
        }
        25 => {
            // Position ids of the wrong length (the case layer checks the shape first).
            let which = r.pick(&["position_ids_q", "position_ids_k"]);
            let n = (if which == "position_ids_q" { geo.sq } else { geo.sk }) * geo.b + r.range(1, 2);
            spec.t(which, it((0..n as i32).collect()));
            Expect { kind: Kind::Invalid, args: vec![which], case: Some((Kind::Shape, vec![which])) }
        }
        26 => {
            let which = r.pick(&["position_ids_q", "position_ids_k"]);
            let mut t = geo.ids(r, which == "position_ids_q");
            let data = t.ints.as_mut().expect("ids");
            if data.is_empty() {
                return (spec, ok());
            }
            let i = r.range(0, data.len() - 1);
            data[i] = r.int(i32::MIN as i64, -1) as i32;
            spec.t(which, t);
            ex(Kind::Invalid, which)
        }
        27 => {
            spec.cfg("rope", Value::Null);
            spec.tensors.remove("position_ids_k");
            let which = r.pick(&["position_ids_q", "position_ids_k"]);
            spec.tensors.remove("position_ids_q");
            spec.t(which, geo.ids(r, which == "position_ids_q"));
            ex(Kind::Invalid, which)
        }
        28 => {
            let (c, key) = bad_rope(r, d);
            spec.cfg("rope", c);
            ex(Kind::Config, key)
        }
        29 if with_rope => {
            spec.rust_float = Some(("rope.theta", r.pick(&[f64::NAN, f64::INFINITY])));
            spec.plan_only = true;
            ex(Kind::Config, "rope.theta")
        }
        30..=31 => bad_case_file(r, &mut spec),
        _ => ok(),
    };
    (spec, want)
}

#[test]
fn hostile_attention() {
    crate::property("attention", 2500, attention_case);
}
