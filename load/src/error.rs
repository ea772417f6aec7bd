use std::path::PathBuf;

/// Everything that stops a load run before it produces a report.
///
/// Failed requests are not errors here: they are counted in the report.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read image file {}", path.display())]
    ReadImage {
        path: PathBuf,
        #[source]
        source: matte_common::files::ReadError,
    },

    #[error("image file {} is empty", path.display())]
    EmptyImage { path: PathBuf },

    #[error("cannot tell the type of image file {} from its extension (expected .jpg, .jpeg, .png or .webp)", path.display())]
    UnsupportedImageType { path: PathBuf },

    #[error("no image files given")]
    NoImages,

    #[error("bad URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },

    #[error("bad query parameter {0:?}: expected KEY=VALUE")]
    BadQuery(String),

    #[error("concurrency must be at least 1")]
    ZeroConcurrency,

    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),

    #[error("a load worker stopped unexpectedly")]
    Worker(#[source] tokio::task::JoinError),
}
