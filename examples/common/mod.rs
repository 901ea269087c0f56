//! What the examples share: the device to run on and deterministic inputs.

use attn_kernels::Gpu;

/// Device 0 (`ATTN_KERNELS_DEVICE=emu`: the emulated device), or `None` after printing why not.
pub fn device() -> Option<Gpu> {
    match Gpu::first() {
        Ok(gpu) => {
            println!("device: {}", gpu.info().name);
            Some(gpu)
        }
        Err(e) => {
            println!("no device to run on ({e}); set ATTN_KERNELS_DEVICE=emu for the emulated device");
            None
        }
    }
}

/// Deterministic pseudo-random values in [-1, 1) (xorshift; an example needs no RNG crate).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}
