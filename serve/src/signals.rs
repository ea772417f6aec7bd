//! The signal that starts a drain.

/// Resolves on SIGTERM or SIGINT; never, if the handlers cannot be installed (the
/// process then stops only when killed, which is said once in the log).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut terminate), Ok(mut interrupt)) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; this process will only stop when killed");
            std::future::pending::<()>().await;
        }
    }
}
