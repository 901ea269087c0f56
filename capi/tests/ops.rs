//! Every op of the C ABI called through its `extern "C"` entry point (as a C program would:
//! device memory from `ak_alloc`, raw descriptors, the legacy default stream), compared with the
//! library's CPU reference within the dtype's bound of docs/ops.md. The device is chosen as in
//! `c_program.rs`; without one the tests say why and pass.

use attn_kernels::attention::AttentionConfig;
use attn_kernels::decode::{append_kv_cpu, decode_cpu, merge_states_cpu, DecodeOptions, KvCacheMut, KvCacheRef};
use attn_kernels::diff_attention::{diff_attention_cpu, diff_decode_cpu, DiffAttentionArgs, DiffAttentionConfig, DiffDecodeArgs};
use attn_kernels::linear::{delta_rule_cpu, linear_attention_cpu, DeltaRuleArgs, DeltaRuleConfig, LinearArgs, LinearAttentionConfig};
use attn_kernels::rope::cpu::rope_cpu;
use attn_kernels::rope::{RopeArgs, RopeConfig, RopeOpConfig};
use attn_kernels::runtime::{driver_present, emu, kernels_compiled};
use attn_kernels::tensor::rel_error;
use attn_kernels::{DType, Tensor, TensorInfo};
use attn_kernels_capi::device::*;
use attn_kernels_capi::ops::*;
use attn_kernels_capi::{ak_last_error_message, AkDevice, AkI32Array, AkStatus, AkTensor, AK_MAX_RANK};
use std::ffi::{CStr, CString};
use std::ptr::{null, null_mut};

const NONE: AkI32Array = AkI32Array { data: null(), len: 0 };

fn arr(v: &[i32]) -> AkI32Array {
    AkI32Array { data: v.as_ptr(), len: v.len() as u64 }
}

fn check(s: AkStatus, what: &str) {
    // SAFETY: ak_last_error_message returns a NUL-terminated string valid until the next call.
    let msg = unsafe { CStr::from_ptr(ak_last_error_message()) }.to_string_lossy().into_owned();
    assert_eq!(s, AkStatus::AK_OK, "{what}: {msg}");
}

