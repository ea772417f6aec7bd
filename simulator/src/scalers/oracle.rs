//! A clairvoyant reference: it knows every future arrival and how long pods take to
//! start, sees no metrics at all, and has each pod ready just before the work for it
//! arrives, sized so that each image waits about `targetQueueLatencySeconds` at most.
//! It keeps a pod only while it will be needed again within one start-up (starting a
//! new one would cost as much). It bounds what reacting faster could gain; it is not a
//! lower bound on cost.

use super::{ClusterView, Scaler, ceil_u32};
use crate::settings::Settings;

/// The start-up quantile the oracle plans for, as a multiple of the log-normal's sigma
/// (90th percentile), so that its pods are ready in time nine times out of ten.
const STARTUP_QUANTILE_SIGMAS: f64 = 1.2816;

pub struct Oracle {
    min: u32,
    max: u32,
    /// Pods needed during each second of the run.
    needed: Vec<u32>,
    /// Seconds ahead that pods are started.
    lead: usize,
}

impl Oracle {
    pub fn new(settings: &Settings, arrivals: &[f64]) -> Self {
        let seconds = settings.end_seconds().ceil() as usize + 1;
        let mut per_second = vec![0usize; seconds];
        for &at in arrivals {
            if let Some(count) = per_second.get_mut(at.floor() as usize) {
                *count += 1;
            }
        }
        // The work arriving within one target latency must be done within it.
        let window = settings.target_queue_latency_seconds.ceil().max(1.0) as usize;
        let mut in_window = 0usize;
        let mut needed = Vec::with_capacity(seconds);
        for second in 0..seconds {
            in_window += per_second[second];
            if second >= window {
                in_window -= per_second[second - window];
            }
            let work = in_window as f64 * settings.mean_service_seconds();
            needed.push(ceil_u32(work / settings.target_queue_latency_seconds));
        }
        let startup = (settings.startup_seconds * (STARTUP_QUANTILE_SIGMAS * settings.startup_sigma).exp())
            .min(2.0 * settings.startup_seconds);
        Self { min: settings.min_replicas, max: settings.max_replicas, needed, lead: startup.ceil() as usize }
    }

    fn wanted_from(&self, second: usize) -> u32 {
        let end = (second + self.lead + 1).min(self.needed.len());
        let peak = self.needed.get(second..end).and_then(|ahead| ahead.iter().max().copied()).unwrap_or(0);
        peak.clamp(self.min, self.max.max(self.min))
    }
}

impl Scaler for Oracle {
    fn interval_seconds(&self) -> f64 {
        1.0
    }

    fn initial_replicas(&self) -> u32 {
        self.wanted_from(0)
    }

    fn decide(&mut self, view: &ClusterView) -> u32 {
        self.wanted_from(view.now.max(0.0).floor() as usize)
    }
}
