//! Deciding how many inference pods each service needs.

pub mod policy;
pub mod prometheus;
pub mod pods;