/// Append a line to `$ATTN_KERNELS_TEST_LOG` (CI counts the GPU tests that ran and skipped).
fn log(line: &str) {
    use std::io::Write;
    if let Ok(path) = std::env::var("ATTN_KERNELS_TEST_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

/// An open device handle (closed on drop), or None after printing why the test is skipped.
struct Dev(*mut AkDevice);

impl Dev {
    fn open(test: &str) -> Option<Dev> {
        // Decided once per process: the tests run on parallel threads, and once one has loaded
        // the emulated driver, `driver_present()` sees it.
        static CHOICE: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
        let choice = *CHOICE.get_or_init(|| match std::env::var("ATTN_KERNELS_DEVICE").as_deref() {
            Ok("emu") => Some(true),
            Ok("cuda") => Some(false),
            _ if emu::is_active() => Some(true),
            _ if driver_present() && kernels_compiled() => Some(false),
            _ if emu::is_built() => Some(true),
            _ => None,
        });
        let Some(emulated) = choice else {
            let why = "no CUDA driver with compiled kernels, and no emulated device in this build";
            eprintln!("skipped GPU test {test}: {why}");
            log(&format!("skipped {test}: {why}"));
            return None;
        };
        if emulated {
            // With the emulated driver loaded, ak_device_open(0) reaches it whether or not
            // ATTN_KERNELS_DEVICE=emu is set in this process.
            emu::load().expect("load the emulated device");
        }
        let mut dev = null_mut();
        // SAFETY: `dev` is writable.
        check(unsafe { ak_device_open(0, &mut dev) }, "ak_device_open");
        let mut is_emu = -1;
        // SAFETY: a live handle; `is_emu` is writable.
        check(unsafe { ak_device_is_emulated(dev, &mut is_emu) }, "ak_device_is_emulated");
        assert_eq!(is_emu, emulated as i32, "the handle is not the device asked for");
        log(&format!("ran {test} {}", if emulated { "cuda-emu" } else { "cuda" }));
        Some(Dev(dev))
    }

    /// A packed descriptor of a new device buffer holding `t`.
    fn upload(&self, t: &Tensor) -> AkTensor {
        let desc = self.alloc(t.dtype(), t.shape());
        let bytes = t.to_le_bytes();
        // SAFETY: a live handle; `bytes` is readable for its length; NULL stream.
        check(unsafe { ak_memcpy_htod(self.0, null_mut(), desc.ptr, bytes.as_ptr().cast(), bytes.len() as u64) }, "upload");
        desc
    }

    /// A packed descriptor of a new device buffer, filled with 0xFF bytes (NaN) so unwritten
    /// elements show.
    fn alloc(&self, dtype: DType, shape: &[usize]) -> AkTensor {
        let bytes = (shape.iter().product::<usize>() * dtype.size()) as u64;
        let mut ptr = 0;
        // SAFETY: a live handle; `ptr` is writable.
        check(unsafe { ak_alloc(self.0, bytes, &mut ptr) }, "ak_alloc");
        let poison = vec![0xFFu8; bytes as usize];
        // SAFETY: as in `upload`.
        check(unsafe { ak_memcpy_htod(self.0, null_mut(), ptr, poison.as_ptr().cast(), bytes) }, "poison");
        descriptor(ptr, bytes, dtype, shape)
    }

    fn download(&self, t: &AkTensor, dtype: DType) -> Tensor {
        let shape: Vec<usize> = t.shape[..t.rank as usize].iter().map(|&d| d as usize).collect();
        let mut bytes = vec![0u8; t.len_bytes as usize];
        // SAFETY: a live handle; `bytes` is writable for its length.
        check(unsafe { ak_memcpy_dtoh(self.0, null_mut(), bytes.as_mut_ptr().cast(), t.ptr, t.len_bytes) }, "download");
        Tensor::from_le_bytes("download", dtype, &shape, &bytes).unwrap()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SAFETY: a handle of ak_device_open, closed once.
        unsafe { ak_device_close(self.0) };
    }
}

fn descriptor(ptr: u64, len_bytes: u64, dtype: DType, shape: &[usize]) -> AkTensor {
    let mut t = AkTensor { ptr, len_bytes, dtype: code(dtype), rank: shape.len() as i32, shape: [0; AK_MAX_RANK], strides: [0; AK_MAX_RANK] };
    let mut stride = 1i64;
    for i in (0..shape.len()).rev() {
        t.shape[i] = shape[i] as i64;
        t.strides[i] = stride;
        stride *= shape[i] as i64;
    }
    t
}

fn code(d: DType) -> i32 {
    match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
        DType::I32 => 3,
    }
}

/// Deterministic uniform values in `[lo, hi)` (a small LCG; the seed varies per tensor).
fn random(dtype: DType, shape: &[usize], seed: u64, lo: f32, hi: f32) -> Tensor {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect();
    Tensor::from_f32(dtype, shape, &values).unwrap()
}

/// `got` within the bound of `dtype` of `want` (finite where `want` is; infinities equal).
fn assert_close(what: &str, got: &Tensor, want: &Tensor, dtype: DType) {
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    assert_eq!(g.len(), w.len(), "{what}: length");
    let (mut gf, mut wf) = (Vec::new(), Vec::new());
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        if b.is_infinite() {
            assert_eq!(a, b, "{what}[{i}]");
        } else {
            assert!(a.is_finite(), "{what}[{i}] = {a}, reference {b}");
            gf.push(a);
            wf.push(b);
        }
    }
    let rel = rel_error(&gf, &wf);
    assert!(rel < dtype.rel_tolerance(), "{what}: rel error {rel:.3e} above {:.1e}", dtype.rel_tolerance());
    let norm = wf.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(norm > 0.0, "{what}: the reference is all zeros");
    println!("{what}: rel error {rel:.2e} (reference norm {norm:.3})");
}

fn json(s: &str) -> CString {
    CString::new(s).unwrap()
}

