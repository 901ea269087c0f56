//! C ABI of `attn-kernels`: plain C functions over raw device pointers, element strides and a
//! `CUstream`, for inference engines written in C or C++. The header is
//! `include/attn_kernels.h`, generated from this crate by cbindgen (`tests/header.rs` proves
//! the checked-in file current); `README.md` of this crate describes linking, the error model
//! and the stream contract.
//!
//! Every entry point:
//! - returns an [`AkStatus`] (`AK_OK` = 0) and leaves a message for
//!   [`ak_last_error_message`] (thread-local; empty after a success);
//! - catches every panic (`AK_ERR_PANIC`): nothing unwinds into C;
//! - checks every pointer it dereferences for null (`AK_ERR_NULL_POINTER`, naming the argument)
//!   and every tensor descriptor as `attn_kernels::DeviceView::from_raw` does (errors name the
//!   field: `q.ptr`, `k.len_bytes`, `o.strides`).
//!
//! Layout: [`device`] (the device handle and the memory helpers) and [`ops`] (one entry per op).
//! This file holds the shared types, error handling and descriptor conversion.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod device;
pub mod ops;

pub use device::AkDevice;

use attn_kernels::{DType, DeviceView, DeviceViewMut, Error};
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Largest rank of a tensor descriptor (`shape` and `strides` have this many slots).
pub const AK_MAX_RANK: usize = 6;

// The descriptor's arrays must hold every rank a library view takes.
const _: () = assert!(AK_MAX_RANK == attn_kernels::runtime::view::MAX_RANK);

/// Result code of every entry point: `AK_OK` (0) or the class of the failure. The message of
/// the failure is `ak_last_error_message()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum AkStatus {
    /// Success.
    AK_OK = 0,
    /// A tensor has the wrong rank or dimensions.
    AK_ERR_SHAPE = 1,
    /// A tensor has an element type the op does not accept there.
    AK_ERR_DTYPE = 2,
    /// Any other invalid value: a bad descriptor (null, misaligned, too short, aliased), an
    /// output overlapping an input, bad index data.
    AK_ERR_INVALID_ARGUMENT = 3,
    /// Valid input that this device or build does not support (head dim, dtype on a kernel).
    AK_ERR_UNSUPPORTED = 4,
    /// The config JSON cannot be parsed or is invalid.
    AK_ERR_CONFIG = 5,
    /// No CUDA driver could be loaded (also: the emulated device was asked for and is not in
    /// this build).
    AK_ERR_NO_DRIVER = 6,
    /// The driver loaded but there is no GPU at that ordinal.
    AK_ERR_NO_DEVICE = 7,
    /// The library was built without nvcc: no kernels to launch.
    AK_ERR_KERNELS_NOT_COMPILED = 8,
    /// A CUDA driver call failed.
    AK_ERR_CUDA = 9,
    /// Any other library error.
    AK_ERR_OTHER = 10,
    /// A required pointer argument (device handle, descriptor, output slot) is NULL.
    AK_ERR_NULL_POINTER = 11,
    /// A bug: the library panicked. The panic was caught; the message says where.
    AK_ERR_PANIC = 12,
}

/// Element type codes of `ak_tensor.dtype`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum AkDtype {
    AK_DTYPE_F32 = 0,
    AK_DTYPE_F16 = 1,
    AK_DTYPE_BF16 = 2,
    AK_DTYPE_I32 = 3,
}

/// A tensor in device memory the caller owns: `rank` dimensions of `shape` elements at element
/// `strides` (the last dimension contiguous: stride 1), element 0 at device address `ptr`, all
/// of it inside the `len_bytes` bytes from `ptr`. Slots past `rank` are ignored.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AkTensor {
    /// Device address of element 0 (`CUdeviceptr`, or a `void*` from cudaMalloc cast to it).
    pub ptr: u64,
    /// Bytes from `ptr` the caller vouches for; every element must lie inside.
    pub len_bytes: u64,
    /// An `ak_dtype` code.
    pub dtype: i32,
    /// Number of dimensions, 0 to `AK_MAX_RANK`.
    pub rank: i32,
    /// Extent of each dimension (non-negative).
    pub shape: [i64; AK_MAX_RANK],
    /// Element stride of each dimension (non-negative; the last one 1).
    pub strides: [i64; AK_MAX_RANK],
}

