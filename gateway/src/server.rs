//! Wiring and lifecycle: start the endpoint source and the dispatcher's ticker, serve
//! at once (ready with or without pods), and when told to shut down, or when the source
//! or the ticker stops: turn unready, keep admitting for the drain delay while load
//! balancers catch up, then stop accepting, let every connection finish the request it
//! holds, cut what is left at the drain timeout, and return (an error if a task
//! stopped).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinError;

use crate::config::Config;
use crate::discovery::EndpointSliceSource;
use crate::dispatcher::Dispatcher;
use crate::endpoints::{EndpointSource, StaticSource};
use crate::state::AppState;
use crate::{Error, http};
use matte_serve::{self as connections, ConnectionLimits, Stage, shutdown_signal};

/// Binds the configured address and serves until SIGTERM or SIGINT and a completed
/// drain.
pub async fn serve(config: Config) -> Result<(), Error> {
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| Error::Listen { addr: config.listen, source })?;
    tracing::info!(addr = %config.listen, upstreams = ?config.upstreams, service = ?config.service, "listening");
    if config.upstreams.is_empty() && config.service.is_none() {
        tracing::warn!("neither --service nor --upstream given: requests wait out their budget and get 503");
    }
    run(listener, config, shutdown_signal()).await
}

/// Serves on `listener`, sending to the pods of `--service` or `--upstream`, until
/// `shutdown` resolves; then drains.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    match config.service.clone() {
        Some(service) => {
            let source = EndpointSliceSource::connect(service.clone(), config.namespace.clone()).await?;
            tracing::info!(%service, namespace = source.namespace(), "pods from the Service's EndpointSlices");
            run_with_source(listener, config, source, shutdown).await
        }
        None => {
            let source = StaticSource::new(config.upstreams.clone(), config.probe_interval)?;
            run_with_source(listener, config, source, shutdown).await
        }
    }
}

/// [`run`] with the pods reported by `source`.
pub async fn run_with_source(
    listener: TcpListener,
    config: Config,
    source: impl EndpointSource,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let dispatcher = Dispatcher::new(config.upstream_capacity);
    let state = Arc::new(AppState::new(&config, dispatcher.clone()));
    let mut discovery = tokio::spawn(source.run(dispatcher.clone()));
    let mut ticker = tokio::spawn(dispatcher.clone().keep_handing_out());

    let (stage, stage_rx) = watch::channel(Stage::Serving);
    matte_serve::open_files::prepare_for_connections(config.max_connections);
    let limits = ConnectionLimits {
        max_connections: usize::try_from(config.max_connections).unwrap_or(usize::MAX),
        header_read: config.header_read_timeout,
        write: config.write_timeout,
        min_write_bytes_per_second: config.min_upload_bytes_per_second,
    };
    let (router, gauges) = (http::router(state.clone()), state.metrics.connections.clone());
    let mut connections = tokio::spawn(connections::serve(listener, router, limits, gauges, stage_rx));

    // The source and the ticker run for as long as the gateway serves. One that stops (a
    // panic) leaves the pods as last reported, or waiting requests looked at only when a
    // place frees, and nothing would show it. The gateway then shuts down as on SIGTERM:
    // unready, so that load balancers send new clients to the other replicas; the
    // requests it holds finished on the pods it knows; and it returns an error, which
    // exits the process with a failure, so that Kubernetes restarts it and counts the
    // restart. Exiting at once would drop every request held, for a fault that still
    // lets them be served.
    let stopped = tokio::select! {
        () = shutdown => None,
        ended = &mut discovery => Some(Error::TaskStopped { task: "the endpoint source", cause: how_it_ended(ended) }),
        ended = &mut ticker => Some(Error::TaskStopped { task: "the queue's ticker", cause: how_it_ended(ended) }),
    };
    if let Some(error) = &stopped {
        if discovery.is_finished() {
            dispatcher.set_discovery_up(false);
        }
        tracing::error!(%error, "shutting down, to be restarted");
    }
    state.begin_drain();
    tracing::info!(delay = ?config.drain_delay, "shutting down: unready, still admitting while endpoints catch up");
    tokio::time::sleep(config.drain_delay).await;
    let deadline = Instant::now() + config.drain_timeout;
    tracing::info!(queued = dispatcher.snapshot().queue_depth, "draining: no new connections, finishing what is held");
    let _ = stage.send(Stage::Closing);
    if tokio::time::timeout_at(deadline.into(), &mut connections).await.is_err() {
        tracing::warn!("the drain timeout passed with requests unfinished; closing their connections");
        let _ = stage.send(Stage::Cut);
        let _ = connections.await;
    }
    // Only now: requests held until the end still needed pods and places.
    discovery.abort();
    ticker.abort();
    tracing::info!("drained; exiting");
    stopped.map_or(Ok(()), Err)
}

/// Why a task that runs for ever ended.
fn how_it_ended(ended: Result<(), JoinError>) -> String {
    match ended {
        Ok(()) => "it returned".to_owned(),
        Err(error) => error.to_string(),
    }
}
