//! Concurrency: many host threads, each on its own stream (`Gpu::fork`), launching
//! different ops at once, every result checked against the CPU; and static checks that the
//! handles and caches engines share between threads are `Send + Sync`.
//!
//! The GPU test uses the realistic shapes of `attn_kernels_harness::check::all_cases()` (every op).

use super::common::gpu;
use attn_kernels::tensor::rel_error;
use attn_kernels_harness::case::{self, Device, Tensors};
use attn_kernels_harness::check;
use std::sync::{Arc, Barrier};

fn assert_send_sync<T: Send + Sync>() {}

/// Compile-time: the types an engine shares across threads are `Send + Sync`.
#[test]
fn shared_types_are_send_and_sync() {
    assert_send_sync::<attn_kernels::Gpu>();
    assert_send_sync::<attn_kernels::DeviceTensor>();
    assert_send_sync::<attn_kernels::Tensor>();
    assert_send_sync::<attn_kernels::Error>();
    assert_send_sync::<attn_kernels_harness::case::Device>();
    assert_send_sync::<attn_kernels_harness::case::Case>();
    // The per-device RoPE table cache entry, handed out as Arc.
    assert_send_sync::<attn_kernels::rope::cuda::DeviceRopeTable>();
    assert_send_sync::<Arc<attn_kernels::rope::cuda::DeviceRopeTable>>();
    // Plans (computed on one thread, launched from another).
    assert_send_sync::<attn_kernels::attention::AttentionPlan>();
    assert_send_sync::<attn_kernels::attention::cuda::AttentionLaunch>();
    assert_send_sync::<attn_kernels::decode::cuda::DecodeLaunch>();
    assert_send_sync::<attn_kernels::diff_attention::cuda::DiffAttentionLaunch>();
    assert_send_sync::<attn_kernels::linear::cuda::SlotsLaunch>();
    assert_send_sync::<attn_kernels::diff_attention::cuda::DiffDecodeLaunch>();
    assert_send_sync::<attn_kernels::rope::cuda::RopeLaunch>();
    assert_send_sync::<attn_kernels::diff_attention::DiffAttentionPlan>();
    assert_send_sync::<attn_kernels::decode::DecodePlan>();
    assert_send_sync::<attn_kernels::linear::LinearPlan>();
    assert_send_sync::<attn_kernels::rope::RopePlan>();
    assert_send_sync::<attn_kernels::linear::cuda::StatePool>();
}

const THREADS: usize = 8;
const ROUNDS: usize = 3;

#[test]
fn many_threads_on_forked_streams_match_the_cpu() {
    let Some(gpu) = gpu(concat!(module_path!(), "::many_threads_on_forked_streams_match_the_cpu")) else { return };
    let (threads, rounds) = if gpu.info().emulated { (2, 1) } else { (THREADS, ROUNDS) }; // emulated: still two streams at once, every op; CPU time
    let cases = check::all_cases();
    // CPU results once per case (the reference every thread's GPU result is held to).
    let cpu: Vec<Tensors> = cases
        .iter()
        .map(|c| case::run(&c.case, &Device::Cpu).unwrap_or_else(|e| panic!("{} {}: CPU: {e}", c.op, c.shape)))
        .collect();
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (gpu, cases, cpu, barrier) = (&gpu, &cases, &cpu, &barrier);
            s.spawn(move || {
                let dev = Device::Cuda(gpu.fork().expect("fork a stream"));
                barrier.wait();
                for round in 0..rounds {
                    // Each thread walks the cases from a different start, so different ops
                    // run at the same time.
                    for i in 0..cases.len() {
                        let idx = (i + t * 3 + round) % cases.len();
                        let c = &cases[idx];
                        let out = case::run(&c.case, &dev)
                            .unwrap_or_else(|e| panic!("thread {t} round {round}: {} {}: {e}", c.op, c.shape));
                        // GPU vs CPU: both within the spec's bound of the oracle, so within twice it of
                        // each other.
                        let bound = 2.0 * c.dtype.rel_tolerance() * c.tol_factor;
                        for (name, want) in &cpu[idx] {
                            let got = out.get(name).unwrap_or_else(|| panic!("{}: output `{name}` missing", c.op));
                            let err = rel_error(&got.to_f64_vec(), &want.to_f64_vec());
                            assert!(
                                err <= bound,
                                "thread {t} round {round}: {} {} `{name}`: GPU vs CPU rel {err:e} > {bound:e}",
                                c.op,
                                c.shape
                            );
                        }
                    }
                }
            });
        }
    });
}