/// Host int32 index data (cu_seqlens, position ids, block tables, cache lengths): `len`
/// values at `data`. `data = NULL` (with `len = 0`) means the array is absent.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AkI32Array {
    pub data: *const i32,
    pub len: u64,
}

/// The CUDA stream type (`CUstream` of the driver API, `cudaStream_t` of the runtime API):
/// opaque here. NULL is the legacy default stream.
#[allow(non_camel_case_types)]
pub struct CUstream_st {
    _opaque: [u8; 0],
}

// ----------------------------------------------------------------------------- errors

/// A failure on its way to C: its status and message.
pub(crate) struct Failure {
    status: AkStatus,
    msg: String,
}

impl Failure {
    pub(crate) fn null(arg: &str) -> Failure {
        Failure { status: AkStatus::AK_ERR_NULL_POINTER, msg: format!("argument `{arg}`: null pointer") }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure { status: status_of(&e), msg: e.to_string() }
    }
}

pub(crate) type Res<T> = std::result::Result<T, Failure>;

/// The status code of a library error.
pub fn status_of(e: &Error) -> AkStatus {
    use AkStatus::*;
    match e {
        Error::Shape { .. } => AK_ERR_SHAPE,
        Error::DType { .. } => AK_ERR_DTYPE,
        Error::InvalidArgument { .. } => AK_ERR_INVALID_ARGUMENT,
        Error::Unsupported { .. } => AK_ERR_UNSUPPORTED,
        Error::Config { .. } => AK_ERR_CONFIG,
        Error::NoDriver(_) | Error::EmulatorNotBuilt(_) => AK_ERR_NO_DRIVER,
        Error::NoDevice(_) => AK_ERR_NO_DEVICE,
        Error::KernelsNotCompiled(_) => AK_ERR_KERNELS_NOT_COMPILED,
        Error::Cuda { .. } => AK_ERR_CUDA,
        _ => AK_ERR_OTHER,
    }
}

/// `e` with its argument renamed `name.arg` (a descriptor field: `q.ptr`).
fn prefixed(name: &str, e: Error) -> Error {
    let field = |arg: String| format!("{name}.{arg}");
    match e {
        Error::Shape { arg, expected, got } => Error::Shape { arg: field(arg), expected, got },
        Error::DType { arg, expected, got } => Error::DType { arg: field(arg), expected, got },
        Error::InvalidArgument { arg, msg } => Error::invalid(field(arg), msg),
        Error::Unsupported { arg, msg } => Error::unsupported(field(arg), msg),
        other => other,
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    // A message never holds NUL in practice; replace any so the C string is the whole message.
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|m| *m.borrow_mut() = c);
}

/// Run an entry point's body: catch panics, record the message, return the status.
pub(crate) fn guard(body: impl FnOnce() -> Res<()>) -> AkStatus {
    let result = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic payload".into());
        Err(Failure { status: AkStatus::AK_ERR_PANIC, msg: format!("internal error (panic caught at the C boundary): {what}") })
    });
    match result {
        Ok(()) => {
            set_last_error("");
            AkStatus::AK_OK
        }
        Err(f) => {
            set_last_error(&f.msg);
            f.status
        }
    }
}

/// The message of the last failed call on this thread (empty after a success), NUL-terminated,
/// valid until the next call of an `ak_` function on this thread. Never NULL.
#[no_mangle]
pub extern "C" fn ak_last_error_message() -> *const c_char {
    // The thread-local lives as long as the thread; its CString's buffer is replaced (not
    // mutated) only by the next entry point called on this thread.
    catch_unwind(|| LAST_ERROR.with(|m| m.borrow().as_ptr())).unwrap_or(c"internal error".as_ptr())
}

