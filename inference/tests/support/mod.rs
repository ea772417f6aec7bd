//! Runs the real `matte-inference` binary on a loopback port, with the real ONNX
//! Runtime and model that `scripts/setup.sh` fetched.
#![allow(dead_code, unused_imports)] // each test file uses a different part of this module

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub fn model() -> PathBuf {
    setup_path("MATTE_MODEL")
}

/// Starts `count` POSTs of a sample PNG at once, each on its own thread; each thread
/// returns the status and the body's length.
pub fn post_concurrently(server: &Server, image: &str, count: usize) -> Vec<std::thread::JoinHandle<(u16, usize)>> {
    let photo = sample_image(image);
    (0..count)
        .map(|_| {
            let url = server.url("/v1/remove");
            let photo = photo.clone();
            std::thread::spawn(move || {
                let response =
                    blocking_client().post(url).header("content-type", "image/png").body(photo).send().unwrap();
                (response.status().as_u16(), response.bytes().unwrap().len())
            })
        })
        .collect()
}

/// A PNG whose header declares 50 000 × 50 000 pixels, in a few dozen bytes.
pub fn decompression_bomb() -> Vec<u8> {
    let mut image = image::RgbImage::new(1, 1);
    image.put_pixel(0, 0, image::Rgb([1, 2, 3]));
    let mut png = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    // IHDR's width and height sit at bytes 16..24, its CRC (over bytes 12..29) at 29..33.
    png[16..20].copy_from_slice(&50_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&50_000u32.to_be_bytes());
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in &png[12..29] {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    png[29..33].copy_from_slice(&(!crc).to_be_bytes());
    png
}

/// The process's peak and current resident memory, from /proc/<pid>/status.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub peak_mib: f64,
    pub resident_mib: f64,
}

/// Opens a raw connection with generous read and write timeouts.
pub fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.base.trim_start_matches("http://")).expect("connects");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    stream
}

/// Reads from `stream` until the end of a response head (or the connection ends),
/// returning what came; e.g. `HTTP/1.1 415 Unsupported Media Type\r\n...`.
pub fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Writes request headers for a raw-body POST to /v1/remove.
pub fn send_head(stream: &mut TcpStream, content_type: &str, content_length: usize, extra: &str) {
    let head = format!(
        "POST /v1/remove HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n\
         Content-Length: {content_length}\r\n{extra}\r\n"
    );
    stream.write_all(head.as_bytes()).expect("headers are sent");
}

pub struct Server {
    child: Child,
    pub base: String,
}

impl Server {
    /// Starts the server with `--provider cpu` and waits until it is ready.
    pub fn start(extra_args: &[&str]) -> Server {
        let model = model();
        Server::start_with_model(&model, extra_args)
    }

    pub fn start_with_model(model: &std::path::Path, extra_args: &[&str]) -> Server {
        let server = Server::spawn(model, extra_args);
        server.wait_until_ready(Duration::from_secs(180));
        server
    }

    /// Starts the server without waiting for it.
    pub fn spawn(model: &std::path::Path, extra_args: &[&str]) -> Server {
        let log_level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
        Server::spawn_with_log(model, extra_args, &log_level, Stdio::inherit())
    }

    /// Starts the server without waiting for it, its log from `level` on written to
    /// `log`.
    pub fn spawn_with_log(model: &std::path::Path, extra_args: &[&str], level: &str, log: Stdio) -> Server {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_matte-inference"))
            .args(["--model", model.to_str().expect("UTF-8 path"), "--listen", &listen])
            .args(["--provider", "cpu", "--log-format", "text"])
            .args(extra_args)
            .env("ORT_DYLIB_PATH", setup_path("ORT_DYLIB_PATH"))
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("matte-inference starts");
        Server { child, base: format!("http://{listen}") }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn memory(&self) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc status");
        let field = |name: &str| -> f64 {
            let line = status.lines().find(|line| line.starts_with(name)).unwrap_or_else(|| panic!("{name} missing"));
            let kib: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            kib / 1024.0
        };
        Memory { peak_mib: field("VmHWM:"), resident_mib: field("VmRSS:") }
    }

    /// Whether the process has exited (and with what), without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait works")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn wait_until_ready(&self, limit: Duration) {
        let started = Instant::now();
        let client = blocking_client();
        while started.elapsed() < limit {
            if let Ok(response) = client.get(self.url("/readyz")).send()
                && response.status() == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the server at {} was not ready within {limit:?}", self.base);
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit by itself, at most `limit`.
    pub fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("try_wait works") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not exit within {limit:?}");
    }

