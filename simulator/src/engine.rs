//! The discrete-event simulation of one policy on one workload.
//!
//! Pods: one GPU each; created by the policy's replica count, placed on a GPU node
//! (free, added after a delay, or none: unschedulable), ready after a start-up delay,
//! then serving a bounded FIFO queue with a GPU loop that runs one batch at a time. On
//! scale-down a ReplicaSet removes pods that are not ready first, then the newest; a
//! ready pod being removed drains its queue before it ends (graceful termination).
//!
//! Requests: routed by the Service to a ready pod. A full queue answers 429 with the
//! `Retry-After` a real pod gives (`matte_common::queue::retry_after`: the requests it
//! holds at its measured time per image), counts the client away until then, and the
//! client comes back after it plus up to half again (jitter, so refused clients do not
//! return in lockstep); it keeps trying until served, and its latency
//! counts from its first try. While no pod at all is ready, requests are held in front
//! (Knative's activator, KEDA's HTTP interceptor) and that queue is in the metrics, so
//! that a fleet scaled to zero can see its demand.
//!
//! With gateway routing the gateway is modelled as `matte-gateway` works
//! (`gateway/src/dispatcher.rs`; its arithmetic, `matte_common::admission`, is called
//! here too): a request takes a place on the ready
//! pod with the fewest requests outstanding (ties to the first after the last chosen)
//! if nobody waits and a pod is below its queue capacity; otherwise it joins one FIFO if
//! its expected wait, `(ahead + 1)` images' work on the ready pods and on the pods
//! starting from when they are expected ready (the upper quartile of the start-ups the
//! gateway saw, scheduled to ready), fits the budget (or cannot be known: no ready pod,
//! nothing measured yet), and gets 429 with `Retry-After`
//! (the whole seconds until that wait is down to half the budget, at most the budget)
//! if not. The per-image time is the gateway's own
//! measurement: a moving average of each served request's time on its pod divided by
//! the requests outstanding there when it was sent. A place freed (an answer) or a pod
//! turning ready goes to the head of the FIFO at once. A request still waiting when its
//! budget runs out is answered 503 with `Retry-After` and its client comes back, as after
//! a 429. Prometheus scrapes the gateway's queue depth and oldest age; the pods never
//! refuse.
//!
//! Billing: a pod costs GPU-seconds from the moment it has a GPU (a free node, or one
//! being added for it) until it ends. Unschedulable pods have no GPU and cost nothing.
//! The nodes added on demand are counted apart, from launch to removal: a node the
//! cluster keeps for its idle timeout after a burst is paid for whether or not a pod
//! holds it, and a policy that asks for many leaves many to the next burst.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use super::gpus::{GpuPool, Placement};
use super::prometheus::{Counters, Gauges, Prometheus, Target};
use super::random::{Stream, StreamName};
use super::record::{PodRecord, ReplicaChange, RunRecord, TimelinePoint};
use super::scalers::{ClusterView, Scaler};
use super::settings::{BATCHED_IMAGE_COST, Routing, Settings};
use super::startups::StartupDraws;
use super::workload::Workload;
use matte_common::admission::{self, Admission, Fleet, PerImageTime, StartupTimes};
use matte_common::deferred::DeferredClients;
use matte_common::queue;
use matte_policy::Startup;
use matte_policy::observed::GatewayScrape;

/// Runs `scaler` on `workload` and records what happened.
pub fn run(settings: &Settings, workload: &Workload, scaler: &mut dyn Scaler, seed: u64) -> RunRecord {
    let mut engine = Engine::new(settings, workload, seed);
    engine.start(scaler.initial_replicas());
    // Periodic events: the first here, each next one when it is handled. Rules run a
    // second after the scrapes so that they see them.
    if settings.spread_scrapes {
        for replica in 0..settings.front_replicas() {
            engine.schedule_first_scrape(ScrapeOf::Front { replica });
        }
    } else {
        engine.schedule(0.0, Event::Scrape);
        for replica in 0..settings.front_replicas() {
            engine.schedule(0.0, Event::ScrapeTarget(ScrapeOf::Front { replica }));
        }
    }
    engine.schedule(1.0, Event::Evaluate);
    engine.schedule(scaler.first_decision_seconds(), Event::ScalerTick);
    engine.schedule(0.0, Event::Sample);
    while let Some(Scheduled { at, event, .. }) = engine.events.pop() {
        if at > settings.end_seconds() {
            break;
        }
        engine.now = at;
        engine.handle(event, scaler);
    }
    engine.finish()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Event {
    /// An image is sent, for the first time or again after a 429.
    Arrival(usize),
    BatchDone {
        pod: usize,
        duration: f64,
    },
    /// A node being added (by its index in the GPU pool) is there.
    NodeReady(usize),
    PodReady(usize),
    /// Every pod at once.
    Scrape,
    /// One target: a front replica at its own interval, or with spread scrapes
    /// (`Settings::spread_scrapes`) any target at its own offset within its interval.
    ScrapeTarget(ScrapeOf),
    Evaluate,
    ScalerTick,
    /// Once a second: the timeline, and the samples KPA takes from its pods.
    Sample,
    /// The budget of a request admitted to the gateway's queue on its `attempt`-th try
    /// runs out.
    GatewayDeadline {
        request: usize,
        attempt: u32,
    },
}

/// A scrape target when each has its own offset.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ScrapeOf {
    /// A replica of the gateway (or the front, which has one).
    Front {
        replica: u32,
    },
    Pod(usize),
}

