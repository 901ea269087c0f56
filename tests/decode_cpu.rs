//! CPU decode, append and merge_states against the float64 oracle and the plain attention op,
//! with fresh random inputs every run (replay a failure with ATTN_KERNELS_SEED=<seed>).

mod common;

use attn_kernels::attention::{alibi_slopes, attention_cpu, AttentionArgs, AttentionConfig};
use attn_kernels::decode::{
    self, append_kv_cpu, decode_cpu, merge_states_cpu, oracle, DecodeOptions, KvCacheMut, KvCacheRef, SplitPolicy,
};
use attn_kernels::tensor::{rel_error, DType, Tensor, TensorInfo};
use attn_kernels::Error;
use attn_kernels_harness::case::{self, Case, Device};
use attn_kernels_harness::check::Rng;
use common::{arg_of, attn_cfg, f32t, randn, rope, shuffle};
use serde_json::json;

/// A contiguous cache and the same data in a paged cache with shuffled blocks.
struct Caches {
    k: Tensor,
    v: Tensor,
    pk: Tensor,
    pv: Tensor,
    table: Vec<i32>,
    max_blocks: usize,
    seqlens: Vec<i32>,
}

impl Caches {
    fn new(
        rng: &mut Rng,
        dtype: DType,
        seqlens: &[usize],
        s_max: usize,
        hkv: usize,
        d: usize,
        dv: usize,
        bs: usize,
    ) -> Caches {
        let b = seqlens.len();
        let k = randn(rng, dtype, &[b, s_max, hkv, d]);
        let v = randn(rng, dtype, &[b, s_max, hkv, dv]);
        let max_blocks = s_max.div_ceil(bs);
        let num_blocks = b * max_blocks + 3;
        let mut ids: Vec<i32> = (0..num_blocks as i32).collect();
        shuffle(rng, &mut ids);
        let table: Vec<i32> = ids[..b * max_blocks].to_vec();
        let copy = |src: &Tensor, w: usize| -> Tensor {
            let sv = src.to_f32_vec();
            let mut out = rng_fill(num_blocks * bs * hkv * w);
            for bi in 0..b {
                for j in 0..s_max {
                    let blk = table[bi * max_blocks + j / bs] as usize;
                    let dst = ((blk * bs + j % bs) * hkv) * w;
                    let s = ((bi * s_max + j) * hkv) * w;
                    out[dst..dst + hkv * w].copy_from_slice(&sv[s..s + hkv * w]);
                }
            }
            Tensor::from_f32(dtype, &[num_blocks, bs, hkv, w], &out).unwrap()
        };
        let pk = copy(&k, d);
        let pv = copy(&v, dv);
        Caches { k, v, pk, pv, table, max_blocks, seqlens: seqlens.iter().map(|&s| s as i32).collect() }
    }
    fn contiguous(&self) -> KvCacheRef<'_, Tensor> {
        KvCacheRef::Contiguous { k: &self.k, v: &self.v, cache_seqlens: &self.seqlens }
    }
    fn paged(&self) -> KvCacheRef<'_, Tensor> {
        KvCacheRef::Paged {
            k: &self.pk,
            v: &self.pv,
            block_table: &self.table,
            max_blocks: self.max_blocks,
            cache_seqlens: &self.seqlens,
        }
    }
}

/// Unused pool rows hold large values, so reading a wrong block shows.
fn rng_fill(n: usize) -> Vec<f32> {
    vec![1000.0; n]
}

/// Dense per-sequence attention (the plain op) for sequence `b`: q rows of b, keys 0..Sk.
fn plain_attention(
    c: &AttentionConfig,
    q: &Tensor,
    caches: &Caches,
    b: usize,
    alibi: Option<&Tensor>,
) -> (Vec<f32>, Vec<f32>) {
    let qs = q.shape();
    let (sq, hq, d) = (qs[1], qs[2], qs[3]);
    let ks = caches.k.shape();
    let (s_max, hkv, dv) = (ks[1], ks[2], caches.v.shape()[3]);
    let sk = caches.seqlens[b] as usize;
    let qv = q.to_f32_vec();
    let (kv, vv) = (caches.k.to_f32_vec(), caches.v.to_f32_vec());
    let qb = f32t(&[1, sq, hq, d], &qv[b * sq * hq * d..(b + 1) * sq * hq * d]);
    let kb = f32t(&[1, sk, hkv, d], &kv[b * s_max * hkv * d..(b * s_max + sk) * hkv * d]);
    let vb = f32t(&[1, sk, hkv, dv], &vv[b * s_max * hkv * dv..(b * s_max + sk) * hkv * dv]);
    let mut args = AttentionArgs::new(&qb, &kb, &vb);
    if let Some(a) = alibi {
        args = args.with_alibi(a);
    }
    let out = attention_cpu(c, &args).unwrap();
    (out.o.to_f32_vec(), out.lse.to_f32_vec())
}

