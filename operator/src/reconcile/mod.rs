//! One reconcile pass of a `BackgroundRemovalService`, as a pipeline of stages, each in
//! its own module, so that the pass reads in the order it runs and a failure says which
//! stage it came from:
//!
//! 1. validate the spec ([`desired::validate`]; pure). First, so that an invalid spec
//!    costs no request and its problems are reported whatever the cluster's state (and
//!    a valid one's advice told once per edit);
//! 2. `observe` the Deployment, the pods and, with autoscaling, the queue in Prometheus;
//! 3. `decide` the replicas: `spec.replicas`, or the autoscaling policy (pure);
//! 4. `build` the desired objects with the [`desired`] builders (pure);
//! 5. `apply` them with server-side apply, removing the gateway's when it is off;
//! 6. `report` what happened in Events and the status.
//!
//! A resource behind its gateway is passed over every gateway's scrape (a second by
//! default), so that a burst is acted on as soon as it shows. Its passes write (apply
//! and report) only when the replicas change, when the spec did, and once per pods'
//! scrape interval; the others only look, two reads and the queries.
//!
//! Only the stages that talk to the apiserver fail, each with its own error type
//! (`observe::Error`, `apply::Error`, `report::Error`), gathered in [`Error`].
//! An invalid spec is no error: it is reported, and the pass waits for the next edit.
//! A failed apply is reported too before the pass ends. A request the apiserver refused
//! (a 4xx it will refuse again, [`crate::error::is_refusal`]) is reported, a refused
//! apply as `Degraded`/`ApplyFailed` and a refused read as `Degraded`/`ReconcileFailed`,
//! and not tried again before `RESYNC`.

mod apply;
mod build;
mod context;
mod decide;
mod observe;
mod report;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use crate::autoscaler::prometheus::Windows;
use crate::crd::BackgroundRemovalService;
use crate::desired;
use crate::desired::{Front, ScrapeIntervals};
use observe::Current;

pub use context::{Context, Settings};

/// How often a resource is looked at again when nothing wakes it: without autoscaling,
/// drift aside, and after a refusal. Also the longest wait after a failure.
const RESYNC: Duration = Duration::from_secs(300);

/// How often a resource that does not autoscale is looked at while a pod of it starts:
/// a pod stuck starting changes nothing the operator watches, and is found only by
/// looking (a volume the kubelet cannot mount, told by its Events once the pod has
/// waited `mounts::MOUNT_GRACE_SECONDS`; a start-up past its deadline).
const STARTING_LOOKED_AT_EVERY: Duration = Duration::from_secs(30);

/// The longest one pass may take. Its calls to the apiserver wait for an answer as long
/// as their connection lasts, and one to an apiserver that never answers would hold
/// the resource's reconciles for good; its Prometheus queries time out by themselves
/// (after their turn, when many passes query at once).
const PASS_TIMEOUT: Duration = Duration::from_secs(120);

/// A pass that failed, by the stage that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("observe: {0}")]
    Observe(#[from] observe::Error),

    #[error("apply: {0}")]
    Apply(#[from] apply::Error),

    #[error("report: {0}")]
    Report(#[from] report::Error),

    #[error("the pass took longer than {}s: the apiserver or Prometheus did not answer in time", .0.as_secs())]
    TimedOut(Duration),
}

impl Error {
    /// Whether the apiserver refused a request of the pass itself, so that retrying
    /// cannot help until something changes ([`crate::error::is_refusal`]).
    pub fn is_refusal(&self) -> bool {
        match self {
            Error::Observe(error) => error.is_refusal(),
            Error::Apply(error) => error.is_refusal(),
            Error::Report(error) => error.is_refusal(),
            Error::TimedOut(_) => false,
        }
    }

    /// The failed stage's own words, for the status, which has no use for the stage.
    fn cause(&self) -> String {
        match self {
            Error::Observe(error) => error.to_string(),
            Error::Apply(error) => error.to_string(),
            Error::Report(error) => error.to_string(),
            Error::TimedOut(_) => self.to_string(),
        }
    }
}

/// How a pass that did not fail ended, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    /// Observed and decided, with nothing to apply or write (`Context::write_due`).
    Looked,
    /// Reported in the status; waits for the next edit.
    InvalidSpec,
    /// The apiserver refused a request: reported in the status and an Event once, then
    /// tried again only every `RESYNC`, since retrying sooner cannot help.
    Refused,
}

impl Outcome {
    /// The `result` label of the pass in `matte_operator_reconciliations_total` and its duration.
    fn label(result: &Result<(Action, Outcome), Error>) -> &'static str {
        match result {
            Ok((_, Outcome::Done)) => "ok",
            Ok((_, Outcome::Looked)) => "looked",
            Ok((_, Outcome::InvalidSpec)) => "invalid_spec",
            Ok((_, Outcome::Refused)) => "refused",
            Err(_) => "error",
        }
    }
}

