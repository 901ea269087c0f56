//! The attention prefill kernel (kernels/attention/prefill.cu) against the float64 oracle of
//! spec section 1 (and the CPU path).
//!
//! Shapes are chosen off the kernel's tiles (128 query rows, 32 or 64 keys).

use super::common::{expect_err, expect_hopper_path, gpu, randn, ErrKind};
use attn_kernels::attention::cuda::{attention_cuda, attention_cuda_into};
use attn_kernels::attention::oracle::attention_f64;
use attn_kernels::attention::{alibi_slopes, attention_cpu, plan, AttentionArgs, AttentionConfig};
use attn_kernels::rope::RopeConfig;
use attn_kernels::tensor::rel_error;
use attn_kernels::{DType, DeviceTensor, Gpu, Tensor, TensorInfo};
use attn_kernels_harness::check::Rng;
use serde_json::json;

/// One test case: shapes, options and index data.
#[derive(Clone, Debug)]
struct AttnSpec {
    dtype: DType,
    b: usize,
    sq: usize,
    sk: usize,
    hq: usize,
    hk: usize,
    d: usize,
    dv: usize,
    cfg: AttentionConfig,
    alibi: bool,
    /// (cu_seqlens_q, cu_seqlens_k); then `b` is ignored and sq/sk are the totals.
    varlen: Option<(Vec<i32>, Vec<i32>)>,
    pos_q: Option<Vec<i32>>,
    pos_k: Option<Vec<i32>>,
}

impl AttnSpec {
    fn new(dtype: DType, b: usize, sq: usize, sk: usize, hq: usize, hk: usize, d: usize, dv: usize) -> AttnSpec {
        AttnSpec {
            dtype,
            b,
            sq,
            sk,
            hq,
            hk,
            d,
            dv,
            cfg: AttentionConfig::default(),
            alibi: false,
            varlen: None,
            pos_q: None,
            pos_k: None,
        }
    }
    fn causal(mut self, c: bool) -> AttnSpec {
        self.cfg.causal = c;
        self
    }
    fn window(mut self, l: i64, r: i64) -> AttnSpec {
        self.cfg.window_left = l;
        self.cfg.window_right = r;
        self
    }
    fn alibi(mut self) -> AttnSpec {
        self.alibi = true;
        self
    }
    fn softcap(mut self, s: f64) -> AttnSpec {
        self.cfg.softcap = s;
        self
    }
    fn rope(mut self, r: serde_json::Value) -> AttnSpec {
        self.cfg.rope = Some(serde_json::from_value::<RopeConfig>(r).expect("rope config"));
        self
    }
    fn varlen(mut self, cu_q: &[i32], cu_k: &[i32]) -> AttnSpec {
        self.sq = *cu_q.last().unwrap() as usize;
        self.sk = *cu_k.last().unwrap() as usize;
        self.varlen = Some((cu_q.to_vec(), cu_k.to_vec()));
        self
    }
    fn shapes(&self) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
        match self.varlen {
            Some(_) => {
                (vec![self.sq, self.hq, self.d], vec![self.sk, self.hk, self.d], vec![self.sk, self.hk, self.dv])
            }
            None => (
                vec![self.b, self.sq, self.hq, self.d],
                vec![self.b, self.sk, self.hk, self.d],
                vec![self.b, self.sk, self.hk, self.dv],
            ),
        }
    }
}

/// Host inputs of a spec.
struct AttnInputs {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    slopes: Option<Tensor>,
}

fn make_inputs(s: &AttnSpec, rng: &mut Rng) -> AttnInputs {
    let (qs, ks, vs) = s.shapes();
    let q = randn(rng, s.dtype, &qs);
    let k = randn(rng, s.dtype, &ks);
    let v = randn(rng, s.dtype, &vs);
    let slopes = s.alibi.then(|| Tensor::from_f32(DType::F32, &[s.hq], &alibi_slopes(s.hq)).unwrap());
    AttnInputs { q, k, v, slopes }
}