/// An event at a time; the heap yields the earliest, ties in the order scheduled.
struct Scheduled {
    at: f64,
    order: u64,
    event: Event,
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.total_cmp(&self.at).then_with(|| other.order.cmp(&self.order))
    }
}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scheduled {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No GPU can be had.
    Unschedulable,
    /// A GPU node is being added for it.
    WaitingForNode,
    /// Pulling the image, loading and warming up the model.
    Starting,
    Ready,
    /// Removed while ready: finishing its queue, taking nothing new.
    Draining,
    Ended,
}

impl Phase {
    /// Pods that count towards the Deployment's replicas.
    fn is_active(self) -> bool {
        matches!(self, Phase::Unschedulable | Phase::WaitingForNode | Phase::Starting | Phase::Ready)
    }

    /// The order in which a ReplicaSet picks pods to remove: unscheduled before
    /// scheduled, not ready before ready.
    fn removal_rank(self) -> u8 {
        match self {
            Phase::Unschedulable => 0,
            Phase::WaitingForNode => 1,
            Phase::Starting => 2,
            _ => 3,
        }
    }
}

struct Queued {
    request: usize,
    since: f64,
}

struct Pod {
    created: f64,
    /// When it was bound to a node that exists (a new node must be added first).
    scheduled: Option<f64>,
    phase: Phase,
    node: Option<usize>,
    billed_from: Option<f64>,
    ready_at: Option<f64>,
    /// From being scheduled to Ready, once it was; the fleet running when the trace
    /// begins started before it, and shows none.
    startup_seconds: Option<f64>,
    ended_at: Option<f64>,
    queue: VecDeque<Queued>,
    batch: Vec<usize>,
    served: u64,
    backlog_when_ready: bool,
    peak_outstanding: usize,
    /// Its time per image, as the pod measures it (`matte_common::queue`): the
    /// `Retry-After` it gives follows it.
    per_image: Duration,
    /// The clients it refused, by when they may be back.
    sent_away: DeferredClients,
    /// What its `/metrics` shows.
    counters: Counters,
}

impl Pod {
    fn outstanding(&self) -> usize {
        self.queue.len() + self.batch.len()
    }

    fn is_idle(&self) -> bool {
        self.outstanding() == 0
    }

    fn note_outstanding(&mut self) {
        self.peak_outstanding = self.peak_outstanding.max(self.outstanding());
    }

    /// Refuses a client at `now`: the `Retry-After` it is given, the time the requests
    /// it holds take at its pace, as a real pod's.
    fn refuse(&mut self, now: f64) -> Duration {
        let retry_after = queue::retry_after(self.outstanding(), self.per_image);
        self.counters.refused += 1;
        self.sent_away.send_away(Duration::from_secs_f64(now), retry_after);
        retry_after
    }
}

/// The gateway's state, with gateway routing.
#[derive(Default)]
struct Gateway {
    /// Requests waiting for a place on a pod, oldest first.
    waiting: VecDeque<Queued>,
    /// The measured time per image (moving average), as the gateway measures it.
    per_image: PerImageTime,
    /// The start-ups of the pods it saw start, from scheduled (an endpoint, not ready)
    /// to ready.
    startups: StartupTimes,
    /// Where the next tie-break starts.
    rotation: usize,
    /// `matte_gateway_received_total`: every request, counted as it arrives.
    received: u64,
    /// `matte_gateway_requests_total{outcome=~"queue_full|no_capacity"}`: clients sent
    /// away to come back later.
    refused: u64,
    /// The clients sent away, by when they may be back: `matte_gateway_deferred_requests`
    /// and `matte_gateway_deferred_due_total`.
    sent_away: DeferredClients,
}

impl Gateway {
    /// A client sent away now, told to come back after `retry_after`.
    fn defer(&mut self, now: f64, retry_after: Duration) {
        self.refused += 1;
        self.sent_away.send_away(Duration::from_secs_f64(now), retry_after);
    }

    fn record(&mut self, on_pod: f64, outstanding_when_sent: u32) {
        self.per_image.record(Duration::from_secs_f64(on_pod), outstanding_when_sent);
    }
}

struct Engine<'a> {
    settings: &'a Settings,
    workload: &'a Workload,
    now: f64,
    events: BinaryHeap<Scheduled>,
    scheduled: u64,
    answered: Vec<Option<f64>>,
    retrying: Vec<bool>,
    retrying_count: usize,
    pods: Vec<Pod>,
    initial_pods: usize,
    held_in_front: VecDeque<Queued>,
    /// The front's counters: requests it held.
    front: Counters,
    gateway: Gateway,
    /// Per request: its tries so far.
    attempts: Vec<u32>,
    /// Per request: when the gateway sent it to a pod, and that pod's requests
    /// outstanding from the gateway then (itself included).
    sent: Vec<(f64, u32)>,
    gpus: GpuPool,
    rejections: u64,
    timeouts: u64,
    prometheus: Prometheus,
    changes: Vec<ReplicaChange>,
    timeline: Vec<TimelinePoint>,
    routing_rng: Stream,
    startup_draws: StartupDraws,
    provisioning_rng: Stream,
    scrape_offset_rng: Stream,
    initial_startups_rng: Stream,
}

