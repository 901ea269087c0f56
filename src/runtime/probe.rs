//! Conformance probes of the hardware instructions the kernels use: `mma.sync` m16n8k16
//! (f16/bf16), `ldmatrix` (x1/x2/x4, .trans), `shfl.sync`, `vote.sync`, `cp.async` with
//! zero-fill, `ex2.approx.ftz` and the f32 -> f16/bf16 round-to-nearest conversions.
//!
//! Each function runs one small kernel of `kernels/probe/collectives.cu` (one warp) on the given
//! device and returns what every lane got. `tests/emu_fidelity.rs` compares the results with a
//! model of each instruction written from the PTX ISA: on the emulated device that is the test of
//! the emulator, on a GPU the test of the hardware (and of our reading of the ISA).

use super::params::AkProbeParams;
use super::{kernel, Gpu, Key, ProbeKernel};
use crate::error::{Error, Result};
use crate::tensor::DType;

/// Upload 32-bit words as an i32 device buffer, launch the `probe` kernel with one block of `threads`
/// threads (or `blocks` blocks for the elementwise probes), return `out_words` result words.
#[allow(clippy::too_many_arguments)]
fn run(
    gpu: &Gpu,
    probe: ProbeKernel,
    input: &[u32],
    out_words: usize,
    grid: (u32, u32),
    mode: i32,
    n: i32,
    mask: u32,
    width: i32,
) -> Result<Vec<u32>> {
    run_smem(gpu, probe, input, out_words, grid, 0, ProbeArgs { mode, n, mask, width })
}

/// The scalar fields of `AkProbeParams`.
struct ProbeArgs {
    mode: i32,
    n: i32,
    mask: u32,
    width: i32,
}

/// [`run`] with `smem` bytes of dynamic shared memory.
fn run_smem(
    gpu: &Gpu,
    probe: ProbeKernel,
    input: &[u32],
    out_words: usize,
    grid: (u32, u32),
    smem: u32,
    args: ProbeArgs,
) -> Result<Vec<u32>> {
    let ProbeArgs { mode, n, mask, width } = args;
    let words: Vec<i32> = input.iter().map(|&w| w as i32).collect();
    let inp = gpu.upload_i32(&words)?;
    let mut out = gpu.alloc_poisoned(DType::I32, &[out_words.max(1)])?;
    let params = AkProbeParams { in_: inp.kernel_ptr(), out: out.kernel_ptr_mut(), mode, n, mask, width };
    let k = kernel("probe", Key::Probe(probe))?;
    gpu.launch_with(k, (grid.0, 1, 1), (grid.1, 1, 1), smem, &params)?;
    let host = gpu.download(&out)?;
    let got = host.as_i32().ok_or_else(|| Error::invalid("probe output", "not i32"))?;
    Ok(got[..out_words].iter().map(|&w| w as u32).collect())
}

fn one_warp(gpu: &Gpu, probe: ProbeKernel, input: &[u32], out_words: usize, mode: i32) -> Result<Vec<u32>> {
    run(gpu, probe, input, out_words, (1, 32), mode, 0, !0, 32)
}

/// `mma.sync.aligned.m16n8k16.row.col.f32.{f16|bf16}.{f16|bf16}.f32` with per-lane fragments
/// `a` (4 registers of 2 elements), `b` (2 registers) and `c` (4 floats); returns every lane's d.
pub fn mma(gpu: &Gpu, dtype: DType, a: &[[u32; 4]; 32], b: &[[u32; 2]; 32], c: &[[f32; 4]; 32]) -> Result<[[f32; 4]; 32]> {
    let mode = match dtype {
        DType::F16 => 0,
        DType::BF16 => 1,
        _ => return Err(Error::unsupported("dtype", format!("mma probes f16 and bf16, not {dtype}"))),
    };
    let mut input = Vec::with_capacity(320);
    for l in 0..32 {
        input.extend_from_slice(&a[l]);
        input.extend_from_slice(&b[l]);
        input.extend(c[l].iter().map(|x| x.to_bits()));
    }
    let got = one_warp(gpu, ProbeKernel::Mma, &input, 128, mode)?;
    Ok(std::array::from_fn(|l| std::array::from_fn(|i| f32::from_bits(got[4 * l + i]))))
}

