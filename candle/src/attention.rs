//! `attention` (dense and varlen) and `diff_attention` (v1, v2) as candle custom ops.

use crate::common::{ak_err, device_packed, device_packed_opt, device_ready, from_host, host_operand_opt, to_host, SideOutputs};
use attn_kernels as ak;
use ak::attention::{AttentionArgs, AttentionConfig};
use ak::diff_attention::{DiffAttentionArgs, DiffAttentionConfig};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

/// The attention inputs beyond q, k, v and the config: ALiBi slopes (an f32 `[Hq]` tensor on
/// q's device) and host index data, validated by the library before anything runs.
#[derive(Clone, Debug, Default)]
pub struct AttentionOptions {
    /// f32 `[Hq]` (diff_attention: `[H]`), on q's device.
    pub alibi_slopes: Option<Tensor>,
    /// Varlen: `[N + 1]` offsets into q's rows (with rank-3 q, k, v); give with `cu_seqlens_k`.
    pub cu_seqlens_q: Option<Vec<i32>>,
    /// Varlen: `[N + 1]` offsets into k's and v's rows.
    pub cu_seqlens_k: Option<Vec<i32>>,
    /// RoPE positions of the query rows (`B * Sq` or `total_q` entries; needs `cfg.rope`).
    pub position_ids_q: Option<Vec<i32>>,
    /// RoPE positions of the key rows (`B * Sk` or `total_k` entries; needs `cfg.rope`).
    pub position_ids_k: Option<Vec<i32>>,
}

impl AttentionOptions {
    /// With ALiBi slopes (f32 `[Hq]`, e.g. from [`attn_kernels::attention::alibi_slopes`]).
    pub fn with_alibi(mut self, slopes: Tensor) -> Self {
        self.alibi_slopes = Some(slopes);
        self
    }
    /// Varlen: packed `[total, H, D]` rows with cumulative sequence offsets.
    pub fn with_varlen(mut self, cu_seqlens_q: Vec<i32>, cu_seqlens_k: Vec<i32>) -> Self {
        self.cu_seqlens_q = Some(cu_seqlens_q);
        self.cu_seqlens_k = Some(cu_seqlens_k);
        self
    }
    /// RoPE positions of query and/or key rows.
    pub fn with_positions(mut self, q: Option<Vec<i32>>, k: Option<Vec<i32>>) -> Self {
        self.position_ids_q = q;
        self.position_ids_k = k;
        self
    }
}

/// Softmax attention (docs/ops.md section 2): causal / sliding-window masks, softcap, ALiBi,
/// fused RoPE and GQA from `cfg` and `opts`. Dense `q [B, Sq, Hq, D]`, `k [B, Sk, Hkv, D]`,
/// `v [B, Sk, Hkv, Dv]` give `o [B, Sq, Hq, Dv]`; with `opts.cu_seqlens_*`, rank-3 packed
/// `[total, H, D]` tensors give `o [total_q, Hq, Dv]`. `o` has q's dtype.
///
/// CPU: f32/f16/bf16, any head dims. CUDA (feature `cuda`): f16/bf16 with the head dims of the
/// library's kernel (docs/ops.md), no copy of q, k, v.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, cfg: &AttentionConfig, opts: &AttentionOptions) -> Result<Tensor> {
    attention_with_lse(q, k, v, cfg, opts).map(|(o, _)| o)
}

/// [`attention`] with the log-sum-exp of every row: f32 `[B, Hq, Sq]` (varlen `[Hq, total_q]`),
/// `-inf` for a row that sees no key (its `o` is 0).
pub fn attention_with_lse(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cfg: &AttentionConfig,
    opts: &AttentionOptions,
) -> Result<(Tensor, Tensor)> {
    let op = AttentionOp {
        cfg: cfg.clone(),
        alibi: device_packed_opt(opts.alibi_slopes.as_ref())?,
        opts: opts.clone(),
        side: SideOutputs::default(),
    };
    let o = device_ready(q)?.apply_op3_no_bwd(&device_ready(k)?, &device_ready(v)?, &op)?;
    let lse = op.side.take(1)?.remove(0);
    Ok((o, lse))
}

pub(crate) struct AttentionOp {
    pub cfg: AttentionConfig,
    /// `opts.alibi_slopes`, laid out for the device.
    pub alibi: Option<Tensor>,
    pub opts: AttentionOptions,
    pub side: SideOutputs,
}

