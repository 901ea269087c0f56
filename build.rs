//! Build script: compiles every `kernels/**/*.cu` into a fatbin that the library embeds, and
//! (feature `emulator`) builds the emulated device.
//!
//! Which entry points each module exports is the kernel list, `src/runtime/kernel_list.rs`
//! (included below): from it this script generates, per module, the `extern "C" __global__`
//! entry points (`$OUT_DIR/generated/<module>_entries.cuh`, included at the end of the .cu, with
//! `static_assert`s that the constants the C++ derives equal the list's), the emulated device's
//! registrations, the module manifest, and the Rust dispatch table `$OUT_DIR/kernel_table.rs`
//! (`attn_kernels::runtime::KERNELS`).
//!
//! The Rust view of `kernels/params.h` is the checked-in `src/runtime/params_bindings.rs`; no
//! bindgen runs here. `tests/bindings.rs` proves it equals bindgen's output for the header (and
//! rewrites it with `ATTN_KERNELS_UPDATE_BINDINGS=1` after the header changes).
//!
//! Cargo features read here:
//! - `require-kernels`: a missing or non-running nvcc is a build error (as
//!   `ATTN_KERNELS_REQUIRE_NVCC=1`); without it the build warns and CUDA entry points return
//!   `Error::KernelsNotCompiled`.
//! - `emulator`: build the emulated device; without it the device is not built and
//!   `Gpu::emulated()` returns `Error::EmulatorNotBuilt`.
//!
//! Environment (all optional):
//! - `NVCC`: path of nvcc. Otherwise `$CUDA_HOME/bin/nvcc`, `$CUDA_PATH/bin/nvcc`, `nvcc` on
//!   `PATH`, `/usr/local/cuda/bin/nvcc`, in that order.
//! - `ATTN_KERNELS_CUDA_ARCHS`: comma-separated targets, `sm_XX` for machine code and
//!   `compute_XX` for PTX. Default `sm_80,sm_90a,compute_90`.
//! - `ATTN_KERNELS_SKIP_NVCC=1`: do not compile kernels (CPU-only build; an error with
//!   `require-kernels`).
//! - `ATTN_KERNELS_REQUIRE_NVCC=1`: fail the build when nvcc is missing (CI).
//! - `ATTN_KERNELS_NVCC_FLAGS`: extra flags appended to every nvcc call.
//! - `ATTN_KERNELS_SKIP_EMU=1`: do not build the emulated device (feature `emulator` only).
//! - `ATTN_KERNELS_REQUIRE_EMU=1`: fail the build when the emulated device is not built, also
//!   when the `emulator` feature is off (CI).
//! - `ATTN_KERNELS_EMU_CXX`: the GNU C++ compiler for the emulated device (else `CXX`, `g++`).
//! - `ATTN_KERNELS_CUDA_INCLUDE`: CUDA headers for the emulated device (else nvcc's `../include`).
//!
//! The emulated device (kernels/emu/) is the same `.cu` sources compiled a second time as host
//! C++ with GCC's kernel-address instrumentation in outline mode (every load and store calls the
//! emulator's checkers), linked with the emulator into `libattn_kernels_emu.so`.

use std::collections::hash_map::DefaultHasher;
use std::env;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

const DEFAULT_ARCHS: &str = "sm_80,sm_90a,compute_90";

/// The kernel list (also compiled into the library as `attn_kernels::runtime::kernel_list`).
#[allow(dead_code)]
mod kernel_list {
    include!("src/runtime/kernel_list.rs");
}

fn main() {
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "PATH",
        "ATTN_KERNELS_CUDA_ARCHS",
        "ATTN_KERNELS_SKIP_NVCC",
        "ATTN_KERNELS_REQUIRE_NVCC",
        "ATTN_KERNELS_NVCC_FLAGS",
        "ATTN_KERNELS_SKIP_EMU",
        "ATTN_KERNELS_REQUIRE_EMU",
        "ATTN_KERNELS_EMU_CXX",
        "ATTN_KERNELS_CUDA_INCLUDE",
        "ATTN_KERNELS_BUILD_CACHE",
        "CXX",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=src/runtime/kernel_list.rs");
    let units = kernel_units(&out_dir);
    write_kernel_table(&out_dir, &units);
    compile_kernels(&out_dir, &units);
    let emu = if feature("EMULATOR") {
        build_emulator(&out_dir, &units)
    } else {
        if flag("ATTN_KERNELS_REQUIRE_EMU") {
            panic!("attn-kernels: ATTN_KERNELS_REQUIRE_EMU is set but the `emulator` feature is off");
        }
        Err("the `emulator` feature of attn-kernels is off".into())
    };
    write_emu_manifest(&out_dir, emu);
}

