//! `matte-operator run`: the HTTP endpoints, leader election and the controller, wired
//! together, until SIGTERM.

use std::sync::Arc;
use tokio::time::Instant;

use kube::Client;
use kube::runtime::events::Reporter;
use tokio::sync::watch;

use crate::autoscaler::prometheus;
use crate::cli::RunArgs;
use crate::controller;
use crate::desired::Defaults;
use crate::error::Error;
use crate::leader::{LeaderElection, RENEW_DEADLINE, RETRY_PERIOD};
use crate::reconcile::Settings;
use crate::telemetry::{self, Metrics};

pub async fn run(args: RunArgs) -> Result<(), Error> {
    let scrape_intervals = args.scrape_intervals()?;
    let metrics = Arc::new(Metrics::new());
    let server = telemetry::serve(args.listen, metrics.clone()).await?;
    tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "the HTTP server stopped");
        }
    });

    let client = Client::try_default().await.map_err(|e| Error::Connect(e.to_string()))?;
    let version = client.apiserver_version().await.map_err(|e| Error::Connect(e.to_string()))?;
    tracing::info!(apiserver = %version.git_version, "connected");
    metrics.set_ready();

    let identity = identity(args.pod_name.as_deref());
    let settings = Settings {
        defaults: Defaults {
            inference_image: args.default_inference_image.clone(),
            gateway_image: args.default_gateway_image.clone(),
            allowed_prometheus_urls: args.allowed_prometheus_urls(),
            metrics_namespace_label: args.metrics_namespace_label(),
            pod_monitor_labels: args.pod_monitor_labels(),
        },
        prometheus_url: args.prometheus_url.clone().filter(|u| !u.is_empty()),
        prometheus_client: prometheus::http_client(args.prometheus_max_concurrent_queries)?,
        scrape_intervals,
        watch_namespace: args.watch_namespace.clone().filter(|n| !n.is_empty()),
        reporter: Reporter { controller: "matte-operator".into(), instance: Some(identity.clone()) },
    };

    let (stop_sender, stop) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop_sender.send(true);
    });

    if !args.leader_elect {
        metrics.set_leader(true);
        controller::run(client, settings, metrics, stopped(stop)).await;
        return Ok(());
    }

    let namespace = args.pod_namespace.clone().unwrap_or_else(|| "default".into());
    let mut election = LeaderElection::new(client.clone(), &namespace, &args.lease_name, &identity);
    loop {
        if !acquire(&mut election, stop.clone()).await {
            return Ok(());
        }
        tracing::info!(identity, lease = %args.lease_name, "became the leader");
        metrics.set_leader(true);

        let controller = controller::run(client.clone(), settings.clone(), metrics.clone(), stopped(stop.clone()));
        let renewed = lead(controller, election).await;
        // A controller dropped mid-way has not said so itself: the next leader reports
        // the resources' conditions, not this replica's cache, which no longer follows.
        metrics.follow_resources(None);
        metrics.set_leader(false);
        election = match renewed {
            Ok(election) => election,
            Err(_) => LeaderElection::new(client.clone(), &namespace, &args.lease_name, &identity),
        };
        if *stop.borrow() {
            match tokio::time::timeout(RETRY_PERIOD, election.release()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "cannot release the leader lease"),
                Err(_) => tracing::warn!("the apiserver did not answer the lease's release; it expires by itself"),
            }
            return Ok(());
        }
        tracing::warn!(identity, "lost the leader lease; standing by");
    }
}

/// Runs `controller` as the leader, until it returns (on SIGTERM, once it has finished
/// its passes) or the Lease could not be renewed in time, when it is dropped at once,
/// before anyone else can take over. The Lease is renewed until then: a pass finishing
/// after SIGTERM (up to its time-out, waiting its turn for a slow Prometheus) still
/// applies and writes, and must do so under a Lease no other replica can take. Hands
/// the election back for release or another try (an error if the renewal panicked).
async fn lead(
    controller: impl Future<Output = ()>,
    election: LeaderElection,
) -> Result<LeaderElection, tokio::task::JoinError> {
    let (lost_sender, lost) = watch::channel(false);
    let (done_sender, done) = watch::channel(false);
    let renewing = tokio::spawn(renew(election, done, lost_sender));
    while_leading(controller, lost).await;
    let _ = done_sender.send(true);
    renewing.await
}

