//! The `cuda_fwd` of every op (feature `cuda`): zero-copy views of candle's storage, outputs
//! from candle's device, launches on candle's stream (see [`crate::cuda`]).

use crate::attention::{AttentionOp, DiffAttentionOp};
use crate::decode::DecodeOp;
use crate::linear::{Kind, RecurrentOp};
use crate::common::{ak_err, ak_dtype};
use crate::cuda::{gpu_for, held, held_input, input, In, Out};
use crate::rope::RopeOp;
use attn_kernels as ak;
use ak::attention::cuda::AttentionLaunch;
use ak::decode::cuda::DecodeLaunch;
use ak::diff_attention::cuda::{DiffAttentionLaunch, DiffTensors};
use ak::diff_attention::DiffAttentionOutput;
use ak::linear::cuda::{delta_rule_cuda_into, linear_attention_cuda_into, LinearMode};
use ak::linear::{DeltaRuleArgs, LinearArgs, RecurrentOutput};
use ak::rope::cuda::RopeLaunch;
use candle_core::cuda_backend::CudaStorage;
use candle_core::backend::BackendStorage;
use candle_core::{Layout, Result, Shape, Storage, Tensor};

pub(crate) fn attention(op: &AttentionOp, inputs: [(&CudaStorage, &Layout); 3]) -> Result<(CudaStorage, Shape)> {
    let dev = &inputs[0].0.device;
    let stream = dev.cuda_stream();
    let gpu = gpu_for(dev)?;
    let [q, k, v] = [("q", inputs[0]), ("k", inputs[1]), ("v", inputs[2])].map(|(arg, (s, l))| input(arg, s, l, &stream));
    let (q, k, v) = (q?, k?, v?);
    let alibi_held = held("alibi_slopes", op.alibi.as_ref(), dev)?;
    let alibi = held_input(&alibi_held, &stream)?;
    let alibi = alibi.as_ref().map(|a| &a.view);
    let launch = AttentionLaunch::new(&gpu, &op.cfg, &op.args(&q.view, &k.view, &v.view, alibi)).map_err(ak_err)?;
    let plan = launch.plan();
    let mut o = Out::alloc(dev, plan.dtype, &plan.o_shape())?;
    let mut lse = Out::alloc(dev, ak::DType::F32, &plan.lse_shape())?;
    {
        let (mut ov, _o_sync) = o.view(&stream)?;
        let (mut lv, _lse_sync) = lse.view(&stream)?;
        launch.launch(&gpu, [&q.view, &k.view, &v.view], alibi, &mut ov, Some(&mut lv)).map_err(ak_err)?;
    }
    let (lse, lse_shape) = lse.into_storage(dev);
    op.side.push(Storage::Cuda(lse), lse_shape);
    Ok(o.into_storage(dev))
}

