//! CUDA path of RoPE: the device copy of the exact-angle tables (shared with fused attention)
//! and the standalone kernel launch.

use super::{plan_rope, ResolvedRope, RopeArgs, RopeOpConfig, RopePlan};
use crate::error::{Error, Result};
use crate::runtime::params::{AkRopeParams, AkRopeTable};
use crate::runtime::kernel_list::rope::MAX_ROTARY_DIM;
use crate::runtime::view::Layout::Strided;
use crate::runtime::{check_views, kernel, DeviceRead, DeviceTensor, DeviceWrite, Gpu, Kernel, Key, RawParts, Ready};
use crate::tensor::{DType, Tensor, TensorInfo};
use std::sync::Arc;

/// The two-level cos/sin table of one resolved RoPE on one device (see `AkRopeTable`).
pub struct DeviceRopeTable {
    lo: DeviceTensor,
    hi: DeviceTensor,
    n_hi: usize,
    resolved: ResolvedRope,
}

impl DeviceRopeTable {
    /// Build on the host in f64 and upload. Covers positions `0..=max_pos`, and at least `0..2^20`.
    pub fn new(gpu: &Gpu, resolved: &ResolvedRope, max_pos: usize) -> Result<DeviceRopeTable> {
        let (lo, hi, n_hi) = resolved.host_tables(max_pos);
        let half = resolved.rotary_dim / 2;
        let lo = gpu.upload(&Tensor::from_f32(DType::F32, &[lo.len() / (2 * half), half, 2], &lo)?)?;
        let hi = gpu.upload(&Tensor::from_f32(DType::F32, &[n_hi, half, 2], &hi)?)?;
        Ok(DeviceRopeTable { lo, hi, n_hi, resolved: resolved.clone() })
    }

    /// Largest position the table covers.
    pub fn max_position(&self) -> usize {
        self.n_hi * crate::runtime::params::AK_ROPE_LO_SIZE as usize - 1
    }

    /// The struct kernels take.
    pub fn params(&self) -> AkRopeTable {
        AkRopeTable {
            lo: self.lo.kernel_ptr() as *const f32,
            hi: self.hi.kernel_ptr() as *const f32,
            n_hi: self.n_hi as i32,
            rotary_dim: self.resolved.rotary_dim as i32,
            interleaved: self.resolved.interleaved as i32,
            attention_factor: self.resolved.attention_factor as f32,
        }
    }
}

/// The "no RoPE" table (`lo == NULL`).
pub fn no_rope() -> AkRopeTable {
    AkRopeTable::default()
}

/// The table for `resolved` covering `max_pos`, built once per device and cached.
pub fn rope_table(gpu: &Gpu, resolved: &ResolvedRope, max_pos: usize) -> Result<Arc<DeviceRopeTable>> {
    let lo_rows = crate::runtime::params::AK_ROPE_LO_SIZE as usize;
    let n_hi = (max_pos / lo_rows + 1).max(lo_rows);
    let mut key = format!("rope:{}:{}:{:x}:{n_hi}", resolved.rotary_dim, resolved.interleaved, resolved.attention_factor.to_bits());
    for f in &resolved.inv_freq {
        key.push_str(&format!(":{:x}", f.to_bits()));
    }
    gpu.cached(&key, || DeviceRopeTable::new(gpu, resolved, max_pos))
}

/// Standalone RoPE planned once (positions validated and uploaded, table resolved) and launched
/// for every tensor of that shape: an engine rotates q and k of every layer with the same
/// positions. [`RopeLaunch::launch`] / [`RopeLaunch::launch_inplace`] check the tensor against the
/// plan and enqueue the kernel (no upload, no allocation).
pub struct RopeLaunch {
    plan: RopePlan,
    shape: Vec<usize>,
    position_offset: i64,
    kernel: &'static Kernel,
    table: Arc<DeviceRopeTable>,
    ids: Option<DeviceTensor>,
    uploaded: Ready,
}

impl RopeLaunch {
    /// Validate and prepare a rotation of tensors shaped like `args.x`.
    pub fn new<T: TensorInfo>(gpu: &Gpu, cfg: &RopeOpConfig, args: &RopeArgs<'_, T>) -> Result<RopeLaunch> {
        let plan = plan_rope(cfg, args)?;
        if plan.resolved.rotary_dim > MAX_ROTARY_DIM {
            return Err(Error::unsupported(
                "rope.rotary_dim",
                format!("{} > {MAX_ROTARY_DIM} on the GPU kernel", plan.resolved.rotary_dim),
            ));
        }
        let dtype = plan.dtype.kernel_dt().ok_or_else(|| Error::DType {
            arg: "x".into(),
            expected: "f32, f16 or bf16".into(),
            got: plan.dtype,
        })?;
        let table = rope_table(gpu, &plan.resolved, plan.max_position)?;
        // Positions are resolved and validated on the host; upload them unless the plain
        // `offset + row % seqlen` rule reproduces them.
        let ids = if args.position_ids.is_some() || args.cu_seqlens.is_some() {
            let ids: Vec<i32> = plan.positions.iter().map(|&p| p as i32).collect();
            Some(gpu.upload_i32(&ids)?)
        } else {
            None
        };
        Ok(RopeLaunch {
            shape: args.x.shape().to_vec(),
            position_offset: cfg.position_offset,
            kernel: kernel("x", Key::Rope { dtype })?,
            table,
            ids,
            uploaded: Ready::now(gpu)?,
            plan,
        })
    }

