//! The Matte operator: the custom resource, the reconciler that turns it into GPU
//! inference pods, the autoscaling policy and the simulator that measures it.

pub mod autoscaler;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod desired;
pub mod error;
pub mod leader;
pub mod run;
pub mod simulate;
pub mod status;
pub mod telemetry;