#[test]
fn rope_out_of_place_and_in_place() {
    let Some(dev) = Dev::open("ops::rope_out_of_place_and_in_place") else { return };
    let cfg_text = r#"{"rope": {"rotary_dim": 64, "theta": 10000.0}, "position_offset": 3}"#;
    let x = random(DType::F16, &[2, 37, 3, 64], 1, -1.0, 1.0);
    let cfg = RopeOpConfig { rope: RopeConfig::new(64, 10000.0), position_offset: 3 };
    let want = rope_cpu(&cfg, &RopeArgs { x: &x, position_ids: None, cu_seqlens: None }).unwrap();
    let (dx, dy) = (dev.upload(&x), dev.alloc(DType::F16, x.shape()));
    let c = json(cfg_text);
    // SAFETY: live handle, valid descriptors of live buffers, NUL-terminated JSON, NULL stream.
    check(unsafe { ak_rope(dev.0, null_mut(), c.as_ptr(), &dx, NONE, NONE, &dy) }, "ak_rope");
    assert_close("rope y", &dev.download(&dy, DType::F16), &want, DType::F16);
    // SAFETY: as above; y NULL rotates x in place.
    check(unsafe { ak_rope(dev.0, null_mut(), c.as_ptr(), &dx, NONE, NONE, null()) }, "ak_rope in place");
    assert_close("rope in place", &dev.download(&dx, DType::F16), &want, DType::F16);
}