fn f64v(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn paged_equals_contiguous_equals_attention_and_oracle() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    // (dtype, seqlens, s_max, hq, hkv, d, sq, block size, cfg, alibi)
    let setups: Vec<(DType, Vec<usize>, usize, usize, usize, usize, usize, usize, AttentionConfig, bool)> = vec![
        (DType::F32, vec![37, 1, 100], 100, 8, 2, 64, 1, 16, attn_cfg(true, -1, -1, 0.0, None), false),
        (DType::F16, vec![200, 129, 3], 256, 4, 4, 32, 3, 32, attn_cfg(true, 50, -1, 0.0, None), true),
        (DType::BF16, vec![65, 300], 301, 6, 3, 64, 5, 64, attn_cfg(false, -1, -1, 30.0, Some(rope(32, false))), true),
        (DType::F32, vec![17, 90, 64], 96, 8, 1, 64, 16, 16, attn_cfg(true, 20, -1, 0.0, Some(rope(64, true))), false),
        (DType::F16, vec![0, 33], 40, 4, 2, 64, 1, 8, attn_cfg(true, -1, -1, 0.0, None), true),
    ];
    for (idx, (dtype, seqlens, s_max, hq, hkv, d, sq, bs, c, use_alibi)) in setups.into_iter().enumerate() {
        let caches = Caches::new(&mut rng, dtype, &seqlens, s_max, hkv, d, d, bs);
        let b = seqlens.len();
        let q = randn(&mut rng, dtype, &[b, sq, hq, d]);
        let alibi = use_alibi.then(|| f32t(&[hq], &alibi_slopes(hq)));
        let opts = DecodeOptions::default();
        let oc = decode_cpu(&c, &q, &caches.contiguous(), alibi.as_ref(), &opts).unwrap();
        let op = decode_cpu(&c, &q, &caches.paged(), alibi.as_ref(), &opts).unwrap();
        assert_eq!(oc.o, op.o, "case {idx}: paged o != contiguous o (seed {seed})");
        assert_eq!(oc.lse, op.lse, "case {idx}: paged lse != contiguous lse (seed {seed})");
        assert_eq!(oc.o.shape(), &[b, sq, hq, d]);
        assert_eq!(oc.lse.shape(), &[b, hq, sq]);
        // Oracle on the paged cache (walks the block table itself).
        let (ro, rl) = oracle::decode_f64(&c, &q, &caches.paged(), alibi.as_ref(), &opts).unwrap();
        let tol = dtype.rel_tolerance();
        let eo = rel_error(&oc.o.to_f64_vec(), &ro);
        let el = rel_error(&oc.lse.to_f64_vec(), &rl);
        assert!(eo <= tol && el <= 1e-5, "case {idx}: rel err o {eo:.2e} lse {el:.2e} (seed {seed})");
        // The plain attention op per sequence (f32 inputs: exactly representable copies).
        if seqlens.iter().all(|&s| s >= sq) {
            let o = oc.o.to_f32_vec();
            let l = oc.lse.to_f32_vec();
            for bi in 0..b {
                let qf = Tensor::from_f32(DType::F32, q.shape(), &q.to_f32_vec()).unwrap();
                let cf = Caches {
                    k: Tensor::from_f32(DType::F32, caches.k.shape(), &caches.k.to_f32_vec()).unwrap(),
                    v: Tensor::from_f32(DType::F32, caches.v.shape(), &caches.v.to_f32_vec()).unwrap(),
                    pk: caches.pk.clone(),
                    pv: caches.pv.clone(),
                    table: caches.table.clone(),
                    max_blocks: caches.max_blocks,
                    seqlens: caches.seqlens.clone(),
                };
                let (po, pl) = plain_attention(&c, &qf, &cf, bi, alibi.as_ref());
                let n = sq * hq * d;
                let mine = &o[bi * n..(bi + 1) * n];
                let e = rel_error(
                    &f64v(mine),
                    &f64v(
                        &po.iter()
                            .map(|&x| Tensor::from_f32(dtype, &[1], &[x]).unwrap().to_f32_vec()[0])
                            .collect::<Vec<_>>(),
                    ),
                );
                let tol = if dtype == DType::F32 { 1e-6 } else { dtype.rel_tolerance() };
                assert!(e <= tol, "case {idx} seq {bi}: decode vs plain attention o rel {e:.2e} (seed {seed})");
                let ml = &l[bi * hq * sq..(bi + 1) * hq * sq];
                let e = rel_error(&f64v(ml), &f64v(&pl));
                assert!(e <= 1e-6, "case {idx} seq {bi}: decode vs plain attention lse rel {e:.2e} (seed {seed})");
            }
        }
    }
}

