//! streamcheck, the emulated device's cross-stream ordering checker (docs/emulator.md).
//!
//! The emulated driver runs every operation when it is enqueued, so a program that reads on one
//! stream what another stream wrote, with no event or synchronisation between, works there and
//! races on a GPU. streamcheck keeps CUDA's ordering as vector clocks and reports such an
//! operation: the call fails with a report naming `streamcheck`, both operations and both
//! streams. These tests use the public API (`Gpu::fork` for a second stream, events through
//! cudarc) and a real op (RoPE) on the emulated device only: on a GPU the unordered cases would
//! be real races, not errors.

use attn_kernels::rope::cuda::rope_cuda;
use attn_kernels::rope::{rope_cpu, RopeArgs, RopeConfig, RopeOpConfig};
use attn_kernels::runtime::emu;
use attn_kernels::tensor::{rel_error, DType, Tensor};
use attn_kernels::{DeviceTensor, Gpu};

/// Set in the child process of `env_switch_turns_streamcheck_off`.
const CHILD: &str = "ATTN_KERNELS_EMU_STREAMS_CHILD";

/// The emulated device, or `None` after printing why the test is skipped (the build has no
/// emulator, or ATTN_KERNELS_EMU_CHECKS turned streamcheck off while a finding is expected).
fn emulated(test: &str, needs_streamcheck: bool) -> Option<Gpu> {
    if !emu::is_built() {
        eprintln!("skipped {test}: the emulated device is not built ({})", emu::EMU_NOT_BUILT_REASON.unwrap_or("?"));
        return None;
    }
    let gpu = Gpu::emulated().expect("load the emulated device");
    let settings = emu::describe().unwrap_or_default();
    if needs_streamcheck && std::env::var_os(CHILD).is_none() && !settings.contains("checkers on,") {
        eprintln!("skipped {test}: streamcheck is off in this process ({settings})");
        return None;
    }
    Some(gpu)
}

fn op() -> RopeOpConfig {
    RopeOpConfig { rope: RopeConfig::new(64, 1e4), position_offset: 3 }
}

fn input() -> Tensor {
    let n = 2 * 8 * 2 * 64;
    let v: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
    Tensor::from_f32(DType::F32, &[2, 8, 2, 64], &v).unwrap()
}

fn rope_on(gpu: &Gpu, x: &DeviceTensor) -> attn_kernels::Result<DeviceTensor> {
    rope_cuda(gpu, &op(), &RopeArgs { x, position_ids: None, cu_seqlens: None })
}

/// `y` (downloaded on `gpu`) is RoPE of `input()`.
fn assert_rope_of_input(gpu: &Gpu, y: &DeviceTensor) {
    let x = input();
    let want = rope_cpu(&op(), &RopeArgs { x: &x, position_ids: None, cu_seqlens: None }).unwrap();
    let got = gpu.download(y).expect("download on the stream that wrote it");
    let err = rel_error(&got.to_f64_vec(), &want.to_f64_vec());
    assert!(err <= DType::F32.rel_tolerance(), "rel error {err:e}");
}

fn assert_streamcheck(err: &attn_kernels::Error, what: &[&str]) {
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains("streamcheck"), "not a streamcheck finding: {msg}");
    assert!(msg.contains("with no event or synchronisation between"), "{msg}");
    for w in what {
        assert!(msg.contains(w), "`{w}` missing from: {msg}");
    }
}

#[test]
fn kernel_reading_an_upload_of_another_stream_without_an_event_is_reported() {
    let Some(gpu) = emulated("kernel_reading_an_upload_of_another_stream_without_an_event_is_reported", true) else {
        return;
    };
    let (a, b) = (gpu.fork().unwrap(), gpu.fork().unwrap());
    let x = a.upload(&input()).unwrap();
    let err = rope_on(&b, &x).expect_err("a kernel on B reads A's upload with nothing ordering them");
    assert_streamcheck(
        &err,
        &["kernel ak_rope", "reads the 8192-byte allocation", "last written by cuMemcpyHtoDAsync"],
    );
}

#[test]
fn kernel_after_waiting_for_an_event_is_clean() {
    let Some(gpu) = emulated("kernel_after_waiting_for_an_event_is_clean", false) else { return };
    let (a, b) = (gpu.fork().unwrap(), gpu.fork().unwrap());
    let x = a.upload(&input()).unwrap();
    let ev = a.stream().record_event(None).unwrap();
    b.stream().wait(&ev).unwrap();
    let y = rope_on(&b, &x).expect("ordered by the event");
    assert_rope_of_input(&b, &y);
}

