//! Everything that can go wrong in a simulation run, each variant naming its cause.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the trace file {path}: {source}")]
    ReadTrace { path: PathBuf, source: matte_common::files::ReadError },

    #[error("{path}, line {line}: {text:?} is not an arrival time (seconds, a finite number >= 0)")]
    BadArrival { path: PathBuf, line: usize, text: String },

    #[error("the trace file {path} holds more than {max} arrivals")]
    TooManyArrivals { path: PathBuf, max: usize },

    #[error("the trace file {path} has no arrivals")]
    EmptyTrace { path: PathBuf },

    #[error(
        "the trace file {path} runs to {last_seconds}s, not within a week ({max_seconds}s): its times are seconds from the trace's start, not Unix times"
    )]
    TraceTooLong { path: PathBuf, last_seconds: f64, max_seconds: f64 },

    #[error("cannot read the families of traces in {path}: {source}")]
    ReadFamilies { path: PathBuf, source: std::io::Error },

    #[error("{path} holds no family of traces (a folder of traces named by their seeds: 1.txt, 2.txt, ...)")]
    NoFamilies { path: PathBuf },

    #[error("{path} is not a family of traces: a family is a folder of traces named by their seeds")]
    NotAFamily { path: PathBuf },

    #[error("the family {path} has no traces")]
    EmptyFamily { path: PathBuf },

    #[error("the trace {path} is not named by the seed it runs on (1.txt, 2.txt, ...)")]
    TraceNotNamedBySeed { path: PathBuf },

    #[error("the family {family} has two traces for seed {seed}")]
    SeedTracedTwice { family: PathBuf, seed: u64 },

    #[error("invalid simulation setting: {0}")]
    InvalidSetting(String),

    #[error("cannot write {path}: {source}")]
    WriteOutput { path: PathBuf, source: std::io::Error },

    #[error("cannot encode the report as JSON: {0}")]
    EncodeJson(#[from] serde_json::Error),
}
