//! `attn-kernels run` against hostile case files, beyond the handful in tests/cli.rs:
//! random garbage, truncation at random offsets, corrupted headers, every required tensor
//! missing, every tensor in a wrong dtype, for a case of every op; absurd declared shapes;
//! unwritable outputs. Each run must end cleanly: exit code 2, a message on stderr starting
//! with `error: `, and neither the output file nor its `.tmp` left behind. Runs whose input
//! happens to stay valid (a corrupted header that still parses) must instead succeed and write
//! a readable output. A process killed by a signal (abort, segfault) always fails the test.
//! Prints the number of runs ("cli_malformed: N runs").

use attn_kernels::{DType, Tensor, TensorInfo};
use attn_kernels_harness::case::{read_case, to_safetensors, write_case, Case};
use attn_kernels_harness::check::Rng;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(input: &Path, output: &Path, device: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attn-kernels"))
        .args(["run", "--input", input.to_str().expect("utf8"), "--output", output.to_str().expect("utf8"), "--device", device])
        .output()
        .expect("spawn attn-kernels")
}

fn tmp_of(output: &Path) -> PathBuf {
    output.with_extension("safetensors.tmp")
}

/// Either a clean failure (the default expectation) or, with `may_succeed`, a clean success.
fn expect_clean(what: &str, out: &Output, output: &Path, may_succeed: bool) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let Some(code) = out.status.code() else {
        panic!("{what}: killed by a signal ({}); stderr: {stderr}", out.status);
    };
    assert!(!tmp_of(output).exists(), "{what}: a temporary file was left behind");
    if code == 0 && may_succeed {
        read_case(output).unwrap_or_else(|e| panic!("{what}: exit 0 but the output is unreadable: {e}"));
        std::fs::remove_file(output).expect("remove output");
        return;
    }
    assert_eq!(code, 2, "{what}: expected exit code 2, got {code}; stderr: {stderr}");
    assert!(stderr.starts_with("error: ") && stderr.trim().len() > "error: ".len(), "{what}: stderr `{stderr}`");
    assert!(!output.exists(), "{what}: an output file was left behind");
}

fn ten(rng: &mut Rng, dt: DType, shape: &[usize]) -> Tensor {
    Tensor::from_f32(dt, shape, &rng.normal_vec(shape.iter().product())).expect("shape")
}
fn ids(shape: &[usize], v: &[i32]) -> Tensor {
    Tensor::from_i32(shape, v).expect("shape")
}

