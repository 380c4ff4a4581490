//! Viewer request heads: parsing with `httparse`, the limits of a public server, and the
//! status code each malformed shape earns.

use std::mem::MaybeUninit;

use super::{find_header_end, HttpError};

/// The request methods a node answers; anything else is refused with 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`: the object's head and body.
    Get,
    /// `HEAD`: the head only.
    Head,
    /// `OPTIONS`: a CORS preflight from a browser player.
    Options,
}

/// Limits applied to every viewer request head.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest head (request line + headers + CRLFCRLF) in bytes; beyond → 431.
    pub max_head_bytes: usize,
    /// Most header fields; beyond → 431.
    pub max_headers: usize,
    /// Longest request target; beyond → 414.
    pub max_uri_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits { max_head_bytes: 8192, max_headers: 64, max_uri_bytes: 4096 }
    }
}

/// One parsed viewer request: only what the node uses, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// GET or HEAD.
    pub method: Method,
    /// The absolute path, without the query, exactly as sent (dot segments refused).
    pub path: String,
    /// The query string without `?`, if any.
    pub query: Option<String>,
    /// Minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Whether the connection may stay open after the response.
    pub keep_alive: bool,
    /// The raw `Range` header value.
    pub range: Option<String>,
    /// The raw `If-None-Match` header value.
    pub if_none_match: Option<String>,
    /// The raw `If-Modified-Since` header value.
    pub if_modified_since: Option<String>,
    /// The `Origin` header (browser players fetching cross-origin).
    pub origin: Option<String>,
    /// `Access-Control-Request-Headers` of a preflight.
    pub cors_request_headers: Option<String>,
    /// `User-Agent` (with the client address, it tells viewer sessions apart).
    pub user_agent: Option<String>,
}

impl Request {
    /// Path plus `?query` as it goes upstream.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{}", self.path, q),
            None => self.path.clone(),
        }
    }
}

/// Header slots kept on the stack; a larger `max_headers` allocates.
const STACK_HEADERS: usize = 128;

