//! What a resource asks of the policy: its `autoscaling` spec, with the defaults of
//! everything it leaves out.

use serde::Serialize;

/// The user's settings, from the resource's `autoscaling` spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Every queued image should start inference within this many seconds of arriving.
    pub target_queue_latency_seconds: f64,
    /// How long unneeded pods are kept; `None` keeps them as long as a pod takes to start.
    pub scale_down_delay_seconds: Option<f64>,
    /// A new pod is started only if it will have at least this much work once ready
    /// (more behind the gateway once recurring bursts make pods worth keeping warm:
    /// `USEFUL_WORK_ON_A_WARM_FLEET`).
    pub min_useful_work_seconds: f64,
    /// Pod start-up time assumed until one has been measured.
    pub default_startup_seconds: f64,
    /// Images per second one pod processes, assumed until measured.
    pub default_images_per_pod_second: f64,
    /// Share of a pod's throughput that plans count on; below 1 because a pod is not
    /// busy every second (random arrivals, refused clients coming back a little late)
    /// and the pods started together for a burst become ready over a spread of
    /// start-up times. The default, 0.75, is the simulator's measured trade: each step
    /// of 0.05 down buys tail attainment on nearly every scenario for about 5 % more
    /// GPU-seconds (the table in the simulator's README). Behind a plain Service a
    /// backlog or a flow is planned at a share of this (`plan::PLAIN_SERVICE_PACE`).
    pub planned_utilization: f64,
    /// Metrics older than this are not trusted.
    pub stale_after_seconds: f64,
    /// How long a change must last before it is acted on: arrivals outrunning the ready
    /// pods before pods are started for their rate, and nothing waiting anywhere before
    /// pods still starting are given back. The gateway's arrivals window and one scrape
    /// more (10 s at the default scrape intervals: `observed::Windows::confirm`), so that
    /// the samples that first showed the change are out of the window by then, and only
    /// a change that lasted keeps it.
    pub confirm_seconds: f64,
    /// The window over which the gateway's inflow is read
    /// (`QueueMetrics::gateway_inflow_per_second`: 20 s at the default scrape intervals,
    /// `observed::Windows::inflow`): once a burst has been on for this long, its landing
    /// has left the window.
    pub inflow_window_seconds: f64,
    /// Whether `matte-gateway` is in front of the pods, holding the requests no pod has
    /// room for: then a ready pod finds its next image waiting whenever it finishes one,
    /// where behind a plain Service it waits for refused clients to come back.
    pub behind_gateway: bool,
}

/// The planned utilization a resource may choose, in percent of a pod's throughput
/// (`autoscaling.plannedUtilizationPercent`): below 30 a plan would start more than
/// three pods for every one kept busy; above 100 it would count on more than a pod does.
pub const PLANNED_UTILIZATION_PERCENT_MIN: u16 = 30;
pub const PLANNED_UTILIZATION_PERCENT_MAX: u16 = 100;

impl PolicySpec {
    /// The spec with `planned_utilization` set from a percentage, if one is given
    /// (`autoscaling.plannedUtilizationPercent`); the default stays otherwise.
    pub fn with_planned_utilization_percent(self, percent: Option<u16>) -> Self {
        let planned_utilization = percent.map_or(self.planned_utilization, |percent| f64::from(percent) / 100.0);
        Self { planned_utilization, ..self }
    }

    /// The spec with everything but the bounds and the target at its default.
    pub fn new(min_replicas: u32, max_replicas: u32, target_queue_latency_seconds: f64) -> Self {
        Self {
            min_replicas,
            max_replicas,
            target_queue_latency_seconds,
            scale_down_delay_seconds: None,
            min_useful_work_seconds: 10.0,
            default_startup_seconds: 60.0,
            default_images_per_pod_second: 1.0,
            planned_utilization: 0.75,
            stale_after_seconds: 60.0,
            confirm_seconds: 10.0,
            inflow_window_seconds: 20.0,
            behind_gateway: false,
        }
    }

    /// The replica bounds, repaired if the spec has them the wrong way round (the CRD
    /// validates this; the policy still must not panic or scale to nonsense).
    fn bounds(&self) -> (u32, u32) {
        (self.min_replicas, self.max_replicas.max(self.min_replicas))
    }

    /// The share of a pod's throughput plans count on, kept to the range a plan can use
    /// (the CRD validates the percentage; the policy still must not divide by nothing).
    pub(crate) fn planned_share(&self) -> f64 {
        self.planned_utilization.clamp(0.1, 1.0)
    }

    /// `replicas` within the resource's bounds.
    pub(crate) fn clamp(&self, replicas: u32) -> u32 {
        let (min, max) = self.bounds();
        replicas.clamp(min, max)
    }
}
