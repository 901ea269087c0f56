//! The model of a generated call ([`Spec`]: op, config, lazily described tensors) and of what it
//! must return ([`Expect`]), and how a call runs: through the op's plan with [`Fake`] tensors,
//! and through `case::run` on the CPU with real ones.

use attn_kernels::attention::{self, AttentionArgs, AttentionConfig};
use attn_kernels::decode::{self, KvCacheRef};
use attn_kernels::diff_attention::{self, DiffAttentionArgs, DiffAttentionConfig};
use attn_kernels::linear::{self, DeltaRuleArgs, DeltaRuleConfig, LinearArgs, LinearAttentionConfig, Rwkv4Args, Rwkv4Config};
use attn_kernels::rope::{self, RopeArgs, RopeOpConfig};
use attn_kernels::{DType, Error, Result, Tensor, TensorInfo};
use attn_kernels_harness::case::{self, parse_config, Case, Device};
use attn_kernels_harness::cases::decode::DecodeCaseConfig;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A lazily described tensor: shape and dtype only. Validation never needs more.
#[derive(Clone, Debug)]
pub struct Fake {
    pub dtype: DType,
    pub shape: Vec<usize>,
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
pub struct Ten {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub ints: Option<Vec<i32>>,
}

/// A tensor of `dtype` and `shape` (no data: the CPU run fills floats with a fixed pattern).
pub fn ft(dtype: DType, shape: &[usize]) -> Ten {
    Ten { dtype, shape: shape.to_vec(), ints: None }
}
/// An i32 vector with its data (cu_seqlens, position ids, cache lengths).
pub fn it(data: Vec<i32>) -> Ten {
    Ten { dtype: DType::I32, shape: vec![data.len()], ints: Some(data) }
}
/// An i32 `[rows, cols]` matrix with its data (block tables, dense position ids).
pub fn it2(rows: usize, cols: usize, data: Vec<i32>) -> Ten {
    Ten { dtype: DType::I32, shape: vec![rows, cols], ints: Some(data) }
}

/// A generated call: the op, its config JSON (without `op`), its tensors, and the pieces only
/// the Rust API can express.
#[derive(Clone, Debug)]
pub struct Spec {
    pub op: &'static str,
    pub config: Value,
    pub tensors: BTreeMap<String, Ten>,
    /// A config float the JSON cannot carry (NaN, inf): applied to the parsed config struct.
    pub rust_float: Option<(&'static str, f64)>,
    /// decode: `max_blocks` passed to the plan instead of the block table's second dim.
    pub plan_max_blocks: Option<usize>,
    /// Only the Rust API can express this call (skip `case::run`).
    pub plan_only: bool,
    /// Only a case file can express this call (skip the plan).
    pub case_only: bool,
    /// Replaces the whole case-file config (for `op` defects).
    pub case_config: Option<Value>,
}

impl Spec {
    pub fn new(op: &'static str, config: Value) -> Spec {
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
    pub fn t(&mut self, name: &str, t: Ten) {
        self.tensors.insert(name.to_string(), t);
    }
    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.tensors[name].shape.clone()
    }
    pub fn set_shape(&mut self, name: &str, shape: Vec<usize>) {
        self.tensors.get_mut(name).expect("tensor exists").shape = shape;
    }
    pub fn set_dtype(&mut self, name: &str, d: DType) {
        self.tensors.get_mut(name).expect("tensor exists").dtype = d;
    }
    pub fn cfg(&mut self, key: &str, v: Value) {
        self.config.as_object_mut().expect("object").insert(key.to_string(), v);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
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
pub struct Expect {
    pub kind: Kind,
    pub args: Vec<&'static str>,
    /// A different expectation for the `case::run` path (the case layer checks index tensor
    /// shapes itself).
    pub case: Option<(Kind, Vec<&'static str>)>,
}

pub fn ex(kind: Kind, arg: &'static str) -> Expect {
    Expect { kind, args: if arg.is_empty() { vec![] } else { vec![arg] }, case: None }
}
pub fn ok() -> Expect {
    ex(Kind::Ok, "")
}

pub fn check(what: &str, spec: &Spec, kind: Kind, args: &[&'static str], got: std::thread::Result<Result<()>>) -> Result<(), TestCaseError> {
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
pub fn verify(spec: &Spec, want: &Expect) -> Result<(), TestCaseError> {
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

pub fn apply_float(name: &str, x: f64, scale: &mut Option<f64>, softcap: Option<&mut f64>, rope: Option<&mut rope::RopeConfig>) {
    match name {
        "softmax_scale" | "scale" => *scale = Some(x),
        "softcap" => *softcap.expect("softcap field") = x,
        "rope.theta" => rope.expect("rope config").theta = x,
        other => panic!("test bug: unknown rust float {other}"),
    }
}

pub fn run_plan(spec: &Spec) -> Result<()> {
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
pub fn real_tensors(spec: &Spec) -> case::Tensors {
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

pub fn run_case_cpu(spec: &Spec) -> Result<()> {
    let config = spec.case_config.clone().unwrap_or_else(|| {
        let mut c = spec.config.clone();
        c.as_object_mut().expect("object").insert("op".into(), json!(spec.op));
        c
    });
    let case = Case { config, inputs: real_tensors(spec) };
    case::run(&case, &Device::Cpu).map(|_| ())
}
