//! The gateway's central queue: the pods and their outstanding requests, the FIFO of
//! requests waiting for a place on one, and the hand-over of places ([`Lease`]s).
//!
//! A request takes a place at once when nobody waits and a pod has room; otherwise it
//! joins the FIFO if its expected wait fits its budget (see [`matte_common::admission`]), and
//! is handed a place when one frees, a pod turns ready, or an ejection ends. Endpoint
//! sources ([`crate::endpoints`]) replace the set of pods; a pod that disappears keeps
//! its outstanding requests until they end.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::Error;
use crate::upstream_state::{self, BUSY_PAUSE, EndpointReport, EndpointState, Upstream};
use matte_common::admission::{self, Admission, Fleet, PerImageTime, StartupTimes};

/// How often waiting requests are looked at without any other event, so that the end
/// of an ejection or of a pause after a pod's 429 is noticed promptly.
pub const TICK: Duration = Duration::from_millis(100);

pub struct Dispatcher {
    capacity: u32,
    inner: Mutex<Inner>,
    /// Whether the source's view of the pods is current (see [`Dispatcher::set_discovery_up`]).
    discovery_up: AtomicBool,
}

struct Inner {
    upstreams: Vec<Upstream>,
    waiting: VecDeque<Waiter>,
    per_image: PerImageTime,
    /// The start-ups of the pods this gateway saw start, first seen not ready to ready.
    startups: StartupTimes,
    next_waiter: u64,
    /// The id the next pod first seen gets ([`Upstream::id`]).
    next_upstream: u64,
    /// Where the next tie-break starts, so that equally loaded pods take turns.
    rotation: usize,
}

struct Waiter {
    id: u64,
    /// When its request first joined the queue, its body read, whether it waits for the
    /// first time or again after a pod turned it away: the oldest age is what it has
    /// waited for a place, as the queue-wait histogram counts it. Counted from its
    /// arrival, a slow upload read as a wait for the pods, and the autoscaler started
    /// pods that could not have served it sooner.
    queued_since: Instant,
    reply: oneshot::Sender<Lease>,
}

/// How an attempt on a pod ended, as far as the pod's standing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx: the pod served it, and its time counts toward the per-image estimate.
    Served,
    /// Any other answer that says nothing against the pod (a 4xx other than 429).
    Answered,
    /// 429: the pod's queue is full of other work.
    Busy,
    /// 503: the pod is draining or unhealthy.
    Unavailable,
    /// The connection was refused: nothing listens there (any more).
    Refused,
    /// The connection failed before a response, or the pod answered 5xx other than 503.
    Failed,
    /// The client left before the attempt ended: nothing is known about the pod.
    Abandoned,
}

/// What the metrics show of the dispatcher at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub queue_depth: usize,
    pub oldest_queued_age: Duration,
    pub ready: usize,
    pub unready: usize,
    pub ejected: usize,
    /// Whether the endpoint source's view is current.
    pub discovery_up: bool,
    /// The time per image admission counts on, once a pod has served one.
    pub per_image: Option<Duration>,
    /// The start-up admission counts on for the pods starting, once one has been seen.
    pub pod_startup: Option<Duration>,
}

