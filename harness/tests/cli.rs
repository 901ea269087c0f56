//! The command-line tool end to end: `run` on rope case files for every rope_type, both layouts,
//! partial rotary and positions up to 2^20 against a float64 evaluation; `rope-freqs`; `info`;
//! `check`; and malformed case files (clear error, non-zero exit, no output file left behind).

use attn_kernels::tensor::{rel_error, DType, Tensor};
use attn_kernels_harness::case::{read_case, write_case, Case};
use attn_kernels_harness::check::Rng;
use serde_json::json;
use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_attn-kernels"))
}

fn run_case(dir: &Path, case: &Case) -> (std::process::Output, std::path::PathBuf) {
    let input = dir.join("in.safetensors");
    let output = dir.join("out.safetensors");
    let _ = std::fs::remove_file(&output);
    write_case(&input, case).unwrap();
    let out = bin()
        .args(["run", "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap(), "--device", "cpu"])
        .output()
        .unwrap();
    (out, output)
}

/// Float64 RoPE written from the spec's table, independent of the library.
fn rope_f64(x: &[f64], h: usize, d: usize, positions: &[f64], f: &[f64], a: f64, rd: usize, inter: bool) -> Vec<f64> {
    let mut y = x.to_vec();
    for (row, &p) in positions.iter().enumerate() {
        for head in 0..h {
            let o = (row * h + head) * d;
            for (i, fi) in f.iter().enumerate() {
                let (j, k) = if inter { (o + 2 * i, o + 2 * i + 1) } else { (o + i, o + i + rd / 2) };
                let (c, s) = ((p * fi).cos(), (p * fi).sin());
                y[j] = a * (x[j] * c - x[k] * s);
                y[k] = a * (x[k] * c + x[j] * s);
            }
        }
    }
    y
}

#[test]
fn run_rope_case_files_match_f64() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::from_time();
    let (b, s, h, d, rd) = (2usize, 9usize, 3usize, 48usize, 32usize);
    let short: Vec<f64> = (0..rd / 2).map(|i| 1.0 + 0.2 * i as f64).collect();
    let long: Vec<f64> = (0..rd / 2).map(|i| 1.5 + 3.0 * i as f64).collect();
    let scalings = [
        json!(null),
        json!({"rope_type": "linear", "factor": 3.0}),
        json!({"type": "dynamic", "factor": 2.0}),
        json!({"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 1024}),
        json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 1024}),
        json!({"rope_type": "longrope", "short_factor": short, "long_factor": long, "original_max_position_embeddings": 1024}),
    ];
    for scaling in scalings {
        for inter in [false, true] {
            for offset in [0i64, (1 << 20) - s as i64] {
                let rope = json!({"rotary_dim": rd, "theta": 10000.0, "interleaved": inter, "max_position_embeddings": 2048, "scaling": scaling});
                let x = Tensor::from_f32(DType::F32, &[b, s, h, d], &rng.normal_vec(b * s * h * d)).unwrap();
                let case = Case::new(json!({"op": "rope", "rope": rope, "position_offset": offset})).with("x", x.clone());
                let (out, path) = run_case(dir.path(), &case);
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let got = read_case(&path).unwrap();
                assert_eq!(got.config["op"], "rope", "output echoes the config");
                let y = &got.inputs["y"];
                // Frequencies from the CLI's own rope-freqs, cross-checked in tests/rope.rs.
                let n = (offset as usize + s).to_string();
                let freqs = bin().args(["rope-freqs", "--config", &rope.to_string(), "--seq-len", &n]).output().unwrap();
                assert!(freqs.status.success(), "{}", String::from_utf8_lossy(&freqs.stderr));
                let fj: serde_json::Value = serde_json::from_slice(&freqs.stdout).unwrap();
                let f: Vec<f64> = fj["inv_freq"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                let a = fj["attention_factor"].as_f64().unwrap();
                let positions: Vec<f64> = (0..b * s).map(|r| (offset + (r % s) as i64) as f64).collect();
                let want = rope_f64(&x.to_f64_vec(), h, d, &positions, &f, a, rd, inter);
                let err = rel_error(&y.to_f64_vec(), &want);
                assert!(err <= 1e-5, "{scaling} interleaved={inter} offset={offset}: rel {err:e}");
            }
        }
    }
}

#[test]
fn malformed_case_files_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.safetensors");
    let run = |input: &Path| {
        bin().args(["run", "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()]).output().unwrap()
    };
    let x = Tensor::from_f32(DType::F32, &[1, 2, 1, 4], &[0.5; 8]).unwrap();
    let cases: Vec<(&str, Box<dyn Fn(&Path)>)> = vec![
        ("not a file at all", Box::new(|p: &Path| std::fs::write(p, b"hello").unwrap())),
        ("unknown op", Box::new(|p: &Path| write_case(p, &Case::new(json!({"op": "nope"})).with("x", x.clone())).unwrap())),
        ("missing tensor", Box::new(|p: &Path| write_case(p, &Case::new(json!({"op": "rope", "rope": {"rotary_dim": 4}}))).unwrap())),
        ("wrong dtype", Box::new(|p: &Path| {
            write_case(p, &Case::new(json!({"op": "rope", "rope": {"rotary_dim": 4}})).with("x", Tensor::from_i32(&[1, 2, 1, 4], &[1; 8]).unwrap())).unwrap()
        })),
        ("unknown config key", Box::new(|p: &Path| {
            write_case(p, &Case::new(json!({"op": "rope", "rope": {"rotary_dim": 4}, "offset": 3})).with("x", x.clone())).unwrap()
        })),
        ("unexpected tensor", Box::new(|p: &Path| {
            write_case(p, &Case::new(json!({"op": "rope", "rope": {"rotary_dim": 4}})).with("x", x.clone()).with("q", x.clone())).unwrap()
        })),
        ("truncated", Box::new(|p: &Path| {
            write_case(p, &Case::new(json!({"op": "rope", "rope": {"rotary_dim": 4}})).with("x", x.clone())).unwrap();
            let bytes = std::fs::read(p).unwrap();
            std::fs::write(p, &bytes[..bytes.len() - 5]).unwrap();
        })),
        ("config not JSON", Box::new(|p: &Path| {
            let meta = std::collections::HashMap::from([("config".to_string(), "{not json".to_string())]);
            let t = attn_kernels_harness::case::Tensors::from([("x".to_string(), x.clone())]);
            std::fs::write(p, attn_kernels_harness::case::to_safetensors(&t, meta).unwrap()).unwrap();
        })),
        ("no config", Box::new(|p: &Path| {
            let t = attn_kernels_harness::case::Tensors::from([("x".to_string(), x.clone())]);
            std::fs::write(p, attn_kernels_harness::case::to_safetensors(&t, Default::default()).unwrap()).unwrap();
        })),
    ];
    for (what, make) in cases {
        let input = dir.path().join("bad.safetensors");
        make(&input);
        let out = run(&input);
        assert_eq!(out.status.code(), Some(2), "{what}: expected exit code 2");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: "), "{what}: stderr {err}");
        assert!(!output.exists(), "{what}: an output file was left behind");
        assert!(!output.with_extension("safetensors.tmp").exists(), "{what}: a temporary file was left behind");
    }
    let missing = run(&dir.path().join("does-not-exist.safetensors"));
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn info_and_rope_freqs() {
    let out = bin().arg("info").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("kernels:") && text.contains("gpu:") && text.contains("module rope_rope"), "{text}");
    if attn_kernels::runtime::kernels_compiled() {
        assert!(text.contains("ak_rope_bf16") && text.contains("sm_90a"), "{text}");
    }
    let bad = bin().args(["rope-freqs", "--config", "{\"rotary_dim\": 3}"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("rope.rotary_dim"));
}

#[test]
fn check_rope_on_cpu_passes() {
    let out = bin().args(["check", "--device", "cpu", "--op", "rope"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("rope") && text.contains("PASS") && !text.contains("FAIL"), "{text}");
}

/// `--device emu`: the CUDA kernels on the emulated device, labelled `cuda-emu` in the check
/// table and in a case's outputs; `bench` refuses it (its times are not GPU timings). In a build
/// without the emulated device the same commands fail with a message that says how to build it.
#[test]
fn device_emu_in_check_run_and_bench() {
    let dir = tempfile::tempdir().unwrap();
    let check = bin().args(["check", "--device", "emu", "--op", "rope"]).output().unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    let input = dir.path().join("in.safetensors");
    let output = dir.path().join("out.safetensors");
    let mut rng = Rng::from_time();
    let x = Tensor::from_f32(DType::BF16, &[1, 9, 2, 64], &rng.normal_vec(9 * 2 * 64)).unwrap();
    write_case(&input, &Case::new(json!({"op": "rope", "rope": {"rotary_dim": 64}})).with("x", x)).unwrap();
    let run = bin()
        .args(["run", "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap(), "--device", "emu"])
        .output()
        .unwrap();
    let bench = bin().args(["bench", "--input", input.to_str().unwrap(), "--device", "emu"]).output().unwrap();
    assert_eq!(bench.status.code(), Some(2), "bench --device emu must be refused");
    assert!(String::from_utf8_lossy(&bench.stderr).contains("not GPU timings"));
    if !attn_kernels::runtime::emu::is_built() {
        for out in [&check, &run] {
            assert_eq!(out.status.code(), Some(2));
            assert!(String::from_utf8_lossy(&out.stderr).contains("emulated device is not in this build"));
        }
        eprintln!("device_emu_in_check_run_and_bench: the emulated device is not in this build; checked the error only");
        return;
    }
    assert!(check.status.success(), "{text}\n{}", String::from_utf8_lossy(&check.stderr));
    assert!(text.contains("cuda-emu") && text.contains("PASS") && !text.contains("FAIL"), "{text}");
    assert!(text.contains("n/a (emulated)") && !text.contains("GB/s"), "an emulated row must not show throughput:\n{text}");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    // safetensors: an 8-byte little-endian header length, then the JSON header with the metadata.
    let bytes = std::fs::read(&output).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["__metadata__"]["device"].as_str(), Some("cuda-emu"), "{header}");
}
