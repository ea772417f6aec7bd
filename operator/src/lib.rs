//! The Matte operator: autoscaling policy and the simulator that measures it.

pub mod autoscaler;
pub mod cli;
pub mod error;
pub mod simulate;