impl Dispatcher {
    pub fn new(capacity: u32) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            capacity,
            inner: Mutex::new(Inner {
                upstreams: Vec::new(),
                waiting: VecDeque::new(),
                per_image: PerImageTime::default(),
                startups: StartupTimes::default(),
                next_waiter: 0,
                next_upstream: 0,
                rotation: 0,
            }),
            discovery_up: AtomicBool::new(true),
        })
    }

    /// An endpoint source tells whether the pods it reported are current (true from the
    /// start, for sources that cannot go stale) or the last it knew (false).
    pub fn set_discovery_up(&self, up: bool) {
        self.discovery_up.store(up, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; if something did, the state is still
        // counts and queues, better served than lost.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the set of pods with what a source reports; counts and failure history
    /// of the pods that stay are kept. A pod seen starting that turns ready shows how
    /// long pods take to start.
    pub fn update_endpoints(self: &Arc<Self>, reports: &[EndpointReport]) {
        let mut inner = self.lock();
        let now = Instant::now();
        // By address, so that a source listing thousands of pods costs a pass over
        // them, not a search of the others for each, under the lock every request takes.
        let mut known: HashMap<String, Upstream> = std::mem::take(&mut inner.upstreams)
            .into_iter()
            .map(|upstream| (upstream.address.clone(), upstream))
            .collect();
        let mut listed = HashSet::with_capacity(reports.len());
        let mut next = Vec::with_capacity(reports.len());
        let mut changes = Changes::default();
        for report in reports {
            // One address is one pod: a second entry for it would give the pod its
            // places twice over (`--upstream a:1,a:1`).
            if !listed.insert(report.address.as_str()) {
                continue;
            }
            let upstream = match known.remove(&report.address) {
                Some(known) => {
                    if report.ready != known.ready {
                        changes.readiness(report);
                    }
                    let starting_since = known.starting_since.filter(|_| report.starting);
                    if let Some(since) = known.starting_since.filter(|_| report.ready) {
                        inner.startups.record(now - since);
                    }
                    // A report that says something new of it is the source's word on it
                    // again; one that repeats what it said (another pod's change, or the
                    // next round of probes) is no news of this one.
                    let news = report.ready != known.ready || report.starting != known.starting_since.is_some();
                    let unavailable_until = known.unavailable_until.filter(|_| !news);
                    Upstream { ready: report.ready, unavailable_until, starting_since, ..known }
                }
                None => {
                    changes.added(report);
                    inner.next_upstream += 1;
                    Upstream { id: inner.next_upstream, ..Upstream::new(report, now) }
                }
            };
            next.push(upstream);
        }
        let mut removed: Vec<String> = known.into_keys().collect();
        removed.sort_unstable();
        inner.upstreams = next;
        self.hand_out(&mut inner);
        // Written once the lock every request takes is released: a relist may name
        // thousands of pods.
        drop(inner);
        changes.log(&removed);
    }

    /// Whether a new request with `budget` would be admitted now: lets a request be
    /// refused before its body is read. [`Dispatcher::acquire`] decides for good.
    pub fn admission(&self, budget: Duration) -> Admission {
        let inner = self.lock();
        admission::decide(self.expected_wait_of_newcomer(&inner), budget)
    }

    fn expected_wait_of_newcomer(&self, inner: &Inner) -> Option<Duration> {
        let now = Instant::now();
        if inner.waiting.is_empty() && self.free_pod(inner, now).is_some() {
            return Some(Duration::ZERO);
        }
        inner.expected_wait_at_the_back(now)
    }

    /// `Retry-After` for a request with `budget` turned away now.
    pub fn retry_after(&self, budget: Duration) -> Duration {
        let inner = self.lock();
        admission::retry_after_expecting(inner.expected_wait_at_the_back(Instant::now()), budget)
    }

    fn free_pod(&self, inner: &Inner, now: Instant) -> Option<usize> {
        upstream_state::pick(&inner.upstreams, self.capacity, inner.rotation, now)
    }

    /// A place on a pod for a request waiting for one since `queued_since` (its body
    /// read), until `deadline`. A request `requeued` after a pod turned it away goes to
    /// the head of the queue and is not admitted again.
    pub async fn acquire(
        self: &Arc<Self>,
        queued_since: Instant,
        deadline: Instant,
        requeued: bool,
    ) -> Result<Lease, Error> {
        let budget = deadline.saturating_duration_since(Instant::now());
        let (id, reply) = {
            let mut inner = self.lock();
            let now = Instant::now();
            if (requeued || inner.waiting.is_empty())
                && let Some(index) = self.free_pod(&inner, now)
            {
                return Ok(self.lease(&mut inner, index, now));
            }
            if !requeued
                && let Admission::Refuse { expected, retry_after } =
                    admission::decide(self.expected_wait_of_newcomer(&inner), budget)
            {
                return Err(Error::QueueFull {
                    expected: expected.as_secs_f64(),
                    budget: budget.as_secs_f64(),
                    retry_after,
                });
            }
            let (reply, received) = oneshot::channel();
            let id = inner.next_waiter;
            inner.next_waiter += 1;
            let waiter = Waiter { id, queued_since, reply };
            if requeued {
                inner.waiting.push_front(waiter);
            } else {
                inner.waiting.push_back(waiter);
            }
            (id, received)
        };
        let waiting = Waiting { dispatcher: self, id };
        let mut reply = reply;
        match tokio::time::timeout_at(deadline.into(), &mut reply).await {
            Ok(Ok(lease)) => Ok(lease),
            Ok(Err(_)) => Err(Error::Internal("the dispatcher dropped a waiting request".into())),
            Err(_) if waiting.leave() => {
                Err(Error::NoCapacity { budget: budget.as_secs_f64(), retry_after: self.retry_after(budget) })
            }
            // A place was handed over just as the budget ran out: use it.
            Err(_) => reply.await.map_err(|_| Error::Internal("the dispatcher dropped a granted place".into())),
        }
    }

    /// A place free right now, without waiting: for a request a pod turned away after its
    /// budget was spent. It goes before the requests waiting, as one sent again within
    /// its budget would.
    pub fn place_now(self: &Arc<Self>) -> Option<Lease> {
        let mut inner = self.lock();
        let now = Instant::now();
        let index = self.free_pod(&inner, now)?;
        Some(self.lease(&mut inner, index, now))
    }

    fn lease(self: &Arc<Self>, inner: &mut Inner, index: usize, now: Instant) -> Lease {
        let upstream = &mut inner.upstreams[index];
        upstream.outstanding += 1;
        upstream.awaiting_answer += 1;
        let lease = Lease {
            dispatcher: self.clone(),
            address: upstream.address.clone(),
            upstream: upstream.id,
            awaiting_when_sent: upstream.awaiting_answer,
            granted: now,
            recorded: false,
            given_back: false,
        };
        inner.rotation = index + 1;
        lease
    }

    /// Hands free places to the waiting requests, oldest first.
    fn hand_out(self: &Arc<Self>, inner: &mut Inner) {
        let now = Instant::now();
        while !inner.waiting.is_empty() {
            let Some(index) = self.free_pod(inner, now) else { return };
            let Some(waiter) = inner.waiting.pop_front() else { return };
            let lease = self.lease(inner, index, now);
            if let Err(mut unwanted) = waiter.reply.send(lease) {
                // Its client is gone: the place goes back without taking the lock again.
                unwanted.given_back = true;
                inner.unsent(unwanted.upstream);
            }
        }
    }

    /// Looks at the waiting requests every [`TICK`], for ever.
    pub async fn keep_handing_out(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let mut inner = self.lock();
            self.hand_out(&mut inner);
        }
    }

    /// How an attempt sent when `awaiting_when_sent` requests on its pod awaited their
    /// answer (itself included) went, `on_pod` after it was sent: its answer's head has
    /// come, or it never will.
    fn record(&self, upstream: u64, outcome: AttemptOutcome, on_pod: Duration, awaiting_when_sent: u32) {
        let mut inner = self.lock();
        let now = Instant::now();
        if outcome == AttemptOutcome::Served {
            inner.per_image.record(on_pod, awaiting_when_sent);
        }
        let Some(upstream) = inner.upstreams.iter_mut().find(|pod| pod.id == upstream) else { return };
        upstream.awaiting_answer = upstream.awaiting_answer.saturating_sub(1);
        let (unavailable_for, ejected_for) = match outcome {
            AttemptOutcome::Served | AttemptOutcome::Answered => {
                upstream.record_answer();
                (None, None)
            }
            AttemptOutcome::Busy => {
                upstream.record_answer();
                upstream.paused_until = Some(now + BUSY_PAUSE);
                (None, None)
            }
            AttemptOutcome::Unavailable => (upstream.record_unavailable(now), None),
            AttemptOutcome::Refused => (upstream.record_unavailable(now), upstream.record_failure(now)),
            AttemptOutcome::Failed => (None, upstream.record_failure(now)),
            AttemptOutcome::Abandoned => (None, None),
        };
        // Only when its standing changes, so that a pod failing under load is one line,
        // not one per request.
        if let Some(period) = unavailable_for {
            let reason = if outcome == AttemptOutcome::Refused { "refused the connection" } else { "answered 503" };
            tracing::warn!(
                upstream = %upstream.address,
                reason,
                seconds = period.as_secs_f64(),
                "pod marked unavailable until its source lists it again, or for this long"
            );
        }
        if let Some(period) = ejected_for {
            tracing::warn!(
                upstream = %upstream.address,
                reason = "failures in a row (broken connections, 5xx answers other than 503)",
                failures = upstream_state::FAILURES_BEFORE_EJECTION,
                times_in_a_row = upstream.times_ejected,
                seconds = period.as_secs_f64(),
                "pod ejected"
            );
        }
    }

    /// Gives a place on `upstream` back, and hands it out.
    fn release(self: &Arc<Self>, upstream: u64) {
        let mut inner = self.lock();
        inner.release(upstream);
        self.hand_out(&mut inner);
    }

    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        let now = Instant::now();
        let count = |state: EndpointState| inner.upstreams.iter().filter(|u| u.state(now) == state).count();
        Snapshot {
            queue_depth: inner.waiting.len(),
            // The queue is in the order requests joined it, and one sent again after a pod
            // turned it away joins at the front, so the oldest may be anywhere in it.
            oldest_queued_age: inner
                .waiting
                .iter()
                .map(|waiter| waiter.queued_since)
                .min()
                .map_or(Duration::ZERO, |since| now.saturating_duration_since(since)),
            ready: count(EndpointState::Ready),
            unready: count(EndpointState::Unready),
            ejected: count(EndpointState::Ejected),
            discovery_up: self.discovery_up.load(Ordering::Relaxed),
            per_image: inner.per_image.get(),
            pod_startup: inner.startups.counted(),
        }
    }

    /// Requests outstanding on each pod, by address.
    #[cfg(test)]
    fn outstanding(&self) -> Vec<(String, u32)> {
        self.lock().upstreams.iter().map(|u| (u.address.clone(), u.outstanding)).collect()
    }
}

