//! Every entry point of the kernel list resolves on the device: its module loads and
//! `cuModuleGetFunction` finds the generated name (on the emulated device: its registration).

use super::common::gpu;
use attn_kernels::runtime::KERNELS;

#[test]
fn every_entry_point_of_the_list_resolves_on_the_device() {
    let Some(gpu) = gpu("kernel_list::every_entry_point_of_the_list_resolves_on_the_device") else { return };
    for k in KERNELS {
        gpu.preload(k).unwrap_or_else(|e| panic!("{}::{}: {e}", k.module, k.name));
    }
}
