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

    /// Whether retrying cannot help until something changes: the apiserver refused the
    /// request itself (a 4xx: invalid, forbidden, not found), rather than failing to answer
    /// or asking to come back (timeouts, conflicts, throttling, 5xx).
    pub fn is_refusal(&self) -> bool {
        match self {
            Error::Kube { source, .. } => match source.as_ref() {
                kube::Error::Api(status) => {
                    (400..500).contains(&status.code) && ![408, 409, 429].contains(&status.code)
                }
                _ => false,
            },
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_with(code: u16) -> Error {
        let status = kube::core::Status::failure("refused", "Invalid").with_code(code);
        Error::kube("apply", "Deployment shop/x")(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn only_the_apiservers_own_refusals_are_final() {
        assert!(refused_with(422).is_refusal());
        assert!(refused_with(403).is_refusal());
        for transient in [408, 409, 429, 500, 503] {
            assert!(!refused_with(transient).is_refusal(), "{transient}");
        }
        assert!(!Error::Connect("connection refused".into()).is_refusal());
    }
}
