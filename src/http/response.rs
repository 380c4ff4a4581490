//! Response heads: parsing what a CDN endpoint answers, and writing what a viewer gets.

use bytes::{BufMut, Bytes, BytesMut};

use super::{find_header_end, reason_phrase, trim_ascii, HttpError};

/// Largest upstream response head accepted.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most upstream header fields accepted.
const MAX_RESPONSE_HEADERS: usize = 96;

/// Upstream headers passed through to viewers unchanged (lowercase names).
const PASSTHROUGH: &[&str] = &[
    "content-type",
    "etag",
    "last-modified",
    "cache-control",
    "expires",
    "access-control-allow-origin",
    "access-control-expose-headers",
    "access-control-allow-credentials",
    "timing-allow-origin",
    "content-encoding",
    "vary",
    "location",
];

/// How an upstream response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (204, 304, 1xx, or an answer to HEAD).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (HTTP/1.0 style).
    UntilClose,
}

/// A parsed upstream response head: what the cache keeps and passes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Whether the upstream connection can be reused after this response.
    pub keep_alive: bool,
    /// How the body is delimited.
    pub body: BodyKind,
    /// The passed-through header fields, rendered as `Name: value\r\n` lines.
    pub passthrough: Bytes,
    /// `ETag`, if any.
    pub etag: Option<String>,
    /// `Last-Modified`, if any.
    pub last_modified: Option<String>,
    /// `Cache-Control: max-age` (or `s-maxage`, which wins) in seconds.
    pub max_age: Option<u64>,
    /// `Cache-Control: no-store` or `private`: serve the waiting viewers, keep nothing.
    pub no_store: bool,
}

/// Parses an upstream response head from the start of `buf`: `Ok(None)` until complete.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let end = match find_header_end(buf, MAX_RESPONSE_HEAD) {
        Some(e) => e,
        None if buf.len() > MAX_RESPONSE_HEAD => return Err(HttpError::new(502, "upstream head too large")),
        None => return Ok(None),
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let consumed = match resp.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(HttpError::new(502, "malformed upstream head")),
    };
    let status = resp.code.unwrap_or(0);
    if !(100..=599).contains(&status) {
        return Err(HttpError::new(502, "bad upstream status"));
    }
    let minor = resp.version.unwrap_or(1);
    let mut keep_alive = minor == 1;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te_seen = false;
    let mut pass = BytesMut::new();
    let mut head = ResponseHead {
        status,
        keep_alive,
        body: BodyKind::Empty,
        passthrough: Bytes::new(),
        etag: None,
        last_modified: None,
        max_age: None,
        no_store: false,
    };
    let mut s_maxage = None;
    for h in resp.headers.iter() {
        let name = h.name;
        let value = trim_ascii(h.value);
        if name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(HttpError::new(502, "bad upstream Content-Length"))?;
            if length.is_some_and(|l| l != v) {
                return Err(HttpError::new(502, "conflicting upstream Content-Length"));
            }
            length = Some(v);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te_seen = true;
            let last = value.rsplit(|b| *b == b',').next().map(trim_ascii).unwrap_or(b"");
            chunked = last.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|b| *b == b',') {
                let t = trim_ascii(token);
                if t.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && minor == 0 {
                    keep_alive = true;
                }
            }
        }
        let lower = name.to_ascii_lowercase();
        if !PASSTHROUGH.contains(&lower.as_str()) {
            continue;
        }
        // Never pass on bytes that could split a header (httparse already refuses CR/LF).
        pass.put_slice(name.as_bytes());
        pass.put_slice(b": ");
        pass.put_slice(value);
        pass.put_slice(b"\r\n");
        let text = String::from_utf8_lossy(value).into_owned();
        match lower.as_str() {
            "etag" => head.etag = Some(text),
            "last-modified" => head.last_modified = Some(text),
            "cache-control" => {
                for directive in text.split(',') {
                    let d = directive.trim().to_ascii_lowercase();
                    if d == "no-store" || d == "private" || d == "no-cache" {
                        head.no_store = true;
                    } else if let Some(v) = d.strip_prefix("max-age=") {
                        head.max_age = v.trim_matches('"').parse().ok();
                    } else if let Some(v) = d.strip_prefix("s-maxage=") {
                        s_maxage = v.trim_matches('"').parse().ok();
                    }
                }
            }
            _ => {}
        }
    }
    if s_maxage.is_some() {
        head.max_age = s_maxage;
    }
    head.body = if status < 200 || status == 204 || status == 304 {
        BodyKind::Empty
    } else if te_seen {
        if !chunked {
            return Err(HttpError::new(502, "unsupported upstream transfer coding"));
        }
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; such a message must not be
        // reused since a peer may disagree about where it ends.
        if length.is_some() {
            keep_alive = false;
        }
        BodyKind::Chunked
    } else if let Some(l) = length {
        BodyKind::Length(l)
    } else {
        keep_alive = false;
        BodyKind::UntilClose
    };
    head.keep_alive = keep_alive;
    head.passthrough = pass.freeze();
    Ok(Some((head, consumed)))
}

