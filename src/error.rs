//! The one error type of the library. Every message names the argument at fault and what was
//! expected, so an engine can surface it verbatim.

use crate::dtype::DType;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure of the library. New variants may be added (`#[non_exhaustive]`): match the ones
/// you handle and keep a catch-all arm.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor has the wrong rank or dimensions.
    #[error("argument `{arg}`: expected shape {expected}, got {got:?}")]
    Shape { arg: String, expected: String, got: Vec<usize> },

    /// A tensor has an element type the operation does not accept here.
    #[error("argument `{arg}`: expected dtype {expected}, got {got}")]
    DType { arg: String, expected: String, got: DType },

    /// Any other invalid value (negative window, odd rotary_dim, decreasing cu_seqlens, ...).
    #[error("argument `{arg}`: {msg}")]
    InvalidArgument { arg: String, msg: String },

    /// Valid input that this device or build does not support (head dim, dtype on a kernel).
    #[error("argument `{arg}`: not supported: {msg}")]
    Unsupported { arg: String, msg: String },

    /// A configuration (RoPE scaling dict, op config JSON) that cannot be parsed or is invalid.
    #[error("config `{key}`: {msg}")]
    Config { key: String, msg: String },

    /// No CUDA driver library could be loaded.
    #[error("no CUDA driver: {0}")]
    NoDriver(String),

    /// The driver loaded but there is no usable GPU at that ordinal.
    #[error("no GPU: {0}")]
    NoDevice(String),

    /// The library was built without nvcc, so there are no kernels to launch.
    #[error("CUDA kernels were not compiled into this build: {0}")]
    KernelsNotCompiled(String),

    /// The emulated device was asked for but this build does not carry it.
    #[error("the emulated device is not in this build: {0}")]
    EmulatorNotBuilt(String),

    /// A CUDA driver call failed: the call, the driver's message (on the emulated device followed
    /// by its checkers' report) and the driver error itself as the [`std::error::Error::source`].
    #[error("CUDA error in {context}: {msg}")]
    Cuda {
        context: String,
        msg: String,
        #[source]
        source: Option<cudarc::driver::DriverError>,
    },

    /// A case file (safetensors + JSON config) is malformed.
    #[error("case file: {0}")]
    Case(String),

    /// File-system error (CLI only).
    #[error("io: {0}")]
    Io(String),
}

impl Error {
    pub fn invalid(arg: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::InvalidArgument { arg: arg.into(), msg: msg.into() }
    }
    pub fn unsupported(arg: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Unsupported { arg: arg.into(), msg: msg.into() }
    }
    pub fn config(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config { key: key.into(), msg: msg.into() }
    }
    pub fn shape(arg: impl Into<String>, expected: impl Into<String>, got: &[usize]) -> Self {
        Error::Shape { arg: arg.into(), expected: expected.into(), got: got.to_vec() }
    }
    /// The argument this error names, if it names one.
    pub fn argument(&self) -> Option<&str> {
        match self {
            Error::Shape { arg, .. }
            | Error::DType { arg, .. }
            | Error::InvalidArgument { arg, .. }
            | Error::Unsupported { arg, .. } => Some(arg),
            Error::Config { key, .. } => Some(key),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}
