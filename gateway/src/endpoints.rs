//! Where the set of pods comes from. A source reports every pod it knows and whether
//! it is ready, as often as it learns something; the dispatcher keeps the rest (counts,
//! failures, ejections). The static `--upstream` list probed on `/readyz` is one
//! source; the EndpointSlices of a Service ([`crate::discovery`]) are the other.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use matte_common::paths;

use crate::Error;
use crate::dispatcher::Dispatcher;
use crate::upstream_state::EndpointReport;

/// Probe connections idle longer than this are closed (see [`StaticSource::new`]).
const PROBE_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Something that tells the dispatcher which pods exist and which are ready, until the
/// gateway stops (the future is dropped then).
pub trait EndpointSource: Send + 'static {
    fn run(self, dispatcher: Arc<Dispatcher>) -> impl Future<Output = ()> + Send;
}

/// A fixed list of pods, each probed on `/readyz` every interval: a pod that is not
/// listening yet joins as soon as it turns ready, one that stops answering leaves.
pub struct StaticSource {
    addresses: Vec<String>,
    interval: Duration,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl StaticSource {
    /// Checks that every address is `HOST:PORT`.
    pub fn new(addresses: Vec<String>, interval: Duration) -> Result<StaticSource, Error> {
        for address in &addresses {
            check_address(address)?;
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(interval));
        connector.set_nodelay(true);
        // Idle connections go before the pod's 10 s header timeout closes them under a
        // probe, which would read as a pod gone unready.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(PROBE_IDLE_TIMEOUT)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Ok(StaticSource { addresses, interval, client })
    }

    async fn probe(&self, address: &str) -> bool {
        let Ok(uri) = format!("http://{address}{}", paths::READYZ).parse::<hyper::Uri>() else { return false };
        match tokio::time::timeout(self.interval, self.client.get(uri)).await {
            Ok(Ok(response)) => response.status().is_success(),
            _ => false,
        }
    }
}

impl EndpointSource for StaticSource {
    async fn run(self, dispatcher: Arc<Dispatcher>) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let source = &self;
            let probes = self.addresses.iter().map(|address| async move {
                // A probe cannot tell a pod starting from one down or being deleted: none
                // is reported starting, so none is counted on before it answers.
                EndpointReport { address: address.clone(), ready: source.probe(address).await, starting: false }
            });
            let reports = futures_util::future::join_all(probes).await;
            dispatcher.update_endpoints(&reports);
        }
    }
}

/// `HOST:PORT` with a port number; the host is resolved when connecting.
fn check_address(address: &str) -> Result<(), Error> {
    let well_formed = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok())
        && format!("http://{address}/").parse::<hyper::Uri>().is_ok();
    if well_formed { Ok(()) } else { Err(Error::UpstreamAddress(address.to_owned())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_must_be_host_and_port() {
        for good in ["127.0.0.1:8080", "pod-0.matte-pods:8080", "[::1]:8080"] {
            assert!(check_address(good).is_ok(), "{good}");
        }
        for bad in ["127.0.0.1", ":8080", "host:port", "http://host:80", "host:99999"] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }
}
