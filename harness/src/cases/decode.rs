//! Case files and `check` rows of `decode_attention` and `merge_states`.

use crate::case::{self, Case, Device, DeviceTensors, Tensors};
use crate::check::{CheckCase, Reference, Rng, Work};
use attn_kernels::attention::{alibi_slopes, AttentionConfig};
use attn_kernels::decode::cuda::{decode_cuda, merge_states_cuda};
use attn_kernels::decode::oracle::{decode_f64, merge_f64};
use attn_kernels::decode::{decode_cpu, merge_states_cpu, plan, plan_merge, DecodeOptions, KvCacheRef, SplitPolicy};
use attn_kernels::rope::RopeConfig;
use attn_kernels::tensor::{expect_rank, i32_data, DType, Tensor, TensorInfo};
use attn_kernels::{Error, Gpu, Result};
use serde::{Deserialize, Serialize};

fn minus_one() -> i64 {
    -1
}

/// Config of the `decode_attention` case op: [`AttentionConfig`]'s keys plus the decode ones.
/// Tensors: `q k_cache v_cache cache_seqlens [block_table] [alibi_slopes]`; a `block_table`
/// (int32 `[B, max_blocks]`) makes the cache paged. Outputs `o lse`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeCaseConfig {
    #[serde(default)]
    pub softmax_scale: Option<f64>,
    #[serde(default)]
    pub causal: bool,
    #[serde(default = "minus_one")]
    pub window_left: i64,
    #[serde(default = "minus_one")]
    pub window_right: i64,
    #[serde(default)]
    pub softcap: f64,
    #[serde(default)]
    pub rope: Option<RopeConfig>,
    /// The cache holds keys already rotated (RoPE only on q).
    #[serde(default)]
    pub cache_keys_rotated: bool,
    /// KV splits on the GPU (absent: automatic).
    #[serde(default)]
    pub num_splits: Option<usize>,
}

impl DecodeCaseConfig {
    pub fn attention(&self) -> AttentionConfig {
        AttentionConfig {
            softmax_scale: self.softmax_scale,
            causal: self.causal,
            window_left: self.window_left,
            window_right: self.window_right,
            softcap: self.softcap,
            rope: self.rope.clone(),
        }
    }
    pub fn options(&self) -> DecodeOptions {
        DecodeOptions {
            split: self.num_splits.map_or(SplitPolicy::Auto, SplitPolicy::Fixed),
            cache_keys_rotated: self.cache_keys_rotated,
        }
    }
}

/// The cache of a `decode_attention` case, over any tensor type.
pub fn case_cache<'a, T>(
    k: &'a T,
    v: &'a T,
    seqlens: &'a [i32],
    table: Option<(&'a [i32], usize)>,
) -> KvCacheRef<'a, T> {
    match table {
        None => KvCacheRef::Contiguous { k, v, cache_seqlens: seqlens },
        Some((block_table, max_blocks)) => KvCacheRef::Paged { k, v, block_table, max_blocks, cache_seqlens: seqlens },
    }
}

/// Host index tensors of a `decode_attention` case: `(cache_seqlens, Some((block_table, max_blocks)))`.
pub fn case_index(inputs: &Tensors) -> Result<(&[i32], Option<(&[i32], usize)>)> {
    let sl = case::input(inputs, "cache_seqlens")?;
    expect_rank("cache_seqlens", sl, 1, "[B]")?;
    let seqlens = i32_data("cache_seqlens", sl)?;
    let table = match inputs.get("block_table") {
        None => None,
        Some(t) => {
            expect_rank("block_table", t, 2, "[B, max_blocks]")?;
            Some((i32_data("block_table", t)?, t.shape()[1]))
        }
    };
    Ok((seqlens, table))
}

