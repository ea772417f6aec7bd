//! What the inference server and the operator must agree on.
//!
//! The autoscaler reads the pods' metrics and nothing private, so the metric names are
//! a contract: both sides take them from here.

/// Names of the metrics every inference pod exports on `/metrics`.
pub mod metrics {
    /// Gauge: requests decoded and waiting for the GPU loop.
    pub const QUEUE_DEPTH: &str = "matte_queue_depth";
    /// Gauge: age of the oldest request waiting for the GPU loop (0 when none waits).
    pub const OLDEST_QUEUED_AGE_SECONDS: &str = "matte_oldest_queued_age_seconds";
    /// Histogram: time from admission to the start of the request's inference batch.
    pub const QUEUE_WAIT_SECONDS: &str = "matte_queue_wait_seconds";
    /// Histogram: wall time of one inference run (one batch).
    pub const INFERENCE_SECONDS: &str = "matte_inference_seconds";
    /// Histogram: images per inference run.
    pub const BATCH_SIZE: &str = "matte_batch_size";
    /// Histogram: whole request time, from arrival to the response being ready.
    pub const REQUEST_DURATION_SECONDS: &str = "matte_request_duration_seconds";
    /// Counter, label `outcome`: every request to `/v1/remove` by how it ended.
    pub const REQUESTS_TOTAL: &str = "matte_requests_total";
    /// Counter: images that went through inference.
    pub const IMAGES_PROCESSED_TOTAL: &str = "matte_images_processed_total";
    /// Gauge: requests admitted and not yet answered (queued, decoding, inferring, encoding).
    pub const INFLIGHT_REQUESTS: &str = "matte_inflight_requests";
    /// Gauge: 1 when the pod is ready to take work, 0 while loading or draining.
    pub const READY: &str = "matte_ready";
    /// Gauge, labels `model` and `provider`: always 1, carries the loaded model.
    pub const MODEL_INFO: &str = "matte_model_info";

    /// Every name above.
    pub const ALL: [&str; 11] = [
        QUEUE_DEPTH,
        OLDEST_QUEUED_AGE_SECONDS,
        QUEUE_WAIT_SECONDS,
        INFERENCE_SECONDS,
        BATCH_SIZE,
        REQUEST_DURATION_SECONDS,
        REQUESTS_TOTAL,
        IMAGES_PROCESSED_TOTAL,
        INFLIGHT_REQUESTS,
        READY,
        MODEL_INFO,
    ];

    /// Upper bounds of every histogram in seconds: from 10 ms (a warm GPU run) to five
    /// minutes (the worst queue wait a burst can build), so quantiles never saturate.
    pub const SECONDS_BUCKETS: [f64; 15] =
        [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];

    /// Label of [`REQUESTS_TOTAL`].
    pub const OUTCOME_LABEL: &str = "outcome";
}

/// HTTP paths of the inference pod.
pub mod paths {
    pub const REMOVE: &str = "/v1/remove";
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const METRICS: &str = "/metrics";
}

/// `matte-inference fetch-model`, the model init container the operator writes into
/// every pod whose model comes from a URL.
pub mod fetch_model {
    /// The subcommand, the first argument of `matte-inference`.
    pub const SUBCOMMAND: &str = "fetch-model";
    /// Flags (without the leading `--`).
    pub const URL_FLAG: &str = "url";
    pub const SHA256_FLAG: &str = "sha256";
    pub const OUTPUT_FLAG: &str = "output";
    pub const CONNECT_TIMEOUT_FLAG: &str = "connect-timeout-seconds";
    pub const TIMEOUT_FLAG: &str = "timeout-seconds";
    pub const CA_FILE_FLAG: &str = "ca-file";
    /// The environment variable carrying the `Authorization` header's value, which the
    /// pod fills from a Secret (never a flag, which `ps` and the pod spec would show).
    pub const AUTHORIZATION_ENV: &str = "MATTE_MODEL_AUTHORIZATION";
}
