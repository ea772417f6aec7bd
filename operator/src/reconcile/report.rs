//! The report stage: what the pass found and did, told in the resource's status
//! ([`crate::status`], written only when it changed) and in Events: `Created`, `Scaled`
//! and `Updated` for what was applied, a Warning when `Degraded` turns to a new problem
//! and `Recovered` when it clears, `AutoscalerMemoryDropped` when the memory read
//! back from status could not be acted on, and `SpecAdvice` for a spec that builds but
//! works against itself. Also the status of a pass that stopped early, on an
//! invalid spec or a request the apiserver refused.

use crate::error::apiserver_said;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use crate::autoscaler::policy::MemoryFault;
use crate::crd::{BackgroundRemovalService, BackgroundRemovalServiceStatus};
use crate::desired::{self, MANAGER};
use crate::status::{self, Observed};

use super::Context;
use super::apply::{self, Applied};
use super::decide::Scale;
use super::observe::Current;

/// Events carry at most this much note.
const NOTE_LIMIT: usize = 1000;

/// The status could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write the status of BackgroundRemovalService {namespace}/{name}: {}", apiserver_said(source))]
    WriteStatus { namespace: String, name: String, source: Box<kube::Error> },
}

impl Error {
    /// Whether the apiserver refused the write itself ([`crate::error::is_refusal`]).
    pub fn is_refusal(&self) -> bool {
        match self {
            Error::WriteStatus { source, .. } => crate::error::is_refusal(source),
        }
    }
}

/// What a pass that ran to the end reports on: what was `current`, the `scale` decided,
/// how the apply went and the spec's `advice`.
pub struct Findings<'a> {
    pub current: &'a Current,
    pub scale: &'a Scale,
    pub applied: &'a Result<Applied, apply::Error>,
    pub advice: &'a [String],
}

/// A pass that ran to the end: the Event for what it applied changed, if anything did,
/// then the status from its `findings` at `now`.
pub async fn report(
    context: &Context,
    brs: &BackgroundRemovalService,
    now: Timestamp,
    findings: &Findings<'_>,
) -> Result<(), Error> {
    if let Some(event) = announcement(brs, findings.current, findings.scale, findings.applied.as_ref().ok()) {
        publish(context, brs, EventType::Normal, event.reason, event.action, event.note).await;
    }
    let previous = brs.status.clone().unwrap_or_default();
    let status = status::compute(&previous, &observed(brs, findings), &Time(now));
    write_status(context, brs, &previous, status).await
}

/// A spec that failed validation: its `problems` in the status, nothing else.
pub async fn invalid(
    context: &Context,
    brs: &BackgroundRemovalService,
    problems: &[String],
    now: Timestamp,
) -> Result<(), Error> {
    let previous = brs.status.clone().unwrap_or_default();
    let observed = Observed {
        generation: brs.metadata.generation,
        selector: desired::selector_string(brs),
        problems,
        desired_replicas: previous.desired_replicas,
        ..Observed::default()
    };
    write_status(context, brs, &previous, status::compute(&previous, &observed, &Time(now))).await
}

/// A pass the apiserver refused before its status could be computed: `Degraded` says
/// why (`ReconcileFailed`, with `message`); the other conditions stay as they were.
pub async fn refusal(context: &Context, brs: &BackgroundRemovalService, message: String) -> Result<(), Error> {
    let previous = brs.status.clone().unwrap_or_default();
    let status = status::refused(&previous, brs.metadata.generation, message, &Time(Timestamp::now()));
    write_status(context, brs, &previous, status).await
}

/// A Warning Event `SpecAdvice` for each piece of `advice` on a spec that builds but
/// works against itself ([`desired::Valid::advice`]), on the first pass over each
/// generation of the spec: once per edit, not once per pass.
pub async fn advise(context: &Context, brs: &BackgroundRemovalService, advice: &[String]) {
    if reported_on(brs) {
        return;
    }
    for note in advice {
        publish(context, brs, EventType::Warning, "SpecAdvice", "Validate", note.clone()).await;
    }
}

/// Whether the status already reports on this generation of the spec.
fn reported_on(brs: &BackgroundRemovalService) -> bool {
    let observed = brs.status.as_ref().and_then(|status| status.observed_generation);
    observed.is_some() && observed == brs.metadata.generation
}

