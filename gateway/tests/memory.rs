//! The gateway's memory stays within its stated bound under a burst of large bodies:
//! it holds at most `--max-buffered-bytes` of them, and turns the rest away with 429
//! before reading them. And the room it promises to bodies not yet arrived goes to
//! others when those bodies do not come, as do the buffers of bodies that came in part
//! and will not be whole before their budget ends. Beside the bodies, each connection
//! holds no more than `matte_common::memory::CONNECTION_BYTES`, a head at the limit
//! included (the operator sizes `--max-connections` by that and the connection to a
//! pod an answer comes on, `answer_memory.rs`).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use std::process::{Child, Command, Stdio};

use support::{Gateway, client, free_port, post_png, wait_for_ok};

const MIB: usize = 1024 * 1024;
const BODY: usize = 4 * MIB;
const BUFFERED: usize = 64 * MIB;
const BURST: usize = 64;
/// The process itself, its runtime, the connections' read buffers and allocator slack,
/// beside the bodies it holds (measured: about 20 MiB).
const PROCESS_ALLOWANCE_MIB: f64 = 64.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_large_bodies_is_held_within_the_buffer_bound() {
    // No pod listens: every admitted body stays held for the whole budget.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let buffered = BUFFERED.to_string();
    let gateway = tokio::task::spawn_blocking(move || {
        GatewayProcess::start(&["--upstream", &nowhere, "--max-buffered-bytes", &buffered, "--max-wait-seconds", "4"])
    })
    .await
    .unwrap();
    let (_, idle_mib) = gateway.memory_mib();

    // Incompressible bytes, so nothing along the way can make them smaller.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let body: Vec<u8> = (0..BODY)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let client = client();
    let requests: Vec<_> = (0..BURST)
        .map(|_| {
            let (client, url, body) = (client.clone(), gateway.url("/v1/remove"), body.clone());
            tokio::spawn(async move { post_png(&client, &url, body, &[]).await })
        })
        .collect();
    let mut peak_during = 0.0f64;
    while requests.iter().any(|request| !request.is_finished()) {
        peak_during = peak_during.max(gateway.memory_mib().1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut held, mut refused) = (0, 0);
    for request in requests {
        let (status, retry_after, body) = request.await.unwrap();
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        match status {
            // Held until the budget ran out, with no pod to take them.
            503 => {
                held += 1;
                assert_eq!(error["error"]["code"], "no_capacity");
            }
            // Refused for want of room; or admitted, its room taken back when its body
            // had not begun a second after (a busy client machine starts 64 uploads
            // slowly) and given to one that came: the room is the same either way.
            429 => {
                refused += 1;
                let code = error["error"]["code"].as_str().unwrap_or_default();
                assert!(code == "buffers_full" || code == "buffers_reclaimed", "{error}");
                assert!(retry_after.expect("Retry-After").parse::<u64>().unwrap() >= 1);
            }
            other => panic!("unexpected {other}: {error}"),
        }
    }
    let (peak_mib, _) = gateway.memory_mib();
    let bound = (BUFFERED / MIB) as f64 + PROCESS_ALLOWANCE_MIB;
    eprintln!(
        "{held} bodies of 4 MiB held, {refused} refused; gateway RSS idle {idle_mib:.0} MiB, \
         highest seen {peak_during:.0} MiB, peak (VmHWM) {peak_mib:.0} MiB, bound {bound:.0} MiB"
    );
    assert_eq!(held, BUFFERED / BODY, "exactly as many as the buffer bound allows");
    assert_eq!(refused, BURST - BUFFERED / BODY);
    assert!(peak_mib < bound, "peak RSS {peak_mib:.0} MiB is over the bound of {bound:.0} MiB");
}

/// Headers declaring a body of `length` bytes, and none of it yet.
fn declare_body(address: &str, length: usize) -> TcpStream {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST /v1/remove HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: image/png\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

/// Sends the rest of a body declared by [`declare_body`] and reads the answer's code.
fn send_body_and_read_code(mut stream: TcpStream, length: usize) -> String {
    // The gateway may answer before it has read it all: a write cut short is fine.
    let _ = stream.write_all(&vec![0u8; length]);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    code_of(&answer)
}

/// The error code of a raw HTTP answer; the answer itself when it has none, "" when
/// there is no answer.
fn code_of(answer: &[u8]) -> String {
    let answer = String::from_utf8_lossy(answer);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let start = body.find('{').unwrap_or(0);
    let error: serde_json::Value =
        serde_json::from_str(&body[start..body.rfind('}').map_or(body.len(), |end| end + 1)]).unwrap_or_default();
    error["error"]["code"].as_str().unwrap_or(&answer).to_owned()
}

/// A gateway with no pod behind it, 8 MiB of buffers, a budget of 2 s and an upload
/// grace of `grace` seconds; and its address.
async fn gateway_with_8_mib_of_buffers(grace: &str) -> (Gateway, String) {
    let nowhere = format!("127.0.0.1:{}", free_port());
    let buffered = (8 * MIB).to_string();
    let flags = ["--upstream", &nowhere, "--max-buffered-bytes", &buffered, "--max-wait-seconds", "2"];
    let gateway = Gateway::start(&[&flags[..], &["--upload-grace-seconds", grace]].concat()).await;
    let address = gateway.base.trim_start_matches("http://").to_owned();
    (gateway, address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_promised_to_bodies_that_do_not_come_goes_to_one_that_does() {
    // Two declared bodies fill the buffers; the pace's grace is long enough that only
    // giving their room away can let another request in.
    let (gateway, address) = gateway_with_8_mib_of_buffers("60").await;
    let client = client();
    let remove = gateway.url("/v1/remove");

    let declared = 4 * MIB;
    let stalled: Vec<TcpStream> = (0..2).map(|_| declare_body(&address, declared)).collect();
    let upload = || async {
        let (status, _, body) = post_png(&client, &remove, vec![0u8; MIB], &[]).await;
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (status, error["error"]["code"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(upload().await, (429, "buffers_full".to_owned()), "bodies just declared keep their room");

    // Past a second with nothing sent, one of them gives its room up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(upload().await, (503, "no_capacity".to_owned()), "admitted and held for its budget");

    let codes = tokio::task::spawn_blocking(move || {
        let mut codes: Vec<String> =
            stalled.into_iter().map(|stream| send_body_and_read_code(stream, declared)).collect();
        codes.sort();
        codes
    })
    .await
    .unwrap();
    assert_eq!(codes, ["buffers_reclaimed", "no_capacity"], "the one whose room was taken is told why");
    let metrics = client.get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("matte_gateway_requests_total{outcome=\"buffers_reclaimed\"} 1\n"), "{metrics}");
}

/// The code of the answer a client gets within `within` without sending anything
/// more, or "" if none comes.
fn code_answered_within(mut stream: TcpStream, within: Duration) -> String {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    code_of(&answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffers_of_bodies_that_cannot_be_whole_in_time_go_to_one_that_can() {
    // Two bodies sent half at once fill the buffers (each one's grows to its declared
    // length) and then stall, due by the end of the 8 s grace they are given at least:
    // 5 s later, at their pace so far, they would be whole after that.
    let (gateway, address) = gateway_with_8_mib_of_buffers("8").await;
    let client = client();

    let declared = 4 * MIB;
    let half_sent: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = declare_body(&address, declared);
            stream.write_all(&vec![0u8; declared / 2 + 1]).unwrap();
            stream
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Their buffers hold at least the half that came: the room promised beyond them is
    // not enough for a body of the whole length.
    let (status, _, body) = post_png(&client, &gateway.url("/v1/remove"), vec![0u8; declared], &[]).await;
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, error["error"]["code"].as_str().unwrap_or_default()),
        (503, "no_capacity"),
        "admitted and held for its budget (no pod listens)"
    );

    let codes = tokio::task::spawn_blocking(move || {
        let mut codes: Vec<String> =
            half_sent.into_iter().map(|stream| code_answered_within(stream, Duration::from_secs(5))).collect();
        codes.sort();
        codes
    })
    .await
    .unwrap();
    // The one cut off is told at once, without sending more; the other, stalled for
    // the grace since its bytes came, however many they were, is cut off by the pace.
    assert_eq!(codes, ["buffers_reclaimed", "upload_too_slow"]);
}

/// The `matte-gateway` binary on a loopback port, killed when dropped.
struct GatewayProcess {
    child: Child,
    base: String,
}

impl GatewayProcess {
    fn start(flags: &[&str]) -> GatewayProcess {
        let listen = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_matte-gateway"))
            .args(["--listen", &listen, "--log-format", "text", "--drain-delay-seconds", "0"])
            .args(flags)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("matte-gateway starts");
        let gateway = GatewayProcess { child, base: format!("http://{listen}") };
        wait_for_ok(&gateway.url("/readyz"), Duration::from_secs(30));
        gateway
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The value of the unlabelled series `name` on /metrics, over a connection of its own.
    fn metric(&self, name: &str) -> Option<f64> {
        let mut stream = TcpStream::connect(self.base.trim_start_matches("http://")).expect("connects");
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("sent");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("the metrics are read");
        let prefix = format!("{name} ");
        text.lines().find_map(|line| line.strip_prefix(prefix.as_str())).and_then(|value| value.trim().parse().ok())
    }

    /// Peak and current resident memory in MiB, from /proc/<pid>/status.
    fn memory_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc status");
        let field = |name: &str| -> f64 {
            let line = status.lines().find(|line| line.starts_with(name)).unwrap_or_else(|| panic!("{name} missing"));
            let kib: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            kib / 1024.0
        };
        (field("VmHWM:"), field("VmRSS:"))
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens `count` connections to `gateway`, each sent `bytes`, and returns them, open,
/// with how far the gateway's resident memory grew, in MiB, once `held` says the
/// gateway holds them and its memory has stopped growing: measured after a fixed
/// pause, a slow machine's gateway that had read few of them would pass for small.
fn holding(
    gateway: &GatewayProcess,
    count: usize,
    bytes: &[u8],
    held: impl Fn(&GatewayProcess) -> bool,
) -> (Vec<TcpStream>, f64) {
    let (_, idle_mib) = gateway.memory_mib();
    let address = gateway.base.trim_start_matches("http://").to_owned();
    let streams = (0..count)
        .map(|_| {
            let mut stream = TcpStream::connect(&address).expect("connects");
            stream.write_all(bytes).expect("sent");
            stream
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !held(gateway) {
        assert!(Instant::now() < deadline, "the gateway did not take the connections within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut held_mib = gateway.memory_mib().1;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now_mib = gateway.memory_mib().1;
        if now_mib <= held_mib + 0.1 || Instant::now() > deadline {
            break;
        }
        held_mib = now_mib;
    }
    (streams, held_mib.max(gateway.memory_mib().1) - idle_mib)
}

/// What `connections` may hold by the bound the pods' and gateways' memory counts, MiB.
fn connections_bound_mib(connections: usize) -> f64 {
    (connections as u64 * matte_common::memory::CONNECTION_BYTES) as f64 / MIB as f64
}

/// Connections the test opens, and the most the gateway serves: the rest wait in the
/// listen backlog (or a spare connection's short header timeout), holding almost nothing
/// of the gateway's.
const CONNECTIONS: usize = 400;
const MAX_CONNECTIONS: usize = 300;
/// What the process may grow by beside its connections while it holds them.
const HEADS_ALLOWANCE_MIB: f64 = 8.0;

#[test]
fn connections_holding_heads_at_the_limit_stay_within_their_bound() {
    let nowhere = format!("127.0.0.1:{}", free_port());
    let gateway = GatewayProcess::start(&[
        "--upstream",
        &nowhere,
        "--max-connections",
        &MAX_CONNECTIONS.to_string(),
        "--header-read-timeout-seconds",
        "60",
    ]);
    // A head just short of the limit, never finished: each connection holds it.
    let head = format!("POST /v1/remove HTTP/1.1\r\nHost: x\r\nX-Long: {}", "a".repeat(62 * 1024));
    let open =
        |gateway: &GatewayProcess| gateway.metric("matte_gateway_open_connections") >= Some(MAX_CONNECTIONS as f64);
    let (streams, grew) = holding(&gateway, CONNECTIONS, head.as_bytes(), open);
    let per_connection_kib = grew * 1024.0 / MAX_CONNECTIONS as f64;
    let bound_mib = connections_bound_mib(MAX_CONNECTIONS);
    println!(
        "{MAX_CONNECTIONS} connections holding 62 KiB heads: RSS +{grew:.1} MiB ({per_connection_kib:.1} KiB each), bound {bound_mib:.1} MiB"
    );
    assert!(grew <= bound_mib + HEADS_ALLOWANCE_MIB, "RSS grew {grew:.1} MiB, bound {bound_mib:.1} MiB");
    drop(streams);
}

/// Connections whose requests wait: enough that the allowance beside them is a small
/// share of what they hold.
const WAITING_CONNECTIONS: usize = 800;

#[test]
fn connections_whose_requests_wait_with_long_heads_stay_within_their_bound() {
    // No pod is ever ready: the wait is unknown, so every request is admitted and waits
    // out its budget in the queue, its connection open behind it. Its head stays
    // allocated while it waits (the headers forwarded to a pod point into it), and the
    // connection reads on beside it into a buffer of its own: about 92 KiB a connection
    // with a head just under the limit, 25 KiB with one of 8 KiB.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let gateway = GatewayProcess::start(&[
        "--upstream",
        &nowhere,
        "--max-connections",
        &WAITING_CONNECTIONS.to_string(),
        "--max-wait-seconds",
        "60",
    ]);
    let request = format!(
        "POST /v1/remove HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1\r\nX-Long: {}\r\n\r\nx",
        "a".repeat(63 * 1024)
    );
    // One connection left for reading the metrics.
    let waiting_requests = WAITING_CONNECTIONS - 1;
    let all_waiting =
        |gateway: &GatewayProcess| gateway.metric("matte_gateway_queue_depth") >= Some(waiting_requests as f64);
    let (streams, grew) = holding(&gateway, waiting_requests, request.as_bytes(), all_waiting);
    let waiting = gateway.metric("matte_gateway_queue_depth");
    let per_connection_kib = grew * 1024.0 / waiting_requests as f64;
    let bound_mib = connections_bound_mib(WAITING_CONNECTIONS);
    println!(
        "{waiting_requests} requests with 63 KiB heads waiting in the queue: RSS +{grew:.1} MiB ({per_connection_kib:.1} KiB each), bound {bound_mib:.1} MiB"
    );
    assert_eq!(waiting, Some(waiting_requests as f64), "every request waits in the queue");
    assert!(grew <= bound_mib + HEADS_ALLOWANCE_MIB, "RSS grew {grew:.1} MiB, bound {bound_mib:.1} MiB");
    drop(streams);
}
