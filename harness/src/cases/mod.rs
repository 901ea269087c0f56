//! One module per kernel family: how its ops read case files (`run_case`, `run_resident`),
//! its rows of the `check` table (`check_cases`), and the adapters from a [`Case`](crate::case::Case)
//! to the library's float64 oracles (`*_oracle_case`, used by `check` and the tests).

pub mod attention;
pub mod decode;
pub mod diff_attention;
pub mod linear;
pub mod rope;
