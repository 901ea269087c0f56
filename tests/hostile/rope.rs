//! `rope`: valid and defective RoPE configs (also used by the attention family) and calls of the
//! standalone op.

use crate::cases::bad_case_file;
use crate::rng::R;
use crate::spec::{ex, ft, it, it2, ok, Expect, Kind, Spec};
use attn_kernels::DType;
use serde_json::{json, Value};

/// A valid RoPE config for head dim `d >= 2`.
pub fn rope_config(r: &mut R, d: usize) -> Value {
    let rd = 2 * r.range(1, d / 2);
    let half = rd / 2;
    let scaling = match r.range(0, 6) {
        0 => Value::Null,
        1 => json!({"rope_type": "linear", "factor": 2.0}),
        2 => json!({"type": "dynamic", "factor": 2.0}),
        3 => json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}),
        4 => json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
        5 => json!({"rope_type": "longrope", "short_factor": vec![1.0; half], "long_factor": vec![2.0; half], "original_max_position_embeddings": 4}),
        _ => json!({"rope_type": "default"}),
    };
    json!({"rotary_dim": rd, "theta": 10000.0, "interleaved": r.bool(), "max_position_embeddings": 64, "scaling": scaling})
}

/// A RoPE defect: (config, expected config key).
pub fn bad_rope(r: &mut R, d: usize) -> (Value, &'static str) {
    let mut c = if d >= 2 { rope_config(r, d) } else { json!({"rotary_dim": 2, "theta": 10000.0}) };
    if d < 2 {
        return (c, "rope.rotary_dim");
    }
    let key = match r.range(0, 9) {
        0 => {
            c["rotary_dim"] = json!(2 * r.range(0, 3) + 1);
            "rope.rotary_dim"
        }
        1 => {
            c["rotary_dim"] = json!(0);
            "rope.rotary_dim"
        }
        2 => {
            c["rotary_dim"] = json!(2 * (d / 2) + 2);
            "rope.rotary_dim"
        }
        3 => {
            c["theta"] = json!(r.pick(&[1.0, 0.5, 0.0, -10000.0]));
            "rope.theta"
        }
        4 => {
            c["scaling"] = json!({"rope_type": "bogus", "factor": 2.0});
            "rope.scaling.rope_type"
        }
        5 => {
            c["scaling"] = json!({"rope_type": "linear", "factor": r.pick(&[0.0, -2.0])});
            "rope.scaling.factor"
        }
        6 => {
            c["scaling"] = json!({"rope_type": "linear"});
            "rope.scaling.factor"
        }
        7 => {
            c["scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0, "original_max_position_embeddings": 16});
            "rope.scaling.high_freq_factor"
        }
        8 => {
            c["scaling"] = json!(r.pick(&[json!(3), json!("linear"), json!([1, 2])]));
            "rope.scaling"
        }
        _ => {
            let rd = c["rotary_dim"].as_u64().unwrap_or(2) as usize;
            c["scaling"] = json!({"rope_type": "longrope", "short_factor": vec![1.0; rd / 2 + 1], "long_factor": vec![1.0; rd / 2], "original_max_position_embeddings": 4});
            "rope.scaling.short_factor"
        }
    };
    (c, key)
}

/// A random `rope` call with one defect or none, and what it must return.
pub fn rope_case(r: &mut R) -> (Spec, Expect) {
    let defect = r.range(0, 17);
    let dt = r.float();
    let rank3 = match defect {
        7 | 8 => true,
        9 => false,
        _ => r.bool(),
    };
    let (h, d) = (r.range(1, 3), 2 * r.range(1, 3));
    let mut spec = Spec::new("rope", json!({}));
    spec.cfg("rope", rope_config(r, d));
    if r.bool() {
        spec.cfg("position_offset", json!(r.int(0, 1 << 20)));
    }
    let rows;
    if rank3 {
        let lens: Vec<usize> = (0..r.range(1, 3)).map(|_| r.range(0, 3)).collect();
        rows = lens.iter().sum::<usize>();
        spec.t("x", ft(dt, &[rows, h, d]));
        if r.bool() || matches!(defect, 7 | 8) {
            spec.t("cu_seqlens", it(R::cu(&lens)));
        } else if r.bool() {
            spec.t("position_ids", it((0..rows).map(|_| r.int(0, 5000) as i32).collect()));
        }
    } else {
        let (b, s) = (r.range(0, 2), r.range(0, 3));
        rows = b * s;
        spec.t("x", ft(dt, &[b, s, h, d]));
        if r.bool() {
            spec.t("position_ids", it2(b, s, (0..rows).map(|_| r.int(0, 5000) as i32).collect()));
        }
    }
    let want = match defect {
        0 => {
            spec.set_dtype("x", DType::I32);
            ex(Kind::DType, "x")
        }
        1 => {
            let rk = r.bad_rank(&[3, 4]);
            spec.set_shape("x", r.shape(rk));
            spec.tensors.remove("position_ids");
            spec.tensors.remove("cu_seqlens");
            ex(Kind::Shape, "x")
        }
        2 | 3 => {
            let (c, key) = bad_rope(r, d);
            spec.cfg("rope", c);
            ex(Kind::Config, key)
        }
        4 => {
            spec.tensors.remove("cu_seqlens");
            let n = rows + r.range(1, 3);
            let data = (0..n as i32).collect();
            spec.t("position_ids", it(data));
            ex(Kind::Shape, "position_ids")
        }
        5 => {
            if rows == 0 {
                return (spec, ok());
            }
            spec.tensors.remove("cu_seqlens");
            let mut data: Vec<i32> = (0..rows as i32).collect();
            let i = r.range(0, rows - 1);
            data[i] = r.int(i32::MIN as i64, -1) as i32;
            spec.t("position_ids", it(data));
            ex(Kind::Invalid, "position_ids")
        }
        6 => {
            spec.cfg("position_offset", json!(r.pick(&[-1i64, -100, i64::MIN, i32::MAX as i64, i64::MAX / 2])));
            spec.tensors.remove("position_ids");
            spec.tensors.remove("cu_seqlens");
            if spec.config["position_offset"].as_i64().unwrap_or(0) > 0 && rows == 0 {
                return (spec, ok());
            }
            ex(Kind::Invalid, "position_offset")
        }
        7 => {
            spec.t("position_ids", it((0..rows as i32).collect()));
            ex(Kind::Invalid, "position_ids")
        }
        8 => {
            spec.t("cu_seqlens", it(r.bad_cu(rows)));
            ex(Kind::Invalid, "cu_seqlens")
        }
        9 => {
            spec.tensors.remove("position_ids");
            spec.t("cu_seqlens", it(vec![0, rows as i32]));
            ex(Kind::Invalid, "cu_seqlens")
        }
        10 => {
            spec.rust_float = Some(("rope.theta", r.pick(&[f64::NAN, f64::INFINITY])));
            spec.plan_only = true;
            ex(Kind::Config, "rope.theta")
        }
        11 => {
            spec.case_only = true;
            spec.tensors.remove("cu_seqlens");
            spec.t("position_ids", ft(r.pick(&[DType::F32, DType::BF16]), &[rows]));
            ex(Kind::DType, "position_ids")
        }
        12 | 13 => bad_case_file(r, &mut spec),
        _ => ok(),
    };
    (spec, want)
}

#[test]
fn hostile_rope() {
    crate::property("rope", 1500, rope_case);
}
