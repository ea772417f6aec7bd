//! What the inference server and the operator must agree on.
//!
//! The autoscaler reads the pods' metrics and nothing private, so the metric names are
//! a contract: both sides take them from here. So is the gateway's admission
//! ([`admission`]): the simulator's gateway admits and sends clients away by the same
//! arithmetic as `matte-gateway`. The tools read the files users name one way too
//! ([`files`]).

pub mod admission;
pub mod deferred;
pub mod files;
pub mod queue;
pub mod stats;

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
    /// The `outcome` of [`REQUESTS_TOTAL`] for an image answered, counted once it has
    /// been handed to the client's connection whole (by the pod and by the gateway).
    pub const OK_OUTCOME: &str = "ok";
    /// The `outcome` of [`REQUESTS_TOTAL`] (and the gateway's) for a request whose
    /// client left before it was answered, or before its answer was handed over whole.
    pub const CLIENT_GONE_OUTCOME: &str = "client_gone";
    /// The `outcome` of [`REQUESTS_TOTAL`] for a client refused with 429, every place
    /// in the queue taken: the autoscaler counts these as clients waiting outside, and
    /// the rest as admitted. Both are exported from the start, at 0: a counter that
    /// first appears at 1 has no rate in its first window, and the autoscaler would
    /// miss the very refusals that say a burst began.
    pub const QUEUE_FULL_OUTCOME: &str = "queue_full";
    /// Counter: images that went through inference.
    pub const IMAGES_PROCESSED_TOTAL: &str = "matte_images_processed_total";
    /// Counter: rows of the model's batch computed, each run's images and the padding a
    /// GPU adds up to `--max-batch-size`; its rate over `matte_inference_seconds_sum`'s
    /// is a busy pod's pace, which a lone image's padded run does not understate.
    pub const INFERENCE_ROWS_TOTAL: &str = "matte_inference_rows_total";
    /// Gauge: requests admitted and not yet answered (queued, decoding, inferring, encoding).
    pub const INFLIGHT_REQUESTS: &str = "matte_inflight_requests";
    /// Gauge: 1 when the pod is ready to take work, 0 while loading or draining.
    pub const READY: &str = "matte_ready";
    /// Gauge, labels `model` and `provider`: always 1, carries the loaded model.
    pub const MODEL_INFO: &str = "matte_model_info";
    /// Gauge: the most images a run takes: `--max-batch-size` where the model's batch is
    /// dynamic or was freed at load, 1 where it stays fixed (the pod's log says why).
    pub const MAX_BATCH_SIZE: &str = "matte_max_batch_size";
    /// Gauge: the images a run was asked to take (`--max-batch-size`); above
    /// [`MAX_BATCH_SIZE`] where the model's batch stays fixed, which an alert watches.
    pub const REQUESTED_MAX_BATCH_SIZE: &str = "matte_requested_max_batch_size";
    /// Gauge: clients the pod refused with 429 (`outcome="queue_full"`) whose
    /// `Retry-After` has not passed: requests waiting outside, counted once each. Behind
    /// a plain Service, the clients the autoscaler counts as waiting.
    pub const DEFERRED_REQUESTS: &str = "matte_deferred_requests";
    /// Counter: clients the pod refused whose `Retry-After` has passed, so that they may
    /// be back; behind a plain Service, its rate is how many of the requests arriving
    /// are such returns.
    pub const DEFERRED_DUE_TOTAL: &str = "matte_deferred_due_total";
    /// Gauge: client connections open now; at [`MAX_CONNECTIONS`], new ones wait in the
    /// listen backlog.
    pub const OPEN_CONNECTIONS: &str = "matte_open_connections";
    /// Gauge: the most client connections served at once (`--max-connections`).
    pub const MAX_CONNECTIONS: &str = "matte_max_connections";

    /// Every name above.
    pub const ALL: [&str; 18] = [
        QUEUE_DEPTH,
        OLDEST_QUEUED_AGE_SECONDS,
        QUEUE_WAIT_SECONDS,
        INFERENCE_SECONDS,
        BATCH_SIZE,
        REQUEST_DURATION_SECONDS,
        REQUESTS_TOTAL,
        IMAGES_PROCESSED_TOTAL,
        INFERENCE_ROWS_TOTAL,
        INFLIGHT_REQUESTS,
        READY,
        MODEL_INFO,
        MAX_BATCH_SIZE,
        REQUESTED_MAX_BATCH_SIZE,
        DEFERRED_REQUESTS,
        DEFERRED_DUE_TOTAL,
        OPEN_CONNECTIONS,
        MAX_CONNECTIONS,
    ];

    /// Upper bounds of every histogram in seconds: from 10 ms (a warm GPU run) to five
    /// minutes (the worst queue wait a burst can build), so quantiles never saturate.
    pub const SECONDS_BUCKETS: [f64; 15] =
        [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];

    /// Label of [`REQUESTS_TOTAL`].
    pub const OUTCOME_LABEL: &str = "outcome";
}

