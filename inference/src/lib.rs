//! Matte's inference server: one sequential inference loop behind a bounded,
//! honest HTTP queue.
//!
//! Reading order: [`config`] (the flags), [`server`] (lifecycle), [`state`] (what
//! handlers share: [`place`]s, workers, health), `matte_serve` (accepting and timing
//! out connections, reading bodies at their pace), [`http`] (the API), [`upload`]
//! (the image in a raw or multipart body),
//! [`imaging`] (pure image steps), [`queue`] and
//! [`inference_loop`] (the hand-off to the one loop that owns the model), [`model`]
//! (ONNX Runtime; [`batch_dimension`] frees a model's batch of 1), [`metrics`] (what
//! Prometheus sees); [`fetch_model`] is the pod's model init step.

pub mod batch_dimension;
pub mod config;
pub mod error;
pub mod fetch_model;
pub mod http;
pub mod imaging;
pub mod inference_loop;
pub mod metrics;
pub mod model;
pub mod place;
pub mod queue;
pub mod server;
pub mod state;
pub mod upload;

pub use error::Error;
