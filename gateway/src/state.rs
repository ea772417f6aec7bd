//! What every handler shares: the limits, the dispatcher, the client to the pods, the
//! buffer budget, the metrics and whether the gateway is draining.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use matte_serve::UploadPace;

use crate::budget::BufferBudget;
use crate::config::Config;
use crate::dispatcher::Dispatcher;
use crate::metrics::Metrics;
use crate::upstream::UpstreamClient;

/// Per-request limits taken from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// The longest a request may wait in the queue; clients may ask for less.
    pub max_wait: Duration,
    pub upload_pace: UploadPace,
}

pub struct AppState {
    pub limits: Limits,
    pub dispatcher: Arc<Dispatcher>,
    pub client: UpstreamClient,
    pub buffers: Arc<BufferBudget>,
    pub metrics: Metrics,
    draining: AtomicBool,
}

impl AppState {
    pub fn new(config: &Config, dispatcher: Arc<Dispatcher>) -> AppState {
        AppState {
            limits: Limits {
                // At most 1 GiB (`memory::MAX_BODY_BYTES_LIMIT`).
                max_body_bytes: usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX),
                max_wait: config.max_wait(),
                upload_pace: UploadPace {
                    grace: config.upload_grace,
                    min_bytes_per_second: config.min_upload_bytes_per_second,
                },
            },
            dispatcher,
            client: UpstreamClient::new(config.upstream_timeout),
            buffers: BufferBudget::new(config.max_buffered_bytes),
            metrics: Metrics::default(),
            draining: AtomicBool::new(false),
        }
    }

    /// Unready from now on, so that load balancers stop sending; requests still come
    /// in on open connections until they close.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
