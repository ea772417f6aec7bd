//! A fleet of a fixed size: what many GPU services run today.

use super::{ClusterView, Scaler};
use crate::settings::Settings;

pub struct Fixed {
    replicas: u32,
}

impl Fixed {
    pub fn new(settings: &Settings) -> Self {
        Self { replicas: settings.static_replicas }
    }
}

impl Scaler for Fixed {
    fn interval_seconds(&self) -> f64 {
        60.0
    }

    fn initial_replicas(&self) -> u32 {
        self.replicas
    }

    fn decide(&mut self, _view: &ClusterView) -> u32 {
        self.replicas
    }
}
