//! KV-cache `decode` (contiguous or paged cache) as a candle custom op.

use crate::common::{ak_err, device_packed, device_packed_opt, device_ready, from_host, host_operand_opt, to_host, SideOutputs};
use attn_kernels as ak;
use ak::attention::AttentionConfig;
use ak::decode::{DecodeOptions, KvCacheRef};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

/// The host index data of a KV cache (the cache tensors themselves are arguments of [`decode`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheIndex {
    /// `k [B, S_max, Hkv, D]`, `v [B, S_max, Hkv, Dv]`; `cache_seqlens [B]`: keys per sequence,
    /// the new tokens included.
    Contiguous { cache_seqlens: Vec<i32> },
    /// `k [num_blocks, block_size, Hkv, D]`, `v [num_blocks, block_size, Hkv, Dv]`;
    /// `block_table [B, max_blocks]` row-major: key `j` of sequence `b` is row `j % block_size`
    /// of block `block_table[b * max_blocks + j / block_size]`.
    Paged { block_table: Vec<i32>, max_blocks: usize, cache_seqlens: Vec<i32> },
}

impl CacheIndex {
    pub(crate) fn cache<'a, T>(&'a self, k: &'a T, v: &'a T) -> KvCacheRef<'a, T> {
        match self {
            CacheIndex::Contiguous { cache_seqlens } => KvCacheRef::Contiguous { k, v, cache_seqlens },
            CacheIndex::Paged { block_table, max_blocks, cache_seqlens } => {
                KvCacheRef::Paged { k, v, block_table, max_blocks: *max_blocks, cache_seqlens }
            }
        }
    }
}

/// Decode (docs/ops.md section 6): `q [B, Sq_new, Hq, D]` against the first `cache_seqlens[b]`
/// keys of each sequence's cache, with the options of `cfg` meaning what they mean for
/// attention (query row `i` at `i + Sk - Sq_new`). `alibi_slopes` is f32 `[Hq]` on q's device.
/// Returns `o [B, Sq_new, Hq, Dv]` in q's dtype.
pub fn decode(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    index: &CacheIndex,
    cfg: &AttentionConfig,
    alibi_slopes: Option<&Tensor>,
    opts: &DecodeOptions,
) -> Result<Tensor> {
    decode_with_lse(q, k_cache, v_cache, index, cfg, alibi_slopes, opts).map(|(o, _)| o)
}

/// [`decode`] with the f32 log-sum-exp `[B, Hq, Sq_new]`.
pub fn decode_with_lse(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    index: &CacheIndex,
    cfg: &AttentionConfig,
    alibi_slopes: Option<&Tensor>,
    opts: &DecodeOptions,
) -> Result<(Tensor, Tensor)> {
    let op = DecodeOp {
        cfg: cfg.clone(),
        index: index.clone(),
        alibi: device_packed_opt(alibi_slopes)?,
        opts: *opts,
        side: SideOutputs::default(),
    };
    let o = device_packed(q)?.apply_op3_no_bwd(&device_ready(k_cache)?, &device_ready(v_cache)?, &op)?;
    let lse = op.side.take(1)?.remove(0);
    Ok((o, lse))
}

pub(crate) struct DecodeOp {
    pub cfg: AttentionConfig,
    pub index: CacheIndex,
    pub alibi: Option<Tensor>,
    pub opts: DecodeOptions,
    pub side: SideOutputs,
}

impl CustomOp3 for DecodeOp {
    fn name(&self) -> &'static str {
        "attn-kernels-decode"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (to_host("q", s1, l1)?, to_host("k_cache", s2, l2)?, to_host("v_cache", s3, l3)?);
        let alibi = host_operand_opt("alibi_slopes", self.alibi.as_ref())?;
        let cache = self.index.cache(&k, &v);
        let out = ak::decode::decode_cpu(&self.cfg, &q, &cache, alibi.as_ref(), &self.opts).map_err(ak_err)?;
        self.side.push_host(out.lse)?;
        from_host(out.o)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda_ops::decode(self, [(s1, l1), (s2, l2), (s3, l3)])
    }
}
