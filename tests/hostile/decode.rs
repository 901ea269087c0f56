//! `decode_attention` (contiguous and paged caches) and `merge_states`.

use crate::attention::{attn_options, bad_attn_option};
use crate::cases::bad_case_file;
use crate::rng::{perturb, R};
use crate::rope::{bad_rope, rope_config};
use crate::spec::{ex, ft, it, it2, ok, Expect, Kind, Spec};
use attn_kernels::DType;
use serde_json::{json, Value};

/// A random `decode_attention` call (contiguous or paged cache) with one defect or none, and
/// what it must return.
pub fn decode_case(r: &mut R) -> (Spec, Expect) {
    let defect = r.range(0, 36);
    let paged = match defect {
        6..=8 | 18 | 19 => true,
        _ => r.bool(),
    };
    let dt = r.float();
    let b = r.range(1, 3);
    let hkv = r.range(1, 2);
    let hq = hkv * r.range(1, 2);
    let d = r.range(1, 5);
    let dv = r.range(1, 5);
    let sq = r.range(0, 2);
    let mut spec = Spec::new("decode_attention", json!({}));
    attn_options(r, &mut spec.config);
    let capacity;
    if paged {
        let (nb, bs, mb) = (r.range(1, 5), r.range(1, 3), r.range(1, 3));
        capacity = bs * mb;
        spec.t("k_cache", ft(dt, &[nb, bs, hkv, d]));
        spec.t("v_cache", ft(dt, &[nb, bs, hkv, dv]));
        let table: Vec<i32> = (0..b * mb).map(|_| r.int(0, nb as i64 - 1) as i32).collect();
        spec.t("block_table", it2(b, mb, table));
    } else {
        capacity = r.range(1, 5);
        spec.t("k_cache", ft(dt, &[b, capacity, hkv, d]));
        spec.t("v_cache", ft(dt, &[b, capacity, hkv, dv]));
    }
    let with_rope = d >= 2 && capacity >= sq && (r.bool() || defect == 30);
    let lo = if with_rope { sq } else { 0 };
    let seqlens: Vec<i32> = (0..b).map(|_| r.int(lo.max(1) as i64, capacity as i64) as i32).collect();
    spec.t("cache_seqlens", it(seqlens.clone()));
    spec.t("q", ft(dt, &[b, sq, hq, d]));
    if with_rope {
        spec.cfg("rope", rope_config(r, d));
        if r.bool() {
            spec.cfg("cache_keys_rotated", json!(true));
        }
    }
    if r.bool() {
        spec.t("alibi_slopes", ft(DType::F32, &[hq]));
    }
    if r.bool() {
        spec.cfg("num_splits", json!(r.range(1, 1024)));
    }
    let want = match defect {
        0 => {
            let rk = r.bad_rank(&[4]);
            spec.set_shape("q", r.shape(rk));
            ex(Kind::Shape, "q")
        }
        1 => {
            spec.set_dtype("q", DType::I32);
            ex(Kind::DType, "q")
        }
        2 => {
            let rk = r.bad_rank(&[4]);
            spec.set_shape("k_cache", r.shape(rk));
            ex(Kind::Shape, "k_cache")
        }
        3 => {
            let rk = r.bad_rank(&[4]);
            spec.set_shape("v_cache", r.shape(rk));
            ex(Kind::Shape, "v_cache")
        }
        4 => {
            let mut vs = spec.shape("v_cache");
            let i = r.range(0, 2);
            vs[i] += r.range(1, 2);
            spec.set_shape("v_cache", vs);
            ex(Kind::Shape, "v_cache")
        }
        5 => {
            spec.set_dtype("k_cache", DType::I32);
            spec.set_dtype("v_cache", DType::I32);
            ex(Kind::DType, "k_cache")
        }
        6 => {
            // block_size 0.
            let (mut ks, mut vs) = (spec.shape("k_cache"), spec.shape("v_cache"));
            ks[1] = 0;
            vs[1] = 0;
            spec.set_shape("k_cache", ks);
            spec.set_shape("v_cache", vs);
            ex(Kind::Invalid, "k_cache")
        }
        7 => {
            // max_blocks 0.
            spec.t("block_table", it2(b, 0, vec![]));
            ex(Kind::Invalid, "block_table")
        }
        8 => {
            // A block id out of range among the blocks a sequence uses.
            let ks = spec.shape("k_cache");
            let (nb, bs) = (ks[0], ks[1]);
            let mut t = spec.tensors["block_table"].clone();
            let mb = t.shape[1];
            let seq = r.range(0, b - 1);
            let used = (seqlens[seq] as usize).div_ceil(bs);
            let i = r.range(0, used - 1);
            t.ints.as_mut().expect("table")[seq * mb + i] = r.pick(&[-1, -7, nb as i32, nb as i32 + 3, i32::MAX, i32::MIN]);
            spec.t("block_table", t);
            ex(Kind::Invalid, "block_table")
        }
        9 => {
            let (mut ks, mut vs) = (spec.shape("k_cache"), spec.shape("v_cache"));
            ks[2] = 0;
            vs[2] = 0;
            spec.set_shape("k_cache", ks);
            spec.set_shape("v_cache", vs);
            ex(Kind::Invalid, "k_cache")
        }
        10 => {
            spec.cfg("rope", Value::Null);
            let mut ks = spec.shape("k_cache");
            ks[3] = 0;
            spec.set_shape("k_cache", ks);
            spec.set_shape("q", vec![b, sq, hq, 0]);
            ex(Kind::Invalid, "k_cache")
        }
        11 => {
            let mut vs = spec.shape("v_cache");
            vs[3] = 0;
            spec.set_shape("v_cache", vs);
            ex(Kind::Invalid, "v_cache")
        }
        12 => {
            let mut s = seqlens.clone();
            if r.bool() || s.len() == 1 {
                s.push(0);
            } else {
                s.pop();
            }
            spec.t("cache_seqlens", it(s));
            ex(Kind::Invalid, "cache_seqlens")
        }
        13 => {
            let mut s = seqlens.clone();
            let i = r.range(0, b - 1);
            s[i] = r.pick(&[-1, i32::MIN, capacity as i32 + 1, i32::MAX]);
            spec.t("cache_seqlens", it(s));
            ex(Kind::Invalid, "cache_seqlens")
        }
        14 => {
            spec.set_shape("q", vec![b + r.range(1, 2), sq, hq, d]);
            ex(Kind::Shape, "q")
        }
        15 => {
            spec.set_shape("q", vec![b, sq, hq, d + r.range(1, 2)]);
            ex(Kind::Shape, "q")
        }
        16 => {
            let floats: Vec<DType> = [DType::F32, DType::F16, DType::BF16].into_iter().filter(|&x| x != dt).collect();
            let o = r.pick(&floats);
            spec.set_dtype("k_cache", o);
            spec.set_dtype("v_cache", o);
            ex(Kind::DType, "k_cache")
        }
        17 => {
            spec.tensors.remove("alibi_slopes");
            spec.set_shape("q", vec![b, sq, 0, d]);
            ex(Kind::Invalid, "q")
        }
        18 | 19 => {
            // Hq % Hkv != 0.
            let hkv = r.range(2, 3);
            let hq = hkv + r.range(1, hkv - 1);
            spec.tensors.remove("alibi_slopes");
            let (mut ks, mut vs) = (spec.shape("k_cache"), spec.shape("v_cache"));
            ks[2] = hkv;
            vs[2] = hkv;
            spec.set_shape("k_cache", ks);
            spec.set_shape("v_cache", vs);
            spec.set_shape("q", vec![b, sq, hq, d]);
            ex(Kind::Invalid, "k_cache")
        }
        20 => {
            spec.t("alibi_slopes", ft(r.other_dtype(DType::F32), &[hq]));
            ex(Kind::DType, "alibi_slopes")
        }
        21 => {
            spec.t("alibi_slopes", ft(DType::F32, &r.pick(&[vec![hq + 1], vec![1, hq], vec![]])));
            ex(Kind::Shape, "alibi_slopes")
        }
        22..=24 => bad_attn_option(r, &mut spec),
        25 => {
            spec.cfg("num_splits", json!(r.pick(&[0usize, 1025, 1 << 20])));
            ex(Kind::Invalid, "split")
        }
        26 => {
            let (c, key) = bad_rope(r, d);
            spec.cfg("rope", c);
            ex(Kind::Config, key)
        }
        27 if paged => {
            // Plan API only: a flat table that is not a whole number of rows.
            spec.plan_only = true;
            let n = spec.tensors["block_table"].ints.as_ref().map_or(0, Vec::len);
            spec.plan_max_blocks = Some(n + 1 + r.range(0, 3));
            ex(Kind::Invalid, "block_table")
        }
        28 => {
            spec.case_only = true;
            if paged && r.bool() {
                let t = spec.tensors["block_table"].clone();
                let data = t.ints.unwrap_or_default();
                spec.t("block_table", it(data));
                ex(Kind::Shape, "block_table")
            } else {
                spec.t("cache_seqlens", ft(DType::F32, &[b]));
                ex(Kind::DType, "cache_seqlens")
            }
        }
        29 => {
            spec.case_only = true;
            spec.tensors.remove("cache_seqlens");
            ex(Kind::Case, "")
        }
        30 if with_rope && sq > 0 => {
            // With RoPE the new tokens must be inside the cache.
            let mut s = seqlens.clone();
            let i = r.range(0, b - 1);
            s[i] = r.range(0, sq - 1) as i32;
            spec.t("cache_seqlens", it(s));
            ex(Kind::Invalid, "cache_seqlens")
        }
        31 | 32 => bad_case_file(r, &mut spec),
        _ => ok(),
    };
    (spec, want)
}

