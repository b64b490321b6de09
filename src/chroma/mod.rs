//! Knowledge of Chroma's HTTP API v2: which routes exist and what each one does.
//!
//! Pure functions over methods, paths and headers: nothing here does I/O or holds state.

pub mod errors;
pub mod headers;
pub mod ids;
pub mod routes;
