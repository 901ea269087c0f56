//! Borrowed device tensors: views of device memory another library owns (an engine's KV cache,
//! candle's or PyTorch's storage), so every op can read and write it in place, on the caller's
//! stream ([`Gpu::with_stream`](super::Gpu::with_stream)), with no copy and no allocation.
//!
//! - [`DeviceView`] (read) and [`DeviceViewMut`] (written): a device address, dtype, shape and
//!   element strides. The last dimension is contiguous (stride 1); the other strides are free, as
//!   FlashAttention accepts. Made from raw parts with `unsafe` [`DeviceView::from_raw`], or
//!   safely from an owned [`DeviceTensor`] ([`DeviceTensor::view`], [`DeviceTensor::view_mut`]).
//! - [`DeviceRead`] / [`DeviceWrite`]: what the CUDA paths take, implemented by the owned tensor
//!   and both views, so the same call serves owned and borrowed memory.
//!
//! What a view guarantees once made: the address is not null (unless it has no elements), is
//! aligned to its element, every element it addresses lies inside the `len_bytes` its maker
//! vouched for, and (for [`DeviceViewMut`]) no two elements share an address. What an op checks
//! at each launch, naming its argument: dtype and shape as planned, 16-byte alignment where its
//! kernels load 16 bytes at a time, contiguity where its kernels take only the packed layout, and
//! that no output overlaps an input or another output.

use super::DeviceTensor;
use crate::error::{Error, Result};
use crate::tensor::{DType, TensorInfo};
use std::marker::PhantomData;

/// The largest rank of a view (the ops' tensors have rank 1 to 4).
pub const MAX_RANK: usize = 6;

/// A shape or stride list held inline (no allocation per launch).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    len: u8,
    dims: [usize; MAX_RANK],
}

impl Dims {
    fn new(arg: &str, values: &[usize]) -> Result<Dims> {
        if values.len() > MAX_RANK {
            return Err(Error::invalid(arg, format!("rank {} exceeds the largest supported rank {MAX_RANK}", values.len())));
        }
        let mut dims = [0; MAX_RANK];
        dims[..values.len()].copy_from_slice(values);
        Ok(Dims { len: values.len() as u8, dims })
    }

    /// Row-major contiguous strides of `shape` (of rank at most [`MAX_RANK`]; a longer shape
    /// gets the strides of its first [`MAX_RANK`] dimensions).
    fn packed(shape: &[usize]) -> Dims {
        let shape = &shape[..shape.len().min(MAX_RANK)];
        let mut dims = [0; MAX_RANK];
        let mut acc = 1usize;
        for (i, &d) in shape.iter().enumerate().rev() {
            dims[i] = acc;
            acc = acc.saturating_mul(d);
        }
        Dims { len: shape.len() as u8, dims }
    }

    pub fn as_slice(&self) -> &[usize] {
        &self.dims[..self.len as usize]
    }
}

impl std::fmt::Debug for Dims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_slice())
    }
}

/// The parts of a device tensor a launch needs, owned or borrowed alike.
#[derive(Clone, Copy, Debug)]
pub struct RawParts {
    /// Device address of element 0.
    pub addr: u64,
    pub dtype: DType,
    pub shape: Dims,
    /// Element strides, one per dimension.
    pub strides: Dims,
}

impl RawParts {
    /// Element stride of dimension `dim` as the kernels' `long long`.
    pub fn stride(&self, dim: usize) -> i64 {
        self.strides.as_slice()[dim] as i64
    }

    /// The address for a kernel parameter struct (read-only use).
    pub fn ptr(&self) -> *const std::ffi::c_void {
        self.addr as usize as *const std::ffi::c_void
    }

    /// The address for a kernel parameter struct (the kernel writes through it).
    pub fn ptr_mut(&self) -> *mut std::ffi::c_void {
        self.addr as usize as *mut std::ffi::c_void
    }

    /// `(batch, row, head)` element strides of a sequence tensor: dense `[B, S, H, D]`, or varlen
    /// `[total, H, D]` (rows `cu[b] + i`, batch stride 0), as the prefill kernels take them.
    pub fn seq_strides(&self, varlen: bool) -> (i64, i64, i64) {
        if varlen {
            (0, self.stride(0), self.stride(1))
        } else {
            (self.stride(0), self.stride(1), self.stride(2))
        }
    }

