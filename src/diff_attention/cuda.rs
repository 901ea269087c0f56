//! CUDA path for differential attention. Being written by its kernel owner.
