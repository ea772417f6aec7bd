//! The answers to a request that no route takes, the same from a pod and from the
//! gateway. A 405's `Allow` header is axum's: the methods of the path's route, from the
//! router itself.

use axum::extract::Request;
use axum::http::StatusCode;
use matte_common::paths;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no route for {0}; try POST {remove}", remove = paths::REMOVE)]
    NotFound(String),
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
}

impl RouteError {
    pub fn not_found(request: &Request) -> Self {
        RouteError::NotFound(request.uri().path().to_owned())
    }

    pub fn method_not_allowed(request: &Request) -> Self {
        RouteError::MethodNotAllowed { method: request.method().to_string(), path: request.uri().path().to_owned() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            RouteError::NotFound(_) => StatusCode::NOT_FOUND,
            RouteError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// Stable, machine-readable name; also the `outcome` label of the servers'
    /// request counters.
    pub fn code(&self) -> &'static str {
        match self {
            RouteError::NotFound(_) => "not_found",
            RouteError::MethodNotAllowed { .. } => "method_not_allowed",
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    fn request(method: &str, path: &str) -> Request {
        Request::builder().method(method).uri(path).body(Body::empty()).unwrap()
    }

    #[test]
    fn a_refused_method_is_named_with_its_path() {
        let refused = RouteError::method_not_allowed(&request("GET", paths::REMOVE));
        assert_eq!((refused.status().as_u16(), refused.code()), (405, "method_not_allowed"));
        assert_eq!(refused.to_string(), "GET is not allowed on /v1/remove");
    }

    #[test]
    fn an_unknown_path_is_pointed_at_the_api() {
        let missing = RouteError::not_found(&request("POST", "/v2/remove?x=1"));
        assert_eq!((missing.status().as_u16(), missing.code()), (404, "not_found"));
        assert_eq!(missing.to_string(), "no route for /v2/remove; try POST /v1/remove");
    }
}