impl AttentionOp {
    /// The library's arguments over tensors of any kind (host tensors or device views).
    pub(crate) fn args<'a, T: ak::TensorInfo>(&'a self, q: &'a T, k: &'a T, v: &'a T, alibi: Option<&'a T>) -> AttentionArgs<'a, T> {
        let o = &self.opts;
        AttentionArgs {
            q,
            k,
            v,
            alibi_slopes: alibi,
            cu_seqlens_q: o.cu_seqlens_q.as_deref(),
            cu_seqlens_k: o.cu_seqlens_k.as_deref(),
            position_ids_q: o.position_ids_q.as_deref(),
            position_ids_k: o.position_ids_k.as_deref(),
        }
    }
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "attn-kernels-attention"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (to_host("q", s1, l1)?, to_host("k", s2, l2)?, to_host("v", s3, l3)?);
        let alibi = host_operand_opt("alibi_slopes", self.alibi.as_ref())?;
        let out = ak::attention::attention_cpu(&self.cfg, &self.args(&q, &k, &v, alibi.as_ref())).map_err(ak_err)?;
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
        crate::cuda_ops::attention(self, [(s1, l1), (s2, l2), (s3, l3)])
    }
}

/// Differential attention (docs/ops.md section 4), variant from `cfg.variant`:
/// - v1: `q [B, Sq, 2H, d]`, `k [B, Sk, 2Hkv, d]`, `v [B, Sk, Hkv, 2d]`, `lambda` f32 `[H]`,
///   optional `norm_weight [2d]` (with `cfg.lambda_init`); `o [B, Sq, H, 2d]`.
/// - v2: `q [B, Sq, 2H, D]`, `k, v [B, Sk, Hkv, D]`, `lambda` f32 `[B, Sq, H]`; `o [B, Sq, H, D]`.
///
/// `opts` carries ALiBi (f32 `[H]`), varlen offsets and RoPE positions as for [`attention`];
/// `lambda` and `norm_weight` live on q's device.
pub fn diff_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    lambda: &Tensor,
    norm_weight: Option<&Tensor>,
    cfg: &DiffAttentionConfig,
    opts: &AttentionOptions,
) -> Result<Tensor> {
    diff_attention_with_lse(q, k, v, lambda, norm_weight, cfg, opts).map(|(o, _, _)| o)
}

/// [`diff_attention`] with the LSEs of both maps: `(o, lse1, lse2)`, f32 `[B, H, Sq]` (varlen
/// `[H, total_q]`).
pub fn diff_attention_with_lse(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    lambda: &Tensor,
    norm_weight: Option<&Tensor>,
    cfg: &DiffAttentionConfig,
    opts: &AttentionOptions,
) -> Result<(Tensor, Tensor, Tensor)> {
    let op = DiffAttentionOp {
        cfg: cfg.clone(),
        lambda: device_packed(lambda)?,
        norm_weight: device_packed_opt(norm_weight)?,
        alibi: device_packed_opt(opts.alibi_slopes.as_ref())?,
        opts: opts.clone(),
        side: SideOutputs::default(),
    };
    let o = device_ready(q)?.apply_op3_no_bwd(&device_ready(k)?, &device_ready(v)?, &op)?;
    let mut side = op.side.take(2)?;
    let lse2 = side.pop().unwrap();
    let lse1 = side.pop().unwrap();
    Ok((o, lse1, lse2))
}

pub(crate) struct DiffAttentionOp {
    pub cfg: DiffAttentionConfig,
    pub lambda: Tensor,
    pub norm_weight: Option<Tensor>,
    pub alibi: Option<Tensor>,
    pub opts: AttentionOptions,
    pub side: SideOutputs,
}

impl DiffAttentionOp {
    pub(crate) fn args<'a, T: ak::TensorInfo>(
        &'a self,
        [q, k, v]: [&'a T; 3],
        lambda: &'a T,
        norm_weight: Option<&'a T>,
        alibi: Option<&'a T>,
    ) -> DiffAttentionArgs<'a, T> {
        let o = &self.opts;
        DiffAttentionArgs {
            q,
            k,
            v,
            lambda,
            norm_weight,
            alibi_slopes: alibi,
            cu_seqlens_q: o.cu_seqlens_q.as_deref(),
            cu_seqlens_k: o.cu_seqlens_k.as_deref(),
            position_ids_q: o.position_ids_q.as_deref(),
            position_ids_k: o.position_ids_k.as_deref(),
        }
    }
}

impl CustomOp3 for DiffAttentionOp {
    fn name(&self) -> &'static str {
        "attn-kernels-diff-attention"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (to_host("q", s1, l1)?, to_host("k", s2, l2)?, to_host("v", s3, l3)?);
        let lambda = crate::common::host_operand("lambda", &self.lambda)?;
        let norm = host_operand_opt("norm_weight", self.norm_weight.as_ref())?;
        let alibi = host_operand_opt("alibi_slopes", self.alibi.as_ref())?;
        let args = self.args([&q, &k, &v], &lambda, norm.as_ref(), alibi.as_ref());
        let out = ak::diff_attention::diff_attention_cpu(&self.cfg, &args).map_err(ak_err)?;
        self.side.push_host(out.lse1)?;
        self.side.push_host(out.lse2)?;
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
        crate::cuda_ops::diff_attention(self, [(s1, l1), (s2, l2), (s3, l3)])
    }
}