#[test]
fn empty_sequence_gives_zero_and_neg_inf() {
    let mut rng = Rng::from_time();
    let caches = Caches::new(&mut rng, DType::F32, &[0, 5], 8, 2, 64, 64, 4);
    let q = randn(&mut rng, DType::F32, &[2, 1, 4, 64]);
    let out = decode_cpu(&attn_cfg(true, -1, -1, 0.0, None), &q, &caches.paged(), None, &DecodeOptions::default()).unwrap();
    let o = out.o.to_f32_vec();
    let l = out.lse.to_f32_vec();
    assert!(o[..4 * 64].iter().all(|&x| x == 0.0));
    assert!(l[..4].iter().all(|&x| x == f32::NEG_INFINITY));
    assert!(l[4..].iter().all(|x| x.is_finite()));
}

#[test]
fn cache_keys_rotated_matches_rope_on_read() {
    // Append with RoPE (keys rotated into the cache) + decode with cache_keys_rotated
    // == append without RoPE + decode rotating on read. f32 so the only difference is rounding.
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let (b, s_max, hkv, hq, d, sq) = (2usize, 64usize, 2usize, 4usize, 64usize, 2usize);
    let seqlens = [30usize, 57];
    let r = rope(64, false);
    let mut k_plain = Tensor::zeros(DType::F32, &[b, s_max, hkv, d]).unwrap();
    let mut v_plain = Tensor::zeros(DType::F32, &[b, s_max, hkv, d]).unwrap();
    let mut k_rot = k_plain.clone();
    let mut v_rot = v_plain.clone();
    // Fill both caches token by token with the same rows.
    let maxlen = *seqlens.iter().max().unwrap();
    let kn_all = randn(&mut rng, DType::F32, &[b, maxlen, hkv, d]).to_f32_vec();
    let vn_all = randn(&mut rng, DType::F32, &[b, maxlen, hkv, d]).to_f32_vec();
    let mut lens = vec![0i32; b];
    // Append in chunks of 7 rows (all sequences advance together; the shorter stops early by
    // appending into a larger length, then we only read its first `seqlens` keys).
    let mut t0 = 0;
    while t0 < maxlen {
        let n = 7.min(maxlen - t0);
        let mut kn = Vec::new();
        let mut vn = Vec::new();
        for bi in 0..b {
            for t in t0..t0 + n {
                kn.extend_from_slice(&kn_all[(bi * maxlen + t) * hkv * d..][..hkv * d]);
                vn.extend_from_slice(&vn_all[(bi * maxlen + t) * hkv * d..][..hkv * d]);
            }
        }
        let kt = f32t(&[b, n, hkv, d], &kn);
        let vt = f32t(&[b, n, hkv, d], &vn);
        let new1 = append_kv_cpu(
            &mut KvCacheMut::Contiguous { k: &mut k_plain, v: &mut v_plain, cache_seqlens: &lens },
            &kt,
            &vt,
            None,
        )
        .unwrap();
        let new2 = append_kv_cpu(
            &mut KvCacheMut::Contiguous { k: &mut k_rot, v: &mut v_rot, cache_seqlens: &lens },
            &kt,
            &vt,
            Some(&r),
        )
        .unwrap();
        assert_eq!(new1, new2);
        assert!(new1.iter().zip(&lens).all(|(a, b)| *a == b + n as i32));
        lens = new1;
        t0 += n;
    }
    let sl: Vec<i32> = seqlens.iter().map(|&s| s as i32).collect();
    let q = randn(&mut rng, DType::F32, &[b, sq, hq, d]);
    let c = attn_cfg(true, -1, -1, 0.0, Some(r));
    let on_read = decode_cpu(
        &c,
        &q,
        &KvCacheRef::Contiguous { k: &k_plain, v: &v_plain, cache_seqlens: &sl },
        None,
        &DecodeOptions::default(),
    )
    .unwrap();
    let opts = DecodeOptions { split: SplitPolicy::Auto, cache_keys_rotated: true };
    let cached =
        decode_cpu(&c, &q, &KvCacheRef::Contiguous { k: &k_rot, v: &v_rot, cache_seqlens: &sl }, None, &opts).unwrap();
    let e = rel_error(&cached.o.to_f64_vec(), &on_read.o.to_f64_vec());
    assert!(e <= 1e-5, "o rel {e:.2e} (seed {seed})");
    let (ro, _) =
        oracle::decode_f64(&c, &q, &KvCacheRef::Contiguous { k: &k_rot, v: &v_rot, cache_seqlens: &sl }, None, &opts)
            .unwrap();
    let e = rel_error(&cached.o.to_f64_vec(), &ro);
    assert!(e <= 1e-5, "vs oracle o rel {e:.2e} (seed {seed})");
}