/// `attn-kernels run` for op `decode_attention`.
pub fn run_decode_case(config: &serde_json::Value, inputs: &Tensors, device: &Device) -> Result<Tensors> {
    let cfg: DecodeCaseConfig = case::parse_config(config)?;
    case::allow_only(inputs, "decode_attention", DECODE_TENSORS)?;
    let q = case::input(inputs, "q")?;
    let k = case::input(inputs, "k_cache")?;
    let v = case::input(inputs, "v_cache")?;
    let (seqlens, table) = case_index(inputs)?;
    let alibi = inputs.get("alibi_slopes");
    let cache = case_cache(k, v, seqlens, table);
    let (acfg, opts) = (cfg.attention(), cfg.options());
    match device {
        Device::Cpu => {
            let out = decode_cpu(&acfg, q, &cache, alibi, &opts)?;
            Ok(Tensors::from([("o".to_string(), out.o), ("lse".to_string(), out.lse)]))
        }
        Device::Cuda(gpu) => {
            // Validate on the host before uploading anything.
            plan(&acfg, q, &cache, alibi, &opts)?;
            let resident = case::upload_inputs(gpu, &without_index(inputs))?;
            case::download_all(gpu, &run_decode_resident(config, inputs, &resident, gpu)?)
        }
    }
}

const DECODE_TENSORS: &[&str] = &["q", "k_cache", "v_cache", "cache_seqlens", "block_table", "alibi_slopes"];

/// The inputs without the host index tensors (which are never uploaded as such).
fn without_index(inputs: &Tensors) -> Tensors {
    inputs
        .iter()
        .filter(|(k, _)| *k != "cache_seqlens" && *k != "block_table")
        .map(|(k, t)| (k.clone(), t.clone()))
        .collect()
}

/// `decode_attention` with device-resident q, caches and slopes (index data from the host
/// copies in `inputs`); outputs stay on the device. What `attn-kernels bench` times.
pub fn run_decode_resident(
    config: &serde_json::Value,
    inputs: &Tensors,
    resident: &DeviceTensors,
    gpu: &Gpu,
) -> Result<DeviceTensors> {
    let cfg: DecodeCaseConfig = case::parse_config(config)?;
    case::allow_only(inputs, "decode_attention", DECODE_TENSORS)?;
    let q = case::resident_input(resident, "q")?;
    let k = case::resident_input(resident, "k_cache")?;
    let v = case::resident_input(resident, "v_cache")?;
    let (seqlens, table) = case_index(inputs)?;
    let cache = case_cache(k, v, seqlens, table);
    let out = decode_cuda(gpu, &cfg.attention(), q, &cache, resident.get("alibi_slopes"), &cfg.options())?;
    Ok(DeviceTensors::from([("o".to_string(), out.o), ("lse".to_string(), out.lse)]))
}

/// `merge_states` with device-resident inputs; outputs stay on the device.
pub fn run_merge_resident(
    config: &serde_json::Value,
    inputs: &Tensors,
    resident: &DeviceTensors,
    gpu: &Gpu,
) -> Result<DeviceTensors> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct MergeConfig {}
    let _: MergeConfig = case::parse_config(config)?;
    case::allow_only(inputs, "merge_states", &["o_a", "lse_a", "o_b", "lse_b"])?;
    let g = |n: &str| case::resident_input(resident, n);
    let (o, lse) = merge_states_cuda(gpu, g("o_a")?, g("lse_a")?, g("o_b")?, g("lse_b")?)?;
    Ok(DeviceTensors::from([("o".to_string(), o), ("lse".to_string(), lse)]))
}

/// `attn-kernels run` for op `merge_states`: tensors `o_a lse_a o_b lse_b`, outputs `o lse`.
/// The config takes no keys besides `op`.
pub fn run_merge_case(config: &serde_json::Value, inputs: &Tensors, device: &Device) -> Result<Tensors> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct MergeConfig {}
    let _: MergeConfig = case::parse_config(config)?;
    case::allow_only(inputs, "merge_states", &["o_a", "lse_a", "o_b", "lse_b"])?;
    let o_a = case::input(inputs, "o_a")?;
    let lse_a = case::input(inputs, "lse_a")?;
    let o_b = case::input(inputs, "o_b")?;
    let lse_b = case::input(inputs, "lse_b")?;
    let (o, lse) = match device {
        Device::Cpu => merge_states_cpu(o_a, lse_a, o_b, lse_b)?,
        Device::Cuda(gpu) => {
            plan_merge(o_a, lse_a, o_b, lse_b)?;
            let resident = case::upload_inputs(gpu, inputs)?;
            let out = case::download_all(gpu, &run_merge_resident(config, inputs, &resident, gpu)?)?;
            let take = |n: &str| out.get(n).cloned().ok_or_else(|| Error::Case(format!("missing output `{n}`")));
            (take("o")?, take("lse")?)
        }
    };
    Ok(Tensors::from([("o".to_string(), o), ("lse".to_string(), lse)]))
}

