//! Decode, append and merge_states on the GPU against the float64 oracle and the CPU path:
//! both cache layouts, block sizes 16..256, Sq_new 1..16, GQA 32/8 and 32/32 (and MQA), every
//! head dim and rows-per-CTA instantiation the kernels have, ALiBi, RoPE on read, softcap and
//! windows, split counts, bit-exact determinism, poisoned outputs, append then decode ==
//! prefill, bad inputs.

use super::common::{arg_of, attn_cfg, f32t, gpu, randn, rope, shuffle, up};
use attn_kernels::attention::{alibi_slopes, attention_cpu, AttentionArgs, AttentionConfig};
use attn_kernels::decode::cuda::{
    append_kv_cuda, decode_cuda, decode_cuda_with_index, merge_states_cuda, merge_states_cuda_into, rows_per_cta,
    DeviceKvIndex,
};
use attn_kernels::decode::{
    append_kv_cpu, merge_states_cpu, oracle, DecodeOptions, KvCacheMut, KvCacheRef, SplitPolicy,
};
use attn_kernels::tensor::{rel_error, DType, Tensor, TensorInfo};
use attn_kernels::{DeviceTensor, Error, Gpu};
use attn_kernels_harness::case::Device;
use attn_kernels_harness::check::Rng;

/// One decode problem: host data (paged or contiguous) and its device copy.
struct Problem {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    table: Option<(Vec<i32>, usize)>,
    seqlens: Vec<i32>,
    alibi: Option<Tensor>,
}

impl Problem {
    #[allow(clippy::too_many_arguments)]
    fn new(
        rng: &mut Rng,
        dtype: DType,
        seqlens: &[usize],
        sq: usize,
        hq: usize,
        hkv: usize,
        d: usize,
        block: Option<usize>,
        alibi: bool,
    ) -> Problem {
        let b = seqlens.len();
        let q = randn(rng, dtype, &[b, sq, hq, d]);
        let (k, v, table) = match block {
            Some(bs) => {
                let (k, v, t, m) = attn_kernels_harness::cases::decode::random_paged(rng, dtype, seqlens, bs, hkv, d, d).unwrap();
                (k, v, Some((t, m)))
            }
            None => {
                let s_max = seqlens.iter().copied().max().unwrap_or(0) + 5;
                (randn(rng, dtype, &[b, s_max, hkv, d]), randn(rng, dtype, &[b, s_max, hkv, d]), None)
            }
        };
        let alibi = alibi.then(|| f32t(&[hq], &alibi_slopes(hq)));
        Problem { q, k, v, table, seqlens: seqlens.iter().map(|&s| s as i32).collect(), alibi }
    }
    fn cache<'a, T>(&'a self, k: &'a T, v: &'a T) -> KvCacheRef<'a, T> {
        match &self.table {
            None => KvCacheRef::Contiguous { k, v, cache_seqlens: &self.seqlens },
            Some((t, m)) => KvCacheRef::Paged { k, v, block_table: t, max_blocks: *m, cache_seqlens: &self.seqlens },
        }
    }
    fn host(&self) -> KvCacheRef<'_, Tensor> {
        self.cache(&self.k, &self.v)
    }
}

struct OnDevice {
    q: DeviceTensor,
    k: DeviceTensor,
    v: DeviceTensor,
    alibi: Option<DeviceTensor>,
}

fn upload_problem(gpu: &Gpu, p: &Problem) -> OnDevice {
    OnDevice {
        q: gpu.upload(&p.q).unwrap(),
        k: gpu.upload(&p.k).unwrap(),
        v: gpu.upload(&p.v).unwrap(),
        alibi: p.alibi.as_ref().map(|a| gpu.upload(a).unwrap()),
    }
}

/// Run on the GPU into poisoned outputs; returns (o, lse) on the host.
fn run_decode(gpu: &Gpu, p: &Problem, dev: &OnDevice, c: &AttentionConfig, opts: &DecodeOptions) -> (Tensor, Tensor) {
    let cache = p.cache(&dev.k, &dev.v);
    let index = DeviceKvIndex::new(gpu, &cache).unwrap();
    let (b, sq, hq, _) = (p.q.shape()[0], p.q.shape()[1], p.q.shape()[2], p.q.shape()[3]);
    let dv = p.v.shape()[3];
    let mut o = gpu.alloc_poisoned(p.q.dtype(), &[b, sq, hq, dv]).unwrap();
    let mut lse = gpu.alloc_poisoned(DType::F32, &[b, hq, sq]).unwrap();
    decode_cuda_with_index(gpu, c, &dev.q, &cache, &index, dev.alibi.as_ref(), opts, &mut o, &mut lse).unwrap();
    (gpu.download(&o).unwrap(), gpu.download(&lse).unwrap())
}

