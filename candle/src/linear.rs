//! The linear-attention recurrences `linear_attention` and `delta_rule` as candle custom ops.

use crate::common::{ak_err, device_packed, device_packed_opt, from_host, host_operand, host_operand_opt, to_host, SideOutputs};
use attn_kernels as ak;
use ak::linear::{DeltaRuleArgs, DeltaRuleConfig, LinearArgs, LinearAttentionConfig};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

/// The optional inputs of the recurrences (tensors on q's device) and the varlen offsets.
#[derive(Clone, Debug, Default)]
pub struct RecurrentOptions {
    /// Log decay, one of `[B, T, H, K]`, `[B, T, H]`, `[H, K]`, `[H]` (f32 or q's dtype).
    pub g: Option<Tensor>,
    /// RWKV bonus `[H, K]` (f32 or q's dtype): `linear_attention` only, switches to the
    /// exclusive form.
    pub u: Option<Tensor>,
    /// f32 `[B, H, K, V]` (varlen `[N, H, K, V]`); absent means zeros.
    pub initial_state: Option<Tensor>,
    /// Varlen offsets `[N + 1]` (then q is `[1, total, H, K]`).
    pub cu_seqlens: Option<Vec<i32>>,
}

impl RecurrentOptions {
    pub fn with_g(mut self, g: Tensor) -> Self {
        self.g = Some(g);
        self
    }
    pub fn with_u(mut self, u: Tensor) -> Self {
        self.u = Some(u);
        self
    }
    pub fn with_initial_state(mut self, s: Tensor) -> Self {
        self.initial_state = Some(s);
        self
    }
    pub fn with_cu_seqlens(mut self, cu: Vec<i32>) -> Self {
        self.cu_seqlens = Some(cu);
        self
    }
}

/// `linear_attention` (docs/ops.md section 5, diagonal decay): `q, k [B, T, H, K]`,
/// `v [B, T, H, V]`. Returns `(o [B, T, H, V]` in q's dtype, `final_state [N, H, K, V]` f32`)`.
pub fn linear_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cfg: &LinearAttentionConfig,
    opts: &RecurrentOptions,
) -> Result<(Tensor, Tensor)> {
    let op = RecurrentOp { kind: Kind::Linear(cfg.clone()), ab: None, opts: prepared(opts)?, side: SideOutputs::default() };
    let o = device_packed(q)?.apply_op3_no_bwd(&device_packed(k)?, &device_packed(v)?, &op)?;
    Ok((o, op.side.take(1)?.remove(0)))
}

/// `delta_rule` (docs/ops.md section 5, diagonal plus rank one): as [`linear_attention`] with
/// `a, b [B, T, H, K]` in q's dtype; `opts.u` must be absent.
pub fn delta_rule(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    a: &Tensor,
    b: &Tensor,
    cfg: &DeltaRuleConfig,
    opts: &RecurrentOptions,
) -> Result<(Tensor, Tensor)> {
    if opts.u.is_some() {
        bail!("attn-kernels: `u`: delta_rule has no bonus (u is a linear_attention input)");
    }
    let op = RecurrentOp {
        kind: Kind::Delta(cfg.clone()),
        ab: Some((device_packed(a)?, device_packed(b)?)),
        opts: prepared(opts)?,
        side: SideOutputs::default(),
    };
    let o = device_packed(q)?.apply_op3_no_bwd(&device_packed(k)?, &device_packed(v)?, &op)?;
    Ok((o, op.side.take(1)?.remove(0)))
}

fn prepared(opts: &RecurrentOptions) -> Result<RecurrentOptions> {
    Ok(RecurrentOptions {
        g: device_packed_opt(opts.g.as_ref())?,
        u: device_packed_opt(opts.u.as_ref())?,
        initial_state: device_packed_opt(opts.initial_state.as_ref())?,
        cu_seqlens: opts.cu_seqlens.clone(),
    })
}

pub(crate) enum Kind {
    Linear(LinearAttentionConfig),
    Delta(DeltaRuleConfig),
}

pub(crate) struct RecurrentOp {
    pub kind: Kind,
    /// delta_rule's `a`, `b`.
    pub ab: Option<(Tensor, Tensor)>,
    pub opts: RecurrentOptions,
    pub side: SideOutputs,
}

impl CustomOp3 for RecurrentOp {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Linear(_) => "attn-kernels-linear-attention",
            Kind::Delta(_) => "attn-kernels-delta-rule",
        }
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (to_host("q", s1, l1)?, to_host("k", s2, l2)?, to_host("v", s3, l3)?);
        let g = host_operand_opt("g", self.opts.g.as_ref())?;
        let s0 = host_operand_opt("initial_state", self.opts.initial_state.as_ref())?;
        let cu = self.opts.cu_seqlens.as_deref();
        let out = match &self.kind {
            Kind::Linear(cfg) => {
                let u = host_operand_opt("u", self.opts.u.as_ref())?;
                let args = LinearArgs { q: &q, k: &k, v: &v, g: g.as_ref(), u: u.as_ref(), initial_state: s0.as_ref(), cu_seqlens: cu };
                ak::linear::linear_attention_cpu(cfg, &args)
            }
            Kind::Delta(cfg) => {
                let (a, b) = self.ab.as_ref().expect("delta_rule holds a and b");
                let (a, b) = (host_operand("a", a)?, host_operand("b", b)?);
                let args = DeltaRuleArgs { q: &q, k: &k, v: &v, a: &a, b: &b, g: g.as_ref(), initial_state: s0.as_ref(), cu_seqlens: cu };
                ak::linear::delta_rule_cpu(cfg, &args)
            }
        }
        .map_err(ak_err)?;
        self.side.push_host(out.final_state)?;
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
        crate::cuda_ops::recurrent(self, [(s1, l1), (s2, l2), (s3, l3)])
    }
}