    /// The validated plan.
    pub fn plan(&self) -> &RopePlan {
        &self.plan
    }

    /// `t` has the planned dtype and shape, 16-byte aligned rows if they are a multiple of 16
    /// bytes, and rows at one stride (a rank-4 `[B, S, H, D]` needs batch stride = S x row
    /// stride); returns its parts.
    fn check<T: DeviceRead>(&self, arg: &str, t: &T) -> Result<RawParts> {
        crate::tensor::expect_tensor(arg, t, self.plan.dtype, &self.shape)?;
        let parts = t.parts();
        check_views(&[(arg, Some(parts), Strided)], &[])?;
        if self.shape.len() == 4 && self.shape[0] > 1 && parts.stride(0) != parts.stride(1) * self.shape[1] as i64 {
            return Err(Error::invalid(
                arg,
                format!("batch stride {} must be S x the row stride ({} x {}): the kernel walks rows at one stride", parts.stride(0), self.shape[1], parts.stride(1)),
            ));
        }
        Ok(parts)
    }

    /// Rotate `x` into `y` (both with the planned shape and dtype, owned or borrowed, any row
    /// and head strides) on `gpu`'s stream.
    pub fn launch<T: DeviceRead, O: DeviceWrite>(&self, gpu: &Gpu, x: &T, y: &mut O) -> Result<()> {
        let (xp, yp) = (self.check("x", x)?, self.check("y", y)?);
        check_views(&[("x", Some(xp), Strided)], &[("y", Some(yp), Strided)])?;
        self.enqueue(gpu, xp, yp)
    }

    /// Rotate `x` in place.
    pub fn launch_inplace<O: DeviceWrite>(&self, gpu: &Gpu, x: &mut O) -> Result<()> {
        let p = self.check("x", x)?;
        self.enqueue(gpu, p, p)
    }

    fn enqueue(&self, gpu: &Gpu, x: RawParts, y: RawParts) -> Result<()> {
        self.uploaded.wait_on(gpu, "RopeLaunch")?;
        let plan = &self.plan;
        if plan.rows == 0 || self.shape.iter().product::<usize>() == 0 {
            return Ok(());
        }
        // Rows are the dimension before the heads: [B, S, H, D] walks S (B collapses onto it).
        let r = self.shape.len() - 3;
        let params = AkRopeParams {
            x: x.ptr(),
            y: y.ptr_mut(),
            position_ids: self.ids.as_ref().map_or(std::ptr::null(), |t| t.kernel_ptr() as *const i32),
            table: self.table.params(),
            x_row_stride: x.stride(r),
            x_head_stride: x.stride(r + 1),
            y_row_stride: y.stride(r),
            y_head_stride: y.stride(r + 1),
            rows: plan.rows as i32,
            seqlen: plan.seqlen.max(1) as i32,
            heads: plan.heads as i32,
            head_dim: plan.head_dim as i32,
            position_offset: self.position_offset as i32,
            dtype: plan.dtype.kernel_code(),
        };
        // One block per row; threads stride over (head, pair).
        gpu.launch(self.kernel, (plan.rows as u32, 1, 1), &params)
    }
}

/// Rotate `x` into a new device tensor.
pub fn rope_cuda<T: DeviceRead>(gpu: &Gpu, cfg: &RopeOpConfig, args: &RopeArgs<'_, T>) -> Result<DeviceTensor> {
    let launch = RopeLaunch::new(gpu, cfg, args)?;
    let mut y = gpu.alloc_output(args.x.dtype(), args.x.shape())?;
    launch.launch(gpu, args.x, &mut y)?;
    Ok(y)
}

/// Rotate `x` into `y` (same shape and dtype).
pub fn rope_cuda_into<T: DeviceRead, O: DeviceWrite>(gpu: &Gpu, cfg: &RopeOpConfig, args: &RopeArgs<'_, T>, y: &mut O) -> Result<()> {
    let launch = RopeLaunch::new(gpu, cfg, args)?;
    crate::tensor::expect_shape("y", y, args.x.shape())?;
    crate::tensor::expect_same_dtype("y", y, "x", args.x.dtype())?;
    launch.launch(gpu, args.x, y)
}

/// Rotate `x` in place.
pub fn rope_cuda_inplace<O: DeviceWrite>(
    gpu: &Gpu,
    cfg: &RopeOpConfig,
    x: &mut O,
    position_ids: Option<&[i32]>,
    cu_seqlens: Option<&[i32]>,
) -> Result<()> {
    let launch = RopeLaunch::new(gpu, cfg, &RopeArgs { x, position_ids, cu_seqlens })?;
    launch.launch_inplace(gpu, x)
}
