//! Everything that can go wrong, each variant naming its cause.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach Prometheus at {url}: {reason}")]
    Prometheus { url: String, reason: String },

    #[error("Prometheus query `{query}` failed: {reason}")]
    PrometheusQuery { query: String, reason: String },

    #[error("cannot {action} {object}: {source}")]
    Kube {
        action: &'static str,
        /// `Kind namespace/name`.
        object: String,
        source: Box<kube::Error>,
    },

    #[error("cannot connect to the Kubernetes API: {0}")]
    Connect(String),

    #[error("cannot serve HTTP on {address}: {source}")]
    Listen { address: std::net::SocketAddr, source: std::io::Error },
}

impl Error {
    /// A failed call to the apiserver about `object` (`Kind namespace/name`).
    pub fn kube(action: &'static str, object: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let object = object.into();
        move |source| Error::Kube { action, object, source: Box::new(source) }
    }
}
