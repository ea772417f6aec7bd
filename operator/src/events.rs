//! Events about resources, as `events.k8s.io/v1` objects. One occurrence repeated (the
//! same type, reason, action and note about the same object) within [`SERIES_WINDOW`]
//! is one Event whose series counts it, so that a condition reported pass after pass
//! does not flood the namespace; a different note is a new Event. kube-runtime's
//! `Recorder` keys its series without the note: a second scaling within its window
//! showed the first one's note ("scaled from 1 to 3") with a count of two. A note that
//! changes on every pass (a time in it) would make an Event a pass: past
//! [`MAX_NOTES_PER_REASON`] notes of one reason about one object within the window, the
//! newest Event of them counts the rest (their notes are in the operator's log).

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{EventType, Reporter};
use kube::{Client, ResourceExt};

/// How long an Event stays the one a repetition of it counts on (kube-runtime's, and
/// client-go's, window).
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// Distinct notes of one type, reason and action about one object published as Events
/// of their own within [`SERIES_WINDOW`]: more than any scaling rhythm makes in six
/// minutes, few enough that no note changing pass after pass floods the namespace.
pub const MAX_NOTES_PER_REASON: usize = 10;

/// What makes two occurrences one Event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    warning: bool,
    reason: String,
    action: String,
    note: String,
    /// The object's uid, or its namespace and name before it has one.
    regarding: (Option<String>, Option<String>, Option<String>),
}

impl Key {
    /// Of the same type, reason and action about the same object, whatever the note.
    fn same_reason_as(&self, other: &Key) -> bool {
        (self.warning, &self.reason, &self.action, &self.regarding)
            == (other.warning, &other.reason, &other.action, &other.regarding)
    }
}

/// Publishes Events for the operator, counting repetitions as series.
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    recent: Mutex<HashMap<Key, Event>>,
}

impl Recorder {
    pub fn new(client: Client, reporter: Reporter) -> Recorder {
        Recorder { client, reporter, recent: Mutex::new(HashMap::new()) }
    }

    /// Publishes an Event of `type_` about `regarding`: a new one, or the series of the
    /// same one published within the window.
    pub async fn publish(
        &self,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = Key {
            warning: type_ == EventType::Warning,
            reason: reason.to_owned(),
            action: action.to_owned(),
            note: note.to_owned(),
            regarding: (regarding.uid.clone(), regarding.namespace.clone(), regarding.name.clone()),
        };
        let (key, repeated) = {
            let mut recent = self.lock();
            recent.retain(|_, event| last_seen(event).is_some_and(|seen| seen + SERIES_WINDOW > now));
            match recent.get(&key) {
                Some(event) => (key, Some(event.clone())),
                None => {
                    let same_reason: Vec<(&Key, &Event)> =
                        recent.iter().filter(|(other, _)| other.same_reason_as(&key)).collect();
                    if same_reason.len() >= MAX_NOTES_PER_REASON {
                        let newest = same_reason.into_iter().max_by_key(|(_, event)| last_seen(event));
                        newest.map_or((key, None), |(other, event)| (other.clone(), Some(event.clone())))
                    } else {
                        (key, None)
                    }
                }
            }
        };
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let events = Api::<Event>::namespaced(self.client.clone(), &namespace);
        let event = match repeated {
            Some(mut event) => {
                let count = event.series.as_ref().map_or(2, |series| series.count + 1);
                event.series = Some(EventSeries { count, last_observed_time: MicroTime(now) });
                events.patch(&event.name_any(), &PatchParams::default(), &Patch::Merge(&event)).await?;
                event
            }
            None => {
                let event = self.new_event(&key, regarding, now);
                events.create(&PostParams::default(), &event).await?
            }
        };
        self.lock().insert(key, event);
        Ok(())
    }

