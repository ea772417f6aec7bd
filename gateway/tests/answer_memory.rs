//! What the gateway holds for an answer on its way from a pod to a client that has
//! stopped reading it: the client's connection (its read side and what it has taken of
//! the answer) and the connection to the pod the answer comes on. Every answer in
//! flight has a client connection of its own, so the operator's connection limit
//! counts both, `matte_common::memory::GATEWAY_CONNECTION_BYTES` a connection.
//! Counted by this test binary's allocator: live bytes, answers held, against before
//! they were asked for. The pod is a loopback server of this test's that allocates
//! nothing per answer, so that only the gateway's bytes are counted.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use matte_common::memory::{CONNECTION_BYTES, GATEWAY_CONNECTION_BYTES, MAX_HEAD_BYTES};
use matte_e2e::counting_allocator::{Counting, settled_allocation};
use matte_e2e::stalled_readers::stalled_readers;
use support::Gateway;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ANSWERS: usize = 64;
/// Answers asked for one after the other: more than the buffers for answers hold.
const ONE_AT_A_TIME: usize = 8;
/// Far more than the kernel's socket buffers take on loopback, so that the
/// connections' own buffers fill.
const ANSWER_BYTES: usize = 64 << 20;

/// A pod that is always ready and answers every request with [`ANSWER_BYTES`] of
/// zeros, as fast as it is taken, on a thread of its own per connection; its reads and
/// writes use buffers of fixed size off the heap.
fn endless_pod() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer(stream));
        }
    });
    address
}

/// Reads one request's head and answers it.
fn answer(mut stream: TcpStream) {
    let mut head = [0u8; 2 * MAX_HEAD_BYTES as usize];
    let mut read = 0;
    while !head[..read].windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut head[read..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => read += n,
        }
        if read == head.len() {
            return;
        }
    }
    let probe = head.starts_with(b"GET ");
    let length = if probe { 0 } else { ANSWER_BYTES };
    let status =
        format!("HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n");
    if stream.write_all(status.as_bytes()).is_err() {
        return;
    }
    let zeros = [0u8; 16384];
    let mut left = length;
    while left > 0 {
        let piece = left.min(zeros.len());
        if stream.write_all(&zeros[..piece]).is_err() {
            return;
        }
        left -= piece;
    }
}

/// What a gateway with `buffers` bytes of buffers holds for the answers of the clients
/// `ask` connects (given the address and the request), which read none of them, beyond
/// what it held before they were asked for; and its metrics then.
fn held_for_unread_answers(buffers: usize, ask: impl FnOnce(&str, &[u8]) -> Vec<TcpStream>) -> (usize, String) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pod = endless_pod();
    let capacity = ANSWERS.to_string();
    // Clients that read nothing keep their connections for the whole measure.
    let buffers = buffers.to_string();
    let flags = [
        "--upstream",
        &pod,
        "--upstream-capacity",
        &capacity,
        "--write-timeout-seconds",
        "120",
        "--max-buffered-bytes",
        &buffers,
    ];
    let gateway = runtime.block_on(Gateway::start(&flags));
    let address = gateway.base.trim_start_matches("http://").to_owned();
    // Ready once the pod's first probe is answered.
    let ready_by = Instant::now() + Duration::from_secs(30);
    while reqwest::blocking::get(gateway.url("/readyz")).ok().map(|answer| answer.status().as_u16()) != Some(200) {
        assert!(Instant::now() < ready_by, "the gateway did not turn ready");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A head near the limit, so that the client's connection reads as much as it may.
    let padding = "a".repeat(MAX_HEAD_BYTES as usize - 2048);
    let request = format!(
        "POST /v1/remove HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\nContent-Length: 1\r\nX-Padding: {padding}\r\n\r\nx"
    );
    let before = settled_allocation();
    let clients = ask(&address, request.as_bytes());
    let held = settled_allocation().saturating_sub(before);
    let metrics = reqwest::blocking::get(gateway.url("/metrics")).unwrap().text().unwrap();
    drop(clients);
    drop(gateway);
    runtime.shutdown_timeout(Duration::from_secs(1));
    (held, metrics)
}

/// How many answers went on to their clients `relay`ed so (`taken_off_the_pod`, `streamed`).
fn relayed(metrics: &str, relay: &str) -> f64 {
    let series = format!(r#"matte_gateway_answers_total{{relay="{relay}"}} "#);
    metrics.lines().find_map(|line| line.strip_prefix(series.as_str())?.parse().ok()).unwrap_or(0.0)
}

/// Streamed, each answer an unread client holds is within a connection's allowance;
/// taken off their pods into the buffers (as many as their half for answers holds, the
/// rest streamed), the answers held whole are within that half beside the connections'
/// allowance, though their clients read none of them.
#[test]
fn answers_their_clients_stop_reading_hold_no_more_than_the_buffers_and_their_connections_allowance() {
    let allowance = GATEWAY_CONNECTION_BYTES as usize;
    // Buffers too small for any answer to be taken off its pod: every answer is passed
    // on as it comes.
    let (held, metrics) =
        held_for_unread_answers(ANSWER_BYTES, |address, request| stalled_readers(address, request, ANSWERS));
    assert_eq!(relayed(&metrics, "streamed"), ANSWERS as f64, "{metrics}");
    let per_answer = held / ANSWERS;
    println!(
        "{ANSWERS} streamed answers of {} MiB their clients do not read: {:.1} KiB each (allowance {} KiB)",
        ANSWER_BYTES >> 20,
        per_answer as f64 / 1024.0,
        allowance >> 10
    );
    // More than a client's connection alone may hold: the connection to the pod is
    // counted, or the measure says nothing of it.
    assert!(per_answer as u64 > CONNECTION_BYTES, "{per_answer} bytes an answer: nothing of the pod's connection");
    assert!(
        per_answer <= allowance,
        "{:.1} KiB an answer, over the allowance of {} KiB",
        per_answer as f64 / 1024.0,
        allowance >> 10
    );

    // Room for two answers in the half of the buffers answers may fill, and clients
    // that ask one after the other, each once the last one's answer has begun, so that
    // an answer whose room came back early would leave room for the next.
    let answers_share = 2 * ANSWER_BYTES + (4 << 20);
    let (held, metrics) = held_for_unread_answers(2 * answers_share, |address, request| {
        (0..ONE_AT_A_TIME).flat_map(|_| stalled_readers(address, request, 1)).collect()
    });
    let taken_off = relayed(&metrics, "taken_off_the_pod");
    assert!(taken_off >= 1.0, "no answer taken off its pod: {metrics}");
    let bound = answers_share + ONE_AT_A_TIME * allowance;
    println!(
        "{ONE_AT_A_TIME} answers of {} MiB their clients do not read, asked one at a time, {taken_off} of them \
         taken off their pods: {} MiB held (bound: {} MiB of buffers for answers and the connections' allowance)",
        ANSWER_BYTES >> 20,
        held >> 20,
        bound >> 20
    );
    assert!(held <= bound, "{} MiB held, over {} MiB", held >> 20, bound >> 20);
}
