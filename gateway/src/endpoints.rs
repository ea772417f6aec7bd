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

/// Probes in a row left unanswered within the interval before a ready pod is counted
/// unready, as Kubernetes' default `failureThreshold`: a pod whose machine is busy can
/// answer a probe late, and one late answer must not take its places away. A pod that
/// answers not ready, or refuses the connection, is unready at once: it said so.
const UNANSWERED_PROBES_BEFORE_UNREADY: u32 = 3;

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

    async fn probe(&self, address: &str) -> Probe {
        let Ok(uri) = format!("http://{address}{}", paths::READYZ).parse::<hyper::Uri>() else {
            return Probe::NotReady;
        };
        match tokio::time::timeout(self.interval, self.client.get(uri)).await {
            Ok(Ok(response)) if response.status().is_success() => Probe::Ready,
            Ok(Ok(_)) => Probe::NotReady,
            Ok(Err(error)) if error.is_connect() => Probe::NotReady,
            Ok(Err(_)) | Err(_) => Probe::Unanswered,
        }
    }
}

/// What one probe of a pod found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// `/readyz` answered 2xx.
    Ready,
    /// It answered otherwise, or nothing listens there.
    NotReady,
    /// No complete answer within the interval.
    Unanswered,
}

/// A pod's readiness as the probes have found it so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Standing {
    ready: bool,
    /// Probes in a row left unanswered.
    unanswered: u32,
}

impl Standing {
    /// The standing after `probe`: a ready pod stays ready through fewer than
    /// [`UNANSWERED_PROBES_BEFORE_UNREADY`] unanswered probes in a row.
    fn after(self, probe: Probe) -> Standing {
        match probe {
            Probe::Ready => Standing { ready: true, unanswered: 0 },
            Probe::NotReady => Standing { ready: false, unanswered: 0 },
            Probe::Unanswered => {
                let unanswered = self.unanswered + 1;
                Standing { ready: self.ready && unanswered < UNANSWERED_PROBES_BEFORE_UNREADY, unanswered }
            }
        }
    }
}

impl EndpointSource for StaticSource {
    async fn run(self, dispatcher: Arc<Dispatcher>) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut standings = vec![Standing::default(); self.addresses.len()];
        loop {
            ticks.tick().await;
            let source = &self;
            let probes =
                futures_util::future::join_all(self.addresses.iter().map(|address| source.probe(address))).await;
            let reports: Vec<EndpointReport> = self
                .addresses
                .iter()
                .zip(standings.iter_mut())
                .zip(probes)
                .map(|((address, standing), probe)| {
                    *standing = standing.after(probe);
                    // A probe cannot tell a pod starting from one down or being deleted:
                    // none is reported starting, so none is counted on before it answers.
                    EndpointReport { address: address.clone(), ready: standing.ready, starting: false }
                })
                .collect();
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
    fn a_ready_pod_stays_ready_through_probes_answered_late_until_too_many_in_a_row() {
        let ready = Standing::default().after(Probe::Ready);
        let mut standing = ready;
        for _ in 1..UNANSWERED_PROBES_BEFORE_UNREADY {
            standing = standing.after(Probe::Unanswered);
            assert!(standing.ready, "{standing:?}");
        }
        assert!(!standing.after(Probe::Unanswered).ready);
        // An answer starts the count again.
        let answered = standing.after(Probe::Ready).after(Probe::Unanswered);
        assert!(answered.ready);
    }

    #[test]
    fn a_pod_that_says_it_is_not_ready_or_refuses_is_unready_at_once() {
        let ready = Standing::default().after(Probe::Ready);
        assert!(!ready.after(Probe::NotReady).ready);
        // Never answered: not ready, however few probes went unanswered.
        assert!(!Standing::default().after(Probe::Unanswered).ready);
    }

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
