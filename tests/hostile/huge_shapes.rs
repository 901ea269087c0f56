//! Huge shapes: sizes whose element or byte counts overflow, for every family, each family in a
//! child process under the binary's allocation cap.

use crate::rng::R;
use crate::spec::{ft, it, verify, Expect, Kind, Spec};
use crate::{finish, runner};
use attn_kernels::DType;
use serde_json::json;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// The test's full name, which the child process is started with (`--exact`).
const TEST_NAME: &str = "huge_shapes::hostile_huge_shapes_rejected_without_allocation";

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
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads", "1"])
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
