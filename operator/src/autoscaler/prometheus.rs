//! Reads a fleet's queue from Prometheus's HTTP API: the PromQL behind each field of
//! [`QueueMetrics`], over the metrics the pods export (`matte_common::metrics`) and
//! nothing private, written from the definitions in `matte_policy::observed` (windows,
//! functions), which the simulator computes from its scrapes.
//!
//! The queries are built by a pure function ([`Queries::new`]), so what the autoscaler
//! asks Prometheus is unit-tested; [`PrometheusSource`] only sends them, concurrently,
//! within the operator's bound on queries in flight to that server ([`PrometheusClient`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use matte_common::{gateway_metrics, metrics as names};
use matte_policy::QueueMetrics;
pub use matte_policy::observed::Windows;
use matte_policy::observed::{QUEUE_WAIT_QUANTILE, SUSTAINED_QUANTILE};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::error::Error;

/// One PromQL query per figure of [`QueueMetrics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queries {
    pub sample_age: String,
    pub queue_depth: String,
    pub oldest_queued_age: String,
    pub queue_wait_p95: String,
    pub images_per_pod_second: String,
    pub sustained_admitted_per_second: String,
    pub rejected_recently: String,
    pub gateway_queue_depth: String,
    pub gateway_oldest_queued_age: String,
    pub gateway_deferred_requests: String,
    pub pods_deferred_requests: String,
    pub gateway_new_arrivals_per_second: String,
    pub pods_new_arrivals_per_second: String,
    pub gateway_latest_arrivals_per_second: String,
    pub gateway_inflow_per_second: String,
}