/// Response headers of `POST /v1/remove`, which the load tool reads.
pub mod headers {
    /// Seconds the request waited in the pod's queue.
    pub const QUEUE_WAIT_SECONDS: &str = "x-matte-queue-wait-seconds";
    /// Seconds of the inference run that served the request.
    pub const INFERENCE_SECONDS: &str = "x-matte-inference-seconds";
    /// Request header: the most seconds a client lets its request wait in the
    /// gateway's queue; it may only lower the gateway's `--max-wait-seconds`.
    pub const MAX_WAIT_SECONDS: &str = "x-matte-max-wait-seconds";
}

/// The bounds of what a `BackgroundRemovalService` may ask for, which the CRD's schema
/// enforces and the simulator holds its runs to.
pub mod limits {
    /// `replicas`, `autoscaling.minReplicas` and `maxReplicas`: one GPU each, more than
    /// any one service has a use for, and far below what would overflow a sum.
    pub const MAX_REPLICAS: u32 = 1000;
    /// `queue.capacity`: requests one pod admits at once.
    pub const MAX_QUEUE_CAPACITY: u32 = 10_000;
    /// `batching.maxBatchSize`, and the pod's `--max-batch-size`.
    pub const MAX_BATCH_SIZE: u32 = 64;
    /// `maxDimension`, and the pod's `--max-dimension`: the longest side every output
    /// format encodes (WebP's limit; a longer one was run through the model, then
    /// answered 500 for want of an encoder).
    pub const MAX_DIMENSION: u32 = 16_384;
    /// `queue.requestTimeoutSeconds`: an hour. A pod's termination grace is its
    /// request timeout and a margin, so that a rollout or a node drain waits for the
    /// requests it holds; a day's timeout would let one resource hold its old pods, and
    /// their GPUs, for a day. No client waits an hour for one image.
    pub const MAX_REQUEST_TIMEOUT_SECONDS: u32 = 3_600;
    /// `model.inputSize`, and the pod's `--input-size`: the side of a model's input
    /// where the model leaves it dynamic, and the side the pod's memory is sized for.
    /// Below 32 no background-removal model sees a subject; 4096² is 16 times the
    /// largest models' input, 256 MiB of input tensor an image.
    pub const MIN_INPUT_SIZE: u32 = 32;
    pub const MAX_INPUT_SIZE: u32 = 4096;
}