impl Inner {
    fn release(&mut self, upstream: u64) {
        if let Some(upstream) = self.upstreams.iter_mut().find(|pod| pod.id == upstream) {
            upstream.outstanding = upstream.outstanding.saturating_sub(1);
        }
    }

    /// Takes back a place handed out and never used: it was not sent, so it awaits no
    /// answer either.
    fn unsent(&mut self, upstream: u64) {
        if let Some(upstream) = self.upstreams.iter_mut().find(|pod| pod.id == upstream) {
            upstream.outstanding = upstream.outstanding.saturating_sub(1);
            upstream.awaiting_answer = upstream.awaiting_answer.saturating_sub(1);
        }
    }

    fn pods_taking_work(&self, now: Instant) -> usize {
        self.upstreams.iter().filter(|upstream| upstream.takes_work(now)).count()
    }

    /// The expected wait of a request joining the back of the queue: on the pods taking
    /// work, and those still starting from when each is expected ready
    /// ([`StartupTimes::ready_in`]).
    fn expected_wait_at_the_back(&self, now: Instant) -> Option<Duration> {
        let starting_ready_in: Vec<Duration> = self
            .upstreams
            .iter()
            .filter_map(|upstream| upstream.starting_since)
            .filter_map(|since| self.startups.ready_in(now - since))
            .collect();
        let fleet = Fleet { ready: self.pods_taking_work(now), starting_ready_in: &starting_ready_in };
        admission::expected_wait(self.waiting.len(), self.per_image.get(), fleet)
    }
}

