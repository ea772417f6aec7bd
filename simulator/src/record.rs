//! What a run leaves behind: every image's latency, every pod's life, every change of
//! replicas, and the fleet once a second; the report and the plots read only this.

use serde::Serialize;

/// What happened to one pod.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    pub created_seconds: f64,
    /// When it got a GPU; `None` if it never did.
    pub billed_from_seconds: Option<f64>,
    pub ready_seconds: Option<f64>,
    /// When it was given back, or the run's end if it was not.
    pub ended_seconds: f64,
    /// Whether it was given back before the run's end.
    pub given_back: bool,
    pub images_served: u64,
    /// Whether anything was waiting (queued, held or retrying) when it became ready.
    pub backlog_when_ready: bool,
    /// The most requests it held at once, queued or in inference.
    pub peak_outstanding: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaChange {
    pub at_seconds: f64,
    pub from: u32,
    pub to: u32,
    /// The policy's own account of the decision, if it gives one
    /// ([`Scaler::explain`](crate::scalers::Scaler::explain)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// The fleet once a second, for plots.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelinePoint {
    pub at_seconds: f64,
    /// Requests queued in pods, held in front or waiting in the gateway.
    pub queued: usize,
    /// Clients refused and waiting to retry.
    pub retrying: usize,
    pub replicas: u32,
    pub ready: u32,
}

/// Everything a run produced, for the report.
pub struct RunRecord {
    /// Per image: seconds from first try to answer; `None` if never answered.
    pub latencies: Vec<Option<f64>>,
    pub pods: Vec<PodRecord>,
    pub changes: Vec<ReplicaChange>,
    pub timeline: Vec<TimelinePoint>,
    /// 429s clients saw.
    pub rejections: u64,
    /// 503s from the gateway: a request's budget ran out in its queue.
    pub timeouts: u64,
    /// The first this many pods were running when the trace began.
    pub initial_pods: usize,
    /// GPU-seconds of the nodes the cluster added on demand, from launch to removal.
    pub added_node_seconds: f64,
}