/// The Controller's reconciler: one pass over `brs`, counted in the metrics.
pub async fn reconcile(brs: Arc<BackgroundRemovalService>, context: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let bounded = tokio::time::timeout(PASS_TIMEOUT, pass(&brs, &context));
    let result = match bounded.await.unwrap_or(Err(Error::TimedOut(PASS_TIMEOUT))) {
        Err(error) if error.is_refusal() => refused(&brs, &context, &error).await,
        other => other,
    };
    context.metrics.reconciled(Outcome::label(&result), started.elapsed());
    if result.is_ok() {
        context.succeeded(&brs);
    }
    context.forget_deleted();
    result.map(|(action, _)| action)
}

/// The Controller's error policy: per resource, exponential backoff from 5 s up to
/// `RESYNC` (5 minutes).
pub fn error_policy(brs: Arc<BackgroundRemovalService>, error: &Error, context: Arc<Context>) -> Action {
    let failures = context.failed(&brs);
    let delay = Duration::from_secs(5).saturating_mul(1 << failures.min(6).saturating_sub(1)).min(RESYNC);
    tracing::warn!(resource = %ObjectRef::from_obj(brs.as_ref()), %error, failures, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// The stages, in order.
async fn pass(brs: &BackgroundRemovalService, context: &Context) -> Result<(Action, Outcome), Error> {
    let now = Timestamp::now();
    let valid = match desired::validate(brs, &context.settings.defaults) {
        Ok(valid) => valid,
        Err(problems) => {
            // No retry: nothing will change until the spec does, which wakes the controller.
            report::invalid(context, brs, &problems, now).await?;
            return Ok((Action::await_change(), Outcome::InvalidSpec));
        }
    };
    report::advise(context, brs, &valid.advice).await;
    let current = observe::observe(context, brs, now).await?;
    let windows = context.settings.windows(brs);
    let scale = decide::decide(&brs.spec, &current, &context.memory(brs), &windows);
    if let Some(decision) = &scale.decision {
        report::memory_dropped(context, brs, &decision.memory_faults).await;
        context.decided(brs, decision);
    }
    let next = next_pass(brs, &current, &windows, &context.settings.scrape_intervals);
    if !context.write_due(brs, &windows, current.replicas() != Some(scale.replicas)) {
        // Nothing to change, and the objects and status were written less than a
        // pods' interval ago: the memory is kept in the context until the next write.
        return Ok((Action::requeue(next), Outcome::Looked));
    }
    let front = Front::of(brs, current.gateway.ready);
    let desired = build::build(brs, &valid, scale.replicas, front, &context.settings.scrape_intervals);
    let applied = apply::apply(context, brs, &desired).await;
    let findings = report::Findings { current: &current, scale: &scale, applied: &applied, advice: &valid.advice };
    report::report(context, brs, now, &findings).await?;
    match applied {
        Err(error) if error.is_refusal() => Ok((Action::requeue(RESYNC), Outcome::Refused)),
        Err(error) => Err(error.into()),
        Ok(_) => {
            context.written(brs);
            Ok((Action::requeue(next), Outcome::Done))
        }
    }
}

/// When to look again: at the windows' pace while autoscaling (behind a gateway, its
/// scrape's), but at the pods' while no gateway pod is ready, which export no queue to
/// act on a second sooner (a resource whose gateway cannot run must not cost a pass a
/// second); otherwise after `STARTING_LOOKED_AT_EVERY` while a pod starts, and at
/// `RESYNC` when none does.
fn next_pass(
    brs: &BackgroundRemovalService,
    current: &Current,
    windows: &Windows,
    intervals: &ScrapeIntervals,
) -> Duration {
    if !brs.spec.autoscaling.enabled {
        if current.census.starting_ages_seconds.is_empty() { RESYNC } else { STARTING_LOOKED_AT_EVERY }
    } else if brs.spec.gateway.enabled && current.gateway.ready == 0 {
        windows.pass.max(intervals.pods)
    } else {
        windows.pass
    }
}

/// A pass the apiserver refused before its status could be computed: `Degraded` says
/// why, once; the next try comes after `RESYNC`, or at the next edit.
async fn refused(brs: &BackgroundRemovalService, context: &Context, error: &Error) -> Result<(Action, Outcome), Error> {
    tracing::warn!(resource = %ObjectRef::from_obj(brs), %error, "the apiserver refused the pass");
    report::refusal(context, brs, error.cause()).await?;
    Ok((Action::requeue(RESYNC), Outcome::Refused))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(code: u16) -> Box<kube::Error> {
        let status = kube::core::Status::failure("refused", "Invalid").with_code(code);
        Box::new(kube::Error::Api(Box::new(status)))
    }

    fn list_pods(code: u16) -> Error {
        observe::Error::ListPods { namespace: "shop".into(), name: "x".into(), source: answered(code) }.into()
    }

    fn apply_deployment(code: u16) -> Error {
        apply::Error::Apply { kind: "Deployment", namespace: "shop".into(), name: "x".into(), source: answered(code) }
            .into()
    }

    fn write_status(code: u16) -> Error {
        report::Error::WriteStatus { namespace: "shop".into(), name: "x".into(), source: answered(code) }.into()
    }

    #[test]
    fn a_resource_is_looked_at_every_gateway_scrape_only_while_a_gateway_pod_is_ready() {
        let intervals = ScrapeIntervals { pods: Duration::from_secs(5), gateway: Duration::from_secs(1) };
        let windows = Windows::for_scrape_intervals(intervals.pods, intervals.gateway);
        let mut brs = crate::desired::fixtures::resource("minimal.yaml");
        let serving = Current {
            gateway: crate::autoscaler::pods::PodCensus { ready: 1, ..Default::default() },
            ..Current::default()
        };
        let down = Current::default();
        assert_eq!(next_pass(&brs, &serving, &windows, &intervals), Duration::from_secs(1));
        assert_eq!(next_pass(&brs, &down, &windows, &intervals), Duration::from_secs(5), "no gateway to read");
        brs.spec.autoscaling.enabled = false;
        assert_eq!(next_pass(&brs, &serving, &windows, &intervals), RESYNC);
        let starting = Current {
            census: crate::autoscaler::pods::PodCensus { starting_ages_seconds: vec![70.0], ..Default::default() },
            ..serving
        };
        assert_eq!(next_pass(&brs, &starting, &windows, &intervals), STARTING_LOOKED_AT_EVERY, "a pod starts");
    }

    #[test]
    fn every_stage_tells_a_refusal_from_a_failure_worth_retrying() {
        for stage in [list_pods, apply_deployment, write_status] {
            assert!(stage(403).is_refusal());
            assert!(stage(422).is_refusal());
            assert!(!stage(409).is_refusal());
            assert!(!stage(503).is_refusal());
        }
    }

    #[test]
    fn a_failure_names_its_stage_and_the_status_gets_the_cause_alone() {
        let error = list_pods(403);
        let message = error.to_string();
        assert!(message.starts_with("observe: cannot list the pods of BackgroundRemovalService shop/x: "), "{message}");
        assert_eq!(format!("observe: {}", error.cause()), message);
        assert!(apply_deployment(409).to_string().starts_with("apply: cannot apply Deployment shop/x: "));
        assert!(
            write_status(500)
                .to_string()
                .starts_with("report: cannot write the status of BackgroundRemovalService shop/x")
        );
    }

    #[test]
    fn the_metrics_label_each_ending() {
        let action = || Action::requeue(RESYNC);
        assert_eq!(Outcome::label(&Ok((action(), Outcome::Done))), "ok");
        assert_eq!(Outcome::label(&Ok((action(), Outcome::InvalidSpec))), "invalid_spec");
        assert_eq!(Outcome::label(&Ok((action(), Outcome::Refused))), "refused");
        assert_eq!(Outcome::label(&Err(list_pods(503))), "error");
    }
}