/// Rows of the shared-memory image the ldmatrix probe loads from (16 bytes each).
pub const LDMATRIX_ROWS: usize = 64;

/// `ldmatrix.sync.aligned.m8n8.x{num}{.trans}.shared.b16` over a shared-memory image of
/// [`LDMATRIX_ROWS`] rows of 8 16-bit elements; lane `l` gives the address of row `rows[l]`.
/// Returns each lane's 4 registers (those beyond `num` are 0).
pub fn ldmatrix(gpu: &Gpu, num: usize, trans: bool, smem: &[u16; LDMATRIX_ROWS * 8], rows: &[u32; 32]) -> Result<[[u32; 4]; 32]> {
    if !matches!(num, 1 | 2 | 4) {
        return Err(Error::invalid("num", format!("{num}; ldmatrix loads 1, 2 or 4 matrices")));
    }
    if let Some(r) = rows.iter().find(|&&r| r as usize >= LDMATRIX_ROWS) {
        return Err(Error::invalid("rows", format!("row {r} is outside the {LDMATRIX_ROWS}-row image")));
    }
    let mut input: Vec<u32> = smem.chunks_exact(2).map(|p| p[0] as u32 | (p[1] as u32) << 16).collect();
    input.extend_from_slice(rows);
    let got = one_warp(gpu, ProbeKernel::Ldmatrix, &input, 128, num as i32 + if trans { 8 } else { 0 })?;
    Ok(std::array::from_fn(|l| std::array::from_fn(|i| got[4 * l + i])))
}

/// The CUDA warp shuffle intrinsics (all on `shfl.sync.*.b32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shfl {
    /// `__shfl_sync(mask, v, src_lane, width)`
    Idx,
    /// `__shfl_xor_sync(mask, v, lane_mask, width)`
    Xor,
    /// `__shfl_up_sync(mask, v, delta, width)`
    Up,
    /// `__shfl_down_sync(mask, v, delta, width)`
    Down,
}

/// One full-mask shuffle of `values` with per-lane operand `b` at `width` (32, 16, 8 or 4).
pub fn shfl(gpu: &Gpu, kind: Shfl, width: u32, values: &[u32; 32], b: &[u32; 32]) -> Result<[u32; 32]> {
    if !matches!(width, 32 | 16 | 8 | 4) {
        return Err(Error::invalid("width", format!("{width}; the probe takes 32, 16, 8 or 4")));
    }
    let mut input = values.to_vec();
    input.extend_from_slice(b);
    let got = run(gpu, ProbeKernel::Shfl, &input, 32, (1, 32), kind as i32, 0, !0, width as i32)?;
    Ok(std::array::from_fn(|l| got[l]))
}

/// The CUDA vote intrinsics (on `vote.sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    /// `__ballot_sync`
    Ballot,
    /// `__any_sync` (0 or 1)
    Any,
    /// `__all_sync` (0 or 1)
    All,
}

/// What a lane outside the vote's mask reports (it does not vote).
pub const NOT_A_MEMBER: u32 = 0xffff_ffff;

/// One vote over the lanes of `mask` (non-zero); lane `l` votes `preds[l]`. Lanes outside the
/// mask do not execute the vote and report [`NOT_A_MEMBER`].
pub fn vote(gpu: &Gpu, kind: Vote, mask: u32, preds: &[bool; 32]) -> Result<[u32; 32]> {
    if mask == 0 {
        return Err(Error::invalid("mask", "no lane would vote"));
    }
    let input: Vec<u32> = preds.iter().map(|&p| p as u32).collect();
    let got = run(gpu, ProbeKernel::Vote, &input, 32, (1, 32), kind as i32, 0, mask, 32)?;
    Ok(std::array::from_fn(|l| got[l]))
}

