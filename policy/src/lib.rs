//! Matte's scaling policy: the decision ([`decide`]) on a resource's settings
//! ([`PolicySpec`]) and what one pass observes ([`Observation`]), through the plan of the
//! pods its backlog needs ([`Plan`]); what it remembers between passes ([`Memory`]); and
//! the one definition of every quantity it observes ([`observed`]), with the Prometheus
//! functions behind them ([`promql`], [`stats`]). Pure: no Kubernetes, no I/O; the
//! operator and the simulator both feed it.

mod bursts;
mod clock;
mod decision;
mod memory;
mod observation;
pub mod observed;
mod plan;
pub mod promql;
mod skew;
mod spec;
mod startup;

pub use matte_common::stats;

pub use decision::*;
pub use memory::*;
pub use observation::*;
pub use plan::Plan;
pub use spec::*;
pub use startup::*;