/// Compare GPU outputs with the oracle; NaN/Inf where the reference is finite fails (poison).
fn check_decode(tag: &str, seed: u64, dtype: DType, got: &(Tensor, Tensor), want: &(Vec<f64>, Vec<f64>)) {
    let eo = rel_error(&got.0.to_f64_vec(), &want.0);
    let el = rel_error(&got.1.to_f64_vec(), &want.1);
    assert!(eo <= dtype.rel_tolerance(), "{tag}: o rel {eo:.2e} > {:.1e} (seed {seed})", dtype.rel_tolerance());
    assert!(el <= 1e-5, "{tag}: lse rel {el:.2e} (seed {seed})");
    // Fully masked rows: exactly 0 and -inf.
    for (i, &l) in want.1.iter().enumerate() {
        if l == f64::NEG_INFINITY {
            assert_eq!(got.1.to_f32_vec()[i], f32::NEG_INFINITY, "{tag}: lse[{i}] should be -inf (seed {seed})");
        }
    }
}

#[test]
fn decode_gpu_matches_oracle() {
    let Some(gpu) = gpu(concat!(module_path!(), "::decode_gpu_matches_oracle")) else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    // (dtype, seqlens, sq, hq, hkv, d, block, alibi, cfg, splits)
    let cases: Vec<(DType, Vec<usize>, usize, usize, usize, usize, Option<usize>, bool, AttentionConfig, SplitPolicy)> = vec![
        (
            DType::F16,
            vec![1000, 1, 77, 4096],
            1,
            32,
            8,
            128,
            Some(16),
            false,
            attn_cfg(true, -1, -1, 0.0, None),
            SplitPolicy::Auto,
        ),
        (
            DType::BF16,
            vec![513, 2000],
            1,
            32,
            32,
            128,
            Some(32),
            false,
            attn_cfg(true, -1, -1, 0.0, None),
            SplitPolicy::Auto,
        ),
        (
            DType::F16,
            vec![300, 1777, 64],
            4,
            32,
            8,
            128,
            Some(64),
            true,
            attn_cfg(true, -1, -1, 0.0, None),
            SplitPolicy::Fixed(3),
        ),
        (
            DType::BF16,
            vec![999, 130],
            16,
            32,
            8,
            128,
            Some(128),
            false,
            attn_cfg(true, 100, -1, 0.0, None),
            SplitPolicy::Auto,
        ),
        (
            DType::F16,
            vec![4000],
            7,
            32,
            32,
            128,
            Some(256),
            true,
            attn_cfg(true, -1, -1, 0.0, Some(rope(128, false))),
            SplitPolicy::Auto,
        ),
        (
            DType::BF16,
            vec![257, 3000],
            2,
            32,
            8,
            128,
            None,
            false,
            attn_cfg(true, -1, -1, 30.0, Some(rope(64, true))),
            SplitPolicy::Fixed(17),
        ),
        (DType::F16, vec![0, 5, 100], 3, 8, 1, 64, Some(16), true, attn_cfg(false, 10, 2, 0.0, None), SplitPolicy::Auto),
        (
            DType::BF16,
            vec![1500, 12],
            1,
            16,
            2,
            256,
            None,
            true,
            attn_cfg(true, -1, -1, 0.0, Some(rope(96, false))),
            SplitPolicy::Fixed(1),
        ),
        (DType::F16, vec![2222, 40], 5, 12, 4, 64, None, false, attn_cfg(false, -1, -1, 0.0, None), SplitPolicy::Fixed(5)),
        (
            DType::F16,
            vec![700],
            16,
            32,
            32,
            128,
            Some(16),
            false,
            attn_cfg(true, -1, -1, 0.0, Some(rope(128, false))),
            SplitPolicy::Auto,
        ),
    ];
    let cap = if gpu.info().emulated { 1100 } else { usize::MAX }; // emulated: sequences capped at 1100 keys (still several pages and splits); CPU time
    for (idx, (dtype, seqlens, sq, hq, hkv, d, block, alibi, c, split)) in cases.into_iter().enumerate() {
        let seqlens: Vec<usize> = seqlens.iter().map(|&l| l.min(cap)).collect();
        let p = Problem::new(&mut rng, dtype, &seqlens, sq, hq, hkv, d, block, alibi);
        let dev = upload_problem(&gpu, &p);
        let opts = DecodeOptions { split, cache_keys_rotated: false };
        let want = oracle::decode_f64(&c, &p.q, &p.host(), p.alibi.as_ref(), &opts).unwrap();
        let got = run_decode(&gpu, &p, &dev, &c, &opts);
        check_decode(
            &format!("case {idx} ({dtype} {seqlens:?} sq {sq} {hq}/{hkv} d {d} block {block:?} {split:?})"),
            seed,
            dtype,
            &got,
            &want,
        );
        // The convenience entry point (uploads index data itself) agrees bit for bit.
        let out = decode_cuda(&gpu, &c, &dev.q, &p.cache(&dev.k, &dev.v), dev.alibi.as_ref(), &opts).unwrap();
        assert_eq!(gpu.download(&out.o).unwrap(), got.0, "case {idx}: decode_cuda != decode_cuda_with_index");
    }
}