#[test]
fn append_then_decode_equals_prefill() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for (dtype, paged, with_rope, rotate_in_cache) in [
        (DType::F32, false, false, false),
        (DType::F32, true, true, false),
        (DType::F32, true, true, true),
        (DType::F16, true, false, false),
        (DType::BF16, false, true, false),
    ] {
        let (s, n_new, hq, hkv, d, bs) = (45usize, 3usize, 8usize, 2usize, 64usize, 16usize);
        let q_all = randn(&mut rng, dtype, &[1, s, hq, d]);
        let k_all = randn(&mut rng, dtype, &[1, s, hkv, d]);
        let v_all = randn(&mut rng, dtype, &[1, s, hkv, d]);
        let r = with_rope.then(|| rope(32, false));
        let c = attn_cfg(true, -1, -1, 0.0, r.clone());
        // Prefill: plain causal attention over the whole sequence.
        let pre = attention_cpu(&c, &AttentionArgs::new(&q_all, &k_all, &v_all)).unwrap();
        // Append the prompt, then the n_new last tokens, then decode those.
        let cap = 64;
        let max_blocks = cap / bs;
        let table: Vec<i32> = vec![3, 0, 2, 1];
        let (mut kc, mut vc) = if paged {
            (
                Tensor::zeros(dtype, &[max_blocks, bs, hkv, d]).unwrap(),
                Tensor::zeros(dtype, &[max_blocks, bs, hkv, d]).unwrap(),
            )
        } else {
            (Tensor::zeros(dtype, &[1, cap, hkv, d]).unwrap(), Tensor::zeros(dtype, &[1, cap, hkv, d]).unwrap())
        };
        let slice = |t: &Tensor, a: usize, b: usize, h: usize| {
            let v = t.to_f32_vec();
            Tensor::from_f32(dtype, &[1, b - a, h, d], &v[a * h * d..b * h * d]).unwrap()
        };
        let mut lens = vec![0i32];
        for (a, bnd) in [(0, s - n_new), (s - n_new, s)] {
            let kt = slice(&k_all, a, bnd, hkv);
            let vt = slice(&v_all, a, bnd, hkv);
            let rope_in = if rotate_in_cache { r.as_ref() } else { None };
            let mut cache = if paged {
                KvCacheMut::Paged { k: &mut kc, v: &mut vc, block_table: &table, max_blocks, cache_seqlens: &lens }
            } else {
                KvCacheMut::Contiguous { k: &mut kc, v: &mut vc, cache_seqlens: &lens }
            };
            lens = append_kv_cpu(&mut cache, &kt, &vt, rope_in).unwrap();
        }
        assert_eq!(lens, vec![s as i32]);
        let q_new = slice(&q_all, s - n_new, s, hq);
        let cache = if paged {
            KvCacheRef::Paged { k: &kc, v: &vc, block_table: &table, max_blocks, cache_seqlens: &lens }
        } else {
            KvCacheRef::Contiguous { k: &kc, v: &vc, cache_seqlens: &lens }
        };
        let opts = DecodeOptions { split: SplitPolicy::Auto, cache_keys_rotated: rotate_in_cache };
        let dec = decode_cpu(&c, &q_new, &cache, None, &opts).unwrap();
        let po = pre.o.to_f64_vec();
        let want = &po[(s - n_new) * hq * d..];
        // Rotating into a rounded cache adds one rounding of K; f32 keeps it far below the bound.
        let tol = if rotate_in_cache { 2.0 * dtype.rel_tolerance() } else { dtype.rel_tolerance() };
        let e = rel_error(&dec.o.to_f64_vec(), want);
        assert!(
            e <= tol,
            "{dtype} paged={paged} rope={with_rope} in_cache={rotate_in_cache}: o rel {e:.2e} (seed {seed})"
        );
        let pl = pre.lse.to_f64_vec(); // [1, Hq, S]
        let want_l: Vec<f64> =
            (0..hq).flat_map(|h| (s - n_new..s).map(move |i| (h, i))).map(|(h, i)| pl[h * s + i]).collect();
        let e = rel_error(&dec.lse.to_f64_vec(), &want_l);
        assert!(e <= 1e-4, "{dtype} lse rel {e:.2e} (seed {seed})");
    }
}

