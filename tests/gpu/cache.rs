//! Device data cached per device (the RoPE tables) and shared by every handle: a handle on
//! another stream (`Gpu::fork`) that takes the table right after it was made waits for its
//! upload. On the emulated device the stream-order checker (streamcheck) turns a missing wait
//! into an error; on a GPU the first stream is kept busy so a missing wait reads the table before
//! it lands.

use super::common::{gpu, randn};
use attn_kernels::rope::cuda::rope_cuda;
use attn_kernels::rope::{rope_cpu, RopeArgs, RopeConfig, RopeOpConfig};
use attn_kernels::tensor::{rel_error, DType};
use attn_kernels_harness::check::Rng;

#[test]
fn a_table_made_on_one_fork_is_ready_on_another() {
    let Some(gpu) = gpu(concat!(module_path!(), "::a_table_made_on_one_fork_is_ready_on_another")) else { return };
    let mut rng = Rng::from_time();
    let (a, b) = (gpu.fork().unwrap(), gpu.fork().unwrap());
    // A theta no other test uses, so this test makes the table.
    let theta = 5000.0 + rng.uniform(0.0, 1000.0) as f64;
    let op = RopeOpConfig { rope: RopeConfig::new(64, theta), position_offset: 0 };
    let fresh = RopeOpConfig { rope: RopeConfig::new(64, theta + 1.0), position_offset: 0 };
    // Stream a: long work first (on a GPU), then the op that makes the table.
    let busy_rows = if gpu.info().emulated { 8 } else { 1 << 16 }; // emulated: a small warm-up
    let busy = a.upload(&randn(&mut rng, DType::F32, &[1, busy_rows, 16, 128])).unwrap();
    let _ = rope_cuda(&a, &fresh, &RopeArgs { x: &busy, position_ids: None, cu_seqlens: None }).unwrap();
    let x = randn(&mut rng, DType::BF16, &[2, 33, 4, 64]);
    let xa = a.upload(&x).unwrap();
    let _made = rope_cuda(&a, &op, &RopeArgs { x: &xa, position_ids: None, cu_seqlens: None }).unwrap();
    // Stream b, at once: takes the cached table.
    let xb = b.upload(&x).unwrap();
    let yb = rope_cuda(&b, &op, &RopeArgs { x: &xb, position_ids: None, cu_seqlens: None })
        .unwrap_or_else(|e| panic!("the second fork's RoPE failed (an unordered read of the table?): {e}"));
    let want = rope_cpu(&op, &RopeArgs { x: &x, position_ids: None, cu_seqlens: None }).unwrap();
    let err = rel_error(&b.download(&yb).unwrap().to_f64_vec(), &want.to_f64_vec());
    assert!(err <= DType::BF16.rel_tolerance(), "rel {err:e} on the second fork, seed {}", rng.seed);
}