/// A drawn start-up kept within a third and twice the median: the log-normal's far
/// tails are no pod's.
fn within_startup_bounds(drawn: f64, median: f64) -> f64 {
    drawn.clamp(median / 3.0, median * 2.0)
}

impl<'a> Engine<'a> {
    fn new(settings: &'a Settings, workload: &'a Workload, seed: u64) -> Self {
        let requests = workload.arrivals.len();
        Self {
            settings,
            workload,
            now: 0.0,
            events: BinaryHeap::new(),
            scheduled: 0,
            answered: vec![None; requests],
            retrying: vec![false; requests],
            retrying_count: 0,
            pods: Vec::new(),
            initial_pods: 0,
            held_in_front: VecDeque::new(),
            front: Counters::default(),
            gateway: Gateway::default(),
            attempts: vec![0; requests],
            sent: vec![(0.0, 0); requests],
            gpus: GpuPool::new(settings.warm_gpus, settings.max_gpus, settings.node_idle_timeout_seconds),
            rejections: 0,
            timeouts: 0,
            prometheus: Prometheus::new(settings.windows(), settings.rate_window_seconds),
            changes: Vec::new(),
            timeline: Vec::new(),
            routing_rng: Stream::new(seed, StreamName::Routing),
            startup_draws: StartupDraws::new(seed, settings.matched_startups),
            provisioning_rng: Stream::new(seed, StreamName::NodeProvisioning),
            scrape_offset_rng: Stream::new(seed, StreamName::ScrapeOffsets),
            initial_startups_rng: Stream::new(seed, StreamName::InitialStartups),
        }
    }

    /// The fleet already running when the trace begins, and every arrival.
    fn start(&mut self, initial_replicas: u32) {
        self.initial_pods = usize::try_from(initial_replicas).unwrap_or(usize::MAX);
        for _ in 0..initial_replicas {
            let mut pod = self.new_pod();
            if let Some((node, placement)) = self.gpus.claim(0.0) {
                if placement != Placement::Free {
                    self.gpus.occupy(node);
                }
                pod.node = Some(node);
                pod.billed_from = Some(0.0);
                pod.phase = Phase::Ready;
                pod.ready_at = Some(0.0);
                // The operator reads a start-up off every ready pod, those it found
                // running included: these show one drawn as a pod's is, from a stream
                // of their own, so that every other draw stays where it was.
                let median = self.settings.startup_seconds;
                let drawn = self.initial_startups_rng.lognormal(median, self.settings.startup_sigma);
                pod.startup_seconds = Some(within_startup_bounds(drawn, median));
            }
            self.pods.push(pod);
            self.schedule_first_scrape(ScrapeOf::Pod(self.pods.len() - 1));
        }
        for (request, &at) in self.workload.arrivals.iter().enumerate() {
            self.schedule(at, Event::Arrival(request));
        }
    }

    fn schedule(&mut self, at: f64, event: Event) {
        self.scheduled += 1;
        self.events.push(Scheduled { at, order: self.scheduled, event });
    }

    fn period(&self, event: Event, scaler: &dyn Scaler) -> f64 {
        match event {
            Event::Scrape => self.settings.scrape_interval_seconds,
            Event::Evaluate => self.settings.rule_interval_seconds,
            Event::ScalerTick => scaler.interval_seconds(),
            _ => 1.0,
        }
    }

    fn handle(&mut self, event: Event, scaler: &mut dyn Scaler) {
        match event {
            Event::Arrival(request) => {
                if std::mem::take(&mut self.retrying[request]) {
                    self.retrying_count -= 1;
                }
                self.attempts[request] += 1;
                if self.settings.routing == Routing::Gateway {
                    self.gateway_arrival(request);
                } else {
                    self.route(request, false);
                }
            }
            Event::GatewayDeadline { request, attempt } => self.gateway_deadline(request, attempt),
            Event::BatchDone { pod, duration } => self.batch_done(pod, duration),
            Event::NodeReady(node) => self.node_ready(node),
            Event::PodReady(pod) => self.pod_ready(pod),
            Event::Scrape => self.scrape_pods(),
            Event::ScrapeTarget(target) => self.scrape_target(target),
            Event::Evaluate => self.prometheus.evaluate(self.now),
            Event::ScalerTick => {
                let replicas = scaler.decide(&self.view());
                self.scale_to(replicas, || scaler.explain());
            }
            Event::Sample => {
                scaler.sample(&self.view());
                self.record_timeline();
            }
        }
        if matches!(event, Event::Scrape | Event::Evaluate | Event::ScalerTick | Event::Sample) {
            let next = self.now + self.period(event, scaler);
            self.schedule(next, event);
        }
    }