#[test]
fn merge_of_two_halves_equals_attention_over_all_keys() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let (b, sq, sk, hq, hkv, d) = (2usize, 5usize, 70usize, 4usize, 2usize, 64usize);
    let q = randn(&mut rng, DType::F32, &[b, sq, hq, d]);
    let k = randn(&mut rng, DType::F32, &[b, sk, hkv, d]);
    let v = randn(&mut rng, DType::F32, &[b, sk, hkv, d]);
    let c = AttentionConfig { softcap: 20.0, ..AttentionConfig::default() };
    let full = attention_cpu(&c, &AttentionArgs::new(&q, &k, &v)).unwrap();
    let split = 1 + rng.below(sk - 1);
    let part = |t: &Tensor, a: usize, e: usize| {
        let x = t.to_f32_vec();
        let mut out = Vec::new();
        for bi in 0..b {
            out.extend_from_slice(&x[(bi * sk + a) * hkv * d..(bi * sk + e) * hkv * d]);
        }
        f32t(&[b, e - a, hkv, d], &out)
    };
    let (ka, va, kb, vb) = (part(&k, 0, split), part(&v, 0, split), part(&k, split, sk), part(&v, split, sk));
    let ra = attention_cpu(&c, &AttentionArgs::new(&q, &ka, &va)).unwrap();
    let rb = attention_cpu(&c, &AttentionArgs::new(&q, &kb, &vb)).unwrap();
    let (o, lse) = merge_states_cpu(&ra.o, &ra.lse, &rb.o, &rb.lse).unwrap();
    let e = rel_error(&o.to_f64_vec(), &full.o.to_f64_vec());
    assert!(e <= 1e-5, "o rel {e:.2e} split {split} (seed {seed})");
    let e = rel_error(&lse.to_f64_vec(), &full.lse.to_f64_vec());
    assert!(e <= 1e-6, "lse rel {e:.2e} (seed {seed})");
    // Merging is symmetric.
    let (o2, lse2) = merge_states_cpu(&rb.o, &rb.lse, &ra.o, &ra.lse).unwrap();
    assert!(rel_error(&o2.to_f64_vec(), &o.to_f64_vec()) <= 1e-6);
    assert_eq!(lse2, lse);
}

#[test]
fn merge_states_neg_inf_cases_and_oracle() {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for varlen in [false, true] {
            let (b, s, h, dv) = (3usize, 9usize, 4usize, 48usize);
            let (oshape, lshape) =
                if varlen { (vec![s, h, dv], vec![h, s]) } else { (vec![b, s, h, dv], vec![b, h, s]) };
            let n: usize = lshape.iter().product();
            let mut la = rng.uniform_vec(n, -30.0, 30.0);
            let mut lb = rng.uniform_vec(n, -30.0, 30.0);
            la[0] = f32::NEG_INFINITY; // a empty: o = o_b, lse = lse_b
            lb[1] = f32::NEG_INFINITY; // b empty
            la[2] = f32::NEG_INFINITY; // both empty
            lb[2] = f32::NEG_INFINITY;
            la[3] = 80.0; // huge LSEs must not overflow
            lb[3] = 79.0;
            let o_a = randn(&mut rng, dtype, &oshape);
            let o_b = randn(&mut rng, dtype, &oshape);
            let (lta, ltb) = (f32t(&lshape, &la), f32t(&lshape, &lb));
            let (o, lse) = merge_states_cpu(&o_a, &lta, &o_b, &ltb).unwrap();
            assert_eq!(o.dtype(), dtype);
            let (ro, rl) = oracle::merge_f64(&o_a, &lta, &o_b, &ltb).unwrap();
            let e = rel_error(&o.to_f64_vec(), &ro);
            assert!(e <= dtype.rel_tolerance(), "{dtype} varlen={varlen}: o rel {e:.2e} (seed {seed})");
            let e = rel_error(&lse.to_f64_vec(), &rl);
            assert!(e <= 1e-6, "{dtype}: lse rel {e:.2e} (seed {seed})");
            let l = lse.to_f32_vec();
            let ov = o.to_f32_vec();
            // Row of lse index i: for varlen lse [H, T] index (h, t) -> o row (t, h).
            let orow = |i: usize| -> usize {
                if varlen {
                    let (hh, t) = (i / s, i % s);
                    t * h + hh
                } else {
                    let (bh, t) = (i / s, i % s);
                    let (bb, hh) = (bh / h, bh % h);
                    (bb * s + t) * h + hh
                }
            };
            assert_eq!(l[0], lb[0]);
            assert_eq!(l[1], la[1]);
            assert_eq!(l[2], f32::NEG_INFINITY);
            assert!(l[3].is_finite());
            assert_eq!(&ov[orow(0) * dv..][..dv], &o_b.to_f32_vec()[orow(0) * dv..][..dv]);
            assert_eq!(&ov[orow(1) * dv..][..dv], &o_a.to_f32_vec()[orow(1) * dv..][..dv]);
            assert!(ov[orow(2) * dv..][..dv].iter().all(|&x| x == 0.0));
        }
    }
}

