//! Hostile inputs: property tests that drive every public validation entry point
//! (`rope::plan_rope`, `attention::plan`, `diff_attention::plan_diff`, `decode::plan`,
//! `linear::plan_linear` / `plan_delta_rule` / `plan_rwkv4`, `decode::merge_states_cpu`) and
//! `case::run` on the CPU with random INVALID arguments, one defect at a time, and check that
//! each call returns `Err` of the right variant naming the right argument, without panicking.
//! A share of the generated calls is left valid and must return `Ok`, so validation that
//! rejects everything would be noticed.
//!
//! One module per op family generates its calls (`attention`, `diff_attention`, `rope`,
//! `decode` with `merge_states`, `linear` with `delta_rule` and `rwkv4`); `spec` is the model of
//! a generated call and runs it through the plan and `case::run`; `rng` draws the random
//! choices; `cases` holds the case-file defects every op shares and checks that valid calls
//! really run; `huge_shapes` drives absurd sizes; `cuda` the CUDA entry points' own checks
//! (on a device only).
//!
//! Shapes are described lazily ([`spec::Fake`] implements `TensorInfo` with any shape), so the
//! huge-size cases cost nothing. Those run in a child process (the test re-executes itself),
//! under this binary's allocator cap (any single allocation over 1 GiB fails, which aborts),
//! so validation that allocates in proportion to an absurd shape shows up as a clear test
//! failure instead of taking the whole suite down.
//!
//! Every property prints its case count; the last one to finish prints the total
//! ("hostile: N cases").

#[path = "../common/mod.rs"]
mod common;

mod attention;
mod cases;
mod cuda;
mod decode;
mod diff_attention;
mod huge_shapes;
mod linear;
mod rng;
mod rope;
mod spec;
mod views;

use proptest::test_runner::{Config as PtConfig, TestRunner};
use rng::R;
use spec::{verify, Expect, Kind, Spec};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
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

/// Property tests in this binary that report a count (the last one prints the total).
const PROPERTIES: usize = 9;
static TOTAL: AtomicUsize = AtomicUsize::new(0);
static DONE: AtomicUsize = AtomicUsize::new(0);

/// Print one property's case count, and the total once all [`PROPERTIES`] have reported.
pub fn finish(name: &str, cases: usize) {
    let total = TOTAL.fetch_add(cases, Ordering::SeqCst) + cases;
    let done = DONE.fetch_add(1, Ordering::SeqCst) + 1;
    let mut err = std::io::stderr();
    let _ = writeln!(err, "hostile: {name}: {cases} cases");
    if done == PROPERTIES {
        let _ = writeln!(err, "hostile: {total} cases");
    }
}

/// A proptest runner of `cases` cases, without persistence or shrinking.
pub fn runner(cases: u32) -> TestRunner {
    // Shrinking a seed only draws other random cases: report the first failure as found.
    TestRunner::new(PtConfig { cases, failure_persistence: None, max_shrink_iters: 0, ..PtConfig::default() })
}

// ----------------------------------------------------------------------------- properties

/// Run `cases` generated calls of one family through [`verify`]; at least 1 in 50 must be valid
/// and half invalid, so a generator that drifts is noticed.
pub fn property(name: &str, cases: u32, gen: fn(&mut R) -> (Spec, Expect)) {
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
