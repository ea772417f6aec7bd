//! Logs, written the same way by every Matte process, so that one log pipeline reads
//! them all: an event a line on stderr, either a JSON object with the event's fields
//! beside its message (what a pipeline indexes without unnesting) or text, coloured only
//! for a terminal (escape codes in `kubectl logs` or a file are noise).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log events are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Installs the process's global subscriber, keeping the events `filter` passes.
pub fn init_logging(filter: EnvFilter, format: LogFormat) {
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
