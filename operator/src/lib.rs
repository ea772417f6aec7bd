//! The Matte operator: the custom resource, the reconciler that turns it into GPU
//! inference pods, and the autoscaler's Kubernetes side (the pod census and the metrics
//! source); the policy itself is `matte_policy`.

pub mod autoscaler;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod desired;
pub mod error;
pub mod events;
pub mod leader;
pub mod names;
pub mod reconcile;
pub mod run;
pub mod status;
pub mod telemetry;
