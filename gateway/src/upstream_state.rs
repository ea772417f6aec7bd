//! What the gateway knows about each pod, and the pure decisions made from it: which
//! pod takes the next request, and how long a failing pod stays out.

use std::time::{Duration, Instant};

use matte_common::readiness;

/// Failures in a row (connection errors, 5xx other than 503) after which a pod is
/// taken out for a while: one failure may be a pooled connection closed under us, three
/// in a row is the pod.
pub const FAILURES_BEFORE_EJECTION: u32 = 3;
/// The first ejection's length; each further one in a row doubles it up to the cap.
const FIRST_EJECTION: Duration = Duration::from_secs(1);
const LONGEST_EJECTION: Duration = Duration::from_secs(30);
/// How long a pod that answered 429 gets no new request from this gateway: its queue
/// is full of other clients' work (another gateway replica's, say), which frees a place
/// within about one image's time.
pub const BUSY_PAUSE: Duration = Duration::from_millis(200);

/// How long the `times`-th ejection in a row lasts (1-based): 1 s, 2 s, 4 s … 30 s.
pub fn ejection_period(times: u32) -> Duration {
    let doublings = times.saturating_sub(1).min(16);
    FIRST_EJECTION.saturating_mul(1 << doublings).min(LONGEST_EJECTION)
}

/// One pod as an endpoint source ([`crate::endpoints`]) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointReport {
    /// `HOST:PORT`.
    pub address: String,
    pub ready: bool,
    /// Not ready and coming up: a pod its source lists before it is ready, as an
    /// EndpointSlice lists a new pod. Not one being deleted (given back, or replaced in a
    /// rollout), whatever it was before, nor one a probe finds not answering, which may as
    /// well be down: counted as starting, such a pod would have requests admitted on its
    /// account, and its time until it answers again would be taken for a start-up.
    pub starting: bool,
}

/// A pod's state as `matte_gateway_endpoints{state}` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointState {
    Ready,
    Unready,
    Ejected,
}

impl EndpointState {
    pub const ALL: [EndpointState; 3] = [EndpointState::Ready, EndpointState::Unready, EndpointState::Ejected];

    pub fn label(self) -> &'static str {
        match self {
            EndpointState::Ready => "ready",
            EndpointState::Unready => "unready",
            EndpointState::Ejected => "ejected",
        }
    }
}

/// One pod, as this gateway sees it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `HOST:PORT`.
    pub address: String,
    /// Which pod at that address: a pod's IP can go to a new pod while requests sent to
    /// the old one are still ending, and those must not count the new one's places down.
    pub id: u64,
    /// The last readiness its source reported.
    pub ready: bool,
    /// Since it refused a connection or answered 503, until the source reports a change
    /// of it or `readiness::listed_unready_within` has passed: a pod going down is
    /// listed unready by then, and one still listed ready was only briefly unable to
    /// serve. A source that reports only changes (EndpointSlices) may never report it
    /// again; one whose report of it repeats (another pod's change) says nothing of it.
    pub unavailable_until: Option<Instant>,
    /// Places this gateway holds on it: requests sent and not yet answered whole, those
    /// whose answer is still on its way to a client included (the pod holds their
    /// places until it has written them). What its capacity is checked against.
    pub outstanding: u32,
    /// Of those, the requests still waiting for the head of the pod's answer: the work
    /// the pod has yet to do. An answer on its way to a slow client is no work ahead of
    /// a request sent now, and counting it as such would make the pod look faster.
    pub awaiting_answer: u32,
    pub consecutive_failures: u32,
    /// Ejections in a row, which lengthen the next one; reset by a success.
    pub times_ejected: u32,
    pub ejected_until: Option<Instant>,
    pub paused_until: Option<Instant>,
    /// When it was first seen, if its source reported it starting then and since: a pod
    /// whose start-up this gateway will see whole.
    pub starting_since: Option<Instant>,
}

impl Upstream {
    /// A pod first seen `now`, as its source reports it.
    pub fn new(report: &EndpointReport, now: Instant) -> Upstream {
        Upstream {
            address: report.address.clone(),
            id: 0,
            ready: report.ready,
            unavailable_until: None,
            outstanding: 0,
            awaiting_answer: 0,
            consecutive_failures: 0,
            times_ejected: 0,
            ejected_until: None,
            paused_until: None,
            starting_since: report.starting.then_some(now),
        }
    }

    pub fn state(&self, now: Instant) -> EndpointState {
        if self.ejected_until.is_some_and(|until| now < until) {
            EndpointState::Ejected
        } else if self.ready && self.unavailable_until.is_none_or(|until| now >= until) {
            EndpointState::Ready
        } else {
            EndpointState::Unready
        }
    }

    /// Whether it may be sent a request now, capacity aside.
    pub fn takes_work(&self, now: Instant) -> bool {
        self.state(now) == EndpointState::Ready && self.paused_until.is_none_or(|until| now >= until)
    }

    /// Counts a failure; the one that completes a run of failures ejects it, and gives
    /// the ejection's length.
    pub fn record_failure(&mut self, now: Instant) -> Option<Duration> {
        self.consecutive_failures += 1;
        if self.consecutive_failures < FAILURES_BEFORE_EJECTION {
            return None;
        }
        self.consecutive_failures = 0;
        self.times_ejected += 1;
        let period = ejection_period(self.times_ejected);
        self.ejected_until = Some(now + period);
        Some(period)
    }