impl Queries {
    /// `selector` picks the fleet's series, e.g. `namespace="shop",service="cutouts"`
    /// (label matchers without braces; empty for every Matte pod Prometheus knows).
    pub fn new(selector: &str, windows: &Windows) -> Queries {
        // PromQL takes a trailing comma before the closing brace, not before the matchers
        // joined after it: `{job="a", ,outcome="queue_full"}` is no query.
        let selector = selector.trim().trim_end_matches(',').trim_end();
        let series = |name: &str, extra: &str| {
            let matchers: Vec<&str> = [selector, extra].into_iter().filter(|m| !m.is_empty()).collect();
            format!("{name}{{{}}}", matchers.join(","))
        };
        let rate = seconds(windows.rate);
        let long = seconds(windows.long);
        let step = seconds(windows.scrape_interval);
        let recent = seconds(windows.recent);
        let arrivals = seconds(windows.arrivals);
        let latest = seconds(windows.latest);
        let dues = seconds(windows.dues());
        let inflow = seconds(windows.inflow());
        let requests = names::REQUESTS_TOTAL;
        let refused_outcomes = format!(r#"outcome=~"{}""#, gateway_metrics::REFUSED_OUTCOMES.join("|"));
        // Clients sent away to come back: the pods' `queue_full` and the gateway's
        // refusals, in one selector over both counters (the pods have no other outcome of
        // those names), so that each rate is one `rate` and never empty for want of one side.
        let refused =
            series("", &format!(r#"__name__=~"{requests}|{}",{refused_outcomes}"#, gateway_metrics::REQUESTS_TOTAL));
        let queue_full = names::QUEUE_FULL_OUTCOME;
        let admitted = series(requests, &format!(r#"outcome!="{queue_full}""#));
        Queries {
            // The pods' samples, or the gateway's while no pod runs.
            sample_age: format!(
                "time() - max(timestamp({}) or timestamp({}))",
                series(names::QUEUE_DEPTH, ""),
                series(gateway_metrics::QUEUE_DEPTH, "")
            ),
            queue_depth: format!("sum({})", series(names::QUEUE_DEPTH, "")),
            oldest_queued_age: format!("max({})", series(names::OLDEST_QUEUED_AGE_SECONDS, "")),
            queue_wait_p95: format!(
                "histogram_quantile({QUEUE_WAIT_QUANTILE}, sum by (le) (rate({}[{rate}])))",
                series(&format!("{}_bucket", names::QUEUE_WAIT_SECONDS), "")
            ),
            images_per_pod_second: format!(
                "sum(rate({}[{long}])) / sum(rate({}[{long}]))",
                series(names::INFERENCE_ROWS_TOTAL, ""),
                series(&format!("{}_sum", names::INFERENCE_SECONDS), "")
            ),
            // While pods refuse work, or the gateway holds requests back for want of a
            // free slot, admissions follow capacity, not demand: leave those moments out
            // of the median.
            sustained_admitted_per_second: format!(
                "quantile_over_time({SUSTAINED_QUANTILE}, (sum(rate({admitted}[{rate}])) unless sum(rate({refused}[{rate}])) > 0 unless sum(max_over_time({}[{rate}])) > 0)[{long}:{step}])",
                series(gateway_metrics::QUEUE_DEPTH, "")
            ),
            // Behind a gateway its refusals alone: a pod's 429 sends the gateway's request
            // back to its queue, no client away. `or` keeps the pods' where it has none.
            rejected_recently: format!(
                "(sum(rate({}[{recent}])) or sum(rate({}[{recent}]))) * {}",
                series(gateway_metrics::REQUESTS_TOTAL, &refused_outcomes),
                series(requests, &format!(r#"outcome="{queue_full}""#)),
                windows.scrape_interval.as_secs_f64()
            ),
            gateway_queue_depth: format!("sum({})", series(gateway_metrics::QUEUE_DEPTH, "")),
            gateway_oldest_queued_age: format!("max({})", series(gateway_metrics::OLDEST_QUEUED_AGE_SECONDS, "")),
            gateway_deferred_requests: format!("sum({})", series(gateway_metrics::DEFERRED_REQUESTS, "")),
            pods_deferred_requests: format!("sum({})", series(names::DEFERRED_REQUESTS, "")),
            // Every request the gateway received, less the clients due back, read over the
            // longer window their returns spread over.
            gateway_new_arrivals_per_second: format!(
                "sum(rate({}[{arrivals}])) - sum(rate({}[{dues}]))",
                series(gateway_metrics::RECEIVED_TOTAL, ""),
                series(gateway_metrics::DEFERRED_DUE_TOTAL, "")
            ),
            // Without a gateway the same of the pods: every request they answered, less
            // the clients they refused whose Retry-After has passed (none from pods that
            // do not count them).
            pods_new_arrivals_per_second: format!(
                "sum(rate({}[{arrivals}])) - (sum(rate({}[{dues}])) or vector(0))",
                series(requests, ""),
                series(names::DEFERRED_DUE_TOTAL, "")
            ),
            // Whether requests still arrive: every request, returns included, over the
            // gateway's latest two scrapes.
            gateway_latest_arrivals_per_second: format!(
                "sum(rate({}[{latest}]))",
                series(gateway_metrics::RECEIVED_TOTAL, "")
            ),
            // The gateway's new arrivals over the longer inflow window, the clients due
            // back over the same window.
            gateway_inflow_per_second: format!(
                "sum(rate({}[{inflow}])) - sum(rate({}[{inflow}]))",
                series(gateway_metrics::RECEIVED_TOTAL, ""),
                series(gateway_metrics::DEFERRED_DUE_TOTAL, "")
            ),
        }
    }
}

fn seconds(duration: Duration) -> String {
    format!("{}s", duration.as_secs().max(1))
}

/// The queries in flight at once to each Prometheus, across every resource it scrapes,
/// unless `--prometheus-max-concurrent-queries` says otherwise: half of Prometheus's own
/// default `--query.max-concurrency` (20), leaving the rest to its rules and dashboards.
/// A pass asks [`QUERIES_PER_PASS`] at once; a cluster of many services behind their
/// gateways (a pass a second each) would otherwise send Prometheus a few thousand
/// queries a second, and when it slowed, every pass's queries would time out together
/// and every autoscaler go blind. Bounded, passes wait their turn and come less often
/// instead. The bound is each server's, as the capacity it protects is: shared by the
/// servers a resource may name (`--allowed-prometheus-urls`), one that stopped answering
/// held every turn with queries waiting out their 10 s, and the resources of every other
/// server went blind with it.
pub const DEFAULT_MAX_CONCURRENT_QUERIES: u16 = 10;

/// The queries of one pass ([`Queries`]).
pub const QUERIES_PER_PASS: usize = 15;

/// The way to Prometheus every [`PrometheusSource`] shares: one HTTP client (one
/// connection pool for the operator's whole life, not a new one and a new TLS set-up
/// for every pass), and for each server the turns that bound the queries in flight to
/// it across every resource.
#[derive(Debug, Clone)]
pub struct PrometheusClient {
    http: reqwest::Client,
    max_concurrent_queries: usize,
    /// By query URL. The servers are those the operator allows, so the map stays small.
    turns: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl PrometheusClient {
    /// The turns of the server at `query_url`, shared by every source that asks it.
    fn turns_of(&self, query_url: &str) -> Arc<Semaphore> {
        // A panic elsewhere while the map was held leaves it whole: it is only inserted into.
        let mut turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
        turns
            .entry(query_url.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.max_concurrent_queries)))
            .clone()
    }
}

/// The client for every query, with at most `max_concurrent_queries` in flight at once
/// to each server.
pub fn http_client(max_concurrent_queries: u16) -> Result<PrometheusClient, Error> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Prometheus { url: "(any)".to_owned(), reason: e.to_string() })?;
    Ok(PrometheusClient {
        http,
        max_concurrent_queries: usize::from(max_concurrent_queries.max(1)),
        turns: Arc::default(),
    })
}

/// A Prometheus server to ask about one fleet.
pub struct PrometheusSource {
    http: reqwest::Client,
    turns: Arc<Semaphore>,
    query_url: String,
    queries: Queries,
}

impl PrometheusSource {
    /// `base_url` is the server, e.g. `http://prometheus.monitoring:9090`; `client`
    /// comes from [`http_client`].
    pub fn new(client: PrometheusClient, base_url: &str, selector: &str, windows: &Windows) -> PrometheusSource {
        let query_url = format!("{}/api/v1/query", base_url.trim_end_matches('/'));
        PrometheusSource {
            turns: client.turns_of(&query_url),
            http: client.http,
            query_url,
            queries: Queries::new(selector, windows),
        }
    }

    /// The fleet's queue now; `None` when Prometheus has no series for it (neither a pod
    /// nor the gateway scraped yet, or a wrong selector), which the policy treats as
    /// missing data. A service at zero pods is seen through its gateway alone.
    pub async fn queue_metrics(&self) -> Result<Option<QueueMetrics>, Error> {
        let q = &self.queries;
        let (
            queue_depth,
            age,
            oldest,
            p95,
            per_pod,
            sustained,
            recently,
            gateway_depth,
            gateway_oldest,
            gateway_deferred,
            pods_deferred,
            gateway_arrivals,
            pods_arrivals,
            gateway_latest_arrivals,
            gateway_inflow,
        ) = futures::try_join!(
            self.scalar(&q.queue_depth),
            self.scalar(&q.sample_age),
            self.scalar(&q.oldest_queued_age),
            self.scalar(&q.queue_wait_p95),
            self.scalar(&q.images_per_pod_second),
            self.scalar(&q.sustained_admitted_per_second),
            self.scalar(&q.rejected_recently),
            self.scalar(&q.gateway_queue_depth),
            self.scalar(&q.gateway_oldest_queued_age),
            self.scalar(&q.gateway_deferred_requests),
            self.scalar(&q.pods_deferred_requests),
            self.scalar(&q.gateway_new_arrivals_per_second),
            self.scalar(&q.pods_new_arrivals_per_second),
            self.scalar(&q.gateway_latest_arrivals_per_second),
            self.scalar(&q.gateway_inflow_per_second),
        )?;
        if queue_depth.is_none() && gateway_depth.is_none() {
            return Ok(None);
        }
        // An empty answer is a sum over no series: nothing happened in the window. The
        // latest arrivals are kept as they come: their window is two scrapes, so an
        // empty answer there means too few samples yet, which the policy reads as unknown.
        // The clients away and coming back are the gateway's where it has a sample, the
        // pods' otherwise (`matte_policy::observed`).
        let behind_gateway = gateway_depth.is_some();
        Ok(Some(QueueMetrics {
            age_seconds: age.unwrap_or(f64::INFINITY),
            queue_depth: queue_depth.unwrap_or(0.0),
            oldest_queued_age_seconds: oldest.unwrap_or(0.0),
            queue_wait_p95_seconds: p95,
            images_per_pod_second: per_pod,
            sustained_admitted_per_second: sustained.unwrap_or(0.0),
            rejected_recently: recently.unwrap_or(0.0),
            gateway_queue_depth: gateway_depth.unwrap_or(0.0),
            gateway_oldest_queued_age_seconds: gateway_oldest.unwrap_or(0.0),
            deferred_requests: if behind_gateway { gateway_deferred } else { pods_deferred }.unwrap_or(0.0),
            new_arrivals_per_second: if behind_gateway { gateway_arrivals } else { pods_arrivals }.unwrap_or(0.0),
            gateway_latest_arrivals_per_second: gateway_latest_arrivals,
            gateway_inflow_per_second: if behind_gateway { gateway_inflow.unwrap_or(0.0) } else { 0.0 },
        }))
    }

    /// The value of a query that yields at most one series; `None` for no series or a
    /// value that is not a finite number (0/0 when nothing happened in the window).
    pub async fn scalar(&self, query: &str) -> Result<Option<f64>, Error> {
        let failed = |reason: String| Error::PrometheusQuery { query: query.to_owned(), reason };
        // The semaphore is never closed: its turn always comes.
        let _turn = self.turns.acquire().await.map_err(|e| failed(e.to_string()))?;
        let response = self
            .http
            .get(&self.query_url)
            .query(&[("query", query)])
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let body = bounded_body(response).await.map_err(failed)?;
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| failed(format!("HTTP {status}, not a Prometheus answer: {e}")))?;
        if answer.status != "success" {
            return Err(failed(answer.error.unwrap_or_else(|| format!("HTTP {status}"))));
        }
        parse_vector(answer.data).map_err(failed).map(|value| value.filter(|v| v.is_finite()))
    }
}

/// The most of an answer read: one series is a few hundred bytes, and whatever answers
/// at the configured address (a wrong URL, a hostile server) must not fill the
/// operator's memory, a pass's queries at a time, for the 10 s a request may take.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The answer's body, read no further than `MAX_ANSWER_BYTES`.
async fn bounded_body(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!("the answer is over {MAX_ANSWER_BYTES} bytes, not the one series asked for"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<String>,
}

/// The one sample of an instant vector: `{"resultType": "vector", "result": [{"value": [t, "v"]}]}`.
fn parse_vector(data: Option<serde_json::Value>) -> Result<Option<f64>, String> {
    let data = data.ok_or("no data in the answer")?;
    let result = data["result"].as_array().ok_or("the answer has no result list")?;
    match result.as_slice() {
        [] => Ok(None),
        [sample] => {
            let text = sample["value"][1].as_str().ok_or("a sample without a value")?;
            text.parse::<f64>().map(Some).map_err(|e| format!("value {text:?}: {e}"))
        }
        many => Err(format!("expected one series, got {}", many.len())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn queries_select_the_fleet_and_use_the_windows() {
        let windows = Windows::for_scrape_interval(Duration::from_secs(5));
        let q = Queries::new(r#"namespace="shop""#, &windows);
        assert_eq!(q.queue_depth, r#"sum(matte_queue_depth{namespace="shop"})"#);
        assert_eq!(
            q.queue_wait_p95,
            r#"histogram_quantile(0.95, sum by (le) (rate(matte_queue_wait_seconds_bucket{namespace="shop"}[20s])))"#
        );
        assert_eq!(
            q.images_per_pod_second,
            r#"sum(rate(matte_inference_rows_total{namespace="shop"}[300s])) / sum(rate(matte_inference_seconds_sum{namespace="shop"}[300s]))"#
        );
        assert_eq!(
            q.sustained_admitted_per_second,
            r#"quantile_over_time(0.5, (sum(rate(matte_requests_total{namespace="shop",outcome!="queue_full"}[20s])) unless sum(rate({namespace="shop",__name__=~"matte_requests_total|matte_gateway_requests_total",outcome=~"queue_full|no_capacity"}[20s])) > 0 unless sum(max_over_time(matte_gateway_queue_depth{namespace="shop"}[20s])) > 0)[300s:5s])"#
        );
        assert_eq!(q.gateway_queue_depth, r#"sum(matte_gateway_queue_depth{namespace="shop"})"#);
        assert_eq!(q.gateway_oldest_queued_age, r#"max(matte_gateway_oldest_queued_age_seconds{namespace="shop"})"#);
        assert_eq!(
            q.sample_age,
            r#"time() - max(timestamp(matte_queue_depth{namespace="shop"}) or timestamp(matte_gateway_queue_depth{namespace="shop"}))"#
        );
        assert_eq!(q.gateway_deferred_requests, r#"sum(matte_gateway_deferred_requests{namespace="shop"})"#);
        assert_eq!(q.pods_deferred_requests, r#"sum(matte_deferred_requests{namespace="shop"})"#);
        assert_eq!(
            q.rejected_recently,
            r#"(sum(rate(matte_gateway_requests_total{namespace="shop",outcome=~"queue_full|no_capacity"}[10s])) or sum(rate(matte_requests_total{namespace="shop",outcome="queue_full"}[10s]))) * 5"#
        );
        assert_eq!(
            q.gateway_new_arrivals_per_second,
            r#"sum(rate(matte_gateway_received_total{namespace="shop"}[10s])) - sum(rate(matte_gateway_deferred_due_total{namespace="shop"}[15s]))"#
        );
        assert_eq!(
            q.pods_new_arrivals_per_second,
            r#"sum(rate(matte_requests_total{namespace="shop"}[10s])) - (sum(rate(matte_deferred_due_total{namespace="shop"}[15s])) or vector(0))"#
        );
        assert_eq!(
            q.gateway_latest_arrivals_per_second,
            r#"sum(rate(matte_gateway_received_total{namespace="shop"}[10s]))"#
        );
        assert_eq!(
            q.gateway_inflow_per_second,
            r#"sum(rate(matte_gateway_received_total{namespace="shop"}[20s])) - sum(rate(matte_gateway_deferred_due_total{namespace="shop"}[20s]))"#
        );
    }

    #[test]
    fn an_empty_selector_still_makes_valid_matchers() {
        let q = Queries::new("", &Windows::for_scrape_interval(Duration::from_secs(1)));
        assert_eq!(q.queue_depth, "sum(matte_queue_depth{})");
        assert!(
            q.rejected_recently.starts_with(r#"(sum(rate(matte_gateway_requests_total{outcome=~"#),
            "{}",
            q.rejected_recently
        );
    }

    #[test]
    fn a_selector_s_trailing_comma_is_not_doubled() {
        let windows = Windows::for_scrape_interval(Duration::from_secs(5));
        let q = Queries::new(" namespace=\"shop\", job=\"cutouts\" ,  ", &windows);
        assert_eq!(q.queue_depth, r#"sum(matte_queue_depth{namespace="shop", job="cutouts"})"#);
        assert!(
            q.rejected_recently.contains(r#"{namespace="shop", job="cutouts",outcome=~"queue_full|no_capacity"}"#),
            "{}",
            q.rejected_recently
        );
    }

    /// A server on loopback that answers every request with an endless body.
    async fn endless_server() -> String {
        use axum::body::{Body, Bytes};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let address = listener.local_addr().expect("its address");
        let endless = || async {
            let chunk = Bytes::from(vec![b' '; 64 * 1024]);
            Body::from_stream(futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone())))
        };
        let app = axum::Router::new().fallback(endless);
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn an_endless_answer_is_refused_without_reading_it_all() {
        let url = endless_server().await;
        let windows = Windows::for_scrape_interval(Duration::from_secs(5));
        let source =
            PrometheusSource::new(http_client(DEFAULT_MAX_CONCURRENT_QUERIES).expect("a client"), &url, "", &windows);
        let error = source.scalar("up").await.expect_err("no answer that large is read");
        assert!(error.to_string().contains("over 65536 bytes"), "{error}");
    }

    /// What [`slow_server`] saw: the queries it answered, and the most it was ever
    /// answering at once.
    #[derive(Default)]
    struct Served {
        answered: AtomicUsize,
        most_at_once: AtomicUsize,
    }

    /// A Prometheus on loopback that answers every query with no series after `delay`.
    async fn slow_server(delay: Duration) -> (String, Arc<Served>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let address = listener.local_addr().expect("its address");
        let in_flight = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(Served::default());
        let seen = served.clone();
        let answer = move || {
            let (in_flight, served) = (in_flight.clone(), served.clone());
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                served.most_at_once.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                served.answered.fetch_add(1, Ordering::SeqCst);
                axum::Json(serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": []}}))
            }
        };
        let app = axum::Router::new().fallback(answer);
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}"), seen)
    }

    #[tokio::test]
    async fn the_queries_in_flight_stay_within_the_bound_across_every_resource() {
        let (url, served) = slow_server(Duration::from_millis(50)).await;
        let windows = Windows::for_scrape_interval(Duration::from_secs(5));
        let client = http_client(3).expect("a client");
        let shop = PrometheusSource::new(client.clone(), &url, r#"namespace="shop""#, &windows);
        let studio = PrometheusSource::new(client, &url, r#"namespace="studio""#, &windows);
        let (shop, studio) = tokio::join!(shop.queue_metrics(), studio.queue_metrics());
        // Every query answered, none of them with a series.
        assert_eq!((shop.expect("answered"), studio.expect("answered")), (None, None));
        let (answered, most) = (served.answered.load(Ordering::SeqCst), served.most_at_once.load(Ordering::SeqCst));
        assert_eq!((answered, most), (2 * QUERIES_PER_PASS, 3), "two passes' queries, 3 at a time");
    }

    #[tokio::test]
    async fn a_server_that_answers_slowly_takes_no_turns_from_another() {
        let (stalled_url, stalled) = slow_server(Duration::from_secs(5)).await;
        let (url, served) = slow_server(Duration::from_millis(10)).await;
        let windows = Windows::for_scrape_interval(Duration::from_secs(5));
        let client = http_client(3).expect("a client");
        let blind = PrometheusSource::new(client.clone(), &stalled_url, r#"namespace="shop""#, &windows);
        let seeing = PrometheusSource::new(client, &url, r#"namespace="studio""#, &windows);
        let blind = tokio::spawn(async move { blind.queue_metrics().await });
        // The stalled server's passes hold all of its turns first.
        let deadline = std::time::Instant::now() + Duration::from_secs(4);
        while stalled.most_at_once.load(Ordering::SeqCst) < 3 {
            assert!(std::time::Instant::now() < deadline, "the stalled server never held 3 queries");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stalled.most_at_once.load(Ordering::SeqCst), 3);
        let started = std::time::Instant::now();
        let seen = seeing.queue_metrics().await;
        let took = started.elapsed();
        assert_eq!(seen.expect("answered"), None);
        assert_eq!(served.answered.load(Ordering::SeqCst), QUERIES_PER_PASS);
        // Behind the stalled server's queries, 5 s a turn, the pass would take 25 s.
        assert!(took < Duration::from_secs(4), "the pass took {took:?}");
        assert_eq!(stalled.answered.load(Ordering::SeqCst), 0, "the stalled server has answered nothing yet");
        blind.abort();
    }

    /// The first byte of what an HTTPS client sends: a TLS handshake record (0x16).
    const TLS_HANDSHAKE: u8 = 0x16;

    #[tokio::test]
    async fn an_https_prometheus_is_spoken_to_in_tls() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let address = listener.local_addr().expect("its address");
        let first_byte = tokio::spawn(async move {
            let (mut connection, _) = listener.accept().await.expect("the client connects");
            connection.read_u8().await.expect("the client speaks first")
        });
        let windows = Windows::for_scrape_interval(Duration::from_secs(5));
        let source = PrometheusSource::new(
            http_client(DEFAULT_MAX_CONCURRENT_QUERIES).expect("a client"),
            &format!("https://{address}"),
            "",
            &windows,
        );
        // The listener answers nothing, so the handshake fails once the byte is read.
        let query = tokio::time::timeout(Duration::from_secs(20), source.scalar("up"));
        let first = tokio::time::timeout(Duration::from_secs(20), first_byte);
        let (_, first) = tokio::join!(query, first);
        let first = first.expect("a connection within 20 s").expect("the listener task");
        assert_eq!(first, TLS_HANDSHAKE, "the client did not open with a TLS handshake");
    }

    #[test]
    fn vectors_parse_to_one_value_or_none() {
        let one = serde_json::json!({"resultType": "vector", "result": [{"metric": {}, "value": [1.5, "2.25"]}]});
        assert_eq!(parse_vector(Some(one)), Ok(Some(2.25)));
        let empty = serde_json::json!({"resultType": "vector", "result": []});
        assert_eq!(parse_vector(Some(empty)), Ok(None));
        let nan = serde_json::json!({"resultType": "vector", "result": [{"value": [1, "NaN"]}]});
        assert!(parse_vector(Some(nan)).unwrap().unwrap().is_nan());
        let two = serde_json::json!({"result": [{"value": [1, "1"]}, {"value": [1, "2"]}]});
        assert!(parse_vector(Some(two)).is_err());
        assert!(parse_vector(None).is_err());
    }
}
