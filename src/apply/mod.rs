//! Applying one logged write to one instance, shared by the client write path and replay:
//! [`translate`] is the pure part (the request as that instance must receive it, the identity
//! changes its answer implies, the answer with canonical ids); [`effects`] records those changes
//! and discovers collections created outside the proxy.
//!
//! Never sends a write itself: the failover loop and replay do.

pub mod effects;
pub mod translate;
