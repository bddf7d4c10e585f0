//! The status line and header fields an application gave `start_response`,
//! validated and encoded once (`wsgi::response_head`), whatever protocol
//! then frames them.

/// The status line and header fields an application gave, validated and
/// encoded (see `wsgi::response_head`).
#[derive(Debug, Clone)]
pub struct AppHead {
    pub status: u16,
    /// The status line (`200 OK`: the code and the application's reason
    /// phrase, kept as given) followed by the `Name: value\r\n` lines.
    pub bytes: Vec<u8>,
    /// Where the status line ends in `bytes`.
    pub status_len: usize,
    pub declared_length: Option<u64>,
    pub has_date: bool,
    pub has_server: bool,
}

impl AppHead {
    pub fn status_line(&self) -> &[u8] {
        &self.bytes[..self.status_len]
    }

    pub fn fields(&self) -> &[u8] {
        &self.bytes[self.status_len..]
    }

    /// The head's bytes, kept as sent (for the access log's `{name}o` and
    /// post_request's status) until the buffer is reused for the next head.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}