#[test]
fn decode_gpu_block_sizes_and_new_tokens() {
    let Some(gpu) = gpu(concat!(module_path!(), "::decode_gpu_block_sizes_and_new_tokens")) else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let long = if gpu.info().emulated { 800 } else { 1500 }; // emulated: up to 800 keys (several pages, up to 3 splits); CPU time
    let heads = if gpu.info().emulated { [(8usize, 2usize), (8, 8)] } else { [(32, 8), (32, 32)] }; // emulated: same GQA groups (same rows per CTA), 4x fewer CTAs
    for bs in [16usize, 32, 64, 128, 256] {
        for sq in [1usize, 2, 3, 8, 16] {
            for (hq, hkv) in heads {
                let dtype = if bs % 32 == 0 { DType::BF16 } else { DType::F16 };
                let seqlens = [sq + rng.below(long), sq + rng.below(300)];
                let p = Problem::new(&mut rng, dtype, &seqlens, sq, hq, hkv, 128, Some(bs), bs == 64);
                let dev = upload_problem(&gpu, &p);
                let c = attn_cfg(true, -1, -1, 0.0, None);
                let opts = DecodeOptions::default();
                let want = oracle::decode_f64(&c, &p.q, &p.host(), p.alibi.as_ref(), &opts).unwrap();
                let got = run_decode(&gpu, &p, &dev, &c, &opts);
                check_decode(&format!("bs {bs} sq {sq} {hq}/{hkv} {seqlens:?}"), seed, dtype, &got, &want);
            }
        }
    }
}

/// Every decode instantiation `ak_decode_{f16,bf16}_d{64,128,256}_r{1,2,4,8}`: the rows per CTA
/// follow from GQA group size times Sq_new (`rows_per_cta`), with full and partial row tiles.
#[test]
fn decode_gpu_every_head_dim_and_rows_per_cta() {
    let Some(gpu) = gpu(concat!(module_path!(), "::decode_gpu_every_head_dim_and_rows_per_cta")) else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    // (hq, hkv, sq_new, rows per CTA): MHA one token; MHA two tokens; group 3 (a partial 4-row
    // tile); group 3 times 3 tokens (a full and a partial 8-row tile).
    let grid = [(4usize, 4usize, 1usize, 1usize), (4, 4, 2, 2), (6, 2, 1, 4), (6, 2, 3, 8)];
    for dtype in [DType::F16, DType::BF16] {
        for d in [64usize, 128, 256] {
            for (i, &(hq, hkv, sq, rows)) in grid.iter().enumerate() {
                assert_eq!(rows_per_cta(hq / hkv * sq), rows, "{hq}/{hkv} sq {sq}");
                let block = if i % 2 == 0 { Some(16) } else { None };
                let split = [SplitPolicy::Auto, SplitPolicy::Fixed(3), SplitPolicy::Fixed(1), SplitPolicy::Auto][i];
                let r = (i == 2).then(|| rope(d / 2, d == 64));
                let c = attn_cfg(true, if i == 3 { 90 } else { -1 }, -1, 0.0, r);
                let p = Problem::new(&mut rng, dtype, &[300, 37 + sq], sq, hq, hkv, d, block, i % 2 == 1);
                let dev = upload_problem(&gpu, &p);
                let opts = DecodeOptions { split, cache_keys_rotated: false };
                let want = oracle::decode_f64(&c, &p.q, &p.host(), p.alibi.as_ref(), &opts).unwrap();
                let got = run_decode(&gpu, &p, &dev, &c, &opts);
                let tag = format!("{dtype} d {d} {hq}/{hkv} sq {sq} (r{rows}) block {block:?} {split:?}");
                check_decode(&tag, seed, dtype, &got, &want);
            }
        }
    }
}