    /// Sends a request to a pod; `was_held`: it was held in front, which counted it.
    fn route(&mut self, request: usize, was_held: bool) {
        let ready: Vec<usize> = (0..self.pods.len()).filter(|&index| self.pods[index].phase == Phase::Ready).collect();
        if ready.is_empty() {
            self.front.admitted += 1;
            self.held_in_front.push_back(Queued { request, since: self.now });
            return;
        }
        let chosen = match self.settings.routing {
            Routing::Random => ready[self.routing_rng.index(ready.len())],
            // The gateway never routes here; least-outstanding is its routing without its
            // queue.
            Routing::LeastOutstanding | Routing::Gateway => {
                ready.iter().copied().min_by_key(|&index| self.pods[index].outstanding()).unwrap_or(ready[0])
            }
        };
        // As the pods' admission: every request it holds, queued or in inference, takes
        // one of the capacity's places.
        if self.pods[chosen].outstanding() >= self.settings.queue_capacity {
            let retry_after = self.pods[chosen].refuse(self.now);
            self.rejections += 1;
            self.retry_later(request, retry_after.as_secs_f64());
        } else {
            if !was_held {
                self.pods[chosen].counters.admitted += 1;
            }
            self.pods[chosen].queue.push_back(Queued { request, since: self.now });
            self.pods[chosen].note_outstanding();
            self.start_batch(chosen);
        }
    }

    /// The client of a refused request comes back after `retry_after` plus up to half
    /// again.
    fn retry_later(&mut self, request: usize, retry_after: f64) {
        self.retrying[request] = true;
        self.retrying_count += 1;
        let wait = retry_after * (1.0 + 0.5 * self.routing_rng.uniform());
        self.schedule(self.now + wait, Event::Arrival(request));
    }

    fn ready_pods(&self) -> usize {
        self.pods.iter().filter(|pod| pod.phase == Phase::Ready).count()
    }

    /// A request reaches the gateway: a place at once, a place in its queue, or 429.
    fn gateway_arrival(&mut self, request: usize) {
        self.gateway.received += 1;
        if self.gateway.waiting.is_empty()
            && let Some(pod) = self.free_pod()
        {
            self.send(request, pod);
            return;
        }
        if let Admission::Refuse { retry_after, .. } = admission::decide(self.gateway_expected_wait(), self.budget()) {
            self.rejections += 1;
            self.gateway.defer(self.now, retry_after);
            self.retry_later(request, retry_after.as_secs_f64());
            return;
        }
        self.gateway.waiting.push_back(Queued { request, since: self.now });
        let attempt = self.attempts[request];
        self.schedule(self.now + self.settings.max_wait_seconds, Event::GatewayDeadline { request, attempt });
    }

    /// The budget of a request admitted on its `attempt`-th try has run out: if it
    /// still waits, it leaves the queue with 503 and `Retry-After`.
    fn gateway_deadline(&mut self, request: usize, attempt: u32) {
        if self.attempts[request] != attempt {
            return;
        }
        let Some(position) = self.gateway.waiting.iter().position(|queued| queued.request == request) else {
            return;
        };
        self.gateway.waiting.remove(position);
        self.timeouts += 1;
        let after = admission::retry_after_expecting(self.gateway_expected_wait(), self.budget());
        self.gateway.defer(self.now, after);
        self.retry_later(request, after.as_secs_f64());
    }

    /// The expected wait of a request joining the back of the gateway's queue: on the
    /// ready pods, and those starting from when the start-ups the gateway saw say they
    /// will be ready.
    fn gateway_expected_wait(&self) -> Option<Duration> {
        let starting_ready_in: Vec<Duration> = self
            .pods
            .iter()
            .filter(|pod| pod.phase == Phase::Starting)
            .filter_map(|pod| pod.scheduled)
            .filter_map(|scheduled| self.gateway.startups.ready_in(Duration::from_secs_f64(self.now - scheduled)))
            .collect();
        let fleet = Fleet { ready: self.ready_pods(), starting_ready_in: &starting_ready_in };
        admission::expected_wait(self.gateway.waiting.len(), self.gateway.per_image.get(), fleet)
    }

    /// A request's budget in the gateway's queue (`--max-wait-seconds`).
    fn budget(&self) -> Duration {
        Duration::from_secs_f64(self.settings.max_wait_seconds)
    }

    /// The gateway's pick: of the ready pods below their queue capacity, the one with
    /// the fewest requests outstanding, ties to the first from the rotation on.
    fn free_pod(&self) -> Option<usize> {
        let count = self.pods.len();
        (0..count)
            .map(|offset| (self.gateway.rotation + offset) % count)
            .filter(|&index| {
                let pod = &self.pods[index];
                pod.phase == Phase::Ready && pod.outstanding() < self.settings.queue_capacity
            })
            .min_by_key(|&index| self.pods[index].outstanding())
    }

    /// The gateway sends `request` to `pod`.
    fn send(&mut self, request: usize, index: usize) {
        let pod = &mut self.pods[index];
        pod.counters.admitted += 1;
        pod.queue.push_back(Queued { request, since: self.now });
        pod.note_outstanding();
        self.sent[request] = (self.now, u32::try_from(pod.outstanding()).unwrap_or(u32::MAX));
        self.gateway.rotation = index + 1;
        self.start_batch(index);
    }

    /// Free places go to the requests waiting in the gateway, oldest first.
    fn hand_out(&mut self) {
        while !self.gateway.waiting.is_empty() {
            let Some(pod) = self.free_pod() else { return };
            let Some(queued) = self.gateway.waiting.pop_front() else { return };
            self.send(queued.request, pod);
        }
    }

