//! Hostile inputs (issue 10): property tests that drive every public validation entry point
//! (`rope::plan_rope`, `attention::plan`, `diff_attention::plan_diff`, `decode::plan`,
//! `linear::plan_linear` / `plan_delta_rule` / `plan_rwkv4`, `decode::merge_states_cpu`) and
//! `case::run` on the CPU with random INVALID arguments, one defect at a time, and check that
//! each call returns `Err` of the right variant naming the right argument, without panicking.
//! A share of the generated calls is left valid and must return `Ok`, so validation that
//! rejects everything would be noticed.
//!
//! Shapes are described lazily ([`Fake`] implements `TensorInfo` with any shape), so the
//! huge-size cases cost nothing. Those run in a child process (the test re-executes itself),
//! under this binary's allocator cap (any single allocation over 1 GiB fails, which aborts),
//! so validation that allocates in proportion to an absurd shape shows up as a clear test
//! failure instead of taking the whole suite down.
//!
//! Every property prints its case count; the last one to finish prints the total
//! ("hostile: N cases").

use attn_kernels::attention::{self, AttentionArgs, AttentionConfig};
use attn_kernels::decode::{self, KvCacheRef};
use attn_kernels::diff_attention::{self, DiffAttentionArgs, DiffAttentionConfig};
use attn_kernels::linear::{self, DeltaRuleArgs, DeltaRuleConfig, LinearArgs, LinearAttentionConfig, Rwkv4Args, Rwkv4Config};
use attn_kernels::rope::{self, RopeArgs, RopeOpConfig};
use attn_kernels::{DType, Error, Result, Tensor, TensorInfo};
use attn_kernels_harness::case::{self, parse_config, Case, Device};
use attn_kernels_harness::cases::decode::DecodeCaseConfig;
use proptest::test_runner::{Config as PtConfig, TestCaseError, TestRunner};
use serde_json::{json, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

// ------------------------------------------------------------------------ allocation cap

/// Largest single allocation this test binary allows (all legitimate cases here are tiny).
const ALLOC_CAP: usize = 1 << 30;

struct CappedAlloc;

// SAFETY: forwards to the system allocator; refusing (null) is a valid GlobalAlloc answer.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_CAP {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: CappedAlloc = CappedAlloc;

// ------------------------------------------------------------------------------- counting

/// Property tests in this file that report a count (the last one prints the total).
const PROPERTIES: usize = 9;
static TOTAL: AtomicUsize = AtomicUsize::new(0);
static DONE: AtomicUsize = AtomicUsize::new(0);

fn finish(name: &str, cases: usize) {
    let total = TOTAL.fetch_add(cases, Ordering::SeqCst) + cases;
    let done = DONE.fetch_add(1, Ordering::SeqCst) + 1;
    let mut err = std::io::stderr();
    let _ = writeln!(err, "hostile: {name}: {cases} cases");
    if done == PROPERTIES {
        let _ = writeln!(err, "hostile: {total} cases");
    }
}

fn runner(cases: u32) -> TestRunner {
    // Shrinking a seed only draws other random cases: report the first failure as found.
    TestRunner::new(PtConfig { cases, failure_persistence: None, max_shrink_iters: 0, ..PtConfig::default() })
}

// ------------------------------------------------------------------------------ small rng

/// splitmix64: each proptest case draws one seed; everything else follows from it, so the
/// failing seed proptest prints reproduces the case.
struct R(u64);

impl R {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.range(0, xs.len() - 1)].clone()
    }
    fn float(&mut self) -> DType {
        self.pick(&[DType::F32, DType::F16, DType::BF16])
    }
    /// A dtype different from `d`.
    fn other_dtype(&mut self, d: DType) -> DType {
        let all = [DType::F32, DType::F16, DType::BF16, DType::I32];
        let others: Vec<DType> = all.into_iter().filter(|&x| x != d).collect();
        self.pick(&others)
    }
    /// A shape of rank `rank` with small dims.
    fn shape(&mut self, rank: usize) -> Vec<usize> {
        (0..rank).map(|_| self.range(1, 3)).collect()
    }
    /// A rank in 0..=5 other than the `ok` ones.
    fn bad_rank(&mut self, ok: &[usize]) -> usize {
        loop {
            let r = self.range(0, 5);
            if !ok.contains(&r) {
                return r;
            }
        }
    }
    /// Cumulative offsets of `lens`.
    fn cu(lens: &[usize]) -> Vec<i32> {
        let mut cu = vec![0i32];
        for &l in lens {
            cu.push(cu.last().unwrap() + l as i32);
        }
        cu
    }
    /// A cu_seqlens that `check_cu_seqlens(.., total)` must reject.
    fn bad_cu(&mut self, total: usize) -> Vec<i32> {
        let t = total as i32;
        match self.range(0, 6) {
            0 => vec![],
            1 => vec![0],
            2 => vec![self.int(1, 5) as i32, t + 5],                                 // not starting at 0
            3 => vec![0, t + 2, t + 1],                                              // decreasing
            4 => vec![0, t + self.int(1, 4) as i32],                                 // wrong last entry
            5 => vec![0, i32::MAX, if t == i32::MAX { 0 } else { t }],               // overflowing, decreasing
            _ => vec![0, self.int(-5, -1) as i32, t],                                // negative
        }
    }
}