    /// Offset in elements of the last element (None: no elements).
    fn last_offset(&self) -> Option<usize> {
        let shape = self.shape.as_slice();
        if shape.contains(&0) {
            return None;
        }
        // Checked when the view was made (`extent`), so this cannot overflow.
        Some(shape.iter().zip(self.strides.as_slice()).map(|(&d, &s)| (d - 1) * s).sum())
    }

    /// The bytes `[start, end)` the tensor's elements span (None: no elements).
    pub fn byte_range(&self) -> Option<(u64, u64)> {
        let size = self.dtype.size() as u64;
        self.last_offset().map(|last| (self.addr, self.addr + (last as u64 + 1) * size))
    }

    /// Strides equal to the row-major packed ones (dimensions of extent 1 may have any stride).
    pub fn is_packed(&self) -> bool {
        let packed = Dims::packed(self.shape.as_slice());
        self.shape.as_slice().iter().zip(self.strides.as_slice()).zip(packed.as_slice()).all(|((&d, &s), &p)| d <= 1 || s == p)
    }

    /// The address and every stride of a dimension longer than 1, in bytes, are multiples of
    /// `align` (the last dimension's stride is 1 and is not counted).
    fn is_aligned(&self, align: u64) -> bool {
        let size = self.dtype.size() as u64;
        let rank = self.shape.len as usize;
        self.addr % align == 0
            && (0..rank.saturating_sub(1))
                .all(|i| self.shape.as_slice()[i] <= 1 || (self.strides.as_slice()[i] as u64 * size) % align == 0)
    }
}

/// Check the layout rules every view obeys; `writable` adds "no two elements share an address".
fn check_layout(addr: u64, len_bytes: usize, dtype: DType, shape: &[usize], strides: &[usize], writable: bool) -> Result<RawParts> {
    let parts = RawParts { addr, dtype, shape: Dims::new("shape", shape)?, strides: Dims::new("strides", strides)? };
    if strides.len() != shape.len() {
        return Err(Error::invalid("strides", format!("{} strides for a rank-{} shape {shape:?}", strides.len(), shape.len())));
    }
    if shape.contains(&0) {
        return Ok(parts); // no element is ever addressed
    }
    if addr == 0 {
        return Err(Error::invalid("ptr", "null device pointer for a view with elements"));
    }
    let size = dtype.size();
    if addr % size as u64 != 0 {
        return Err(Error::invalid("ptr", format!("{addr:#x} is not aligned to its {size}-byte {dtype} elements")));
    }
    if let (Some(&last), Some(&stride)) = (shape.last(), strides.last()) {
        if last > 1 && stride != 1 {
            return Err(Error::invalid("strides", format!("the last dimension must be contiguous (stride 1), got {strides:?}")));
        }
    }
    // Offset of the last element, in bytes, without overflow.
    let mut last = 0usize;
    for (&d, &s) in shape.iter().zip(strides) {
        last = (d - 1).checked_mul(s).and_then(|o| last.checked_add(o)).ok_or_else(|| {
            Error::invalid("strides", format!("shape {shape:?} with strides {strides:?} addresses beyond usize"))
        })?;
    }
    let end = last.checked_add(1).and_then(|n| n.checked_mul(size)).filter(|&e| (addr as u128 + e as u128) <= u64::MAX as u128);
    match end {
        Some(end) if end <= len_bytes => {}
        _ => {
            return Err(Error::invalid(
                "len_bytes",
                format!("shape {shape:?} with strides {strides:?} of {dtype} spans more than the {len_bytes} bytes given"),
            ))
        }
    }
    if writable && !is_one_to_one(shape, strides) {
        return Err(Error::invalid(
            "strides",
            format!("shape {shape:?} with strides {strides:?} gives two elements one address: an output cannot"),
        ));
    }
    Ok(parts)
}

/// The dimensions longer than 1, as (extent, stride), largest stride first.
fn nested_dims(shape: &[usize], strides: &[usize]) -> Vec<(usize, usize)> {
    let mut dims: Vec<(usize, usize)> = shape.iter().copied().zip(strides.iter().copied()).filter(|&(d, _)| d > 1).collect();
    dims.sort_by_key(|&(_, s)| std::cmp::Reverse(s));
    dims
}

/// Every stride steps over everything the smaller strides span, so distinct indices have
/// distinct offsets (sufficient, and what every real layout satisfies). The layout must already
/// fit in usize (`check_layout` checks the extent first).
fn is_one_to_one(shape: &[usize], strides: &[usize]) -> bool {
    let mut span = 1usize; // elements covered by the dimensions so far, smallest stride first
    for (d, s) in nested_dims(shape, strides).into_iter().rev() {
        if s < span {
            return false;
        }
        span += s * (d - 1);
    }
    true
}