/// A small valid case of every op, and the tensors each requires.
fn bases(rng: &mut Rng) -> Vec<(Case, &'static [&'static str])> {
    let dt = DType::BF16;
    vec![
        (
            Case::new(json!({"op": "rope", "rope": {"rotary_dim": 8}, "position_offset": 5})).with("x", ten(rng, dt, &[2, 3, 2, 8])),
            &["x"],
        ),
        (
            Case::new(json!({"op": "attention", "causal": true}))
                .with("q", ten(rng, dt, &[5, 2, 8]))
                .with("k", ten(rng, dt, &[6, 1, 8]))
                .with("v", ten(rng, dt, &[6, 1, 8]))
                .with("cu_seqlens_q", ids(&[3], &[0, 2, 5]))
                .with("cu_seqlens_k", ids(&[3], &[0, 3, 6]))
                .with("alibi_slopes", Tensor::from_f32(DType::F32, &[2], &[0.25, 0.0625]).expect("shape")),
            &["q", "k", "v"],
        ),
        (
            Case::new(json!({"op": "diff_attention", "lambda_init": 0.2}))
                .with("q", ten(rng, dt, &[1, 3, 4, 8]))
                .with("k", ten(rng, dt, &[1, 4, 2, 8]))
                .with("v", ten(rng, dt, &[1, 4, 1, 16]))
                .with("lambda", Tensor::from_f32(DType::F32, &[2], &[0.3, 0.6]).expect("shape"))
                .with("norm_weight", Tensor::from_f32(DType::F32, &[16], &[1.0; 16]).expect("shape")),
            &["q", "k", "v", "lambda"],
        ),
        (
            Case::new(json!({"op": "decode_attention"}))
                .with("q", ten(rng, dt, &[2, 1, 2, 8]))
                .with("k_cache", ten(rng, dt, &[5, 4, 1, 8]))
                .with("v_cache", ten(rng, dt, &[5, 4, 1, 8]))
                .with("cache_seqlens", ids(&[2], &[6, 3]))
                .with("block_table", ids(&[2, 2], &[4, 0, 2, -1])),
            &["q", "k_cache", "v_cache", "cache_seqlens"],
        ),
        (
            Case::new(json!({"op": "merge_states"}))
                .with("o_a", ten(rng, dt, &[1, 3, 2, 8]))
                .with("o_b", ten(rng, dt, &[1, 3, 2, 8]))
                .with("lse_a", ten(rng, DType::F32, &[1, 2, 3]))
                .with("lse_b", ten(rng, DType::F32, &[1, 2, 3])),
            &["o_a", "o_b", "lse_a", "lse_b"],
        ),
        (
            Case::new(json!({"op": "linear_attention"}))
                .with("q", ten(rng, dt, &[1, 5, 2, 4]))
                .with("k", ten(rng, dt, &[1, 5, 2, 4]))
                .with("v", ten(rng, dt, &[1, 5, 2, 4]))
                .with("g", Tensor::from_f32(DType::F32, &[2], &[-0.5, -0.1]).expect("shape"))
                .with("cu_seqlens", ids(&[3], &[0, 2, 5]))
                .with("initial_state", ten(rng, DType::F32, &[2, 2, 4, 4])),
            &["q", "k", "v"],
        ),
        (
            Case::new(json!({"op": "delta_rule", "scale": 1.0}))
                .with("q", ten(rng, dt, &[1, 3, 1, 4]))
                .with("k", ten(rng, dt, &[1, 3, 1, 4]))
                .with("v", ten(rng, dt, &[1, 3, 1, 4]))
                .with("a", ten(rng, dt, &[1, 3, 1, 4]))
                .with("b", ten(rng, dt, &[1, 3, 1, 4])),
            &["q", "k", "v", "a", "b"],
        ),
        (
            Case::new(json!({"op": "rwkv4"}))
                .with("k", ten(rng, dt, &[1, 3, 4]))
                .with("v", ten(rng, dt, &[1, 3, 4]))
                .with("w", Tensor::from_f32(DType::F32, &[4], &[-1.0; 4]).expect("shape"))
                .with("u", Tensor::from_f32(DType::F32, &[4], &[0.5; 4]).expect("shape")),
            &["k", "v", "w", "u"],
        ),
    ]
}

/// The same values in another dtype that the op cannot take here (floats -> i32, i32 -> f32).
fn wrong_dtype(t: &Tensor) -> Tensor {
    match t.dtype() {
        DType::I32 => Tensor::from_f32(DType::F32, t.shape(), &t.to_f32_vec()).expect("shape"),
        _ => Tensor::from_i32(t.shape(), &t.to_f32_vec().iter().map(|x| *x as i32).collect::<Vec<_>>()).expect("shape"),
    }
}

