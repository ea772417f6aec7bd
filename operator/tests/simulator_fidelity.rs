//! The simulator against reality. One short trace (steady traffic, a burst, a quiet
//! spell) is replayed against two real inference pods (`matte-inference` on the CPU with
//! a generated model sized for a run of ~0.15 s on one thread of the machine) scraped every
//! second by a real Prometheus (Debian's), and the operator's metrics source is sampled
//! once per scrape interval. Then the simulator runs the same arrivals (as the real
//! clients sent them, which a busy machine can make a little late) on two pods with
//! the real pods' measured service time and the same clients (back after 1–1.5× the
//! `Retry-After` they were given when refused), and its Prometheus is sampled through the policy
//! crate's definitions at the same moments. Each input of `decide` must agree within
//! the tolerances stated with each check below. Twice: with the clients picking a pod
//! at random, as behind a plain Service, and behind a real `matte-gateway`, as the
//! operator deploys it.
//!
//! Needs `scripts/setup.sh` (runtime, Python's `onnx`, prometheus) and the
//! `matte-inference` and `matte-gateway` binaries, which `cargo test --workspace`
//! builds.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use matte_common::{gateway_metrics, metrics};
use matte_operator::autoscaler::policy::QueueMetrics;
use matte_operator::autoscaler::prometheus::{DEFAULT_MAX_CONCURRENT_QUERIES, PrometheusSource, Windows, http_client};
use matte_sim::engine;
use matte_sim::random::{Stream, StreamName};
use matte_sim::scalers::{ClusterView, Scaler};
use matte_sim::scenario::Scenario;
use matte_sim::settings::{Routing, Settings};
use matte_sim::workload::Workload;
use support::{
    Process, free_port, pod_metric, sample_image, setup_path, start_pod, start_prometheus, wait_for, workspace_binary,
};

const SCRAPE_SECONDS: u64 = 1;
const PODS: u32 = 2;
const QUEUE_CAPACITY: usize = 4;
/// Scrapes before the first arrival, in both worlds.
const LEAD_SECONDS: f64 = 10.0;
/// Seconds sampled after the last arrival: the burst's refusals leave every window
/// but the long one.
const TAIL_SECONDS: f64 = 30.0;
/// The gateway's budget: short, so that the burst overflows it and clients are sent
/// away with a `Retry-After` as well as held in its queue.
const GATEWAY_MAX_WAIT_SECONDS: u64 = 3;

/// Where the clients send each try. Refused, they stay away for the `Retry-After`
/// given, and up to half again.
#[derive(Clone)]
enum Front {
    /// A pod picked at random each try, as behind a plain Service; it refuses with 429.
    Pods(Vec<String>),
    /// The gateway; it refuses with 429, or 503 when a request's budget runs out.
    Gateway(String),
}

/// Images in the trace's burst.
const BURST_IMAGES: u32 = 100;

/// Arrivals from the trace's start: an image every 2 s for 90 s, and `BURST_IMAGES`
/// more within 2 s at 25 s (about ten times what two pods hold).
fn trace() -> Vec<f64> {
    let steady = (0..45).map(|index| 2.0 * f64::from(index));
    let burst = (0..BURST_IMAGES).map(|index| 25.0 + f64::from(index) / 50.0);
    let mut arrivals: Vec<f64> = steady.chain(burst).collect();
    arrivals.sort_by(f64::total_cmp);
    arrivals
}

/// A model whose run takes ~0.15 s on one thread of this machine, made by
/// `fixtures/slow_model.py`: a fixed amount of work ran in 0.09 s on a fast machine,
/// where the burst no longer overflowed the gateway's budget and no client was sent away.
fn slow_model(directory: &std::path::Path) -> PathBuf {
    let path = directory.join("slow.onnx");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/slow_model.py");
    let status = Command::new(setup_path("MATTE_PYTHON")).arg(script).arg(&path).status().unwrap();
    assert!(status.success(), "slow_model.py failed");
    path
}

/// One sample per second from the first scrape on: (seconds, the queue as read).
type Samples = Vec<(f64, Option<QueueMetrics>)>;

/// What a replay saw: the samples of the operator's source, and when each request's
/// first try went out, in seconds from the first sample. A machine busy with the pods
/// can send a burst's requests later than the trace says (its timers fire late); the
/// simulator runs on these, so that both worlds see the same arrivals.
struct Replay {
    samples: Samples,
    sent: Vec<f64>,
}

/// The most times one image is sent: a client comes back after each refusal's
/// `Retry-After` (a few seconds), and the trace's images are all answered within
/// minutes.
const MAX_TRIES: usize = 100;

