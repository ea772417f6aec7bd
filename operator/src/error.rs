//! What can go wrong outside a reconcile pass (connecting, serving HTTP, leader
//! election, Prometheus), each variant naming its cause; the pass's stages have their
//! own errors (`crate::reconcile`). And what counts as the apiserver refusing a request,
//! which all of them share.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach Prometheus at {url}: {reason}")]
    Prometheus { url: String, reason: String },

    #[error("Prometheus query `{query}` failed: {reason}")]
    PrometheusQuery { query: String, reason: String },

    #[error("cannot {action} {object}: {}", apiserver_said(source))]
    Kube {
        action: &'static str,
        /// `Kind namespace/name`.
        object: String,
        source: Box<kube::Error>,
    },

    #[error("cannot connect to the Kubernetes API: {0}")]
    Connect(String),

    #[error(
        "--gateway-scrape-interval-seconds ({gateway_seconds}) must not exceed --scrape-interval-seconds ({pods_seconds}): the autoscaler's windows follow the pods' interval and would miss the gateway's samples"
    )]
    ScrapeIntervals { gateway_seconds: u64, pods_seconds: u64 },

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

/// What the apiserver said, as status messages and Events tell it: its message and code
/// for an answer (kube's own text adds the answer's whole debug dump, which a
/// resource's status would show its readers), the error for a request it never
/// answered.
pub fn apiserver_said(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}

/// Whether retrying cannot help until something changes: the apiserver refused the
/// request itself (a 4xx: invalid, forbidden, not found), rather than failing to answer
/// or asking to come back (timeouts, conflicts, throttling, 5xx).
pub fn is_refusal(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => (400..500).contains(&status.code) && ![408, 409, 429].contains(&status.code),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status::failure("refused", "Invalid").with_code(code)))
    }

    #[test]
    fn an_answer_is_told_by_its_message_and_code_alone() {
        let denied =
            kube::core::Status::failure("admission webhook \"policy\" denied the request", "Forbidden").with_code(403);
        let error = Error::kube("apply", "Deployment shop/portraits")(kube::Error::Api(Box::new(denied)));
        assert_eq!(
            error.to_string(),
            "cannot apply Deployment shop/portraits: admission webhook \"policy\" denied the request (403)"
        );
    }

    #[test]
    fn only_the_apiservers_own_refusals_are_final() {
        assert!(is_refusal(&answered(422)));
        assert!(is_refusal(&answered(403)));
        for transient in [408, 409, 429, 500, 503] {
            assert!(!is_refusal(&answered(transient)), "{transient}");
        }
        let unanswered = kube::Error::Service(Box::new(std::io::Error::other("connection refused")));
        assert!(!is_refusal(&unanswered));
    }
}
