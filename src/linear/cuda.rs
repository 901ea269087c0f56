//! CUDA paths of the linear-attention recurrences: the recurrent kernels of
//! `kernels/linear/recurrent.cu` (`linear_attention`, `delta_rule`) and `kernels/linear/rwkv4.cu`,
//! plus the serving API: a pool of state slots updated in place.
//!
//! Two recurrent kernels compute the same function (spec section 4), f32 state and math:
//! - **prefill** ([`LinearMode::Recurrent`]): one block per (sequence, head, 32 value columns), a
//!   thread keeps a column of the state `[K, V]` in registers and tokens are staged in shared
//!   memory a chunk at a time. Any `T`.
//! - **decode** ([`LinearMode::Decode`]): one block per (sequence, head, 64 value columns) of 256
//!   threads moving the state in 16-byte vectors; a global round trip per token, so it is the
//!   fast path for `T = 1` (a serving step over many sequences). Needs `V % 4 == 0`.
//!
//! [`LinearMode::Auto`] also hands long f16/bf16 `linear_attention` calls to the chunked
//! tensor-core kernel ([`super::chunked`]) when that kernel supports the shape.
//!
//! Device limits: `K <= 256` and `V <= 256` (any value; K is zero-padded to 64, 128 or 256).
//!
//! State slots: an engine keeps a [`StatePool`] `[num_slots, H, K, V]` and passes one slot index
//! per sequence ([`linear_attention_cuda_slots`], [`delta_rule_cuda_slots`]); each sequence's
//! state is read from its slot and the final state written back to it, in place.

use super::{plan_delta_rule, plan_linear, plan_rwkv4, DecayShape, LinearPlan, RecurrentOutput};
use super::{DeltaRuleArgs, DeltaRuleConfig, LinearArgs, LinearAttentionConfig, Rwkv4Args, Rwkv4Config};
use crate::error::{Error, Result};
use crate::runtime::params::{AkLinearParams, AkRwkv4Params};
use crate::runtime::kernel_list::linear as list;
use crate::runtime::view::{opt_parts_ptr, parts_of, Layout::Packed};
use crate::runtime::{self, check_views, DeviceRead, DeviceTensor, DeviceWrite, Gpu, Key, Ready};
use crate::tensor::{expect_dtype, expect_rank, expect_tensor, DType, PlannedTensors, TensorInfo};

/// Which kernel computes `linear_attention` (and `delta_rule` through [`delta_rule_cuda_mode`]).
///
/// Accuracy (spec section 0: every output within the input dtype's bound, rel L2 against
/// float64): the recurrent and decode kernels keep the state in f32 and do f32 math on the
/// inputs as given, so `final_state` lands near 1e-5 whatever the input dtype. The chunked
/// kernel rounds its tensor-core operands (the decay-scaled q and k, the state entering each
/// chunk's product) to the input dtype, so its `final_state` error sits at that dtype's rounding
/// (about 1e-4 for f16, 1e-3 for bf16): inside the spec's bound (f16 3e-3, bf16 1.5e-2), not
/// at the f32 one. `Auto` still takes the chunked kernel for long f16/bf16 inputs, for speed;
/// a caller that needs an f32-exact state from half-precision inputs asks for
/// [`LinearMode::Recurrent`] (docs/decisions.md, "Linear-attention recurrences").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LinearMode {
    /// Decode kernel when every sequence has at most [`DECODE_MAX_LEN`] tokens (and `V % 4 == 0`);
    /// else, for `linear_attention`, the chunked kernel where
    /// [`super::chunked::auto_picks_chunked`] says so (f16/bf16, `K`, `V` in {64, 128}, longest
    /// sequence at least [`super::chunked::AUTO_MIN_LEN`] = 256 tokens); else the recurrent
    /// prefill kernel. The slot calls never pick the chunked kernel. Where it picks the chunked
    /// kernel, `final_state` has the chunked kernel's input-dtype accuracy.
    #[default]
    Auto,
    /// The recurrent prefill kernel (state in registers, chunks of tokens staged): f32 state and
    /// math for every input dtype, the choice for an f32-exact `final_state`.
    Recurrent,
    /// The decode kernel (split state, 16-byte state traffic); any `T`, meant for `T = 1`.
    Decode,
    /// The chunked tensor-core kernel ([`super::chunked`]; `linear_attention` only, f16/bf16,
    /// `K`, `V` in {64, 128}).
    Chunked,
}

