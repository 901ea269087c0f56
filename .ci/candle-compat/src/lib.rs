//! Uses one type from each crate, so both compile and link into one crate with one cudarc.

/// The dims of a candle tensor and whether an attn-kernels GPU handle is the emulated device.
pub fn describe(t: &candle_core::Tensor, gpu: Option<&attn_kernels::Gpu>) -> (Vec<usize>, bool) {
    (t.dims().to_vec(), gpu.is_some_and(|g| g.info().emulated))
}