/// Whether two tensors may share a byte. Disjoint spans never do. Two tensors with one shape and
/// one one-to-one layout at different addresses (K and V interleaved in one cache, the heads of a
/// fused QKV buffer) share an element exactly when the address difference is a sum of
/// `c_d x stride_d` with `|c_d| < extent_d`; with nested strides each `c_d` is the floor or the
/// ceiling of what remains over the stride, so a search of at most 2^rank paths decides it. Any
/// other pair with intersecting spans counts as overlapping.
fn may_overlap(a: &RawParts, b: &RawParts) -> bool {
    let (Some(ra), Some(rb)) = (a.byte_range(), b.byte_range()) else { return false };
    if !(ra.0 < rb.1 && rb.0 < ra.1) {
        return false;
    }
    let size = a.dtype.size() as i128;
    let same_layout = a.dtype.size() == b.dtype.size() && a.shape == b.shape && a.strides == b.strides;
    let diff = b.addr as i128 - a.addr as i128;
    if !same_layout || diff % size != 0 || !is_one_to_one(a.shape.as_slice(), a.strides.as_slice()) {
        return true;
    }
    fn reachable(rest: i128, dims: &[(usize, usize)]) -> bool {
        let Some((&(n, s), inner)) = dims.split_first() else { return rest == 0 };
        let (n, s) = (n as i128, s as i128);
        let lo = rest.div_euclid(s);
        [lo, lo + 1].into_iter().any(|c| c.abs() < n && reachable(rest - c * s, inner))
    }
    reachable(diff / size, &nested_dims(a.shape.as_slice(), a.strides.as_slice()))
}

/// `shape` (rank at most [`MAX_RANK`]) as an inline array.
fn dims_of(shape: &[usize]) -> [usize; MAX_RANK] {
    let mut dims = [0; MAX_RANK];
    dims[..shape.len()].copy_from_slice(shape);
    dims
}

/// A read-only view of device memory the caller owns, valid for `'a`.
#[derive(Clone, Copy, Debug)]
pub struct DeviceView<'a> {
    parts: RawParts,
    _borrow: PhantomData<&'a ()>,
}

/// A writable view of device memory the caller owns, valid for `'a`; no two of its elements
/// share an address.
#[derive(Debug)]
pub struct DeviceViewMut<'a> {
    parts: RawParts,
    _borrow: PhantomData<&'a mut ()>,
}

impl<'a> DeviceView<'a> {
    /// A view of `len_bytes` of device memory at `ptr`, holding `shape` elements of `dtype` at
    /// element `strides` (the last one 1). Errors name `ptr`, `len_bytes`, `shape` or `strides`:
    /// a null or misaligned address, a layout that reaches past `len_bytes`, a non-unit last
    /// stride, a rank above [`MAX_RANK`].
    ///
    /// # Safety
    /// `ptr .. ptr + len_bytes` must be device memory of the context the view will be used with
    /// (a [`Gpu`](super::Gpu) of the same device; CUDA's primary context, which the runtime API
    /// and candle use), readable by kernels for all of `'a`, and not written by anyone while an
    /// op reading it may still be running, unless the caller orders that write after it on the
    /// stream.
    pub unsafe fn from_raw(ptr: u64, len_bytes: usize, dtype: DType, shape: &[usize], strides: &[usize]) -> Result<DeviceView<'a>> {
        Ok(DeviceView { parts: check_layout(ptr, len_bytes, dtype, shape, strides, false)?, _borrow: PhantomData })
    }

    /// The same memory as a row-major packed tensor of `shape`.
    ///
    /// # Safety
    /// As [`DeviceView::from_raw`].
    pub unsafe fn from_raw_packed(ptr: u64, len_bytes: usize, dtype: DType, shape: &[usize]) -> Result<DeviceView<'a>> {
        let strides = Dims::packed(shape);
        // SAFETY: the caller's promise, passed on.
        unsafe { Self::from_raw(ptr, len_bytes, dtype, shape, strides.as_slice()) }
    }
}