/// Auto picks the decode kernel when no sequence is longer than this (a guess until measured:
/// the decode kernel pays a global-memory round trip per token, the prefill one per chunk).
pub const DECODE_MAX_LEN: usize = 2;
/// Largest key dim (`K`) the kernels take.
pub const MAX_KEY_DIM: usize = 256;
/// Largest value dim (`V`) the kernels take.
pub const MAX_VALUE_DIM: usize = 256;

/// Target size of the prefill kernel's staged chunk (floats), see `prefill_geometry`.
const PREFILL_CHUNK_FLOATS: usize = 8192;
const PREFILL_MAX_CHUNK: usize = 64;

/// A pool of recurrent states for serving, `[num_slots, H, K, V]` f32, packed. Sequences name
/// their slot by index; the slot calls read and update their slots in place. The pool owns its
/// tensor (`StatePool<DeviceTensor>`) or borrows an engine's (`StatePool<DeviceViewMut>`).
pub struct StatePool<S = DeviceTensor> {
    /// `[num_slots, H, K, V]`, f32.
    pub state: S,
}

impl StatePool {
    /// A pool of `num_slots` zero states.
    pub fn new(gpu: &Gpu, num_slots: usize, heads: usize, key_dim: usize, value_dim: usize) -> Result<StatePool> {
        Ok(StatePool { state: gpu.zeros(DType::F32, &[num_slots, heads, key_dim, value_dim])? })
    }

}

impl<S: DeviceWrite> StatePool<S> {
    /// Wrap an existing `[num_slots, H, K, V]` f32 tensor, owned or borrowed.
    pub fn from_tensor(state: S) -> Result<StatePool<S>> {
        expect_dtype("pool.state", &state, &[DType::F32])?;
        expect_rank("pool.state", &state, 4, "[num_slots, H, K, V]")?;
        Ok(StatePool { state })
    }

    /// Number of slots.
    pub fn num_slots(&self) -> usize {
        self.state.shape().first().copied().unwrap_or(0)
    }
}

// ------------------------------------------------------------------------------ validation

/// Which of the two recurrent kernels runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    Prefill,
    Decode,
}

fn fits_i32(arg: &str, what: &str, x: usize) -> Result<()> {
    if x > i32::MAX as usize {
        return Err(Error::unsupported(arg, format!("{what} = {x} exceeds the kernels' 32-bit sizes")));
    }
    Ok(())
}

/// Device limits beyond the plan: head dims, 32-bit sizes, grid size.
fn check_device(plan: &LinearPlan, kernel: Kernel) -> Result<()> {
    if plan.key_dim > MAX_KEY_DIM {
        return Err(Error::unsupported("q", format!("key dim K = {} on the GPU (at most {MAX_KEY_DIM})", plan.key_dim)));
    }
    if plan.value_dim > MAX_VALUE_DIM {
        return Err(Error::unsupported(
            "v",
            format!("value dim V = {} on the GPU (at most {MAX_VALUE_DIM})", plan.value_dim),
        ));
    }
    if kernel == Kernel::Decode && plan.value_dim % 4 != 0 {
        return Err(Error::unsupported(
            "v",
            format!("value dim V = {} on the decode kernel (needs V % 4 == 0)", plan.value_dim),
        ));
    }
    fits_i32("q", "sequences", plan.n_seqs)?;
    fits_i32("q", "T", plan.t)?;
    fits_i32("q", "rows", plan.rows())?;
    let cols = match kernel {
        Kernel::Prefill => list::PREFILL_COLS,
        Kernel::Decode => list::DECODE_COLS,
    };
    let blocks = plan.n_seqs as u128 * plan.heads as u128 * plan.value_dim.div_ceil(cols) as u128;
    if blocks > i32::MAX as u128 {
        return Err(Error::unsupported("q", format!("{blocks} blocks (sequences x heads x value slices) exceed the grid")));
    }
    Ok(())
}

fn max_len(plan: &LinearPlan) -> usize {
    plan.seqs.iter().map(|s| s.1).max().unwrap_or(0)
}

fn pick_kernel(plan: &LinearPlan, mode: LinearMode) -> Result<Kernel> {
    Ok(match mode {
        LinearMode::Recurrent => Kernel::Prefill,
        LinearMode::Decode => Kernel::Decode,
        LinearMode::Auto => {
            if max_len(plan) <= DECODE_MAX_LEN && plan.value_dim % 4 == 0 {
                Kernel::Decode
            } else {
                Kernel::Prefill
            }
        }
        LinearMode::Chunked => {
            return Err(Error::unsupported("mode", "the chunked kernel computes linear_attention only"));
        }
    })
}