/// The name of a status code ("AK_ERR_SHAPE"), a static string. Never NULL.
#[no_mangle]
pub extern "C" fn ak_status_name(status: i32) -> *const c_char {
    use AkStatus::*;
    let all = [
        (AK_OK, c"AK_OK"),
        (AK_ERR_SHAPE, c"AK_ERR_SHAPE"),
        (AK_ERR_DTYPE, c"AK_ERR_DTYPE"),
        (AK_ERR_INVALID_ARGUMENT, c"AK_ERR_INVALID_ARGUMENT"),
        (AK_ERR_UNSUPPORTED, c"AK_ERR_UNSUPPORTED"),
        (AK_ERR_CONFIG, c"AK_ERR_CONFIG"),
        (AK_ERR_NO_DRIVER, c"AK_ERR_NO_DRIVER"),
        (AK_ERR_NO_DEVICE, c"AK_ERR_NO_DEVICE"),
        (AK_ERR_KERNELS_NOT_COMPILED, c"AK_ERR_KERNELS_NOT_COMPILED"),
        (AK_ERR_CUDA, c"AK_ERR_CUDA"),
        (AK_ERR_OTHER, c"AK_ERR_OTHER"),
        (AK_ERR_NULL_POINTER, c"AK_ERR_NULL_POINTER"),
        (AK_ERR_PANIC, c"AK_ERR_PANIC"),
    ];
    all.iter().find(|(s, _)| *s as i32 == status).map_or(c"unknown status".as_ptr(), |(_, n)| n.as_ptr())
}

// ----------------------------------------------------------------------------- arguments

/// A required pointer argument as a reference.
///
/// # Safety
/// `p` is NULL or points to a valid `T` for `'a`.
pub(crate) unsafe fn required<'a, T>(arg: &str, p: *const T) -> Res<&'a T> {
    // SAFETY: the caller's promise: NULL (refused by `as_ref`) or a valid `T`.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::null(arg))
}

fn dtype_of(name: &str, code: i32) -> Res<DType> {
    Ok(match code {
        0 => DType::F32,
        1 => DType::F16,
        2 => DType::BF16,
        3 => DType::I32,
        _ => return Err(Error::invalid(format!("{name}.dtype"), format!("unknown dtype code {code} (AK_DTYPE_F32..AK_DTYPE_I32 = 0..3)")).into()),
    })
}

/// A descriptor's fields as `(ptr, len_bytes, dtype, shape, strides)`, range-checked.
type Layout = (u64, usize, DType, Vec<usize>, Vec<usize>);

fn layout_of(name: &str, t: &AkTensor) -> Res<Layout> {
    let dtype = dtype_of(name, t.dtype)?;
    let rank = usize::try_from(t.rank).ok().filter(|&r| r <= AK_MAX_RANK).ok_or_else(|| {
        Failure::from(Error::invalid(format!("{name}.rank"), format!("{} is not in 0..={AK_MAX_RANK}", t.rank)))
    })?;
    let dims = |field: &str, values: &[i64]| -> Res<Vec<usize>> {
        values[..rank]
            .iter()
            .map(|&v| usize::try_from(v).map_err(|_| Error::invalid(format!("{name}.{field}"), format!("negative value in {:?}", &values[..rank])).into()))
            .collect()
    };
    let len_bytes = usize::try_from(t.len_bytes)
        .map_err(|_| Error::invalid(format!("{name}.len_bytes"), format!("{} exceeds the address space", t.len_bytes)))?;
    Ok((t.ptr, len_bytes, dtype, dims("shape", &t.shape)?, dims("strides", &t.strides)?))
}

/// A read-only view of a descriptor; errors name `name.field`.
///
/// # Safety
/// The memory the descriptor names is device memory of `dev`'s context, readable by kernels
/// and not written by anyone while the op that gets the view may run (unless stream-ordered).
pub(crate) unsafe fn view<'a>(name: &str, t: &AkTensor) -> Res<DeviceView<'a>> {
    let (ptr, len, dtype, shape, strides) = layout_of(name, t)?;
    // SAFETY: the caller's promise (the C function's contract), passed on.
    unsafe { DeviceView::from_raw(ptr, len, dtype, &shape, &strides) }.map_err(|e| prefixed(name, e).into())
}

/// A writable view of a descriptor; errors name `name.field`.
///
/// # Safety
/// As [`view`], and writable by kernels, read or written by no one else meanwhile.
pub(crate) unsafe fn view_mut<'a>(name: &str, t: &AkTensor) -> Res<DeviceViewMut<'a>> {
    let (ptr, len, dtype, shape, strides) = layout_of(name, t)?;
    // SAFETY: the caller's promise (the C function's contract), passed on.
    unsafe { DeviceViewMut::from_raw(ptr, len, dtype, &shape, &strides) }.map_err(|e| prefixed(name, e).into())
}