#[test]
fn case_files_run_on_cpu() {
    // Every decode check case through the case-file path, against its oracle.
    let cases = attn_kernels_harness::check::all_cases();
    let mine: Vec<_> = cases.iter().filter(|c| c.op == "decode_attention" || c.op == "merge_states").collect();
    assert!(mine.len() >= 3);
    for c in mine {
        let row = attn_kernels_harness::check::run_one(c, &Device::Cpu);
        assert!(row.passed, "{} {}: rel {:.2e} > {:.1e} ({})", c.op, c.shape, row.rel_error, row.bound, row.note);
    }
    // Unknown config keys and tensors are rejected.
    let bad = Case::new(json!({"op": "merge_states", "nope": 1}));
    assert!(matches!(case::run(&bad, &Device::Cpu), Err(Error::Config { .. })));
    let t = f32t(&[1, 1, 1, 4], &[0.0; 4]);
    let bad = Case::new(json!({"op": "decode_attention"})).with("qq", t);
    assert!(matches!(case::run(&bad, &Device::Cpu), Err(Error::Case(_))));
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mut rng = Rng::from_time();
    let caches = Caches::new(&mut rng, DType::F16, &[10, 20], 32, 2, 64, 64, 8);
    let q = randn(&mut rng, DType::F16, &[2, 1, 4, 64]);
    let c = attn_cfg(true, -1, -1, 0.0, None);
    let o = DecodeOptions::default();
    let run = |cache: KvCacheRef<'_, Tensor>, q: &Tensor, c: &AttentionConfig, o: &DecodeOptions| {
        decode_cpu(c, q, &cache, None, o).unwrap_err()
    };

    // Block id out of range (and negative), in a block the sequence uses.
    let mut table = caches.table.clone();
    table[1] = caches.pk.shape()[0] as i32;
    let e = run(
        KvCacheRef::Paged {
            k: &caches.pk,
            v: &caches.pv,
            block_table: &table,
            max_blocks: caches.max_blocks,
            cache_seqlens: &caches.seqlens,
        },
        &q,
        &c,
        &o,
    );
    assert!(matches!(e, Error::InvalidArgument { .. }) && arg_of(&e) == "block_table", "{e}");
    table[1] = -1;
    let e = run(
        KvCacheRef::Paged {
            k: &caches.pk,
            v: &caches.pv,
            block_table: &table,
            max_blocks: caches.max_blocks,
            cache_seqlens: &caches.seqlens,
        },
        &q,
        &c,
        &o,
    );
    assert_eq!(arg_of(&e), "block_table");
    // A bad id in a block past the sequence's length is never read: accepted.
    let mut table = caches.table.clone();
    table[3] = -7; // seq 0 has 10 keys = blocks 0, 1 of 4
    decode_cpu(
        &c,
        &q,
        &KvCacheRef::Paged {
            k: &caches.pk,
            v: &caches.pv,
            block_table: &table,
            max_blocks: caches.max_blocks,
            cache_seqlens: &caches.seqlens,
        },
        None,
        &o,
    )
    .unwrap();
    // Table length not a multiple of max_blocks.
    let e = run(
        KvCacheRef::Paged {
            k: &caches.pk,
            v: &caches.pv,
            block_table: &caches.table[..7],
            max_blocks: 4,
            cache_seqlens: &caches.seqlens,
        },
        &q,
        &c,
        &o,
    );
    assert_eq!(arg_of(&e), "block_table");

    // Sequence lengths beyond capacity, negative, wrong count.
    for sl in [vec![10, 33], vec![-1, 3], vec![5]] {
        let e = run(KvCacheRef::Contiguous { k: &caches.k, v: &caches.v, cache_seqlens: &sl }, &q, &c, &o);
        assert!(matches!(e, Error::InvalidArgument { .. }) && arg_of(&e) == "cache_seqlens", "{sl:?}: {e}");
    }
    let sl = [10, 33];
    let e = run(
        KvCacheRef::Paged {
            k: &caches.pk,
            v: &caches.pv,
            block_table: &caches.table,
            max_blocks: caches.max_blocks,
            cache_seqlens: &sl,
        },
        &q,
        &c,
        &o,
    );
    assert_eq!(arg_of(&e), "cache_seqlens");

    // Shapes and dtypes.
    let e = run(caches.contiguous(), &randn(&mut rng, DType::F16, &[3, 1, 4, 64]), &c, &o);
    assert!(matches!(e, Error::Shape { .. }) && arg_of(&e) == "q", "{e}");
    let e = run(caches.contiguous(), &randn(&mut rng, DType::F16, &[2, 1, 4, 32]), &c, &o);
    assert_eq!(arg_of(&e), "q");
    let e = run(caches.contiguous(), &randn(&mut rng, DType::F16, &[2, 1, 3, 64]), &c, &o);
    assert_eq!(arg_of(&e), "k_cache");
    let e = run(caches.contiguous(), &randn(&mut rng, DType::F32, &[2, 1, 4, 64]), &c, &o);
    assert!(matches!(e, Error::DType { .. }) && arg_of(&e) == "k_cache", "{e}");
    let e = run(caches.contiguous(), &randn(&mut rng, DType::F16, &[2, 1, 4]), &c, &o);
    assert!(matches!(e, Error::Shape { .. }) && arg_of(&e) == "q");
    let v_bad = randn(&mut rng, DType::F16, &[2, 31, 2, 64]);
    let e = run(KvCacheRef::Contiguous { k: &caches.k, v: &v_bad, cache_seqlens: &caches.seqlens }, &q, &c, &o);
    assert!(matches!(e, Error::Shape { .. }) && arg_of(&e) == "v_cache", "{e}");
    let v_bad = randn(&mut rng, DType::BF16, &[2, 32, 2, 64]);
    let e = run(KvCacheRef::Contiguous { k: &caches.k, v: &v_bad, cache_seqlens: &caches.seqlens }, &q, &c, &o);
    assert!(matches!(e, Error::DType { .. }) && arg_of(&e) == "v_cache", "{e}");
    let alibi = f32t(&[3], &[0.1, 0.2, 0.3]);
    let e = decode_cpu(&c, &q, &caches.contiguous(), Some(&alibi), &o).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && arg_of(&e) == "alibi_slopes", "{e}");

    // Options.
    let e =
        run(caches.contiguous(), &q, &c, &DecodeOptions { split: SplitPolicy::Fixed(0), cache_keys_rotated: false });
    assert_eq!(arg_of(&e), "split");
    let e = run(caches.contiguous(), &q, &attn_cfg(true, -1, -1, -1.0, None), &o);
    assert!(matches!(e, Error::Config { .. }) && arg_of(&e) == "softcap", "{e}");
    let e = run(caches.contiguous(), &q, &attn_cfg(true, -1, -1, 0.0, Some(rope(63, false))), &o);
    assert!(!arg_of(&e).is_empty(), "{e}");
    // RoPE with a sequence shorter than the new tokens (negative query positions).
    let q3 = randn(&mut rng, DType::F16, &[2, 12, 4, 64]);
    let e = run(caches.contiguous(), &q3, &attn_cfg(true, -1, -1, 0.0, Some(rope(64, false))), &o);
    assert_eq!(arg_of(&e), "cache_seqlens");

    // Append: overflow, shapes, dtype; nothing written on error.
    let mut k = caches.k.clone();
    let mut v = caches.v.clone();
    let before = k.clone();
    let sl = [30i32, 5];
    let kn = randn(&mut rng, DType::F16, &[2, 3, 2, 64]);
    let e = append_kv_cpu(&mut KvCacheMut::Contiguous { k: &mut k, v: &mut v, cache_seqlens: &sl }, &kn, &kn, None)
        .unwrap_err();
    assert_eq!(arg_of(&e), "cache_seqlens");
    assert_eq!(k, before);
    let sl = [3i32, 5];
    let bad = randn(&mut rng, DType::F16, &[2, 3, 2, 32]);
    let e = append_kv_cpu(&mut KvCacheMut::Contiguous { k: &mut k, v: &mut v, cache_seqlens: &sl }, &bad, &kn, None)
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && arg_of(&e) == "k_new", "{e}");
    let e = append_kv_cpu(&mut KvCacheMut::Contiguous { k: &mut k, v: &mut v, cache_seqlens: &sl }, &kn, &bad, None)
        .unwrap_err();
    assert_eq!(arg_of(&e), "v_new");
    let kf = randn(&mut rng, DType::F32, &[2, 3, 2, 64]);
    let e = append_kv_cpu(&mut KvCacheMut::Contiguous { k: &mut k, v: &mut v, cache_seqlens: &sl }, &kf, &kf, None)
        .unwrap_err();
    assert!(matches!(e, Error::DType { .. }) && arg_of(&e) == "k_new", "{e}");
    // Paged append into a block the table does not map.
    let mut pk = caches.pk.clone();
    let mut pv = caches.pv.clone();
    let mut table = caches.table.clone();
    table[2] = 99_999; // seq 0 block 2 = rows 16..24; 10 + 7 = 17 rows needs it
    let kn7 = randn(&mut rng, DType::F16, &[2, 7, 2, 64]);
    let e = append_kv_cpu(
        &mut KvCacheMut::Paged {
            k: &mut pk,
            v: &mut pv,
            block_table: &table,
            max_blocks: caches.max_blocks,
            cache_seqlens: &caches.seqlens,
        },
        &kn7,
        &kn7,
        None,
    )
    .unwrap_err();
    assert_eq!(arg_of(&e), "block_table");
    assert_eq!(pk, caches.pk);

    // merge_states shapes.
    let oa = randn(&mut rng, DType::F16, &[2, 3, 4, 8]);
    let la = f32t(&[2, 4, 3], &[0.0; 24]);
    let e = merge_states_cpu(&oa, &la, &randn(&mut rng, DType::F16, &[2, 3, 4, 9]), &la).unwrap_err();
    assert_eq!(arg_of(&e), "o_b");
    let e = merge_states_cpu(&oa, &f32t(&[2, 3, 4], &[0.0; 24]), &oa, &la).unwrap_err();
    assert_eq!(arg_of(&e), "lse_a");
    let e =
        merge_states_cpu(&oa, &la, &oa, &Tensor::from_f32(DType::F16, &[2, 4, 3], &[0.0; 24]).unwrap()).unwrap_err();
    assert!(matches!(e, Error::DType { .. }) && arg_of(&e) == "lse_b");
    let e = merge_states_cpu(&randn(&mut rng, DType::F16, &[4, 8]), &la, &oa, &la).unwrap_err();
    assert_eq!(arg_of(&e), "o_a");
}