/// What an update of the pods changed, logged as one line for each kind of change:
/// a source reports every pod each time (the static list at every probe round), and
/// only a change is news to the operator.
#[derive(Default)]
struct Changes<'a> {
    added_ready: Vec<&'a str>,
    added_unready: Vec<&'a str>,
    now_ready: Vec<&'a str>,
    now_unready: Vec<&'a str>,
}

impl<'a> Changes<'a> {
    fn added(&mut self, report: &'a EndpointReport) {
        let list = if report.ready { &mut self.added_ready } else { &mut self.added_unready };
        list.push(&report.address);
    }

    fn readiness(&mut self, report: &'a EndpointReport) {
        let list = if report.ready { &mut self.now_ready } else { &mut self.now_unready };
        list.push(&report.address);
    }

    fn log(&self, removed: &[String]) {
        if !self.added_ready.is_empty() || !self.added_unready.is_empty() {
            tracing::info!(ready = ?self.added_ready, unready = ?self.added_unready, "pods added");
        }
        if !removed.is_empty() {
            tracing::info!(pods = ?removed, "pods removed");
        }
        if !self.now_ready.is_empty() || !self.now_unready.is_empty() {
            tracing::info!(ready = ?self.now_ready, unready = ?self.now_unready, "pods' readiness changed");
        }
    }
}

