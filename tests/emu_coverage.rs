//! Every `extern "C"` kernel entry point of the build has executed on the emulated device.
//!
//! The emulated driver appends the kernels each process launched to the file named by
//! `ATTN_KERNELS_EMU_COVERAGE` when the process exits. CI sets that variable for the whole GPU
//! test suite and then runs this test (`cargo test --release --test emu_coverage -- --ignored`),
//! which compares the union with the build's list of entry points. It is ignored in a plain
//! `cargo test`, where no coverage file is being collected.

use attn_kernels::runtime::{emu, MODULES};
use std::collections::BTreeMap;

#[test]
#[ignore = "run by CI after the GPU test suite, with ATTN_KERNELS_EMU_COVERAGE set"]
fn every_entry_point_ran_on_the_emulated_device() {
    assert!(emu::is_built(), "the emulated device is not in this build: {:?}", emu::EMU_NOT_BUILT_REASON);
    let path = std::env::var("ATTN_KERNELS_EMU_COVERAGE").expect("ATTN_KERNELS_EMU_COVERAGE names the coverage file");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("coverage file {path}: {e}"));
    let mut launched: BTreeMap<&str, u64> = BTreeMap::new();
    for line in text.lines() {
        let (name, count) = line.split_once(' ').unwrap_or_else(|| panic!("malformed coverage line `{line}`"));
        *launched.entry(name).or_default() += count.parse::<u64>().expect("launch count");
    }
    let all: Vec<&str> = MODULES.iter().flat_map(|m| m.kernels.iter().copied()).collect();
    assert!(!all.is_empty(), "the build lists no kernel entry points");
    let missing: Vec<&str> = all.iter().copied().filter(|k| !launched.contains_key(k)).collect();
    println!("{} of {} entry points launched on the emulated device", all.len() - missing.len(), all.len());
    assert!(missing.is_empty(), "{} entry points never ran on the emulated device: {}", missing.len(), missing.join(", "));
}