    /// The value of an unlabelled sample, or of a labelled one written in full
    /// (`matte_requests_total{outcome="ok"}`), from `/metrics`; 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let text = blocking_client().get(self.url("/metrics")).send().expect("metrics answer").text().unwrap();
        metric_value(&text, sample)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

pub fn blocking_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(300)).build().expect("client builds")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(300)).build().expect("client builds")
}

pub mod bitstreams;
#[path = "../../../tests/src/counting_allocator.rs"]
pub mod counting_allocator;
#[path = "../../../tests/src/stalled_readers.rs"]
pub mod stalled_readers;

#[path = "../../../tests/src/ports.rs"]
mod ports;
use ports::free_port;

#[path = "../../../tests/src/setup_cache.rs"]
mod setup_cache;
pub use setup_cache::{sample_image, setup_path};

#[path = "../../../tests/src/tiny_model.rs"]
mod tiny_model;
pub use tiny_model::{TinyBatch, TinyModel};

#[path = "../../../tests/src/promtool.rs"]
mod promtool;
pub use promtool::promtool_check;

/// How a [`faulty_model`] goes wrong on every real image (see `fixtures/faulty_model.py`).
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Every run fails: a loop that serves nothing but errors.
    Fail,
    /// Every run on a real image hangs, as a CUDA call that never returns would.
    Stuck,
    /// Every run hangs, the warm-up's included: the pod never turns ready.
    Hang,
    /// Every run on a real image succeeds with a mask of NaN, as a model overflowing in
    /// half precision gives.
    NotANumber,
}

/// Loads `model` in-process on the CPU provider with one intra-op thread, as the server
/// would with `extra` flags.
pub fn load_model(model: &std::path::Path, extra: &[&str]) -> matte_inference::model::Model {
    matte_inference::model::Model::load(&model_options(model, extra)).expect("the model loads")
}

/// The options [`load_model`] loads with, to change before loading.
pub fn model_options(model: &std::path::Path, extra: &[&str]) -> matte_inference::model::ModelOptions {
    use clap::Parser;
    let model = model.to_str().expect("a UTF-8 path");
    let args = ["matte-inference", "--model", model, "--provider", "cpu", "--intra-threads", "1"];
    let config = matte_inference::config::Config::parse_from(args.iter().chain(extra));
    matte_inference::server::model_options(&config, setup_path("ORT_DYLIB_PATH"))
}

/// An input for `model` whose every value depends on `seed`, as unlike another seed's
/// as it gets.
pub fn varied_input(model: &matte_inference::model::Model, seed: u32) -> Vec<f32> {
    let values = model.shape().preprocess.input_values();
    (0..values)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed * 977) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

/// A tiny model that passes its warm-up and then goes wrong on every real image.
pub fn faulty_model(fault: Fault) -> TinyModel {
    let mode = match fault {
        Fault::Fail => "fail",
        Fault::Stuck => "stuck",
        Fault::Hang => "hang",
        Fault::NotANumber => "nan",
    };
    let path = std::env::temp_dir().join(format!("matte-{mode}-{}.onnx", std::process::id()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/faulty_model.py");
    let status = Command::new(setup_path("MATTE_PYTHON")).arg(script).arg(mode).arg(&path).status().unwrap();
    assert!(status.success(), "generating the {mode} model failed");
    TinyModel { path }
}

/// A PNG of random pixels: it does not compress, so its cut-out, and the answer, are
/// as large as its pixels.
pub fn noisy_png(width: u32, height: u32) -> Vec<u8> {
    let mut state = 0x2545_F491_u32;
    let image = image::RgbImage::from_fn(width, height, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [r, g, b, _] = state.to_le_bytes();
        image::Rgb([r, g, b])
    });
    let mut png = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    png
}

/// `command`'s output, its process killed and the test failed if it runs past `limit`:
/// a regression that hangs fails instead of holding CI. Its output is read as it comes,
/// so that a full pipe never holds it.
pub fn output_within(mut command: Command, limit: Duration) -> std::process::Output {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("the command starts");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("piped")));
    let stderr = read_all(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("its status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (stdout.join().expect("stdout read"), stderr.join().expect("stderr read"));
    std::process::Output { status, stdout, stderr }
}