/// A safetensors file from a raw header (for shapes and offsets the writer would refuse).
fn raw_file(header: &Value, data: &[u8]) -> Vec<u8> {
    let h = header.to_string().into_bytes();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

#[test]
fn malformed_case_files_fail_cleanly_through_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.safetensors");
    let output = dir.path().join("out.safetensors");
    let mut rng = Rng::from_time();
    let seed = rng.seed;
    let mut runs = 0usize;
    let mut go = |what: String, bytes: &[u8], may_succeed: bool| {
        std::fs::write(&input, bytes).expect("write input");
        let out = run(&input, &output, "cpu");
        expect_clean(&format!("{what} (seed {seed})"), &out, &output, may_succeed);
        runs += 1;
    };

    for (base, required) in bases(&mut rng) {
        let op = base.op().expect("op").to_string();
        // The base itself is valid.
        write_case(&input, &base).expect("write");
        let ok = run(&input, &output, "cpu");
        assert!(ok.status.success(), "{op}: the valid base failed: {}", String::from_utf8_lossy(&ok.stderr));
        std::fs::remove_file(&output).expect("output written");
        let good = std::fs::read(&input).expect("read");

        for name in required.iter() {
            let mut c = base.clone();
            c.inputs.remove(*name);
            let meta = HashMap::from([("config".to_string(), c.config.to_string())]);
            go(format!("{op}: missing `{name}`"), &to_safetensors(&c.inputs, meta).expect("serialize"), false);
        }
        for name in base.inputs.keys() {
            let mut c = base.clone();
            let t = wrong_dtype(&c.inputs[name]);
            c.inputs.insert(name.clone(), t);
            let meta = HashMap::from([("config".to_string(), c.config.to_string())]);
            go(format!("{op}: `{name}` in a wrong dtype"), &to_safetensors(&c.inputs, meta).expect("serialize"), false);
        }
        // An unknown tensor, an unknown config key, a config that is not an object.
        let mut c = base.clone();
        c.inputs.insert("bogus".into(), ids(&[1], &[1]));
        let meta = HashMap::from([("config".to_string(), c.config.to_string())]);
        go(format!("{op}: unknown tensor"), &to_safetensors(&c.inputs, meta).expect("serialize"), false);
        let mut cfg = base.config.clone();
        cfg["definitely_not_a_key"] = json!(1);
        let meta = HashMap::from([("config".to_string(), cfg.to_string())]);
        go(format!("{op}: unknown config key"), &to_safetensors(&base.inputs, meta).expect("serialize"), false);
        for bad in ["[1, 2]", "3", "null", "\"attention\"", "", "{\"op\": 7}"] {
            let meta = HashMap::from([("config".to_string(), bad.to_string())]);
            go(format!("{op}: config `{bad}`"), &to_safetensors(&base.inputs, meta).expect("serialize"), false);
        }
        // Truncation anywhere.
        for _ in 0..16 {
            let cut = rng.below(good.len());
            go(format!("{op}: truncated to {cut} of {} bytes", good.len()), &good[..cut], false);
        }
        // Header bytes corrupted: either still a valid case (clean success) or a clean failure.
        let header_len = u64::from_le_bytes(good[..8].try_into().expect("8 bytes")) as usize;
        for _ in 0..10 {
            let mut b = good.clone();
            let at = 8 + rng.below(header_len);
            b[at] = (rng.below(256)) as u8;
            go(format!("{op}: header byte {at} corrupted"), &b, true);
        }
        // The header length field itself corrupted.
        for bad_len in [0u64, 1, 7, header_len as u64 + 1, u64::MAX, u64::MAX / 2, 1 << 40] {
            let mut b = good.clone();
            b[..8].copy_from_slice(&bad_len.to_le_bytes());
            go(format!("{op}: header length {bad_len}"), &b, false);
        }
        // Trailing garbage after the data.
        let mut b = good.clone();
        b.extend((0..rng.below(64) + 1).map(|_| rng.below(256) as u8));
        go(format!("{op}: trailing garbage"), &b, true);
    }

    // Random garbage, with and without a plausible header length.
    for i in 0..40 {
        let n = rng.below(2048);
        let mut b: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
        if i % 2 == 0 && n >= 8 {
            b[..8].copy_from_slice(&((n as u64 - 8) / 2).to_le_bytes());
        }
        go(format!("garbage #{i} ({n} bytes)"), &b, false);
    }
    go("empty file".into(), b"", false);

    // Headers declaring absurd shapes or offsets (the writer would refuse these).
    let cfg = json!({"op": "rope", "rope": {"rotary_dim": 2}}).to_string();
    let big = 1u64 << 40;
    for (shape, offsets, data_len) in [
        (json!([big, big, 1, 2]), json!([0, 16]), 16usize),
        (json!([u64::MAX, 2, 1, 2]), json!([0, 16]), 16),
        (json!([2, 2, 1, 2]), json!([0, u64::MAX]), 16),
        (json!([2, 2, 1, 2]), json!([16, 0]), 16),
        (json!([2, 2, 1, 2]), json!([0, 32]), 16),
        (json!([-1, 2, 1, 2]), json!([0, 16]), 16),
        (json!([2.5, 2, 1, 2]), json!([0, 16]), 16),
    ] {
        let header = json!({"__metadata__": {"config": cfg}, "x": {"dtype": "F32", "shape": shape, "data_offsets": offsets}});
        go(format!("declared shape {shape} offsets {offsets}"), &raw_file(&header, &vec![0u8; data_len]), false);
    }
    for dtype in ["F64", "I64", "U8", "BOOL", "F8_E4M3", "nonsense"] {
        let header = json!({"__metadata__": {"config": cfg}, "x": {"dtype": dtype, "shape": [1, 1, 1, 2], "data_offsets": [0, 16]}});
        go(format!("dtype {dtype}"), &raw_file(&header, &[0u8; 16]), false);
    }

    // Unwritable outputs: a missing directory, a directory.
    write_case(&input, &bases(&mut rng).remove(0).0).expect("write");
    for (what, out_path) in [("missing dir", dir.path().join("no/such/dir/out.safetensors")), ("a directory", dir.path().to_path_buf())] {
        let out = run(&input, &out_path, "cpu");
        assert_eq!(out.status.code(), Some(2), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "), "{what}");
        assert!(!tmp_of(&out_path).exists(), "{what}: a temporary file was left behind");
        runs += 1;
    }
    // --device cuda without a usable GPU: a clean error (skipped when there is one).
    if attn_kernels::Gpu::new(0).is_err() || !attn_kernels::runtime::kernels_compiled() {
        let out = run(&input, &output, "cuda");
        expect_clean("--device cuda without a GPU", &out, &output, false);
        runs += 1;
    }
    let _ = writeln!(std::io::stderr(), "cli_malformed: {runs} runs");
    assert!(runs >= 300, "only {runs} runs");
}

/// A valid file whose q is an empty tensor with a huge batch (`[2^40, 0, 1, 8]`, zero bytes):
/// the CLI must either succeed with empty outputs or fail with a message, never abort.
#[test]
fn empty_tensor_with_huge_batch_does_not_abort() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.safetensors");
    let output = dir.path().join("out.safetensors");
    let big = 1usize << 40;
    let z = |shape: &[usize]| Tensor::zeros(DType::F32, shape).expect("empty tensor");
    let cases = [
        ("attention", Case::new(json!({"op": "attention"})).with("q", z(&[big, 0, 1, 8])).with("k", z(&[big, 0, 1, 8])).with("v", z(&[big, 0, 1, 8]))),
        (
            "linear_attention",
            Case::new(json!({"op": "linear_attention"})).with("q", z(&[big, 0, 1, 4])).with("k", z(&[big, 0, 1, 4])).with("v", z(&[big, 0, 1, 4])),
        ),
        ("rope", Case::new(json!({"op": "rope", "rope": {"rotary_dim": 2}})).with("x", z(&[big, 0, 1, 2]))),
    ];
    let mut failures = Vec::new();
    for (what, case) in cases {
        write_case(&input, &case).expect("write");
        let out = run(&input, &output, "cpu");
        if out.status.code().is_none() {
            failures.push(format!("{what}: killed by {} ({})", out.status, String::from_utf8_lossy(&out.stderr).trim()));
            continue;
        }
        expect_clean(what, &out, &output, true);
    }
    assert!(failures.is_empty(), "the CLI aborted:\n{}", failures.join("\n"));
}
