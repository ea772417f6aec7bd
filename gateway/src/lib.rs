//! Matte's gateway: the front door of a service. It speaks the inference pods' API,
//! sends each request to the ready pod with the fewest requests outstanding (never past
//! its queue capacity), holds the rest in one FIFO within each request's wait budget,
//! and retries what a pod turns away, so that bursts wait instead of failing and a
//! service at zero pods can wake up.
//!
//! Reading order: [`config`] (the flags), [`server`] (lifecycle), [`http`] (the API and
//! a request's way through), [`dispatcher`] (the queue and the places on pods), with
//! its pure parts `matte_common::admission` (expected wait, Retry-After, shared with
//! the simulator's gateway) and [`upstream_state`]
//! (picking a pod, ejection); [`endpoints`] (where pods come from: a static list, or
//! [`discovery`], a Service's EndpointSlices), [`upstream`] (the
//! client to the pods), [`body`] (holding bodies within the memory bound) and
//! [`budget`] (the bound, and who gets it when it runs out),
//! `matte_serve` (client connections and their timeouts, the clients sent away until
//! they are due back), [`metrics`]; [`compat`]
//! translates the rembg and remove.bg drop-in endpoints.

pub mod body;
pub mod budget;
pub mod compat;
pub mod config;
pub mod discovery;
pub mod dispatcher;
pub mod endpoints;
pub mod error;
pub mod http;
pub mod metrics;
pub mod server;
pub mod state;
pub mod upstream;
pub mod upstream_state;

pub use error::Error;
