//! The autoscalers compared by the simulator, all driven the same way: every
//! `interval_seconds` each gets what its real counterpart would see and returns the
//! replicas it wants.

mod fixed;
mod hpa;
mod keda;
mod kpa;
mod matte;
mod oracle;

use clap::ValueEnum;
use matte_policy::Startup;
use serde::Serialize;

use super::prometheus::{Prometheus, Snapshot};
use super::settings::Settings;
use super::workload::Workload;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyName {
    /// This operator's policy (the same code the reconciler runs).
    Matte,
    /// Kubernetes HPA on requests per second per pod, through a Prometheus adapter.
    Hpa,
    /// KEDA's Prometheus scaler on the request rate.
    Keda,
    /// Knative's KPA on concurrency.
    Kpa,
    /// A fixed fleet.
    Static,
    /// Knows every future arrival and has pods ready just in time.
    Oracle,
}

impl PolicyName {
    pub fn label(self) -> &'static str {
        match self {
            PolicyName::Matte => "matte",
            PolicyName::Hpa => "hpa",
            PolicyName::Keda => "keda",
            PolicyName::Kpa => "kpa",
            PolicyName::Static => "static",
            PolicyName::Oracle => "oracle",
        }
    }
}

/// What an autoscaler can know at one moment: the Kubernetes API's view of the pods
/// (current), Prometheus's view of the queues (delayed and windowed), and for KPA the
/// concurrency its queue-proxies and activator report directly.
pub struct ClusterView<'a> {
    pub now: f64,
    /// The Deployment's replicas.
    pub replicas: u32,
    pub ready: u32,
    /// Seconds since each pod that has a GPU but is not ready got it (its scheduling,
    /// where the operator counts from too).
    pub starting_ages: Vec<f64>,
    /// Pods without a GPU: none is free, and a node is being added for them or none can be.
    pub unschedulable: u32,
    /// The scheduled-to-ready times of the pods ready now.
    pub ready_startups: Vec<Startup>,
    /// The anchors' recording rule, as of its last evaluation.
    pub metrics: Option<&'a Snapshot>,
    /// What Matte's operator queries directly.
    pub prometheus: &'a Prometheus,
    /// Every request not yet answered: in pods (queued or in inference), held in front,
    /// or refused and waiting to retry. Knative's queue-proxies and activator would be
    /// holding the latter, so KPA's concurrency includes them.
    pub inflight: f64,
}

impl ClusterView<'_> {
    /// Pods created but not ready, schedulable or not.
    pub fn not_ready(&self) -> u32 {
        self.replicas.saturating_sub(self.ready)
    }
}

pub trait Scaler {
    /// Seconds between two decisions.
    fn interval_seconds(&self) -> f64;
    /// When the first decision is made; the others follow every interval.
    fn first_decision_seconds(&self) -> f64 {
        self.interval_seconds()
    }
    /// Pods already running when the trace starts.
    fn initial_replicas(&self) -> u32;
    /// Called every second; for autoscalers that collect their own samples.
    fn sample(&mut self, _view: &ClusterView) {}
    fn decide(&mut self, view: &ClusterView) -> u32;
    /// Why the last decision chose what it did, for the log of replica changes; `None`
    /// for the anchors, whose real counterparts say nothing more than the numbers.
    fn explain(&self) -> Option<String> {
        None
    }
}

/// Rounds up to a replica count, saturating; negative and NaN give 0: the anchors'
/// arithmetic of pods from a ratio.
fn ceil_u32(value: f64) -> u32 {
    let rounded = value.ceil();
    if rounded.is_nan() || rounded <= 0.0 {
        0
    } else if rounded >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        // Integral and in range after the checks above.
        rounded as u32
    }
}

pub fn build(name: PolicyName, settings: &Settings, workload: &Workload) -> Box<dyn Scaler> {
    match name {
        PolicyName::Matte => Box::new(matte::Matte::new(settings)),
        PolicyName::Hpa => Box::new(hpa::Hpa::new(settings)),
        PolicyName::Keda => Box::new(keda::Keda::new(settings)),
        PolicyName::Kpa => Box::new(kpa::Kpa::new(settings)),
        PolicyName::Static => Box::new(fixed::Fixed::new(settings)),
        PolicyName::Oracle => Box::new(oracle::Oracle::new(settings, &workload.arrivals)),
    }
}