/// Validate a pool against a plan: f32 `[num_slots, H, K, V]`.
fn check_pool<S: DeviceWrite>(plan: &LinearPlan, pool: &StatePool<S>, num_slots: usize) -> Result<()> {
    expect_dtype("pool.state", &pool.state, &[DType::F32])?;
    let want = [num_slots, plan.heads, plan.key_dim, plan.value_dim];
    if pool.state.shape() != want {
        return Err(Error::shape(
            "pool.state",
            format!("[num_slots, {}, {}, {}] ([num_slots, H, K, V])", plan.heads, plan.key_dim, plan.value_dim),
            pool.state.shape(),
        ));
    }
    if num_slots == 0 && plan.n_seqs > 0 {
        return Err(Error::invalid("pool.state", "has no slots"));
    }
    Ok(())
}

/// Validate a slot-id list: one per sequence, each in `[0, num_slots)`, all distinct.
fn check_slot_ids(plan: &LinearPlan, num_slots: usize, slot_ids: &[i32]) -> Result<()> {
    if slot_ids.len() != plan.n_seqs {
        return Err(Error::invalid(
            "slot_ids",
            format!("needs one slot per sequence: {} sequences, {} slot ids", plan.n_seqs, slot_ids.len()),
        ));
    }
    let n = num_slots;
    let mut seen = vec![false; n];
    for (i, &s) in slot_ids.iter().enumerate() {
        if s < 0 || s as usize >= n {
            return Err(Error::invalid("slot_ids", format!("entry {i} = {s} is outside [0, {n})")));
        }
        if std::mem::replace(&mut seen[s as usize], true) {
            return Err(Error::invalid("slot_ids", format!("slot {s} appears twice (entry {i})")));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------- launch

fn decay_code(d: DecayShape) -> i32 {
    use crate::runtime::params as p;
    (match d {
        DecayShape::None => p::AkLinearDecay_AK_LINEAR_DECAY_NONE,
        DecayShape::PerTokenKey => p::AkLinearDecay_AK_LINEAR_DECAY_PER_TOKEN_KEY,
        DecayShape::PerToken => p::AkLinearDecay_AK_LINEAR_DECAY_PER_TOKEN,
        DecayShape::PerHeadKey => p::AkLinearDecay_AK_LINEAR_DECAY_PER_HEAD_KEY,
        DecayShape::PerHead => p::AkLinearDecay_AK_LINEAR_DECAY_PER_HEAD,
    }) as i32
}

/// The key-dim bin of the recurrent kernels for `K` (validated `<= MAX_KEY_DIM` first).
fn k_bin(key_dim: usize) -> Result<&'static list::Bin> {
    list::bin(key_dim).ok_or_else(|| Error::unsupported("k", format!("key dim K = {key_dim} has no recurrent kernel")))
}

/// Chunk length and dynamic shared memory (bytes) of the prefill kernel: the kernel list's
/// `PrefillLayout` formula, with as many tokens per chunk as fit the target size.
fn prefill_geometry(bin: &list::Bin, plan: &LinearPlan, delta: bool) -> (usize, usize) {
    let vec_decay = matches!(plan.decay, DecayShape::PerTokenKey | DecayShape::PerHeadKey);
    let rows = 2 + vec_decay as usize + 2 * delta as usize;
    let per_token = bin.prefill_smem_floats(1, rows) - bin.kpad();
    let chunk = (PREFILL_CHUNK_FLOATS / per_token).clamp(1, PREFILL_MAX_CHUNK);
    (chunk, 4 * bin.prefill_smem_floats(chunk, rows))
}

/// The device tensors of one `linear_attention` / `delta_rule` launch.
struct Inputs<'a, T> {
    q: &'a T,
    k: &'a T,
    v: &'a T,
    a: Option<&'a T>,
    b: Option<&'a T>,
    g: Option<&'a T>,
    u: Option<&'a T>,
    cu_seqlens: Option<&'a [i32]>,
}

impl<T> Clone for Inputs<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Inputs<'_, T> {}

/// Where the states come from and go: plain tensors, or one pool in place with slot ids.
enum States<'a, T, S> {
    Plain { initial: Option<&'a T>, out: &'a mut S },
    Pool { pool: &'a mut S },
}

/// The index data of one call on the device: cu_seqlens and slot ids, uploaded once.
struct DeviceIndex {
    cu: Option<DeviceTensor>,
    slots: Option<DeviceTensor>,
}

impl DeviceIndex {
    fn upload(gpu: &Gpu, cu_seqlens: Option<&[i32]>, slot_ids: Option<&[i32]>) -> Result<DeviceIndex> {
        let up = |v: Option<&[i32]>| v.map(|v| gpu.upload_i32(v)).transpose();
        Ok(DeviceIndex { cu: up(cu_seqlens)?, slots: up(slot_ids)? })
    }
}

/// Launch one recurrent kernel. Shapes and dtypes are validated by the callers; here the
/// device layout (every tensor packed, outputs overlapping nothing); `index` holds the
/// uploaded cu_seqlens and (for a pool) slot ids.
fn launch<T: DeviceRead, S: DeviceWrite, O: DeviceWrite>(
    gpu: &Gpu,
    plan: &LinearPlan,
    x: &Inputs<'_, T>,
    states: States<'_, T, S>,
    index: &DeviceIndex,
    kernel: Kernel,
    o: &mut O,
) -> Result<()> {
    let delta = x.a.is_some();
    check_device(plan, kernel)?;
    let (initial, state, state_arg) = match &states {
        States::Plain { initial, out } => (parts_of(*initial), out.parts(), "final_state"),
        States::Pool { pool } => (None, pool.parts(), "pool.state"),
    };
    let op = o.parts();
    check_views(
        &[
            ("q", Some(x.q.parts()), Packed),
            ("k", Some(x.k.parts()), Packed),
            ("v", Some(x.v.parts()), Packed),
            ("a", parts_of(x.a), Packed),
            ("b", parts_of(x.b), Packed),
            ("g", parts_of(x.g), Packed),
            ("u", parts_of(x.u), Packed),
            ("initial_state", initial, Packed),
        ],
        &[("o", Some(op), Packed), (state_arg, Some(state), Packed)],
    )?;
    if plan.n_seqs == 0 {
        return Ok(());
    }
    let (cu, slots) = (&index.cu, &index.slots);
    let (state_in, state_out) = match states {
        States::Plain { .. } => (initial.map_or(std::ptr::null(), |i| i.ptr()) as *const f32, state.ptr_mut() as *mut f32),
        States::Pool { .. } => {
            let ptr = state.ptr_mut() as *mut f32;
            (ptr as *const f32, ptr)
        }
    };
    let bin = k_bin(plan.key_dim)?;
    let (chunk, smem) = prefill_geometry(bin, plan, delta);
    let params = AkLinearParams {
        q: x.q.parts().ptr(),
        k: x.k.parts().ptr(),
        v: x.v.parts().ptr(),
        a: opt_parts_ptr(x.a),
        b: opt_parts_ptr(x.b),
        g: opt_parts_ptr(x.g),
        u: if delta { std::ptr::null() } else { opt_parts_ptr(x.u) },
        o: op.ptr_mut(),
        state_in,
        state_out,
        cu_seqlens: cu.as_ref().map_or(std::ptr::null(), |t| t.kernel_ptr() as *const i32),
        slot_ids: slots.as_ref().map_or(std::ptr::null(), |t| t.kernel_ptr() as *const i32),
        scale: plan.scale,
        n_seqs: plan.n_seqs as i32,
        seq_len: if plan.varlen { 0 } else { plan.t as i32 },
        heads: plan.heads as i32,
        key_dim: plan.key_dim as i32,
        value_dim: plan.value_dim as i32,
        decay_kind: decay_code(plan.decay),
        dtype: plan.dtype.kernel_code(),
        g_dtype: x.g.map_or(DType::F32, |g| g.dtype()).kernel_code(),
        u_dtype: x.u.map_or(DType::F32, |u| u.dtype()).kernel_code(),
        chunk: chunk as i32,
    };
    let blocks = |k: &crate::runtime::Kernel| plan.n_seqs * plan.heads * plan.value_dim.div_ceil(k.rows as usize);
    // The uploaded cu_seqlens / slot ids are freed stream-ordered after the launch.
    match kernel {
        Kernel::Prefill => {
            // The chunk, and so the shared memory, is chosen here: the table leaves it to the launch.
            let k = runtime::kernel("k", Key::LinearPrefill { delta, k: bin.k })?;
            gpu.launch_with(k, (blocks(k) as u32, 1, 1), k.block_dim(), smem as u32, &params)
        }
        Kernel::Decode => {
            let k = runtime::kernel("k", Key::LinearDecode { delta, k: bin.k })?;
            gpu.launch(k, (blocks(k) as u32, 1, 1), &params)
        }
    }
}

fn run_plain<T: DeviceRead, O: DeviceWrite>(
    gpu: &Gpu,
    plan: &LinearPlan,
    x: &Inputs<'_, T>,
    initial: Option<&T>,
    kernel: Kernel,
    out: &mut RecurrentOutput<O>,
) -> Result<()> {
    check_device(plan, kernel)?;
    expect_tensor("o", &out.o, plan.dtype, &plan.o_shape())?;
    expect_tensor("final_state", &out.final_state, DType::F32, &plan.state_shape())?;
    let index = DeviceIndex::upload(gpu, x.cu_seqlens, None)?;
    launch(gpu, plan, x, States::Plain { initial, out: &mut out.final_state }, &index, kernel, &mut out.o)
}

/// Outputs of a plan, allocated (poisoned on the emulated device).
fn alloc_outputs(gpu: &Gpu, plan: &LinearPlan) -> Result<RecurrentOutput<DeviceTensor>> {
    Ok(RecurrentOutput { o: gpu.alloc_output(plan.dtype, &plan.o_shape())?, final_state: gpu.alloc_output(DType::F32, &plan.state_shape())? })
}

fn run_slots<T: DeviceRead, S: DeviceWrite>(gpu: &Gpu, plan: LinearPlan, x: &Inputs<'_, T>, pool: &mut StatePool<S>, slot_ids: &[i32]) -> Result<DeviceTensor> {
    check_pool(&plan, pool, pool.num_slots())?;
    let (dtype, o_shape) = (plan.dtype, plan.o_shape());
    let launch = SlotsLaunch::prepare(gpu, plan, x, pool.num_slots(), slot_ids)?;
    let mut o = gpu.alloc_output(dtype, &o_shape)?;
    launch.enqueue(gpu, x, pool, &mut o)?;
    Ok(o)
}

/// A serving step of `linear_attention` or `delta_rule` over a [`StatePool`], planned once and
/// launched per layer (each layer has its own pool and tensors; the sequences, their lengths and
/// slots are the step's). [`SlotsLaunch::linear`] / [`SlotsLaunch::delta_rule`] validate and upload
/// cu_seqlens and the slot ids; [`SlotsLaunch::launch_linear`] / [`SlotsLaunch::launch_delta_rule`]
/// check that the tensors and the pool have the planned dtypes and shapes and enqueue the kernel
/// (no upload, no allocation).
pub struct SlotsLaunch {
    plan: LinearPlan,
    kernel: Kernel,
    delta: bool,
    /// q, k, v, a, b, g, u as planned.
    planned: PlannedTensors,
    num_slots: usize,
    index: DeviceIndex,
    uploaded: Ready,
}

const SLOT_ARGS: [&str; 7] = ["q", "k", "v", "a", "b", "g", "u"];

impl SlotsLaunch {
    /// Plan a `linear_attention` step over `num_slots` slots (tensors read for shapes only).
    pub fn linear<T: TensorInfo>(
        gpu: &Gpu,
        cfg: &LinearAttentionConfig,
        args: &LinearArgs<'_, T>,
        num_slots: usize,
        slot_ids: &[i32],
    ) -> Result<SlotsLaunch> {
        reject_initial_state(args.initial_state.is_some())?;
        let plan = plan_linear(cfg, args)?;
        let x = Inputs { q: args.q, k: args.k, v: args.v, a: None, b: None, g: args.g, u: args.u, cu_seqlens: args.cu_seqlens };
        Self::prepare(gpu, plan, &x, num_slots, slot_ids)
    }

    /// Plan a `delta_rule` step over `num_slots` slots.
    pub fn delta_rule<T: TensorInfo>(
        gpu: &Gpu,
        cfg: &DeltaRuleConfig,
        args: &DeltaRuleArgs<'_, T>,
        num_slots: usize,
        slot_ids: &[i32],
    ) -> Result<SlotsLaunch> {
        reject_initial_state(args.initial_state.is_some())?;
        let plan = plan_delta_rule(cfg, args)?;
        let x = Inputs { q: args.q, k: args.k, v: args.v, a: Some(args.a), b: Some(args.b), g: args.g, u: None, cu_seqlens: args.cu_seqlens };
        Self::prepare(gpu, plan, &x, num_slots, slot_ids)
    }

    fn prepare<T: TensorInfo>(gpu: &Gpu, plan: LinearPlan, x: &Inputs<'_, T>, num_slots: usize, slot_ids: &[i32]) -> Result<SlotsLaunch> {
        check_slot_ids(&plan, num_slots, slot_ids)?;
        let kernel = pick_kernel(&plan, LinearMode::Auto)?;
        check_device(&plan, kernel)?;
        Ok(SlotsLaunch {
            planned: PlannedTensors::of(&SLOT_ARGS, &[Some(x.q), Some(x.k), Some(x.v), x.a, x.b, x.g, x.u]),
            delta: x.a.is_some(),
            kernel,
            num_slots,
            index: DeviceIndex::upload(gpu, x.cu_seqlens, Some(slot_ids))?,
            uploaded: Ready::now(gpu)?,
            plan,
        })
    }

    /// The validated plan.
    pub fn plan(&self) -> &LinearPlan {
        &self.plan
    }

    /// Run a planned `linear_attention` step on `gpu`'s stream: the layer's tensors (`args`'s
    /// index data is the plan's and not read), its pool, in place, and `o` ([`LinearPlan::o_shape`]).
    /// Owned or borrowed tensors and pool, all packed.
    pub fn launch_linear<T: DeviceRead, S: DeviceWrite, O: DeviceWrite>(
        &self,
        gpu: &Gpu,
        args: &LinearArgs<'_, T>,
        pool: &mut StatePool<S>,
        o: &mut O,
    ) -> Result<()> {
        if self.delta {
            return Err(Error::invalid("a", "this step was planned for delta_rule"));
        }
        reject_initial_state(args.initial_state.is_some())?;
        let x = Inputs { q: args.q, k: args.k, v: args.v, a: None, b: None, g: args.g, u: args.u, cu_seqlens: None };
        self.enqueue(gpu, &x, pool, o)
    }

    /// Run a planned `delta_rule` step, as [`SlotsLaunch::launch_linear`].
    pub fn launch_delta_rule<T: DeviceRead, S: DeviceWrite, O: DeviceWrite>(
        &self,
        gpu: &Gpu,
        args: &DeltaRuleArgs<'_, T>,
        pool: &mut StatePool<S>,
        o: &mut O,
    ) -> Result<()> {
        if !self.delta {
            return Err(Error::invalid("a", "this step was planned for linear_attention"));
        }
        reject_initial_state(args.initial_state.is_some())?;
        let x = Inputs { q: args.q, k: args.k, v: args.v, a: Some(args.a), b: Some(args.b), g: args.g, u: None, cu_seqlens: None };
        self.enqueue(gpu, &x, pool, o)
    }

    fn enqueue<T: DeviceRead, S: DeviceWrite, O: DeviceWrite>(&self, gpu: &Gpu, x: &Inputs<'_, T>, pool: &mut StatePool<S>, o: &mut O) -> Result<()> {
        self.planned.check(&[Some(x.q), Some(x.k), Some(x.v), x.a, x.b, x.g, x.u])?;
        let plan = &self.plan;
        check_pool(plan, pool, self.num_slots)?;
        expect_tensor("o", o, plan.dtype, &plan.o_shape())?;
        self.uploaded.wait_on(gpu, "SlotsLaunch")?;
        // The planned index data; the tensors' own cu_seqlens are not read.
        let x = Inputs { cu_seqlens: None, ..*x };
        launch(gpu, plan, &x, States::Pool { pool: &mut pool.state }, &self.index, self.kernel, o)
    }
}

// -------------------------------------------------------------------------------- public API

/// `linear_attention` on the GPU (spec section 4): `o [B, T, H, V]` in v's dtype and the f32
/// final state `[N, H, K, V]`. `mode` picks the kernel ([`LinearMode::Auto`] for most uses).
pub fn linear_attention_cuda<T: DeviceRead>(
    gpu: &Gpu,
    cfg: &LinearAttentionConfig,
    args: &LinearArgs<'_, T>,
    mode: LinearMode,
) -> Result<RecurrentOutput<DeviceTensor>> {
    let mut out = alloc_outputs(gpu, &plan_linear(cfg, args)?)?;
    linear_attention_cuda_into(gpu, cfg, args, mode, &mut out)?;
    Ok(out)
}

/// [`linear_attention_cuda`] into caller-provided outputs (`o` in q's dtype with
/// [`LinearPlan::o_shape`], `final_state` f32 with [`LinearPlan::state_shape`]), owned or
/// borrowed; every tensor packed (as flash-linear-attention takes them).
pub fn linear_attention_cuda_into<T: DeviceRead, O: DeviceWrite>(
    gpu: &Gpu,
    cfg: &LinearAttentionConfig,
    args: &LinearArgs<'_, T>,
    mode: LinearMode,
    out: &mut RecurrentOutput<O>,
) -> Result<()> {
    let plan = plan_linear(cfg, args)?;
    let chunked = match mode {
        LinearMode::Chunked => true,
        LinearMode::Auto => pick_kernel(&plan, mode)? != Kernel::Decode && super::chunked::auto_picks_chunked(&plan),
        _ => false,
    };
    if chunked {
        return super::chunked::linear_attention_chunked_cuda_into(gpu, cfg, args, &mut out.o, &mut out.final_state);
    }
    let kernel = pick_kernel(&plan, mode)?;
    let x = Inputs { q: args.q, k: args.k, v: args.v, a: None, b: None, g: args.g, u: args.u, cu_seqlens: args.cu_seqlens };
    run_plain(gpu, &plan, &x, args.initial_state, kernel, out)
}

/// `delta_rule` on the GPU (spec section 4), kernel chosen as by [`LinearMode::Auto`].
pub fn delta_rule_cuda<T: DeviceRead>(gpu: &Gpu, cfg: &DeltaRuleConfig, args: &DeltaRuleArgs<'_, T>) -> Result<RecurrentOutput<DeviceTensor>> {
    delta_rule_cuda_mode(gpu, cfg, args, LinearMode::Auto)
}

/// `delta_rule` on the GPU with an explicit kernel choice ([`LinearMode::Chunked`] is not
/// available for the delta rule).
pub fn delta_rule_cuda_mode<T: DeviceRead>(
    gpu: &Gpu,
    cfg: &DeltaRuleConfig,
    args: &DeltaRuleArgs<'_, T>,
    mode: LinearMode,
) -> Result<RecurrentOutput<DeviceTensor>> {
    let mut out = alloc_outputs(gpu, &plan_delta_rule(cfg, args)?)?;
    delta_rule_cuda_into(gpu, cfg, args, mode, &mut out)?;
    Ok(out)
}

/// [`delta_rule_cuda_mode`] into caller-provided outputs, as [`linear_attention_cuda_into`].
pub fn delta_rule_cuda_into<T: DeviceRead, O: DeviceWrite>(
    gpu: &Gpu,
    cfg: &DeltaRuleConfig,
    args: &DeltaRuleArgs<'_, T>,
    mode: LinearMode,
    out: &mut RecurrentOutput<O>,
) -> Result<()> {
    let plan = plan_delta_rule(cfg, args)?;
    let kernel = pick_kernel(&plan, mode)?;
    let x = Inputs { q: args.q, k: args.k, v: args.v, a: Some(args.a), b: Some(args.b), g: args.g, u: None, cu_seqlens: args.cu_seqlens };
    run_plain(gpu, &plan, &x, args.initial_state, kernel, out)
}

fn reject_initial_state(given: bool) -> Result<()> {
    if given {
        return Err(Error::invalid("initial_state", "the slot calls read the states from the pool; pass no initial_state"));
    }
    Ok(())
}

/// `linear_attention` for serving: sequence `n` starts from `pool.state[slot_ids[n]]` and its
/// final state is written back there, in place. Returns `o`. `args.initial_state` must be
/// `None`; `slot_ids` holds one distinct slot per sequence (`B`, or `N` with varlen). With every
/// sequence at most [`DECODE_MAX_LEN`] tokens long (e.g. `q [N, 1, H, K]`) this is the decode path.
pub fn linear_attention_cuda_slots<T: DeviceRead, S: DeviceWrite>(
    gpu: &Gpu,
    cfg: &LinearAttentionConfig,
    args: &LinearArgs<'_, T>,
    pool: &mut StatePool<S>,
    slot_ids: &[i32],
) -> Result<DeviceTensor> {
    reject_initial_state(args.initial_state.is_some())?;
    let plan = plan_linear(cfg, args)?;
    let x = Inputs { q: args.q, k: args.k, v: args.v, a: None, b: None, g: args.g, u: args.u, cu_seqlens: args.cu_seqlens };
    run_slots(gpu, plan, &x, pool, slot_ids)
}

/// `delta_rule` for serving, as [`linear_attention_cuda_slots`].
pub fn delta_rule_cuda_slots<T: DeviceRead, S: DeviceWrite>(
    gpu: &Gpu,
    cfg: &DeltaRuleConfig,
    args: &DeltaRuleArgs<'_, T>,
    pool: &mut StatePool<S>,
    slot_ids: &[i32],
) -> Result<DeviceTensor> {
    reject_initial_state(args.initial_state.is_some())?;
    let plan = plan_delta_rule(cfg, args)?;
    let x = Inputs { q: args.q, k: args.k, v: args.v, a: Some(args.a), b: Some(args.b), g: args.g, u: None, cu_seqlens: args.cu_seqlens };
    run_slots(gpu, plan, &x, pool, slot_ids)
}

/// `rwkv4` on the GPU (spec section 4): `y [B, T, C]` in v's dtype (returned as `o`) and the
/// final state `(aa, bb, pp)` as `[B, 3, C]` f32.
pub fn rwkv4_cuda<T: DeviceRead>(gpu: &Gpu, cfg: &Rwkv4Config, args: &Rwkv4Args<'_, T>) -> Result<RecurrentOutput<DeviceTensor>> {
    let plan = plan_rwkv4(cfg, args)?;
    let mut out = RecurrentOutput {
        o: gpu.alloc_output(plan.dtype, &[plan.batch, plan.t, plan.channels])?,
        final_state: gpu.alloc_output(DType::F32, &[plan.batch, 3, plan.channels])?,
    };
    rwkv4_cuda_into(gpu, cfg, args, &mut out)?;
    Ok(out)
}

/// [`rwkv4_cuda`] into caller-provided outputs (`o [B, T, C]` in k's dtype, `final_state
/// [B, 3, C]` f32), owned or borrowed; every tensor packed.
pub fn rwkv4_cuda_into<T: DeviceRead, O: DeviceWrite>(gpu: &Gpu, cfg: &Rwkv4Config, args: &Rwkv4Args<'_, T>, out: &mut RecurrentOutput<O>) -> Result<()> {
    let plan = plan_rwkv4(cfg, args)?;
    fits_i32("k", "B", plan.batch)?;
    fits_i32("k", "T", plan.t)?;
    fits_i32("k", "C", plan.channels)?;
    let dtype = plan.dtype.kernel_dt().ok_or_else(|| Error::DType {
        arg: "k".into(),
        expected: "f32, f16 or bf16".into(),
        got: plan.dtype,
    })?;
    expect_tensor("o", &out.o, plan.dtype, &[plan.batch, plan.t, plan.channels])?;
    expect_tensor("final_state", &out.final_state, DType::F32, &[plan.batch, 3, plan.channels])?;
    let (yp, fp) = (out.o.parts(), out.final_state.parts());
    check_views(
        &[
            ("k", Some(args.k.parts()), Packed),
            ("v", Some(args.v.parts()), Packed),
            ("w", Some(args.w.parts()), Packed),
            ("u", Some(args.u.parts()), Packed),
            ("initial_state", parts_of(args.initial_state), Packed),
        ],
        &[("o", Some(yp), Packed), ("final_state", Some(fp), Packed)],
    )?;
    let kernel = runtime::kernel("k", Key::Rwkv4 { dtype })?;
    // One thread per (batch, channel).
    let blocks = (plan.batch * plan.channels).div_ceil(kernel.rows as usize);
    fits_i32("k", "blocks", blocks)?;
    let params = AkRwkv4Params {
        k: args.k.parts().ptr(),
        v: args.v.parts().ptr(),
        w: args.w.parts().ptr() as *const f32,
        u: args.u.parts().ptr() as *const f32,
        y: yp.ptr_mut(),
        state_in: opt_parts_ptr(args.initial_state) as *const f32,
        state_out: fp.ptr_mut() as *mut f32,
        batch: plan.batch as i32,
        seq_len: plan.t as i32,
        channels: plan.channels as i32,
        dtype: plan.dtype.kernel_code(),
    };
    gpu.launch(kernel, (blocks as u32, 1, 1), &params)
}