/// Replays the trace against `front`.
async fn replay(front: &Front, source: &PrometheusSource, photo: Vec<u8>) -> Replay {
    let arrivals = trace();
    let end = arrivals.last().copied().unwrap_or(0.0) + TAIL_SECONDS;
    let start = Instant::now() + Duration::from_secs_f64(LEAD_SECONDS);
    // Bounded, so that a server that stops answering, or refuses for ever, fails the
    // test rather than holding it.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("a client");
    let draws = Arc::new(Mutex::new(Stream::new(1, StreamName::Routing)));
    let photo = Arc::new(photo);
    let requests: Vec<_> = arrivals
        .iter()
        .map(|&at| {
            let (client, draws, front, photo) = (client.clone(), draws.clone(), front.clone(), photo.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until((start + Duration::from_secs_f64(at)).into()).await;
                let sent = Instant::now();
                for _ in 0..MAX_TRIES {
                    let target = match &front {
                        Front::Pods(pods) => &pods[draws.lock().unwrap().index(pods.len())],
                        Front::Gateway(gateway) => gateway,
                    };
                    let response = client
                        .post(format!("{target}/v1/remove?format=mask&max_dimension=64"))
                        .header("content-type", "image/jpeg")
                        .body(photo.as_ref().clone())
                        .send()
                        .await
                        .expect("the server answers");
                    let status = response.status().as_u16();
                    let refused = match &front {
                        Front::Pods(_) => status == 429,
                        Front::Gateway(_) => status == 429 || status == 503,
                    };
                    if !refused {
                        return (status, sent);
                    }
                    let stay_away = response
                        .headers()
                        .get("retry-after")
                        .and_then(|value| value.to_str().ok()?.parse::<f64>().ok())
                        .expect("refusals carry Retry-After");
                    let jitter = 1.0 + 0.5 * draws.lock().unwrap().uniform();
                    tokio::time::sleep(Duration::from_secs_f64(stay_away * jitter)).await;
                }
                panic!("an image refused {MAX_TRIES} times");
            })
        })
        .collect();

    let first = start - Duration::from_secs_f64(LEAD_SECONDS);
    let mut samples = Samples::new();
    let mut second = 0.0;
    while second <= LEAD_SECONDS + end {
        tokio::time::sleep_until((first + Duration::from_secs_f64(second)).into()).await;
        samples.push((second, source.queue_metrics().await.expect("Prometheus answers")));
        second += SCRAPE_SECONDS as f64;
    }
    let mut sent = Vec::with_capacity(requests.len());
    for request in requests {
        let (status, at) = request.await.unwrap();
        assert_eq!(status, 200, "every image is answered in the end");
        sent.push(at.duration_since(first).as_secs_f64());
    }
    sent.sort_by(f64::total_cmp);
    Replay { samples, sent }
}

/// Reads what the operator's source would read, every scrape interval, and keeps the
/// fleet as it is.
struct Recorder {
    samples: Samples,
}

impl Scaler for Recorder {
    fn interval_seconds(&self) -> f64 {
        SCRAPE_SECONDS as f64
    }

    fn initial_replicas(&self) -> u32 {
        PODS
    }

    fn decide(&mut self, view: &ClusterView) -> u32 {
        self.samples.push((view.now, view.prometheus.queue_metrics(view.now)));
        PODS
    }
}

/// How late the real clients sent their requests against the trace, for the report.
fn lateness(sent: &[f64]) -> String {
    let planned = trace().into_iter().map(|at| at + LEAD_SECONDS);
    let late: Vec<f64> = sent.iter().zip(planned).map(|(sent, planned)| sent - planned).collect();
    let most = late.iter().copied().fold(0.0, f64::max);
    format!("requests sent up to {most:.3} s after the trace's time")
}

/// The simulator on the arrivals the real clients sent (`Replay::sent`), pods of
/// `service_seconds` per image; the samples, and how many times clients were refused
/// (429s, and the gateway's 503s).
fn simulate(arrivals: &[f64], service_seconds: f64, routing: Routing) -> (Samples, u64) {
    let arrivals = arrivals.to_vec();
    let last = arrivals.last().copied().unwrap_or(0.0);
    let settings = Settings {
        duration_seconds: last + 1.0,
        tail_seconds: TAIL_SECONDS,
        service_seconds,
        service_sigma: 0.1,
        max_batch_size: 1,
        warm_gpus: PODS,
        max_gpus: PODS,
        queue_capacity: QUEUE_CAPACITY,
        routing,
        max_wait_seconds: GATEWAY_MAX_WAIT_SECONDS as f64,
        scrape_interval_seconds: SCRAPE_SECONDS as f64,
        rule_interval_seconds: SCRAPE_SECONDS as f64,
        min_replicas: PODS,
        max_replicas: PODS,
        static_replicas: PODS,
        ..Scenario::BurstTrain.settings()
    };
    settings.validate().expect("valid settings");
    let workload = Workload::new(arrivals, &settings, 1);
    let mut recorder = Recorder { samples: Samples::new() };
    let run = engine::run(&settings, &workload, &mut recorder, 1);
    (recorder.samples, run.rejections + run.timeouts)
}

