//! This operator's policy, called exactly as the reconciler calls it: every scrape
//! interval, with the queue as the operator's queries find it at that moment.

use matte_policy::{self as policy, Memory, Observation, PolicySpec, Reason};

use super::{ClusterView, Scaler};
use crate::settings::{Routing, Settings};

pub struct Matte {
    spec: PolicySpec,
    memory: Memory,
    /// The reconciler requeues each resource once per pass interval (`Windows::pass`).
    interval_seconds: f64,
    /// How long after the scrape it reads each pass runs.
    pass_after_scrape_seconds: f64,
    /// The last decision's reason and message, as the resource's status and Events
    /// would show them.
    last: Option<(Reason, String)>,
}

impl Matte {
    pub fn new(settings: &Settings) -> Self {
        let spec = PolicySpec {
            confirm_seconds: settings.windows().confirm().as_secs_f64(),
            inflow_window_seconds: settings.windows().inflow().as_secs_f64(),
            behind_gateway: settings.routing == Routing::Gateway,
            ..PolicySpec::new(settings.min_replicas, settings.max_replicas, settings.target_queue_latency_seconds)
                .with_planned_utilization_percent(settings.planned_utilization_percent)
        };
        Self {
            spec,
            memory: Memory::default(),
            interval_seconds: settings.pass_interval_seconds(),
            pass_after_scrape_seconds: settings.pass_after_scrape_seconds(),
            last: None,
        }
    }
}

impl Scaler for Matte {
    fn interval_seconds(&self) -> f64 {
        self.interval_seconds
    }

    /// Scrapes are taken from 0 on, once per interval; a pass at the same instant as a
    /// scrape runs before it, reading the previous one.
    fn first_decision_seconds(&self) -> f64 {
        self.pass_after_scrape_seconds
    }

    fn initial_replicas(&self) -> u32 {
        self.spec.min_replicas
    }

    fn decide(&mut self, view: &ClusterView) -> u32 {
        let observation = Observation {
            now_seconds: view.now,
            replicas: view.replicas,
            ready_pods: view.ready,
            starting_pod_ages_seconds: view.starting_ages.clone(),
            unschedulable_pods: view.unschedulable,
            ready_pod_startups: view.ready_startups.clone(),
            queue: view.prometheus.queue_metrics(view.now),
        };
        let decision = policy::decide(&self.spec, &observation, &self.memory);
        self.memory = decision.memory;
        self.last = Some((decision.reason, decision.message));
        decision.replicas
    }

    fn explain(&self) -> Option<String> {
        self.last.as_ref().map(|(reason, message)| format!("{reason:?}: {message}"))
    }
}
