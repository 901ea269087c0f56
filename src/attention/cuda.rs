//! CUDA prefill path for attention. Being written by the attention kernel owner.