/// A Warning Event when the policy dropped part of the memory it was handed (after a
/// leader change, the one in status) for what no operator would have written there,
/// and the decision went on without it; a Normal one when it dropped the clocks of a
/// memory left long ago (autoscaling switched off, or no operator running, for a
/// while), which is no one's fault.
pub async fn memory_dropped(context: &Context, brs: &BackgroundRemovalService, faults: &[MemoryFault]) {
    let (aged, wrong): (Vec<MemoryFault>, Vec<MemoryFault>) =
        faults.iter().cloned().partition(|fault| matches!(fault, MemoryFault::Stale { .. }));
    if let Some(note) = memory_dropped_note(&wrong) {
        publish(context, brs, EventType::Warning, "AutoscalerMemoryDropped", "Decide", note).await;
    }
    if let Some(note) = memory_dropped_note(&aged) {
        publish(context, brs, EventType::Normal, "AutoscalerMemoryAged", "Decide", note).await;
    }
}

/// The note of `AutoscalerMemoryDropped` or `AutoscalerMemoryAged`: every fault, in the
/// status field's words.
fn memory_dropped_note(faults: &[MemoryFault]) -> Option<String> {
    if faults.is_empty() {
        return None;
    }
    let what = faults.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
    Some(format!("status.autoscalerMemory: {what}; decided without it"))
}

/// A Normal Event about what a pass changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Announcement {
    reason: &'static str,
    action: &'static str,
    note: String,
}

/// What `applied` (`None`: the apply failed, which `Degraded` says) changed that people
/// should hear of: the objects made, the replicas changed, or the pods rolling to a new
/// template; nothing for a pass that changed nothing.
fn announcement(
    brs: &BackgroundRemovalService,
    current: &Current,
    scale: &Scale,
    applied: Option<&Applied>,
) -> Option<Announcement> {
    let after = applied?;
    let name = brs.name_any();
    let replicas = scale.replicas;
    let Some(before) = &current.deployment else {
        let gateway = if after.gateway.is_some() {
            format!(", and the gateway {}", desired::gateway_name(brs))
        } else {
            String::new()
        };
        let note =
            format!("created Deployment, Service and PodDisruptionBudget {name} with {replicas} replicas{gateway}");
        return Some(Announcement { reason: "Created", action: "Apply", note });
    };
    match current.replicas() {
        Some(was) if was != replicas => {
            let why = scale.decision.as_ref().map_or_else(|| "spec.replicas".to_owned(), |d| d.message.clone());
            let note = format!("scaled from {was} to {replicas}: {why}");
            Some(Announcement { reason: "Scaled", action: "Scale", note })
        }
        // A new Deployment generation with the same replicas: the pods roll to a new template.
        Some(_) if generation(&after.deployment) != generation(before) => {
            let note = format!("updated Deployment {name} from the changed spec; its pods roll over one at a time");
            Some(Announcement { reason: "Updated", action: "Apply", note })
        }
        _ => None,
    }
}

fn generation(deployment: &Deployment) -> Option<i64> {
    deployment.metadata.generation
}

/// What the status reports of a pass that ran to the end. After a failed apply, the
/// Deployment as it was, and the gateway unknown: `Degraded` says why.
fn observed<'a>(brs: &BackgroundRemovalService, findings: &Findings<'a>) -> Observed<'a> {
    let Findings { current, scale, applied, advice } = *findings;
    let deployment = match applied {
        Ok(applied) => Some(&applied.deployment),
        Err(_) => current.deployment.as_ref(),
    };
    Observed {
        generation: brs.metadata.generation,
        selector: desired::selector_string(brs),
        problems: &[],
        advice,
        apply_error: applied.as_ref().err().map(ToString::to_string),
        desired_replicas: scale.replicas,
        deployment: deployment.and_then(|d| d.status.as_ref()),
        unschedulable: current.census.unschedulable.clone(),
        failing: current.census.failing.clone(),
        restarting: current.census.restarting.clone(),
        decision: scale.decision.as_ref(),
        gateway: applied.as_ref().ok().and_then(|a| a.gateway.as_ref()).map(|g| g.status.as_ref()),
        gateway_failing: current.gateway.failing.clone(),
        gateway_restarting: current.gateway.restarting.clone(),
    }
}