fn host_args<'a>(s: &'a AttnSpec, x: &'a AttnInputs) -> AttentionArgs<'a, Tensor> {
    AttentionArgs {
        q: &x.q,
        k: &x.k,
        v: &x.v,
        alibi_slopes: x.slopes.as_ref(),
        cu_seqlens_q: s.varlen.as_ref().map(|v| v.0.as_slice()),
        cu_seqlens_k: s.varlen.as_ref().map(|v| v.1.as_slice()),
        position_ids_q: s.pos_q.as_deref(),
        position_ids_k: s.pos_k.as_deref(),
    }
}

struct DeviceAttnInputs {
    q: DeviceTensor,
    k: DeviceTensor,
    v: DeviceTensor,
    slopes: Option<DeviceTensor>,
}

fn upload_inputs(gpu: &Gpu, x: &AttnInputs) -> DeviceAttnInputs {
    DeviceAttnInputs {
        q: gpu.upload(&x.q).unwrap(),
        k: gpu.upload(&x.k).unwrap(),
        v: gpu.upload(&x.v).unwrap(),
        slopes: x.slopes.as_ref().map(|t| gpu.upload(t).unwrap()),
    }
}

fn device_args<'a>(s: &'a AttnSpec, x: &'a DeviceAttnInputs) -> AttentionArgs<'a, DeviceTensor> {
    AttentionArgs {
        q: &x.q,
        k: &x.k,
        v: &x.v,
        alibi_slopes: x.slopes.as_ref(),
        cu_seqlens_q: s.varlen.as_ref().map(|v| v.0.as_slice()),
        cu_seqlens_k: s.varlen.as_ref().map(|v| v.1.as_slice()),
        position_ids_q: s.pos_q.as_deref(),
        position_ids_k: s.pos_k.as_deref(),
    }
}

/// Run the kernel into poisoned outputs and return (o, lse) on the host.
fn run_attention(gpu: &Gpu, s: &AttnSpec, x: &DeviceAttnInputs) -> (Tensor, Tensor) {
    let args = device_args(s, x);
    let p = plan(&s.cfg, &args).unwrap();
    let mut o = gpu.alloc_poisoned(s.dtype, &p.o_shape()).unwrap();
    let mut lse = gpu.alloc_poisoned(DType::F32, &p.lse_shape()).unwrap();
    attention_cuda_into(gpu, &s.cfg, &args, &mut o, Some(&mut lse)).unwrap();
    (gpu.download(&o).unwrap(), gpu.download(&lse).unwrap())
}

/// Compare one spec on the GPU with the f64 oracle (spec tolerance) and the CPU path.
fn check_attention(gpu: &Gpu, s: &AttnSpec, with_cpu: bool) {
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let x = make_inputs(s, &mut rng);
    let hargs = host_args(s, &x);
    let (ref_o, ref_lse) = attention_f64(&s.cfg, &hargs).unwrap();
    let dx = upload_inputs(gpu, &x);
    let (o, lse) = run_attention(gpu, s, &dx);
    let (o, lse) = (o.to_f64_vec(), lse.to_f64_vec());
    let tol = s.dtype.rel_tolerance();
    let ctx = format!("seed={seed} spec={s:?}");
    let eo = rel_error(&o, &ref_o);
    let el = rel_error(&lse, &ref_lse);
    assert!(eo <= tol, "o: rel error {eo:.3e} > {tol:.1e}; {ctx}");
    assert!(el <= tol, "lse: rel error {el:.3e} > {tol:.1e}; {ctx}");
    // Fully masked rows: lse = -inf exactly and o = 0 exactly.
    let p = plan(&s.cfg, &hargs).unwrap();
    let dv = s.dv;
    for (n, seq) in p.seqs.iter().enumerate() {
        for i in 0..seq.q_len {
            for h in 0..s.hq {
                let li = p.lse_index(n, h, i);
                if ref_lse[li] == f64::NEG_INFINITY {
                    assert_eq!(lse[li], f64::NEG_INFINITY, "masked row lse (n {n} h {h} i {i}); {ctx}");
                    let row = (seq.q_start + i) * s.hq + h;
                    assert!(
                        o[row * dv..(row + 1) * dv].iter().all(|&x| x == 0.0),
                        "masked row o != 0 (n {n} h {h} i {i}); {ctx}"
                    );
                }
            }
        }
    }
    if with_cpu {
        let cpu = attention_cpu(&s.cfg, &hargs).unwrap();
        let ec = rel_error(&o, &cpu.o.to_f64_vec());
        assert!(ec <= 2.0 * tol, "o vs CPU path: rel error {ec:.3e}; {ctx}");
    }
}

