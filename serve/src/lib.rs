//! What the inference server and the gateway share as HTTP servers, so that a client
//! meets the same limits whichever it talks to: [`connections`] (accepting and
//! serving connections with header and write timeouts, the two-step drain), [`pace`]
//! (the minimum upload pace), [`body`] (reading a body within its limit and at that
//! pace, the errors of one that is not, and a refusal sent before it is read),
//! [`pieces`] (an answer held whole, handed over a piece at a time), [`routes`] (the
//! answer to a request no route takes), [`exposition`] (their metrics in Prometheus's
//! text format), [`sent_away`] (the clients sent away with a `Retry-After`, as
//! metrics), [`durations`] (how their flags read seconds) and [`signals`] (the shutdown
//! signal), [`open_files`] (the open-file limit their connections need); and, with the
//! operator, [`logging`] (how every Matte process writes its logs) and [`documented`]
//! (the check that a README names every flag).

pub mod body;
pub mod connections;
pub mod documented;
pub mod durations;
pub mod exposition;
pub mod logging;
pub mod open_files;
pub mod pace;
pub mod pieces;
pub mod routes;
pub mod sent_away;
pub mod signals;

pub use body::{BodyError, declared_length, discard_rest, paced_chunks, refuse_unread};
pub use connections::{ConnectionGauges, ConnectionLimits, Stage, serve};
pub use logging::{LogFormat, init_logging};
pub use pace::UploadPace;
pub use routes::RouteError;
pub use signals::shutdown_signal;