/// Names of the metrics `matte-gateway` exports on `/metrics`; the autoscaler adds the
/// gateway's queue to the pods' queues.
pub mod gateway_metrics {
    /// Gauge: requests waiting in the gateway's FIFO for a place on a pod.
    pub const QUEUE_DEPTH: &str = "matte_gateway_queue_depth";
    /// Gauge: age of the oldest request in the gateway's FIFO (0 when none waits).
    pub const OLDEST_QUEUED_AGE_SECONDS: &str = "matte_gateway_oldest_queued_age_seconds";
    /// Histogram: time from arrival in the FIFO to being sent to a pod (the first time).
    pub const QUEUE_WAIT_SECONDS: &str = "matte_gateway_queue_wait_seconds";
    /// Counter, label `outcome`: every request to the removal endpoints by how it ended.
    pub const REQUESTS_TOTAL: &str = "matte_gateway_requests_total";
    /// Counter: every request to the removal endpoints, counted as it arrives (the
    /// outcomes are counted as requests end, which for a request held in the queue is
    /// up to its budget later).
    pub const RECEIVED_TOTAL: &str = "matte_gateway_received_total";
    /// Gauge, label `state` (`ready`, `unready`, `ejected`): upstream pods by state.
    pub const ENDPOINTS: &str = "matte_gateway_endpoints";
    /// Counter, label `reason`: requests sent again after a pod's 429, 503 or failure.
    pub const UPSTREAM_RETRIES_TOTAL: &str = "matte_gateway_upstream_retries_total";
    /// Gauge: 1 while the gateway's set of pods is current, 0 while it serves on the last
    /// one it had. With `--service`, whether the EndpointSlice watch is healthy (0 from
    /// start until the first list, and while the apiserver cannot be reached); with
    /// `--upstream` or neither, always 1.
    pub const DISCOVERY_UP: &str = "matte_gateway_discovery_up";
    /// Gauge: clients sent away with a `Retry-After` (the [`REFUSED_OUTCOMES`], and 429
    /// for want of buffer memory) whose `Retry-After` has not passed: requests waiting
    /// outside, counted once each however long they were told to stay away.
    pub const DEFERRED_REQUESTS: &str = "matte_gateway_deferred_requests";
    /// Counter: clients sent away whose `Retry-After` has passed, so that they may be
    /// back; its rate is how many of the requests arriving are such returns.
    pub const DEFERRED_DUE_TOTAL: &str = "matte_gateway_deferred_due_total";
    /// Gauge: the gateway's running estimate of the time a pod takes per image, from
    /// which it admits requests (their expected wait against the budget) and sets
    /// `Retry-After`; 0 until a pod has served one. Why it refuses, in one number.
    pub const SECONDS_PER_IMAGE: &str = "matte_gateway_seconds_per_image";
    /// Gauge: the start-up the gateway counts on for the pods it sees starting, the
    /// upper quartile of the last it saw (first seen not ready to ready); 0 until it has
    /// seen one. Its admission counts a starting pod from when it is expected ready.
    pub const POD_STARTUP_SECONDS: &str = "matte_gateway_pod_startup_seconds";
    /// Gauge: client connections open now; at [`MAX_CONNECTIONS`], new ones wait in the
    /// listen backlog.
    pub const OPEN_CONNECTIONS: &str = "matte_gateway_open_connections";
    /// Gauge: the most client connections served at once (`--max-connections`, which
    /// the operator sets from the pod's memory).
    pub const MAX_CONNECTIONS: &str = "matte_gateway_max_connections";
    /// Counter, label `relay` (`taken_off_the_pod`, `streamed`): pods' images on their
    /// way to clients by how they went: taken off the pod whole into the buffers, its
    /// place given back at once, or streamed at the client's pace, its place held until
    /// the client has read it (the buffers had no room for it). Streamed images and
    /// clients that read slowly hold places the GPU could be working on.
    pub const ANSWERS_TOTAL: &str = "matte_gateway_answers_total";

    /// Every name above.
    pub const ALL: [&str; 15] = [
        QUEUE_DEPTH,
        OLDEST_QUEUED_AGE_SECONDS,
        QUEUE_WAIT_SECONDS,
        REQUESTS_TOTAL,
        RECEIVED_TOTAL,
        ENDPOINTS,
        UPSTREAM_RETRIES_TOTAL,
        DISCOVERY_UP,
        DEFERRED_REQUESTS,
        DEFERRED_DUE_TOTAL,
        SECONDS_PER_IMAGE,
        POD_STARTUP_SECONDS,
        OPEN_CONNECTIONS,
        MAX_CONNECTIONS,
        ANSWERS_TOTAL,
    ];

    /// Label of [`REQUESTS_TOTAL`].
    pub const OUTCOME_LABEL: &str = "outcome";
    /// The outcomes of [`REQUESTS_TOTAL`] that send a client away to come back after
    /// `Retry-After`: 429 (its expected wait is over its budget) and 503 (the budget ran
    /// out in the queue). The autoscaler counts them as clients waiting outside; the
    /// gateway exports them from the start, at 0, so that the first refusals of a
    /// burst show in a rate.
    pub const REFUSED_OUTCOMES: [&str; 2] = ["queue_full", "no_capacity"];
    /// Label of [`ENDPOINTS`].
    pub const STATE_LABEL: &str = "state";
    /// Label of [`UPSTREAM_RETRIES_TOTAL`].
    pub const REASON_LABEL: &str = "reason";
    /// Label of [`ANSWERS_TOTAL`].
    pub const RELAY_LABEL: &str = "relay";
}

