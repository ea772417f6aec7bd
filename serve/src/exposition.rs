//! The Prometheus text exposition both servers answer their metrics path with.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, Registry, TextEncoder};

/// The text format's content type, the version Prometheus negotiates down to.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric of `registry` in the text format.
pub fn encode(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buffer).expect("encoding into a Vec cannot fail");
    String::from_utf8(buffer).expect("the text format is UTF-8")
}

/// `text` (from [`encode`]) as the answer to a scrape.
pub fn response(text: String) -> Response {
    let mut response = text.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

#[cfg(test)]
mod tests {
    use prometheus::IntCounter;

    use super::*;

    #[test]
    fn a_scrape_gets_the_registry_in_the_text_format() {
        let registry = Registry::new();
        let counter = IntCounter::new("matte_example_total", "An example.").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc_by(3);
        let text = encode(&registry);
        assert!(text.contains("# TYPE matte_example_total counter\nmatte_example_total 3\n"), "{text}");
        let response = response(text);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    }
}