/// Parses one request head from the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((request, consumed)))` for a complete
/// head, or the error status to answer with (the connection is then closed).
pub fn parse_request(buf: &[u8], limits: &RequestLimits) -> Result<Option<(Request, usize)>, HttpError> {
    // Tolerate (and skip) empty lines before a request line, as RFC 9112 §2.2 allows.
    let mut skip = 0;
    while skip < buf.len() && (buf[skip] == b'\r' || buf[skip] == b'\n') {
        skip += 1;
        if skip > 8 {
            return Err(HttpError::bad_request("leading garbage"));
        }
    }
    let buf = &buf[skip..];
    let end = match find_header_end(buf, limits.max_head_bytes) {
        Some(end) => end,
        None => {
            if buf.len() > limits.max_head_bytes {
                return Err(too_long_error(buf, limits));
            }
            return check_partial(buf, limits).map(|_| None);
        }
    };
    // Header slots on the stack (no allocation, no initialisation) unless the limit is large.
    let mut stack = [const { MaybeUninit::<httparse::Header>::uninit() }; STACK_HEADERS];
    let mut heap: Vec<MaybeUninit<httparse::Header>>;
    let slots: &mut [MaybeUninit<httparse::Header>] = match stack.get_mut(..limits.max_headers) {
        Some(s) => s,
        None => {
            heap = (0..limits.max_headers).map(|_| MaybeUninit::uninit()).collect();
            &mut heap
        }
    };
    let mut req = httparse::Request::new(&mut []);
    let status = req.parse_with_uninit_headers(&buf[..end], slots).map_err(|e| match e {
        httparse::Error::TooManyHeaders => HttpError::new(431, "too many header fields"),
        httparse::Error::Version => version_error(buf),
        _ => HttpError::bad_request("malformed request head"),
    })?;
    let consumed = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Err(HttpError::bad_request("malformed request head")),
    };
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "OPTIONS" => Method::Options,
        _ => return Err(HttpError::new(405, "method not allowed")),
    };
    let target = req.path.unwrap_or("");
    if target == "*" {
        return Err(HttpError::bad_request("asterisk-form is not served"));
    }
    if target.len() > limits.max_uri_bytes {
        return Err(HttpError::new(414, "request target too long"));
    }
    let minor_version = req.version.unwrap_or(1);
    let (path, query) = split_target(target)?;

    let mut keep_alive = minor_version == 1;
    let mut content_length: Option<&[u8]> = None;
    let mut transfer_encoding = false;
    let mut host_count = 0;
    let mut out = Request {
        method,
        path,
        query,
        minor_version,
        keep_alive,
        range: None,
        if_none_match: None,
        if_modified_since: None,
        origin: None,
        cors_request_headers: None,
        user_agent: None,
    };
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let t = trim(token);
                if t.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && minor_version == 0 {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some_and(|c| c != h.value) {
                return Err(HttpError::bad_request("conflicting Content-Length"));
            }
            content_length = Some(h.value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("host") {
            host_count += 1;
        } else if name.eq_ignore_ascii_case("range") {
            out.range = Some(header_string(h.value)?);
        } else if name.eq_ignore_ascii_case("if-none-match") {
            out.if_none_match = Some(header_string(h.value)?);
        } else if name.eq_ignore_ascii_case("if-modified-since") {
            out.if_modified_since = Some(header_string(h.value)?);
        } else if name.eq_ignore_ascii_case("origin") {
            out.origin = Some(header_string(h.value)?);
        } else if name.eq_ignore_ascii_case("user-agent") {
            let v = trim(h.value);
            out.user_agent = Some(match std::str::from_utf8(v) {
                Ok(ua) => ua.to_owned(),
                Err(_) => String::from_utf8_lossy(v).into_owned(),
            });
        } else if name.eq_ignore_ascii_case("access-control-request-headers") {
            out.cors_request_headers = Some(header_string(h.value)?);
        }
    }
    if transfer_encoding && content_length.is_some() {
        return Err(HttpError::bad_request("both Content-Length and Transfer-Encoding"));
    }
    if transfer_encoding {
        return Err(HttpError::bad_request("a body on GET/HEAD is not accepted"));
    }
    if let Some(cl) = content_length {
        // RFC 9110 §8.6: 1*DIGIT. `u64::from_str` would also take a sign ("+0"): a value one
        // parser reads and another refuses is a smuggling shape, so only digits pass.
        let cl = std::str::from_utf8(cl)
            .ok()
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok());
        match cl {
            Some(0) => {}
            Some(_) => return Err(HttpError::bad_request("a body on GET/HEAD is not accepted")),
            None => return Err(HttpError::bad_request("invalid Content-Length")),
        }
    }
    if minor_version == 1 && host_count != 1 {
        return Err(HttpError::bad_request("HTTP/1.1 needs exactly one Host"));
    }
    if host_count > 1 {
        return Err(HttpError::bad_request("several Host fields"));
    }
    out.keep_alive = keep_alive;
    Ok(Some((out, skip + consumed)))
}

/// An incomplete head: answer early when what we have already cannot become valid.
fn check_partial(buf: &[u8], limits: &RequestLimits) -> Result<(), HttpError> {
    // The request line, if it is already complete, decides 414 / 505 / 405 before the rest.
    let line_end = buf.iter().position(|b| *b == b'\n');
    let line = match line_end {
        Some(i) => &buf[..i],
        None => buf,
    };
    let mut parts = line.split(|b| *b == b' ');
    let _method = parts.next();
    if let Some(target) = parts.next() {
        if target.len() > limits.max_uri_bytes {
            return Err(HttpError::new(414, "request target too long"));
        }
    }
    if let Some(b) = line.iter().find(|b| **b != b'\r' && (**b < 0x20 || **b == 0x7f) && **b != b'\t') {
        let _ = b;
        return Err(HttpError::bad_request("control byte in request line"));
    }
    Ok(())
}

fn too_long_error(buf: &[u8], limits: &RequestLimits) -> HttpError {
    match check_partial(buf, limits) {
        Err(e) => e,
        Ok(()) => {
            let line_len = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
            if line_len > limits.max_uri_bytes {
                HttpError::new(414, "request target too long")
            } else {
                HttpError::new(431, "request head too large")
            }
        }
    }
}

