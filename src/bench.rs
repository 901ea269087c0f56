//! Helpers for benchmarks on the GPU: the copy-bandwidth ceiling measured in the same run, and
//! CUDA-event medians. Used by every `benches/*.rs` so the ceilings are measured one way.

use crate::check::median;
use crate::error::Result;
use crate::runtime::Gpu;
use crate::tensor::DType;

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
    if !crate::runtime::kernels_compiled() {
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

/// The GPU for a GPU test, or `None` after printing why the test is skipped. The message goes
/// straight to the process's stderr (not through libtest's capture), so a skipped GPU test is
/// visible in every test log rather than silently reported as passing.
pub fn gpu_for_test(test: &str) -> Option<Gpu> {
    use std::io::Write;
    let reason = if !crate::runtime::kernels_compiled() {
        "kernels were not compiled into this build".to_string()
    } else {
        match Gpu::first() {
            Ok(g) => return Some(g),
            Err(e) => e.to_string(),
        }
    };
    let _ = writeln!(std::io::stderr(), "skipped GPU test {test}: {reason}");
    None
}
