//! An engine's serving loop over a paged KV cache: prefill a prompt with fused RoPE, append its
//! keys and values to the cache (rotated once, on append), then decode token by token, planning
//! once per step (`DecodeLaunch`: index upload, split count, workspace) and launching per layer.
//!
//!     cargo run --release --example paged_decode                          # a GPU
//!     ATTN_KERNELS_DEVICE=emu cargo run --release --example paged_decode  # the emulated device
//!
//! The last step is checked against the CPU reference (`decode_cpu`) on host copies.

mod common;

use attn_kernels::attention::cuda::attention_cuda;
use attn_kernels::attention::{AttentionArgs, AttentionConfig};
use attn_kernels::decode::cuda::{append_kv_cuda, DecodeLaunch};
use attn_kernels::decode::{decode_cpu, DecodeOptions, KvCacheMut, KvCacheRef};
use attn_kernels::rope::RopeConfig;
use attn_kernels::tensor::rel_error;
use attn_kernels::{DType, DeviceTensor, Result, Tensor, TensorInfo};
use common::{device, values};

const BATCH: usize = 2;
const HEADS_Q: usize = 8;
const HEADS_KV: usize = 2; // grouped-query attention, 4 query heads per kv head
const HEAD_DIM: usize = 128;
const BLOCK: usize = 16; // tokens per cache block
const MAX_BLOCKS: usize = 4; // blocks per sequence: room for 64 tokens
const PROMPT: usize = 20;
const STEPS: usize = 3;
const LAYERS: usize = 2;

fn tensor(shape: &[usize], seed: u64) -> Result<Tensor> {
    Tensor::from_f32(DType::BF16, shape, &values(shape.iter().product(), seed))
}

fn main() -> Result<()> {
    let Some(gpu) = device() else { return Ok(()) };

    // Llama 3 RoPE scaling, as a model's config.json carries it.
    let rope: RopeConfig = serde_json::from_value(serde_json::json!({
        "rotary_dim": HEAD_DIM, "theta": 500000.0, "max_position_embeddings": 8192,
        "scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    }))
    .map_err(|e| attn_kernels::Error::config("rope", e.to_string()))?;
    let causal_rope = AttentionConfig { causal: true, rope: Some(rope.clone()), ..Default::default() };

    // The paged cache: sequence b owns blocks b, b + BATCH, ... (any permutation works).
    let num_blocks = BATCH * MAX_BLOCKS;
    let block_table: Vec<i32> = (0..BATCH).flat_map(|b| (0..MAX_BLOCKS).map(move |i| (b + i * BATCH) as i32)).collect();
    let cache_shape = [num_blocks, BLOCK, HEADS_KV, HEAD_DIM];
    let mut k_cache = gpu.upload(&Tensor::zeros(DType::BF16, &cache_shape)?)?;
    let mut v_cache = gpu.upload(&Tensor::zeros(DType::BF16, &cache_shape)?)?;
    let mut lens = vec![0i32; BATCH];

    // Prefill: causal attention with RoPE fused on q and k, then the prompt goes into the cache.
    let q = gpu.upload(&tensor(&[BATCH, PROMPT, HEADS_Q, HEAD_DIM], 1)?)?;
    let k = gpu.upload(&tensor(&[BATCH, PROMPT, HEADS_KV, HEAD_DIM], 2)?)?;
    let v = gpu.upload(&tensor(&[BATCH, PROMPT, HEADS_KV, HEAD_DIM], 3)?)?;
    let prefill = attention_cuda(&gpu, &causal_rope, &AttentionArgs::new(&q, &k, &v))?;
    // Append to sequence b's rows cache_seqlens[b].. (keys rotated there); returns the new lengths.
    let append = |k_cache: &mut DeviceTensor, v_cache: &mut DeviceTensor, lens: &[i32], k: &DeviceTensor, v: &DeviceTensor| {
        let mut cache =
            KvCacheMut::Paged { k: k_cache, v: v_cache, block_table: &block_table, max_blocks: MAX_BLOCKS, cache_seqlens: lens };
        append_kv_cuda(&gpu, &mut cache, k, v, Some(&rope))
    };
    lens = append(&mut k_cache, &mut v_cache, &lens, &k, &v)?;
    println!("prefill: o {:?}, cache lengths {lens:?}", prefill.o.shape());

    // Decode: per step, append the new token, upload the index once, run every layer.
    let opts = DecodeOptions { cache_keys_rotated: true, ..Default::default() };
    let mut last = None;
    for step in 0..STEPS {
        let seed = 100 + 10 * step as u64;
        let k_new = gpu.upload(&tensor(&[BATCH, 1, HEADS_KV, HEAD_DIM], seed)?)?;
        let v_new = gpu.upload(&tensor(&[BATCH, 1, HEADS_KV, HEAD_DIM], seed + 1)?)?;
        lens = append(&mut k_cache, &mut v_cache, &lens, &k_new, &v_new)?;
        let view = KvCacheRef::Paged { k: &k_cache, v: &v_cache, block_table: &block_table, max_blocks: MAX_BLOCKS, cache_seqlens: &lens };
        let q_host = tensor(&[BATCH, 1, HEADS_Q, HEAD_DIM], seed + 2)?;
        let q_new = gpu.upload(&q_host)?;
        // Once per step: validate, upload the index, pick the split count, allocate the workspace.
        let mut launch = DecodeLaunch::new(&gpu, &causal_rope, &q_new, &view, None, &opts)?;
        let mut o = gpu.alloc(DType::BF16, &[BATCH, 1, HEADS_Q, HEAD_DIM])?;
        let mut lse = gpu.alloc(DType::F32, &[BATCH, HEADS_Q, 1])?;
        for _layer in 0..LAYERS {
            // Per layer: no host work beyond shape checks, no allocation (graph-capturable). An
            // engine passes each layer's q and cache; this example reuses one.
            launch.launch(&gpu, &q_new, [&k_cache, &v_cache], None, &mut o, &mut lse)?;
        }
        println!("step {step}: cache lengths {lens:?}");
        last = Some((q_host, o));
    }

    // Check the last step against the CPU reference on host copies of the cache.
    let (q_host, o) = last.expect("STEPS > 0");
    let (k_host, v_host) = (gpu.download(&k_cache)?, gpu.download(&v_cache)?);
    let view = KvCacheRef::Paged { k: &k_host, v: &v_host, block_table: &block_table, max_blocks: MAX_BLOCKS, cache_seqlens: &lens };
    let want = decode_cpu(&causal_rope, &q_host, &view, None, &opts)?;
    let err = rel_error(&gpu.download(&o)?.to_f64_vec(), &want.o.to_f64_vec());
    println!("last step vs decode_cpu: relative error {err:.2e} (bf16 bound {:.0e})", DType::BF16.rel_tolerance());
    if err > DType::BF16.rel_tolerance() {
        return Err(attn_kernels::Error::invalid("o", format!("relative error {err:e} above the bf16 bound")));
    }
    Ok(())
}
