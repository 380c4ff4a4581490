//! HTTP/1.1 wire pieces shared by the viewer side (`user`) and the CDN side (`upstream`):
//! request and response heads (parsed with `httparse`), chunked coding, response heads written.

mod chunked;
mod request;
mod response;

pub use chunked::ChunkedDecoder;
pub use request::{parse_request, Method, Request, RequestLimits};
pub use response::{parse_response_head, write_response_head, BodyFraming, BodyKind, ResponseHead};

/// An HTTP error: the status to answer with and a short reason for logs and bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {reason}")]
pub struct HttpError {
    /// The status code the peer gets (400, 405, 414, 431, 505, 502, ...).
    pub status: u16,
    /// Why, in a few words.
    pub reason: &'static str,
}

impl HttpError {
    /// An error with the given status.
    pub fn new(status: u16, reason: &'static str) -> Self {
        HttpError { status, reason }
    }
    /// A 400 Bad Request.
    pub fn bad_request(reason: &'static str) -> Self {
        HttpError { status: 400, reason }
    }
}

/// Finds the end of a head (`\r\n\r\n`, or a bare `\n\n`) within the first `limit` bytes;
/// returns the index just past it.
pub fn find_header_end(buf: &[u8], limit: usize) -> Option<usize> {
    let window = &buf[..buf.len().min(limit)];
    // Jump from line feed to line feed (memchr is vectorised) instead of testing every byte.
    let mut from = 0;
    while let Some(off) = memchr::memchr(b'\n', &window[from..]) {
        let i = from + off;
        if i >= 1 && window[i - 1] == b'\n' {
            return Some(i + 1);
        }
        if i >= 2 && window[i - 1] == b'\r' && window[i - 2] == b'\n' {
            return Some(i + 1);
        }
        from = i + 1;
    }
    None
}

/// The reason phrase for a status code the node may send.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Lowercase ASCII trim of a header value.
pub(crate) fn trim_ascii(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &v[start..end]
}

/// Compares two byte strings (secrets such as bearer tokens) in time that depends only on the
/// longer length: every byte is looked at even after a difference, and a length mismatch still
/// does the full work.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff: usize = a.len() ^ b.len();
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_end() {
        assert_eq!(find_header_end(b"GET / HTTP/1.1\r\n\r\nX", 100), Some(18));
        assert_eq!(find_header_end(b"GET / HTTP/1.1\n\nX", 100), Some(16));
        assert_eq!(find_header_end(b"GET / HTTP/1.1\r\n", 100), None);
        assert_eq!(find_header_end(b"GET / HTTP/1.1\r\n\r\n", 10), None);
    }
}