    fn start_batch(&mut self, index: usize) {
        let pod = &mut self.pods[index];
        if !pod.batch.is_empty() || pod.queue.is_empty() {
            return;
        }
        let size = pod.queue.len().min(self.settings.max_batch_size);
        let (mut total, mut longest) = (0.0_f64, 0.0_f64);
        for queued in pod.queue.drain(..size) {
            pod.counters.observe_queue_wait(self.now - queued.since);
            let alone = self.workload.service_seconds[queued.request];
            total += alone;
            longest = longest.max(alone);
            pod.batch.push(queued.request);
        }
        let duration = longest + BATCHED_IMAGE_COST * (total - longest);
        self.schedule(self.now + duration, Event::BatchDone { pod: index, duration });
    }

    fn batch_done(&mut self, index: usize, duration: f64) {
        // Like the pods' histogram, the inference time is observed when the run ends.
        self.pods[index].counters.inference_seconds += duration;
        let finished = std::mem::take(&mut self.pods[index].batch);
        let per_image = Duration::from_secs_f64(duration / finished.len().max(1) as f64);
        self.pods[index].per_image = queue::updated_service_time(self.pods[index].per_image, per_image);
        for &request in &finished {
            self.answered[request] = Some(self.now - self.workload.arrivals[request]);
        }
        if self.settings.routing == Routing::Gateway {
            for &request in &finished {
                let (sent_at, outstanding) = self.sent[request];
                self.gateway.record(self.now - sent_at, outstanding);
            }
        }
        let count = u64::try_from(finished.len()).unwrap_or(u64::MAX);
        self.pods[index].served += count;
        self.pods[index].counters.inference_rows += count;
        self.start_batch(index);
        if self.pods[index].phase == Phase::Draining && self.pods[index].is_idle() {
            self.end_pod(index);
        }
        self.hand_out();
    }

    fn node_ready(&mut self, node: usize) {
        let waiting = self.pods.iter().position(|pod| pod.phase == Phase::WaitingForNode && pod.node == Some(node));
        if let Some(index) = waiting {
            self.gpus.occupy(node);
            self.begin_startup(index);
        } else {
            // Its pod was given back while it was being added, and none took its place:
            // the node is free.
            self.gpus.release(node, self.now);
            self.place_unschedulable();
        }
    }

    fn pod_ready(&mut self, index: usize) {
        if self.pods[index].phase != Phase::Starting {
            return;
        }
        let backlog = self.retrying_count > 0
            || !self.held_in_front.is_empty()
            || !self.gateway.waiting.is_empty()
            || self.pods.iter().any(|pod| !pod.queue.is_empty());
        let pod = &mut self.pods[index];
        pod.phase = Phase::Ready;
        pod.ready_at = Some(self.now);
        pod.backlog_when_ready = backlog;
        pod.startup_seconds = Some(self.now - pod.scheduled.unwrap_or(pod.created));
        if let Some(scheduled) = pod.scheduled {
            self.gateway.startups.record(Duration::from_secs_f64(self.now - scheduled));
        }
        for held in std::mem::take(&mut self.held_in_front) {
            self.route(held.request, true);
        }
        self.hand_out();
    }

    fn begin_startup(&mut self, index: usize) {
        let median = self.settings.startup_seconds;
        let startup =
            within_startup_bounds(self.startup_draws.draw(self.now, median, self.settings.startup_sigma), median);
        self.pods[index].phase = Phase::Starting;
        self.pods[index].scheduled = Some(self.now);
        self.schedule(self.now + startup, Event::PodReady(index));
    }

    fn new_pod(&self) -> Pod {
        Pod {
            created: self.now,
            scheduled: None,
            phase: Phase::Unschedulable,
            node: None,
            billed_from: None,
            ready_at: None,
            startup_seconds: None,
            ended_at: None,
            queue: VecDeque::new(),
            batch: Vec::new(),
            served: 0,
            backlog_when_ready: false,
            peak_outstanding: 0,
            // A real pod's first measurement is its warm-up run of one image.
            per_image: Duration::from_secs_f64(self.settings.service_seconds),
            sent_away: DeferredClients::default(),
            counters: Counters::default(),
        }
    }

    /// Gives an unschedulable pod a GPU if one can be had now.
    fn place(&mut self, index: usize) -> bool {
        let Some((node, placement)) = self.gpus.claim(self.now) else {
            return false;
        };
        self.pods[index].node = Some(node);
        self.pods[index].billed_from = Some(self.now);
        match placement {
            Placement::Free => self.begin_startup(index),
            Placement::Provisioning => {
                self.pods[index].phase = Phase::WaitingForNode;
                let delay = self.provisioning_rng.lognormal(self.settings.node_provision_seconds, 0.3);
                self.schedule(self.now + delay, Event::NodeReady(node));
            }
            // Its `NodeReady` is already on its way.
            Placement::Joining => self.pods[index].phase = Phase::WaitingForNode,
        }
        true
    }

    /// A GPU may have come free: the oldest unschedulable pods get it.
    fn place_unschedulable(&mut self) {
        for index in 0..self.pods.len() {
            if self.pods[index].phase == Phase::Unschedulable && !self.place(index) {
                return;
            }
        }
    }