fn version_error(buf: &[u8]) -> HttpError {
    // httparse reports Version for anything but HTTP/1.0 and HTTP/1.1. A well-formed
    // "HTTP/x.y" we do not speak earns 505; any other shape is malformed.
    let line_end = buf.iter().position(|b| *b == b'\r' || *b == b'\n').unwrap_or(buf.len());
    let line = &buf[..line_end];
    // Only `method SP target SP HTTP/d.d`: a target with a space in it ("GET /a b HTTP/1.1")
    // also ends in a version-looking word, but it is a malformed line, not a version we lack.
    let parts: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    let version = parts.last().copied().unwrap_or(b"");
    let well_formed = parts.len() == 3
        && parts.iter().all(|p| !p.is_empty())
        && version.len() == 8
        && version.starts_with(b"HTTP/")
        && version[5].is_ascii_digit()
        && version[6] == b'.'
        && version[7].is_ascii_digit();
    if well_formed {
        HttpError::new(505, "HTTP version not supported")
    } else {
        HttpError::bad_request("malformed request line")
    }
}

/// Splits an origin-form (or absolute-form) target into a path and query; refuses dot segments
/// and encoded dots/slashes that could step outside a channel's prefix upstream.
fn split_target(target: &str) -> Result<(String, Option<String>), HttpError> {
    // httparse lets bytes 0x80..=0xFF through; no request-target may hold them, and the target
    // goes upstream verbatim.
    if !target.is_ascii() {
        return Err(HttpError::bad_request("non-ASCII byte in request target"));
    }
    let mut t = target;
    if let Some(rest) = t.strip_prefix("http://").or_else(|| t.strip_prefix("https://")) {
        t = match rest.find('/') {
            Some(i) => &rest[i..],
            None => "/",
        };
    }
    if !t.starts_with('/') {
        return Err(HttpError::bad_request("request target is not an absolute path"));
    }
    let t = t.split('#').next().unwrap_or("");
    let (path, query) = match t.find('?') {
        Some(i) => (&t[..i], Some(t[i + 1..].to_string())),
        None => (t, None),
    };
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2e") || lower.contains("%2f") || lower.contains("%5c") || path.contains('\\') {
        return Err(HttpError::bad_request("encoded dot or slash in path"));
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(HttpError::bad_request("dot segment in path"));
    }
    Ok((path.to_string(), query))
}

fn header_string(v: &[u8]) -> Result<String, HttpError> {
    std::str::from_utf8(trim(v))
        .map(|s| s.to_string())
        .map_err(|_| HttpError::bad_request("non-UTF-8 header value"))
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<(Request, usize)>, HttpError> {
        parse_request(s.as_bytes(), &RequestLimits::default())
    }

    fn status(s: &str) -> u16 {
        match parse(s) {
            Err(e) => e.status,
            Ok(Some(_)) => 200,
            Ok(None) => 0,
        }
    }

    #[test]
    fn simple_get() {
        let (r, n) = parse("GET /live/ch1/index.m3u8?a=1 HTTP/1.1\r\nHost: x\r\n\r\nGET").unwrap().unwrap();
        assert_eq!(n, 50);
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, "/live/ch1/index.m3u8");
        assert_eq!(r.query.as_deref(), Some("a=1"));
        assert!(r.keep_alive);
    }

    #[test]
    fn error_statuses() {
        assert_eq!(status("POST / HTTP/1.1\r\nHost: x\r\n\r\n"), 405);
        assert_eq!(status("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
        assert_eq!(status("GET / FOO/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"), 400, "space in the target is not a version problem");
        assert_eq!(status("GET / HTTP/1.1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/3.0\r\nHost: x\r\n\r\n"), 505);
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400, "missing Host");
        assert_eq!(status("GET /a/../b HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("GET /a/%2e%2e/b HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"), 400);
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(status("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"), 200);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +0\r\n\r\n"), 400, "signed length");
        assert_eq!(status("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x0\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0 0\r\n\r\n"), 400);
        assert_eq!(status("GET\0 / HTTP/1.1\r\n\r\n"), 400);
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(5000));
        assert_eq!(status(&long), 414);
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(status(&big), 431);
        let many: String = (0..70).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")), 431);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: x\r\n"), 0, "incomplete head waits");
    }

    #[test]
    fn partial_long_target_is_414_early() {
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(5000));
        assert_eq!(status(&long), 414);
    }

    #[test]
    fn keep_alive_rules() {
        let (r, _) = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!r.keep_alive);
        let (r, _) = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().unwrap();
        assert!(r.keep_alive);
        let (r, _) = parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap().unwrap();
        assert!(!r.keep_alive);
    }

    #[test]
    fn absolute_form() {
        let (r, _) = parse("GET http://cdn.example/live/x.ts HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().unwrap();
        assert_eq!(r.path, "/live/x.ts");
    }
}