fn cp_async_input(src: &[u8; 512], sizes: &[u32; 32]) -> Result<Vec<u32>> {
    if let Some(s) = sizes.iter().find(|&&s| s > 16) {
        return Err(Error::invalid("sizes", format!("src-size {s} exceeds the 16-byte copy")));
    }
    let mut input: Vec<u32> = src.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    input.extend_from_slice(sizes);
    Ok(input)
}

fn bytes16(words: &[u32]) -> [u8; 16] {
    std::array::from_fn(|i| words[i / 4].to_le_bytes()[i % 4])
}

/// `cp.async.cg.shared.global` of 16 bytes per lane: lane `l` copies `src[16 l .. 16 l + 16]`
/// with src-size `sizes[l]` (0..=16) into a shared slot pre-filled with 0xa5, then commit,
/// wait_group 0 and a barrier. Returns, for each lane `l`, the slot of lane `(l + 1) % 32`.
pub fn cp_async(gpu: &Gpu, src: &[u8; 512], sizes: &[u32; 32]) -> Result<[[u8; 16]; 32]> {
    let got = one_warp(gpu, ProbeKernel::CpAsync, &cp_async_input(src, sizes)?, 128, 0)?;
    Ok(std::array::from_fn(|l| bytes16(&got[4 * l..])))
}

/// Two commit groups per lane: slot A gets `src` with src-size `sizes[l]`, slot B (second group)
/// the same source with src-size `16 - sizes[l]`. Slot A of lane `(l + 1) % 32` is read after
/// wait_group 1 + barrier, slot B after wait_group 0 + barrier; returns (A, B) per lane.
pub fn cp_async_two_groups(gpu: &Gpu, src: &[u8; 512], sizes: &[u32; 32]) -> Result<[([u8; 16], [u8; 16]); 32]> {
    let got = one_warp(gpu, ProbeKernel::CpAsync, &cp_async_input(src, sizes)?, 256, 1)?;
    Ok(std::array::from_fn(|l| (bytes16(&got[8 * l..]), bytes16(&got[8 * l + 4..]))))
}

fn elementwise(gpu: &Gpu, probe: ProbeKernel, x: &[f32], out_words: usize, mode: i32) -> Result<Vec<u32>> {
    let n = i32::try_from(x.len()).map_err(|_| Error::invalid("x", "more than i32::MAX elements"))?;
    let input: Vec<u32> = x.iter().map(|v| v.to_bits()).collect();
    let blocks = x.len().div_ceil(256).clamp(1, 64) as u32;
    run(gpu, probe, &input, out_words, (blocks, 256), mode, n, !0, 32)
}

/// `ex2.approx.ftz.f32` of every element.
pub fn ex2_approx_ftz(gpu: &Gpu, x: &[f32]) -> Result<Vec<f32>> {
    Ok(elementwise(gpu, ProbeKernel::Ex2, x, x.len(), 0)?.into_iter().map(f32::from_bits).collect())
}

/// f32 -> 16-bit float conversions (CUDA intrinsics, round to nearest even).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cvt {
    /// `__float2half_rn`, one value per element
    Half,
    /// `__float2bfloat16_rn`
    Bfloat16,
    /// `__floats2half2_rn(x[2i], x[2i+1])`, one 32-bit pair per two elements
    Half2,
    /// `__floats2bfloat162_rn(x[2i], x[2i+1])`
    Bfloat162,
}

/// Convert every element; returns the 16-bit patterns (for the pair forms, the low half of each
/// 32-bit result first, i.e. the bit patterns in memory order).
pub fn convert(gpu: &Gpu, kind: Cvt, x: &[f32]) -> Result<Vec<u16>> {
    if matches!(kind, Cvt::Half2 | Cvt::Bfloat162) && x.len() % 2 != 0 {
        return Err(Error::invalid("x", "the pair conversions take an even number of values"));
    }
    let words = elementwise(gpu, ProbeKernel::Cvt, x, x.len().div_ceil(2), kind as i32)?;
    Ok(words.iter().flat_map(|w| [*w as u16, (*w >> 16) as u16]).take(x.len()).collect())
}

