//! The Matte operator: the custom resource, the autoscaling policy and the simulator
//! that measures it.

pub mod autoscaler;
pub mod cli;
pub mod crd;
pub mod error;
pub mod simulate;