/// Writes the status with server-side apply, only when it changed, and announces a
/// change of `Degraded` with an Event: one per problem, and one when it is over.
async fn write_status(
    context: &Context,
    brs: &BackgroundRemovalService,
    previous: &BackgroundRemovalServiceStatus,
    status: BackgroundRemovalServiceStatus,
) -> Result<(), Error> {
    if brs.status.is_some() && &status == previous {
        return Ok(());
    }
    let namespace = brs.namespace().unwrap_or_default();
    let api: Api<BackgroundRemovalService> = Api::namespaced(context.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": BackgroundRemovalService::api_version(&()),
        "kind": BackgroundRemovalService::kind(&()),
        "status": status,
    });
    api.patch_status(&brs.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|source| Error::WriteStatus { namespace, name: brs.name_any(), source: source.into() })?;
    let degraded = status::condition(&status, status::DEGRADED);
    match (status::degraded_change(previous, &status), degraded) {
        (Some(true), Some(degraded)) => {
            let note = degraded.message.clone();
            publish(context, brs, EventType::Warning, &degraded.reason, "Observe", note).await;
        }
        (Some(false), _) => {
            let note = "the problem reported in the Degraded condition is gone".to_owned();
            publish(context, brs, EventType::Normal, "Recovered", "Observe", note).await;
        }
        _ => {}
    }
    Ok(())
}

/// Publishes an Event about `brs`; a failure to do so is logged, never fatal.
async fn publish(
    context: &Context,
    brs: &BackgroundRemovalService,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    match type_ {
        EventType::Warning => tracing::warn!(resource = %ObjectRef::from_obj(brs), reason, %note, "event"),
        EventType::Normal => tracing::info!(resource = %ObjectRef::from_obj(brs), reason, %note, "event"),
    }
    let note = truncate(note, NOTE_LIMIT);
    if let Err(error) = context.recorder.publish(type_, reason, action, &note, &brs.object_ref(&())).await {
        tracing::warn!(resource = %ObjectRef::from_obj(brs), %error, "cannot publish an event");
    }
}