/// Kernels that break the execution rules on purpose (for the emulator's checkers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehave {
    /// Reads a cp.async destination before the wait_group covering it.
    ReadBeforeCpAsyncWait,
    /// One lane exits while the others wait at a full-mask `__syncwarp`.
    LaneSkipsSyncwarp,
    /// A lane reads a shared word another lane of its warp wrote, with no `__syncwarp` between.
    SharedRaceInWarp,
    /// The same with the `__syncwarp`: correct.
    SharedOrderedBySyncwarp,
}

/// Run a [`Misbehave`] kernel; the emulated device answers with an error naming the checker.
pub fn misbehave(gpu: &Gpu, kind: Misbehave) -> Result<()> {
    one_warp(gpu, ProbeKernel::Misbehave, &[1, 2, 3, 4], 32, kind as i32).map(|_| ())
}

// ============================================================================ Hopper (sm_90a)

/// One step of the scripted mbarrier probe (`kernels/probe/hopper.cu`, `mbarrier` mode 0): thread
/// `thread` (of 64) executes `op` on the block's mbarrier while the others wait at a barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MbarOp {
    /// `mbarrier.init` with this expected arrival count.
    Init(u32),
    /// `mbarrier.arrive` with this count; the state token goes to slot `.1` (0..8).
    Arrive(u32, u32),
    /// `mbarrier.arrive.expect_tx` with this tx amount; token to slot `.1`.
    ArriveExpectTx(u32, u32),
    /// `mbarrier.expect_tx`.
    ExpectTx(u32),
    /// `mbarrier.complete_tx`.
    CompleteTx(u32),
    /// `mbarrier.test_wait.parity` (non-blocking): 1 when the phase of this parity has completed.
    TestParity(u32),
    /// `mbarrier.test_wait` on the token of a slot: 1 when its phase has completed.
    TestToken(u32),
    /// `mbarrier.try_wait.parity` in a loop until it succeeds (reports 1).
    WaitParity(u32),
}

/// Threads of the scripted mbarrier probe's block.
pub const MBAR_THREADS: u32 = 64;

/// Run a script of mbarrier operations, `(thread, op)` per step; returns one word per step (the
/// test results, 0 for the other operations).
pub fn mbarrier_script(gpu: &Gpu, steps: &[(u32, MbarOp)]) -> Result<Vec<u32>> {
    if steps.is_empty() || steps.len() > 4096 {
        return Err(Error::invalid("steps", format!("{} steps; the probe takes 1..=4096", steps.len())));
    }
    let mut input = vec![steps.len() as u32];
    for &(thread, op) in steps {
        if thread >= MBAR_THREADS {
            return Err(Error::invalid("steps", format!("thread {thread} is outside the {MBAR_THREADS}-thread block")));
        }
        let (code, arg, slot) = match op {
            MbarOp::Init(c) => (0, c, 0),
            MbarOp::Arrive(c, s) => (1, c, s),
            MbarOp::ArriveExpectTx(tx, s) => (2, tx, s),
            MbarOp::ExpectTx(tx) => (3, tx, 0),
            MbarOp::CompleteTx(tx) => (4, tx, 0),
            MbarOp::TestParity(p) => (5, p & 1, 0),
            MbarOp::TestToken(s) => (6, 0, s),
            MbarOp::WaitParity(p) => (7, p & 1, 0),
        };
        if slot >= 8 {
            return Err(Error::invalid("steps", format!("token slot {slot}; the probe keeps 8")));
        }
        input.extend_from_slice(&[thread, code, arg, slot]);
    }
    run_smem(gpu, ProbeKernel::Mbarrier, &input, steps.len(), (1, MBAR_THREADS), 0, ProbeArgs { mode: 0, n: 0, mask: !0, width: 32 })
}

