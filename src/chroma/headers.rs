//! Which headers cross the proxy. Requests keep only what Chroma needs; responses lose the
//! hop-by-hop headers that describe one connection, not the message.
//!
//! Never logs a header value, and never forwards a credential.

use actix_web::http::header::{HeaderMap, HeaderName};

/// Request headers forwarded to Chroma: content negotiation and the user agent. Never the
/// client's credentials (`Authorization`, `X-Chroma-Token`): they are the proxy's to check, and
/// Chroma 1.x has no use for them.
const FORWARDED_REQUEST_HEADERS: &[&str] = &["content-type", "accept", "user-agent"];

/// Connection-scoped headers (RFC 9110 section 7.6.1) plus the framing the proxy redoes itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// The request headers Chroma needs, in their original order and multiplicity.
pub fn request_headers(
    headers: &HeaderMap,
) -> impl Iterator<Item = (&HeaderName, &actix_web::http::header::HeaderValue)> {
    headers.iter().filter(|(name, _)| FORWARDED_REQUEST_HEADERS.contains(&name.as_str()))
}

/// Whether a response header from Chroma is passed on to the client.
pub fn keep_response_header(name: &HeaderName) -> bool {
    !HOP_BY_HOP.contains(&name.as_str())
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    #[test]
    fn requests_keep_only_what_chroma_needs() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("content-type", "application/json"),
            ("x-chroma-token", "t"),
            ("authorization", "Bearer t"),
            ("connection", "keep-alive"),
            ("cookie", "session=1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("idempotency-key", "k"),
        ] {
            headers.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let kept: Vec<&str> = request_headers(&headers).map(|(k, _)| k.as_str()).collect();
        assert_eq!(kept, ["content-type"], "credentials never reach an instance");
    }

    #[test]
    fn responses_drop_hop_by_hop() {
        assert!(!keep_response_header(&HeaderName::from_static("transfer-encoding")));
        assert!(!keep_response_header(&HeaderName::from_static("connection")));
        assert!(keep_response_header(&HeaderName::from_static("content-type")));
    }
}