/// Command-line flags of `matte-gateway` that the operator's Deployment sets, by their
/// long names (without the leading `--`), and the defaults it relies on.
pub mod gateway_flags {
    pub const LISTEN: &str = "listen";
    pub const UPSTREAM: &str = "upstream";
    /// The Service whose EndpointSlices list the pods (the operator's `<name>-pods`).
    pub const SERVICE: &str = "service";
    /// The namespace of that Service (default: the gateway's own, from `POD_NAMESPACE`).
    pub const NAMESPACE: &str = "namespace";
    pub const UPSTREAM_CAPACITY: &str = "upstream-capacity";
    pub const MAX_WAIT_SECONDS: &str = "max-wait-seconds";
    pub const MAX_BODY_BYTES: &str = "max-body-bytes";
    pub const MAX_BUFFERED_BYTES: &str = "max-buffered-bytes";
    pub const MAX_CONNECTIONS: &str = "max-connections";
    pub const PROBE_INTERVAL_SECONDS: &str = "probe-interval-seconds";
    pub const UPSTREAM_TIMEOUT_SECONDS: &str = "upstream-timeout-seconds";
    pub const DRAIN_DELAY_SECONDS: &str = "drain-delay-seconds";
    pub const DRAIN_TIMEOUT_SECONDS: &str = "drain-timeout-seconds";

    /// Default of `--max-wait-seconds`: the longest a request waits in the gateway's queue.
    pub const DEFAULT_MAX_WAIT_SECONDS: u64 = 30;
    /// Default of `--max-buffered-bytes`: request bodies, and pods' images waiting for
    /// their clients, the gateway holds at once.
    pub const DEFAULT_MAX_BUFFERED_BYTES: u64 = 1024 * 1024 * 1024;
}

/// HTTP paths of the inference pod.
pub mod paths {
    /// The port the inference pod listens on.
    pub const PORT: u16 = 8080;
    /// That port's name in the pods, the Services and their EndpointSlices: the gateway
    /// finds the pods' port by it, and the PodMonitor scrapes it.
    pub const PORT_NAME: &str = "http";
    pub const REMOVE: &str = "/v1/remove";
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const METRICS: &str = "/metrics";
}

/// The readiness probe the operator gives every server container (the pods' and the
/// gateway's `/readyz`), and what follows from it for those that route to the pods.
pub mod readiness {
    use std::time::Duration;

    /// How often the kubelet probes `/readyz`.
    pub const PERIOD_SECONDS: u16 = 5;
    /// Failed probes in a row that make the pod unready.
    pub const FAILURE_THRESHOLD: u16 = 2;
    /// Time for a pod's change of readiness to reach every EndpointSlice and its
    /// watchers once the kubelet has seen it.
    pub const ENDPOINT_PROPAGATION_SECONDS: u16 = 5;

    /// How long after a pod stops serving its EndpointSlices say so at the latest: the
    /// kubelet's failed probes in a row, and the propagation. A pod that answered 503, or
    /// refused a connection, and is still listed ready after this was only briefly
    /// unable to serve.
    pub fn listed_unready_within() -> Duration {
        Duration::from_secs(u64::from(PERIOD_SECONDS * FAILURE_THRESHOLD + ENDPOINT_PROPAGATION_SECONDS))
    }
}

/// Command-line flags of `matte-inference` that the operator's pod builder sets, by
/// their long names (without the leading `--`).
pub mod flags {
    pub const CPU_WORKERS: &str = "cpu-workers";
    pub const INTRA_THREADS: &str = "intra-threads";
    pub const HEADER_READ_TIMEOUT_SECONDS: &str = "header-read-timeout-seconds";
    pub const UPLOAD_GRACE_SECONDS: &str = "upload-grace-seconds";
    pub const MIN_UPLOAD_BYTES_PER_SECOND: &str = "min-upload-bytes-per-second";
    pub const WRITE_TIMEOUT_SECONDS: &str = "write-timeout-seconds";
    pub const DRAIN_DELAY_SECONDS: &str = "drain-delay-seconds";
    pub const DRAIN_TIMEOUT_SECONDS: &str = "drain-timeout-seconds";
    pub const CUDNN_CONV_ALGO_SEARCH: &str = "cudnn-conv-algo-search";
    pub const CUDA_TF32: &str = "cuda-tf32";
    pub const TENSORRT_FP16: &str = "tensorrt-fp16";
    pub const TENSORRT_CACHE_DIR: &str = "tensorrt-cache-dir";
    pub const IO_BINDING: &str = "io-binding";
    pub const CUDA_GRAPH: &str = "cuda-graph";
}

/// What bounds an inference pod's memory, as a function of its flags. The server's
/// README states it, a test drives the worst inputs against it, and the operator
/// sizes the pod's memory request and limit from it.
pub mod memory {
    /// Default of `--max-input-pixels`: the largest accepted input in pixels.
    pub const DEFAULT_MAX_INPUT_PIXELS: u64 = 50_000_000;
    /// Default of `--max-body-bytes`: the largest accepted request body.
    pub const DEFAULT_MAX_BODY_BYTES: u64 = 32 * 1024 * 1024;
    /// The most `--max-body-bytes` may be, in either server: a body is read into one
    /// buffer of its declared length, which a flag without bound let a client's head make
    /// larger than the address space (the process aborted).
    pub const MAX_BODY_BYTES_LIMIT: u64 = 1024 * 1024 * 1024;

