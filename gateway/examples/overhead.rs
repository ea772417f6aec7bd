//! What the gateway adds to a request's latency on loopback: the same requests, one at
//! a time, straight to a pod and through a gateway in front of it, alternating, with
//! the tiny generated model so the pod's own time stays small.
//!
//! `cargo build -p matte-inference && cargo run -p matte-gateway --example overhead [-- REQUESTS]`

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use matte_common::paths;
use support::{Gateway, Pod, TinyModel, client, post_png, sample_image};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let requests: usize = std::env::args().nth(1).map_or(300, |n| n.parse().expect("REQUESTS is a number"));
    let model = TinyModel::generate();
    let pod = tokio::task::spawn_blocking(move || (Pod::start(&model.path, &[]), model)).await.unwrap().0;
    let gateway = Gateway::start(&["--upstream", &pod.address]).await;
    support::until_ok(&gateway.url(paths::READYZ), Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // the first probe round

    let photo = sample_image("chelsea.png");
    let client = client();
    let (direct_url, gateway_url) = (pod.url(paths::REMOVE), gateway.url(paths::REMOVE));
    let time = |url: String| {
        let (client, photo) = (client.clone(), photo.clone());
        async move {
            let started = Instant::now();
            let (status, _, _) = post_png(&client, &url, photo, &[]).await;
            assert_eq!(status, 200, "{url}");
            started.elapsed()
        }
    };
    for _ in 0..20 {
        time(direct_url.clone()).await;
        time(gateway_url.clone()).await;
    }
    let (mut direct, mut through) = (Vec::with_capacity(requests), Vec::with_capacity(requests));
    for _ in 0..requests {
        direct.push(time(direct_url.clone()).await);
        through.push(time(gateway_url.clone()).await);
    }
    direct.sort();
    through.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let quantile = |sorted: &[Duration], q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    println!("{requests} requests of {} bytes each way, one at a time, loopback", photo.len());
    println!("{:<16}{:>10}{:>10}", "", "p50 ms", "p99 ms");
    for (name, sorted) in [("direct to pod", &direct), ("through gateway", &through)] {
        println!("{name:<16}{:>10.2}{:>10.2}", ms(quantile(sorted, 0.5)), ms(quantile(sorted, 0.99)));
    }
    println!(
        "{:<16}{:>10.2}{:>10.2}",
        "added",
        ms(quantile(&through, 0.5)) - ms(quantile(&direct, 0.5)),
        ms(quantile(&through, 0.99)) - ms(quantile(&direct, 0.99))
    );
}
