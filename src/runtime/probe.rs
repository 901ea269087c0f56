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
    let words: Vec<i32> = input.iter().map(|&w| w as i32).collect();
    let inp = gpu.upload_i32(&words)?;
    let mut out = gpu.alloc_poisoned(DType::I32, &[out_words.max(1)])?;
    let params = AkProbeParams { in_: inp.kernel_ptr(), out: out.kernel_ptr_mut(), mode, n, mask, width };
    let k = kernel("probe", Key::Probe(probe))?;
    gpu.launch_with(k, (grid.0, 1, 1), (grid.1, 1, 1), 0, &params)?;
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