#[test]
fn append_kv_then_paged_decode() {
    let Some(dev) = Dev::open("ops::append_kv_then_paged_decode") else { return };
    let (blocks, bs, hkv, hq, d) = (6usize, 16usize, 2usize, 4usize, 64usize);
    let table = [4, 0, 2, 1, 5, 3];
    let before = [20, 33];
    let mut kc = random(DType::F16, &[blocks, bs, hkv, d], 2, -1.0, 1.0);
    let mut vc = random(DType::F16, &[blocks, bs, hkv, d], 3, -1.0, 1.0);
    let k_new = random(DType::F16, &[2, 1, hkv, d], 4, -1.0, 1.0);
    let v_new = random(DType::F16, &[2, 1, hkv, d], 5, -1.0, 1.0);
    let q = random(DType::F16, &[2, 1, hq, d], 6, -1.0, 1.0);
    let (dk, dv) = (dev.upload(&kc), dev.upload(&vc));
    let (dkn, dvn, dq) = (dev.upload(&k_new), dev.upload(&v_new), dev.upload(&q));

    // Append on the device and on the host.
    let mut after = [0i32; 2];
    // SAFETY: live handle, valid descriptors and arrays, room for 2 lengths, NULL stream.
    check(
        unsafe { ak_append_kv(dev.0, null_mut(), null(), &dk, &dv, arr(&before), arr(&table), 3, &dkn, &dvn, after.as_mut_ptr()) },
        "ak_append_kv",
    );
    let mut host_cache = KvCacheMut::Paged { k: &mut kc, v: &mut vc, block_table: &table, max_blocks: 3, cache_seqlens: &before };
    let want_lens = append_kv_cpu(&mut host_cache, &k_new, &v_new, None).unwrap();
    assert_eq!(after.to_vec(), want_lens);
    assert_close("append k_cache", &dev.download(&dk, DType::F16), &kc, DType::F16);
    assert_close("append v_cache", &dev.download(&dv, DType::F16), &vc, DType::F16);

    // Decode over the appended cache, with and without lse, split in 2.
    let cfg = AttentionConfig { causal: true, ..AttentionConfig::default() };
    let cache = KvCacheRef::Paged { k: &kc, v: &vc, block_table: &table, max_blocks: 3, cache_seqlens: &after };
    let want = decode_cpu(&cfg, &q, &cache, None, &DecodeOptions::default()).unwrap();
    let (o, lse) = (dev.alloc(DType::F16, &[2, 1, hq, d]), dev.alloc(DType::F32, &[2, hq, 1]));
    let c = json(r#"{"causal": true, "num_splits": 2}"#);
    // SAFETY: as above.
    check(
        unsafe { ak_decode_attention(dev.0, null_mut(), c.as_ptr(), &dq, &dk, &dv, null(), arr(&after), arr(&table), 3, &o, &lse) },
        "ak_decode_attention",
    );
    assert_close("decode o", &dev.download(&o, DType::F16), &want.o, DType::F16);
    assert_close("decode lse", &dev.download(&lse, DType::F32), &want.lse, DType::F16);
    let o2 = dev.alloc(DType::F16, &[2, 1, hq, d]);
    // SAFETY: as above; lse NULL.
    check(
        unsafe { ak_decode_attention(dev.0, null_mut(), c.as_ptr(), &dq, &dk, &dv, null(), arr(&after), arr(&table), 3, &o2, null()) },
        "ak_decode_attention without lse",
    );
    assert_close("decode o (no lse)", &dev.download(&o2, DType::F16), &want.o, DType::F16);
}

#[test]
fn merge_states_matches_cpu() {
    let Some(dev) = Dev::open("ops::merge_states_matches_cpu") else { return };
    let shape_o = [2, 5, 3, 64];
    let shape_l = [2, 3, 5];
    let (oa, ob) = (random(DType::F16, &shape_o, 7, -1.0, 1.0), random(DType::F16, &shape_o, 8, -1.0, 1.0));
    let (la, lb) = (random(DType::F32, &shape_l, 9, -3.0, 3.0), random(DType::F32, &shape_l, 10, -3.0, 3.0));
    let (want_o, want_l) = merge_states_cpu(&oa, &la, &ob, &lb).unwrap();
    let d = [dev.upload(&oa), dev.upload(&la), dev.upload(&ob), dev.upload(&lb)];
    let (o, l) = (dev.alloc(DType::F16, &shape_o), dev.alloc(DType::F32, &shape_l));
    // SAFETY: live handle, valid descriptors, NULL stream.
    check(unsafe { ak_merge_states(dev.0, null_mut(), &d[0], &d[1], &d[2], &d[3], &o, &l) }, "ak_merge_states");
    assert_close("merge o", &dev.download(&o, DType::F16), &want_o, DType::F16);
    assert_close("merge lse", &dev.download(&l, DType::F32), &want_l, DType::F16);
}

#[test]
fn diff_attention_v1_matches_cpu() {
    let Some(dev) = Dev::open("ops::diff_attention_v1_matches_cpu") else { return };
    let (b, s, h, hkv, d) = (1usize, 40usize, 2usize, 1usize, 64usize);
    let q = random(DType::F16, &[b, s, 2 * h, d], 11, -1.0, 1.0);
    let k = random(DType::F16, &[b, s, 2 * hkv, d], 12, -1.0, 1.0);
    let v = random(DType::F16, &[b, s, hkv, 2 * d], 13, -1.0, 1.0);
    let lambda = random(DType::F32, &[h], 14, 0.1, 0.6);
    let cfg = DiffAttentionConfig { causal: true, ..serde_json::from_str("{}").unwrap() };
    let want = diff_attention_cpu(&cfg, &DiffAttentionArgs::new(&q, &k, &v, &lambda)).unwrap();
    let (dq, dk, dv, dl) = (dev.upload(&q), dev.upload(&k), dev.upload(&v), dev.upload(&lambda));
    let o = dev.alloc(DType::F16, &[b, s, h, 2 * d]);
    let (l1, l2) = (dev.alloc(DType::F32, &[b, h, s]), dev.alloc(DType::F32, &[b, h, s]));
    let c = json(r#"{"causal": true, "variant": "v1"}"#);
    // SAFETY: live handle, valid descriptors, NUL-terminated JSON, NULL stream.
    check(
        unsafe { ak_diff_attention(dev.0, null_mut(), c.as_ptr(), &dq, &dk, &dv, &dl, null(), null(), NONE, NONE, NONE, NONE, &o, &l1, &l2) },
        "ak_diff_attention",
    );
    assert_close("diff o", &dev.download(&o, DType::F16), &want.o, DType::F16);
    assert_close("diff lse1", &dev.download(&l1, DType::F32), &want.lse1, DType::F16);
    assert_close("diff lse2", &dev.download(&l2, DType::F32), &want.lse2, DType::F16);
}

#[test]
fn diff_decode_paged_matches_cpu() {
    let Some(dev) = Dev::open("ops::diff_decode_paged_matches_cpu") else { return };
    let (b, h, hkv, d, blocks, bs) = (2usize, 2usize, 1usize, 64usize, 4usize, 16usize);
    let table = [3, 1, 0, 2];
    let lens = [17, 30];
    let q = random(DType::F16, &[b, 1, 2 * h, d], 22, -1.0, 1.0);
    let kc = random(DType::F16, &[blocks, bs, hkv, 2 * d], 23, -1.0, 1.0);
    let vc = random(DType::F16, &[blocks, bs, hkv, 2 * d], 24, -1.0, 1.0);
    let lambda = random(DType::F32, &[h], 25, 0.1, 0.6);
    let cfg: DiffAttentionConfig = serde_json::from_str("{}").unwrap();
    let cache = KvCacheRef::Paged { k: &kc, v: &vc, block_table: &table, max_blocks: 2, cache_seqlens: &lens };
    let want = diff_decode_cpu(&cfg, &DiffDecodeArgs { q: &q, cache, lambda: &lambda, norm_weight: None, alibi_slopes: None }).unwrap();
    let (dq, dk, dv, dl) = (dev.upload(&q), dev.upload(&kc), dev.upload(&vc), dev.upload(&lambda));
    let o = dev.alloc(DType::F16, &[b, 1, h, 2 * d]);
    let l1 = dev.alloc(DType::F32, &[b, h, 1]);
    let c = json(r#"{"num_splits": 2}"#);
    // SAFETY: live handle, valid descriptors and arrays, NUL-terminated JSON, NULL stream; lse2
    // NULL (scratch).
    check(
        unsafe {
            ak_diff_decode(dev.0, null_mut(), c.as_ptr(), &dq, &dk, &dv, &dl, null(), null(), arr(&lens), arr(&table), 2, &o, &l1, null())
        },
        "ak_diff_decode",
    );
    assert_close("diff decode o", &dev.download(&o, DType::F16), &want.o, DType::F16);
    assert_close("diff decode lse1", &dev.download(&l1, DType::F32), &want.lse1, DType::F16);
}

#[test]
fn linear_attention_and_delta_rule_match_cpu() {
    let Some(dev) = Dev::open("ops::linear_attention_and_delta_rule_match_cpu") else { return };
    let (b, t, h, k_dim, v_dim) = (1usize, 24usize, 2usize, 64usize, 64usize);
    let q = random(DType::F16, &[b, t, h, k_dim], 15, -0.5, 0.5);
    let k = random(DType::F16, &[b, t, h, k_dim], 16, -0.5, 0.5);
    let v = random(DType::F16, &[b, t, h, v_dim], 17, -0.5, 0.5);
    let g = random(DType::F32, &[b, t, h], 18, -0.3, -0.01);
    let (dq, dk, dv, dg) = (dev.upload(&q), dev.upload(&k), dev.upload(&v), dev.upload(&g));

    let want = linear_attention_cpu(&LinearAttentionConfig::default(), &LinearArgs::new(&q, &k, &v).with_g(&g)).unwrap();
    let (o, fs) = (dev.alloc(DType::F16, &[b, t, h, v_dim]), dev.alloc(DType::F32, &[b, h, k_dim, v_dim]));
    let c = json(r#"{"mode": "recurrent"}"#);
    // SAFETY: live handle, valid descriptors, NUL-terminated JSON, NULL stream.
    check(unsafe { ak_linear_attention(dev.0, null_mut(), c.as_ptr(), &dq, &dk, &dv, &dg, null(), null(), NONE, &o, &fs) }, "ak_linear_attention");
    assert_close("linear o", &dev.download(&o, DType::F16), &want.o, DType::F16);
    assert_close("linear final_state", &dev.download(&fs, DType::F32), &want.final_state, DType::F16);

    // delta rule: a = -normalised k direction, b = a scaled (a DeltaNet-like stable update).
    let a = random(DType::F16, &[b, t, h, k_dim], 19, -0.1, 0.1);
    let bb = random(DType::F16, &[b, t, h, k_dim], 20, -0.1, 0.1);
    let (da, db) = (dev.upload(&a), dev.upload(&bb));
    let want = delta_rule_cpu(&DeltaRuleConfig::default(), &DeltaRuleArgs::new(&q, &k, &v, &a, &bb).with_g(&g)).unwrap();
    let o = dev.alloc(DType::F16, &[b, t, h, v_dim]);
    // SAFETY: as above; final_state NULL.
    check(unsafe { ak_delta_rule(dev.0, null_mut(), null(), &dq, &dk, &dv, &da, &db, &dg, null(), NONE, &o, null()) }, "ak_delta_rule");
    assert_close("delta_rule o", &dev.download(&o, DType::F16), &want.o, DType::F16);
}

#[test]
fn errors_name_the_argument_and_never_unwind() {
    let Some(dev) = Dev::open("ops::errors_name_the_argument_and_never_unwind") else { return };
    let msg = || {
        // SAFETY: as in `check`.
        unsafe { CStr::from_ptr(ak_last_error_message()) }.to_string_lossy().into_owned()
    };
    let x = dev.upload(&random(DType::F16, &[1, 4, 1, 64], 21, -1.0, 1.0));
    // Bad JSON, a missing required key, a wrong type: AK_ERR_CONFIG naming config_json.
    for text in ["{", r#"{"position_offset": 1}"#, "[1]"] {
        let c = json(text);
        // SAFETY: live handle, valid descriptor, NUL-terminated JSON.
        let s = unsafe { ak_rope(dev.0, null_mut(), c.as_ptr(), &x, NONE, NONE, null()) };
        assert_eq!(s, AkStatus::AK_ERR_CONFIG, "{text}: {}", msg());
        assert!(msg().contains("config_json"), "{}", msg());
    }
    // An index array with a length but no data.
    let c = json(r#"{"rope": {"rotary_dim": 64}}"#);
    let bad = AkI32Array { data: null(), len: 4 };
    // SAFETY: as above (the array is refused before use).
    let s = unsafe { ak_rope(dev.0, null_mut(), c.as_ptr(), &x, bad, NONE, null()) };
    assert_eq!(s, AkStatus::AK_ERR_NULL_POINTER, "{}", msg());
    assert!(msg().contains("`position_ids.data`"), "{}", msg());
    // Rank beyond the descriptor's slots, negative extents.
    let mut t = x;
    t.rank = 7;
    // SAFETY: as above.
    let s = unsafe { ak_rope(dev.0, null_mut(), c.as_ptr(), &t, NONE, NONE, null()) };
    assert!(s == AkStatus::AK_ERR_INVALID_ARGUMENT && msg().contains("`x.rank`"), "{s:?} {}", msg());
    let mut t = x;
    t.shape[1] = -4;
    // SAFETY: as above.
    let s = unsafe { ak_rope(dev.0, null_mut(), c.as_ptr(), &t, NONE, NONE, null()) };
    assert!(s == AkStatus::AK_ERR_INVALID_ARGUMENT && msg().contains("`x.shape`"), "{s:?} {}", msg());
    // Copies outside ak_alloc's buffers are refused.
    let mut host = [0u8; 16];
    // SAFETY: live handle; `host` is writable.
    let s = unsafe { ak_memcpy_dtoh(dev.0, null_mut(), host.as_mut_ptr().cast(), x.ptr + x.len_bytes - 8, 16) };
    assert!(s == AkStatus::AK_ERR_INVALID_ARGUMENT && msg().contains("`src`"), "{s:?} {}", msg());
    // A success clears the message.
    // SAFETY: as above.
    check(unsafe { ak_rope(dev.0, null_mut(), c.as_ptr(), &x, NONE, NONE, null()) }, "ak_rope");
    assert_eq!(msg(), "");
}