const DTYPES: [DType; 2] = [DType::F16, DType::BF16];
const HEAD_DIMS: [(usize, usize); 5] = [(64, 64), (128, 128), (256, 256), (64, 128), (128, 256)];

#[test]
fn shapes_and_head_dims() {
    let Some(gpu) = gpu(concat!(module_path!(), "::shapes_and_head_dims")) else { return };
    for dtype in DTYPES {
        for (d, dv) in HEAD_DIMS {
            for causal in [false, true] {
                // Lengths off the tiles, Sq != Sk both ways, Sk = 1, Sq = 1, GQA 6/2 and MQA 3/1.
                for (b, sq, sk, hq, hk) in
                    [(2, 37, 101, 6, 2), (1, 200, 77, 3, 1), (2, 129, 129, 4, 4), (1, 5, 1, 2, 1), (3, 1, 300, 2, 2)]
                {
                    check_attention(&gpu, &AttnSpec::new(dtype, b, sq, sk, hq, hk, d, dv).causal(causal), sq * sk < 20000);
                }
            }
        }
    }
}

#[test]
fn alibi_non_power_of_two_heads() {
    let Some(gpu) = gpu(concat!(module_path!(), "::alibi_non_power_of_two_heads")) else { return };
    for dtype in DTYPES {
        for (d, dv) in [(64, 64), (128, 128), (64, 128)] {
            for causal in [false, true] {
                check_attention(&gpu, &AttnSpec::new(dtype, 2, 150, 211, 12, 4, d, dv).causal(causal).alibi(), true);
                check_attention(&gpu, &AttnSpec::new(dtype, 1, 97, 45, 12, 12, d, dv).causal(causal).alibi(), true);
            }
        }
        // With a window and a softcap on top.
        check_attention(&gpu, &AttnSpec::new(dtype, 1, 160, 160, 12, 3, 128, 128).alibi().window(40, 7).softcap(20.0), true);
    }
}

#[test]
fn windows_edges_and_fully_masked_rows() {
    let Some(gpu) = gpu(concat!(module_path!(), "::windows_edges_and_fully_masked_rows")) else { return };
    for dtype in DTYPES {
        for (l, r) in [(0, 0), (1, -1), (-1, 1), (31, 32), (32, 31), (63, 64), (64, 63), (65, 0), (0, 65), (500, 3)] {
            for causal in [false, true] {
                check_attention(&gpu, &AttnSpec::new(dtype, 2, 190, 190, 4, 2, 128, 128).causal(causal).window(l, r), false);
                check_attention(&gpu, &AttnSpec::new(dtype, 1, 70, 260, 2, 1, 64, 64).causal(causal).window(l, r), false);
            }
        }
        // Sq > Sk causal: the first Sq - Sk rows see no key (o = 0, lse = -inf).
        check_attention(&gpu, &AttnSpec::new(dtype, 2, 300, 90, 4, 2, 128, 128).causal(true), true);
        check_attention(&gpu, &AttnSpec::new(dtype, 1, 260, 3, 2, 2, 64, 128).causal(true), true);
        // Window pairs that exclude whole rows near the top (P(i) < 0, right window 0).
        check_attention(&gpu, &AttnSpec::new(dtype, 1, 200, 50, 2, 1, 256, 256).window(10, 0), true);
        // Sk = 0: every row fully masked.
        check_attention(&gpu, &AttnSpec::new(dtype, 2, 33, 0, 2, 1, 128, 128), true);
    }
}

#[test]
fn softcap() {
    let Some(gpu) = gpu(concat!(module_path!(), "::softcap")) else { return };
    for dtype in DTYPES {
        for (d, dv) in HEAD_DIMS {
            check_attention(&gpu, &AttnSpec::new(dtype, 1, 140, 180, 4, 2, d, dv).softcap(5.0).causal(true), true);
            check_attention(&gpu, &AttnSpec::new(dtype, 1, 140, 180, 4, 2, d, dv).softcap(50.0), true);
        }
    }
}