/// Whether cargo feature `name` (upper case, `-` as `_`) of this package is enabled.
fn feature(name: &str) -> bool {
    env::var_os(format!("CARGO_FEATURE_{name}")).is_some()
}

fn flag(name: &str) -> bool {
    matches!(env::var(name).as_deref(), Ok("1") | Ok("true") | Ok("yes"))
}

// ---------------------------------------------------------------------------------------------
// nvcc
// ---------------------------------------------------------------------------------------------

fn find_nvcc() -> Option<PathBuf> {
    if let Ok(p) = env::var("NVCC") {
        if !p.is_empty() {
            return Some(PathBuf::from(p));
        }
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(root) = env::var(var) {
            let p = Path::new(&root).join("bin").join("nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    if let Ok(path) = env::var("PATH") {
        for dir in env::split_paths(&path) {
            let p = dir.join("nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let p = PathBuf::from("/usr/local/cuda/bin/nvcc");
    p.is_file().then_some(p)
}

fn collect(dir: &Path, ext: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, ext, out);
        } else if p.extension().and_then(|e| e.to_str()).is_some_and(|e| ext.contains(&e)) {
            out.push(p);
        }
    }
}

struct KernelUnit {
    module: String,
    source: PathBuf,
    fatbin: PathBuf,
    report: PathBuf,
    /// The generated entry points the source includes at its end.
    entries: PathBuf,
    /// The module's part of the kernel list.
    list: kernel_list::Module,
}

/// Write `text` to `path` unless it already holds exactly that.
fn write_if_changed(path: &Path, text: &str) {
    if fs::read_to_string(path).ok().as_deref() != Some(text) {
        fs::write(path, text).unwrap_or_else(|e| panic!("attn-kernels: cannot write {}: {e}", path.display()));
    }
}

/// One unit per `kernels/**/*.cu`, each with its part of the kernel list, and its generated entry
/// points written to `$OUT_DIR/generated/<module>_entries.cuh`.
fn kernel_units(out_dir: &Path) -> Vec<KernelUnit> {
    let mut sources = Vec::new();
    collect(Path::new("kernels"), &["cu"], &mut sources);
    let mut list = kernel_list::modules();
    let generated = out_dir.join("generated");
    fs::create_dir_all(&generated).expect("create $OUT_DIR/generated");
    let units: Vec<KernelUnit> = sources
        .iter()
        .map(|src| {
            let path = src.to_string_lossy().replace('\\', "/");
            let Some(at) = list.iter().position(|m| m.source == path) else {
                panic!("attn-kernels: {path} is not in the kernel list (src/runtime/kernel_list.rs)");
            };
            let module = list.remove(at);
            let text = fs::read_to_string(src).unwrap_or_default();
            if text.contains("extern \"C\"") {
                panic!(
                    "attn-kernels: {path} declares an `extern \"C\"` function: entry points are generated from the \
                     kernel list (src/runtime/kernel_list.rs)"
                );
            }
            let name = module.name();
            let entries = generated.join(format!("{name}_entries.cuh"));
            write_if_changed(&entries, &entries_cuh(&module));
            KernelUnit {
                fatbin: out_dir.join(format!("{name}.fatbin")),
                report: out_dir.join(format!("{name}.ptxas.txt")),
                entries,
                source: src.clone(),
                list: module,
                module: name,
            }
        })
        .collect();
    if let Some(m) = list.first() {
        panic!("attn-kernels: the kernel list names {}, which does not exist", m.source);
    }
    let mut names = std::collections::HashSet::new();
    let mut keys = std::collections::HashSet::new();
    for i in units.iter().flat_map(|u| &u.list.instances) {
        assert!(names.insert(i.name.clone()), "attn-kernels: kernel list: {} appears twice", i.name);
        assert!(keys.insert(i.key), "attn-kernels: kernel list: key {:?} appears twice", i.key);
    }
    units
}

/// The C++ of one module's entry points: `extern "C" __global__` functions calling the list's
/// bodies, and `static_assert`s of the constants the C++ derives.
fn entries_cuh(m: &kernel_list::Module) -> String {
    let mut s = format!(
        "// @generated by build.rs from src/runtime/kernel_list.rs: the entry points of {}.\n\
         // Included at the end of that file. Do not edit; change the list.\n",
        m.source
    );
    let check = |s: &mut String, what: &str, expr: &str| {
        *s += &format!("static_assert({expr}, \"kernel list (src/runtime/kernel_list.rs): {what}: {expr}\");\n");
    };
    if !m.asserts.is_empty() {
        s += "\n// The family's constants.\n";
        for a in &m.asserts {
            check(&mut s, &m.name(), a);
        }
    }
    for i in &m.instances {
        let bounds = match (i.bounded, i.min_blocks) {
            (false, _) => String::new(),
            (true, 0) => format!("__launch_bounds__({}) ", i.block.iter().product::<u32>()),
            (true, n) => format!("__launch_bounds__({}, {n}) ", i.block.iter().product::<u32>()),
        };
        let grid_constant = if kernel_list::GRID_CONSTANT_PARAMS.contains(&i.params) { "__grid_constant__ " } else { "" };
        s += &format!(
            "\nextern \"C\" __global__ void {bounds}{}(const {grid_constant}{} p) {{ {}; }}\n",
            i.name, i.params, i.body
        );
        for a in &i.asserts {
            check(&mut s, &i.name, a);
        }
    }
    s
}

/// `$OUT_DIR/kernel_table.rs`: one `Kernel` row per entry point, in module order.
fn write_kernel_table(out_dir: &Path, units: &[KernelUnit]) {
    let mut s = String::from(
        "// @generated by build.rs from src/runtime/kernel_list.rs: every entry point and its launch constants.\n\
         pub static KERNELS: &[Kernel] = &[\n",
    );
    for u in units {
        for i in &u.list.instances {
            s += &format!(
                "    Kernel {{ key: Key::{:?}, module: {:?}, name: {:?}, block: {:?}, bounded: {}, min_blocks: {}, \
                 smem_bytes: {}, rows: {}, keys: {} }},\n",
                i.key, u.module, i.name, i.block, i.bounded, i.min_blocks, i.smem_bytes, i.rows, i.keys
            );
        }
    }
    s += "];\n";
    write_if_changed(&out_dir.join("kernel_table.rs"), &s);
}

fn compile_kernels(out_dir: &Path, units: &[KernelUnit]) {
    let archs_var = env::var("ATTN_KERNELS_CUDA_ARCHS").unwrap_or_else(|_| DEFAULT_ARCHS.into());
    let archs: Vec<String> = archs_var.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    let mut deps = Vec::new();
    collect(Path::new("kernels"), &["cuh", "h"], &mut deps);

    let skip_reason: Option<String> = if flag("ATTN_KERNELS_SKIP_NVCC") {
        Some("ATTN_KERNELS_SKIP_NVCC is set".into())
    } else {
        match find_nvcc() {
            None => Some("nvcc not found (set NVCC, CUDA_HOME or PATH)".into()),
            Some(nvcc) => match nvcc_version(&nvcc) {
                Err(e) => Some(format!("nvcc at {} does not run: {e}", nvcc.display())),
                Ok(version) => {
                    build_all(&nvcc, &version, &archs, out_dir, units, &deps);
                    write_manifest(out_dir, units, Some(&version), &archs, None);
                    return;
                }
            },
        }
    };
    let reason = skip_reason.unwrap();
    if flag("ATTN_KERNELS_REQUIRE_NVCC") {
        panic!("attn-kernels: kernels not compiled ({reason}) and ATTN_KERNELS_REQUIRE_NVCC is set");
    }
    if feature("REQUIRE_KERNELS") {
        panic!("attn-kernels: kernels not compiled ({reason}) and the `require-kernels` feature is on");
    }
    println!("cargo:warning=attn-kernels: CUDA kernels were not compiled: {reason}. CUDA entry points will return Error::KernelsNotCompiled.");
    write_manifest(out_dir, units, None, &archs, Some(&reason));
}

fn nvcc_version(nvcc: &Path) -> Result<String, String> {
    let out = Command::new(nvcc).arg("--version").output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().rfind(|l| l.contains("release")).unwrap_or("unknown").trim().to_string())
}

fn nvcc_args(unit: &KernelUnit, archs: &[String], out_dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        // --no-compress: entry-point names stay visible in the fatbin (tests/kernel_list.rs
        // checks them); nvcc compresses large fatbins by default.
        "-fatbin", "--no-compress", "-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo", "-Xptxas", "-v",
        "-Ikernels", "-Xcompiler", "-fPIC",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The generated entry points (`#include "generated/<module>_entries.cuh"`).
    args.push(format!("-I{}", out_dir.display()));
    for a in archs {
        if let Some(n) = a.strip_prefix("sm_") {
            let virt = n.to_string();
            args.push(format!("-gencode=arch=compute_{virt},code=sm_{n}"));
        } else if let Some(n) = a.strip_prefix("compute_") {
            args.push(format!("-gencode=arch=compute_{n},code=compute_{n}"));
        } else {
            panic!("attn-kernels: ATTN_KERNELS_CUDA_ARCHS entry `{a}` is neither sm_XX nor compute_XX");
        }
    }
    if let Ok(extra) = env::var("ATTN_KERNELS_NVCC_FLAGS") {
        args.extend(extra.split_whitespace().map(String::from));
    }
    args.push("-o".into());
    args.push(unit.fatbin.to_string_lossy().into_owned());
    args.push(unit.source.to_string_lossy().into_owned());
    args
}

fn build_all(nvcc: &Path, version: &str, archs: &[String], out_dir: &Path, units: &[KernelUnit], deps: &[PathBuf]) {
    // Every header can reach every kernel; hash them all with each source.
    let mut dep_hasher = DefaultHasher::new();
    for d in deps {
        d.hash(&mut dep_hasher);
        fs::read(d).unwrap_or_default().hash(&mut dep_hasher);
    }
    let dep_hash = dep_hasher.finish();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = units
            .iter()
            .map(|unit| {
                scope.spawn(move || {
                    let args = nvcc_args(unit, archs, out_dir);
                    let mut inputs = DefaultHasher::new();
                    dep_hash.hash(&mut inputs);
                    fs::read(&unit.source).unwrap_or_default().hash(&mut inputs);
                    fs::read(&unit.entries).unwrap_or_default().hash(&mut inputs);
                    version.hash(&mut inputs);
                    // One key for the stamp in this OUT_DIR and the name in the shared cache.
                    let ck = cache_key(out_dir, &args, inputs.finish());
                    let stamp = unit.fatbin.with_extension("stamp");
                    if unit.fatbin.is_file() && fs::read_to_string(&stamp).ok().as_deref() == Some(ck.as_str()) {
                        return None;
                    }
                    let cached = [
                        (format!("{}-{ck}.fatbin", unit.module), unit.fatbin.as_path()),
                        (format!("{}-{ck}.ptxas.txt", unit.module), unit.report.as_path()),
                    ];
                    let cache = build_cache();
                    if cache.as_deref().is_some_and(|c| cache_fetch(c, &cached)) {
                        fs::write(&stamp, &ck).ok();
                        return None;
                    }
                    let out = match Command::new(nvcc).args(&args).output() {
                        Ok(o) => o,
                        Err(e) => return Some(format!("{}: could not run nvcc: {e}", unit.source.display())),
                    };
                    let log = format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    if !out.status.success() {
                        let _ = fs::remove_file(&stamp);
                        return Some(format!("{}:\n{log}", unit.source.display()));
                    }
                    fs::write(&unit.report, &log).ok();
                    if let Some(c) = cache.as_deref() {
                        cache_store(c, &cached);
                    }
                    fs::write(&stamp, &ck).ok();
                    None
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().unwrap()).collect()
    });
    if !failures.is_empty() {
        panic!("attn-kernels: nvcc failed:\n{}", failures.join("\n"));
    }
}

fn write_manifest(out_dir: &Path, units: &[KernelUnit], nvcc: Option<&str>, archs: &[String], skip: Option<&str>) {
    let mut s = String::from("// @generated by build.rs: the embedded kernel modules.\n");
    s += &format!("pub const NVCC_VERSION: Option<&str> = {:?};\n", nvcc);
    s += &format!("pub const CUDA_ARCHS: &[&str] = &{:?};\n", archs);
    s += &format!("pub const NOT_COMPILED_REASON: Option<&str> = {:?};\n", skip);
    s += "pub static MODULES: &[EmbeddedModule] = &[\n";
    for u in units {
        let (fatbin, report) = if skip.is_none() {
            (
                format!("include_bytes!({:?})", u.fatbin.to_string_lossy()),
                format!("include_str!({:?})", u.report.to_string_lossy()),
            )
        } else {
            ("&[]".to_string(), "\"\"".to_string())
        };
        let kernels: Vec<&str> = u.list.instances.iter().map(|i| i.name.as_str()).collect();
        s += &format!(
            "    EmbeddedModule {{ name: {:?}, source: {:?}, kernels: &{:?}, fatbin: {fatbin}, ptxas_report: {report} }},\n",
            u.module,
            u.source.to_string_lossy(),
            kernels
        );
    }
    s += "];\n";
    fs::write(out_dir.join("kernels_manifest.rs"), s).expect("write manifest");
}

// ---------------------------------------------------------------------------------------------
// the emulated device
// ---------------------------------------------------------------------------------------------

/// `ATTN_KERNELS_BUILD_CACHE`: a directory shared by builds in other OUT_DIRs or target
/// directories (clippy's, the tests', another crate's), holding compiled kernel outputs by a key
/// of their inputs with OUT_DIR's path left out, so that a second build copies instead of
/// compiling again. Unset: no cache.
fn build_cache() -> Option<PathBuf> {
    let dir = PathBuf::from(env::var_os("ATTN_KERNELS_BUILD_CACHE").filter(|v| !v.is_empty())?);
    fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

/// The key of a compile for the shared cache: `key_parts` hashed with every mention of OUT_DIR
/// replaced, so the same sources and flags give the same key in every OUT_DIR.
fn cache_key(out_dir: &Path, args: &[String], key_parts: u64) -> String {
    let out = out_dir.to_string_lossy();
    let mut h = DefaultHasher::new();
    key_parts.hash(&mut h);
    for a in args {
        a.replace(out.as_ref(), "<OUT_DIR>").hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// Copy the cached outputs `(cache name, destination)` into place; false when any is missing.
fn cache_fetch(cache: &Path, files: &[(String, &Path)]) -> bool {
    files.iter().all(|(name, _)| cache.join(name).is_file())
        && files.iter().all(|(name, dst)| fs::copy(cache.join(name), dst).is_ok())
}

/// Store outputs in the cache (written under a temporary name, then renamed: builds running at
/// the same time never see a partial file).
fn cache_store(cache: &Path, files: &[(String, &Path)]) {
    for (name, src) in files {
        let tmp = cache.join(format!("{name}.tmp{}", std::process::id()));
        if fs::copy(src, &tmp).is_ok() {
            let _ = fs::rename(&tmp, cache.join(name));
        }
    }
}

/// Hash of a file list's paths and contents.
fn hash_files(files: &[PathBuf], h: &mut DefaultHasher) {
    for f in files {
        f.hash(h);
        fs::read(f).unwrap_or_default().hash(h);
    }
}

fn emu_compiler() -> Result<(PathBuf, String), String> {
    let cxx = env::var("ATTN_KERNELS_EMU_CXX")
        .ok()
        .or_else(|| env::var("CXX").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "g++".into());
    let out = Command::new(&cxx).arg("--version").output().map_err(|e| format!("C++ compiler `{cxx}` does not run: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // GCC's outline kernel-address instrumentation is what the checkers hook; clang spells it
    // differently, so only GCC is accepted.
    if !out.status.success() || text.contains("clang") || !(text.contains("g++") || text.contains("GCC")) {
        return Err(format!("`{cxx}` is not GNU g++ (set ATTN_KERNELS_EMU_CXX)"));
    }
    Ok((PathBuf::from(cxx), text.lines().next().unwrap_or("").to_string()))
}

fn cuda_include_dir() -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match env::var("ATTN_KERNELS_CUDA_INCLUDE") {
        Ok(d) if !d.is_empty() => vec![PathBuf::from(d)],
        _ => find_nvcc()
            .and_then(|n| n.canonicalize().ok())
            .and_then(|n| n.parent().and_then(|b| b.parent()).map(|root| root.join("include")))
            .into_iter()
            .collect(),
    };
    for dir in &candidates {
        if ["cuda.h", "cuda_fp16.h", "cuda_bf16.h", "vector_functions.h"].iter().all(|h| dir.join(h).is_file()) {
            return Ok(dir.clone());
        }
    }
    Err("CUDA headers (cuda.h, cuda_fp16.h, cuda_bf16.h) not found next to nvcc; set ATTN_KERNELS_CUDA_INCLUDE".into())
}

/// Builds `libattn_kernels_emu.so`; returns its path, or why it was not built.
fn build_emulator(out_dir: &Path, units: &[KernelUnit]) -> Result<PathBuf, String> {
    if flag("ATTN_KERNELS_SKIP_EMU") {
        return Err("ATTN_KERNELS_SKIP_EMU is set".into());
    }
    let result = (|| {
        if !cfg!(target_os = "linux") {
            return Err("the emulated device is built on Linux only".to_string());
        }
        let (cxx, version) = emu_compiler()?;
        let include = cuda_include_dir()?;
        build_emulator_with(out_dir, units, &cxx, &version, &include)
    })();
    if let Err(why) = &result {
        if flag("ATTN_KERNELS_REQUIRE_EMU") {
            panic!("attn-kernels: the emulated device was not built ({why}) and ATTN_KERNELS_REQUIRE_EMU is set");
        }
        println!("cargo:warning=attn-kernels: emulated device not built: {why}. GPU tests skip where there is no GPU.");
    }
    result
}

fn build_emulator_with(
    out_dir: &Path,
    units: &[KernelUnit],
    cxx: &Path,
    version: &str,
    include: &Path,
) -> Result<PathBuf, String> {
    let dir = out_dir.join("emu");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let kernels_dir = Path::new("kernels").canonicalize().map_err(|e| e.to_string())?;
    let common: Vec<String> = [
        "-std=c++17", "-O2", "-g1", "-fPIC", "-fvisibility=hidden", "-fno-strict-aliasing", "-fno-plt",
        "-Wall", "-Wno-unused-function", "-Wno-unused-variable", "-Wno-unused-but-set-variable",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("-I{}", kernels_dir.display()),
        format!("-I{}", include.display()),
        // The generated entry points.
        format!("-I{}", out_dir.display()),
    ])
    .collect();
    // Kernel code: every load and store becomes a call into the checkers.
    let instrumented: Vec<String> = [
        "-DAK_EMU", "-include", "emu/cuda_emu.h", "-fsanitize=kernel-address",
        "--param", "asan-instrumentation-with-call-threshold=0", "--param", "asan-stack=0",
        "--param", "asan-globals=0", "-fno-sanitize-address-use-after-scope",
        // Undefined behaviour in kernel code becomes a finding too (handlers in runtime.cpp).
        "-fsanitize=signed-integer-overflow,shift,bounds,integer-divide-by-zero", "-fsanitize-recover=all",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    let mut headers = Vec::new();
    collect(Path::new("kernels"), &["cuh", "h"], &mut headers);
    // What every object depends on besides its arguments (cache_key adds those).
    let mut key = DefaultHasher::new();
    hash_files(&headers, &mut key);
    version.hash(&mut key);
    include.hash(&mut key);
    let key = key.finish();

    // (source, object, instrumented)
    let mut jobs: Vec<(PathBuf, PathBuf, bool)> = Vec::new();
    for u in units {
        let wrapper = dir.join(format!("{}.cpp", u.module));
        let mut text = format!(
            "// @generated by build.rs: the {} kernels for the emulated device.\n#include \"{}\"\n#include \"emu/register.h\"\n",
            u.module,
            kernels_dir.join(u.source.strip_prefix("kernels").unwrap()).display()
        );
        for i in &u.list.instances {
            text += &format!("AK_EMU_KERNEL({:?}, {})\n", u.module, i.name);
        }
        if fs::read_to_string(&wrapper).ok().as_deref() != Some(text.as_str()) {
            fs::write(&wrapper, &text).map_err(|e| e.to_string())?;
        }
        jobs.push((wrapper, dir.join(format!("{}.o", u.module)), true));
    }
    for src in ["kernels/emu/runtime.cpp", "kernels/emu/driver.cpp"] {
        let name = Path::new(src).file_stem().unwrap().to_string_lossy().into_owned();
        jobs.push((PathBuf::from(src).canonicalize().map_err(|e| e.to_string())?, dir.join(format!("emu_{name}.o")), false));
    }
    println!("cargo:rerun-if-changed=kernels/emu");

    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(src, obj, inst)| {
                let (common, instrumented) = (&common, &instrumented);
                scope.spawn(move || -> Option<String> {
                    let mut args: Vec<String> = common.clone();
                    if *inst {
                        args.extend(instrumented.iter().cloned());
                    }
                    args.extend(["-c".into(), src.to_string_lossy().into_owned(), "-o".into(), obj.to_string_lossy().into_owned()]);
                    let mut h = DefaultHasher::new();
                    key.hash(&mut h);
                    fs::read(src).unwrap_or_default().hash(&mut h);
                    if *inst {
                        // The wrapper includes its .cu and that its generated entry points
                        // (headers are in `key`).
                        if let Some(u) = units.iter().find(|u| obj.file_stem().is_some_and(|f| f == u.module.as_str())) {
                            hash_files(&[u.source.clone(), u.entries.clone()], &mut h);
                        }
                    } else {
                        hash_files(&[PathBuf::from("kernels/emu/runtime.cpp"), PathBuf::from("kernels/emu/driver.cpp")], &mut h);
                    }
                    // One key for the stamp in this OUT_DIR and the name in the shared cache.
                    let k = cache_key(out_dir, &args, h.finish());
                    let stamp = obj.with_extension("stamp");
                    if obj.is_file() && fs::read_to_string(&stamp).ok().as_deref() == Some(k.as_str()) {
                        return None;
                    }
                    let name = obj.file_stem().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                    let cached = [(format!("emu-{name}-{k}.o"), obj.as_path())];
                    let cache = build_cache();
                    if cache.as_deref().is_some_and(|c| cache_fetch(c, &cached)) {
                        fs::write(&stamp, k).ok();
                        return None;
                    }
                    match Command::new(cxx).args(&args).output() {
                        Err(e) => Some(format!("{}: {e}", src.display())),
                        Ok(o) if !o.status.success() => {
                            let _ = fs::remove_file(&stamp);
                            Some(format!("{}:\n{}", src.display(), String::from_utf8_lossy(&o.stderr)))
                        }
                        Ok(_) => {
                            if let Some(c) = cache.as_deref() {
                                cache_store(c, &cached);
                            }
                            fs::write(&stamp, k).ok();
                            None
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().unwrap()).collect()
    });
    if !failures.is_empty() {
        // A kernel that does not compile as host C++ is a defect of the kernel or the emulator:
        // fail loudly rather than quietly building without the emulated device.
        panic!("attn-kernels: compiling the emulated device failed:\n{}", failures.join("\n"));
    }
    let lib = dir.join("libattn_kernels_emu.so");
    let mut link: Vec<String> =
        vec!["-shared".into(), "-o".into(), lib.to_string_lossy().into_owned(), "-Wl,-soname,libcuda.so".into(), "-Wl,--no-undefined".into()];
    link.extend(jobs.iter().map(|(_, o, _)| o.to_string_lossy().into_owned()));
    link.extend(["-ldl".into(), "-lpthread".into(), "-lm".into()]);
    let o = Command::new(cxx).args(&link).output().map_err(|e| e.to_string())?;
    if !o.status.success() {
        panic!("attn-kernels: linking the emulated device failed:\n{}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(lib)
}

fn write_emu_manifest(out_dir: &Path, emu: Result<PathBuf, String>) {
    let (lib, why) = match emu {
        Ok(p) => (Some(p.to_string_lossy().into_owned()), None),
        Err(w) => (None, Some(w)),
    };
    let s = format!(
        "// @generated by build.rs: the emulated device library.\npub const EMU_LIBRARY: Option<&str> = {lib:?};\npub const EMU_NOT_BUILT_REASON: Option<&str> = {why:?};\n"
    );
    fs::write(out_dir.join("emu_manifest.rs"), s).expect("write emu manifest");
}