    /// Scales the fleet to `replicas`, recording the change with the policy's account of
    /// it (asked for only when the replicas change).
    fn scale_to(&mut self, replicas: u32, why: impl FnOnce() -> Option<String>) {
        let active: Vec<usize> = (0..self.pods.len()).filter(|&index| self.pods[index].phase.is_active()).collect();
        let current = u32::try_from(active.len()).unwrap_or(u32::MAX);
        if replicas == current {
            return;
        }
        self.changes.push(ReplicaChange { at_seconds: self.now, from: current, to: replicas, why: why() });
        if replicas > current {
            for _ in current..replicas {
                let pod = self.new_pod();
                self.pods.push(pod);
                self.schedule_first_scrape(ScrapeOf::Pod(self.pods.len() - 1));
                self.place(self.pods.len() - 1);
            }
            return;
        }
        let mut victims = active;
        victims.sort_by(|&a, &b| {
            let (a, b) = (&self.pods[a], &self.pods[b]);
            a.phase.removal_rank().cmp(&b.phase.removal_rank()).then(b.created.total_cmp(&a.created))
        });
        let excess = usize::try_from(current - replicas).unwrap_or(usize::MAX);
        for index in victims.into_iter().take(excess) {
            self.remove(index);
        }
    }

    fn remove(&mut self, index: usize) {
        match self.pods[index].phase {
            Phase::Ready if !self.pods[index].is_idle() => self.pods[index].phase = Phase::Draining,
            // Its node is still being added, for the next pod that needs one
            // (`node_ready` frees it if none has by then).
            Phase::WaitingForNode => {
                self.pods[index].phase = Phase::Ended;
                self.pods[index].ended_at = Some(self.now);
                if let Some(node) = self.pods[index].node {
                    self.gpus.unclaim(node);
                    self.place_unschedulable();
                }
            }
            _ => self.end_pod(index),
        }
    }

    fn end_pod(&mut self, index: usize) {
        let pod = &mut self.pods[index];
        pod.phase = Phase::Ended;
        pod.ended_at = Some(self.now);
        self.prometheus.target_gone(pod_target(index), self.now);
        if let Some(node) = pod.node {
            self.gpus.release(node, self.now);
            self.place_unschedulable();
        }
    }

    /// Prometheus scrapes every pod that serves (draining ones too) at once; the front
    /// has scrapes of its own, at its own interval.
    fn scrape_pods(&mut self) {
        for index in 0..self.pods.len() {
            self.scrape_pod(index);
        }
    }

    /// How often `target` is scraped.
    fn scrape_interval(&self, target: ScrapeOf) -> f64 {
        match target {
            ScrapeOf::Front { .. } => self.settings.front_scrape_interval_seconds(),
            ScrapeOf::Pod(_) => self.settings.scrape_interval_seconds,
        }
    }

    /// Schedules `target`'s first scrape at or after now, at its offset within the scrape
    /// interval; only when scrapes are spread. Prometheus derives a target's offset from
    /// its labels: each is drawn, but the first gateway replica's (or the front's), which
    /// is 0, the phase Matte's passes (`Settings::pass_after_scrape_seconds`) are counted
    /// from.
    fn schedule_first_scrape(&mut self, target: ScrapeOf) {
        if !self.settings.spread_scrapes {
            return;
        }
        let interval = self.scrape_interval(target);
        let offset = match target {
            ScrapeOf::Front { replica: 0 } => 0.0,
            _ => self.scrape_offset_rng.between(0.0, interval),
        };
        let first = offset + ((self.now - offset) / interval).ceil().max(0.0) * interval;
        self.schedule(first, Event::ScrapeTarget(target));
    }

    /// One target's scrape, and its next one an interval later while it exists.
    fn scrape_target(&mut self, target: ScrapeOf) {
        match target {
            ScrapeOf::Front { replica } => self.scrape_front(replica),
            ScrapeOf::Pod(index) if self.pods[index].phase == Phase::Ended => return,
            ScrapeOf::Pod(index) => self.scrape_pod(index),
        }
        self.schedule(self.now + self.scrape_interval(target), Event::ScrapeTarget(target));
    }

    fn scrape_pod(&mut self, index: usize) {
        let pod = &mut self.pods[index];
        pod.sent_away.advance(Duration::from_secs_f64(self.now));
        (pod.counters.deferred, pod.counters.deferred_due) = (pod.sent_away.away(), pod.sent_away.due_total());
        if matches!(pod.phase, Phase::Ready | Phase::Draining) {
            self.prometheus.scrape(self.now, pod_target(index), queue_gauges(&pod.queue, self.now), &pod.counters);
        }
    }

    /// The gateway's `replica`, reporting an equal share of its one queue and of its
    /// counters; without a gateway, the holding front (its one replica).
    fn scrape_front(&mut self, replica: u32) {
        if self.settings.routing == Routing::Gateway {
            self.gateway.sent_away.advance(Duration::from_secs_f64(self.now));
            let share = 1.0 / f64::from(self.settings.gateway_replicas);
            let waiting = queue_gauges(&self.gateway.waiting, self.now);
            let scrape = GatewayScrape {
                queue_depth: waiting.queue_depth * share,
                oldest_queued_age_seconds: waiting.oldest_queued_age_seconds,
                refused: self.gateway.refused as f64 * share,
                received: self.gateway.received as f64 * share,
                deferred: self.gateway.sent_away.away() as f64 * share,
                deferred_due: self.gateway.sent_away.due_total() as f64 * share,
            };
            self.prometheus.scrape_gateway(self.now, replica as Target, &scrape);
        } else {
            self.prometheus.scrape(self.now, FRONT, queue_gauges(&self.held_in_front, self.now), &self.front);
        }
    }