/// Producer / consumer through one shared slot ordered by two mbarriers (full: 1 arrival, empty:
/// 32): each round, thread 32 writes `rounds[r]` and warp 0 reads it. Returns what each lane read.
pub fn mbarrier_pipeline(gpu: &Gpu, rounds: &[[u32; 32]]) -> Result<Vec<[u32; 32]>> {
    if rounds.is_empty() || rounds.len() > 64 {
        return Err(Error::invalid("rounds", format!("{} rounds; the probe takes 1..=64", rounds.len())));
    }
    let input: Vec<u32> = rounds.iter().flatten().copied().collect();
    let n = rounds.len() as i32;
    let got = run_smem(gpu, ProbeKernel::Mbarrier, &input, input.len(), (1, MBAR_THREADS), 0, ProbeArgs { mode: 1, n, mask: !0, width: 32 })?;
    Ok(got.chunks_exact(32).map(|c| std::array::from_fn(|l| c[l])).collect())
}

/// The wgmma N values the probe instantiates (the nvcc wrappers of kernels/common/hopper_wgmma.cuh).
pub const WGMMA_NS: [usize; 8] = [8, 16, 32, 64, 96, 128, 192, 256];

/// Operand A of a wgmma: this k-step's 4 registers per thread of the warpgroup, or a descriptor.
#[derive(Debug, Clone)]
pub enum WgmmaA {
    /// `[thread][register]`, 128 threads.
    Regs(Vec<[u32; 4]>),
    /// A matrix descriptor (start address relative to the shared image).
    Desc(u64),
}

/// One wgmma probe run: `steps.len()` k-steps (1..=4), each `wgmma.mma_async.m64n{n}k16`
/// accumulating into one accumulator, committed as one group and waited for with wait_group 0.
#[derive(Debug, Clone)]
pub struct WgmmaCall {
    /// N (one of [`WGMMA_NS`]).
    pub n: usize,
    /// F16 or BF16.
    pub dtype: DType,
    /// Per k-step: A, and B's descriptor (start address relative to the image).
    pub steps: Vec<(WgmmaA, u64)>,
    /// scale-d of the first k-step (the others accumulate).
    pub scale_d: bool,
    /// `[thread][register]` accumulator input, 128 x n/2.
    pub c: Vec<f32>,
    /// Shared-memory image (at a 1024-byte aligned shared address), a multiple of 4 bytes.
    pub image: Vec<u8>,
    /// Also return each thread's d[0] read between the commit and the wait.
    pub peek: bool,
    /// imm-trans-a: A (from a descriptor) is MN-major.
    pub trans_a: bool,
    /// imm-trans-b: B is MN-major.
    pub trans_b: bool,
}

