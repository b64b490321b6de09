//! The durable write-ahead log: every client write is stored here before any instance sees it,
//! with its outcome and its application on every instance.
//!
//! This module stores and queries; it never executes a write against an instance.

pub mod models;
pub mod schema;
pub mod store;