    fn view(&self) -> ClusterView<'_> {
        let count = |phase: Phase| self.pods.iter().filter(|pod| pod.phase == phase).count();
        let starting_ages = self
            .pods
            .iter()
            .filter(|pod| pod.phase == Phase::Starting)
            .map(|pod| self.now - pod.scheduled.unwrap_or(pod.created))
            .collect();
        let inflight = self.pods.iter().filter(|pod| pod.phase.is_active()).map(Pod::outstanding).sum::<usize>()
            + self.held_in_front.len()
            + self.gateway.waiting.len()
            + self.retrying_count;
        ClusterView {
            now: self.now,
            replicas: to_u32(self.pods.iter().filter(|pod| pod.phase.is_active()).count()),
            ready: to_u32(count(Phase::Ready)),
            starting_ages,
            // A pod waiting for a node that the cluster autoscaler adds is, to the
            // operator's census, unschedulable like one that no node will take: its
            // PodScheduled condition is False, reason Unschedulable, until the node is there.
            unschedulable: to_u32(count(Phase::Unschedulable) + count(Phase::WaitingForNode)),
            ready_startups: self.ready_startups(),
            metrics: self.prometheus.latest(),
            prometheus: &self.prometheus,
            inflight: inflight as f64,
        }
    }

    /// The start-ups of the pods ready now, as the operator's census reads them: from
    /// the pod being scheduled to Ready, the pod's own part (a node being added is the
    /// cluster's, and would make the next pod on a free node look slower than it is).
    fn ready_startups(&self) -> Vec<Startup> {
        self.pods
            .iter()
            .filter(|pod| pod.phase == Phase::Ready)
            .filter_map(|pod| Some(Startup { ready_seconds: pod.ready_at?, seconds: pod.startup_seconds?, pod: None }))
            .collect()
    }

    fn record_timeline(&mut self) {
        let queued = self.pods.iter().map(|pod| pod.queue.len()).sum::<usize>()
            + self.held_in_front.len()
            + self.gateway.waiting.len();
        let view = self.view();
        self.timeline.push(TimelinePoint {
            at_seconds: self.now,
            queued,
            retrying: self.retrying_count,
            replicas: view.replicas,
            ready: view.ready,
        });
    }

    fn finish(self) -> RunRecord {
        let end = self.settings.end_seconds();
        let pods = self
            .pods
            .iter()
            .map(|pod| PodRecord {
                created_seconds: pod.created,
                billed_from_seconds: pod.billed_from,
                ready_seconds: pod.ready_at,
                ended_seconds: pod.ended_at.unwrap_or(end),
                given_back: pod.ended_at.is_some(),
                images_served: pod.served,
                backlog_when_ready: pod.backlog_when_ready,
                peak_outstanding: pod.peak_outstanding,
            })
            .collect();
        RunRecord {
            latencies: self.answered,
            pods,
            changes: self.changes,
            timeline: self.timeline,
            rejections: self.rejections,
            timeouts: self.timeouts,
            initial_pods: self.initial_pods,
            added_node_seconds: self.gpus.added_node_seconds(end),
        }
    }
}

/// The front (activator, interceptor or gateway) is a scrape target of its own.
const FRONT: Target = 0;

/// A queue's gauges as its `/metrics` shows them at `now`.
fn queue_gauges(queue: &VecDeque<Queued>, now: f64) -> Gauges {
    Gauges {
        queue_depth: queue.len() as f64,
        oldest_queued_age_seconds: queue.front().map_or(0.0, |oldest| now - oldest.since),
    }
}

fn pod_target(index: usize) -> Target {
    index + 1
}