    /// Bytes one CPU worker may hold while decoding one image and scaling it to the
    /// output, per pixel of `--max-input-pixels`. Measured (`decode_memory` in the
    /// inference tests): about 13 at the peak for an RGBA image, whether a PNG of 8 or
    /// 16 bits a channel (made 8 before scaling) or a lossless WebP, decoded, its
    /// premultiplied copy and the scaler's rows; 6.5 for a progressive JPEG. A lossless
    /// WebP's prefix codes may take the 8 its pixels leave while it decodes.
    pub const DECODE_BYTES_PER_PIXEL: u64 = 16;
    /// Bytes an admitted request may hold besides its body, per pixel of the output
    /// (`--max-dimension` squared): the upright RGBA image, the mask, the composed
    /// result and its encoding.
    pub const OUTPUT_BYTES_PER_PIXEL: u64 = 12;
    /// Bytes per pixel of the model's input: three f32 channels in, one f32 mask out.
    pub const MODEL_BYTES_PER_PIXEL: u64 = 16;
    /// Allowance for the process itself, ONNX Runtime and an ISNet-class model on the
    /// host side, beyond the image work (measured: about 1 GiB for ISNet on the CPU).
    pub const RUNTIME_ALLOWANCE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

    /// The most a request's line and headers may take, in either server: a head past it
    /// is answered 431 and its connection closed. Browsers and HTTP libraries send a few
    /// hundred bytes, cookies included a few kilobytes; hyper's default (about 400 KiB)
    /// let every connection, and every request waiting in the gateway's queue, hold that
    /// much.
    pub const MAX_HEAD_BYTES: u64 = 64 * 1024;
    /// The pieces an answer's image is handed to a client's connection in, each a copy
    /// of its own: a pod's, and what a gateway reads of a pod's answer at a time. The
    /// connection takes pieces while its write queue (hyper's, as large as its read
    /// buffer may grow: a head at the limit) has room; a slice of a larger buffer
    /// queued there would keep the whole of that buffer.
    pub const ANSWER_PIECE_BYTES: u64 = 16 * 1024;
    /// Bytes an open connection may hold in either server beside the bodies the flags
    /// count. Its read side: the read buffer, which grows no larger than a head at the
    /// limit, and once its request is read and waits, that head (the headers forwarded
    /// point into it) beside the buffer it reads on into. Its write side: what it has
    /// taken of an answer its client has not, a full write queue and a piece. And its
    /// state. Measured with heads at the limit: 77.6 KiB a connection still sending its
    /// head, 92 KiB one whose request waits in the gateway's queue
    /// (`gateway/tests/memory.rs`), 124.5 KiB one whose client stops reading its
    /// answer (`inference/tests/connection_memory.rs`; 96 KiB was counted until the
    /// write side was).
    pub const CONNECTION_BYTES: u64 = 2 * MAX_HEAD_BYTES + ANSWER_PIECE_BYTES + 16 * 1024;
    /// Bytes a gateway's connection may hold, its answer coming from a pod: its own
    /// ([`CONNECTION_BYTES`]) and the connection to the pod, whose write buffer keeps
    /// the head it forwarded (grown by doubling: up to twice a head at the limit) and
    /// whose read buffer and the pieces on their way to the client hold up to four
    /// pieces. Measured with a head at the limit: 329–331 KiB
    /// (`gateway/tests/answer_memory.rs`). Every connection is counted so, though only
    /// those whose answer is on its way hold a pod's: the answers in flight are bounded
    /// by the pods there are, which change, and the limit is a flag of the gateway's
    /// pods, which would roll at each change.
    pub const GATEWAY_CONNECTION_BYTES: u64 = CONNECTION_BYTES + 2 * MAX_HEAD_BYTES + 4 * ANSWER_PIECE_BYTES;
    /// Default of the inference server's `--max-connections`.
    pub const DEFAULT_POD_MAX_CONNECTIONS: u64 = 1024;
    /// Default of the gateway's `--max-connections`.
    pub const DEFAULT_GATEWAY_MAX_CONNECTIONS: u64 = 4096;
    /// A gateway process beside the bodies it buffers and its connections: its runtime,
    /// its queue and the answers passing through (measured: about 10 MiB idle).
    pub const GATEWAY_PROCESS_BYTES: u64 = 32 * 1024 * 1024;