impl<'a> DeviceViewMut<'a> {
    /// As [`DeviceView::from_raw`], for memory kernels write; also refuses strides that give two
    /// elements one address (`strides`).
    ///
    /// # Safety
    /// As [`DeviceView::from_raw`], and the memory must be writable by kernels and not read or
    /// written by anyone else while an op writing it may still be running (unless ordered after
    /// it on the stream).
    pub unsafe fn from_raw(ptr: u64, len_bytes: usize, dtype: DType, shape: &[usize], strides: &[usize]) -> Result<DeviceViewMut<'a>> {
        Ok(DeviceViewMut { parts: check_layout(ptr, len_bytes, dtype, shape, strides, true)?, _borrow: PhantomData })
    }

    /// The same memory as a row-major packed tensor of `shape`.
    ///
    /// # Safety
    /// As [`DeviceViewMut::from_raw`].
    pub unsafe fn from_raw_packed(ptr: u64, len_bytes: usize, dtype: DType, shape: &[usize]) -> Result<DeviceViewMut<'a>> {
        let strides = Dims::packed(shape);
        // SAFETY: the caller's promise, passed on.
        unsafe { Self::from_raw(ptr, len_bytes, dtype, shape, strides.as_slice()) }
    }

    /// A read-only view of the same memory, borrowing this one.
    pub fn as_view(&self) -> DeviceView<'_> {
        DeviceView { parts: self.parts, _borrow: PhantomData }
    }
}

impl DeviceTensor {
    /// A read-only view of this tensor (packed strides).
    pub fn view(&self) -> DeviceView<'_> {
        DeviceView { parts: self.raw_parts(), _borrow: PhantomData }
    }

    /// A writable view of this tensor (packed strides).
    pub fn view_mut(&mut self) -> DeviceViewMut<'_> {
        DeviceViewMut { parts: self.raw_parts(), _borrow: PhantomData }
    }

    fn raw_parts(&self) -> RawParts {
        // An op's tensors have rank 1 to 4. A longer (packed) shape is seen with its leading
        // dimensions merged into one, rank MAX_RANK, which every op's shape check refuses.
        let shape = self.shape();
        let merged;
        let shape = if shape.len() > MAX_RANK {
            let cut = shape.len() - MAX_RANK + 1;
            merged = std::iter::once(shape[..cut].iter().product()).chain(shape[cut..].iter().copied()).collect::<Vec<usize>>();
            &merged[..]
        } else {
            shape
        };
        let dims = Dims::packed(shape);
        RawParts { addr: self.kernel_ptr() as usize as u64, dtype: self.dtype(), shape: Dims { len: dims.len, dims: dims_of(shape) }, strides: dims }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::DeviceTensor {}
    impl Sealed for super::DeviceView<'_> {}
    impl Sealed for super::DeviceViewMut<'_> {}
}

/// A device tensor an op may read: the owned [`DeviceTensor`] or a borrowed view. Sealed: the
/// layout rules above hold for every implementation.
pub trait DeviceRead: TensorInfo + sealed::Sealed {
    /// Address, dtype, shape and strides.
    fn parts(&self) -> RawParts;
}

/// A device tensor an op may write: the owned [`DeviceTensor`] or a [`DeviceViewMut`].
pub trait DeviceWrite: DeviceRead {}

impl DeviceRead for DeviceTensor {
    fn parts(&self) -> RawParts {
        self.raw_parts()
    }
}
impl DeviceWrite for DeviceTensor {}

impl TensorInfo for DeviceView<'_> {
    fn dtype(&self) -> DType {
        self.parts.dtype
    }
    fn shape(&self) -> &[usize] {
        self.parts.shape.as_slice()
    }
}
impl DeviceRead for DeviceView<'_> {
    fn parts(&self) -> RawParts {
        self.parts
    }
}

impl TensorInfo for DeviceViewMut<'_> {
    fn dtype(&self) -> DType {
        self.parts.dtype
    }
    fn shape(&self) -> &[usize] {
        self.parts.shape.as_slice()
    }
}
impl DeviceRead for DeviceViewMut<'_> {
    fn parts(&self) -> RawParts {
        self.parts
    }
}
impl DeviceWrite for DeviceViewMut<'_> {}

/// How an op's kernels address a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Any strides (last dimension contiguous); 16-byte loads need 16-byte aligned rows.
    Strided,
    /// Only the row-major packed layout.
    Packed,
}