#[test]
fn decode_gpu_long_context() {
    // 32k keys (spec section 0 bound), B = 1, GQA 32/8, RoPE on read and ALiBi.
    let Some(gpu) = gpu(concat!(module_path!(), "::decode_gpu_long_context")) else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let keys = if gpu.info().emulated { 4096 } else { 32768 }; // emulated: still 64 pages and 16 Auto splits; CPU time
    let p = Problem::new(&mut rng, DType::BF16, &[keys], 1, 32, 8, 128, Some(64), true);
    let dev = upload_problem(&gpu, &p);
    let c = attn_cfg(true, -1, -1, 0.0, Some(rope(128, false)));
    let opts = DecodeOptions::default();
    let want = oracle::decode_f64(&c, &p.q, &p.host(), p.alibi.as_ref(), &opts).unwrap();
    let got = run_decode(&gpu, &p, &dev, &c, &opts);
    check_decode(&format!("{keys} keys bf16"), seed, DType::BF16, &got, &want);
}

#[test]
fn splits_change_nothing_beyond_rounding_and_are_deterministic() {
    let Some(gpu) = gpu(concat!(module_path!(), "::splits_change_nothing_beyond_rounding_and_are_deterministic")) else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let long = if gpu.info().emulated { 2000 } else { 5000 }; // emulated: still more splits than keys at Fixed(1024); CPU time
    let (hq, hkv) = if gpu.info().emulated { (8, 2) } else { (32, 8) }; // emulated: same GQA group of 4 (same kernel), 4x fewer CTAs
    let p = Problem::new(&mut rng, DType::F16, &[long, 1234, 1], 1, hq, hkv, 128, Some(16), true);
    let dev = upload_problem(&gpu, &p);
    let c = attn_cfg(true, -1, -1, 0.0, Some(rope(128, false)));
    let base = run_decode(&gpu, &p, &dev, &c, &DecodeOptions { split: SplitPolicy::Fixed(1), cache_keys_rotated: false });
    for split in [
        SplitPolicy::Fixed(2),
        SplitPolicy::Fixed(7),
        SplitPolicy::Fixed(64),
        SplitPolicy::Fixed(1024),
        SplitPolicy::Auto,
    ] {
        let opts = DecodeOptions { split, cache_keys_rotated: false };
        let a = run_decode(&gpu, &p, &dev, &c, &opts);
        let e = rel_error(&a.0.to_f64_vec(), &base.0.to_f64_vec());
        assert!(e <= 2e-3, "{split:?}: o differs from 1 split by {e:.2e} (seed {seed})");
        let e = rel_error(&a.1.to_f64_vec(), &base.1.to_f64_vec());
        assert!(e <= 1e-5, "{split:?}: lse differs from 1 split by {e:.2e} (seed {seed})");
        // Same input, same split: bit-identical, every run.
        let repeats = if gpu.info().emulated { 1 } else { 3 }; // emulated: one more run compared bit for bit, not three; CPU time
        for _ in 0..repeats {
            let b = run_decode(&gpu, &p, &dev, &c, &opts);
            assert_eq!(a.0.to_le_bytes(), b.0.to_le_bytes(), "{split:?}: o not bit-identical run to run");
            assert_eq!(a.1.to_le_bytes(), b.1.to_le_bytes(), "{split:?}: lse not bit-identical run to run");
        }
    }
}