/// Run a [`WgmmaCall`] on one warpgroup: returns D (`[thread][register]`, 128 x n/2) and, with
/// `peek`, each thread's d[0] bits before the wait.
pub fn wgmma(gpu: &Gpu, call: &WgmmaCall) -> Result<(Vec<f32>, Option<Vec<u32>>)> {
    let n = call.n;
    if !WGMMA_NS.contains(&n) {
        return Err(Error::invalid("n", format!("{n}; the probe instantiates {WGMMA_NS:?}")));
    }
    let bf16 = match call.dtype {
        DType::F16 => 0,
        DType::BF16 => 1,
        other => return Err(Error::unsupported("dtype", format!("wgmma probes f16 and bf16, not {other}"))),
    };
    let ks = call.steps.len();
    if !(1..=4).contains(&ks) {
        return Err(Error::invalid("steps", format!("{ks} k-steps; the probe takes 1..=4")));
    }
    let a_desc = matches!(call.steps[0].0, WgmmaA::Desc(_));
    if call.steps.iter().any(|(a, _)| matches!(a, WgmmaA::Desc(_)) != a_desc) {
        return Err(Error::invalid("steps", "every k-step takes A from the same place"));
    }
    if call.trans_a && !a_desc {
        return Err(Error::invalid("trans_a", "an A from registers has no transposed form"));
    }
    if call.c.len() != 128 * n / 2 {
        return Err(Error::invalid("c", format!("{} floats; the accumulator has {}", call.c.len(), 128 * n / 2)));
    }
    if call.image.len() % 4 != 0 || call.image.len() > 200 * 1024 {
        return Err(Error::invalid("image", format!("{} bytes; a multiple of 4 up to 200 KiB", call.image.len())));
    }
    let mut input = vec![n as u32, bf16, a_desc as u32, call.scale_d as u32, ks as u32, call.peek as u32, call.image.len() as u32,
        call.trans_a as u32 | (call.trans_b as u32) << 1];
    for (a, b) in &call.steps {
        let da = match a {
            WgmmaA::Desc(d) => *d,
            WgmmaA::Regs(_) => 0,
        };
        input.extend_from_slice(&[da as u32, (da >> 32) as u32, *b as u32, (*b >> 32) as u32]);
    }
    for (a, _) in &call.steps {
        match a {
            WgmmaA::Regs(r) if r.len() == 128 => input.extend(r.iter().flatten()),
            WgmmaA::Regs(r) => return Err(Error::invalid("steps", format!("{} threads of A registers; 128", r.len()))),
            WgmmaA::Desc(_) => input.extend(std::iter::repeat_n(0u32, 512)),
        }
    }
    input.extend(call.c.iter().map(|x| x.to_bits()));
    input.extend(call.image.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
    let out_words = 128 * n / 2 + if call.peek { 128 } else { 0 };
    let smem = call.image.len() as u32 + 1024;
    let got = run_smem(gpu, ProbeKernel::Wgmma, &input, out_words, (1, 128), smem, ProbeArgs { mode: 0, n: 0, mask: !0, width: 32 })?;
    let d = got[..128 * n / 2].iter().map(|&w| f32::from_bits(w)).collect();
    Ok((d, call.peek.then(|| got[128 * n / 2..].to_vec())))
}

/// `elect.sync` over `mask` (non-zero) in one warp: per lane `leader | elected << 8`, or
/// [`NOT_A_MEMBER`] outside the mask.
pub fn elect(gpu: &Gpu, mask: u32) -> Result<[u32; 32]> {
    if mask == 0 {
        return Err(Error::invalid("mask", "no lane would take part"));
    }
    let got = run(gpu, ProbeKernel::HopperMisc, &[0], 32, (1, 32), 0, 0, mask, 0)?;
    Ok(std::array::from_fn(|l| got[l]))
}

/// `stmatrix.sync.aligned.m8n8.x{num}{.trans}.shared.b16` over a shared image of
/// [`LDMATRIX_ROWS`] rows of 8 16-bit elements: lane `l` gives the address of row `rows[l]` and
/// holds `regs[l]` (those beyond `num` unused). Returns the image afterwards.
pub fn stmatrix(
    gpu: &Gpu,
    num: usize,
    trans: bool,
    smem: &[u16; LDMATRIX_ROWS * 8],
    rows: &[u32; 32],
    regs: &[[u32; 4]; 32],
) -> Result<Vec<u16>> {
    if !matches!(num, 1 | 2 | 4) {
        return Err(Error::invalid("num", format!("{num}; stmatrix stores 1, 2 or 4 matrices")));
    }
    if let Some(r) = rows.iter().find(|&&r| r as usize >= LDMATRIX_ROWS) {
        return Err(Error::invalid("rows", format!("row {r} is outside the {LDMATRIX_ROWS}-row image")));
    }
    let mut input: Vec<u32> = smem.chunks_exact(2).map(|p| p[0] as u32 | (p[1] as u32) << 16).collect();
    input.extend_from_slice(rows);
    input.extend(regs.iter().flatten());
    let got = run(gpu, ProbeKernel::HopperMisc, &input, 256, (1, 32), 1, num as i32, !0, trans as i32)?;
    Ok(got.iter().flat_map(|w| [*w as u16, (*w >> 16) as u16]).collect())
}

/// Two warpgroups exchange `values` through shared memory ordered only by named barriers
/// (`bar.arrive` / `bar.sync` 1 and 2, 256 threads), after `setmaxnreg.dec 40` / `.inc 232`.
/// Returns, for thread t < 128, what thread t + 128 wrote, and for t >= 128, what t - 128 wrote.
pub fn named_barriers(gpu: &Gpu, values: &[u32; 256]) -> Result<[u32; 256]> {
    let got = run(gpu, ProbeKernel::HopperMisc, values, 256, (1, 256), 2, 0, !0, 0)?;
    Ok(std::array::from_fn(|t| got[t]))
}

/// Misuses of the Hopper instructions, each for one checker of the emulated device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopperMisbehave {
    /// `mbarrier.try_wait` on an mbarrier no thread initialised.
    WaitUninitialisedMbarrier,
    /// A phase that can never complete (count 2, one arrival) waited for: a deadlock.
    PhaseNeverCompletes,
    /// `mbarrier.complete_tx` beyond the tx-count range.
    TxCountUnderflow,
    /// An accumulator register written between `wgmma.mma_async` and its `wait_group`.
    AccumulatorWrittenBeforeWait,
    /// A wgmma group never waited for before the threads exit.
    GroupNeverWaited,
    /// Shared memory a pending wgmma reads written before the wait.
    OperandWrittenBeforeWait,
    /// `wgmma.mma_async` without `wgmma.fence`.
    MissingFence,
    /// `setmaxnreg` with counts that differ within the warpgroup.
    SetmaxnregNotUniform,
    /// The same wgmma sequence used correctly.
    Correct,
    /// Two warpgroups: the second overwrites an operand of the first one's wgmma, ordered after
    /// the issue (an mbarrier arrival before the `wait_group`) but not after the read.
    OperandOverwrittenAfterIssue,
    /// The same with the arrival after the `wait_group`: ordered, runs clean.
    OperandOverwrittenAfterWait,
    /// A register of the A fragment written between `wgmma.mma_async` and its `wait_group`.
    ARegisterWrittenBeforeWait,
    /// Two warpgroups: all 128 threads of the first read a shared word and then arrive on an
    /// mbarrier, whose phase a thread of the second waits for before overwriting the word: each
    /// read is ordered before the write (runs clean).
    ManyReadsThenOrderedWrite,
    /// The same with the arrivals before the reads: the write races with them.
    ManyReadsThenUnorderedWrite,
    /// [`HopperMisbehave::Correct`] without the `fence.proxy.async` between the operand's
    /// generic-proxy writes and the wgmma (async proxy) that reads them.
    OperandNotProxyFenced,
    /// Two warpgroups, one barrier epoch: 8 KB read by the second twice, each word by another
    /// thread the second time, and rewritten by a thread of the first after each round (ordered
    /// by mbarriers): clean (the emulated device forgets a byte's readers at an ordered write;
    /// two readers for each of 8192 bytes would outgrow its per-reader lists).
    ReadersForgottenAtEachWrite,
}