/// The launch-time checks of an op's device tensors, each error naming its argument:
/// - alignment: a tensor whose rows are a multiple of 16 bytes (the kernels may load them 16
///   bytes at a time) starts on 16 bytes and has outer strides that are multiples of 16 bytes;
///   any other is element-aligned (a view is by construction);
/// - `Layout::Packed` tensors are packed;
/// - no output shares an element with an input or another output. Tensors of one shape and
///   layout are compared element by element (K and V interleaved in one cache are disjoint);
///   others by their spans `[first byte, last byte]`, which is conservative.
pub fn check_views(inputs: &[(&str, Option<RawParts>, Layout)], outputs: &[(&str, Option<RawParts>, Layout)]) -> Result<()> {
    for (arg, parts, layout) in inputs.iter().chain(outputs) {
        let Some(p) = parts else { continue };
        if p.shape.as_slice().contains(&0) {
            continue;
        }
        let row_bytes = p.shape.as_slice().last().copied().unwrap_or(1) * p.dtype.size();
        if row_bytes % 16 == 0 && !p.is_aligned(16) {
            return Err(Error::invalid(
                *arg,
                format!(
                    "misaligned: address {:#x} and strides {:?} (x {} bytes) must be multiples of 16 bytes",
                    p.addr,
                    p.strides,
                    p.dtype.size()
                ),
            ));
        }
        if *layout == Layout::Packed && !p.is_packed() {
            return Err(Error::invalid(
                *arg,
                format!("must be packed row-major for this op (shape {:?}, strides {:?})", p.shape, p.strides),
            ));
        }
    }
    for (i, (out_arg, out, _)) in outputs.iter().enumerate() {
        let others = inputs.iter().chain(outputs.iter().take(i));
        for (arg, parts, _) in others {
            if let (Some(o), Some(p)) = (out, parts) {
                if may_overlap(o, p) {
                    return Err(Error::invalid(*out_arg, format!("overlaps `{arg}` in device memory")));
                }
            }
        }
    }
    Ok(())
}

/// [`RawParts`] of an optional tensor.
pub fn parts_of<T: DeviceRead + ?Sized>(t: Option<&T>) -> Option<RawParts> {
    t.map(|t| t.parts())
}

/// The address of an optional tensor for a kernel parameter struct (null when absent).
pub fn opt_parts_ptr<T: DeviceRead + ?Sized>(t: Option<&T>) -> *const std::ffi::c_void {
    t.map_or(std::ptr::null(), |t| t.parts().ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(addr: u64, shape: &[usize], strides: &[usize]) -> RawParts {
        check_layout(addr, usize::MAX / 4, DType::BF16, shape, strides, false).unwrap()
    }

    #[test]
    fn interleaved_k_and_v_are_disjoint_and_a_shift_by_one_element_is_not() {
        // A cache [blocks, rows, 2, H, D] with K at offset 0 and V at offset H D.
        let (h, d) = (2usize, 64usize);
        let shape = [3, 16, h, d];
        let strides = [16 * 2 * h * d, 2 * h * d, d, 1];
        let base = 1 << 20;
        let k = parts(base, &shape, &strides);
        let v = parts(base + (h * d * 2) as u64, &shape, &strides);
        assert!(!may_overlap(&k, &v) && !may_overlap(&v, &k));
        let v_early = parts(base + ((h * d - 1) * 2) as u64, &shape, &strides);
        assert!(may_overlap(&k, &v_early) && may_overlap(&v_early, &k));
        // The next block's K is V of no row: disjoint spans shifted by a whole block overlap K's.
        let k_next = parts(base + (16 * 2 * h * d * 2) as u64, &shape, &strides);
        assert!(may_overlap(&k, &k_next), "blocks 1 and 2 of one are blocks 0 and 1 of the other");
        // Different layouts with intersecting spans count as overlapping.
        let packed = parts(base + (h * d * 2) as u64, &shape, Dims::packed(&shape).as_slice());
        assert!(may_overlap(&k, &packed));
        // Disjoint spans never overlap.
        let far = parts(base + (1 << 24), &shape, &strides);
        assert!(!may_overlap(&k, &far));
    }

    #[test]
    fn packed_strides_of_any_rank() {
        assert_eq!(Dims::packed(&[2, 3, 4]).as_slice(), &[12, 4, 1]);
        assert_eq!(Dims::packed(&[]).as_slice(), &[] as &[usize]);
        assert_eq!(Dims::packed(&[2; 8]).as_slice(), &[32, 16, 8, 4, 2, 1], "cut to MAX_RANK, never a panic");
    }

    #[test]
    fn one_to_one_layouts() {
        assert!(is_one_to_one(&[4, 8, 64], &[512, 64, 1]));
        assert!(is_one_to_one(&[4, 8, 64], &[1024, 128, 1]));
        assert!(!is_one_to_one(&[4, 8, 64], &[0, 64, 1]));
        assert!(!is_one_to_one(&[4, 8, 64], &[512, 32, 1]));
        assert!(is_one_to_one(&[1, 8, 64], &[0, 64, 1]), "a dimension of extent 1 has any stride");
    }
}
