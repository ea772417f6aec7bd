//! The hand-off between request handlers and the inference loop.
//!
//! Handlers push decoded images; the loop, on its own thread, takes them in batches.
//! The queue itself never refuses a push: how many requests may exist at once is
//! decided earlier, at admission (see `state::AppState::admit`). Every job holds its
//! request's place, so the queue is never longer than the capacity; a handler whose
//! client goes away takes its job out again (see [`JobQueue::remove`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::Error;
use crate::model::Mask;
use crate::place::Place;

/// Who has a job once its deadline nears: the loop, which took it into a run (its
/// handler then waits for the result, past the deadline), or the handler, which gave
/// up on it at the deadline (the loop then drops it). Exactly one of them wins: two
/// flags, each set and then the other read, let a job be taken into a run just as its
/// handler answered 504, and inferred for nobody.
#[derive(Debug, Default)]
pub struct Claim(AtomicU8);

impl Claim {
    const OPEN: u8 = 0;
    const RUN: u8 = 1;
    const GIVEN_UP: u8 = 2;

    /// The loop takes the job into a run, unless its handler has given up on it.
    pub fn take_into_run(&self) -> bool {
        self.0.compare_exchange(Self::OPEN, Self::RUN, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// The handler gives up on the job, unless the loop has taken it into a run.
    pub fn give_up(&self) -> bool {
        self.0.compare_exchange(Self::OPEN, Self::GIVEN_UP, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }
}

/// One image waiting for inference.
pub struct Job {
    /// The model input, made by `imaging::to_model_input`.
    pub tensor: Vec<f32>,
    /// When the request arrived: its deadline and a late answer's wait count from here.
    pub arrived: Instant,
    /// When it joined the queue, its image decoded: its queue wait, and the queue's
    /// oldest age, count from here. Counted from its arrival, a slow upload (a client on
    /// a poor link, or one trickling on purpose) read as images waiting for the GPU, and
    /// the autoscaler started pods that could not have made it sooner.
    pub queued: Instant,
    /// Past this, the job is answered with 504 instead of being inferred.
    pub deadline: Instant,
    /// Dropped by the handler when its client goes away or its deadline passes.
    pub reply: oneshot::Sender<Result<Inferred, Error>>,
    /// Taken by the loop into a run, or by the handler whose deadline passed first: a
    /// job mid-run is seen through, and one given up on never runs.
    pub claim: Arc<Claim>,
    /// The request's place, held for as long as the job exists.
    pub place: Place,
}

impl Job {
    /// Sends the job's result to its handler. The job's hold on the place ends first:
    /// the handler holds the place itself until its answer is encoded, and a client that
    /// sends its next request the moment it has this answer (the gateway, which keeps at
    /// most as many requests on a pod as it has places) must find the place free, not
    /// held a moment longer by a job the loop has yet to drop.
    pub fn answer(self, result: Result<Inferred, Error>) {
        let Job { reply, place, .. } = self;
        drop(place);
        // The handler may have gone since; nothing to do about it then.
        let _ = reply.send(result);
    }
}

/// What the loop sends back for one job.
#[derive(Debug)]
pub struct Inferred {
    pub mask: Mask,
    pub queue_wait: Duration,
    /// Wall time of the batch the image was part of.
    pub inference: Duration,
}

#[derive(Default)]
pub struct JobQueue {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<(JobId, Job)>,
    next_id: u64,
    closed: bool,
}

/// Names a queued job, so that its handler can take it out again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobId(u64);

impl JobQueue {
    pub fn new() -> JobQueue {
        JobQueue::default()
    }

    /// Adds a job; gives it back if the queue is closed.
    pub fn push(&self, job: Job) -> Result<JobId, Job> {
        let mut state = self.lock();
        if state.closed {
            return Err(job);
        }
        let id = JobId(state.next_id);
        state.next_id += 1;
        state.jobs.push_back((id, job));
        drop(state);
        self.changed.notify_one();
        Ok(id)
    }

    /// Takes a job out if it is still waiting (its client has gone); its place is
    /// free once the caller drops it.
    pub fn remove(&self, id: JobId) -> Option<Job> {
        let mut state = self.lock();
        let index = state.jobs.iter().position(|(queued, _)| *queued == id)?;
        state.jobs.remove(index).map(|(_, job)| job)
    }

    /// Jobs waiting now.
    pub fn depth(&self) -> usize {
        self.lock().jobs.len()
    }

    /// When the job waiting longest joined the queue.
    pub fn oldest_queued(&self) -> Option<Instant> {
        self.lock().jobs.iter().map(|(_, job)| job.queued).min()
    }

    /// Stops further pushes and answers every job still waiting with `error` at once:
    /// the loop that would have taken them is gone, and each would otherwise hold its
    /// place until its deadline and be answered 504.
    pub fn close_answering(&self, error: impl Fn() -> Error) {
        let waiting: Vec<Job> = {
            let mut state = self.lock();
            state.closed = true;
            state.jobs.drain(..).map(|(_, job)| job).collect()
        };
        self.changed.notify_all();
        for job in waiting {
            job.answer(Err(error()));
        }
    }

    /// Stops further pushes; the loop still drains what is queued.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Blocks until at least one job waits, then takes up to `max` jobs, waiting at most
    /// `delay` after the first for others to arrive, and never past the first's
    /// deadline (a delay longer than the request time-out would have every lone request
    /// answered 504 while it waited for company). `None` once closed and empty.
    pub fn next_batch(&self, max: usize, delay: Duration) -> Option<Vec<Job>> {
        let mut state = self.lock();
        while state.jobs.is_empty() {
            if state.closed {
                return None;
            }
            state = self.changed.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        let first_deadline = state.jobs.front().map(|(_, job)| job.deadline);
        let fill_by = first_deadline.into_iter().fold(Instant::now() + delay, Instant::min);
        while state.jobs.len() < max && !state.closed {
            let now = Instant::now();
            if now >= fill_by {
                break;
            }
            state = self.changed.wait_timeout(state, fill_by - now).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
        }
        let take = state.jobs.len().min(max);
        Some(state.jobs.drain(..take).map(|(_, job)| job).collect())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves the deque itself consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A job of no image, arrived and queued at `now`, due by `deadline`, and the receiver
/// of its answer: for unit tests of the queue and the loop.
#[cfg(test)]
pub(crate) fn test_job(now: Instant, deadline: Instant) -> (Job, oneshot::Receiver<Result<Inferred, Error>>) {
    let (reply, receiver) = oneshot::channel();
    let job = Job {
        tensor: vec![],
        arrived: now,
        queued: now,
        deadline,
        reply,
        claim: Arc::default(),
        place: Place::detached(),
    };
    (job, receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> (Job, oneshot::Receiver<Result<Inferred, Error>>) {
        let now = Instant::now();
        test_job(now, now + Duration::from_secs(60))
    }

    #[test]
    fn a_batch_waits_for_company_no_longer_than_its_first_image_may_wait() {
        let queue = JobQueue::new();
        let (mut lone, _reply) = job();
        lone.deadline = Instant::now() + Duration::from_millis(100);
        queue.push(lone).unwrap_or_else(|_| panic!("room for one"));
        let started = Instant::now();
        let batch = queue.next_batch(4, Duration::from_secs(600)).expect("a batch");
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() < Duration::from_secs(60), "taken by its deadline, not after the delay");
    }

    #[test]
    fn closed_answering_every_job_still_waiting_is_answered_at_once() {
        let queue = JobQueue::new();
        let (first, mut first_answer) = job();
        let (second, mut second_answer) = job();
        queue.push(first).map_err(|_| ()).unwrap();
        queue.push(second).map_err(|_| ()).unwrap();
        queue.close_answering(|| Error::InferenceUnhealthy);
        assert_eq!(queue.depth(), 0);
        for answer in [first_answer.try_recv(), second_answer.try_recv()] {
            assert!(matches!(answer, Ok(Err(Error::InferenceUnhealthy))), "{answer:?}");
        }
        assert!(queue.push(job().0).is_err(), "and takes no more");
    }

    #[test]
    fn batches_take_at_most_max_in_arrival_order() {
        let queue = JobQueue::new();
        let mut receivers = Vec::new();
        for i in 0..5 {
            let (mut job, receiver) = job();
            job.tensor = vec![i as f32];
            assert!(queue.push(job).is_ok());
            receivers.push(receiver);
        }
        assert_eq!(queue.depth(), 5);
        let batch = queue.next_batch(3, Duration::ZERO).unwrap();
        assert_eq!(batch.iter().map(|j| j.tensor[0]).collect::<Vec<_>>(), vec![0.0, 1.0, 2.0]);
        assert_eq!(queue.depth(), 2);
    }

    #[test]
    fn a_batch_waits_for_late_arrivals_up_to_the_delay() {
        let queue = Arc::new(JobQueue::new());
        let (first, _r1) = job();
        queue.push(first).ok().unwrap();
        let pusher = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                let (second, r2) = job();
                queue.push(second).ok().unwrap();
                r2
            })
        };
        let batch = queue.next_batch(2, Duration::from_secs(5)).unwrap();
        assert_eq!(batch.len(), 2, "the second job arrived within the delay");
        drop(pusher.join());

        let (lonely, _r3) = job();
        queue.push(lonely).ok().unwrap();
        let started = Instant::now();
        let batch = queue.next_batch(4, Duration::from_millis(30)).unwrap();
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn closing_drains_then_ends() {
        let queue = JobQueue::new();
        let (queued, _receiver) = job();
        queue.push(queued).ok().unwrap();
        queue.close();
        let (late, _late_receiver) = job();
        assert!(queue.push(late).is_err(), "a closed queue takes nothing new");
        assert_eq!(queue.next_batch(4, Duration::from_secs(5)).map(|b| b.len()), Some(1));
        assert!(queue.next_batch(4, Duration::from_secs(5)).is_none());
    }

    #[test]
    fn a_removed_job_is_not_handed_out() {
        let queue = JobQueue::new();
        let (first, _r1) = job();
        let (second, _r2) = job();
        let first = queue.push(first).ok().unwrap();
        queue.push(second).ok().unwrap();
        assert!(queue.remove(first).is_some());
        assert!(queue.remove(first).is_none(), "gone already");
        assert_eq!(queue.depth(), 1);
        assert_eq!(queue.next_batch(4, Duration::ZERO).map(|b| b.len()), Some(1));
    }

    #[test]
    fn reports_the_job_queued_longest_whenever_it_arrived() {
        let queue = JobQueue::new();
        assert!(queue.oldest_queued().is_none());
        let (mut longest, _a) = job();
        longest.queued -= Duration::from_secs(3);
        // Arrived long before, its upload slow: it joined the queue just now.
        let (mut slow_upload, _b) = job();
        slow_upload.arrived -= Duration::from_secs(50);
        let expected = longest.queued;
        queue.push(slow_upload).ok().unwrap();
        queue.push(longest).ok().unwrap();
        assert_eq!(queue.oldest_queued(), Some(expected));
    }
}