/// The float64 oracle of a `decode_attention` case.
pub fn decode_oracle_case(c: &Case) -> Result<Reference> {
    let cfg: DecodeCaseConfig = case::parse_config(&c.config)?;
    let q = case::input(&c.inputs, "q")?;
    let k = case::input(&c.inputs, "k_cache")?;
    let v = case::input(&c.inputs, "v_cache")?;
    let (seqlens, table) = case_index(&c.inputs)?;
    let cache = case_cache(k, v, seqlens, table);
    let (o, lse) = decode_f64(&cfg.attention(), q, &cache, c.inputs.get("alibi_slopes"), &cfg.options())?;
    Ok(Reference::from([("o".to_string(), o), ("lse".to_string(), lse)]))
}

/// The float64 oracle of a `merge_states` case.
pub fn merge_oracle_case(c: &Case) -> Result<Reference> {
    let g = |n: &str| case::input(&c.inputs, n);
    let (o, lse) = merge_f64(g("o_a")?, g("lse_a")?, g("o_b")?, g("lse_b")?)?;
    Ok(Reference::from([("o".to_string(), o), ("lse".to_string(), lse)]))
}

/// A random paged cache: `(k, v, block_table, max_blocks)` with the blocks of each sequence
/// shuffled over the pool, and `num_blocks` = what the sequences need plus two spare blocks.
pub fn random_paged(
    rng: &mut Rng,
    dtype: DType,
    seqlens: &[usize],
    block_size: usize,
    heads_kv: usize,
    d: usize,
    dv: usize,
) -> Result<(Tensor, Tensor, Vec<i32>, usize)> {
    let per_seq: Vec<usize> = seqlens.iter().map(|&s| s.div_ceil(block_size).max(1)).collect();
    let max_blocks = per_seq.iter().copied().max().unwrap_or(1);
    let num_blocks = per_seq.iter().sum::<usize>() + 2;
    // A random permutation of block ids, dealt out to the sequences.
    let mut ids: Vec<i32> = (0..num_blocks as i32).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i + 1));
    }
    let mut table = vec![-1i32; seqlens.len() * max_blocks];
    let mut next = 0;
    for (b, &n) in per_seq.iter().enumerate() {
        for i in 0..n {
            table[b * max_blocks + i] = ids[next];
            next += 1;
        }
    }
    let k = Tensor::from_f32(
        dtype,
        &[num_blocks, block_size, heads_kv, d],
        &rng.normal_vec(num_blocks * block_size * heads_kv * d),
    )?;
    let v = Tensor::from_f32(
        dtype,
        &[num_blocks, block_size, heads_kv, dv],
        &rng.normal_vec(num_blocks * block_size * heads_kv * dv),
    )?;
    Ok((k, v, table, max_blocks))
}