// -------------------------------------------------------------------------- the case model

/// A lazily described tensor: shape and dtype only. Validation never needs more.
#[derive(Clone, Debug)]
struct Fake {
    dtype: DType,
    shape: Vec<usize>,
}

impl TensorInfo for Fake {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}

/// One tensor of a generated call: index tensors carry their i32 data.
#[derive(Clone, Debug)]
struct Ten {
    dtype: DType,
    shape: Vec<usize>,
    ints: Option<Vec<i32>>,
}

fn ft(dtype: DType, shape: &[usize]) -> Ten {
    Ten { dtype, shape: shape.to_vec(), ints: None }
}
fn it(data: Vec<i32>) -> Ten {
    Ten { dtype: DType::I32, shape: vec![data.len()], ints: Some(data) }
}
fn it2(rows: usize, cols: usize, data: Vec<i32>) -> Ten {
    Ten { dtype: DType::I32, shape: vec![rows, cols], ints: Some(data) }
}

/// A generated call: the op, its config JSON (without `op`), its tensors, and the pieces only
/// the Rust API can express.
#[derive(Clone, Debug)]
struct Spec {
    op: &'static str,
    config: Value,
    tensors: BTreeMap<String, Ten>,
    /// A config float the JSON cannot carry (NaN, inf): applied to the parsed config struct.
    rust_float: Option<(&'static str, f64)>,
    /// decode: `max_blocks` passed to the plan instead of the block table's second dim.
    plan_max_blocks: Option<usize>,
    /// Only the Rust API can express this call (skip `case::run`).
    plan_only: bool,
    /// Only a case file can express this call (skip the plan).
    case_only: bool,
    /// Replaces the whole case-file config (for `op` defects).
    case_config: Option<Value>,
}

impl Spec {
    fn new(op: &'static str, config: Value) -> Spec {
        Spec {
            op,
            config,
            tensors: BTreeMap::new(),
            rust_float: None,
            plan_max_blocks: None,
            plan_only: false,
            case_only: false,
            case_config: None,
        }
    }
    fn t(&mut self, name: &str, t: Ten) {
        self.tensors.insert(name.to_string(), t);
    }
    fn shape(&self, name: &str) -> Vec<usize> {
        self.tensors[name].shape.clone()
    }
    fn set_shape(&mut self, name: &str, shape: Vec<usize>) {
        self.tensors.get_mut(name).expect("tensor exists").shape = shape;
    }
    fn set_dtype(&mut self, name: &str, d: DType) {
        self.tensors.get_mut(name).expect("tensor exists").dtype = d;
    }
    fn cfg(&mut self, key: &str, v: Value) {
        self.config.as_object_mut().expect("object").insert(key.to_string(), v);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ok,
    Shape,
    DType,
    Invalid,
    Config,
    Case,
    Unsupported,
    /// Any typed rejection of an absurd size (shape, invalid or unsupported), or Ok where the
    /// call is representable: only "no panic, no abort" is asserted.
    HugeAny,
    /// Must be rejected: shape, invalid or unsupported.
    HugeErr,
}

/// What a call must return: a variant and the argument(s) it may name (`"rope*"` = prefix).
#[derive(Clone, Debug)]
struct Expect {
    kind: Kind,
    args: Vec<&'static str>,
    /// A different expectation for the `case::run` path (the case layer checks index tensor
    /// shapes itself).
    case: Option<(Kind, Vec<&'static str>)>,
}

fn ex(kind: Kind, arg: &'static str) -> Expect {
    Expect { kind, args: if arg.is_empty() { vec![] } else { vec![arg] }, case: None }
}
fn ok() -> Expect {
    ex(Kind::Ok, "")
}

fn check(what: &str, spec: &Spec, kind: Kind, args: &[&'static str], got: std::thread::Result<Result<()>>) -> Result<(), TestCaseError> {
    let fail = |msg: String| Err(TestCaseError::fail(format!("{what}: {msg}\n  spec: {spec:?}")));
    let got = match got {
        Ok(r) => r,
        Err(p) => {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            return fail(format!("PANICKED ({})", msg.unwrap_or_default()));
        }
    };
    let e = match (kind, got) {
        (Kind::Ok, Ok(())) | (Kind::HugeAny, Ok(())) => return Ok(()),
        (Kind::Ok, Err(e)) => return fail(format!("expected Ok, got Err({e:?})")),
        (_, Ok(())) => return fail(format!("expected {kind:?} naming {args:?}, got Ok")),
        (_, Err(e)) => e,
    };
    let variant_ok = match kind {
        Kind::Shape => matches!(e, Error::Shape { .. }),
        Kind::DType => matches!(e, Error::DType { .. }),
        Kind::Invalid => matches!(e, Error::InvalidArgument { .. }),
        Kind::Config => matches!(e, Error::Config { .. }),
        Kind::Case => matches!(e, Error::Case(_)),
        Kind::Unsupported => matches!(e, Error::Unsupported { .. }),
        Kind::HugeAny | Kind::HugeErr => {
            matches!(e, Error::Shape { .. } | Error::InvalidArgument { .. } | Error::Unsupported { .. })
        }
        Kind::Ok => unreachable!(),
    };
    let arg_ok = args.is_empty()
        || e.argument().is_some_and(|a| args.iter().any(|w| w.strip_suffix('*').map_or(a == *w, |p| a.starts_with(p))));
    if !variant_ok || !arg_ok {
        return fail(format!("expected {kind:?} naming {args:?}, got {e:?}"));
    }
    if e.to_string().is_empty() {
        return fail("empty error message".into());
    }
    Ok(())
}

/// Run a spec through the plan (unless case-only) and `case::run` (unless plan-only).
fn verify(spec: &Spec, want: &Expect) -> Result<(), TestCaseError> {
    if !spec.case_only {
        let got = catch_unwind(AssertUnwindSafe(|| run_plan(spec)));
        check("plan", spec, want.kind, &want.args, got)?;
    }
    if !spec.plan_only {
        let (kind, args) = want.case.clone().unwrap_or((want.kind, want.args.clone()));
        let got = catch_unwind(AssertUnwindSafe(|| run_case_cpu(spec)));
        check("case::run", spec, kind, &args, got)?;
    }
    Ok(())
}

// ----------------------------------------------------------------------- running a spec

fn apply_float(name: &str, x: f64, scale: &mut Option<f64>, softcap: Option<&mut f64>, rope: Option<&mut rope::RopeConfig>) {
    match name {
        "softmax_scale" | "scale" => *scale = Some(x),
        "softcap" => *softcap.expect("softcap field") = x,
        "rope.theta" => rope.expect("rope config").theta = x,
        other => panic!("test bug: unknown rust float {other}"),
    }
}

fn run_plan(spec: &Spec) -> Result<()> {
    let fakes: BTreeMap<&str, Fake> =
        spec.tensors.iter().map(|(k, t)| (k.as_str(), Fake { dtype: t.dtype, shape: t.shape.clone() })).collect();
    let f = |n: &str| fakes.get(n);
    let req = |n: &str| fakes.get(n).unwrap_or_else(|| panic!("test bug: spec lacks `{n}`"));
    let ints = |n: &str| spec.tensors.get(n).and_then(|t| t.ints.as_deref());
    match spec.op {
        "attention" => {
            let mut cfg: AttentionConfig = parse_config(&spec.config)?;
            if let Some((n, x)) = spec.rust_float {
                apply_float(n, x, &mut cfg.softmax_scale, Some(&mut cfg.softcap), cfg.rope.as_mut());
            }
            let args = AttentionArgs {
                q: req("q"),
                k: req("k"),
                v: req("v"),
                alibi_slopes: f("alibi_slopes"),
                cu_seqlens_q: ints("cu_seqlens_q"),
                cu_seqlens_k: ints("cu_seqlens_k"),
                position_ids_q: ints("position_ids_q"),
                position_ids_k: ints("position_ids_k"),
            };
            attention::plan(&cfg, &args).map(|_| ())
        }
        "diff_attention" => {
            let mut cfg: DiffAttentionConfig = parse_config(&spec.config)?;
            if let Some((n, x)) = spec.rust_float {
                match n {
                    "eps" => cfg.eps = x,
                    "lambda_init" => cfg.lambda_init = Some(x),
                    _ => apply_float(n, x, &mut cfg.softmax_scale, Some(&mut cfg.softcap), cfg.rope.as_mut()),
                }
            }
            let args = DiffAttentionArgs {
                q: req("q"),
                k: req("k"),
                v: req("v"),
                lambda: req("lambda"),
                norm_weight: f("norm_weight"),
                alibi_slopes: f("alibi_slopes"),
                cu_seqlens_q: ints("cu_seqlens_q"),
                cu_seqlens_k: ints("cu_seqlens_k"),
                position_ids_q: ints("position_ids_q"),
                position_ids_k: ints("position_ids_k"),
            };
            diff_attention::plan_diff(&cfg, &args).map(|_| ())
        }
        "rope" => {
            let mut cfg: RopeOpConfig = parse_config(&spec.config)?;
            if let Some((n, x)) = spec.rust_float {
                apply_float(n, x, &mut None, None, Some(&mut cfg.rope));
            }
            let args = RopeArgs { x: req("x"), position_ids: ints("position_ids"), cu_seqlens: ints("cu_seqlens") };
            rope::plan_rope(&cfg, &args).map(|_| ())
        }
        "decode_attention" => {
            let mut cfg: DecodeCaseConfig = parse_config(&spec.config)?;
            if let Some((n, x)) = spec.rust_float {
                apply_float(n, x, &mut cfg.softmax_scale, Some(&mut cfg.softcap), cfg.rope.as_mut());
            }
            let seqlens = ints("cache_seqlens").expect("test bug: cache_seqlens");
            let cache = match spec.tensors.get("block_table") {
                None => KvCacheRef::Contiguous { k: req("k_cache"), v: req("v_cache"), cache_seqlens: seqlens },
                Some(t) => KvCacheRef::Paged {
                    k: req("k_cache"),
                    v: req("v_cache"),
                    block_table: t.ints.as_deref().expect("table data"),
                    max_blocks: spec.plan_max_blocks.unwrap_or_else(|| t.shape.get(1).copied().unwrap_or(0)),
                    cache_seqlens: seqlens,
                },
            };
            decode::plan(&cfg.attention(), req("q"), &cache, f("alibi_slopes"), &cfg.options()).map(|_| ())
        }
        "linear_attention" => {
            let mut cfg: LinearAttentionConfig = parse_config(&spec.config)?;
            if let Some((n, x)) = spec.rust_float {
                apply_float(n, x, &mut cfg.scale, None, None);
            }
            let args = LinearArgs {
                q: req("q"),
                k: req("k"),
                v: req("v"),
                g: f("g"),
                u: f("u"),
                initial_state: f("initial_state"),
                cu_seqlens: ints("cu_seqlens"),
            };
            linear::plan_linear(&cfg, &args).map(|_| ())
        }
        "delta_rule" => {
            let mut cfg: DeltaRuleConfig = parse_config(&spec.config)?;
            if let Some((n, x)) = spec.rust_float {
                apply_float(n, x, &mut cfg.scale, None, None);
            }
            let args = DeltaRuleArgs {
                q: req("q"),
                k: req("k"),
                v: req("v"),
                a: req("a"),
                b: req("b"),
                g: f("g"),
                initial_state: f("initial_state"),
                cu_seqlens: ints("cu_seqlens"),
            };
            linear::plan_delta_rule(&cfg, &args).map(|_| ())
        }
        "rwkv4" => {
            let cfg: Rwkv4Config = parse_config(&spec.config)?;
            let args = Rwkv4Args { k: req("k"), v: req("v"), w: req("w"), u: req("u"), initial_state: f("initial_state") };
            linear::plan_rwkv4(&cfg, &args).map(|_| ())
        }
        "merge_states" => {
            // merge_states has no public plan: validate through the CPU entry point.
            let t = real_tensors(spec);
            decode::merge_states_cpu(&t["o_a"], &t["lse_a"], &t["o_b"], &t["lse_b"]).map(|_| ())
        }
        other => panic!("test bug: op {other}"),
    }
}

/// Real host tensors for a spec (small shapes only): floats from a fixed non-zero pattern.
fn real_tensors(spec: &Spec) -> case::Tensors {
    spec.tensors
        .iter()
        .map(|(k, t)| {
            let n: usize = t.shape.iter().product();
            let tensor = match (&t.ints, t.dtype) {
                (Some(d), _) => Tensor::from_i32(&t.shape, d).expect("index data matches its shape"),
                (None, DType::I32) => Tensor::from_i32(&t.shape, &vec![1; n]).expect("shape"),
                (None, dt) => {
                    let v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.7311 + 0.25).sin()).collect();
                    Tensor::from_f32(dt, &t.shape, &v).expect("shape")
                }
            };
            (k.clone(), tensor)
        })
        .collect()
}

fn run_case_cpu(spec: &Spec) -> Result<()> {
    let config = spec.case_config.clone().unwrap_or_else(|| {
        let mut c = spec.config.clone();
        c.as_object_mut().expect("object").insert("op".into(), json!(spec.op));
        c
    });
    let case = Case { config, inputs: real_tensors(spec) };
    case::run(&case, &Device::Cpu).map(|_| ())
}

// --------------------------------------------------------------------------- generators

/// A valid RoPE config for head dim `d >= 2`.
fn rope_config(r: &mut R, d: usize) -> Value {
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
fn bad_rope(r: &mut R, d: usize) -> (Value, &'static str) {
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

/// Valid attention-style geometry shared by attention and diff_attention.
#[derive(Clone, Debug)]
struct Geo {
    varlen: bool,
    b: usize,
    sq: usize,
    sk: usize,
    lens_q: Vec<usize>,
    lens_k: Vec<usize>,
}

impl Geo {
    fn new(r: &mut R, varlen: bool) -> Geo {
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
    fn shape(&self, rows_q: bool, heads: usize, w: usize) -> Vec<usize> {
        let s = if rows_q { self.sq } else { self.sk };
        if self.varlen {
            vec![s, heads, w]
        } else {
            vec![self.b, s, heads, w]
        }
    }
    fn add_index(&self, spec: &mut Spec) {
        if self.varlen {
            spec.t("cu_seqlens_q", it(R::cu(&self.lens_q)));
            spec.t("cu_seqlens_k", it(R::cu(&self.lens_k)));
        }
    }
    /// Position ids of the q or k rows (dense `[B, S]`, varlen `[total]`).
    fn ids(&self, r: &mut R, rows_q: bool) -> Ten {
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
fn attn_options(r: &mut R, config: &mut Value) {
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
fn bad_attn_option(r: &mut R, spec: &mut Spec) -> Expect {
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

/// Case-file defects any op has: missing or unknown tensors, unknown keys, bad `op`.
fn bad_case_file(r: &mut R, spec: &mut Spec) -> Expect {
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
const REQUIRED: &[(&str, &str)] = &[
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

/// A shape that differs from `s` (same rank, one dim changed).
fn perturb(r: &mut R, s: &[usize]) -> Vec<usize> {
    let mut out = s.to_vec();
    if out.is_empty() {
        return vec![1];
    }
    let i = r.range(0, out.len() - 1);
    out[i] = if out[i] == 0 || r.bool() { out[i] + r.range(1, 3) } else { out[i] - 1 };
    out
}

// ------------------------------------------------------------------------------- attention

fn attention_case(r: &mut R) -> (Spec, Expect) {
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

// --------------------------------------------------------------------------- diff_attention

fn diff_case(r: &mut R) -> (Spec, Expect) {
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
            spec.t("norm_weight", ft(DType::F32, &[2 * d]));
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
            spec.set_dtype("norm_weight", r.other_dtype(DType::F32));
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

// -------------------------------------------------------------------------------------- rope

fn rope_case(r: &mut R) -> (Spec, Expect) {
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

// ------------------------------------------------------------------------------------ decode

fn decode_case(r: &mut R) -> (Spec, Expect) {
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

fn merge_case(r: &mut R) -> (Spec, Expect) {
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

// ------------------------------------------------------------------------------------ linear

fn linear_case(r: &mut R, op: &'static str) -> (Spec, Expect) {
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

fn rwkv4_case(r: &mut R) -> (Spec, Expect) {
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

// ----------------------------------------------------------------------------- properties

/// Run `cases` generated calls of one family; returns how many ran.
fn property(name: &str, cases: u32, gen: fn(&mut R) -> (Spec, Expect)) {
    let mut runner = runner(cases);
    let count = AtomicUsize::new(0);
    let (valid, invalid) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let result = runner.run(&proptest::num::u64::ANY, |seed| {
        count.fetch_add(1, Ordering::Relaxed);
        let (spec, want) = gen(&mut R(seed));
        if want.kind == Kind::Ok {
            valid.fetch_add(1, Ordering::Relaxed);
        } else {
            invalid.fetch_add(1, Ordering::Relaxed);
        }
        verify(&spec, &want)
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    let (v, i) = (valid.load(Ordering::Relaxed), invalid.load(Ordering::Relaxed));
    assert!(v >= cases as usize / 50, "{name}: only {v} valid calls were generated");
    assert!(i >= cases as usize / 2, "{name}: only {i} invalid calls were generated");
    finish(name, count.load(Ordering::Relaxed));
}

#[test]
fn hostile_attention() {
    property("attention", 2500, attention_case);
}

#[test]
fn hostile_diff_attention() {
    property("diff_attention", 1500, diff_case);
}

#[test]
fn hostile_rope() {
    property("rope", 1500, rope_case);
}

#[test]
fn hostile_decode() {
    property("decode", 2000, decode_case);
}

#[test]
fn hostile_merge_states() {
    property("merge_states", 600, merge_case);
}

#[test]
fn hostile_linear_attention() {
    property("linear_attention", 1500, |r| linear_case(r, "linear_attention"));
}

#[test]
fn hostile_delta_rule() {
    property("delta_rule", 1000, |r| linear_case(r, "delta_rule"));
}

#[test]
fn hostile_rwkv4() {
    property("rwkv4", 800, rwkv4_case);
}

// ----------------------------------------------------------------------------- huge shapes

/// A dimension that makes products overflow.
fn huge_dim(r: &mut R) -> usize {
    match r.range(0, 3) {
        0 => usize::MAX,
        1 => 1usize << r.range(32, 63),
        2 => (1usize << r.range(20, 40)) + r.range(0, 7),
        _ => usize::MAX / r.range(2, 5),
    }
}

/// Huge shapes whose element (or byte) counts overflow: only lazily described tensors can have
/// them, so only the plan API is driven. Validation must reject them (or, for the `HugeAny`
/// ones that are representable, accept them) without a panic and without allocating in
/// proportion to the shape.
fn huge_case(r: &mut R, family: usize) -> (Spec, Expect) {
    let dt = r.float();
    let (a, b) = (huge_dim(r), huge_dim(r));
    let overflow = a.checked_mul(b).is_none();
    match family {
        0 => {
            // attention dense, B * Sq overflows (or is absurd).
            let mut s = Spec::new("attention", json!({}));
            s.t("q", ft(dt, &[a, b, 1, 1]));
            s.t("k", ft(dt, &[a, 1, 1, 1]));
            s.t("v", ft(dt, &[a, 1, 1, 1]));
            let kind = if overflow { Kind::HugeErr } else { Kind::HugeAny };
            (s, Expect { kind, args: vec!["q", "k", "v"], case: None })
        }
        1 => {
            // attention with a huge batch of empty sequences (a representable, empty tensor)
            // and huge heads: nothing to compute, but nothing may be allocated per batch row.
            let mut s = Spec::new("attention", json!({}));
            s.t("q", ft(dt, &[a, 0, b, 2]));
            s.t("k", ft(dt, &[a, 0, 1, 2]));
            s.t("v", ft(dt, &[a, 0, 1, 2]));
            (s, Expect { kind: Kind::HugeAny, args: vec!["q", "k", "v"], case: None })
        }
        2 => {
            // rope: rows B * S overflow.
            let mut s = Spec::new("rope", json!({"rope": {"rotary_dim": 2}}));
            s.t("x", ft(dt, &[a, b, 1, 2]));
            let kind = if overflow { Kind::HugeErr } else { Kind::HugeAny };
            (s, Expect { kind, args: vec!["x"], case: None })
        }
        3 => {
            // diff_attention dense.
            let mut s = Spec::new("diff_attention", json!({}));
            s.t("q", ft(dt, &[a, b, 2, 1]));
            s.t("k", ft(dt, &[a, 1, 2, 1]));
            s.t("v", ft(dt, &[a, 1, 1, 2]));
            s.t("lambda", ft(DType::F32, &[1]));
            let kind = if overflow { Kind::HugeErr } else { Kind::HugeAny };
            (s, Expect { kind, args: vec!["q", "k", "v"], case: None })
        }
        4 => {
            // decode: a cache whose element count overflows (B = 1).
            let mut s = Spec::new("decode_attention", json!({}));
            s.t("k_cache", ft(dt, &[1, a, b, 1]));
            s.t("v_cache", ft(dt, &[1, a, b, 1]));
            s.t("q", ft(dt, &[1, 1, b, 1]));
            s.t("cache_seqlens", it(vec![1]));
            let kind = if overflow { Kind::HugeErr } else { Kind::HugeAny };
            (s, Expect { kind, args: vec!["k_cache", "v_cache", "q"], case: None })
        }
        5 => {
            // linear: empty T, but B * H * K * V of the state overflows.
            let op = r.pick(&["linear_attention", "delta_rule"]);
            let mut s = Spec::new(op, json!({}));
            for n in ["q", "k", "a", "b"] {
                if n == "q" || n == "k" || op == "delta_rule" {
                    s.t(n, ft(dt, &[a, 0, b, 2]));
                }
            }
            s.t("v", ft(dt, &[a, 0, b, 2]));
            let st = [a, b, 2, 2];
            let kind = if st.iter().try_fold(1usize, |x, &y| x.checked_mul(y)).is_none() { Kind::HugeErr } else { Kind::HugeAny };
            (s, Expect { kind, args: vec!["q", "k", "v", "initial_state"], case: None })
        }
        6 => {
            // linear: q itself overflows.
            let mut s = Spec::new("linear_attention", json!({}));
            for n in ["q", "k", "v"] {
                s.t(n, ft(dt, &[a, b, 1, 1]));
            }
            let kind = if overflow { Kind::HugeErr } else { Kind::HugeAny };
            (s, Expect { kind, args: vec!["q", "k", "v", "initial_state"], case: None })
        }
        _ => {
            // rwkv4: B * T * C overflows, or the byte count does (numel near usize::MAX / 2).
            let mut s = Spec::new("rwkv4", json!({}));
            let c = r.range(1, 3);
            s.t("k", ft(dt, &[a, b, c]));
            s.t("v", ft(dt, &[a, b, c]));
            s.t("w", ft(DType::F32, &[c]));
            s.t("u", ft(DType::F32, &[c]));
            let bytes = [a, b, c, dt.size()].iter().try_fold(1usize, |x, &y| x.checked_mul(y));
            let kind = if bytes.is_none() { Kind::HugeErr } else { Kind::HugeAny };
            (s, Expect { kind, args: vec!["k", "v", "initial_state"], case: None })
        }
    }
}

const HUGE_CHILD_ENV: &str = "AK_HOSTILE_HUGE_CHILD";
const HUGE_FAMILIES: &[&str] =
    &["attention dense", "attention empty huge batch", "rope", "diff_attention", "decode cache", "linear empty T", "linear q", "rwkv4"];
const HUGE_CASES_PER_FAMILY: u32 = 250;

#[test]
fn hostile_huge_shapes_rejected_without_allocation() {
    if let Some(fam) = std::env::var_os(HUGE_CHILD_ENV) {
        // Child: run one family; name each case on stderr first, so an abort names its culprit.
        let family: usize = fam.to_string_lossy().parse().expect("family index");
        let mut runner = runner(HUGE_CASES_PER_FAMILY);
        let count = AtomicUsize::new(0);
        let result = runner.run(&proptest::num::u64::ANY, |seed| {
            count.fetch_add(1, Ordering::Relaxed);
            let (mut spec, want) = huge_case(&mut R(seed), family);
            spec.plan_only = true;
            let _ = writeln!(std::io::stderr(), "huge case: {} {:?} expecting {:?}", spec.op, spec.tensors, want.kind);
            verify(&spec, &want)
        });
        if let Err(e) = result {
            panic!("huge shapes: {e}");
        }
        let _ = writeln!(std::io::stderr(), "huge-cases: {}", count.load(Ordering::Relaxed));
        return;
    }
    let exe = std::env::current_exe().expect("test executable");
    let mut failures = Vec::new();
    let mut total = 0;
    for (family, name) in HUGE_FAMILIES.iter().enumerate() {
        let out = std::process::Command::new(&exe)
            .args(["hostile_huge_shapes_rejected_without_allocation", "--exact", "--nocapture", "--test-threads", "1"])
            .env(HUGE_CHILD_ENV, family.to_string())
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("spawn the child test process");
        let stderr = String::from_utf8_lossy(&out.stderr);
        match stderr.lines().find_map(|l| l.strip_prefix("huge-cases: ").and_then(|x| x.trim().parse::<usize>().ok())) {
            Some(n) if out.status.success() => total += n,
            _ => {
                let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
                let tail = lines[lines.len().saturating_sub(6)..].join("\n    ");
                failures.push(format!("[{name}] child exited with {}:\n    {tail}", out.status));
            }
        }
    }
    assert!(failures.is_empty(), "huge-shape cases failed:\n{}", failures.join("\n"));
    finish("huge shapes", total);
}

// ---------------------------------------------------------------------------- sanity checks

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

// ------------------------------------------------------------------------- device validation

/// The CUDA entry points' own checks (beyond the plans): unsupported head dims and dtypes,
/// caller-owned outputs of the wrong shape or dtype, state-pool slot ids out of range,
/// duplicated or miscounted. Skipped (with the reason printed) without a GPU.
#[test]
fn hostile_cuda_entry_points() {
    let Some(gpu) = attn_kernels_harness::bench::gpu_for_test("hostile_cuda_entry_points") else {
        return;
    };
    use attn_kernels::linear::cuda::{linear_attention_cuda_slots, StatePool};
    let up = |dt: DType, shape: &[usize]| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin()).collect();
        gpu.upload(&Tensor::from_f32(dt, shape, &v).expect("shape")).expect("upload")
    };
    let expect = |what: &str, got: Result<()>, kind: Kind, arg: &'static str| {
        let spec = Spec::new("cuda", json!({}));
        if let Err(e) = check(what, &spec, kind, &[arg], Ok(got)) {
            panic!("{e}");
        }
    };
    let cfg = AttentionConfig::default();
    // Attention: head dims without a kernel, f32, outputs of the wrong shape or dtype.
    for (dt, d, dv, arg) in [(DType::BF16, 32, 32, "q"), (DType::F16, 96, 96, "q"), (DType::BF16, 64, 32, "v"), (DType::F32, 64, 64, "q")] {
        let (q, k, v) = (up(dt, &[1, 5, 2, d]), up(dt, &[1, 7, 1, d]), up(dt, &[1, 7, 1, dv]));
        let got = attention::cuda::attention_cuda(&gpu, &cfg, &AttentionArgs::new(&q, &k, &v)).map(|_| ());
        expect(&format!("attention_cuda {dt} D={d} Dv={dv}"), got, Kind::Unsupported, arg);
    }
    let (q, k, v) = (up(DType::BF16, &[1, 5, 2, 64]), up(DType::BF16, &[1, 7, 1, 64]), up(DType::BF16, &[1, 7, 1, 64]));
    for (shape, dt, kind) in [(vec![1, 5, 2, 32], DType::BF16, Kind::Shape), (vec![1, 5, 2, 64], DType::F32, Kind::DType), (vec![5, 2, 64], DType::BF16, Kind::Shape)] {
        let mut o = gpu.alloc(dt, &shape).expect("alloc");
        let got = attention::cuda::attention_cuda_into(&gpu, &cfg, &AttentionArgs::new(&q, &k, &v), &mut o, None);
        expect(&format!("attention_cuda_into o {dt} {shape:?}"), got, kind, "o");
    }
    let mut o = gpu.alloc(DType::BF16, &[1, 5, 2, 64]).expect("alloc");
    let mut lse = gpu.alloc(DType::F32, &[1, 5, 2]).expect("alloc");
    let got = attention::cuda::attention_cuda_into(&gpu, &cfg, &AttentionArgs::new(&q, &k, &v), &mut o, Some(&mut lse));
    expect("attention_cuda_into lse [B, Sq, H]", got, Kind::Shape, "lse");
    // State pool slots: out of range, duplicated, miscounted; an initial_state with a pool.
    let (b, t, h, kd, vd) = (3usize, 1usize, 2usize, 16usize, 16usize);
    let (q, k, v) = (up(DType::BF16, &[b, t, h, kd]), up(DType::BF16, &[b, t, h, kd]), up(DType::BF16, &[b, t, h, vd]));
    let s0 = up(DType::F32, &[b, h, kd, vd]);
    let lcfg = LinearAttentionConfig::default();
    let mut pool = StatePool::new(&gpu, 5, h, kd, vd).expect("pool");
    for (ids, what) in [
        (vec![0, 1, 5], "out of range"),
        (vec![0, -1, 2], "negative"),
        (vec![0, 1, i32::MAX], "i32::MAX"),
        (vec![2, 0, 2], "duplicated"),
        (vec![0, 1], "too few"),
        (vec![0, 1, 2, 3], "too many"),
    ] {
        let got = linear_attention_cuda_slots(&gpu, &lcfg, &LinearArgs::new(&q, &k, &v), &mut pool, &ids).map(|_| ());
        expect(&format!("slots {what}"), got, Kind::Invalid, "slot_ids");
    }
    let got = linear_attention_cuda_slots(&gpu, &lcfg, &LinearArgs::new(&q, &k, &v).with_initial_state(&s0), &mut pool, &[0, 1, 2]).map(|_| ());
    expect("slots with initial_state", got, Kind::Invalid, "initial_state");
    let mut wrong_pool = StatePool::new(&gpu, 5, h, kd, vd + 1).expect("pool");
    let got = linear_attention_cuda_slots(&gpu, &lcfg, &LinearArgs::new(&q, &k, &v), &mut wrong_pool, &[0, 1, 2]).map(|_| ());
    expect("slots pool of the wrong shape", got, Kind::Shape, "pool.state");
    // Valid: the same call with good slots succeeds.
    linear_attention_cuda_slots(&gpu, &lcfg, &LinearArgs::new(&q, &k, &v), &mut pool, &[4, 0, 2]).expect("valid slots");
}
