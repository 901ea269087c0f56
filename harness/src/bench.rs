//! Helpers for benchmarks on the GPU: the copy-bandwidth ceiling measured in the same run, and
//! CUDA-event medians. Used by every `benches/*.rs` so the ceilings are measured one way.

use crate::check::median;
use attn_kernels::tensor::DType;
use attn_kernels::{runtime, Gpu, Result};

/// Device-to-device copy bandwidth in GB/s (bytes read + bytes written), over a buffer of
/// `bytes` (use well over the L2 size: 1 GiB), median of `iters` copies after warm-up.
pub fn copy_bandwidth_gbs(gpu: &Gpu, bytes: usize, iters: usize) -> Result<f64> {
    let n = bytes / 4;
    let src = gpu.zeros(DType::F32, &[n])?;
    let mut dst = gpu.alloc(DType::F32, &[n])?;
    let times = gpu.time_ms(3, iters, || gpu.copy(&src, &mut dst))?;
    let ms = median(times.into_iter().map(f64::from).collect());
    Ok(2.0 * (n * 4) as f64 / (ms * 1e-3) / 1e9)
}

/// Median milliseconds of `work` timed with CUDA events after `warmup` runs.
pub fn median_ms(gpu: &Gpu, warmup: usize, iters: usize, work: impl FnMut() -> Result<()>) -> Result<f64> {
    Ok(median(gpu.time_ms(warmup, iters, work)?.into_iter().map(f64::from).collect()))
}

/// The GPU to benchmark on, or `None` after printing why there is none.
pub fn bench_gpu() -> Option<Gpu> {
    if !runtime::kernels_compiled() {
        eprintln!("GPU benches skipped: kernels were not compiled into this build");
        return None;
    }
    match Gpu::first() {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("GPU benches skipped: {e}");
            None
        }
    }
}

/// The device for a GPU test, or `None` after printing why the test is skipped.
///
/// `ATTN_KERNELS_DEVICE=cuda` asks for the GPU, `=emu` for the emulated device; unset, a GPU is
/// used where there is one and the emulated device where this build carries it. The outcome
/// goes straight to the process's stderr (not through libtest's capture), so a skipped GPU test
/// is visible in every test log rather than silently reported as passing, and is appended to
/// the file named by `ATTN_KERNELS_TEST_LOG` (if set) as `ran <test> <device>` or
/// `skipped <test>: <reason>` for CI to count.
pub fn gpu_for_test(test: &str) -> Option<Gpu> {
    use runtime::{driver_present, emu};
    use std::io::Write;
    let real = || -> std::result::Result<Gpu, String> {
        if !runtime::kernels_compiled() {
            return Err("kernels were not compiled into this build".into());
        }
        Gpu::new(0).map_err(|e| e.to_string())
    };
    let outcome = match std::env::var("ATTN_KERNELS_DEVICE").as_deref() {
        Ok("emu") => Gpu::emulated().map_err(|e| e.to_string()),
        Ok("cuda") => real(),
        _ if emu::is_active() => Gpu::emulated().map_err(|e| e.to_string()),
        _ if driver_present() => real(),
        _ if emu::is_built() => Gpu::emulated().map_err(|e| e.to_string()),
        _ => Err(format!(
            "no CUDA driver, and no emulated device in this build ({})",
            emu::EMU_NOT_BUILT_REASON.unwrap_or("?")
        )),
    };
    let line = match &outcome {
        Ok(g) => format!("ran {test} {}", if g.info().emulated { "cuda-emu" } else { "cuda" }),
        Err(why) => format!("skipped {test}: {why}"),
    };
    if outcome.is_err() {
        let _ = writeln!(std::io::stderr(), "skipped GPU test {test}: {}", line.split_once(": ").map_or("", |x| x.1));
    }
    if let Ok(path) = std::env::var("ATTN_KERNELS_TEST_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            // One write per line: tests on parallel threads (and processes) append to the same
            // file, and `writeln!` may split a line over several writes that then interleave.
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
    outcome.ok()
}