/// Run a [`HopperMisbehave`] kernel (one warpgroup, two for the overwrite and many-reader
/// cases); the emulated device answers with an error naming the checker.
pub fn hopper_misbehave(gpu: &Gpu, kind: HopperMisbehave) -> Result<()> {
    let zeros = vec![0u32; 512];
    let threads = match kind {
        HopperMisbehave::OperandOverwrittenAfterIssue
        | HopperMisbehave::OperandOverwrittenAfterWait
        | HopperMisbehave::ManyReadsThenOrderedWrite
        | HopperMisbehave::ManyReadsThenUnorderedWrite
        | HopperMisbehave::ReadersForgottenAtEachWrite => 256,
        _ => 128,
    };
    let image = if kind == HopperMisbehave::ReadersForgottenAtEachWrite { 8192 } else { 2048 };
    run_smem(gpu, ProbeKernel::HopperMisbehave, &zeros, 128, (1, threads), image + 1024, ProbeArgs { mode: kind as i32, n: 0, mask: !0, width: 32 })
        .map(|_| ())
}

pub use super::tma::TmaSwizzle;

/// A tiled tensor copy (`cp.async.bulk.tensor.{rank}d ... .tile.mbarrier::complete_tx::bytes`)
/// through a tensor map made by `cuTensorMapEncodeTiled` over `data`.
#[derive(Debug, Clone)]
pub struct TmaCall {
    /// Element type: F32, F16 or BF16.
    pub dtype: DType,
    /// Elements per dimension, innermost first (rank 1..=5).
    pub dims: Vec<u64>,
    /// Bytes between steps of dimensions 1.. (rank - 1 values, multiples of 16).
    pub strides: Vec<u64>,
    /// The box, elements per dimension.
    pub box_dim: Vec<u32>,
    /// Traversal strides per dimension (the first is ignored).
    pub element_strides: Vec<u32>,
    /// Shared-memory swizzle of the box.
    pub swizzle: TmaSwizzle,
    /// Element coordinates of the box's first element (may be negative or past the end).
    pub coords: Vec<i32>,
    /// The tensor's bytes (from the tensor's start).
    pub data: Vec<u8>,
}

