//! `matte-inference fetch-model`: downloads the model over HTTPS into a file and
//! verifies its SHA-256 before anything can load it. The operator runs it as the
//! inference pod's init container, from the same image, so a pod needs no second image,
//! no shell and no public registry to fetch its model.
//!
//! The download lands in `<output>.partial` beside the target and is renamed only once
//! its digest matches, so the server never sees a partial or unverified model. Failures
//! are not retried here: Kubernetes restarts a failed init container with back-off, and
//! the last line of its log (the pod's termination message) says what went wrong.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use matte_common::fetch_model as flags;
use tokio::io::AsyncWriteExt;

pub use matte_common::fetch_model::SUBCOMMAND;

/// The flags of `matte-inference fetch-model`.
#[derive(Clone, Parser)]
#[command(name = "matte-inference fetch-model", about = "Download a model over HTTPS and verify its SHA-256")]
pub struct FetchArgs {
    /// Where the model is; https only.
    #[arg(long = flags::URL_FLAG)]
    pub url: String,
    /// Hex SHA-256 the downloaded file must have.
    #[arg(long = flags::SHA256_FLAG)]
    pub sha256: String,
    /// The file to write (its directory must exist and be writable).
    #[arg(long = flags::OUTPUT_FLAG)]
    pub output: PathBuf,
    /// Longest wait for the TCP and TLS connection.
    #[arg(long = flags::CONNECT_TIMEOUT_FLAG, default_value_t = 10)]
    pub connect_timeout_seconds: u64,
    /// Longest time for the whole download, connection included.
    #[arg(long = flags::TIMEOUT_FLAG, default_value_t = 600)]
    pub timeout_seconds: u64,
    /// The most bytes the model may have: a larger announced length is refused before
    /// anything is written, and a body without one is cut once past it.
    #[arg(long = flags::MAX_BYTES_FLAG, default_value_t = flags::DEFAULT_MAX_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_bytes: u64,
    /// PEM certificates of a private CA trusted besides the system's roots.
    #[arg(long = flags::CA_FILE_FLAG)]
    pub ca_file: Option<PathBuf>,
    /// The value of the `Authorization` header (e.g. `Bearer …`): only ever from the
    /// environment (`MATTE_MODEL_AUTHORIZATION`, which a Secret populates), never a flag
    /// that `ps` would show.
    #[arg(skip)]
    pub authorization: Option<String>,
}

/// Shows every flag but the authorization's value.
impl std::fmt::Debug for FetchArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchArgs")
            .field("url", &self.url)
            .field("sha256", &self.sha256)
            .field("output", &self.output)
            .field("connect_timeout_seconds", &self.connect_timeout_seconds)
            .field("timeout_seconds", &self.timeout_seconds)
            .field("max_bytes", &self.max_bytes)
            .field("ca_file", &self.ca_file)
            .field("authorization", &self.authorization.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The longest a download may go without a byte before it is given up: a server that
/// stalls is told from a slow link within a minute, not at the end of the whole
/// download's time-out (up to a day). A write to the disk that has not finished by then
/// is given up the same way.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a model could not be fetched; each message names the problem, never a credential.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("--url is not an https:// URL with a host (models are fetched over HTTPS only): {0}")]
    NotHttps(String),
    #[error("--url carries a user name or password: give credentials in {}", flags::AUTHORIZATION_ENV)]
    CredentialsInUrl,
    #[error("--sha256 {0:?} is not 64 lowercase hex digits")]
    BadDigest(String),
    #[error(
        "{env} (the resource's model.download.authorizationSecret) is not a valid HTTP header value: {0}",
        env = flags::AUTHORIZATION_ENV
    )]
    BadAuthorization(&'static str),
    #[error("cannot read the CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("cannot set up the HTTPS client: {0}")]
    Client(String),
    #[error("{url} answered {status}{redirected}")]
    Status { url: String, status: reqwest::StatusCode, redirected: String },
    #[error("downloading {url} failed: {reason}")]
    Transfer { url: String, reason: String },
    #[error("downloading {url} took longer than {seconds} s")]
    Timeout { url: String, seconds: u64 },
    #[error("{url} sent nothing for {} s after {received} bytes", IDLE_TIMEOUT.as_secs())]
    Stalled { url: String, received: u64 },
    #[error("{url} is larger than --max-bytes {limit} (the resource's model.download.sizeLimit)")]
    TooLarge { url: String, limit: u64 },
    #[error("{url} sent {received} bytes but announced {announced}")]
    Truncated { url: String, received: u64, announced: u64 },
    #[error(
        "sha256 mismatch for {url}: expected {expected}, got {actual} ({bytes} bytes); the model was not installed"
    )]
    DigestMismatch { url: String, expected: String, actual: String, bytes: u64 },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: a write did not finish within {} s (a stalled disk?)", IDLE_TIMEOUT.as_secs())]
    WriteStalled { path: PathBuf },
}

