//! Matte's scaling policy: the decision ([`decide`]), what it remembers between passes,
//! and the one definition of every quantity it observes ([`observed`]), with the
//! Prometheus functions behind them ([`promql`], [`stats`]). Pure: no Kubernetes, no
//! I/O; the operator and the simulator both feed it.

mod bursts;
mod clock;
mod decision;
mod memory;
pub mod observed;
pub mod promql;
mod startup;
pub mod stats;

pub use decision::*;
pub use memory::*;
pub use startup::*;