/// A request's entry in the queue, taken out when its wait ends in any way: its
/// budget ran out, or its client left and the waiting future was dropped (else the
/// queue would count, and make newcomers wait behind, requests nobody waits for).
struct Waiting<'a> {
    dispatcher: &'a Dispatcher,
    id: u64,
}

impl Waiting<'_> {
    /// Takes the entry out of the queue; false if it was no longer there (it was
    /// handed a place).
    fn leave(&self) -> bool {
        let mut inner = self.dispatcher.lock();
        let position = inner.waiting.iter().position(|waiter| waiter.id == self.id);
        position.and_then(|position| inner.waiting.remove(position)).is_some()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}

/// A place on one pod for one attempt. It goes back when the attempt ends
/// ([`Lease::end`]) or, if the request is abandoned (client gone), when dropped.
pub struct Lease {
    dispatcher: Arc<Dispatcher>,
    address: String,
    /// The pod's [`Upstream::id`].
    upstream: u64,
    /// The requests on its pod awaiting their answer's head as it was sent, itself
    /// included: the work it waited for there. Not the places held, which count answers
    /// still on their way to clients too ([`Upstream::awaiting_answer`]).
    awaiting_when_sent: u32,
    granted: Instant,
    /// How the attempt went has been told.
    recorded: bool,
    /// The place was given back already (unused, under the dispatcher's lock).
    given_back: bool,
}

impl Lease {
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn granted(&self) -> Instant {
        self.granted
    }

    /// Tells the dispatcher how the attempt went, and gives the place back.
    pub fn end(mut self, outcome: AttemptOutcome) {
        self.record(outcome);
    }

