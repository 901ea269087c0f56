//! `attn-kernels check`: every implemented op at a realistic shape on the best device present,
//! compared with a reference, printed as one table.
//!
//! On a GPU the CUDA result is compared with the CPU reference; on a CPU-only machine the CPU
//! reference is compared with the family's naive float64 oracle (the library's `oracle` feature).
//! Each family contributes its cases through a `check_cases()` function in [`crate::cases`],
//! listed in [`all_cases`].

use crate::case::{self, Case, Device, Tensors};
use attn_kernels::tensor::{rel_error, DType};
use attn_kernels::Result;
use std::collections::BTreeMap;
use std::time::Instant;

/// What one run of a case costs, for the throughput column.
#[derive(Clone, Copy, Debug)]
pub enum Work {
    /// Floating-point operations (reported as TFLOP/s).
    Flops(f64),
    /// Bytes that must move through memory (reported as GB/s).
    Bytes(f64),
}

/// Float64 results of the oracle, by output name.
pub type Reference = BTreeMap<String, Vec<f64>>;

/// One row of the check table.
pub struct CheckCase {
    pub op: &'static str,
    pub shape: String,
    pub dtype: DType,
    pub case: Case,
    pub work: Work,
    /// The spec's bound is `dtype.rel_tolerance() * tol_factor` (2 for diff_attention).
    pub tol_factor: f64,
    /// The naive float64 evaluation of the spec for this case.
    pub oracle: fn(&Case) -> Result<Reference>,
}

/// Result of one row.
pub struct CheckRow {
    pub op: &'static str,
    pub shape: String,
    pub dtype: DType,
    pub device: String,
    pub millis: f64,
    pub throughput: String,
    pub rel_error: f64,
    pub bound: f64,
    pub passed: bool,
    pub note: String,
}

/// Every family's check cases.
pub fn all_cases() -> Vec<CheckCase> {
    let mut v = Vec::new();
    v.extend(crate::cases::rope::check_cases());
    v.extend(crate::cases::attention::check_cases());
    v.extend(crate::cases::diff_attention::check_cases());
    v.extend(crate::cases::linear::check_cases());
    v.extend(crate::cases::decode::check_cases());
    v
}

fn worst_error(out: &Tensors, reference: &Reference) -> (f64, String) {
    let mut worst = 0.0f64;
    let mut note = String::new();
    for (name, r) in reference {
        match out.get(name) {
            None => return (f64::INFINITY, format!("output `{name}` missing")),
            Some(t) => {
                let e = rel_error(&t.to_f64_vec(), r);
                if e > worst || e.is_nan() {
                    worst = e;
                    note = format!("worst: {name}");
                }
            }
        }
    }
    (worst, note)
}

fn to_reference(t: &Tensors) -> Reference {
    t.iter().map(|(k, v)| (k.clone(), v.to_f64_vec())).collect()
}

fn throughput(work: Work, millis: f64) -> String {
    match work {
        Work::Flops(f) => format!("{:.3} TFLOP/s", f / (millis * 1e-3) / 1e12),
        Work::Bytes(b) => format!("{:.1} GB/s", b / (millis * 1e-3) / 1e9),
    }
}

/// Run one case on `device` and compare.
pub fn run_one(c: &CheckCase, device: &Device) -> CheckRow {
    let bound = c.dtype.rel_tolerance() * c.tol_factor;
    let mut row = CheckRow {
        op: c.op,
        shape: c.shape.clone(),
        dtype: c.dtype,
        device: device.name(),
        millis: f64::NAN,
        throughput: "-".into(),
        rel_error: f64::NAN,
        bound,
        passed: false,
        note: String::new(),
    };
    let result = (|| -> Result<(f64, Tensors, Reference)> {
        match device {
            Device::Cuda(gpu) if gpu.info().emulated => {
                // Emulated: one run, for correctness; its CPU time is shown but not timed further.
                let t0 = Instant::now();
                let out = case::run(&c.case, device)?;
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                Ok((ms, out, to_reference(&case::run(&c.case, &Device::Cpu)?)))
            }
            Device::Cuda(gpu) => {
                let mut out = case::run(&c.case, device)?; // warm-up: module load, tables
                let times = gpu.time_ms(1, 5, || {
                    out = case::run(&c.case, device)?;
                    Ok(())
                })?;
                let reference = to_reference(&case::run(&c.case, &Device::Cpu)?);
                Ok((median(times.iter().map(|&t| t as f64).collect()), out, reference))
            }
            Device::Cpu => {
                let t0 = Instant::now();
                let out = case::run(&c.case, device)?;
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                Ok((ms, out, (c.oracle)(&c.case)?))
            }
        }
    })();
    match result {
        Ok((ms, out, reference)) => {
            let (err, note) = worst_error(&out, &reference);
            row.millis = ms;
            // An emulated run's time is CPU time: no throughput is derived from it.
            let emulated = device.gpu().is_some_and(|g| g.info().emulated);
            row.throughput = if emulated { "n/a (emulated)".into() } else { throughput(c.work, ms) };
            row.rel_error = err;
            row.passed = err <= bound;
            row.note = note;
        }
        Err(e) => row.note = e.to_string(),
    }
    row
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Format rows as a fixed-width table.
pub fn format_table(rows: &[CheckRow]) -> String {
    let mut s = format!(
        "{:<16} {:<34} {:<5} {:<28} {:>10} {:>16} {:>10} {:>9} {:<6} {}\n",
        "op", "shape", "dtype", "device", "time ms", "throughput", "rel err", "bound", "result", "note"
    );
    for r in rows {
        s += &format!(
            "{:<16} {:<34} {:<5} {:<28} {:>10.3} {:>16} {:>10.2e} {:>9.1e} {:<6} {}\n",
            r.op,
            r.shape,
            r.dtype.name(),
            r.device,
            r.millis,
            r.throughput,
            r.rel_error,
            r.bound,
            if r.passed { "PASS" } else { "FAIL" },
            r.note
        );
    }
    s
}

/// Random inputs for check cases and tests: fresh per run (seeded from the clock unless a seed
/// is given), normal values, never all zeros.
pub struct Rng {
    inner: rand::rngs::StdRng,
    pub seed: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        use rand::SeedableRng;
        Rng { inner: rand::rngs::StdRng::seed_from_u64(seed), seed }
    }
    /// Seeded from the clock, or from `ATTN_KERNELS_SEED` when set (to replay a failure).
    pub fn from_time() -> Rng {
        let seed = std::env::var("ATTN_KERNELS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        });
        Rng::new(seed)
    }
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        use rand::Rng as _;
        self.inner.gen_range(lo..hi)
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        use rand::Rng as _;
        let u1: f64 = self.inner.gen_range(f64::MIN_POSITIVE..1.0);
        let u2: f64 = self.inner.gen();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
    pub fn uniform_vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        use rand::Rng as _;
        self.inner.gen_range(0..n.max(1))
    }
}