#[test]
fn append_gpu_matches_cpu_and_decode_equals_prefill() {
    let Some(gpu) = gpu(concat!(module_path!(), "::append_gpu_matches_cpu_and_decode_equals_prefill")) else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for (dtype, paged, r, in_cache) in [
        (DType::F16, true, None, false),
        (DType::BF16, false, Some(rope(128, false)), false),
        (DType::F16, true, Some(rope(128, false)), true),
        (DType::BF16, true, Some(rope(64, true)), true),
        (DType::F32, false, Some(rope(32, false)), true),
    ] {
        let (b, hq, hkv, d, bs) = (2usize, 32usize, 8usize, 128usize, 16usize);
        let s = 301usize; // total tokens per sequence
        let n_new = 4usize;
        let cap_blocks = s.div_ceil(bs) + 1;
        let q_all = randn(&mut rng, dtype, &[b, s, hq, d]);
        let k_all = randn(&mut rng, dtype, &[b, s, hkv, d]);
        let v_all = randn(&mut rng, dtype, &[b, s, hkv, d]);
        let slice = |t: &Tensor, a: usize, e: usize, h: usize| {
            let x = t.to_f32_vec();
            let mut out = Vec::new();
            for bi in 0..b {
                out.extend_from_slice(&x[(bi * s + a) * h * d..(bi * s + e) * h * d]);
            }
            Tensor::from_f32(dtype, &[b, e - a, h, d], &out).unwrap()
        };
        // Host and device caches start with the same random contents (unwritten rows stay so).
        let (shape, table, max_blocks) = if paged {
            let nb = b * cap_blocks + 1;
            let mut ids: Vec<i32> = (0..nb as i32).collect();
            shuffle(&mut rng, &mut ids);
            (vec![nb, bs, hkv, d], Some(ids[..b * cap_blocks].to_vec()), cap_blocks)
        } else {
            (vec![b, s + 3, hkv, d], None, 0)
        };
        let mut hk = randn(&mut rng, dtype, &shape);
        let mut hv = randn(&mut rng, dtype, &shape);
        let mut dk = gpu.upload(&hk).unwrap();
        let mut dv = gpu.upload(&hv).unwrap();
        let mut lens = vec![0i32; b];
        let rope_in = if in_cache { r.as_ref() } else { None };
        for (a, e) in [(0, 100), (100, s - n_new), (s - n_new, s)] {
            let (kt, vt) = (slice(&k_all, a, e, hkv), slice(&v_all, a, e, hkv));
            let (kd, vd) = (gpu.upload(&kt).unwrap(), gpu.upload(&vt).unwrap());
            let new_h = match &table {
                Some(t) => append_kv_cpu(
                    &mut KvCacheMut::Paged { k: &mut hk, v: &mut hv, block_table: t, max_blocks, cache_seqlens: &lens },
                    &kt,
                    &vt,
                    rope_in,
                ),
                None => append_kv_cpu(
                    &mut KvCacheMut::Contiguous { k: &mut hk, v: &mut hv, cache_seqlens: &lens },
                    &kt,
                    &vt,
                    rope_in,
                ),
            }
            .unwrap();
            let new_d = match &table {
                Some(t) => append_kv_cuda(
                    &gpu,
                    &mut KvCacheMut::Paged { k: &mut dk, v: &mut dv, block_table: t, max_blocks, cache_seqlens: &lens },
                    &kd,
                    &vd,
                    rope_in,
                ),
                None => append_kv_cuda(
                    &gpu,
                    &mut KvCacheMut::Contiguous { k: &mut dk, v: &mut dv, cache_seqlens: &lens },
                    &kd,
                    &vd,
                    rope_in,
                ),
            }
            .unwrap();
            assert_eq!(new_h, new_d);
            lens = new_h;
        }
        // Caches agree: V bit for bit, K bit for bit without RoPE, within rounding with it.
        let (gk, gv) = (gpu.download(&dk).unwrap(), gpu.download(&dv).unwrap());
        assert_eq!(gv, hv, "{dtype} paged={paged}: V caches differ");
        if rope_in.is_none() {
            assert_eq!(gk, hk, "{dtype} paged={paged}: K caches differ");
        } else {
            let e = rel_error(&gk.to_f64_vec(), &hk.to_f64_vec());
            assert!(e <= dtype.rel_tolerance() / 4.0, "{dtype}: rotated K caches differ by {e:.2e} (seed {seed})");
        }
        // Decode the last n_new tokens on the GPU == causal prefill over the whole sequence.
        let c = attn_cfg(true, -1, -1, 0.0, r.clone());
        if dtype == DType::F32 {
            continue; // no f32 GPU decode; the append itself was checked above
        }
        let q_new = gpu.upload(&slice(&q_all, s - n_new, s, hq)).unwrap();
        let cache = match &table {
            Some(t) => KvCacheRef::Paged { k: &dk, v: &dv, block_table: t, max_blocks, cache_seqlens: &lens },
            None => KvCacheRef::Contiguous { k: &dk, v: &dv, cache_seqlens: &lens },
        };
        let opts = DecodeOptions { split: SplitPolicy::Auto, cache_keys_rotated: in_cache };
        let out = decode_cuda(&gpu, &c, &q_new, &cache, None, &opts).unwrap();
        let o = gpu.download(&out.o).unwrap().to_f64_vec();
        let pre = attention_cpu(&c, &AttentionArgs::new(&q_all, &k_all, &v_all)).unwrap().o.to_f64_vec();
        let mut want = Vec::new();
        for bi in 0..b {
            want.extend_from_slice(&pre[(bi * s + s - n_new) * hq * d..(bi * s + s) * hq * d]);
        }
        let e = rel_error(&o, &want);
        let tol = if in_cache { 2.0 * dtype.rel_tolerance() } else { dtype.rel_tolerance() };
        assert!(
            e <= tol,
            "{dtype} paged={paged} rope={} in_cache={in_cache}: decode vs prefill rel {e:.2e} (seed {seed})",
            r.is_some()
        );
    }
}