/// Runs the subcommand with the process's arguments from `fetch-model` on; the exit
/// code is the process's.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let mut args = FetchArgs::parse_from(args);
    args.authorization = match authorization_from(std::env::var_os(flags::AUTHORIZATION_ENV)) {
        Ok(value) => value,
        Err(error) => {
            eprintln!("matte-inference fetch-model: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("matte-inference fetch-model: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(fetch(&args));
    // A write stuck on a stalled disk holds a thread of the runtime's blocking pool:
    // the process must still exit with its error rather than wait for it.
    runtime.shutdown_background();
    match result {
        Ok(outcome) => {
            eprintln!("matte-inference fetch-model: {outcome}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("matte-inference fetch-model: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The `Authorization` header's value from the environment's: none when unset or
/// empty, without the line end a Secret made from a file keeps (`echo … > token`), and
/// refused, never silently dropped, when it is not text.
fn authorization_from(value: Option<OsString>) -> Result<Option<String>, FetchError> {
    let Some(value) = value else { return Ok(None) };
    let text = value.into_string().map_err(|_| FetchError::BadAuthorization("it is not UTF-8 text"))?;
    let text = text.trim_end_matches(['\r', '\n', ' ', '\t']);
    if text.chars().any(|c| c.is_control()) {
        return Err(FetchError::BadAuthorization("it holds a control character (a line break inside it?)"));
    }
    Ok(Some(text.to_owned()).filter(|text| !text.is_empty()))
}

/// What a successful run did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The target already held a file with the expected digest (a restarted pod).
    AlreadyPresent {
        path: PathBuf,
    },
    Downloaded {
        path: PathBuf,
        bytes: u64,
        elapsed: Duration,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::AlreadyPresent { path } => write!(f, "{} is already present and verified", path.display()),
            Outcome::Downloaded { path, bytes, elapsed } => {
                write!(f, "{} verified and installed ({bytes} bytes in {:.1} s)", path.display(), elapsed.as_secs_f64())
            }
        }
    }
}

/// Downloads `args.url` to `args.output`, verified.
pub async fn fetch(args: &FetchArgs) -> Result<Outcome, FetchError> {
    let url = checked_url(&args.url)?;
    let expected = checked_digest(&args.sha256)?;
    let shown = redacted(&url);
    if sha256_of_file(&args.output).ok().as_deref() == Some(expected.as_str()) {
        return Ok(Outcome::AlreadyPresent { path: args.output.clone() });
    }
    let client = client(args)?;
    let total = Duration::from_secs(args.timeout_seconds);
    let began = Instant::now();
    let partial = partial_path(&args.output);
    let request = Request { url, authorization: args.authorization.as_deref(), max_bytes: args.max_bytes };
    let result = tokio::time::timeout(total, download(&client, request, &partial, &shown))
        .await
        .unwrap_or_else(|_| Err(FetchError::Timeout { url: shown.clone(), seconds: args.timeout_seconds }));
    let (actual, bytes) = match result {
        Ok(done) => done,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    if actual != expected {
        let _ = std::fs::remove_file(&partial);
        return Err(FetchError::DigestMismatch { url: shown, expected, actual, bytes });
    }
    std::fs::rename(&partial, &args.output)
        .map_err(|source| FetchError::Write { path: args.output.clone(), source })?;
    Ok(Outcome::Downloaded { path: args.output.clone(), bytes, elapsed: began.elapsed() })
}

/// `operation` on the file at `path`, within the idle time-out. The disk is written off
/// the runtime's one thread (`tokio::fs`): a write that blocks (a stalled network disk)
/// must leave the time-outs running, which a blocking write on this single-threaded
/// runtime would stop, and is given up like a server that stops sending.
async fn on_disk<T>(path: &Path, operation: impl Future<Output = std::io::Result<T>>) -> Result<T, FetchError> {
    match tokio::time::timeout(IDLE_TIMEOUT, operation).await {
        Ok(result) => result.map_err(|source| FetchError::Write { path: path.to_owned(), source }),
        Err(_) => Err(FetchError::WriteStalled { path: path.to_owned() }),
    }
}

/// What to download, and how much of it at most.
struct Request<'a> {
    url: reqwest::Url,
    authorization: Option<&'a str>,
    max_bytes: u64,
}

/// Streams the body into `partial`, hashing as it goes; the digest and the length.
async fn download(
    client: &reqwest::Client,
    request: Request<'_>,
    partial: &Path,
    shown: &str,
) -> Result<(String, u64), FetchError> {
    let transfer = |error: reqwest::Error| FetchError::Transfer { url: shown.to_owned(), reason: describe(error) };
    let too_large = || FetchError::TooLarge { url: shown.to_owned(), limit: request.max_bytes };
    let Request { url, authorization, max_bytes } = request;
    let first_host = url.host_str().map(str::to_owned);
    let mut request = client.get(url);
    if let Some(value) = authorization {
        let mut value = reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| FetchError::BadAuthorization("it is not visible ASCII"))?;
        value.set_sensitive(true);
        request = request.header(reqwest::header::AUTHORIZATION, value);
    }
    // A server that takes the request and never answers is as stalled as one that
    // stops sending.
    let mut response = tokio::time::timeout(IDLE_TIMEOUT, request.send())
        .await
        .map_err(|_| FetchError::Stalled { url: shown.to_owned(), received: 0 })?
        .map_err(transfer)?;
    if !response.status().is_success() {
        // The host that answered: after a redirect (to a CDN, to object storage), the
        // first one's credentials are not what was refused.
        let redirected = if response.url().host_str() != first_host.as_deref() {
            format!(" after a redirect from {shown}; the Authorization header is not sent to another host")
        } else {
            String::new()
        };
        return Err(FetchError::Status { url: redacted(response.url()), status: response.status(), redirected });
    }
    let announced = response.content_length();
    if announced.is_some_and(|length| length > max_bytes) {
        return Err(too_large());
    }
    let mut file = on_disk(partial, tokio::fs::File::create(partial)).await?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut received = 0u64;
    let stalled = |received| FetchError::Stalled { url: shown.to_owned(), received };
    loop {
        let next = tokio::time::timeout(IDLE_TIMEOUT, response.chunk()).await.map_err(|_| stalled(received))?;
        let Some(chunk) = next.map_err(transfer)? else { break };
        received += chunk.len() as u64;
        if received > max_bytes {
            return Err(too_large());
        }
        digest.update(&chunk);
        on_disk(partial, file.write_all(&chunk)).await?;
    }
    on_disk(partial, file.flush()).await?;
    on_disk(partial, file.sync_all()).await?;
    if let Some(announced) = announced
        && announced != received
    {
        return Err(FetchError::Truncated { url: shown.to_owned(), received, announced });
    }
    Ok((hex(digest.finish().as_ref()), received))
}

fn client(args: &FetchArgs) -> Result<reqwest::Client, FetchError> {
    let mut builder = reqwest::Client::builder()
        .https_only(true)
        .connect_timeout(Duration::from_secs(args.connect_timeout_seconds))
        .user_agent(concat!("matte-inference/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &args.ca_file {
        let ca_error = |reason: String| FetchError::CaFile { path: path.clone(), reason };
        let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(describe(e)))?;
        if certificates.is_empty() {
            return Err(ca_error("no PEM certificate in it".into()));
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().map_err(|e| FetchError::Client(describe(e)))
}

fn checked_url(text: &str) -> Result<reqwest::Url, FetchError> {
    // Neither the URL nor the parser's words about it are shown: either may hold a token.
    let url = reqwest::Url::parse(text).map_err(|error| FetchError::NotHttps(error.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FetchError::CredentialsInUrl);
    }
    if url.scheme() != "https" || url.host().is_none() {
        return Err(FetchError::NotHttps(format!("its scheme is {:?}", url.scheme())));
    }
    Ok(url)
}

fn checked_digest(text: &str) -> Result<String, FetchError> {
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(text.to_owned())
    } else {
        Err(FetchError::BadDigest(text.to_owned()))
    }
}

/// The URL without its query, fragment or user info, which may carry tokens: what
/// messages show.
fn redacted(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// An error and its causes in one line; reqwest's with their URLs redacted (a redirect's
/// target, a signed URL of object storage, may carry a token in its query).
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let mut said = cause.to_string();
        if let Some(url) = cause.downcast_ref::<reqwest::Error>().and_then(reqwest::Error::url) {
            said = said.replace(url.as_str(), &redacted(url));
        }
        text.push_str(": ");
        text.push_str(&said);
        source = cause.source();
    }
    text
}

fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().map(OsString::from).unwrap_or_default();
    name.push(".partial");
    output.with_file_name(name)
}

fn sha256_of_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = std::io::Read::read(&mut file, &mut buffer)?;
        if read == 0 {
            return Ok(hex(digest.finish().as_ref()));
        }
        digest.update(&buffer[..read]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_with_a_host_are_accepted() {
        assert!(checked_url("https://models.example/isnet.onnx").is_ok());
        for url in ["http://models.example/isnet.onnx", "file:///models/isnet.onnx", "https://", "models.example"] {
            assert!(matches!(checked_url(url), Err(FetchError::NotHttps(_))), "{url}");
        }
    }

    #[test]
    fn a_url_with_credentials_is_refused_without_showing_them() {
        let refused = checked_url("https://me:s3cret@models.example/m.onnx").expect_err("credentials");
        assert!(matches!(refused, FetchError::CredentialsInUrl));
        assert!(!refused.to_string().contains("s3cret"), "{refused}");
        let unparsable = checked_url("https://models.example:99999/m.onnx?token=s3cret").expect_err("a bad port");
        assert!(!unparsable.to_string().contains("s3cret"), "{unparsable}");
    }

    #[test]
    fn the_authorization_loses_a_files_line_end_and_is_refused_when_it_is_not_text() {
        let from = |value: &str| authorization_from(Some(OsString::from(value)));
        assert_eq!(from("Bearer abc\n").expect("trimmed"), Some("Bearer abc".to_owned()));
        assert_eq!(from("Bearer abc\r\n").expect("trimmed"), Some("Bearer abc".to_owned()));
        assert_eq!(from("").expect("empty"), None);
        assert_eq!(authorization_from(None).expect("unset"), None);
        let inner = from("Bearer a\nb").expect_err("a line break inside");
        assert!(inner.to_string().contains("MATTE_MODEL_AUTHORIZATION"), "{inner}");
        assert!(!inner.to_string().contains("Bearer"), "never the value: {inner}");
        use std::os::unix::ffi::OsStringExt;
        let not_text = authorization_from(Some(OsString::from_vec(vec![0x42, 0xff, 0xfe])));
        assert!(matches!(not_text, Err(FetchError::BadAuthorization(_))));
    }

    #[test]
    fn the_arguments_debug_without_the_authorization() {
        let mut args =
            FetchArgs::parse_from(["fetch-model", "--url", "https://x/m", "--sha256", "a", "--output", "/m"]);
        args.authorization = Some("Bearer s3cret".into());
        let shown = format!("{args:?}");
        assert!(!shown.contains("s3cret") && shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn digests_are_64_lowercase_hex_digits() {
        assert!(checked_digest(&"ab".repeat(32)).is_ok());
        for digest in ["AB".repeat(32), "ab".repeat(31), "zz".repeat(32), String::new()] {
            assert!(matches!(checked_digest(&digest), Err(FetchError::BadDigest(_))), "{digest}");
        }
    }

    #[test]
    fn messages_never_show_the_query_or_user_info() {
        let url = reqwest::Url::parse("https://user:secret@models.example/m.onnx?token=abc#x").expect("a URL");
        assert_eq!(redacted(&url), "https://models.example/m.onnx");
    }

    #[test]
    fn the_partial_file_sits_beside_the_target() {
        assert_eq!(partial_path(Path::new("/models/model.onnx")), Path::new("/models/model.onnx.partial"));
    }

    #[test]
    fn sha256_matches_the_known_digest_of_abc() {
        let dir = std::env::temp_dir().join(format!("matte-fetch-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("abc");
        std::fs::write(&file, b"abc").expect("write");
        let digest = sha256_of_file(&file).expect("hash");
        assert_eq!(digest, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let _ = std::fs::remove_dir_all(dir);
    }
}
