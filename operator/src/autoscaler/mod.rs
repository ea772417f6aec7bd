//! Deciding how many inference pods each service needs.

pub mod pods;
pub mod policy;
pub mod prometheus;