#[test]
fn merge_states_gpu_matches_cpu() {
    let Some(gpu) = gpu(concat!(module_path!(), "::merge_states_gpu_matches_cpu")) else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (oshape, lshape) in [(vec![3usize, 17, 32, 128], vec![3usize, 32, 17]), (vec![50, 8, 64], vec![8, 50])] {
            let n: usize = lshape.iter().product();
            let mut la = rng.uniform_vec(n, -20.0, 20.0);
            let mut lb = rng.uniform_vec(n, -20.0, 20.0);
            for i in (0..n).step_by(5) {
                la[i] = f32::NEG_INFINITY;
            }
            for i in (0..n).step_by(3) {
                lb[i] = f32::NEG_INFINITY;
            }
            let (o_a, o_b) = (randn(&mut rng, dtype, &oshape), randn(&mut rng, dtype, &oshape));
            let (ta, tb) = (f32t(&lshape, &la), f32t(&lshape, &lb));
            let want = oracle::merge_f64(&o_a, &ta, &o_b, &tb).unwrap();
            let cpu = merge_states_cpu(&o_a, &ta, &o_b, &tb).unwrap();
            let mut o = gpu.alloc_poisoned(dtype, &oshape).unwrap();
            let mut lse = gpu.alloc_poisoned(DType::F32, &lshape).unwrap();
            merge_states_cuda_into(&gpu, &up(&gpu, &o_a), &up(&gpu, &ta), &up(&gpu, &o_b), &up(&gpu, &tb), &mut o, &mut lse).unwrap();
            let (go, gl) = (gpu.download(&o).unwrap(), gpu.download(&lse).unwrap());
            let tag = format!("{dtype} {oshape:?}");
            assert!(rel_error(&go.to_f64_vec(), &want.0) <= dtype.rel_tolerance(), "{tag}: o vs oracle (seed {seed})");
            assert!(rel_error(&gl.to_f64_vec(), &want.1) <= 1e-6, "{tag}: lse vs oracle (seed {seed})");
            assert!(rel_error(&go.to_f64_vec(), &cpu.0.to_f64_vec()) <= 1e-6, "{tag}: o vs CPU (seed {seed})");
            let (glv, clv) = (gl.to_f32_vec(), cpu.1.to_f32_vec());
            for i in 0..n {
                assert!(
                    glv[i] == clv[i] || (glv[i] - clv[i]).abs() <= 1e-5 * clv[i].abs().max(1.0),
                    "{tag}: lse[{i}] {} vs {}",
                    glv[i],
                    clv[i]
                );
            }
            let (o2, _) = merge_states_cuda(&gpu, &up(&gpu, &o_a), &up(&gpu, &ta), &up(&gpu, &o_b), &up(&gpu, &tb)).unwrap();
            assert_eq!(gpu.download(&o2).unwrap(), go);
        }
    }
}

#[test]
fn check_cases_pass_on_gpu() {
    let Some(gpu) = gpu(concat!(module_path!(), "::check_cases_pass_on_gpu")) else { return };
    let device = Device::Cuda(gpu);
    for c in attn_kernels_harness::check::all_cases().iter().filter(|c| c.op == "decode_attention" || c.op == "merge_states") {
        let row = attn_kernels_harness::check::run_one(c, &device);
        assert!(row.passed, "{} {}: rel {:.2e} > {:.1e} ({})", c.op, c.shape, row.rel_error, row.bound, row.note);
    }
}

