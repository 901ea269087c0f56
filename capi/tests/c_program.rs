//! Builds `tests/c/attention_test.c` with the system C compiler against this crate's cdylib and
//! the checked-in header, runs it, and requires exit status 0 and the lines of every check.
//!
//! The C compiler is `$CC` or `cc`; without one the test fails (it does not skip): the C ABI is
//! the point of this crate. The device follows the library's GPU tests: `ATTN_KERNELS_DEVICE=emu`
//! or `=cuda` if set, else a GPU when a driver is present, else the emulated device when this
//! build carries it, else the run is skipped with the reason (and `skipped ...` is appended to
//! `$ATTN_KERNELS_TEST_LOG`, as the library's GPU tests do, for CI to count).

use attn_kernels::runtime::{driver_present, emu, kernels_compiled};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const TEST: &str = "c_program::attention_test_c_program";

fn log(line: &str) {
    if let Ok(path) = std::env::var("ATTN_KERNELS_TEST_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

/// The directory holding `libattn_kernels_capi.so` of this build (the test binary's `deps/`).
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    let deps = exe.parent().expect("the test binary's directory").to_path_buf();
    let lib = deps.join(format!("{}attn_kernels_capi{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX));
    assert!(lib.exists(), "{} was not built next to the test binary", lib.display());
    deps
}

/// `ATTN_KERNELS_DEVICE` for the C program, or why it cannot run here.
fn device() -> Result<&'static str, String> {
    match std::env::var("ATTN_KERNELS_DEVICE").as_deref() {
        Ok("emu") => Ok("emu"),
        Ok("cuda") => Ok("cuda"),
        _ if driver_present() && kernels_compiled() => Ok("cuda"),
        _ if emu::is_built() => Ok("emu"),
        _ => Err(format!(
            "no CUDA driver with compiled kernels, and no emulated device in this build ({})",
            emu::EMU_NOT_BUILT_REASON.unwrap_or("?")
        )),
    }
}

fn compile(cc: &str, source: &Path, out: &Path) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let libdir = library_dir();
    let mut cmd = Command::new(cc);
    cmd.args(["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-O1"])
        .arg("-I")
        .arg(dir.join("include"))
        .arg(source)
        .arg("-L")
        .arg(&libdir)
        .arg("-lattn_kernels_capi")
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .arg("-lm")
        .arg("-o")
        .arg(out);
    let output = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run the C compiler `{cc}` ({e}): this test builds a C program against the C ABI and needs one \
             (install gcc or clang, or point $CC at a C compiler)"
        ),
    };
    assert!(
        output.status.success(),
        "`{cmd:?}` failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn attention_test_c_program() {
    let cc = std::env::var("CC").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "cc".into());
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/attention_test.c");
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("attn_kernels_capi_attention_test");
    compile(&cc, &source, &exe);

    let device = match device() {
        Ok(d) => d,
        Err(why) => {
            let _ = writeln!(std::io::stderr(), "skipped GPU test {TEST}: {why}");
            log(&format!("skipped {TEST}: {why}"));
            return;
        }
    };
    let output = Command::new(&exe).env("ATTN_KERNELS_DEVICE", device).output().expect("run the compiled C program");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(output.status.success(), "{} exited with {}:\n{stdout}{stderr}", exe.display(), output.status);

    let device_line = if device == "emu" { "device: emulated" } else { "device: GPU" };
    for needle in [device_line, "ok: attention f16 causal GQA", "output untouched", "attention_test: all checks passed"] {
        assert!(stdout.contains(needle), "the C program's output lacks `{needle}`:\n{stdout}");
    }
    let refused = stdout.lines().filter(|l| l.starts_with("ok: ") && l.ends_with("output untouched")).count();
    assert!(refused >= 12, "expected at least 12 refused-call checks, saw {refused}:\n{stdout}");
    log(&format!("ran {TEST} {}", if device == "emu" { "cuda-emu" } else { "cuda" }));
}