/// Check-table rows of this family: paged and contiguous decode, merge_states.
pub fn check_cases() -> Vec<CheckCase> {
    let mut rng = Rng::from_time();
    let mut cases = Vec::new();
    let build = |rng: &mut Rng| -> Result<Vec<CheckCase>> {
        let mut out = Vec::new();
        // Paged, GQA 32/8, one new token, causal: the common serving step.
        {
            let (hq, hkv, d, sq, bs) = (32usize, 8usize, 128usize, 1usize, 16usize);
            let seqlens = [1531usize, 300, 2048, 77];
            let dtype = DType::F16;
            let (k, v, table, max_blocks) = random_paged(rng, dtype, &seqlens, bs, hkv, d, d)?;
            let b = seqlens.len();
            let q = Tensor::from_f32(dtype, &[b, sq, hq, d], &rng.normal_vec(b * sq * hq * d))?;
            let sl: Vec<i32> = seqlens.iter().map(|&s| s as i32).collect();
            let bytes = (seqlens.iter().sum::<usize>() * hkv * 2 * d + 2 * b * sq * hq * d) * dtype.size();
            out.push(CheckCase {
                op: "decode_attention",
                shape: format!("paged{bs} q[{b},{sq},{hq},{d}] Hkv{hkv} Sk<=2048"),
                dtype,
                case: Case::new(serde_json::json!({"op": "decode_attention", "causal": true}))
                    .with("q", q)
                    .with("k_cache", k)
                    .with("v_cache", v)
                    .with("cache_seqlens", Tensor::from_i32(&[b], &sl)?)
                    .with("block_table", Tensor::from_i32(&[b, max_blocks], &table)?),
                work: Work::Bytes(bytes as f64),
                tol_factor: 1.0,
                oracle: decode_oracle_case,
            });
        }
        // Contiguous, MHA 16/16, 4 new tokens, ALiBi + RoPE on read + sliding window, bf16.
        {
            let (hq, hkv, d, sq, s_max) = (16usize, 16usize, 128usize, 4usize, 1100usize);
            let seqlens = [1000usize, 513];
            let dtype = DType::BF16;
            let b = seqlens.len();
            let k = Tensor::from_f32(dtype, &[b, s_max, hkv, d], &rng.normal_vec(b * s_max * hkv * d))?;
            let v = Tensor::from_f32(dtype, &[b, s_max, hkv, d], &rng.normal_vec(b * s_max * hkv * d))?;
            let q = Tensor::from_f32(dtype, &[b, sq, hq, d], &rng.normal_vec(b * sq * hq * d))?;
            let sl: Vec<i32> = seqlens.iter().map(|&s| s as i32).collect();
            let slopes = alibi_slopes(hq);
            let bytes = (seqlens.iter().map(|&s| s.min(sq + 256)).sum::<usize>() * hkv * 2 * d + 2 * b * sq * hq * d)
                * dtype.size();
            out.push(CheckCase {
                op: "decode_attention",
                shape: format!("contig q[{b},{sq},{hq},{d}] alibi rope win256"),
                dtype,
                case: Case::new(serde_json::json!({
                    "op": "decode_attention", "causal": true, "window_left": 256,
                    "rope": {"rotary_dim": 64, "theta": 10000.0}
                }))
                .with("q", q)
                .with("k_cache", k)
                .with("v_cache", v)
                .with("cache_seqlens", Tensor::from_i32(&[b], &sl)?)
                .with("alibi_slopes", Tensor::from_f32(DType::F32, &[hq], &slopes)?),
                work: Work::Bytes(bytes as f64),
                tol_factor: 1.0,
                oracle: decode_oracle_case,
            });
        }
        // merge_states with some rows empty on one or both sides.
        {
            let (b, s, h, dv) = (2usize, 64usize, 32usize, 128usize);
            let dtype = DType::F16;
            let n = b * s * h;
            let mut la = rng.uniform_vec(n, -5.0, 5.0);
            let mut lb = rng.uniform_vec(n, -5.0, 5.0);
            for i in (0..n).step_by(7) {
                la[i] = f32::NEG_INFINITY;
            }
            for i in (0..n).step_by(11) {
                lb[i] = f32::NEG_INFINITY;
            }
            let o_a = Tensor::from_f32(dtype, &[b, s, h, dv], &rng.normal_vec(n * dv))?;
            let o_b = Tensor::from_f32(dtype, &[b, s, h, dv], &rng.normal_vec(n * dv))?;
            out.push(CheckCase {
                op: "merge_states",
                shape: format!("o[{b},{s},{h},{dv}]"),
                dtype,
                case: Case::new(serde_json::json!({"op": "merge_states"}))
                    .with("o_a", o_a)
                    .with("lse_a", Tensor::from_f32(DType::F32, &[b, h, s], &la)?)
                    .with("o_b", o_b)
                    .with("lse_b", Tensor::from_f32(DType::F32, &[b, h, s], &lb)?),
                work: Work::Bytes((3 * n * dv * dtype.size() + 3 * n * 4) as f64),
                tol_factor: 1.0,
                oracle: merge_oracle_case,
            });
        }
        Ok(out)
    };
    if let Ok(v) = build(&mut rng) {
        cases.extend(v);
    }
    cases
}