/// One quantity of the policy's input, by name.
type Column = (&'static str, fn(&QueueMetrics) -> Option<f64>);

/// The two worlds' samples, paired second by second up to the shorter run.
struct Paired {
    real: Samples,
    simulated: Samples,
}

impl Paired {
    /// Pairs them and prints them side by side, a line per sample, `real/simulated` in
    /// each column (shown with `--nocapture`, and above a failed check's message). A line
    /// the same as the one two samples before (a steady image every 2 s) is counted
    /// rather than printed, so that the message is not buried under the quiet tail.
    fn new(mut real: Samples, mut simulated: Samples, columns: &[Column]) -> Paired {
        let samples = real.len().min(simulated.len());
        real.truncate(samples);
        simulated.truncate(samples);
        let names: Vec<String> = columns.iter().map(|(name, _)| format!("{name} r/s")).collect();
        eprintln!("  s | {}", names.join(" | "));
        let show = |value: Option<f64>| value.map_or_else(|| "-".to_string(), |value| format!("{value:.2}"));
        let lines: Vec<String> = real
            .iter()
            .zip(&simulated)
            .map(|((_, r), (_, s))| {
                let pairs: Vec<String> = columns
                    .iter()
                    .map(|(_, value)| {
                        format!("{}/{}", show(r.as_ref().and_then(value)), show(s.as_ref().and_then(value)))
                    })
                    .collect();
                pairs.join(" | ")
            })
            .collect();
        let mut repeated = 0;
        for (index, ((second, _), line)) in real.iter().zip(&lines).enumerate() {
            if index >= 2 && lines[index - 2] == *line {
                repeated += 1;
                continue;
            }
            if repeated > 0 {
                eprintln!("    | ({repeated} lines as two seconds before)");
                repeated = 0;
            }
            eprintln!("{second:>3} | {line}");
        }
        if repeated > 0 {
            eprintln!("    | ({repeated} lines as two seconds before)");
        }
        Paired { real, simulated }
    }

    /// One quantity over the samples of each world (missing samples as `None`).
    fn both(&self, value: fn(&QueueMetrics) -> Option<f64>) -> (Vec<Option<f64>>, Vec<Option<f64>>) {
        let series = |samples: &Samples| samples.iter().map(|(_, queue)| queue.as_ref().and_then(value)).collect();
        (series(&self.real), series(&self.simulated))
    }
}

/// The last value read, or 0 when none was.
fn final_value(values: &[Option<f64>]) -> f64 {
    values.iter().rev().flatten().next().copied().unwrap_or(0.0)
}

/// Checks that a rate reads the same in both worlds over the 20 s of steady traffic
/// before the burst (an image every 2 s, 0.5 a second): their means within a quarter.
fn steady_before_burst(what: &str, real: &[Option<f64>], simulated: &[Option<f64>]) {
    let mean = |values: &[Option<f64>]| {
        let steady: Vec<f64> =
            values[(LEAD_SECONDS as usize + 4)..(LEAD_SECONDS as usize + 24)].iter().flatten().copied().collect();
        steady.iter().sum::<f64>() / steady.len().max(1) as f64
    };
    within(what, mean(real), mean(simulated), 0.25, 0.0);
}

fn peak(values: &[Option<f64>]) -> f64 {
    values.iter().flatten().copied().fold(0.0, f64::max)
}

/// The first and last sample at which the quantity is above zero.
fn span(values: &[Option<f64>]) -> Option<(usize, usize)> {
    let positive = |value: &Option<f64>| value.is_some_and(|value| value > 0.0);
    Some((values.iter().position(positive)?, values.iter().rposition(positive)?))
}

fn within(what: &str, real: f64, simulated: f64, absolute: f64, relative: f64) {
    let allowed = absolute + relative * real.abs().max(simulated.abs());
    assert!(
        (real - simulated).abs() <= allowed,
        "{what}: real {real:.3}, simulated {simulated:.3}, allowed difference {allowed:.3}"
    );
}

/// The tests here load both cores for minutes: one at a time, so that neither slows the
/// other's pods and moves their service time.
static ONE_FLEET_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run_alone(test: impl std::future::Future<Output = ()>) {
    let _alone = ONE_FLEET_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(test);
}

/// Two real pods, a real gateway in front of them if asked for, and a real Prometheus
/// scraping them all under one job, as the operator's PodMonitor does.
struct Fleet {
    data: PathBuf,
    pods: Vec<String>,
    gateway: Option<String>,
    source: PrometheusSource,
    photo: Vec<u8>,
    processes: Vec<Process>,
}

impl Fleet {
    async fn start(with_gateway: bool) -> Fleet {
        let data = std::env::temp_dir().join(format!("matte-fidelity-{}-{with_gateway}", std::process::id()));
        std::fs::create_dir_all(&data).unwrap();
        let model = slow_model(&data);
        let ports: Vec<u16> = (0..PODS).map(|_| free_port()).collect();
        let capacity = QUEUE_CAPACITY.to_string();
        let args = ["--queue-capacity", capacity.as_str(), "--intra-threads", "1", "--max-batch-size", "1"];
        let mut processes: Vec<Process> = ports.iter().map(|port| start_pod(&model, *port, &args)).collect();
        let pods: Vec<String> = ports.iter().map(|port| format!("http://127.0.0.1:{port}")).collect();
        let mut scraped = ports.clone();
        let gateway = with_gateway.then(|| {
            let port = free_port();
            let upstreams = ports.iter().flat_map(|pod| ["--upstream".to_string(), format!("127.0.0.1:{pod}")]);
            processes.push(Process(
                Command::new(workspace_binary("matte-gateway"))
                    .args(["--listen", &format!("127.0.0.1:{port}"), "--log-format", "text"])
                    .args(["--upstream-capacity", &capacity])
                    .args(["--max-wait-seconds", &GATEWAY_MAX_WAIT_SECONDS.to_string()])
                    .args(upstreams)
                    .env("RUST_LOG", "warn")
                    .spawn()
                    .expect("matte-gateway starts"),
            ));
            scraped.push(port);
            format!("http://127.0.0.1:{port}")
        });
        let prometheus_port = free_port();
        let prometheus_url = format!("http://127.0.0.1:{prometheus_port}");
        processes.push(start_prometheus(&data.join("prometheus"), prometheus_port, SCRAPE_SECONDS, &scraped));
        let ready: Vec<String> = pods
            .iter()
            .chain(&gateway)
            .map(|server| format!("{server}/readyz"))
            .chain([format!("{prometheus_url}/-/ready")])
            .collect();
        tokio::task::spawn_blocking(move || ready.iter().for_each(|url| wait_for(url, Duration::from_secs(180))))
            .await
            .unwrap();

        let windows = Windows::for_scrape_interval(Duration::from_secs(SCRAPE_SECONDS));
        let source = PrometheusSource::new(
            http_client(DEFAULT_MAX_CONCURRENT_QUERIES).unwrap(),
            &prometheus_url,
            r#"job="matte""#,
            &windows,
        );
        let scraped_by = Instant::now() + Duration::from_secs(30);
        while source.queue_metrics().await.unwrap().is_none() {
            assert!(Instant::now() < scraped_by, "Prometheus never scraped the fleet");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let photo = sample_image("rocket.jpg");
        Fleet { data, pods, gateway, source, photo, processes }
    }

    /// The pods' mean time per image over the whole replay.
    async fn service_seconds(&self) -> f64 {
        let pods = self.pods.clone();
        tokio::task::spawn_blocking(move || {
            let sum = |name: &str| pods.iter().map(|pod| pod_metric(pod, name)).sum::<f64>();
            sum("matte_inference_seconds_sum") / sum("matte_inference_seconds_count")
        })
        .await
        .unwrap()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // The processes first: Prometheus writes into the folder until it ends.
        self.processes.clear();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Behind a plain Service: clients pick a pod at random and come back after its 429's
/// `Retry-After`, which each pod works out from its queue and its time per image.
#[test]
fn the_simulator_reads_what_the_operator_reads_on_a_real_fleet() {
    run_alone(async {
        let fleet = Fleet::start(false).await;
        let real = replay(&Front::Pods(fleet.pods.clone()), &fleet.source, fleet.photo.clone()).await;
        let service_seconds = fleet.service_seconds().await;
        let pods = fleet.pods.clone();
        // Only 429s carry this outcome. Each client a pod refused is counted away until
        // its `Retry-After` has passed, then due: by the end of the quiet tail, longer
        // than any `Retry-After` given here, every one is due and none away.
        let (refused, due, away) = tokio::task::spawn_blocking(move || {
            let texts: Vec<String> = pods.iter().map(|pod| metrics_text(pod)).collect();
            let sum = |series: &str| texts.iter().map(|text| series_total(text, series)).sum::<f64>();
            (
                sum(&format!(r#"{}{{{}="queue_full"}}"#, metrics::REQUESTS_TOTAL, metrics::OUTCOME_LABEL)),
                sum(metrics::DEFERRED_DUE_TOTAL),
                sum(metrics::DEFERRED_REQUESTS),
            )
        })
        .await
        .unwrap();
        assert_eq!((due, away), (refused, 0.0), "every refused client due by the end, none away");
        let (simulated, simulated_refusals) = simulate(&real.sent, service_seconds, Routing::Random);

        eprintln!(
            "service time {service_seconds:.3} s; refusals: real {refused}, simulated {simulated_refusals}; {}",
            lateness(&real.sent)
        );
        let paired = Paired::new(
            real.samples,
            simulated,
            &[
                ("depth", |q| Some(q.queue_depth)),
                ("oldest", |q| Some(q.oldest_queued_age_seconds)),
                ("p95", |q| q.queue_wait_p95_seconds),
                ("per pod", |q| q.images_per_pod_second),
                ("sustained", |q| Some(q.sustained_admitted_per_second)),
                ("recent", |q| Some(q.rejected_recently)),
                ("clients away", |q| Some(q.deferred_requests)),
                ("new arrivals", |q| Some(q.new_arrivals_per_second)),
            ],
        );

        // Refusals: the same clients meet the same capacity, but which pod each picks and
        // when each comes back are random draws, different in the two worlds: the totals
        // agree within a third.
        within("429 answers in total", refused, simulated_refusals as f64, 0.0, 0.34);

        // Queue depth: the burst fills both pods' queues (capacity less the image in
        // inference) in both worlds; the peak agrees within one image per pod.
        let (depth_real, depth_simulated) = paired.both(|q| Some(q.queue_depth));
        within("peak queue depth", peak(&depth_real), peak(&depth_simulated), f64::from(PODS), 0.0);

        // Oldest queued age: a full queue's oldest image has waited for the images ahead of
        // it; the peak agrees within one scrape interval (when the sample is taken in a
        // pod's cycle) plus a quarter.
        let (oldest_real, oldest_simulated) = paired.both(|q| Some(q.oldest_queued_age_seconds));
        within("peak oldest queued age", peak(&oldest_real), peak(&oldest_simulated), SCRAPE_SECONDS as f64, 0.25);

        // Refusals as the policy reads them, the refusals of the last scrapes and the
        // clients the pods sent away: both worlds see them begin within one scrape of each
        // other plus one for the scrape phase, and end within five (the last retries are
        // random, and the real pods drain the burst at their loaded speed, a little slower
        // than the mean the simulated ones take); the peaks agree within the totals'
        // third plus a tenth.
        for (what, value) in [
            ("recent refusals", (|q: &QueueMetrics| Some(q.rejected_recently)) as fn(&QueueMetrics) -> Option<f64>),
            ("clients away", |q: &QueueMetrics| Some(q.deferred_requests)),
        ] {
            let (real_values, simulated_values) = paired.both(value);
            let real_span = span(&real_values).unwrap_or_else(|| panic!("{what}: no refusals read from Prometheus"));
            let simulated_span = span(&simulated_values).unwrap_or_else(|| panic!("{what}: no refusals simulated"));
            within(&format!("{what}: first sample"), real_span.0 as f64, simulated_span.0 as f64, 2.0, 0.0);
            within(&format!("{what}: last sample"), real_span.1 as f64, simulated_span.1 as f64, 5.0, 0.0);
            within(&format!("{what}: peak"), peak(&real_values), peak(&simulated_values), 0.0, 0.45);
        }

        // Queue wait p95: the buckets are about 2–2.5× apart and Prometheus interpolates
        // inside one, so the peaks agree within one bucket's width: a factor 2.5.
        let (p95_real, p95_simulated) = paired.both(|q| q.queue_wait_p95_seconds);
        let (p95_real, p95_simulated) = (peak(&p95_real), peak(&p95_simulated));
        assert!(
            p95_real <= 2.5 * p95_simulated && p95_simulated <= 2.5 * p95_real,
            "peak queue wait p95: real {p95_real:.3}, simulated {p95_simulated:.3}"
        );

        // Per-pod throughput: the simulated pods take the real pods' mean time per image.
        // At the end, when the long window holds every run of both, the two agree within
        // 10 % (the simulated runs spread around that mean). Along the way they do not
        // have to: the real pods here share a loaded CPU, alone in the quiet and with
        // each other's decoding in the burst, so a run takes from half to twice the mean;
        // on a GPU a run's time does not depend on the neighbours.
        let (per_pod_real, per_pod_simulated) = paired.both(|q| q.images_per_pod_second);
        within(
            "images per pod-second at the end",
            final_value(&per_pod_real),
            final_value(&per_pod_simulated),
            0.0,
            0.1,
        );

        // Sustained admissions: the median of the refusal-free rates, 0.5 images/s of steady
        // traffic in both; at the end (the long window holds the whole trace) they agree
        // within a fifth, the weight of one image more or less in a 10 s window.
        let (sustained_real, sustained_simulated) = paired.both(|q| Some(q.sustained_admitted_per_second));
        within("sustained admissions", final_value(&sustained_real), final_value(&sustained_simulated), 0.05, 0.2);

        // New arrivals, from the pods' requests (every request answered, less the clients
        // they refused whose `Retry-After` has passed): before the burst the steady image
        // every 2 s reads 0.5 a second in both, within a quarter; the burst's hundred
        // images in 2 s read as the same peak within the refusals' 0.45 (which pod each
        // try meets and when each client comes back are each world's own draws); and once
        // the burst is in, its clients trying again are no new work: from when the burst
        // has left the arrivals window (two samples after the peak) for ten seconds, the
        // mean stays below a tenth of the peak in both worlds.
        let (arrivals_real, arrivals_simulated) = paired.both(|q| Some(q.new_arrivals_per_second));
        steady_before_burst("new arrivals before the burst", &arrivals_real, &arrivals_simulated);
        within("peak new arrivals", peak(&arrivals_real), peak(&arrivals_simulated), 0.0, 0.45);
        for (world, values) in [("real", &arrivals_real), ("simulated", &arrivals_simulated)] {
            let top = peak(values);
            let at_peak = values.iter().position(|value| *value == Some(top)).expect("a peak");
            let after: Vec<f64> = values[at_peak + 2..at_peak + 12].iter().flatten().copied().collect();
            let mean = after.iter().sum::<f64>() / after.len().max(1) as f64;
            assert!(mean < top / 10.0, "{world}: new arrivals after the burst {mean:.2} a second, peak {top:.2}");
        }
    });
}

/// Behind a real gateway, as the operator deploys it: one queue within a 3 s budget in
/// front of the pods, 429 with `Retry-After` for a request whose expected wait is over
/// it, 503 for one whose budget runs out in the queue, and the clients back after
/// 1–1.5× the `Retry-After` they were given. The gateway's own inputs of `decide` (its
/// queue, its oldest request, the clients it sent away, the new arrivals) must agree
/// with the simulated gateway's.
#[test]
fn the_simulator_reads_what_the_operator_reads_behind_a_real_gateway() {
    run_alone(async {
        let fleet = Fleet::start(true).await;
        let gateway = fleet.gateway.clone().expect("started with a gateway");
        let real = replay(&Front::Gateway(gateway.clone()), &fleet.source, fleet.photo.clone()).await;
        let service_seconds = fleet.service_seconds().await;
        let (refused, per_image, retries) = tokio::task::spawn_blocking(move || {
            let text = metrics_text(&gateway);
            let retries = series_total(&text, gateway_metrics::UPSTREAM_RETRIES_TOTAL);
            (gateway_refusals(&text), series_total(&text, gateway_metrics::SECONDS_PER_IMAGE), retries)
        })
        .await
        .unwrap();
        let (simulated, simulated_refusals) = simulate(&real.sent, service_seconds, Routing::Gateway);

        eprintln!(
            "service time {service_seconds:.3} s, the real gateway's estimate {per_image:.3} s; \
             refusals: real {refused}, simulated {simulated_refusals}; {}",
            lateness(&real.sent)
        );
        let paired = Paired::new(
            real.samples,
            simulated,
            &[
                ("pods' depth", |q| Some(q.queue_depth)),
                ("gateway depth", |q| Some(q.gateway_queue_depth)),
                ("gateway oldest", |q| Some(q.gateway_oldest_queued_age_seconds)),
                ("clients away", |q| Some(q.deferred_requests)),
                ("new arrivals", |q| Some(q.new_arrivals_per_second)),
                ("latest arrivals", |q| q.gateway_latest_arrivals_per_second),
                ("inflow", |q| Some(q.gateway_inflow_per_second)),
                ("sustained", |q| Some(q.sustained_admitted_per_second)),
            ],
        );

        // Where the burst stops being admitted to the queue and starts being sent away
        // hangs on each gateway's running estimate of the time per image: the budget
        // holds 2 pods × 3 s ÷ 0.15 s ≈ 40 of the burst, and each tenth more on the
        // estimate sends about four more away. The real gateway times the whole
        // exchange with a pod, on two cores shared with the burst's hundred
        // connections; the simulated one is given the pods' mean inference time. Here
        // the two agree (four runs: the real estimate within 2 % of the mean, 37-38
        // queued at most against 37, 31-32 clients away against 32); on a busier
        // machine the exchange's share grows, so the checks that hang on that boundary
        // allow a fifth of the burst across it. The mean counts the burst's runs, the
        // estimate after the quiet tail mostly the tail's: with another process keeping
        // a core busy throughout, the burst's runs slow the most and the estimate ended
        // at 0.74-0.79 of the mean, so it is held within half to twice of it.
        assert!(
            (0.5 * service_seconds..=2.0 * service_seconds).contains(&per_image),
            "the real gateway's estimate, {per_image:.3} s per image, is the pods' inference time \
             ({service_seconds:.3} s) and an exchange's overhead"
        );
        let boundary = f64::from(BURST_IMAGES) / 5.0;

        // The simulated pods never turn the gateway away: it sends each at most as many
        // requests as it has places. Nor may the real ones: a pod frees a place before
        // its answer leaves, so the request the gateway sends on that answer finds it
        // free. (A pod that freed it a moment after, on a loaded machine, turned the
        // gateway away a few times a burst; the request went back to the head of the
        // queue and the pod was passed over for a moment, a wait the simulator does not
        // have.)
        assert_eq!(retries, 0.0, "requests the real gateway had to send again");

        // Refusals: beyond the boundary, when each refused client comes back is a random
        // draw, different in the two worlds: the totals agree within a third more.
        within("429 and 503 answers in total", refused, simulated_refusals as f64, boundary, 0.34);

        // The gateway's queue: each side admits a request while its expected wait fits
        // the budget, from its own running estimate of the time per image (the runs on
        // a pod divided by the requests it held), so how far the queue fills follows
        // that estimate. The real estimate is the simulated one and an exchange's
        // overhead, so the real queue peaks at most at the simulated one's and the
        // boundary's allowance; how far below it can peak follows how loaded the cores
        // were in the burst (a fifth of it and more on CI's two cores), so that side is
        // held by the sum below rather than here.
        let (depth_real, depth_simulated) = paired.both(|q| Some(q.gateway_queue_depth));
        let (depth_real_peak, depth_simulated_peak) = (peak(&depth_real), peak(&depth_simulated));
        assert!(
            depth_real_peak <= depth_simulated_peak + boundary,
            "peak gateway queue depth: real {depth_real_peak}, simulated {depth_simulated_peak}: the real gateway \
             admitted more than its stricter estimate allows"
        );

        // What the burst left at the gateway, queued or sent away, does not hang on where
        // that boundary falls: a request not admitted to the queue is a client away.
        // Sample by sample, queue and clients away together peak alike in both worlds,
        // within what the pods drain in one scrape interval (the samples fall at another
        // moment of the drain in each world) and a tenth.
        let (away_real, away_simulated) = paired.both(|q| Some(q.deferred_requests));
        let held = |depth: &[Option<f64>], away: &[Option<f64>]| -> Vec<Option<f64>> {
            depth.iter().zip(away).map(|(depth, away)| Some((*depth)? + (*away)?)).collect()
        };
        let drained_per_scrape = f64::from(PODS) * SCRAPE_SECONDS as f64 / service_seconds;
        within(
            "peak of the burst held at the gateway, queued or sent away",
            peak(&held(&depth_real, &away_real)),
            peak(&held(&depth_simulated, &away_simulated)),
            drained_per_scrape,
            0.1,
        );

        // Its oldest request waits at most the budget in both; the peaks agree within a
        // scrape interval plus a quarter.
        let (oldest_real, oldest_simulated) = paired.both(|q| Some(q.gateway_oldest_queued_age_seconds));
        for (world, oldest) in [("real", &oldest_real), ("simulated", &oldest_simulated)] {
            let limit = (GATEWAY_MAX_WAIT_SECONDS + SCRAPE_SECONDS) as f64;
            assert!(peak(oldest) <= limit, "{world} gateway's oldest request waited over its budget");
        }
        within("peak gateway oldest age", peak(&oldest_real), peak(&oldest_simulated), SCRAPE_SECONDS as f64, 0.25);

        // The pods behind it are kept full through the burst in both: the peaks agree
        // within one image a pod.
        let (pods_real, pods_simulated) = paired.both(|q| Some(q.queue_depth));
        within("peak pods' queue depth", peak(&pods_real), peak(&pods_simulated), f64::from(PODS), 0.0);

        // The clients sent away: both worlds count them from within two samples of each
        // other (the burst's first refusals fall either side of a scrape), and the peaks
        // agree within the boundary's allowance and a little under half.
        let real_span = span(&away_real).expect("the real gateway sent clients away");
        let simulated_span = span(&away_simulated).expect("the simulated gateway sent clients away");
        within("clients away: first sample", real_span.0 as f64, simulated_span.0 as f64, 2.0, 0.0);
        within("clients away: peak", peak(&away_real), peak(&away_simulated), boundary, 0.45);

        // New arrivals: the burst's hundred images in 2 s read as the same peak within a
        // third (how many returns fall due in the same window differs); before it, the
        // steady image every 2 s reads as 0.5 a second in both, within a quarter.
        let (arrivals_real, arrivals_simulated) = paired.both(|q| Some(q.new_arrivals_per_second));
        within("peak new arrivals", peak(&arrivals_real), peak(&arrivals_simulated), 0.0, 0.34);
        steady_before_burst("new arrivals before the burst", &arrivals_real, &arrivals_simulated);

        // Latest arrivals (every request over the last two scrapes, returns included):
        // the burst's peak agrees within a third, the steady image every 2 s reads 0.5 a
        // second before it within a quarter, and the burst leaves the window within five
        // samples of each other: the first sample after the peak from which the reading
        // stays below a fifth of the peak. The clients the burst sent away come back a
        // second or two later and read in the window too (up to half the peak), so the
        // first dip below a fifth hangs on whether a scrape falls in the gap between the
        // burst's last requests and the first returns: in one world and not the other,
        // three samples apart in one run. The moment the burst and its returns have left
        // the window does not, so much, but on a machine loaded by other tests the real
        // clients' last returns came up to a few seconds after the simulated ones (46 s
        // against 43 s in one run, 42 against 38 in another).
        let (latest_real, latest_simulated) = paired.both(|q| q.gateway_latest_arrivals_per_second);
        within("peak latest arrivals", peak(&latest_real), peak(&latest_simulated), 0.0, 0.34);
        steady_before_burst("latest arrivals before the burst", &latest_real, &latest_simulated);
        let burst_gone = |values: &[Option<f64>]| {
            let top = peak(values);
            let at_peak = values.iter().position(|value| *value == Some(top)).expect("a peak");
            let last_above = values.iter().rposition(|value| value.is_some_and(|value| value >= top / 5.0));
            (last_above.expect("the peak is above a fifth of itself").max(at_peak) + 1) as f64
        };
        within(
            "the burst gone from the latest arrivals",
            burst_gone(&latest_real),
            burst_gone(&latest_simulated),
            5.0,
            0.0,
        );

        // The inflow (new arrivals over the longer rate window, the clients due back over
        // the same): the burst's hundred images read over the window peak alike within a
        // third, as the new arrivals do, and the steady image every 2 s reads 0.5 a
        // second before it within a quarter.
        let (inflow_real, inflow_simulated) = paired.both(|q| Some(q.gateway_inflow_per_second));
        within("peak inflow", peak(&inflow_real), peak(&inflow_simulated), 0.0, 0.34);
        steady_before_burst("inflow before the burst", &inflow_real, &inflow_simulated);
        // What the policy reads it for: once the burst has left the window (two seconds
        // after its last image, a window and two scrapes more), the steady image every
        // 2 s, while the clients it sent away come back and fall due. How many of them
        // fall either side of a sample differs between the worlds (a second apart, one
        // read -1.4 and the other 2.3 a second at one sample), so the mean over the rest
        // of the steady traffic is held to the 0.5 a second within a quarter in each.
        let window = Windows::for_scrape_interval(Duration::from_secs(SCRAPE_SECONDS)).inflow().as_secs_f64();
        let after = (LEAD_SECONDS + 27.0 + window + 2.0) as usize..(LEAD_SECONDS + 88.0) as usize;
        for (world, inflow) in [("real", &inflow_real), ("simulated", &inflow_simulated)] {
            let read: Vec<f64> = inflow[after.clone()].iter().flatten().copied().collect();
            let mean = read.iter().sum::<f64>() / read.len().max(1) as f64;
            within(&format!("{world} inflow after the burst left its window"), 0.5, mean, 0.25, 0.0);
        }

        // Sustained admissions: while the gateway holds the burst, the pods admit as fast
        // as they serve, which is capacity, not demand; both worlds leave those moments
        // out, and at the end (the long window holds the whole trace) read the steady
        // image every 2 s within a fifth, as in front of the pods alone.
        let (sustained_real, sustained_simulated) = paired.both(|q| Some(q.sustained_admitted_per_second));
        within("sustained admissions", final_value(&sustained_real), final_value(&sustained_simulated), 0.05, 0.2);
    });
}

/// The gateway's refusals in its `/metrics` text: its `requests_total` with the
/// outcomes that send a client away (429 and 503).
fn gateway_refusals(text: &str) -> f64 {
    let series = |outcome: &str| {
        format!(r#"{}{{{}="{outcome}"}}"#, gateway_metrics::REQUESTS_TOTAL, gateway_metrics::OUTCOME_LABEL)
    };
    gateway_metrics::REFUSED_OUTCOMES.iter().map(|outcome| series_total(text, &series(outcome))).sum()
}

/// A server's `/metrics` text.
fn metrics_text(server: &str) -> String {
    reqwest::blocking::get(format!("{server}/metrics")).unwrap().text().unwrap()
}

/// The sum of the lines of a `/metrics` text for `series` (a name and its labels).
fn series_total(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(series))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