/// Every specialised instance (tile x dtype x ALiBi x softcap) on a case with clean key tiles and
/// masked ones (a ragged last tile; under ALiBi without causal, the tiles right of the diagonal
/// take the masked path), causal and non-causal in turn; and a negative softmax scale, which the
/// kernel folds into Q.
#[test]
fn every_instance_and_negative_scale() {
    let Some(gpu) = gpu(concat!(module_path!(), "::every_instance_and_negative_scale")) else { return };
    let mut n = 0;
    for dtype in DTYPES {
        for (d, dv) in HEAD_DIMS {
            for (alibi, softcap) in [(false, false), (true, false), (false, true), (true, true)] {
                let mut s = AttnSpec::new(dtype, 1, 140, 203, 2, 1, d, dv).causal(n % 2 == 1);
                if alibi {
                    s = s.alibi();
                }
                if softcap {
                    s = s.softcap(8.0);
                }
                if n % 3 == 0 {
                    s.cfg.softmax_scale = Some(-0.6 / (d as f64).sqrt());
                }
                check_attention(&gpu, &s, false);
                n += 1;
            }
        }
    }
}

#[test]
fn varlen_with_empty_sequences() {
    let Some(gpu) = gpu(concat!(module_path!(), "::varlen_with_empty_sequences")) else { return };
    let cu_q = [0, 5, 5, 70, 200, 201, 330];
    let cu_k = [0, 0, 33, 100, 260, 261, 261];
    for dtype in DTYPES {
        for (d, dv) in HEAD_DIMS {
            for causal in [false, true] {
                check_attention(&gpu, &AttnSpec::new(dtype, 0, 0, 0, 6, 2, d, dv).varlen(&cu_q, &cu_k).causal(causal), true);
            }
        }
        let s = AttnSpec::new(dtype, 0, 0, 0, 12, 4, 128, 128).varlen(&cu_q, &cu_k).alibi().window(16, 16);
        check_attention(&gpu, &s, true);
        let s = AttnSpec::new(dtype, 0, 0, 0, 4, 2, 128, 128)
            .varlen(&cu_q, &cu_k)
            .causal(true)
            .rope(json!({"rotary_dim": 128, "theta": 10000.0}));
        check_attention(&gpu, &s, true);
    }
}

/// The sm_90a kernel is persistent (one block per SM walks tiles i, i + SMs, ...): launches with
/// more block tiles than the device has SMs, so some blocks run two tiles through one ring and
/// one Q area, across a change of head, of sequence and of mask, with tiles of empty sequences
/// skipped on the way; dense and varlen, causal and not, Dv = D and 2D.
#[test]
fn persistent_blocks_take_several_tiles() {
    let Some(gpu) = gpu(concat!(module_path!(), "::persistent_blocks_take_several_tiles")) else { return };
    let sms = gpu.info().multiprocessors.max(1) as usize;
    // Dense: one query block per head, sms + 4 heads.
    let hq = sms + 4;
    let hk = (1..=8).rev().find(|g| hq % g == 0).unwrap_or(1);
    check_attention(&gpu, &AttnSpec::new(DType::BF16, 1, 40, 70, hq, hk, 64, 128).causal(true), false);
    check_attention(&gpu, &AttnSpec::new(DType::F16, 1, 40, 150, hq, hk, 64, 64).alibi(), false);
    // Varlen: 3 sequences (10, 0 and 300 queries; 3 query blocks each in the numbering), enough
    // heads that the last tiles wrap onto the first blocks, which skip the empty sequence's.
    let hq = sms.div_ceil(9) + 1;
    let cu_q = [0, 10, 10, 310];
    let cu_k = [0, 50, 90, 220];
    for causal in [false, true] {
        check_attention(&gpu, &AttnSpec::new(DType::BF16, 0, 0, 0, hq, 1, 64, 64).varlen(&cu_q, &cu_k).causal(causal), false);
    }
}

#[test]
fn long_keys_32k() {
    let Some(gpu) = gpu(concat!(module_path!(), "::long_keys_32k")) else { return };
    let (sk, win) = if gpu.info().emulated { (4096, 512) } else { (32768, 4096) }; // emulated: still 64+ key tiles, window skips 7/8 of them; CPU time
    for dtype in DTYPES {
        check_attention(&gpu, &AttnSpec::new(dtype, 1, 130, sk, 2, 1, 128, 128), false);
        check_attention(&gpu, &AttnSpec::new(dtype, 1, 130, sk, 2, 1, 128, 128).causal(true).alibi(), false);
        check_attention(&gpu, &AttnSpec::new(dtype, 1, 70, sk, 2, 2, 64, 64).window(win, 0), false);
    }
}

