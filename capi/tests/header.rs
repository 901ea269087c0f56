//! The checked-in C header equals cbindgen's output for this crate's sources.
//! `AK_CAPI_UPDATE_HEADER=1 cargo test --release -p attn-kernels-capi --test header` rewrites it.

use std::path::Path;

#[test]
fn header_matches_cbindgen_output() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("capi/cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen could not generate the header from capi/src");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).expect("cbindgen wrote UTF-8");

    let path = dir.join("include/attn_kernels.h");
    if std::env::var("AK_CAPI_UPDATE_HEADER").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("write capi/include/attn_kernels.h");
        eprintln!("rewrote {}", path.display());
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != generated {
        let first = checked_in.lines().zip(generated.lines()).position(|(a, b)| a != b).unwrap_or_else(|| checked_in.lines().count().min(generated.lines().count()));
        panic!(
            "capi/include/attn_kernels.h is not cbindgen's output for capi/src (first difference at line {}:\n  checked in: {:?}\n  generated:  {:?}).\n\
             Regenerate it with `AK_CAPI_UPDATE_HEADER=1 cargo test --release -p attn-kernels-capi --test header` and review the diff.",
            first + 1,
            checked_in.lines().nth(first).unwrap_or("<end of file>"),
            generated.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}
