//! The work every policy is given: the same arrivals and the same service times.

use super::random::{Stream, StreamName};
use super::settings::Settings;

/// The work: when each image is first sent and how long it takes alone on a GPU. Drawn
/// once so that every policy gets exactly the same.
pub struct Workload {
    pub arrivals: Vec<f64>,
    pub service_seconds: Vec<f64>,
}

impl Workload {
    pub fn new(arrivals: Vec<f64>, settings: &Settings, seed: u64) -> Self {
        let mut rng = Stream::new(seed, StreamName::ServiceTimes);
        let service_seconds =
            arrivals.iter().map(|_| rng.lognormal(settings.service_seconds, settings.service_sigma)).collect();
        Self { arrivals, service_seconds }
    }
}