/// An optional read-only descriptor (NULL = absent).
///
/// # Safety
/// `t` is NULL or a valid descriptor, under the contract of [`view`].
pub(crate) unsafe fn opt_view<'a>(name: &str, t: *const AkTensor) -> Res<Option<DeviceView<'a>>> {
    // SAFETY: the caller's promise: NULL or a valid descriptor.
    match unsafe { t.as_ref() } {
        // SAFETY: as above, for the memory it names.
        Some(t) => unsafe { view(name, t) }.map(Some),
        None => Ok(None),
    }
}

/// An optional writable descriptor (NULL = absent).
///
/// # Safety
/// `t` is NULL or a valid descriptor, under the contract of [`view_mut`].
pub(crate) unsafe fn opt_view_mut<'a>(name: &str, t: *const AkTensor) -> Res<Option<DeviceViewMut<'a>>> {
    // SAFETY: the caller's promise: NULL or a valid descriptor.
    match unsafe { t.as_ref() } {
        // SAFETY: as above, for the memory it names.
        Some(t) => unsafe { view_mut(name, t) }.map(Some),
        None => Ok(None),
    }
}

/// Host index data: `None` when absent (`data` NULL and `len` 0).
///
/// # Safety
/// `a.data` is NULL or points to `a.len` readable int32 values that stay unchanged for `'a`.
pub(crate) unsafe fn i32_array<'a>(name: &str, a: AkI32Array) -> Res<Option<&'a [i32]>> {
    if a.data.is_null() {
        return if a.len == 0 { Ok(None) } else { Err(Failure::null(&format!("{name}.data"))) };
    }
    if a.data as usize % std::mem::align_of::<i32>() != 0 {
        return Err(Error::invalid(format!("{name}.data"), format!("{:p} is not aligned to int32", a.data)).into());
    }
    let len = usize::try_from(a.len)
        .ok()
        .filter(|&n| n <= isize::MAX as usize / 4)
        .ok_or_else(|| Failure::from(Error::invalid(format!("{name}.len"), format!("{} int32 values exceed the address space", a.len))))?;
    // SAFETY: non-null and aligned (checked), `len` values readable for 'a (the caller's promise).
    Ok(Some(unsafe { std::slice::from_raw_parts(a.data, len) }))
}

/// An op's config JSON as a JSON object (NULL or "" = `{}`). An `"op"` key, as case files
/// carry, is dropped.
///
/// # Safety
/// `json` is NULL or a NUL-terminated string.
pub(crate) unsafe fn config_object(json: *const c_char) -> Res<serde_json::Map<String, serde_json::Value>> {
    let text = if json.is_null() {
        ""
    } else {
        // SAFETY: the caller's promise: a NUL-terminated string.
        let s = unsafe { CStr::from_ptr(json) };
        s.to_str().map_err(|e| Error::config("config_json", format!("not UTF-8: {e}")))?
    };
    if text.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_str(text).map_err(|e| Error::config("config_json", e.to_string()))? {
        serde_json::Value::Object(mut m) => {
            m.remove("op");
            Ok(m)
        }
        other => Err(Error::config("config_json", format!("expected a JSON object, got {other}")).into()),
    }
}

/// A config struct from what is left of a config object.
pub(crate) fn from_object<T: serde::de::DeserializeOwned>(m: serde_json::Map<String, serde_json::Value>) -> Res<T> {
    Ok(serde_json::from_value(serde_json::Value::Object(m)).map_err(|e| Error::config("config_json", e.to_string()))?)
}

/// Parse an op's config JSON into its config struct (NULL or "" = `{}`: every option at its
/// default); see [`config_object`].
///
/// # Safety
/// `json` is NULL or a NUL-terminated string.
pub(crate) unsafe fn config<T: serde::de::DeserializeOwned>(json: *const c_char) -> Res<T> {
    // SAFETY: the caller's promise, passed on.
    from_object(unsafe { config_object(json) }?)
}