    /// The connections a gateway pod of `memory_bytes` can hold open once
    /// `buffered_bytes` of bodies and the process are counted, at most the default: at
    /// the smallest memory the operator accepts (128 MiB, half of it bodies) 93, where
    /// the default's 4,096 connections could take 1.4 GiB.
    pub fn gateway_max_connections(memory_bytes: u64, buffered_bytes: u64) -> u64 {
        let room = memory_bytes.saturating_sub(buffered_bytes).saturating_sub(GATEWAY_PROCESS_BYTES);
        (room / GATEWAY_CONNECTION_BYTES).clamp(1, DEFAULT_GATEWAY_MAX_CONNECTIONS)
    }

    /// The flags that bound the image work.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Sizing {
        pub cpu_workers: u64,
        pub queue_capacity: u64,
        pub max_input_pixels: u64,
        pub max_body_bytes: u64,
        pub max_dimension: u64,
        pub input_size: u64,
        /// `--max-batch-size`: a run's images laid out together and its masks.
        pub max_batch_size: u64,
        /// `--max-connections`: each holds up to [`CONNECTION_BYTES`].
        pub max_connections: u64,
    }

    impl Sizing {
        /// The most the image work can hold at once: every CPU worker decoding the
        /// largest image, every place holding a full body, an output-sized image and
        /// its model input, and the run in progress its batch's input and masks again.
        pub fn image_work_bytes(&self) -> u64 {
            let model_bytes = MODEL_BYTES_PER_PIXEL * self.input_size * self.input_size;
            let per_place =
                self.max_body_bytes + OUTPUT_BYTES_PER_PIXEL * self.max_dimension * self.max_dimension + model_bytes;
            self.cpu_workers * DECODE_BYTES_PER_PIXEL * self.max_input_pixels
                + self.queue_capacity * per_place
                + self.max_batch_size * model_bytes
        }

        /// The pod's memory bound: the image work, the connections and the runtime
        /// allowance.
        pub fn pod_bytes(&self) -> u64 {
            self.image_work_bytes() + self.max_connections * CONNECTION_BYTES + RUNTIME_ALLOWANCE_BYTES
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_defaults_for_two_workers_fit_a_gpu_node() {
            let sizing = Sizing {
                cpu_workers: 2,
                queue_capacity: 32,
                max_input_pixels: DEFAULT_MAX_INPUT_PIXELS,
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                max_dimension: 2048,
                input_size: 1024,
                max_batch_size: 1,
                max_connections: DEFAULT_POD_MAX_CONNECTIONS,
            };
            let gib = sizing.pod_bytes() as f64 / (1u64 << 30) as f64;
            assert!((6.0..8.0).contains(&gib), "{gib:.2} GiB");
        }

        #[test]
        fn a_gateway_holds_the_connections_its_memory_leaves_room_for() {
            const MIB: u64 = 1024 * 1024;
            assert_eq!(gateway_max_connections(4096 * MIB, 2048 * MIB), DEFAULT_GATEWAY_MAX_CONNECTIONS);
            assert_eq!(gateway_max_connections(1024 * MIB, 512 * MIB), 1396, "the operator's default");
            assert_eq!(gateway_max_connections(128 * MIB, 64 * MIB), 93);
            assert_eq!(gateway_max_connections(64 * MIB, 64 * MIB), 1, "never none");
            for memory in [128 * MIB, 200 * MIB, 512 * MIB, 1024 * MIB] {
                let buffered = memory / 2;
                let held = buffered
                    + GATEWAY_PROCESS_BYTES
                    + gateway_max_connections(memory, buffered) * GATEWAY_CONNECTION_BYTES;
                assert!(held <= memory, "{} MiB held of {} MiB", held / MIB, memory / MIB);
            }
        }
    }
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
    pub const MAX_BYTES_FLAG: &str = "max-bytes";
    /// The largest model fetched unless a resource says otherwise
    /// (`spec.model.download.sizeLimit`): the largest background-removal models are a
    /// few GB, and a server sending without end must not fill the node's disk.
    pub const DEFAULT_MAX_BYTES: u64 = 8 << 30;
    /// The environment variable carrying the `Authorization` header's value, which the
    /// pod fills from a Secret (never a flag, which `ps` and the pod spec would show).
    pub const AUTHORIZATION_ENV: &str = "MATTE_MODEL_AUTHORIZATION";
}