/// How a viewer response's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// `Content-Length: n` and n bytes follow.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// No length; the body ends when the connection closes (HTTP/1.0 viewers of a live object).
    Close,
    /// No body follows (HEAD, 304); `Content-Length` is still sent when known.
    NoBody(Option<u64>),
}

/// Writes a response head: status line, `Date`, `Server`, the given extra header lines,
/// framing, `Connection`, and the blank line.
pub fn write_response_head(status: u16, date: &[u8], extra: &[&[u8]], framing: BodyFraming, keep_alive: bool) -> Bytes {
    let extra_len: usize = extra.iter().map(|e| e.len()).sum();
    let mut b = BytesMut::with_capacity(128 + extra_len);
    b.put_slice(b"HTTP/1.1 ");
    put_u64(&mut b, status as u64);
    b.put_u8(b' ');
    b.put_slice(reason_phrase(status).as_bytes());
    b.put_slice(b"\r\nServer: listo\r\nDate: ");
    b.put_slice(date);
    b.put_slice(b"\r\n");
    for e in extra {
        b.put_slice(e);
    }
    match framing {
        BodyFraming::Length(n) | BodyFraming::NoBody(Some(n)) => {
            b.put_slice(b"Content-Length: ");
            put_u64(&mut b, n);
            b.put_slice(b"\r\n");
        }
        BodyFraming::Chunked => b.put_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyFraming::Close | BodyFraming::NoBody(None) => {}
    }
    if keep_alive {
        b.put_slice(b"Connection: keep-alive\r\n\r\n");
    } else {
        b.put_slice(b"Connection: close\r\n\r\n");
    }
    b.freeze()
}

fn put_u64(b: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    b.put_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nContent-Length: 10\r\nETag: \"x\"\r\nCache-Control: public, max-age=5\r\nSet-Cookie: a=b\r\n\r\n0123456789";

    #[test]
    fn parses_head() {
        let (h, n) = parse_response_head(HEAD).unwrap().unwrap();
        assert_eq!(n, HEAD.len() - 10);
        assert_eq!(h.status, 200);
        assert_eq!(h.body, BodyKind::Length(10));
        assert_eq!(h.max_age, Some(5));
        assert_eq!(h.etag.as_deref(), Some("\"x\""));
        assert!(h.keep_alive);
        let pass = std::str::from_utf8(&h.passthrough).unwrap();
        assert!(pass.contains("Content-Type: video/mp2t\r\n"));
        assert!(!pass.contains("Set-Cookie"), "cookies are not passed through");
    }

    #[test]
    fn every_split_point_gives_same_result() {
        let whole = parse_response_head(HEAD).unwrap();
        for i in 0..HEAD.len() {
            // Feeding a prefix is what an incremental reader does: it must either wait or agree.
            match parse_response_head(&HEAD[..i]).unwrap() {
                None => {}
                Some(r) => assert_eq!(Some(r), whole, "prefix {i}"),
            }
        }
    }

    #[test]
    fn framing_rules() {
        let p = |s: &str| parse_response_head(s.as_bytes()).unwrap().unwrap().0;
        assert_eq!(p("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").body, BodyKind::Chunked);
        let h = p("HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(h.body, BodyKind::UntilClose);
        assert!(!h.keep_alive);
        assert_eq!(p("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n").body, BodyKind::Empty);
        assert!(!p("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n").keep_alive);
        assert!(p("HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 1\r\n\r\n").no_store);
        let both = p("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(both.body, BodyKind::Chunked);
        assert!(!both.keep_alive);
    }

    #[test]
    fn bad_heads() {
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").is_err());
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").is_err());
        assert!(parse_response_head(b"garbage\r\n\r\n").is_err());
        assert!(parse_response_head(&vec![b'a'; MAX_RESPONSE_HEAD + 1]).is_err());
    }

    #[test]
    fn writes_head() {
        let h = write_response_head(200, b"Thu, 01 Jan 1970 00:00:00 GMT", &[b"Content-Type: a\r\n"], BodyFraming::Length(42), true);
        assert_eq!(
            &h[..],
            b"HTTP/1.1 200 OK\r\nServer: listo\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nContent-Type: a\r\nContent-Length: 42\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    proptest! {
        #[test]
        fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_response_head(&input);
        }
    }
}
