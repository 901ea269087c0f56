//! Serving a linear-attention model (GLA-style per-key decay) with a pool of recurrent states:
//! two requests of different prompt lengths are prefilled together (varlen), each writing its
//! final state into its own slot of the pool, then decoded one token per step from those slots,
//! in place.
//!
//!     cargo run --release --example linear_serving                          # a GPU
//!     ATTN_KERNELS_DEVICE=emu cargo run --release --example linear_serving  # the emulated device
//!
//! Each request's last output is checked against the CPU reference run over its whole sequence.

mod common;

use attn_kernels::linear::cuda::{linear_attention_cuda_slots, StatePool};
use attn_kernels::linear::{linear_attention_cpu, LinearArgs, LinearAttentionConfig};
use attn_kernels::tensor::rel_error;
use attn_kernels::{DType, Result, Tensor};
use common::{device, values};

const HEADS: usize = 4;
const K: usize = 64;
const V: usize = 64;
const SLOTS: usize = 4;
const STEPS: usize = 3;

/// One token of one request: q, k, v rows and its log decay (per head and key, in (-0.2, 0]).
struct Token {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    g: Vec<f32>,
}

fn token(request: usize, t: usize) -> Token {
    let seed = 1000 * request as u64 + t as u64;
    Token {
        q: values(HEADS * K, 4 * seed),
        k: values(HEADS * K, 4 * seed + 1),
        v: values(HEADS * V, 4 * seed + 2),
        g: values(HEADS * K, 4 * seed + 3).iter().map(|x| -0.1 * (x + 1.0)).collect(),
    }
}

/// `[1, T, H, *]` tensors (q, k, v in bf16, g in f32) of the given tokens, in order.
fn stack(tokens: &[&Token]) -> Result<[Tensor; 4]> {
    let t = tokens.len();
    let cat = |f: fn(&Token) -> &Vec<f32>| tokens.iter().flat_map(|x| f(x).iter().copied()).collect::<Vec<f32>>();
    Ok([
        Tensor::from_f32(DType::BF16, &[1, t, HEADS, K], &cat(|x| &x.q))?,
        Tensor::from_f32(DType::BF16, &[1, t, HEADS, K], &cat(|x| &x.k))?,
        Tensor::from_f32(DType::BF16, &[1, t, HEADS, V], &cat(|x| &x.v))?,
        Tensor::from_f32(DType::F32, &[1, t, HEADS, K], &cat(|x| &x.g))?,
    ])
}

fn main() -> Result<()> {
    let Some(gpu) = device() else { return Ok(()) };
    let cfg = LinearAttentionConfig::default();
    let prompts = [37usize, 5];
    let slots = [3i32, 0];
    let tokens: Vec<Vec<Token>> =
        prompts.iter().enumerate().map(|(r, &n)| (0..n + STEPS).map(|t| token(r, t)).collect()).collect();
    let mut pool = StatePool::new(&gpu, SLOTS, HEADS, K, V)?;

    // Prefill both prompts in one varlen call: rows of request 0, then of request 1.
    let rows: Vec<&Token> = tokens.iter().zip(prompts).flat_map(|(t, n)| t[..n].iter()).collect();
    let cu = [0, prompts[0] as i32, (prompts[0] + prompts[1]) as i32];
    let [q, k, v, g] = stack(&rows)?.map(|t| gpu.upload(&t));
    let (q, k, v, g) = (q?, k?, v?, g?);
    let args = LinearArgs::new(&q, &k, &v).with_g(&g).with_cu_seqlens(&cu);
    linear_attention_cuda_slots(&gpu, &cfg, &args, &mut pool, &slots)?;
    println!("prefill: {} + {} tokens into slots {slots:?}", prompts[0], prompts[1]);

    // Decode: one token per request per step, as a batch of two sequences of length 1.
    let mut last = None;
    for step in 0..STEPS {
        let batch: Vec<&Token> = tokens.iter().zip(prompts).map(|(t, n)| &t[n + step]).collect();
        let [q, k, v, g] = stack(&batch)?;
        // [1, 2, H, *] -> [2, 1, H, *]: two sequences, one token each.
        let reshape = |t: Tensor, w: usize| t.reshape(&[2, 1, HEADS, w]);
        let (q, k, v, g) = (reshape(q, K)?, reshape(k, K)?, reshape(v, V)?, reshape(g, K)?);
        let (q, k, v, g) = (gpu.upload(&q)?, gpu.upload(&k)?, gpu.upload(&v)?, gpu.upload(&g)?);
        let o = linear_attention_cuda_slots(&gpu, &cfg, &LinearArgs::new(&q, &k, &v).with_g(&g), &mut pool, &slots)?;
        last = Some(gpu.download(&o)?);
        println!("step {step}: decoded one token for each request");
    }

    // Check: each request's whole sequence on the CPU; its last output row against the decode's.
    let got = last.expect("STEPS > 0").to_f64_vec();
    for (r, seq) in tokens.iter().enumerate() {
        let [q, k, v, g] = stack(&seq.iter().collect::<Vec<_>>())?;
        let want = linear_attention_cpu(&cfg, &LinearArgs::new(&q, &k, &v).with_g(&g))?.o.to_f64_vec();
        let row = HEADS * V;
        let err = rel_error(&got[r * row..(r + 1) * row], &want[want.len() - row..]);
        println!("request {r} (slot {}): last output vs the CPU over {} tokens: relative error {err:.2e}", slots[r], seq.len());
        if err > DType::BF16.rel_tolerance() {
            return Err(attn_kernels::Error::invalid("o", format!("request {r}: relative error {err:e} above the bf16 bound")));
        }
    }
    Ok(())
}
