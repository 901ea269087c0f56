//! An engine that owns its memory and its stream, and lends both: its fused QKV projection
//! output (one `[tokens, (Hq + 2 Hkv) D]` buffer of packed sequences) is read in place through
//! strided views, attention writes straight into the engine's output buffer, and the kernel is
//! enqueued on the engine's stream, ordered with the engine's own work: no copy, no allocation,
//! no synchronisation by the library.
//!
//!     cargo run --release --example borrowed_buffers                          # a GPU
//!     ATTN_KERNELS_DEVICE=emu cargo run --release --example borrowed_buffers  # the emulated device
//!
//! The result is checked against the CPU reference (`attention_cpu`) on host copies.

mod common;

use attn_kernels::attention::cuda::attention_cuda_into;
use attn_kernels::attention::{attention_cpu, AttentionArgs, AttentionConfig};
use attn_kernels::tensor::rel_error;
use attn_kernels::{DType, DeviceView, DeviceViewMut, Tensor};
use common::{device, values};
use cudarc::driver::{CudaContext, DevicePtr};
use half::bf16;

const HEADS_Q: usize = 8;
const HEADS_KV: usize = 2;
const HEAD_DIM: usize = 64;
const SEQ_LENS: [usize; 3] = [37, 5, 90]; // packed back to back (varlen)

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(gpu) = device() else { return Ok(()) };

    // The engine's side: its own context handle (the device's primary context, as the CUDA
    // runtime and candle use), its own stream, its own buffers.
    let ctx = CudaContext::new(0)?;
    let stream = ctx.new_stream()?;
    let tokens: usize = SEQ_LENS.iter().sum();
    let width = (HEADS_Q + 2 * HEADS_KV) * HEAD_DIM;
    // bf16 values held as their u16 bit patterns (the engine's element type is its business).
    let qkv_host: Vec<bf16> = values(tokens * width, 7).into_iter().map(bf16::from_f32).collect();
    let qkv = stream.clone_htod(&qkv_host.iter().map(|x| x.to_bits()).collect::<Vec<u16>>())?;
    let out = stream.alloc_zeros::<u16>(tokens * HEADS_Q * HEAD_DIM)?;
    let cu: Vec<i32> = std::iter::once(0).chain(SEQ_LENS.iter().scan(0, |acc, &n| { *acc += n as i32; Some(*acc) })).collect();

    // Views of the engine's memory: q, k and v are column ranges of each token's row.
    let (qkv_addr, _qkv_sync) = qkv.device_ptr(&stream);
    let (out_addr, _out_sync) = out.device_ptr(&stream);
    let row = [width, HEAD_DIM, 1]; // [token, head, d] strides in the fused buffer
    let bytes = |n: usize| n * 2;
    // SAFETY: every view lies inside a live allocation of this device's primary context (from_raw
    // checks the extents against the lengths given); the buffers outlive the views, and the only
    // writer of `out` while the op runs is the op, ordered on the engine's stream.
    let (q, k, v, mut o) = unsafe {
        let at = |col: usize| qkv_addr + bytes(col * HEAD_DIM) as u64;
        let len = |col: usize| bytes(tokens * width - col * HEAD_DIM);
        (
            DeviceView::from_raw(at(0), len(0), DType::BF16, &[tokens, HEADS_Q, HEAD_DIM], &row)?,
            DeviceView::from_raw(at(HEADS_Q), len(HEADS_Q), DType::BF16, &[tokens, HEADS_KV, HEAD_DIM], &row)?,
            DeviceView::from_raw(at(HEADS_Q + HEADS_KV), len(HEADS_Q + HEADS_KV), DType::BF16, &[tokens, HEADS_KV, HEAD_DIM], &row)?,
            DeviceViewMut::from_raw_packed(out_addr, bytes(tokens * HEADS_Q * HEAD_DIM), DType::BF16, &[tokens, HEADS_Q, HEAD_DIM])?,
        )
    };

    // Our side: a handle that enqueues on the engine's stream.
    let on_engine_stream = gpu.with_stream(stream.clone())?;
    let cfg = AttentionConfig { causal: true, ..Default::default() };
    let args = AttentionArgs::new(&q, &k, &v).with_varlen(&cu, &cu);
    attention_cuda_into(&on_engine_stream, &cfg, &args, &mut o, None)?;

    // The engine reads its output buffer after its stream gets there.
    let got: Vec<f32> = stream.clone_dtoh(&out)?.iter().map(|&x| bf16::from_bits(x).to_f32()).collect();

    // Check: the same attention on the CPU, from host copies of the three column ranges.
    let all: Vec<f32> = qkv_host.iter().map(|x| x.to_f32()).collect();
    let cols = |first: usize, heads: usize| -> Result<Tensor, attn_kernels::Error> {
        let v: Vec<f32> = (0..tokens).flat_map(|t| all[t * width + first * HEAD_DIM..][..heads * HEAD_DIM].to_vec()).collect();
        Tensor::from_f32(DType::BF16, &[tokens, heads, HEAD_DIM], &v)
    };
    let (qh, kh, vh) = (cols(0, HEADS_Q)?, cols(HEADS_Q, HEADS_KV)?, cols(HEADS_Q + HEADS_KV, HEADS_KV)?);
    let want = attention_cpu(&cfg, &AttentionArgs::new(&qh, &kh, &vh).with_varlen(&cu, &cu))?;
    let got64: Vec<f64> = got.iter().map(|&x| x as f64).collect();
    let err = rel_error(&got64, &want.o.to_f64_vec());
    println!("attention on the engine's buffers and stream: {tokens} tokens in {} sequences, rel error {err:.2e} against the CPU reference", SEQ_LENS.len());
    if err > DType::BF16.rel_tolerance() {
        return Err(format!("rel error {err:e} above the bf16 bound {}", DType::BF16.rel_tolerance()).into());
    }
    Ok(())
}
