//! Load generator for the Matte inference server.
//!
//! [`driver`] sends images to `POST /v1/remove` at a fixed concurrency and collects what
//! came back; [`stats`] turns the samples into percentiles. The binary only parses the
//! command line and prints the [`driver::Summary`].

pub mod driver;
pub mod error;
pub mod stats;

pub use error::LoadError;