pub(crate) fn diff_attention(op: &DiffAttentionOp, inputs: [(&CudaStorage, &Layout); 3]) -> Result<(CudaStorage, Shape)> {
    let dev = &inputs[0].0.device;
    let stream = dev.cuda_stream();
    let gpu = gpu_for(dev)?;
    let [q, k, v] = [("q", inputs[0]), ("k", inputs[1]), ("v", inputs[2])].map(|(arg, (s, l))| input(arg, s, l, &stream));
    let (q, k, v) = (q?, k?, v?);
    let lambda_held = held("lambda", Some(&op.lambda), dev)?;
    let norm_held = held("norm_weight", op.norm_weight.as_ref(), dev)?;
    let alibi_held = held("alibi_slopes", op.alibi.as_ref(), dev)?;
    let lambda = held_input(&lambda_held, &stream)?.expect("lambda is held");
    let norm = held_input(&norm_held, &stream)?;
    let alibi = held_input(&alibi_held, &stream)?;
    let (norm, alibi) = (norm.as_ref().map(|t| &t.view), alibi.as_ref().map(|t| &t.view));
    let args = op.args([&q.view, &k.view, &v.view], &lambda.view, norm, alibi);
    let launch = DiffAttentionLaunch::new(&gpu, &op.cfg, &args).map_err(ak_err)?;
    let plan = launch.plan();
    let mut o = Out::alloc(dev, plan.attn.dtype, &plan.o_shape())?;
    let mut lse1 = Out::alloc(dev, ak::DType::F32, &plan.lse_shape())?;
    let mut lse2 = Out::alloc(dev, ak::DType::F32, &plan.lse_shape())?;
    {
        let (ov, _o_sync) = o.view(&stream)?;
        let (l1, _l1_sync) = lse1.view(&stream)?;
        let (l2, _l2_sync) = lse2.view(&stream)?;
        let mut out = DiffAttentionOutput { o: ov, lse1: l1, lse2: l2 };
        let x = DiffTensors { q: &q.view, k: &k.view, v: &v.view, lambda: &lambda.view, norm_weight: norm, alibi_slopes: alibi };
        launch.launch(&gpu, x, &mut out).map_err(ak_err)?;
    }
    for lse in [lse1, lse2] {
        let (s, shape) = lse.into_storage(dev);
        op.side.push(Storage::Cuda(s), shape);
    }
    Ok(o.into_storage(dev))
}

pub(crate) fn decode(op: &DecodeOp, inputs: [(&CudaStorage, &Layout); 3]) -> Result<(CudaStorage, Shape)> {
    let dev = &inputs[0].0.device;
    let stream = dev.cuda_stream();
    let gpu = gpu_for(dev)?;
    let [q, k, v] = [("q", inputs[0]), ("k_cache", inputs[1]), ("v_cache", inputs[2])].map(|(arg, (s, l))| input(arg, s, l, &stream));
    let (q, k, v) = (q?, k?, v?);
    let alibi_held = held("alibi_slopes", op.alibi.as_ref(), dev)?;
    let alibi = held_input(&alibi_held, &stream)?;
    let alibi = alibi.as_ref().map(|a| &a.view);
    let cache = op.index.cache(&k.view, &v.view);
    let mut launch = DecodeLaunch::new(&gpu, &op.cfg, &q.view, &cache, alibi, &op.opts).map_err(ak_err)?;
    let plan = launch.plan();
    let mut o = Out::alloc(dev, plan.dtype, &plan.o_shape())?;
    let mut lse = Out::alloc(dev, ak::DType::F32, &plan.lse_shape())?;
    {
        let (mut ov, _o_sync) = o.view(&stream)?;
        let (mut lv, _lse_sync) = lse.view(&stream)?;
        launch.launch(&gpu, &q.view, [&k.view, &v.view], alibi, &mut ov, &mut lv).map_err(ak_err)?;
    }
    let (lse, lse_shape) = lse.into_storage(dev);
    op.side.push(Storage::Cuda(lse), lse_shape);
    Ok(o.into_storage(dev))
}

