//! Deciding how many inference pods each service needs.

pub mod mounts;
pub mod pods;
pub mod prometheus;
pub mod times;

/// The policy lives in its own crate, free of Kubernetes; the reconciler calls it here.
pub use matte_policy as policy;
