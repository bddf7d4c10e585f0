//! The one table that maps what went wrong with a request to the status the
//! client receives.
//!
//! Errors caused by the client are `ClientError`s: they are answered with a
//! 4xx/5xx status, logged at info level, and never reach the application.
//! Errors raised by the application are Python exceptions, handled in
//! `wsgi::call` (500 and a traceback in the error log).

use std::fmt;

/// What was wrong with a request, by the status that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientErrorKind {
    /// 400: malformed or ambiguous framing (RFC 9112 §2.2, §6.3).
    BadRequest,
    /// 408: the head did not arrive within `--header-timeout`.
    RequestTimeout,
    /// 413: the body is larger than `--limit-request-body`.
    PayloadTooLarge,
    /// 414: the request line is longer than `--limit-request-line`.
    UriTooLong,
    /// 417: an `Expect` other than `100-continue` (RFC 9110 §10.1.1).
    ExpectationFailed,
    /// 431: too many header fields, or one too large.
    HeadersTooLarge,
    /// 501: a transfer coding this server does not implement (RFC 9112 §6.1).
    NotImplemented,
    /// 505: an HTTP major version other than 1.
    VersionNotSupported,
    /// 503: the request waited longer than `--queue-timeout` for an
    /// application thread; answered with `Retry-After` (RFC 9110 §15.6.4),
    /// before the application runs.
    Overloaded,
    /// 500: the server could not take the request in (a request body's
    /// temporary file could not be written); not the client's mistake, but
    /// answered the same way, before the application runs.
    ServerError,
}

impl ClientErrorKind {
    /// Every kind, in the order of the metrics' `kind` label values.
    pub const ALL: [ClientErrorKind; 10] = [
        ClientErrorKind::BadRequest,
        ClientErrorKind::RequestTimeout,
        ClientErrorKind::PayloadTooLarge,
        ClientErrorKind::UriTooLong,
        ClientErrorKind::ExpectationFailed,
        ClientErrorKind::HeadersTooLarge,
        ClientErrorKind::NotImplemented,
        ClientErrorKind::VersionNotSupported,
        ClientErrorKind::Overloaded,
        ClientErrorKind::ServerError,
    ];

    /// The kind's name in the metrics (`kind` label).
    pub fn label(self) -> &'static str {
        match self {
            ClientErrorKind::BadRequest => "bad_request",
            ClientErrorKind::RequestTimeout => "request_timeout",
            ClientErrorKind::PayloadTooLarge => "content_too_large",
            ClientErrorKind::UriTooLong => "uri_too_long",
            ClientErrorKind::ExpectationFailed => "expectation_failed",
            ClientErrorKind::HeadersTooLarge => "header_fields_too_large",
            ClientErrorKind::NotImplemented => "not_implemented",
            ClientErrorKind::VersionNotSupported => "version_not_supported",
            ClientErrorKind::Overloaded => "overloaded",
            ClientErrorKind::ServerError => "server_error",
        }
    }

    /// Its place in `ALL`.
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|&k| k == self).unwrap_or(0)
    }
}

/// A request the server refuses, with the reason written to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub kind: ClientErrorKind,
    pub reason: &'static str,
}

impl ClientError {
    pub const fn new(kind: ClientErrorKind, reason: &'static str) -> Self {
        ClientError { kind, reason }
    }

    pub const fn bad_request(reason: &'static str) -> Self {
        Self::new(ClientErrorKind::BadRequest, reason)
    }

    /// The status code and reason phrase of the response that answers it.
    pub fn status(&self) -> (u16, &'static str) {
        match self.kind {
            ClientErrorKind::BadRequest => (400, "Bad Request"),
            ClientErrorKind::RequestTimeout => (408, "Request Timeout"),
            ClientErrorKind::PayloadTooLarge => (413, "Content Too Large"),
            ClientErrorKind::UriTooLong => (414, "URI Too Long"),
            ClientErrorKind::ExpectationFailed => (417, "Expectation Failed"),
            ClientErrorKind::HeadersTooLarge => (431, "Request Header Fields Too Large"),
            ClientErrorKind::NotImplemented => (501, "Not Implemented"),
            ClientErrorKind::VersionNotSupported => (505, "HTTP Version Not Supported"),
            ClientErrorKind::ServerError => (500, "Internal Server Error"),
            ClientErrorKind::Overloaded => (503, "Service Unavailable"),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (code, phrase) = self.status();
        write!(f, "{code} {phrase}: {}", self.reason)
    }
}

impl std::error::Error for ClientError {}