fn to_u32(count: usize) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_gateway_counts_a_client_away_until_its_retry_after_then_due() {
        let mut gateway = Gateway::default();
        gateway.defer(10.0, Duration::from_secs(30));
        gateway.defer(12.0, Duration::from_secs(5));
        gateway.sent_away.advance(Duration::from_secs(16));
        assert_eq!((gateway.sent_away.away(), gateway.sent_away.due_total(), gateway.refused), (2, 0, 2));
        gateway.sent_away.advance(Duration::from_secs(17));
        assert_eq!((gateway.sent_away.away(), gateway.sent_away.due_total()), (1, 1), "due at 17 s");
    }

    /// A full pod refuses as a real one does: `Retry-After` is the requests it holds at
    /// its measured pace, which follows the runs it has done.
    #[test]
    fn a_full_pod_gives_the_retry_after_its_queue_and_pace_make() {
        let settings = crate::scenario::Scenario::BurstTrain.settings();
        let workload = Workload::new(vec![0.0; 16], &settings, 7);
        let mut engine = Engine::new(&settings, &workload, 7);
        let mut pod = engine.new_pod();
        assert_eq!(pod.per_image, Duration::from_secs_f64(settings.service_seconds), "its warm-up run");
        pod.queue.extend((0..16).map(|request| Queued { request, since: 0.0 }));
        let retry_after = pod.refuse(3.0);
        assert_eq!(retry_after, queue::retry_after(16, pod.per_image));
        assert_eq!((pod.counters.refused, pod.sent_away.away()), (1, 1));
        pod.sent_away.advance(Duration::from_secs(3) + retry_after);
        assert_eq!((pod.sent_away.away(), pod.sent_away.due_total()), (0, 1));

        engine.pods.push(pod);
        engine.pods[0].batch = vec![0, 1];
        engine.batch_done(0, 4.0);
        let expected = queue::updated_service_time(Duration::from_secs_f64(settings.service_seconds), 2 * SECOND);
        assert_eq!(engine.pods[0].per_image, expected, "a run of two images in 4 s");
    }

    /// What Matte's policy is shown of start-ups is what the operator's census reads: the
    /// pods ready now, each from being scheduled to Ready; the fleet running when the
    /// trace begins shows one drawn as a pod's is, ready at the start, and a pod that
    /// ends shows none.
    #[test]
    fn the_policy_is_shown_the_start_ups_of_the_pods_ready_now() {
        let settings = crate::scenario::Scenario::BurstTrain.settings();
        let workload = Workload::new(Vec::new(), &settings, 7);
        let mut engine = Engine::new(&settings, &workload, 7);
        engine.start(1);
        let at_the_start = engine.view().ready_startups;
        assert_eq!(at_the_start.len(), 1, "the fleet at the start shows its start-up: {at_the_start:?}");
        assert_eq!(at_the_start[0].ready_seconds, 0.0);
        assert!((20.0..=120.0).contains(&at_the_start[0].seconds), "{at_the_start:?}");
        engine.now = 100.0;
        engine.scale_to(2, || None);
        let ready = loop {
            let Scheduled { at, event, .. } = engine.events.pop().expect("the new pod turns ready");
            engine.now = at;
            if let Event::PodReady(index) = event {
                engine.pod_ready(index);
                break index;
            }
        };
        let startups = engine.view().ready_startups;
        assert_eq!(startups.len(), 2, "{startups:?}");
        let new = startups.iter().find(|startup| startup.ready_seconds == engine.now).expect("the new pod's");
        assert!((new.seconds - (engine.now - 100.0)).abs() < 1e-9, "{startups:?} at {}", engine.now);
        engine.end_pod(ready);
        assert_eq!(engine.view().ready_startups, at_the_start, "an ended pod shows none");
    }

    /// Spread scrapes: each target (two gateway replicas, three pods) has its own offset
    /// within its interval (the gateway's 2 s, the pods' 5 s), kept from scrape to
    /// scrape, and a pod that ends is scraped no more.
    #[test]
    fn spread_scrapes_take_each_target_at_its_own_offset_and_interval() {
        let settings = Settings {
            spread_scrapes: true,
            gateway_replicas: 2,
            gateway_scrape_interval_seconds: 2.0,
            routing: Routing::Gateway,
            ..crate::scenario::Scenario::BurstTrain.settings()
        };
        let workload = Workload::new(Vec::new(), &settings, 7);
        let mut engine = Engine::new(&settings, &workload, 7);
        engine.start(3);
        for replica in 0..2 {
            engine.schedule_first_scrape(ScrapeOf::Front { replica });
        }
        let mut scrapes: Vec<(ScrapeOf, f64)> = Vec::new();
        while let Some(Scheduled { at, event, .. }) = engine.events.pop() {
            let Event::ScrapeTarget(target) = event else { continue };
            if at >= 20.0 {
                break;
            }
            engine.now = at;
            if target == ScrapeOf::Pod(0) && at >= 10.0 {
                engine.end_pod(0);
            }
            engine.scrape_target(target);
            scrapes.push((target, at));
        }
        let times = |target| scrapes.iter().filter(|(of, _)| *of == target).map(|(_, at)| *at).collect::<Vec<f64>>();
        let gateway = ScrapeOf::Front { replica: 0 };
        assert_eq!(times(gateway)[0], 0.0, "the phase the others are counted from");
        let second_gateway = ScrapeOf::Front { replica: 1 };
        assert!((0.0..2.0).contains(&times(second_gateway)[0]), "{:?}", times(second_gateway));
        let others = [second_gateway, ScrapeOf::Pod(0), ScrapeOf::Pod(1), ScrapeOf::Pod(2)];
        let firsts: Vec<f64> = others.map(|target| times(target)[0]).to_vec();
        assert!(firsts.iter().all(|first| (0.0..5.0).contains(first)), "{firsts:?}");
        assert!(firsts.windows(2).all(|pair| pair[0] != pair[1]), "one offset each: {firsts:?}");
        let every =
            [(gateway, 2.0, 10), (second_gateway, 2.0, 10), (ScrapeOf::Pod(1), 5.0, 4), (ScrapeOf::Pod(2), 5.0, 4)];
        for (target, interval, count) in every {
            let at = times(target);
            assert_eq!(at.len(), count, "every interval: {at:?}");
            assert!(at.windows(2).all(|pair| (pair[1] - pair[0] - interval).abs() < 1e-9), "{at:?}");
        }
        assert_eq!(times(ScrapeOf::Pod(0)).len(), 3, "none after the one that found it ended");
    }
}