fn rope_configs(d: usize) -> Vec<serde_json::Value> {
    let half = d / 2;
    let short: Vec<f64> = (0..half).map(|i| 1.0 + 0.01 * i as f64).collect();
    let long: Vec<f64> = (0..half).map(|i| 1.0 + 0.5 * i as f64).collect();
    vec![
        json!({"rotary_dim": d, "theta": 10000.0}),
        json!({"rotary_dim": d, "theta": 10000.0, "scaling": {"rope_type": "default"}}),
        json!({"rotary_dim": d, "theta": 10000.0, "scaling": {"rope_type": "linear", "factor": 4.0}}),
        json!({"rotary_dim": d, "theta": 10000.0, "max_position_embeddings": 64,
               "scaling": {"type": "dynamic", "factor": 2.0}}),
        json!({"rotary_dim": d, "theta": 10000.0, "max_position_embeddings": 131072,
               "scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}),
        json!({"rotary_dim": d, "theta": 10000.0, "max_position_embeddings": 163840,
               "scaling": {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
                           "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}}),
        json!({"rotary_dim": d, "theta": 500000.0, "max_position_embeddings": 131072,
               "scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 8192}}),
        json!({"rotary_dim": d, "theta": 10000.0, "max_position_embeddings": 131072,
               "scaling": {"rope_type": "longrope", "short_factor": short, "long_factor": long,
                           "original_max_position_embeddings": 4096}}),
    ]
}

#[test]
fn rope_every_type() {
    let Some(gpu) = gpu(concat!(module_path!(), "::rope_every_type")) else { return };
    for dtype in DTYPES {
        for (d, dv) in [(128, 128), (64, 64), (64, 128)] {
            for r in rope_configs(d) {
                // Default positions, Sq < Sk (query positions P(i) = i + Sk - Sq).
                check_attention(&gpu, &AttnSpec::new(dtype, 2, 70, 150, 4, 2, d, dv).causal(true).rope(r.clone()), false);
                // Explicit position ids near 2^20 (exact-angle table), non-causal, GQA.
                let (b, sq, sk) = (2usize, 90usize, 130usize);
                let mut s = AttnSpec::new(dtype, b, sq, sk, 4, 1, d, dv).rope(r.clone());
                let base = (1 << 20) - 1000;
                s.pos_q = Some((0..b * sq).map(|t| base + 500 + (t % sq) as i32).collect());
                s.pos_k = Some((0..b * sk).map(|t| base + (t % sk) as i32 * 3).collect());
                check_attention(&gpu, &s, false);
            }
        }
        // GPT-J pairs, partial rotary dim, attention factor, ALiBi together.
        let r = json!({"rotary_dim": 32, "theta": 10000.0, "interleaved": true, "max_position_embeddings": 131072,
                       "scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}});
        check_attention(&gpu, &AttnSpec::new(dtype, 1, 100, 140, 6, 2, 64, 64).rope(r).alibi(), true);
        // Sq > Sk without ids: negative query positions (cos(-x), -sin(-x)).
        let r = json!({"rotary_dim": 128, "theta": 10000.0});
        check_attention(&gpu, &AttnSpec::new(dtype, 1, 200, 60, 2, 2, 128, 128).rope(r), true);
        // Partial NeoX rotary dim not a multiple of 16, D = 256.
        let r = json!({"rotary_dim": 100, "theta": 10000.0});
        check_attention(&gpu, &AttnSpec::new(dtype, 1, 50, 80, 2, 1, 256, 256).rope(r).causal(true), true);
    }
}

#[test]
fn deterministic() {
    let Some(gpu) = gpu(concat!(module_path!(), "::deterministic")) else { return };
    let (sq, sk) = if gpu.info().emulated { (200, 300) } else { (300, 517) }; // emulated: still 2 query tiles, 5+ key tiles; CPU time
    for (d, dv) in HEAD_DIMS {
        let s = AttnSpec::new(DType::BF16, 2, sq, sk, 8, 2, d, dv).causal(true).alibi();
        let x = make_inputs(&s, &mut Rng::from_time());
        let dx = upload_inputs(&gpu, &x);
        let (o1, l1) = run_attention(&gpu, &s, &dx);
        let (o2, l2) = run_attention(&gpu, &s, &dx);
        assert_eq!(o1.to_le_bytes(), o2.to_le_bytes(), "o differs between runs (d {d}, dv {dv})");
        assert_eq!(l1.to_le_bytes(), l2.to_le_bytes(), "lse differs between runs (d {d}, dv {dv})");
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let Some(gpu) = gpu(concat!(module_path!(), "::bad_inputs_are_typed_errors")) else { return };
    let cfg = AttentionConfig::default();
    let dev = |dtype: DType, shape: &[usize]| gpu.zeros(dtype, shape).unwrap();

    // f32 is CPU-only.
    let (q, k, v) = (dev(DType::F32, &[1, 8, 2, 64]), dev(DType::F32, &[1, 8, 2, 64]), dev(DType::F32, &[1, 8, 2, 64]));
    expect_err(attention_cuda(&gpu, &cfg, &AttentionArgs::new(&q, &k, &v)).map(|_| ()), ErrKind::Unsupported, "q", "f32");

    // Head dims outside the compiled set.
    let (q, k, v) = (dev(DType::F16, &[1, 8, 2, 96]), dev(DType::F16, &[1, 8, 2, 96]), dev(DType::F16, &[1, 8, 2, 96]));
    expect_err(attention_cuda(&gpu, &cfg, &AttentionArgs::new(&q, &k, &v)).map(|_| ()), ErrKind::Unsupported, "q", "D = 96");
    let (q, k, v) =
        (dev(DType::F16, &[1, 8, 2, 64]), dev(DType::F16, &[1, 8, 2, 64]), dev(DType::F16, &[1, 8, 2, 256]));
    expect_err(attention_cuda(&gpu, &cfg, &AttentionArgs::new(&q, &k, &v)).map(|_| ()), ErrKind::Unsupported, "v", "Dv = 4D");

    // Wrong output buffers.
    let (q, k, v) =
        (dev(DType::BF16, &[1, 8, 2, 64]), dev(DType::BF16, &[1, 8, 2, 64]), dev(DType::BF16, &[1, 8, 2, 64]));
    let args = AttentionArgs::new(&q, &k, &v);
    let mut o_bad = dev(DType::BF16, &[1, 8, 2, 128]);
    expect_err(attention_cuda_into(&gpu, &cfg, &args, &mut o_bad, None), ErrKind::Shape, "o", "o shape");
    let mut o_f16 = dev(DType::F16, &[1, 8, 2, 64]);
    expect_err(attention_cuda_into(&gpu, &cfg, &args, &mut o_f16, None), ErrKind::DType, "o", "o dtype");
    let mut o = dev(DType::BF16, &[1, 8, 2, 64]);
    let mut lse_bad = dev(DType::BF16, &[1, 2, 8]);
    expect_err(attention_cuda_into(&gpu, &cfg, &args, &mut o, Some(&mut lse_bad)), ErrKind::DType, "lse", "lse dtype");
    // GQA mismatch is caught by the plan before anything reaches the device.
    let (q, k, v) = (dev(DType::F16, &[1, 8, 3, 64]), dev(DType::F16, &[1, 8, 2, 64]), dev(DType::F16, &[1, 8, 2, 64]));
    expect_err(attention_cuda(&gpu, &cfg, &AttentionArgs::new(&q, &k, &v)).map(|_| ()), ErrKind::Invalid, "k", "Hq % Hkv");
    // A valid call still works after the failures (nothing was left half-launched).
    let out = attention_cuda_into(&gpu, &cfg, &args, &mut o, None);
    assert!(out.is_ok(), "{out:?}");
    assert_eq!(o.shape(), &[1, 8, 2, 64]);
}

/// Planned once, launched per layer: varlen with RoPE position ids and ALiBi, three layers of
/// fresh q, k, v on a fork of the planning handle, each against the float64 oracle; tensors that differ
/// from the plan are typed errors.
#[test]
fn planned_once_launched_per_layer() {
    use attn_kernels::attention::cuda::AttentionLaunch;
    let Some(gpu) = gpu(concat!(module_path!(), "::planned_once_launched_per_layer")) else { return };
    let mut rng = Rng::from_time();
    let (hq, hk, d) = (4usize, 2usize, 64usize);
    let (cu_q, cu_k) = (vec![0, 70, 70, 200], vec![0, 90, 130, 330]);
    let (tq, tk) = (200usize, 330usize);
    let pos_q: Vec<i32> = (0..tq).map(|_| rng.below(4096) as i32).collect();
    let pos_k: Vec<i32> = (0..tk).map(|_| rng.below(4096) as i32).collect();
    let cfg = AttentionConfig { causal: true, rope: Some(RopeConfig::new(d, 1e4)), ..Default::default() };
    let slopes = Tensor::from_f32(DType::F32, &[hq], &alibi_slopes(hq)).unwrap();
    let shape = |t: usize, h: usize| [t, h, d];
    let (qs, ks) = (shape(tq, hq), shape(tk, hk));
    let planning = Tensor::zeros(DType::BF16, &qs).unwrap();
    let planning_k = Tensor::zeros(DType::BF16, &ks).unwrap();
    let args = AttentionArgs::new(&planning, &planning_k, &planning_k)
        .with_alibi(&slopes)
        .with_varlen(&cu_q, &cu_k)
        .with_positions(Some(&pos_q), Some(&pos_k));
    let launch = AttentionLaunch::new(&gpu, &cfg, &args).unwrap();
    let layer_gpu = gpu.fork().unwrap();
    let slopes_dev = layer_gpu.upload(&slopes).unwrap();
    for layer in 0..3 {
        let (q, k, v) = (randn(&mut rng, DType::BF16, &qs), randn(&mut rng, DType::BF16, &ks), randn(&mut rng, DType::BF16, &ks));
        let host = AttentionArgs::new(&q, &k, &v).with_alibi(&slopes).with_varlen(&cu_q, &cu_k).with_positions(Some(&pos_q), Some(&pos_k));
        let (want_o, want_lse) = attention_f64(&cfg, &host).unwrap();
        let (qd, kd, vd) = (layer_gpu.upload(&q).unwrap(), layer_gpu.upload(&k).unwrap(), layer_gpu.upload(&v).unwrap());
        let out = launch.launch_alloc(&layer_gpu, [&qd, &kd, &vd], Some(&slopes_dev)).unwrap();
        let tol = DType::BF16.rel_tolerance();
        let err = rel_error(&layer_gpu.download(&out.o).unwrap().to_f64_vec(), &want_o);
        assert!(err <= tol, "layer {layer}: o rel {err:e}, seed {}", rng.seed);
        let lse_err = rel_error(&layer_gpu.download(&out.lse).unwrap().to_f64_vec(), &want_lse);
        assert!(lse_err <= tol, "layer {layer}: lse rel {lse_err:e}, seed {}", rng.seed);
    }
    // Tensors that are not the planned ones.
    let q = layer_gpu.upload(&randn(&mut rng, DType::BF16, &qs)).unwrap();
    let k = layer_gpu.upload(&randn(&mut rng, DType::BF16, &ks)).unwrap();
    let short = layer_gpu.upload(&randn(&mut rng, DType::BF16, &[tk - 1, hk, d])).unwrap();
    let f16 = layer_gpu.upload(&randn(&mut rng, DType::F16, &qs)).unwrap();
    expect_err(launch.launch_alloc(&layer_gpu, [&q, &k, &short], Some(&slopes_dev)), ErrKind::Shape, "v", "v of another shape");
    expect_err(launch.launch_alloc(&layer_gpu, [&f16, &k, &k], Some(&slopes_dev)), ErrKind::DType, "q", "q of another dtype");
    expect_err(launch.launch_alloc(&layer_gpu, [&q, &k, &k], None), ErrKind::Invalid, "alibi_slopes", "slopes the plan has");
}

/// Fused RoPE at position ids up to `i32::MAX`: the table then covers 2^31 positions, whose row
/// count times the low-table size overflows an int (the kernels compute the clamp in 64 bits).
/// Both RoPE code paths of the prefill kernel: `rotary_dim % 4 != 0` (pairwise table reads)
/// and `% 4 == 0` (two pairs per 16-byte load); against the CPU reference, whose angles are
/// exact in f64.
#[test]
fn rope_at_positions_near_i32_max() {
    use super::common::{attn_cfg, compare, down, rope, up};
    let Some(gpu) = gpu(concat!(module_path!(), "::rope_at_positions_near_i32_max")) else { return };
    let mut rng = Rng::from_time();
    let (sq, sk, d) = (5usize, 7usize, 64usize);
    let q = randn(&mut rng, DType::BF16, &[1, sq, 2, d]);
    let k = randn(&mut rng, DType::BF16, &[1, sk, 1, d]);
    let v = randn(&mut rng, DType::BF16, &[1, sk, 1, d]);
    let top = i32::MAX;
    let pos_q: Vec<i32> = (0..sq as i32).map(|i| top - 2 * i).collect();
    let pos_k: Vec<i32> = (0..sk as i32).map(|i| top - 3 * i).collect();
    for rotary_dim in [6usize, 64] {
        let cfg = attn_cfg(false, -1, -1, 0.0, Some(rope(rotary_dim, false)));
        let host = AttentionArgs::new(&q, &k, &v).with_positions(Some(&pos_q), Some(&pos_k));
        let want = attention_cpu(&cfg, &host).unwrap();
        let (dq, dk, dv) = (up(&gpu, &q), up(&gpu, &k), up(&gpu, &v));
        let args = AttentionArgs::new(&dq, &dk, &dv).with_positions(Some(&pos_q), Some(&pos_k));
        let got = attention_cuda(&gpu, &cfg, &args).unwrap();
        let what = format!("rotary_dim {rotary_dim} at positions near 2^31");
        compare(&what, rng.seed, "o", &down(&gpu, &got.o), &want.o.to_f64_vec(), DType::BF16.rel_tolerance());
    }
}

/// Which kernel runs: on compute capability 9.0 (the emulated device presents 9.0 unless
/// ATTN_KERNELS_EMU_CC says 8.0) the sm_90a kernel for every plan with TMA-compatible strides
/// (f16 / bf16, D = Dv in {64, 128, 256} and Dv = 2D, any mask, ALiBi, softcap, GQA, varlen, fused
/// RoPE through the query and key pre-passes); below 9.0 (or with ATTN_KERNELS_ATTENTION_PATH=mma)
/// always the mma.sync kernel. Each pick then matches the float64 oracle.
#[test]
fn hopper_path_dispatch() {
    use attn_kernels::attention::cuda::AttentionLaunch;
    use attn_kernels::runtime::Key;
    let Some(gpu) = gpu(concat!(module_path!(), "::hopper_path_dispatch")) else { return };
    let hopper = expect_hopper_path(&gpu, "hopper_path_dispatch");
    let rope = json!({"rotary_dim": 64, "theta": 10000.0});
    let cases = [
        (AttnSpec::new(DType::BF16, 1, 130, 70, 4, 2, 128, 128).causal(true), hopper),
        (AttnSpec::new(DType::F16, 1, 64, 200, 2, 1, 64, 64).alibi().softcap(10.0), hopper),
        (AttnSpec::new(DType::F16, 1, 20, 90, 2, 2, 256, 256).window(30, 0), hopper),
        (AttnSpec::new(DType::BF16, 1, 60, 90, 2, 1, 64, 64).rope(rope).causal(true), hopper),
        (AttnSpec::new(DType::BF16, 1, 60, 60, 2, 1, 64, 128), hopper),
        (AttnSpec::new(DType::F16, 1, 100, 300, 2, 1, 128, 256).causal(true).alibi(), hopper),
    ];
    for (s, want_sm90) in cases {
        let mut rng = Rng::from_time();
        let x = make_inputs(&s, &mut rng);
        let launch = AttentionLaunch::new(&gpu, &s.cfg, &host_args(&s, &x)).unwrap();
        let sm90 = matches!(launch.kernel().key, Key::AttnFwdSm90 { .. });
        assert_eq!(sm90, want_sm90, "{:?} picked {}; {s:?}", gpu.info().compute_capability, launch.kernel().name);
        check_attention(&gpu, &s, true);
    }
}