/// Runs `controller` until it returns, or drops it the moment the Lease is `lost`: its
/// passes in flight are dropped with it. Left to finish, as on SIGTERM, a pass waiting
/// on a slow Prometheus (up to its two-minute time-out) would apply Deployments and
/// write statuses from what it saw long after another replica leads.
async fn while_leading(controller: impl Future<Output = ()>, mut lost: watch::Receiver<bool>) {
    tokio::select! {
        () = controller => {}
        _ = lost.wait_for(|lost| *lost) => {
            tracing::warn!("the leader lease is lost: the passes in flight are dropped, their writes unmade");
        }
    }
}

/// Tries for the Lease every retry period; `false` when told to stop first.
async fn acquire(election: &mut LeaderElection, mut stop: watch::Receiver<bool>) -> bool {
    loop {
        // The client waits for an answer as long as the connection lasts: a request to an
        // apiserver that never answers would stop the tries.
        match tokio::time::timeout(RENEW_DEADLINE, election.try_acquire_or_renew()).await {
            Ok(Ok(true)) => return true,
            Ok(Ok(false)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot take part in leader election"),
            Err(_) => tracing::warn!("the apiserver did not answer a leader election request in time"),
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return false,
            _ = tokio::time::sleep(RETRY_PERIOD) => {}
        }
    }
}

/// Renews the Lease until the leader is `done`, or signals `lost` when it has not been
/// renewed for the renew deadline; hands the election back for release or retry.
async fn renew(
    mut election: LeaderElection,
    mut done: watch::Receiver<bool>,
    lost: watch::Sender<bool>,
) -> LeaderElection {
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = done.wait_for(|done| *done) => return election,
            _ = tokio::time::sleep(RETRY_PERIOD) => {}
        }
        // Past the deadline the lease is lost whether or not a request is still waiting
        // for an answer: another replica may hold it by then.
        let left = RENEW_DEADLINE.saturating_sub(renewed.elapsed());
        match tokio::time::timeout(left, election.try_acquire_or_renew()).await {
            Ok(Ok(true)) => renewed = Instant::now(),
            Ok(Ok(false)) => {
                let _ = lost.send(true);
                return election;
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot renew the leader lease"),
            Err(_) => tracing::warn!("the apiserver did not answer the lease's renewal before its deadline"),
        }
        if renewed.elapsed() > RENEW_DEADLINE {
            let _ = lost.send(true);
            return election;
        }
    }
}