#[test]
fn gpu_bad_inputs_are_typed_errors_before_launch() {
    let Some(gpu) = gpu(concat!(module_path!(), "::gpu_bad_inputs_are_typed_errors_before_launch")) else { return };
    let mut rng = Rng::from_time();
    let c = attn_cfg(true, -1, -1, 0.0, None);
    let o = DecodeOptions::default();
    // f32 decode: CPU only.
    let p = Problem::new(&mut rng, DType::F32, &[10], 1, 4, 2, 64, None, false);
    let dev = upload_problem(&gpu, &p);
    let e = decode_cuda(&gpu, &c, &dev.q, &p.cache(&dev.k, &dev.v), None, &o).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }) && arg_of(&e) == "q", "{e}");
    // Head dim 96.
    let p = Problem::new(&mut rng, DType::F16, &[10], 1, 4, 2, 96, None, false);
    let dev = upload_problem(&gpu, &p);
    let e = decode_cuda(&gpu, &c, &dev.q, &p.cache(&dev.k, &dev.v), None, &o).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }) && arg_of(&e) == "q", "{e}");
    // Paged block size 24.
    let p = Problem::new(&mut rng, DType::F16, &[100], 1, 4, 2, 64, Some(24), false);
    let dev = upload_problem(&gpu, &p);
    let e = decode_cuda(&gpu, &c, &dev.q, &p.cache(&dev.k, &dev.v), None, &o).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }) && arg_of(&e) == "k_cache", "{e}");
    // rotary_dim 24.
    let p = Problem::new(&mut rng, DType::F16, &[100], 1, 4, 2, 64, Some(16), false);
    let dev = upload_problem(&gpu, &p);
    let e =
        decode_cuda(&gpu, &attn_cfg(true, -1, -1, 0.0, Some(rope(24, false))), &dev.q, &p.cache(&dev.k, &dev.v), None, &o)
            .unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }) && arg_of(&e) == "rope", "{e}");
    // Block id out of range: validated on the host, nothing launched.
    let (t, m) = p.table.clone().unwrap();
    let mut bad = t.clone();
    bad[0] = 1 << 20;
    let cache = KvCacheRef::Paged { k: &dev.k, v: &dev.v, block_table: &bad, max_blocks: m, cache_seqlens: &p.seqlens };
    let e = decode_cuda(&gpu, &c, &dev.q, &cache, None, &o).unwrap_err();
    assert_eq!(arg_of(&e), "block_table");
    // An index uploaded for other lengths is refused.
    let index = DeviceKvIndex::new(&gpu, &p.cache(&dev.k, &dev.v)).unwrap();
    let other = [50i32];
    let cache = KvCacheRef::Paged { k: &dev.k, v: &dev.v, block_table: &t, max_blocks: m, cache_seqlens: &other };
    let mut oo = gpu.alloc(DType::F16, &[1, 1, 4, 64]).unwrap();
    let mut ll = gpu.alloc(DType::F32, &[1, 4, 1]).unwrap();
    let e = decode_cuda_with_index(&gpu, &c, &dev.q, &cache, &index, None, &o, &mut oo, &mut ll).unwrap_err();
    assert_eq!(arg_of(&e), "index");
    // Wrong output shape.
    let mut bad_o = gpu.alloc(DType::F16, &[1, 1, 4, 32]).unwrap();
    let e = decode_cuda_with_index(&gpu, &c, &dev.q, &p.cache(&dev.k, &dev.v), &index, None, &o, &mut bad_o, &mut ll)
        .unwrap_err();
    assert_eq!(arg_of(&e), "o");
    gpu.synchronize().unwrap();
}

#[test]
fn paged_equals_contiguous_bit_for_bit_on_gpu() {
    // Same keys, same order, same split boundaries: the layouts must give identical bits.
    let Some(gpu) = gpu(concat!(module_path!(), "::paged_equals_contiguous_bit_for_bit_on_gpu")) else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    for (bs, sq, hkv, rope_cfg) in
        [(16usize, 1usize, 8usize, None), (64, 4, 8, Some(rope(128, false))), (256, 2, 32, Some(rope(64, true)))]
    {
        let s_max = if gpu.info().emulated { 1000 } else { 3000 }; // emulated: still 4+ pages of 256 and several splits; CPU time
        let seqlens = [1 + rng.below(s_max), 1 + rng.below(700), s_max];
        let (b, hq, d) = (seqlens.len(), 32usize, 128usize);
        let p = Problem::new(&mut rng, DType::BF16, &seqlens, sq, hq, hkv, d, None, true);
        assert_eq!(p.k.shape()[1], s_max + 5);
        // Paged copy: blocks of each sequence in a shuffled pool.
        let per = (s_max + 5).div_ceil(bs);
        let nb = b * per;
        let mut ids: Vec<i32> = (0..nb as i32).collect();
        shuffle(&mut rng, &mut ids);
        let to_paged = |t: &Tensor| {
            let x = t.to_f32_vec();
            let row = hkv * d;
            let mut out = vec![0f32; nb * bs * row];
            for bi in 0..b {
                for j in 0..s_max + 5 {
                    let blk = ids[bi * per + j / bs] as usize;
                    out[(blk * bs + j % bs) * row..][..row].copy_from_slice(&x[(bi * (s_max + 5) + j) * row..][..row]);
                }
            }
            Tensor::from_f32(DType::BF16, &[nb, bs, hkv, d], &out).unwrap()
        };
        let paged = Problem {
            q: p.q.clone(),
            k: to_paged(&p.k),
            v: to_paged(&p.v),
            table: Some((ids.clone(), per)),
            seqlens: p.seqlens.clone(),
            alibi: p.alibi.clone(),
        };
        let c = attn_cfg(true, -1, -1, 0.0, rope_cfg);
        let opts = DecodeOptions::default();
        let a = run_decode(&gpu, &p, &upload_problem(&gpu, &p), &c, &opts);
        let pb = run_decode(&gpu, &paged, &upload_problem(&gpu, &paged), &c, &opts);
        assert_eq!(a.0.to_le_bytes(), pb.0.to_le_bytes(), "bs {bs}: paged o != contiguous o (seed {seed})");
        assert_eq!(a.1.to_le_bytes(), pb.1.to_le_bytes(), "bs {bs}: paged lse != contiguous lse (seed {seed})");
        let want = oracle::decode_f64(&c, &p.q, &p.host(), p.alibi.as_ref(), &opts).unwrap();
        check_decode(&format!("bs {bs}"), seed, DType::BF16, &a, &want);
    }
}