/// Run a [`TmaCall`] (one block of 128 threads; the box lands at a 1024-byte aligned shared
/// address) and return the box's bytes as they are in shared memory.
pub fn tma_load(gpu: &Gpu, call: &TmaCall) -> Result<Vec<u8>> {
    tma_run(gpu, call, 0)
}

/// [`tma_load`] into a box the threads first wrote through the generic proxy, with
/// (`fenced`) or without a `fence.proxy.async` before the `__syncthreads` that orders those
/// writes before the copy. Without it the emulated device reports the copy's write.
pub fn tma_load_over_generic_writes(gpu: &Gpu, call: &TmaCall, fenced: bool) -> Result<Vec<u8>> {
    tma_run(gpu, call, if fenced { 3 } else { 2 })
}

/// [`tma_load`] misused on purpose (for the emulated device's racecheck): the copy is issued
/// but its mbarrier phase never completes, and every thread reads the box after a
/// `__syncthreads` without waiting on the mbarrier.
pub fn tma_read_without_wait(gpu: &Gpu, call: &TmaCall) -> Result<Vec<u8>> {
    tma_run(gpu, call, 1)
}

fn tma_run(gpu: &Gpu, call: &TmaCall, mode: i32) -> Result<Vec<u8>> {
    let rank = call.dims.len();
    if !(1..=5).contains(&rank)
        || call.strides.len() + 1 != rank
        || call.box_dim.len() != rank
        || call.element_strides.len() != rank
        || call.coords.len() != rank
    {
        return Err(Error::invalid("call", format!("rank {rank} with mismatched strides, box, element strides or coords")));
    }
    let esize: u64 = match call.dtype {
        DType::F32 => 4,
        DType::F16 | DType::BF16 => 2,
        other => return Err(Error::unsupported("dtype", format!("the TMA probe takes f32, f16 or bf16, not {other}"))),
    };
    let elems: u64 = call
        .box_dim
        .iter()
        .zip(&call.element_strides)
        .enumerate()
        .map(|(i, (&b, &s))| if i == 0 { b as u64 } else { (b as u64).div_ceil(s.max(1) as u64) })
        .product();
    let bytes = elems * esize;
    if bytes == 0 || bytes % 4 != 0 || bytes > 200 * 1024 {
        return Err(Error::invalid("box_dim", format!("a box of {bytes} bytes; the probe takes 4..=200 KiB in words")));
    }
    let mut words: Vec<i32> = call.data.chunks(4).map(|c| {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        i32::from_le_bytes(w)
    }).collect();
    if words.is_empty() {
        words.push(0);
    }
    let data = gpu.upload_i32(&words)?;
    let map = super::tma::encode_tiled(
        call.dtype,
        data.kernel_ptr(),
        &call.dims,
        &call.strides,
        &call.box_dim,
        &call.element_strides,
        call.swizzle,
    )?;
    let mut input: Vec<u32> = map.opaque.iter().flat_map(|w| [*w as u32, (*w >> 32) as u32]).collect();
    input.push(rank as u32);
    input.extend((0..5).map(|i| call.coords.get(i).copied().unwrap_or(0) as u32));
    input.push(bytes as u32);
    let out_words = (bytes / 4) as usize;
    let got = run_smem(gpu, ProbeKernel::Tma, &input, out_words, (1, 128), bytes as u32 + 1024, ProbeArgs { mode, n: 0, mask: !0, width: 32 })?;
    drop(data);
    Ok(got.iter().flat_map(|w| w.to_le_bytes()).collect())
}