    /// It refused a connection or answered 503: unready until its source says otherwise,
    /// or for as long as a pod going down takes to be listed unready. Gives that time if
    /// it was not unavailable already (requests in flight on a pod going down each
    /// come back so, and only the first says something new).
    pub fn record_unavailable(&mut self, now: Instant) -> Option<Duration> {
        let already = self.unavailable_until.is_some_and(|until| now < until);
        let period = readiness::listed_unready_within();
        self.unavailable_until = Some(now + period);
        (!already).then_some(period)
    }

    /// An answer from the pod: it is reachable and working.
    pub fn record_answer(&mut self) {
        self.consecutive_failures = 0;
        self.times_ejected = 0;
    }
}

/// The pod that takes the next request: of those taking work and below `capacity`, the
/// one with the fewest requests outstanding; ties go to the first from `start` on, so
/// that a steady trickle of one request at a time still visits every pod in turn.
pub fn pick(upstreams: &[Upstream], capacity: u32, start: usize, now: Instant) -> Option<usize> {
    let count = upstreams.len();
    (0..count)
        .map(|offset| (start + offset) % count)
        .filter(|&index| upstreams[index].takes_work(now) && upstreams[index].outstanding < capacity)
        .min_by_key(|&index| upstreams[index].outstanding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_pod(address: String) -> EndpointReport {
        EndpointReport { address, ready: true, starting: false }
    }

    fn pods(outstanding: &[u32]) -> Vec<Upstream> {
        outstanding
            .iter()
            .enumerate()
            .map(|(i, &n)| Upstream {
                outstanding: n,
                ..Upstream::new(&ready_pod(format!("pod-{i}:8080")), Instant::now())
            })
            .collect()
    }

    #[test]
    fn the_least_loaded_pod_below_capacity_is_picked() {
        let now = Instant::now();
        assert_eq!(pick(&pods(&[3, 1, 2]), 4, 0, now), Some(1));
        assert_eq!(pick(&pods(&[4, 4, 3]), 4, 0, now), Some(2));
        assert_eq!(pick(&pods(&[4, 4, 4]), 4, 0, now), None, "every pod is full");
        assert_eq!(pick(&[], 4, 0, now), None, "no pod at all");
    }

    #[test]
    fn ties_rotate_from_the_start() {
        let now = Instant::now();
        let idle = pods(&[0, 0, 0]);
        assert_eq!(pick(&idle, 4, 0, now), Some(0));
        assert_eq!(pick(&idle, 4, 1, now), Some(1));
        assert_eq!(pick(&idle, 4, 5, now), Some(2));
    }

    #[test]
    fn unready_ejected_and_paused_pods_take_no_work() {
        let now = Instant::now();
        let mut three = pods(&[0, 0, 0]);
        three[0].ready = false;
        three[1].ejected_until = Some(now + Duration::from_secs(1));
        three[2].paused_until = Some(now + Duration::from_secs(1));
        assert_eq!(pick(&three, 4, 0, now), None);
        assert_eq!(three[0].state(now), EndpointState::Unready);
        assert_eq!(three[1].state(now), EndpointState::Ejected);
        assert_eq!(three[2].state(now), EndpointState::Ready, "a paused pod is still ready");
        let later = now + Duration::from_secs(2);
        assert_eq!(pick(&three, 4, 0, later), Some(1), "the ejection and the pause have ended");
    }

    #[test]
    fn a_pod_that_answered_unavailable_is_unready_until_it_would_have_been_listed_so() {
        let now = Instant::now();
        let mut pod = Upstream::new(&ready_pod("pod:8080".into()), now);
        assert_eq!(pod.record_unavailable(now), Some(readiness::listed_unready_within()));
        assert_eq!(pod.state(now), EndpointState::Unready);
        assert_eq!(pod.record_unavailable(now), None, "unavailable already: nothing new");
        let listed_by = now + readiness::listed_unready_within();
        assert_eq!(pod.state(listed_by - Duration::from_millis(1)), EndpointState::Unready);
        assert_eq!(pod.state(listed_by), EndpointState::Ready, "still listed ready: back in rotation");
        assert!(pod.takes_work(listed_by));
    }

    #[test]
    fn repeated_failures_eject_for_longer_each_time() {
        let now = Instant::now();
        let mut pod = Upstream::new(&ready_pod("pod:8080".into()), now);
        for _ in 0..FAILURES_BEFORE_EJECTION - 1 {
            assert_eq!(pod.record_failure(now), None);
        }
        assert_eq!(pod.state(now), EndpointState::Ready, "not yet");
        assert_eq!(pod.record_failure(now), Some(Duration::from_secs(1)));
        assert_eq!(pod.ejected_until, Some(now + Duration::from_secs(1)));
        for _ in 0..FAILURES_BEFORE_EJECTION {
            pod.record_failure(now);
        }
        assert_eq!(pod.ejected_until, Some(now + Duration::from_secs(2)));
        pod.record_answer();
        assert_eq!(pod.times_ejected, 0);
    }

    #[test]
    fn ejections_double_up_to_a_cap() {
        let periods: Vec<u64> = (1..=7).map(|n| ejection_period(n).as_secs()).collect();
        assert_eq!(periods, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(ejection_period(u32::MAX), LONGEST_EJECTION);
    }
}