// ------------------------------------------------------------------------------------- merge

/// A random `merge_states` call with one defect or none, and what it must return.
pub fn merge_case(r: &mut R) -> (Spec, Expect) {
    let defect = r.range(0, 11);
    let dt = r.float();
    let varlen = r.bool();
    let (b, s, h, dv) = (r.range(0, 2), r.range(0, 3), r.range(1, 3), r.range(1, 4));
    let (os, ls) = if varlen { (vec![s, h, dv], vec![h, s]) } else { (vec![b, s, h, dv], vec![b, h, s]) };
    let mut spec = Spec::new("merge_states", json!({}));
    spec.t("o_a", ft(dt, &os));
    spec.t("o_b", ft(dt, &os));
    spec.t("lse_a", ft(DType::F32, &ls));
    spec.t("lse_b", ft(DType::F32, &ls));
    let want = match defect {
        0 => {
            let rk = r.bad_rank(&[3, 4]);
            spec.set_shape("o_a", r.shape(rk));
            ex(Kind::Shape, "o_a")
        }
        1 => {
            spec.set_dtype("o_a", DType::I32);
            spec.set_dtype("o_b", DType::I32);
            ex(Kind::DType, "o_a")
        }
        2 => {
            let o = r.other_dtype(dt);
            spec.set_dtype("o_b", o);
            ex(Kind::DType, "o_b")
        }
        3 => {
            let sh = perturb(r, &os);
            spec.set_shape("o_b", sh);
            ex(Kind::Shape, "o_b")
        }
        4 | 5 => {
            let which = r.pick(&["lse_a", "lse_b"]);
            spec.set_dtype(which, r.other_dtype(DType::F32));
            ex(Kind::DType, which)
        }
        6 | 7 => {
            let which = r.pick(&["lse_a", "lse_b"]);
            let sh = if r.bool() { perturb(r, &ls) } else { os.clone() };
            spec.set_shape(which, sh);
            ex(Kind::Shape, which)
        }
        8 | 9 => bad_case_file(r, &mut spec),
        _ => ok(),
    };
    (spec, want)
}

#[test]
fn hostile_decode() {
    crate::property("decode", 2000, decode_case);
}

#[test]
fn hostile_merge_states() {
    crate::property("merge_states", 600, merge_case);
}