    /// A new Event of the occurrence `key` about `regarding`.
    fn new_event(&self, key: &Key, regarding: &ObjectReference, now: Timestamp) -> Event {
        let name = regarding.name.as_deref().unwrap_or(&self.reporter.controller);
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            action: Some(key.action.clone()),
            reason: Some(key.reason.clone()),
            note: Some(key.note.clone()),
            type_: Some(if key.warning { "Warning" } else { "Normal" }.to_owned()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter.instance.clone().unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..Event::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Event>> {
        // Every statement leaves the map whole: a panic elsewhere leaves it usable.
        self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// When `event` was last seen: its series' last, or its own time.
fn last_seen(event: &Event) -> Option<Timestamp> {
    event.series.as_ref().map(|series| series.last_observed_time.0).or(event.event_time.as_ref().map(|time| time.0))
}

#[cfg(test)]
mod tests {
    use http::{Method, Request, Response};
    use kube::client::Body;

    use super::*;

    /// An apiserver that answers every Event written with itself, and sends each
    /// request's method and body to the test.
    fn events_apiserver() -> (Client, tokio::sync::mpsc::UnboundedReceiver<(Method, serde_json::Value)>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (sender, received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let method = request.method().clone();
                let body = http_body_util::BodyExt::collect(request.into_body()).await.expect("a body").to_bytes();
                let event: serde_json::Value = serde_json::from_slice(&body).expect("an Event");
                let _ = sender.send((method, event.clone()));
                respond.send_response(Response::new(Body::from(body.to_vec())));
            }
        });
        (Client::new(service, "default"), received)
    }

    fn portraits() -> ObjectReference {
        ObjectReference {
            api_version: Some("matte.dev/v1alpha1".into()),
            kind: Some("BackgroundRemovalService".into()),
            name: Some("portraits".into()),
            namespace: Some("shop".into()),
            uid: Some("6b1f0c1e".into()),
            ..ObjectReference::default()
        }
    }

    #[tokio::test]
    async fn a_repeated_note_is_counted_and_a_new_note_is_a_new_event() {
        let (client, mut received) = events_apiserver();
        let recorder = Recorder::new(client, Reporter { controller: "matte-operator".into(), instance: None });
        let portraits = portraits();
        let scaled = |note: &'static str| recorder.publish(EventType::Normal, "Scaled", "Scale", note, &portraits);
        scaled("scaled from 1 to 3").await.expect("published");
        scaled("scaled from 1 to 3").await.expect("published");
        scaled("scaled from 3 to 6").await.expect("published");
        // Bounded: the recorder holds the apiserver's channel open, so a request never
        // sent would otherwise be waited for without end.
        let mut next = async || {
            tokio::time::timeout(std::time::Duration::from_secs(5), received.recv())
                .await
                .expect("a request within 5 s")
                .expect("a request")
        };
        let (first, repeated, second) = (next().await, next().await, next().await);
        assert_eq!((first.0, first.1["note"].as_str()), (Method::POST, Some("scaled from 1 to 3")));
        assert_eq!((repeated.0, repeated.1["series"]["count"].as_i64()), (Method::PATCH, Some(2)));
        assert_eq!(repeated.1["metadata"]["name"], first.1["metadata"]["name"], "the same Event, counted");
        assert_eq!((second.0, second.1["note"].as_str()), (Method::POST, Some("scaled from 3 to 6")), "a new Event");
        assert_eq!(first.1["reportingController"], "matte-operator");
        assert_eq!(first.1["regarding"]["uid"], "6b1f0c1e");
    }

    #[tokio::test]
    async fn a_note_changing_on_every_pass_makes_no_more_than_a_few_events() {
        let (client, mut received) = events_apiserver();
        let recorder = Recorder::new(client, Reporter { controller: "matte-operator".into(), instance: None });
        let portraits = portraits();
        for ahead in 0..MAX_NOTES_PER_REASON + 5 {
            let note = format!("surplusSinceSeconds is {}s ahead of now", 86_400 - ahead);
            recorder.publish(EventType::Warning, "AutoscalerMemoryDropped", "Decide", &note, &portraits).await.unwrap();
        }
        let mut methods = Vec::new();
        while let Ok((method, event)) = received.try_recv() {
            methods.push((method, event["series"]["count"].as_i64()));
        }
        let created = methods.iter().filter(|(method, _)| method == Method::POST).count();
        assert_eq!(created, MAX_NOTES_PER_REASON, "{methods:?}");
        assert_eq!(methods.last(), Some(&(Method::PATCH, Some(6))), "the newest counts the rest: {methods:?}");
    }
}
