//! `matte-operator run`: the HTTP endpoints, leader election and the controller, wired
//! together, until SIGTERM.

use std::sync::Arc;
use std::time::Instant;

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

    let identity = args.pod_name.clone().unwrap_or_else(|| format!("matte-operator-{}", std::process::id()));
    let settings = Settings {
        defaults: Defaults {
            inference_image: args.default_inference_image.clone(),
            gateway_image: args.default_gateway_image.clone(),
            allowed_prometheus_urls: args.allowed_prometheus_urls(),
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

        // The controller runs until SIGTERM or until the Lease could not be renewed in
        // time; then it stops before anyone else can take over.
        let (lost_sender, lost) = watch::channel(false);
        let renewing = tokio::spawn(renew(election, stop.clone(), lost_sender));
        let either = {
            let (mut stop, mut lost) = (stop.clone(), lost.clone());
            async move {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => {},
                    _ = lost.wait_for(|l| *l) => {},
                }
            }
        };
        controller::run(client.clone(), settings.clone(), metrics.clone(), either).await;
        metrics.set_leader(false);
        election = match renewing.await {
            Ok(election) => election,
            Err(_) => LeaderElection::new(client.clone(), &namespace, &args.lease_name, &identity),
        };
        if *stop.borrow() {
            if let Err(error) = election.release().await {
                tracing::warn!(%error, "cannot release the leader lease");
            }
            return Ok(());
        }
        tracing::warn!(identity, "lost the leader lease; standing by");
    }
}

/// Tries for the Lease every retry period; `false` when told to stop first.
async fn acquire(election: &mut LeaderElection, mut stop: watch::Receiver<bool>) -> bool {
    loop {
        match election.try_acquire_or_renew().await {
            Ok(true) => return true,
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "cannot take part in leader election"),
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return false,
            _ = tokio::time::sleep(RETRY_PERIOD) => {}
        }
    }
}

/// Renews the Lease until told to stop, or signals `lost` when it has not been
/// renewed for the renew deadline; hands the election back for release or retry.
async fn renew(
    mut election: LeaderElection,
    mut stop: watch::Receiver<bool>,
    lost: watch::Sender<bool>,
) -> LeaderElection {
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return election,
            _ = tokio::time::sleep(RETRY_PERIOD) => {}
        }
        match election.try_acquire_or_renew().await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                let _ = lost.send(true);
                return election;
            }
            Err(error) => tracing::warn!(%error, "cannot renew the leader lease"),
        }
        if renewed.elapsed() > RENEW_DEADLINE {
            let _ = lost.send(true);
            return election;
        }
    }
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