/// `linear_attention` / `delta_rule`, kernel chosen by the library ([`LinearMode::Auto`]).
pub(crate) fn recurrent(op: &RecurrentOp, inputs: [(&CudaStorage, &Layout); 3]) -> Result<(CudaStorage, Shape)> {
    let dev = &inputs[0].0.device;
    let stream = dev.cuda_stream();
    let gpu = gpu_for(dev)?;
    let [q, k, v] = [("q", inputs[0]), ("k", inputs[1]), ("v", inputs[2])].map(|(arg, (s, l))| input(arg, s, l, &stream));
    let (q, k, v) = (q?, k?, v?);
    let g_held = held("g", op.opts.g.as_ref(), dev)?;
    let u_held = held("u", op.opts.u.as_ref(), dev)?;
    let s0_held = held("initial_state", op.opts.initial_state.as_ref(), dev)?;
    let a_held = held("a", op.ab.as_ref().map(|(a, _)| a), dev)?;
    let b_held = held("b", op.ab.as_ref().map(|(_, b)| b), dev)?;
    let [g, u, s0, a, b] = [&g_held, &u_held, &s0_held, &a_held, &b_held].map(|h| held_input(h, &stream));
    let (g, u, s0, a, b) = (g?, u?, s0?, a?, b?);
    let (g, u, s0, a, b) = (view_of(&g), view_of(&u), view_of(&s0), view_of(&a), view_of(&b));
    let cu = op.opts.cu_seqlens.as_deref();
    let (q, k, v) = (&q.view, &k.view, &v.view);
    // Shapes of the outputs: the plan of the call (validation runs again inside the launch).
    let plan = match &op.kind {
        Kind::Linear(cfg) => {
            ak::linear::plan_linear(cfg, &LinearArgs { q, k, v, g: g.as_ref(), u: u.as_ref(), initial_state: s0.as_ref(), cu_seqlens: cu })
        }
        Kind::Delta(cfg) => {
            let (a, b) = (a.as_ref().expect("delta_rule holds a"), b.as_ref().expect("delta_rule holds b"));
            ak::linear::plan_delta_rule(cfg, &DeltaRuleArgs { q, k, v, a, b, g: g.as_ref(), initial_state: s0.as_ref(), cu_seqlens: cu })
        }
    }
    .map_err(ak_err)?;
    let mut o = Out::alloc(dev, plan.dtype, &plan.o_shape())?;
    let mut state = Out::alloc(dev, ak::DType::F32, &plan.state_shape())?;
    {
        let (ov, _o_sync) = o.view(&stream)?;
        let (sv, _s_sync) = state.view(&stream)?;
        let mut out = RecurrentOutput { o: ov, final_state: sv };
        match &op.kind {
            Kind::Linear(cfg) => {
                let args = LinearArgs { q, k, v, g: g.as_ref(), u: u.as_ref(), initial_state: s0.as_ref(), cu_seqlens: cu };
                linear_attention_cuda_into(&gpu, cfg, &args, LinearMode::Auto, &mut out)
            }
            Kind::Delta(cfg) => {
                let (a, b) = (a.as_ref().expect("delta_rule holds a"), b.as_ref().expect("delta_rule holds b"));
                let args = DeltaRuleArgs { q, k, v, a, b, g: g.as_ref(), initial_state: s0.as_ref(), cu_seqlens: cu };
                delta_rule_cuda_into(&gpu, cfg, &args, LinearMode::Auto, &mut out)
            }
        }
        .map_err(ak_err)?;
    }
    let (s, shape) = state.into_storage(dev);
    op.side.push(Storage::Cuda(s), shape);
    Ok(o.into_storage(dev))
}

fn view_of<'a>(t: &Option<In<'a>>) -> Option<ak::DeviceView<'a>> {
    t.as_ref().map(|t| t.view)
}

pub(crate) fn rope(op: &RopeOp, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
    let dev = &s.device;
    let stream = dev.cuda_stream();
    let gpu = gpu_for(dev)?;
    let x = input("x", s, l, &stream)?;
    let launch = RopeLaunch::new(&gpu, &op.cfg, &op.args(&x.view)).map_err(ak_err)?;
    let mut y = Out::alloc(dev, ak_dtype("x", s.dtype())?, l.dims())?;
    {
        let (mut yv, _y_sync) = y.view(&stream)?;
        launch.launch(&gpu, &x.view, &mut yv).map_err(ak_err)?;
    }
    Ok(y.into_storage(dev))
}

/// The rope kernel walks the rows of a rank-4 `[B, S, H, D]` input at one stride: a batch
/// stride other than `S` x the row stride (a narrowed S, say) needs a packed copy first.
pub(crate) fn rope_rows_uniform(x: &Tensor) -> Result<Tensor> {
    let (dims, strides) = (x.dims(), x.stride());
    if x.device().is_cuda() && dims.len() == 4 && dims[0] > 1 && strides[0] != strides[1] * dims[1] {
        x.force_contiguous()
    } else {
        Ok(x.clone())
    }
}
