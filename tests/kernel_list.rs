//! The kernel list (`src/runtime/kernel_list.rs`) against the build: every row of the generated
//! table names a module of the build that exports it, the compiled fatbin carries the entry point
//! for every architecture, and the launch constants are ones a GPU can launch.
//!
//! That the C++ constants equal the list's is proved at compile time (the generated
//! `static_assert`s); that every entry point resolves on a device is `tests/gpu/kernel_list.rs`.

use attn_kernels::runtime::{kernels_compiled, Key, CUDA_ARCHS, KERNELS, MODULES, NOT_COMPILED_REASON};
use std::collections::HashSet;

#[test]
fn every_row_is_exported_by_its_module_and_nothing_else_is() {
    let mut rows = HashSet::new();
    for k in KERNELS {
        assert!(rows.insert(k.name), "{} appears twice in the table", k.name);
        let m = MODULES
            .iter()
            .find(|m| m.name == k.module)
            .unwrap_or_else(|| panic!("{}: no module {} in the build", k.name, k.module));
        assert!(m.kernels.contains(&k.name), "module {} does not export {}", m.name, k.name);
        assert!(k.name.starts_with("ak_"), "{}: entry points are named ak_*", k.name);
    }
    let exported: usize = MODULES.iter().map(|m| m.kernels.len()).sum();
    assert_eq!(exported, KERNELS.len(), "a module exports an entry point the table lacks");
    let keys: HashSet<Key> = KERNELS.iter().map(|k| k.key).collect();
    assert_eq!(keys.len(), KERNELS.len(), "two rows share a key");
}

#[test]
fn launch_constants_are_launchable() {
    for k in KERNELS {
        let threads = k.threads();
        assert!((32..=1024).contains(&threads) && threads % 32 == 0, "{k:?}: block of {threads} threads");
        // H100's opt-in limit per block (227 KiB); the smaller A100 limit is each family's test.
        assert!(k.smem_bytes <= 227 * 1024, "{k:?}");
        if matches!(k.key, Key::Probe(_)) {
            assert!(!k.bounded, "{k:?}: probes take the caller's block");
        } else {
            assert!(k.bounded, "{k:?}: every op kernel carries __launch_bounds__");
            assert!(k.rows >= 1, "{k:?}: rows per block");
        }
    }
}

/// The fatbin of each module holds every entry point (its name is in the ELF string table of the
/// cubins), and ptxas compiled each for every real architecture of the build.
#[test]
fn the_fatbins_carry_every_entry_point() {
    if !kernels_compiled() {
        // The check needs the compiled kernels; the table checks above ran regardless.
        eprintln!("kernels not compiled ({}): fatbin contents not checked", NOT_COMPILED_REASON.unwrap_or("?"));
        assert!(MODULES.iter().all(|m| m.fatbin.is_empty()));
        return;
    }
    let archs: Vec<&str> = CUDA_ARCHS.iter().copied().filter(|a| a.starts_with("sm_")).collect();
    assert!(!archs.is_empty(), "no real architecture in {CUDA_ARCHS:?}");
    for k in KERNELS {
        let m = MODULES.iter().find(|m| m.name == k.module).unwrap();
        let mut needle = k.name.as_bytes().to_vec();
        needle.push(0);
        let found = m.fatbin.windows(needle.len()).enumerate().any(|(i, w)| {
            w == needle.as_slice()
                && (i == 0 || !(m.fatbin[i - 1].is_ascii_alphanumeric() || m.fatbin[i - 1] == b'_'))
        });
        assert!(found, "{}: not in the fatbin of {}", k.name, m.name);
        for arch in &archs {
            let line = format!("Compiling entry function '{}' for '{arch}'", k.name);
            assert!(m.ptxas_report.contains(&line), "{}: ptxas did not compile it for {arch}", k.name);
        }
    }
}