    /// Tells the dispatcher how the attempt went, keeping the place until the lease is
    /// dropped: a pod holds a request's place until its answer has left it, so the
    /// place is counted until the answer has arrived whole.
    pub fn record(&mut self, outcome: AttemptOutcome) {
        if !self.recorded {
            self.recorded = true;
            let on_pod = self.granted.elapsed();
            self.dispatcher.record(self.upstream, outcome, on_pod, self.awaiting_when_sent);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.given_back {
            return;
        }
        if !self.recorded {
            self.dispatcher.record(self.upstream, AttemptOutcome::Abandoned, Duration::ZERO, 1);
        }
        self.dispatcher.release(self.upstream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reports(ready: &[bool]) -> Vec<EndpointReport> {
        ready
            .iter()
            .enumerate()
            .map(|(i, &ready)| EndpointReport { address: format!("pod-{i}:8080"), ready, starting: !ready })
            .collect()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn places_spread_over_the_pods_up_to_their_capacity() {
        let dispatcher = Dispatcher::new(2);
        dispatcher.update_endpoints(&reports(&[true, true]));
        let mut leases = Vec::new();
        for _ in 0..4 {
            leases.push(dispatcher.acquire(Instant::now(), soon(), false).await.unwrap());
        }
        assert_eq!(dispatcher.outstanding(), [("pod-0:8080".into(), 2), ("pod-1:8080".into(), 2)]);
        leases.pop().unwrap().end(AttemptOutcome::Served);
        assert_eq!(dispatcher.outstanding().iter().map(|(_, n)| n).sum::<u32>(), 3);
    }

    #[tokio::test]
    async fn a_pod_listed_twice_is_one_pod_with_its_capacity() {
        let dispatcher = Dispatcher::new(2);
        let twice = [reports(&[true]), reports(&[true])].concat();
        dispatcher.update_endpoints(&twice);
        let mut leases = Vec::new();
        for _ in 0..2 {
            leases.push(dispatcher.acquire(Instant::now(), soon(), false).await.unwrap());
        }
        assert_eq!(dispatcher.outstanding(), [("pod-0:8080".into(), 2)]);
        let third = dispatcher.acquire(Instant::now(), Instant::now() + Duration::from_millis(50), false).await;
        assert!(third.is_err(), "no third place on a pod of two");
    }

    #[tokio::test]
    async fn a_new_pod_at_an_old_pod_s_address_keeps_its_own_count() {
        let dispatcher = Dispatcher::new(2);
        dispatcher.update_endpoints(&reports(&[true]));
        let to_the_old_pod = dispatcher.acquire(Instant::now(), soon(), false).await.unwrap();
        // The pod goes, and a new one gets its IP while that request is still ending.
        dispatcher.update_endpoints(&[]);
        dispatcher.update_endpoints(&reports(&[true]));
        let to_the_new_pod = dispatcher.acquire(Instant::now(), soon(), false).await.unwrap();
        to_the_old_pod.end(AttemptOutcome::Failed);
        assert_eq!(dispatcher.outstanding(), [("pod-0:8080".into(), 1)], "the new pod's request still counts");
        drop(to_the_new_pod);
        assert_eq!(dispatcher.outstanding(), [("pod-0:8080".into(), 0)]);
    }

    #[tokio::test]
    async fn a_pod_that_answered_503_stays_out_until_its_source_says_something_new_of_it() {
        let dispatcher = Dispatcher::new(1);
        dispatcher.update_endpoints(&reports(&[true, true]));
        let (first, second) = (
            dispatcher.acquire(Instant::now(), soon(), false).await.unwrap(),
            dispatcher.acquire(Instant::now(), soon(), false).await.unwrap(),
        );
        let draining = first.address().to_owned();
        first.end(AttemptOutcome::Unavailable);
        second.end(AttemptOutcome::Served);
        assert_eq!((dispatcher.snapshot().ready, dispatcher.snapshot().unready), (1, 1));
        // Another pod joins, and the pods listed already are listed as they were.
        let mut three = reports(&[true, true, true]);
        dispatcher.update_endpoints(&three);
        assert_eq!((dispatcher.snapshot().ready, dispatcher.snapshot().unready), (2, 1), "{draining} is still out");
        // Its source lists it unready, then ready again: that is news of it.
        let listed = three.iter_mut().find(|report| report.address == draining).unwrap();
        listed.ready = false;
        dispatcher.update_endpoints(&three);
        three.iter_mut().find(|report| report.address == draining).unwrap().ready = true;
        dispatcher.update_endpoints(&three);
        assert_eq!((dispatcher.snapshot().ready, dispatcher.snapshot().unready), (3, 0));
    }

    #[tokio::test]
    async fn a_waiting_request_gets_the_next_free_place() {
        let dispatcher = Dispatcher::new(1);
        dispatcher.update_endpoints(&reports(&[true]));
        let first = dispatcher.acquire(Instant::now(), soon(), false).await.unwrap();
        let waiting = tokio::spawn({
            let dispatcher = dispatcher.clone();
            async move { dispatcher.acquire(Instant::now(), soon(), false).await.map(|lease| lease.address().to_owned()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(dispatcher.snapshot().queue_depth, 1);
        first.end(AttemptOutcome::Served);
        assert_eq!(waiting.await.unwrap().unwrap(), "pod-0:8080");
        assert_eq!(dispatcher.snapshot().queue_depth, 0);
    }

    #[tokio::test]
    async fn with_no_pod_a_request_waits_out_its_budget_then_gets_503() {
        let dispatcher = Dispatcher::new(1);
        let deadline = Instant::now() + Duration::from_millis(100);
        let error = dispatcher.acquire(Instant::now(), deadline, false).await.err().unwrap();
        assert!(matches!(error, Error::NoCapacity { .. }), "{error}");
        assert_eq!(dispatcher.snapshot().queue_depth, 0, "it left the queue");
    }

    #[tokio::test]
    async fn a_pod_turning_ready_serves_the_waiting_requests() {
        let dispatcher = Dispatcher::new(4);
        dispatcher.update_endpoints(&reports(&[false]));
        let waiting = tokio::spawn({
            let dispatcher = dispatcher.clone();
            async move { dispatcher.acquire(Instant::now(), soon(), false).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        dispatcher.update_endpoints(&reports(&[true]));
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn a_wait_over_the_budget_is_refused_at_once() {
        let dispatcher = Dispatcher::new(1);
        dispatcher.update_endpoints(&reports(&[true]));
        let busy = dispatcher.acquire(Instant::now(), soon(), false).await.unwrap();
        // One image per second, measured.
        dispatcher.lock().per_image.record(Duration::from_secs(1), 1);
        let error =
            dispatcher.acquire(Instant::now(), Instant::now() + Duration::from_millis(500), false).await.err().unwrap();
        match error {
            Error::QueueFull { retry_after, .. } => assert_eq!(retry_after, Duration::from_secs(1)),
            other => panic!("{other}"),
        }
        drop(busy);
    }

    #[tokio::test]
    async fn answers_on_their_way_to_clients_count_against_capacity_not_as_work_ahead() {
        let dispatcher = Dispatcher::new(4);
        dispatcher.update_endpoints(&reports(&[true]));
        // Each request below is alone on the pod for at least 100 ms before its answer's
        // head comes, so the pod takes at least 100 ms an image.
        let mut in_delivery = dispatcher.acquire(Instant::now(), soon(), false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Its head has come and its image is on its way to a client that reads slowly.
        in_delivery.record(AttemptOutcome::Served);
        let next = dispatcher.acquire(Instant::now(), soon(), false).await.unwrap();
        assert_eq!(dispatcher.outstanding(), [("pod-0:8080".into(), 2)], "both places are held");
        tokio::time::sleep(Duration::from_millis(100)).await;
        next.end(AttemptOutcome::Served);
        let per_image = dispatcher.snapshot().per_image.expect("measured");
        assert!(
            per_image >= Duration::from_millis(100),
            "{per_image:?} an image: the answer in delivery was counted as work ahead of the second"
        );
        drop(in_delivery);
        assert_eq!(dispatcher.outstanding(), [("pod-0:8080".into(), 0)]);
    }

    #[tokio::test]
    async fn a_pod_seen_starting_shows_the_start_up_and_counts_from_when_it_is_expected_ready() {
        let dispatcher = Dispatcher::new(1);
        dispatcher.update_endpoints(&reports(&[false]));
        tokio::time::sleep(Duration::from_millis(100)).await;
        dispatcher.update_endpoints(&reports(&[true]));
        let startup = dispatcher.snapshot().pod_startup.expect("a start-up seen");
        assert!((Duration::from_millis(100)..Duration::from_secs(5)).contains(&startup), "{startup:?}");
        // Start-ups of a second from here on, so that the pod started below is overdue
        // (at twice the counted start-up) only if this test stalls for seconds.
        for _ in 0..3 {
            dispatcher.lock().startups.record(Duration::from_secs(1));
        }
        let startup = dispatcher.snapshot().pod_startup.expect("a start-up seen");
        assert_eq!(startup, Duration::from_secs(1));
        // Ten seconds an image and the one pod busy: a newcomer would wait 10 s.
        dispatcher.lock().per_image.record(Duration::from_secs(10), 1);
        let busy = dispatcher.acquire(Instant::now(), soon(), false).await.unwrap();
        let budget = Duration::from_secs(6);
        assert!(matches!(dispatcher.admission(budget), Admission::Refuse { .. }));
        // A second pod starting, expected within a second: the first does 1 s of the
        // work alone, the two share the other 9: 5.5 s.
        dispatcher.update_endpoints(&reports(&[true, false]));
        assert_eq!(dispatcher.admission(budget), Admission::Admit);
        // Given back before it was ready, it is not starting any more, and shows no
        // start-up.
        let mut given_back = reports(&[true, false]);
        given_back[1].starting = false;
        dispatcher.update_endpoints(&given_back);
        assert!(matches!(dispatcher.admission(budget), Admission::Refuse { .. }));
        assert_eq!(dispatcher.snapshot().pod_startup, Some(startup), "no start-up from a pod that never started");
        // Nor is a pod that was ready and is no longer (draining, failing).
        dispatcher.update_endpoints(&reports(&[true, true]));
        dispatcher.update_endpoints(&reports(&[true, false]));
        assert!(matches!(dispatcher.admission(budget), Admission::Refuse { .. }));
        drop(busy);
    }

    #[tokio::test]
    async fn a_pod_not_reported_starting_shows_no_start_up_when_it_turns_ready() {
        let dispatcher = Dispatcher::new(1);
        // As the static list reports a pod its probe finds not answering: down, for all
        // the gateway knows.
        let down = EndpointReport { address: "pod-0:8080".into(), ready: false, starting: false };
        dispatcher.update_endpoints(&[down]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        dispatcher.update_endpoints(&reports(&[true]));
        assert_eq!(dispatcher.snapshot().pod_startup, None);
    }

    #[tokio::test]
    async fn refused_and_busy_pods_are_passed_over() {
        let dispatcher = Dispatcher::new(4);
        dispatcher.update_endpoints(&reports(&[true, true]));
        let lease = dispatcher.acquire(Instant::now(), soon(), false).await.unwrap();
        let refused = lease.address().to_owned();
        lease.end(AttemptOutcome::Refused);
        let lease = dispatcher.acquire(Instant::now(), soon(), true).await.unwrap();
        assert_ne!(lease.address(), refused);
        lease.end(AttemptOutcome::Busy);
        assert_eq!(dispatcher.snapshot().unready, 1);
        let error =
            dispatcher.acquire(Instant::now(), Instant::now() + Duration::from_millis(50), false).await.err().unwrap();
        assert!(matches!(error, Error::NoCapacity { .. }), "both pods are out for now: {error}");
    }

    #[tokio::test]
    async fn a_request_sent_again_waits_at_the_head_and_its_age_counts_from_its_arrival() {
        let dispatcher = Dispatcher::new(1);
        dispatcher.update_endpoints(&reports(&[true]));
        let busy = dispatcher.acquire(Instant::now(), soon(), false).await.unwrap();
        let newcomer = tokio::spawn({
            let dispatcher = dispatcher.clone();
            async move { dispatcher.acquire(Instant::now(), soon(), false).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Queued two seconds ago, turned away by a pod, back in the queue.
        let queued_since = Instant::now() - Duration::from_secs(2);
        let requeued = tokio::spawn({
            let dispatcher = dispatcher.clone();
            async move { dispatcher.acquire(queued_since, soon(), true).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let snapshot = dispatcher.snapshot();
        assert_eq!(snapshot.queue_depth, 2);
        assert!(snapshot.oldest_queued_age >= Duration::from_secs(2), "{:?}", snapshot.oldest_queued_age);
        // It is served before the newcomer that was waiting already.
        busy.end(AttemptOutcome::Served);
        let lease = requeued.await.unwrap().unwrap();
        assert_eq!(dispatcher.snapshot().queue_depth, 1, "the newcomer still waits");
        assert!(!newcomer.is_finished());
        lease.end(AttemptOutcome::Served);
        assert!(newcomer.await.unwrap());
    }

    #[tokio::test]
    async fn the_oldest_queued_age_is_the_longest_wait_not_the_head_of_the_queue() {
        let dispatcher = Dispatcher::new(1);
        dispatcher.update_endpoints(&reports(&[true]));
        let busy = dispatcher.acquire(Instant::now(), soon(), false).await.unwrap();
        // Waiting for three seconds: it is at the back of the queue.
        let longest = Instant::now() - Duration::from_secs(3);
        let newcomer = tokio::spawn({
            let dispatcher = dispatcher.clone();
            async move { dispatcher.acquire(longest, soon(), false).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Queued a second ago, then turned away by a pod: it goes ahead of the older one.
        let turned_away = Instant::now() - Duration::from_secs(1);
        let requeued = tokio::spawn({
            let dispatcher = dispatcher.clone();
            async move { dispatcher.acquire(turned_away, soon(), true).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let snapshot = dispatcher.snapshot();
        assert_eq!(snapshot.queue_depth, 2);
        assert!(snapshot.oldest_queued_age >= Duration::from_secs(3), "{:?}", snapshot.oldest_queued_age);
        busy.end(AttemptOutcome::Served);
        assert!(requeued.await.unwrap());
        assert!(newcomer.await.unwrap());
    }

    #[tokio::test]
    async fn a_request_whose_client_left_leaves_the_queue() {
        let dispatcher = Dispatcher::new(1);
        let waiting = tokio::spawn({
            let dispatcher = dispatcher.clone();
            async move { dispatcher.acquire(Instant::now(), soon(), false).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(dispatcher.snapshot().queue_depth, 1);
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(dispatcher.snapshot().queue_depth, 0);
    }

    #[tokio::test]
    async fn an_abandoned_lease_gives_its_place_back() {
        let dispatcher = Dispatcher::new(1);
        dispatcher.update_endpoints(&reports(&[true]));
        drop(dispatcher.acquire(Instant::now(), soon(), false).await.unwrap());
        assert_eq!(dispatcher.outstanding()[0].1, 0);
    }
}