#[test]
fn split_heuristic_is_sane() {
    use decode::cuda::auto_splits;
    // B = 1, GQA 32/8, 32k keys on 132 SMs: many splits, each >= 256 keys.
    let s = auto_splits(132, 1, 8, 1, 32768);
    assert!((32..=128).contains(&s) && 32768 / s >= 256, "{s}");
    // Large batches fill the GPU without splitting.
    assert_eq!(auto_splits(132, 256, 8, 1, 4096), 1);
    // Short contexts are not split below 256 keys.
    assert_eq!(auto_splits(132, 1, 8, 1, 300), 1);
    assert!(auto_splits(132, 1, 8, 1, 1024) <= 4);
}

#[test]
fn empty_tensors_with_huge_dims_return_quickly() {
    let big = 1usize << 40;
    let z = |shape: &[usize]| Tensor::zeros(DType::F32, shape).unwrap();
    let (o, lse) =
        merge_states_cpu(&z(&[big, 0, 1, 8]), &z(&[big, 1, 0]), &z(&[big, 0, 1, 8]), &z(&[big, 1, 0])).unwrap();
    assert_eq!(o.shape(), &[big, 0, 1, 8]);
    assert_eq!(lse.shape(), &[big, 1, 0]);
    let (o, _) =
        oracle::merge_f64(&z(&[big, 0, 1, 8]), &z(&[big, 1, 0]), &z(&[big, 0, 1, 8]), &z(&[big, 1, 0])).unwrap();
    assert!(o.is_empty());
    // Decode: B must match cache_seqlens, which is real data, so a huge B is an error.
    let q = z(&[big, 0, 1, 8]);
    let k = z(&[big, 0, 1, 8]);
    let e = decode_cpu(
        &AttentionConfig::default(),
        &q,
        &KvCacheRef::Contiguous { k: &k, v: &k, cache_seqlens: &[] },
        None,
        &DecodeOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.argument(), Some("cache_seqlens"));
}