/// Planned once per step, launched per layer: a paged cache with ALiBi and RoPE on read, three
/// layers of fresh q and caches (same lengths and block table) on a fork of the planning handle,
/// with 3 splits (the workspace is reused), each against the float64 oracle; tensors that differ
/// from the plan are typed errors.
#[test]
fn decode_planned_once_launched_per_layer() {
    use attn_kernels::decode::cuda::DecodeLaunch;
    let Some(gpu) = gpu(concat!(module_path!(), "::decode_planned_once_launched_per_layer")) else { return };
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let cfg = attn_cfg(true, -1, -1, 0.0, Some(rope(128, false)));
    let opts = DecodeOptions { split: SplitPolicy::Fixed(3), cache_keys_rotated: false };
    let first = Problem::new(&mut rng, DType::BF16, &[300, 77, 190], 2, 8, 2, 128, Some(32), true);
    let dev = upload_problem(&gpu, &first);
    let mut launch = DecodeLaunch::new(&gpu, &cfg, &dev.q, &first.cache(&dev.k, &dev.v), dev.alibi.as_ref(), &opts).unwrap();
    assert_eq!(launch.splits(), 3);
    let layer_gpu = gpu.fork().unwrap();
    for layer in 0..3 {
        // Same lengths and block table, fresh values.
        let mut p = Problem::new(&mut rng, DType::BF16, &[300, 77, 190], 2, 8, 2, 128, Some(32), true);
        p.table = first.table.clone();
        let dev = upload_problem(&layer_gpu, &p);
        let mut o = layer_gpu.alloc_poisoned(DType::BF16, &[3, 2, 8, 128]).unwrap();
        let mut lse = layer_gpu.alloc_poisoned(DType::F32, &[3, 8, 2]).unwrap();
        launch.launch(&layer_gpu, &dev.q, [&dev.k, &dev.v], dev.alibi.as_ref(), &mut o, &mut lse).unwrap();
        let want = oracle::decode_f64(&cfg, &p.q, &p.host(), p.alibi.as_ref(), &opts).unwrap();
        let got = (layer_gpu.download(&o).unwrap(), layer_gpu.download(&lse).unwrap());
        check_decode(&format!("layer {layer}"), seed, DType::BF16, &got, &want);
    }
    // Tensors that are not the planned ones.
    let mut o = layer_gpu.alloc(DType::BF16, &[3, 2, 8, 128]).unwrap();
    let mut lse = layer_gpu.alloc(DType::F32, &[3, 8, 2]).unwrap();
    let short_q = layer_gpu.upload(&randn(&mut rng, DType::BF16, &[3, 1, 8, 128])).unwrap();
    let e = launch.launch(&layer_gpu, &short_q, [&dev.k, &dev.v], dev.alibi.as_ref(), &mut o, &mut lse).unwrap_err();
    assert_eq!(arg_of(&e), "q", "{e}");
    let e = launch.launch(&layer_gpu, &dev.q, [&dev.k, &dev.v], None, &mut o, &mut lse).unwrap_err();
    assert_eq!(arg_of(&e), "alibi_slopes", "{e}");
    let f16_k = layer_gpu.upload(&randn(&mut rng, DType::F16, first.k.shape())).unwrap();
    let e = launch.launch(&layer_gpu, &dev.q, [&f16_k, &dev.v], dev.alibi.as_ref(), &mut o, &mut lse).unwrap_err();
    assert_eq!(arg_of(&e), "k_cache", "{e}");
}
