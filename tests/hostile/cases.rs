//! Case-file defects any op has (missing or unknown tensors, unknown keys, a bad `op`), and the
//! check that the generators' valid calls really run.

use crate::attention::attention_case;
use crate::decode::{decode_case, merge_case};
use crate::linear::rwkv4_case;
use crate::rng::R;
use crate::rope::rope_case;
use crate::spec::{ex, ft, real_tensors, run_case_cpu, Expect, Kind, Spec};
use attn_kernels::{DType, TensorInfo};
use attn_kernels_harness::case::{self, Case, Device};
use serde_json::json;

/// Case-file defects any op has: missing or unknown tensors, unknown keys, bad `op`.
pub fn bad_case_file(r: &mut R, spec: &mut Spec) -> Expect {
    spec.case_only = true;
    match r.range(0, 4) {
        0 => {
            let names: Vec<String> = spec.tensors.iter().filter(|(_, t)| t.ints.is_none()).map(|(k, _)| k.clone()).collect();
            let required: Vec<String> = names.into_iter().filter(|n| REQUIRED.contains(&(spec.op, n.as_str()))).collect();
            let n = r.pick(&required);
            spec.tensors.remove(&n);
            ex(Kind::Case, "")
        }
        1 => {
            let t = ft(DType::F32, &[2]);
            spec.t(r.pick(&["bogus", "Q", "q_proj", "cu_seqlen"]), t);
            ex(Kind::Case, "")
        }
        2 => {
            spec.cfg(r.pick(&["offset", "Causal", "scale_", "mode"]), json!(1));
            ex(Kind::Config, "config")
        }
        3 => {
            let mut c = spec.config.clone();
            c["op"] = json!(r.pick(&["nope", "Attention", ""]));
            spec.case_config = Some(c);
            ex(Kind::Config, "op")
        }
        _ => {
            let mut c = spec.config.clone();
            c["op"] = r.pick(&[json!(3), json!(null), json!(["attention"])]);
            if r.bool() {
                c.as_object_mut().expect("object").remove("op");
            }
            spec.case_config = Some(c);
            ex(Kind::Config, "op")
        }
    }
}

/// Tensors each op requires (missing one is a case-file error).
pub const REQUIRED: &[(&str, &str)] = &[
    ("attention", "q"),
    ("attention", "k"),
    ("attention", "v"),
    ("diff_attention", "q"),
    ("diff_attention", "k"),
    ("diff_attention", "v"),
    ("diff_attention", "lambda"),
    ("rope", "x"),
    ("decode_attention", "q"),
    ("decode_attention", "k_cache"),
    ("decode_attention", "v_cache"),
    ("linear_attention", "q"),
    ("linear_attention", "k"),
    ("linear_attention", "v"),
    ("delta_rule", "q"),
    ("delta_rule", "k"),
    ("delta_rule", "v"),
    ("delta_rule", "a"),
    ("delta_rule", "b"),
    ("rwkv4", "k"),
    ("rwkv4", "v"),
    ("rwkv4", "w"),
    ("rwkv4", "u"),
    ("merge_states", "o_a"),
    ("merge_states", "lse_a"),
    ("merge_states", "o_b"),
    ("merge_states", "lse_b"),
];

/// The generators must produce valid calls that really run: a few fixed valid cases through
/// `case::run` with their outputs' shapes checked.
#[test]
fn valid_generated_calls_produce_outputs() {
    let mut seen = 0;
    for seed in 0..400u64 {
        for gen in [attention_case as fn(&mut R) -> (Spec, Expect), decode_case, rope_case, merge_case, rwkv4_case] {
            let (spec, want) = gen(&mut R(seed.wrapping_mul(7919)));
            if want.kind != Kind::Ok {
                continue;
            }
            let out = run_case_cpu(&spec).map(|_| ());
            assert!(out.is_ok(), "valid call failed: {out:?}\n{spec:?}");
            seen += 1;
        }
    }
    assert!(seen > 20, "only {seen} valid calls");
    let (spec, _) = (0..1000u64)
        .map(|s| attention_case(&mut R(s)))
        .find(|(s, w)| w.kind == Kind::Ok && s.shape("q").iter().product::<usize>() > 0)
        .expect("a valid attention call");
    let mut config = spec.config.clone();
    config["op"] = json!("attention");
    let o = case::run(&Case { config, inputs: real_tensors(&spec) }, &Device::Cpu).expect("valid");
    let mut want = spec.shape("q");
    *want.last_mut().expect("rank") = *spec.shape("v").last().expect("rank");
    assert_eq!(o["o"].shape(), want.as_slice());
}