#[test]
fn kernel_after_the_host_synchronised_the_writer_is_clean() {
    let Some(gpu) = emulated("kernel_after_the_host_synchronised_the_writer_is_clean", false) else { return };
    let (a, b) = (gpu.fork().unwrap(), gpu.fork().unwrap());
    let x = a.upload(&input()).unwrap();
    a.synchronize().unwrap();
    let y = rope_on(&b, &x).expect("ordered by the host's cuStreamSynchronize");
    assert_rope_of_input(&b, &y);
}

#[test]
fn same_stream_is_clean() {
    let Some(gpu) = emulated("same_stream_is_clean", false) else { return };
    let a = gpu.fork().unwrap();
    let x = a.upload(&input()).unwrap();
    let y = rope_on(&a, &x).expect("one stream is ordered");
    let y2 = rope_on(&a, &y).expect("reading the kernel's own output on its stream");
    assert_rope_of_input(&a, &y);
    drop(y2);
}

#[test]
fn download_on_another_stream_without_an_event_is_reported() {
    let Some(gpu) = emulated("download_on_another_stream_without_an_event_is_reported", true) else { return };
    let (a, b) = (gpu.fork().unwrap(), gpu.fork().unwrap());
    let x = a.upload(&input()).unwrap();
    let y = rope_on(&a, &x).unwrap();
    let err = b.download(&y).expect_err("B copies out what a kernel on A wrote with nothing ordering them");
    assert_streamcheck(
        &err,
        &["cuMemcpyDtoHAsync", "reads the 8192-byte allocation", "last written by kernel ak_rope"],
    );
    // Ordered by an event, the same copy is clean (and the data right).
    b.stream().wait(&a.stream().record_event(None).unwrap()).unwrap();
    assert_rope_of_input(&b, &y);
}

#[test]
fn a_download_makes_the_host_wait_for_its_stream() {
    // A copy into pageable host memory returns when complete (CUDA's synchronisation rules), so
    // what the host enqueues afterwards on any stream is ordered after the writer's work.
    let Some(gpu) = emulated("a_download_makes_the_host_wait_for_its_stream", false) else { return };
    let (a, b) = (gpu.fork().unwrap(), gpu.fork().unwrap());
    let x = a.upload(&input()).unwrap();
    let y = rope_on(&a, &x).unwrap();
    assert_rope_of_input(&a, &y);
    let z = rope_on(&b, &y).expect("ordered by the host's wait for the download");
    drop(z);
}

#[test]
fn an_unordered_write_is_reported_even_after_a_clean_read() {
    // Waiting on an event recorded before the last write orders only what came before it.
    let Some(gpu) = emulated("an_unordered_write_is_reported_even_after_a_clean_read", true) else { return };
    let (a, b) = (gpu.fork().unwrap(), gpu.fork().unwrap());
    let x = a.upload(&input()).unwrap();
    let early = a.stream().record_event(None).unwrap();
    let y = rope_on(&a, &x).unwrap();
    b.stream().wait(&early).unwrap();
    rope_on(&b, &x).expect("the upload is ordered before B by the event");
    let err = rope_on(&b, &y).expect_err("A's kernel wrote y after the event B waited for");
    assert_streamcheck(&err, &["kernel ak_rope", "last written by kernel ak_rope"]);
}

#[test]
fn env_switch_turns_streamcheck_off() {
    let test = "env_switch_turns_streamcheck_off";
    if std::env::var_os(CHILD).is_some() {
        // The child: ATTN_KERNELS_EMU_CHECKS=-streamcheck, the other checkers still on.
        let Some(gpu) = emulated(test, false) else { return };
        let settings = emu::describe().unwrap_or_default();
        assert!(settings.contains("checkers on except streamcheck"), "{settings}");
        let (a, b) = (gpu.fork().unwrap(), gpu.fork().unwrap());
        let x = a.upload(&input()).unwrap();
        rope_on(&b, &x).expect("streamcheck is off");
        return;
    }
    if emulated(test, false).is_none() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("ATTN_KERNELS_EMU_CHECKS", "-streamcheck")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("1 passed"), "child failed:\n{stdout}\n{stderr}");
}