/// `text` cut to at most `limit` bytes, on a character boundary.
fn truncate(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::autoscaler::policy::{Decision, Memory, Observation, Reason};
    use crate::desired::fixtures::resource;

    fn deployment(replicas: i32, generation: i64, ready: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta { generation: Some(generation), ..ObjectMeta::default() },
            spec: Some(DeploymentSpec { replicas: Some(replicas), ..DeploymentSpec::default() }),
            status: Some(DeploymentStatus { ready_replicas: Some(ready), ..DeploymentStatus::default() }),
        }
    }

    fn before(deployment: Option<Deployment>) -> Current {
        Current { deployment, ..Current::default() }
    }

    fn spec_replicas(replicas: i32) -> Scale {
        Scale { replicas, decision: None }
    }

    fn applied(deployment: Deployment, gateway: bool) -> Applied {
        Applied { deployment, gateway: gateway.then(Deployment::default) }
    }

    #[test]
    fn advice_is_told_on_the_first_pass_over_each_generation_of_the_spec() {
        let mut brs = resource("minimal.yaml");
        brs.metadata.generation = Some(3);
        assert!(!reported_on(&brs), "no status yet");
        let status =
            |generation| BackgroundRemovalServiceStatus { observed_generation: generation, ..Default::default() };
        brs.status = Some(status(Some(2)));
        assert!(!reported_on(&brs), "an edit not yet reported on");
        brs.status = Some(status(Some(3)));
        assert!(reported_on(&brs), "told already");
        brs.status = Some(status(None));
        assert!(!reported_on(&brs));
    }

    #[test]
    fn a_first_pass_announces_what_it_created_with_the_gateway_when_on() {
        let brs = resource("minimal.yaml");
        let after = applied(deployment(2, 1, 0), true);
        let event = announcement(&brs, &before(None), &spec_replicas(2), Some(&after)).expect("an event");
        assert_eq!((event.reason, event.action), ("Created", "Apply"));
        assert_eq!(
            event.note,
            "created Deployment, Service and PodDisruptionBudget portraits with 2 replicas, and the gateway \
             portraits-gateway"
        );
        let after = applied(deployment(2, 1, 0), false);
        let event = announcement(&brs, &before(None), &spec_replicas(2), Some(&after)).expect("an event");
        assert!(!event.note.contains("gateway"), "{}", event.note);
    }

    #[test]
    fn a_change_of_replicas_is_announced_with_its_reason() {
        let brs = resource("minimal.yaml");
        let was = before(Some(deployment(2, 1, 2)));
        let after = applied(deployment(3, 2, 2), true);
        let event = announcement(&brs, &was, &spec_replicas(3), Some(&after)).expect("an event");
        assert_eq!((event.reason, event.note.as_str()), ("Scaled", "scaled from 2 to 3: spec.replicas"));

        let decision = Decision {
            replicas: 3,
            reason: Reason::ScaleUp,
            message: "the backlog needs 3 pods".into(),
            observation: Observation { replicas: 2, ready_pods: 2, ..Observation::default() },
            plan: None,
            memory: Memory::default(),
            memory_faults: Vec::new(),
        };
        let scale = Scale { replicas: 3, decision: Some(decision) };
        let event = announcement(&brs, &was, &scale, Some(&after)).expect("an event");
        assert_eq!(event.note, "scaled from 2 to 3: the backlog needs 3 pods");
    }

    #[test]
    fn a_new_template_at_the_same_replicas_is_announced_as_an_update_and_no_change_is_silent() {
        let brs = resource("minimal.yaml");
        let was = before(Some(deployment(2, 1, 2)));
        let event = announcement(&brs, &was, &spec_replicas(2), Some(&applied(deployment(2, 2, 2), true)));
        assert_eq!(event.map(|e| e.reason), Some("Updated"));
        assert_eq!(announcement(&brs, &was, &spec_replicas(2), Some(&applied(deployment(2, 1, 2), true))), None);
        // A failed apply is announced by the Degraded condition, not here.
        assert_eq!(announcement(&brs, &before(None), &spec_replicas(2), None), None);
        assert_eq!(announcement(&brs, &was, &spec_replicas(3), None), None);
    }

    #[test]
    fn a_failed_apply_reports_the_deployment_as_it_was_and_no_gateway() {
        let brs = resource("minimal.yaml");
        let current = before(Some(deployment(2, 1, 1)));
        let scale = spec_replicas(3);
        let refused = kube::core::Status::failure("denied by a webhook", "Forbidden").with_code(403);
        let failed: Result<Applied, apply::Error> = Err(apply::Error::Apply {
            kind: "Deployment",
            namespace: "shop".into(),
            name: "portraits".into(),
            source: Box::new(kube::Error::Api(Box::new(refused))),
        });
        let findings = |applied| Findings { current: &current, scale: &scale, applied, advice: &[] };
        let seen = observed(&brs, &findings(&failed));
        assert_eq!(seen.deployment.and_then(|s| s.ready_replicas), Some(1));
        assert_eq!(seen.gateway, None);
        assert_eq!(seen.desired_replicas, 3);
        let message = seen.apply_error.expect("the failure is reported");
        assert!(message.starts_with("cannot apply Deployment shop/portraits: "), "{message}");

        let done = Ok(applied(deployment(3, 2, 3), true));
        let seen = observed(&brs, &findings(&done));
        assert_eq!(seen.deployment.and_then(|s| s.ready_replicas), Some(3));
        assert_eq!(seen.gateway, Some(None));
        assert_eq!(seen.apply_error, None);
        assert_eq!(seen.selector, "app.kubernetes.io/name=matte-inference,matte.dev/service=portraits");
    }

    #[test]
    fn dropped_memory_is_told_field_by_field_and_nothing_when_none_was() {
        assert_eq!(memory_dropped_note(&[]), None);
        let faults = [
            MemoryFault::InTheFuture { field: "surplusSinceSeconds", ahead_seconds: 86_400.0 },
            MemoryFault::TooManyBursts { count: 12 },
        ];
        assert_eq!(
            memory_dropped_note(&faults).as_deref(),
            Some(
                "status.autoscalerMemory: surplusSinceSeconds is 86400s ahead of now; recentBursts holds 12 bursts, \
                 more than 8; the oldest are dropped; decided without it"
            )
        );
    }

    #[test]
    fn notes_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("héllo".to_owned(), 2), "h");
        assert_eq!(truncate("héllo".to_owned(), 3), "hé");
        assert_eq!(truncate("short".to_owned(), 1000), "short");
    }
}