/// This replica's name in the Lease and in its Events: its pod's, or else one that no
/// other replica shares. In a container every replica is process 1, and replicas with
/// one identity would each take the Lease for their own and all act at once.
fn identity(pod_name: Option<&str>) -> String {
    if let Some(name) = pod_name.map(str::trim).filter(|name| !name.is_empty()) {
        return name.to_owned();
    }
    let host = std::env::var("HOSTNAME").ok().filter(|host| !host.trim().is_empty());
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!(
        "{}-{}-{:x}",
        host.as_deref().unwrap_or("matte-operator"),
        std::process::id(),
        started.as_nanos() % (1 << 48)
    )
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut interrupt)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = interrupt.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use kube::client::Body;

    use super::*;

    #[test]
    fn a_replica_without_a_pod_name_has_an_identity_of_its_own() {
        assert_eq!(identity(Some("matte-7f9c-abcde")), "matte-7f9c-abcde");
        for unnamed in [None, Some(""), Some("  ")] {
            let name = identity(unnamed);
            assert!(!name.trim().is_empty(), "{unnamed:?}");
            assert!(name.contains(&format!("-{}-", std::process::id())), "{name}");
        }
        let first = identity(None);
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert_ne!(first, identity(None), "two replicas of one process id, two names");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_lease_drops_the_passes_in_flight_at_once() {
        // A pass that would go on for its whole time-out, then write.
        let wrote = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pass = {
            let wrote = wrote.clone();
            async move {
                tokio::time::sleep(std::time::Duration::from_secs(120)).await;
                wrote.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        };
        let (lost_sender, lost) = watch::channel(false);
        let leading = tokio::spawn(while_leading(pass, lost));
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        let lost_at = tokio::time::Instant::now();
        lost_sender.send(true).unwrap();
        leading.await.unwrap();
        assert!(lost_at.elapsed() < std::time::Duration::from_secs(1), "{:?}", lost_at.elapsed());
        tokio::time::sleep(std::time::Duration::from_secs(300)).await;
        assert!(!wrote.load(std::sync::atomic::Ordering::SeqCst), "the pass was dropped, not left to write");
    }

    /// An apiserver that takes every request and never answers (a dead instance behind
    /// a pooled connection): the leader stops acting by the renew deadline all the same,
    /// before the Lease expires for the others.
    #[tokio::test(start_paused = true)]
    async fn a_renewal_never_answered_loses_the_lease_by_its_deadline() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let apiserver = tokio::spawn(async move {
            let mut unanswered = Vec::new();
            while let Some(request) = handle.next_request().await {
                unanswered.push(request);
            }
        });
        let election = LeaderElection::new(Client::new(service, "default"), "ops", "matte-operator", "matte-a");
        let (_done_sender, done) = watch::channel(false);
        let (lost_sender, mut lost) = watch::channel(false);
        let started = tokio::time::Instant::now();
        let renewing = tokio::spawn(renew(election, done, lost_sender));
        let signalled = tokio::time::timeout(crate::leader::LEASE_DURATION * 2, lost.wait_for(|lost| *lost)).await;
        assert!(matches!(signalled, Ok(Ok(_))), "the lease was never given up");
        let waited = started.elapsed();
        assert!(waited > RENEW_DEADLINE, "not before the deadline: {waited:?}");
        assert!(waited < crate::leader::LEASE_DURATION, "before the others may take the Lease: {waited:?}");
        renewing.await.expect("the renewal hands the election back");
        apiserver.abort();
    }

    /// An apiserver holding Lease `ops/matte-operator` for `holder`, answering its reads
    /// and taking every write; counts the writes (renewals).
    fn lease_apiserver(holder: &'static str) -> (Client, Arc<std::sync::atomic::AtomicUsize>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = writes.clone();
        tokio::spawn(async move {
            let mut version = 1;
            while let Some((request, respond)) = handle.next_request().await {
                if request.method() == http::Method::PUT {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    version += 1;
                }
                let lease = serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": "matte-operator", "namespace": "ops", "resourceVersion": version.to_string()},
                    "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}});
                respond.send_response(Response::new(Body::from(lease.to_string().into_bytes())));
            }
        });
        (Client::new(service, "default"), writes)
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_is_renewed_until_the_passes_left_after_sigterm_have_finished() {
        let (client, renewals) = lease_apiserver("matte-a");
        let election = LeaderElection::new(client, "ops", "matte-operator", "matte-a");
        // Told to stop, the controller finishes a pass that waited its turn: 30 s, twice
        // the Lease's duration, in which no other replica may take it.
        let finishing = tokio::time::sleep(std::time::Duration::from_secs(30));
        let started = tokio::time::Instant::now();
        lead(finishing, election).await.expect("the election is handed back");
        assert!(started.elapsed() >= std::time::Duration::from_secs(30), "the pass was not dropped");
        let renewed = renewals.load(std::sync::atomic::Ordering::SeqCst);
        let expected = (30 / RETRY_PERIOD.as_secs()) as usize;
        assert!(renewed + 1 >= expected, "renewed {renewed} times in 30 s, every {RETRY_PERIOD:?}");
    }
}
