//! The bodies of the fuzz targets. Each takes the raw fuzz input and panics on a broken
//! invariant.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use arbitrary::{Arbitrary, Unstructured};
use listo::{Config, Instruction, ViewerId, SECOND};

use crate::{content_range, is_error_body, parse_responses, split_pieces, Framing, Host, Resp, MS};

/// The CDN endpoint of the fixed channel.
pub fn ep() -> SocketAddr {
    "10.0.0.1:80".parse().unwrap()
}

/// The body every upstream request gets in `viewer_stream`: a valid live HLS media playlist
/// (so it is a playlist for .m3u8 paths and opaque bytes for segments).
pub const FIXED: &[u8] = b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n#EXTINF:2.0,\nseg_1.ts\n#EXTINF:2.0,\nseg_2.ts\n";

const LAST_MODIFIED: &str = "Tue, 25 Nov 2025 09:00:00 GMT";

/// The fixed upstream response of `viewer_stream`, in one of four framings.
pub fn fixed_response(mode: u8) -> (Vec<u8>, bool) {
    let common = format!("Content-Type: application/vnd.apple.mpegurl\r\nETag: \"v1\"\r\nLast-Modified: {LAST_MODIFIED}\r\n");
    match mode & 3 {
        0 => {
            let mut r = format!("HTTP/1.1 200 OK\r\n{common}Content-Length: {}\r\n\r\n", FIXED.len()).into_bytes();
            r.extend_from_slice(FIXED);
            (r, false)
        }
        1 => {
            let mut r = format!("HTTP/1.1 200 OK\r\n{common}Cache-Control: max-age=1\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
            for c in FIXED.chunks(40) {
                r.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                r.extend_from_slice(c);
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"0\r\n\r\n");
            (r, false)
        }
        2 => {
            let mut r = format!("HTTP/1.1 200 OK\r\n{common}Cache-Control: no-store\r\nContent-Length: {}\r\n\r\n", FIXED.len()).into_bytes();
            r.extend_from_slice(FIXED);
            (r, false)
        }
        _ => {
            let mut r = format!("HTTP/1.0 200 OK\r\n{common}\r\n").into_bytes();
            r.extend_from_slice(FIXED);
            (r, true)
        }
    }
}

/// Checks one response `viewer_stream` delivered against the fixed body.
fn check_fixed_response(r: &Resp) {
    if !r.complete {
        return;
    }
    match r.status {
        200 => {
            if !r.head_only {
                assert_eq!(r.body, FIXED, "a 200 body is not the object's body");
            }
        }
        206 => {
            let cr = r.header("content-range").expect("206 without Content-Range");
            let (a, b, len) = content_range(cr).unwrap_or_else(|| panic!("bad Content-Range {cr:?}"));
            assert_eq!(len, FIXED.len() as u64, "Content-Range length");
            assert!(a <= b && b < len, "Content-Range {cr:?} out of bounds");
            assert_eq!(r.framing, Framing::Length(b - a + 1), "206 Content-Length disagrees with Content-Range");
            if !r.head_only {
                assert_eq!(r.body, &FIXED[a as usize..=b as usize], "206 body is not the requested range");
            }
        }
        204 | 304 => {}
        416 => {
            let cr = r.header("content-range").expect("416 without Content-Range");
            assert_eq!(cr, format!("bytes */{}", FIXED.len()));
        }
        400 | 404 | 405 | 408 | 414 | 431 | 502 | 504 | 505 => {
            if !r.head_only {
                assert!(is_error_body(r.status, &r.body), "error body {:?}", String::from_utf8_lossy(&r.body));
            }
        }
        s => panic!("unexpected status {s}"),
    }
}

/// `viewer_stream`: arbitrary bytes in arbitrary splits into one viewer of a node with one
/// instructed channel; the CDN answers every request with a fixed valid response.
///
/// Input: `flags`, `k`, `k` split deltas, then the viewer's bytes.
/// flags: bits 0-1 upstream framing (Content-Length, chunked, no-store, close-delimited);
/// bit 2 answer upstream after every piece (else only at the end); bit 3 the client closes at
/// the end; bits 4-5 time between pieces (0, 1 ms, 3 s, 11 s); bit 6 a slow socket (7 bytes
/// per write).
pub fn viewer_stream(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let flags = data[0];
    let k = (data[1] % 32) as usize;
    let split_end = (2 + k).min(data.len());
    let deltas = &data[2..split_end];
    let payload = &data[split_end..];
    let mode = flags & 3;
    let eager = flags & 4 != 0;
    let client_close = flags & 8 != 0;
    let step = [0, MS, 3 * SECOND, 11 * SECOND][((flags >> 4) & 3) as usize];
    let slow = flags & 0x40 != 0;

    let mut h = Host::new(Config::default());
    h.node.instruct(0, Instruction::new("ch1", "/live/ch1/", ep())).unwrap();
    let v = h.open();
    if slow {
        h.viewers.get_mut(&v).unwrap().write_limit = Some(7);
    }
    let answer = move |_: &str| fixed_response(mode);
    let pieces = split_pieces(payload, deltas);
    let n = pieces.len();
    for (i, piece) in pieces.into_iter().enumerate() {
        if h.viewers[&v].closed() {
            break;
        }
        h.recv(v, piece);
        if eager {
            h.serve_upstream(&answer);
        }
        if slow && !h.viewers[&v].closed() {
            // The socket was writable: a host writes, then goes back to `poll_ready` (what the
            // write let the node do, such as a pipelined request's fetch, is announced there).
            h.drain_viewer(v);
            h.pump();
        }
        if i + 1 < n && step > 0 {
            h.advance(step);
        }
        check_viewer_stream_state(&h, v, payload.len());
    }
    h.serve_upstream(&answer);
    if let Some(l) = h.viewers.get_mut(&v) {
        l.write_limit = None;
    }
    if !h.viewers[&v].closed() {
        h.drain_viewer(v);
        h.pump();
    }
    h.check_nothing_hidden();
    check_viewer_stream_state(&h, v, payload.len());
    if client_close && !h.viewers[&v].closed() {
        h.client_close(v);
        let rs = parse_responses(&h.viewers[&v].rx, false).unwrap_or_else(|e| panic!("viewer received garbage: {e}"));
        for r in &rs {
            check_fixed_response(r);
        }
    } else {
        h.settle(600 * SECOND, Some(&answer));
        let log = &h.viewers[&v];
        if !log.closed_by_node && crate::tracing() {
            eprintln!("{:#?}", h.node);
        }
        assert!(
            log.closed_by_node,
            "viewer left open with no timer to close it (timeout {:?}, now {}): {:?}",
            h.node.poll_timeout(),
            h.now,
            String::from_utf8_lossy(&log.rx)
        );
        let rs = parse_responses(&log.rx, true).unwrap_or_else(|e| panic!("viewer received garbage: {e}"));
        for r in &rs {
            assert!(r.complete, "viewer ends with a truncated response {r:?}");
            check_fixed_response(r);
        }
    }
    h.check_store_bound();
    for u in h.ups.values() {
        assert_eq!(u.addr, ep(), "connected to an endpoint no instruction named");
        for t in &u.requests {
            assert!(t.starts_with("/live/ch1/"), "fetched {t:?} outside the channel prefix");
        }
    }
    assert_eq!(h.node.stats().viewer_connections, 0);
}

fn check_viewer_stream_state(h: &Host, v: ViewerId, fed: usize) {
    let log = &h.viewers[&v];
    let bound = 4096 + 64 * fed;
    assert!(log.rx.len() <= bound, "viewer got {} bytes for {} bytes of input", log.rx.len(), fed);
    log.check_parses();
    h.check_store_bound();
}

/// What an independent (strict) reading of the upstream bytes says the body is.
#[derive(Debug, PartialEq, Eq)]
enum Oracle {
    /// A final 200 head and this whole body.
    Complete(Vec<u8>),
    /// A final 200 head whose body did not fully arrive (or did not end properly).
    Truncated,
    /// Anything else (non-200, malformed, ambiguous): no claim.
    Unknown,
}

fn oracle(resp: &[u8], eof: bool) -> Oracle {
    let mut buf = resp;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut r = httparse::Response::new(&mut headers);
        let n = match r.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return Oracle::Unknown,
        };
        let code = r.code.unwrap_or(0);
        if (100..200).contains(&code) && code != 101 {
            buf = &buf[n..];
            continue;
        }
        if code != 200 {
            return Oracle::Unknown;
        }
        let mut cl: Option<u64> = None;
        let mut te = None;
        for h in r.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let Some(v) = std::str::from_utf8(h.value).ok().and_then(|s| s.trim().parse::<u64>().ok()) else {
                    return Oracle::Unknown;
                };
                if cl.is_some() {
                    return Oracle::Unknown;
                }
                cl = Some(v);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                if te.is_some() {
                    return Oracle::Unknown;
                }
                te = Some(h.value.to_vec());
            }
        }
        let body = &buf[n..];
        return match (te, cl) {
            (Some(te), None) if te.eq_ignore_ascii_case(b"chunked") => strict_dechunk(body),
            (None, Some(cl)) => {
                if (body.len() as u64) < cl {
                    Oracle::Truncated
                } else {
                    Oracle::Complete(body[..cl as usize].to_vec())
                }
            }
            (None, None) if eof => Oracle::Complete(body.to_vec()),
            (None, None) => Oracle::Truncated,
            _ => Oracle::Unknown,
        };
    }
}

fn strict_dechunk(mut b: &[u8]) -> Oracle {
    let mut out = Vec::new();
    loop {
        let Some(le) = crate::find(b, b"\r\n") else {
            return if b.len() < 16 && b.iter().all(|c| c.is_ascii_hexdigit()) { Oracle::Truncated } else { Oracle::Unknown };
        };
        let line = &b[..le];
        if line.is_empty() || line.len() > 8 || !line.iter().all(|c| c.is_ascii_hexdigit()) {
            return Oracle::Unknown;
        }
        let size = usize::from_str_radix(std::str::from_utf8(line).unwrap(), 16).unwrap();
        b = &b[le + 2..];
        if size == 0 {
            return if b.starts_with(b"\r\n") {
                Oracle::Complete(out)
            } else if b.is_empty() || b == b"\r" {
                Oracle::Truncated
            } else {
                Oracle::Unknown // trailers: no claim
            };
        }
        if b.len() < size + 2 {
            return if b.len() <= size || &b[size..] == b"\r" { Oracle::Truncated } else { Oracle::Unknown };
        }
        if &b[size..size + 2] != b"\r\n" {
            return Oracle::Unknown;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// `upstream_stream`: arbitrary response bytes in arbitrary splits on the upstream connection
/// of an object a few viewers wait for.
///
/// Input: `flags`, `k`, `k` split deltas, then the response bytes.
/// flags: bits 0-1 viewers (1..=3); bit 2 the object is a playlist; bit 3 the CDN closes the
/// connection at the end; bit 4 the second viewer asks a Range; bit 5 the third asks HEAD;
/// bit 6 a late viewer attaches halfway; bit 7 the third viewer speaks HTTP/1.0.
pub fn upstream_stream(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let flags = data[0];
    let k = (data[1] % 32) as usize;
    let split_end = (2 + k).min(data.len());
    let deltas = &data[2..split_end];
    let payload = &data[split_end..];
    let nviewers = 1 + (flags & 3) as usize % 3;
    let path = if flags & 4 != 0 { "/live/ch1/index.m3u8" } else { "/live/ch1/seg_1.ts" };
    let eof = flags & 8 != 0;
    let late = flags & 64 != 0;

    let cfg = Config::default();
    let (fb, bi) = (cfg.first_byte_timeout, cfg.body_idle_timeout);
    let mut h = Host::new(cfg);
    h.node.instruct(0, Instruction::new("ch1", "/live/ch1/", ep())).unwrap();
    let plain = format!("GET {path} HTTP/1.1\r\nHost: node\r\n\r\n");
    // (viewer, request was a plain GET of the whole object)
    let mut viewers: Vec<(ViewerId, bool)> = Vec::new();
    for i in 0..nviewers {
        let v = h.open();
        let (req, whole) = match i {
            1 if flags & 16 != 0 => (format!("GET {path} HTTP/1.1\r\nHost: node\r\nRange: bytes=2-9\r\n\r\n"), false),
            2 if flags & 32 != 0 => (format!("HEAD {path} HTTP/1.1\r\nHost: node\r\n\r\n"), false),
            2 if flags & 128 != 0 => (format!("GET {path} HTTP/1.0\r\n\r\n"), true),
            _ => (plain.clone(), true),
        };
        h.recv(v, req.as_bytes());
        viewers.push((v, whole));
    }
    assert_eq!(h.connects, 1, "several viewers of one object cost one upstream connection");
    let u = h.connect_next(true).expect("a connect for the object");
    assert_eq!(h.ups[&u].requests.len(), 1, "one upstream request");
    h.mark_answered(u);
    let pieces = split_pieces(payload, deltas);
    let half = pieces.len() / 2;
    for (i, piece) in pieces.into_iter().enumerate() {
        if late && i == half {
            let v = h.open();
            h.recv(v, plain.as_bytes());
            viewers.push((v, true));
        }
        h.up_send(u, piece);
        h.check_nothing_hidden();
        h.check_store_bound();
        for (v, _) in &viewers {
            h.viewers[v].check_parses();
        }
    }
    if eof {
        h.up_close(u);
    }
    // Let a fetch still in flight run into its first-byte / body-idle timeout.
    for _ in 0..3 {
        let resolved = viewers.iter().all(|(v, _)| {
            let log = &h.viewers[v];
            log.closed() || parse_responses(&log.rx, false).is_ok_and(|rs| rs.len() == 1 && rs[0].complete)
        });
        if resolved {
            break;
        }
        h.advance(fb.max(bi) + MS);
    }
    h.check_nothing_hidden();

    // What the first-round viewers saw.
    let mut failed = false;
    let mut complete_bodies: Vec<(u16, Vec<u8>)> = Vec::new();
    for (v, whole) in &viewers {
        let log = &h.viewers[v];
        let mut rs = parse_responses(&log.rx, log.closed_by_node).unwrap_or_else(|e| panic!("viewer received garbage: {e}"));
        assert!(rs.len() <= 1, "one request, {} responses", rs.len());
        // A GET answered with a Content-Length head and no body yet is not a HEAD answer.
        for r in rs.iter_mut().filter(|r| *whole && r.head_only && r.framing != Framing::Length(0)) {
            r.complete = false;
        }
        match rs.first() {
            None => {
                if log.closed() {
                    failed = true;
                }
            }
            Some(r) if !r.complete => {
                if log.closed() || r.status == 0 {
                    failed = true;
                }
            }
            // A close-delimited body (HTTP/1.0 viewer of an object still arriving with no
            // length) ends with the close whether or not the object completed: no claim.
            Some(r) if r.framing == Framing::Close => {}
            Some(r) => {
                if r.status == 502 || r.status == 504 {
                    failed = true;
                } else if *whole && !r.head_only {
                    complete_bodies.push((r.status, r.body.clone()));
                }
            }
        }
    }
    // Every complete answer to a whole-object GET agrees with the others and with a strict
    // reading of what the CDN sent.
    if let Some((s0, b0)) = complete_bodies.first() {
        for (s, b) in &complete_bodies {
            assert_eq!((s, b), (s0, b0), "viewers of one object got different complete responses");
        }
        if *s0 == 200 {
            match oracle(payload, eof) {
                Oracle::Complete(expect) => assert_eq!(b0, &expect, "a complete 200 body differs from what the CDN sent"),
                Oracle::Truncated => panic!("a truncated upstream body was served as a complete 200"),
                Oracle::Unknown => {}
            }
        }
    }

    // Nothing is cached after a failed fetch: a second request goes upstream again.
    let activity = h.connects + h.requests_written;
    let v2 = h.open();
    h.recv(v2, plain.as_bytes());
    let went_upstream = h.connects + h.requests_written > activity;
    if failed {
        assert!(went_upstream, "after a failed fetch the object was served from the cache");
    }
    if !went_upstream {
        let log = &h.viewers[&v2];
        let rs = parse_responses(&log.rx, log.closed_by_node).unwrap_or_else(|e| panic!("viewer received garbage: {e}"));
        // Served from the cache (or still attached to a fetch in flight).
        if let Some(r) = rs.first().filter(|r| r.complete && !r.head_only && r.framing != Framing::Close) {
            assert!(
                complete_bodies.iter().any(|(s, b)| *s == r.status && *b == r.body),
                "a cached response nobody received from the CDN: {r:?}"
            );
        }
    }

    // Everyone ends with a complete response, an error status or a close.
    let answer = |_: &str| fixed_response(0);
    h.settle(600 * SECOND, Some(&answer));
    if crate::tracing() && h.viewers.values().any(|l| !l.closed()) {
        eprintln!("{:#?}", h.node);
    }
    for (v, log) in &h.viewers {
        assert!(
            log.closed(),
            "viewer {v:?} left open with no timer to close it (timeout {:?}, now {}): {:?}",
            h.node.poll_timeout(),
            h.now,
            String::from_utf8_lossy(&log.rx)
        );
        let rs = parse_responses(&log.rx, true).unwrap_or_else(|e| panic!("viewer received garbage: {e}"));
        for r in rs.iter().rev().skip(1) {
            assert!(r.complete, "a truncated response followed by another");
        }
    }
    h.check_store_bound();
}

/// `playlist`: `parse_playlist` on arbitrary bytes with an .m3u8, .mpd, .m3u or other path;
/// every URI it lists resolves to a safe absolute path.
pub fn playlist(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else { return };
    let path = ["/live/ch1/index.m3u8", "/live/ch1/manifest.mpd", "/a/b.m3u", "/live/x.ts", "/live/ch1/sub/index.m3u8?token=1"][sel as usize % 5];
    if let Ok(info) = listo::media::parse_playlist(path, body) {
        assert!(info.uris.len() <= listo::media::MAX_URIS, "too many URIs");
        let total: usize = info.uris.iter().map(|u| u.len()).sum();
        assert!(total <= listo::media::MAX_URI_BYTES + 64 * 1024, "URI bytes over the cap");
        for uri in &info.uris {
            if let Some(abs) = listo::media::resolve(path, uri) {
                crate::check_upstream_target(&abs);
            }
        }
    }
    // The body as a URI relative to each base must also resolve safely.
    if let Ok(s) = std::str::from_utf8(body) {
        if s.len() < 4096 {
            if let Some(abs) = listo::media::resolve(path, s) {
                crate::check_upstream_target(&abs);
            }
            let _ = listo::media::parse_iso_duration_ms(s);
        }
    }
}

/// `control_json`: `parse_instruction_json`; an accepted instruction validates, round-trips
/// through its JSON form, and a node accepts it.
pub fn control_json(data: &[u8]) {
    let Ok(ins) = listo::control::parse_instruction_json(data) else { return };
    ins.validate().expect("a parsed instruction validates");
    let json = serde_json_roundtrip(&ins);
    let again = listo::control::parse_instruction_json(&json).expect("the JSON form of an instruction parses");
    assert_eq!(again, ins, "JSON round trip changed the instruction");
    let mut h = Host::new(Config::default());
    h.node.instruct(0, ins.clone()).expect("a node accepts a valid instruction");
    h.pump();
    // Prefetches go only to the instruction's endpoints, only for paths under its prefix.
    for _ in 0..4 {
        let Some(u) = h.connect_next(true) else { break };
        assert!(ins.endpoints.contains(&h.ups[&u].addr), "connected to an endpoint the instruction did not name");
    }
    for u in h.ups.values() {
        for t in &u.requests {
            assert!(t.starts_with(&ins.path_prefix), "fetched {t:?} outside {}", ins.path_prefix);
        }
    }
}

fn serde_json_roundtrip(ins: &Instruction) -> Vec<u8> {
    listo::control::instruction_json(ins).to_string().into_bytes()
}

// ---------------------------------------------------------------------------------------------
// node_api
// ---------------------------------------------------------------------------------------------

const PREFIXES: [&str; 4] = ["/live/ch0/", "/live/ch1/", "/live/", "/vod/x/"];
const NAMES: [&str; 3] = ["ch0", "ch1", "all"];

fn endpoints(sel: u8) -> Vec<SocketAddr> {
    let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
    let c: SocketAddr = "[fd00::3]:8080".parse().unwrap();
    match sel % 4 {
        0 => vec![a],
        1 => vec![a, b],
        2 => vec![b],
        _ => vec![c, a],
    }
}

/// A viewer request, built from a few chosen parts.
#[derive(Arbitrary, Debug, Clone)]
pub struct Shape {
    method: u8,
    prefix: u8,
    file: u8,
    query: u8,
    range: u8,
    cond: u8,
    http10: bool,
    close: bool,
    origin: bool,
    /// Send only this many bytes of it (0: all).
    truncate: u8,
    /// Send it this many times back to back (pipelining).
    repeat: u8,
}

impl Shape {
    fn bytes(&self) -> Vec<u8> {
        let method = ["GET", "GET", "GET", "HEAD", "OPTIONS", "POST", "get", "GET"][self.method as usize % 8];
        let prefix = PREFIXES[self.prefix as usize % PREFIXES.len()];
        let file = ["index.m3u8", "seg_1.ts", "seg_2.ts", "manifest.mpd", "../ch1/seg_1.ts", "%2e%2e/x.ts", "sub/seg_3.ts", ""]
            [self.file as usize % 8];
        let query = ["", "?a=1&b=2", "?b=2&a=1", "?", "#frag"][self.query as usize % 5];
        let version = if self.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        let mut s = format!("{method} {prefix}{file}{query} {version}\r\n");
        if !self.http10 {
            s.push_str("Host: node\r\n");
        }
        match self.range % 7 {
            1 => s.push_str("Range: bytes=0-9\r\n"),
            2 => s.push_str("Range: bytes=5-\r\n"),
            3 => s.push_str("Range: bytes=-3\r\n"),
            4 => s.push_str("Range: bytes=100000-\r\n"),
            5 => s.push_str("Range: bytes=0-1,3-4\r\n"),
            _ => {}
        }
        match self.cond % 4 {
            1 => s.push_str("If-None-Match: \"v1\"\r\n"),
            2 => s.push_str(&format!("If-Modified-Since: {LAST_MODIFIED}\r\n")),
            3 => s.push_str("If-None-Match: *\r\n"),
            _ => {}
        }
        if self.origin {
            s.push_str("Origin: http://player.example\r\nAccess-Control-Request-Headers: range\r\n");
        }
        if self.close {
            s.push_str("Connection: close\r\n");
        } else if self.http10 {
            s.push_str("Connection: keep-alive\r\n");
        }
        s.push_str("\r\n");
        let one = s.into_bytes();
        let mut all = Vec::new();
        for _ in 0..=(self.repeat % 4) {
            all.extend_from_slice(&one);
        }
        if self.truncate != 0 {
            all.truncate(self.truncate as usize % all.len().max(1));
        }
        all
    }
}

/// How the fake CDN answers a request.
#[derive(Arbitrary, Debug, Clone)]
pub enum RespShape {
    /// 200 with Content-Length; body size in units of 37 bytes; cache policy.
    Ok { size: u8, cache: u8 },
    /// 200 chunked in pieces of `piece` bytes.
    Chunked { size: u8, piece: u8 },
    /// A status with a small body.
    Status { sel: u8 },
    /// A 200 whose body stops after `keep` bytes, then the CDN closes.
    Truncated { size: u8, keep: u8 },
    /// Content-Length shorter than what follows.
    LongerThanSaid { size: u8 },
    /// HTTP/1.0, close-delimited, then close.
    UntilClose { size: u8 },
    /// 100 Continue, then a normal 200.
    Continue { size: u8 },
    /// Arbitrary bytes.
    Garbage(Vec<u8>),
}

/// The segment body the CDN serves for `target`: "<target>" repeated to `len` bytes.
pub fn segment_body(target: &str, len: usize) -> Vec<u8> {
    let unit = format!("<{target}>");
    unit.bytes().cycle().take(len).collect()
}

/// The body the CDN serves for `target` (a playlist for playlist paths).
pub fn cdn_body(target: &str, size: u8) -> Vec<u8> {
    let path = target.split('?').next().unwrap_or("");
    if path.ends_with(".m3u8") {
        let mut s = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n");
        for i in 1..=(size % 5) {
            s.push_str(&format!("#EXTINF:2.0,\nseg_{i}.ts\n"));
        }
        s.push_str(&format!("# {target}\n"));
        s.into_bytes()
    } else if path.ends_with(".mpd") {
        format!("<?xml version=\"1.0\"?><MPD type=\"dynamic\" minimumUpdatePeriod=\"PT2S\" timeShiftBufferDepth=\"PT8S\"><Period id=\"0\"><AdaptationSet><Representation id=\"0\" bandwidth=\"1\"><SegmentTemplate timescale=\"1\" media=\"c-$Number$.m4s\" initialization=\"i.m4s\" startNumber=\"1\"><SegmentTimeline><S t=\"0\" d=\"2\" r=\"{}\"/></SegmentTimeline></SegmentTemplate></Representation></AdaptationSet></Period></MPD><!-- {target} -->", size % 4).into_bytes()
    } else {
        segment_body(target, 1 + size as usize * 37)
    }
}

fn resp_bytes(shape: &RespShape, target: &str) -> (Vec<u8>, bool) {
    let head = |status: &str, extra: &str, len: usize| format!("HTTP/1.1 {status}\r\nContent-Type: video/mp2t\r\nETag: \"v1\"\r\nLast-Modified: {LAST_MODIFIED}\r\n{extra}Content-Length: {len}\r\n\r\n").into_bytes();
    match shape {
        RespShape::Ok { size, cache } => {
            let body = cdn_body(target, *size);
            let extra = ["", "Cache-Control: no-store\r\n", "Cache-Control: max-age=0\r\n", "Cache-Control: max-age=100\r\n", "Connection: close\r\n"][*cache as usize % 5];
            let mut r = head("200 OK", extra, body.len());
            r.extend_from_slice(&body);
            (r, extra.starts_with("Connection"))
        }
        RespShape::Chunked { size, piece } => {
            let body = cdn_body(target, *size);
            let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for c in body.chunks(1 + *piece as usize) {
                r.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                r.extend_from_slice(c);
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"0\r\n\r\n");
            (r, false)
        }
        RespShape::Status { sel } => {
            let status = ["404 Not Found", "500 Internal Server Error", "503 Service Unavailable", "410 Gone", "304 Not Modified", "204 No Content", "403 Forbidden", "301 Moved"][*sel as usize % 8];
            let mut r = head(status, "", 6);
            if !status.starts_with("304") && !status.starts_with("204") {
                r.extend_from_slice(b"nope!\n");
            }
            (r, false)
        }
        RespShape::Truncated { size, keep } => {
            let body = cdn_body(target, *size);
            let mut r = head("200 OK", "", body.len());
            let keep = (*keep as usize).min(body.len().saturating_sub(1));
            r.extend_from_slice(&body[..keep]);
            (r, true)
        }
        RespShape::LongerThanSaid { size } => {
            let body = cdn_body(target, *size);
            let said = body.len() / 2;
            let mut r = head("200 OK", "", said);
            r.extend_from_slice(&body);
            (r, false)
        }
        RespShape::UntilClose { size } => {
            let body = cdn_body(target, *size);
            let mut r = b"HTTP/1.0 200 OK\r\nContent-Type: video/mp2t\r\n\r\n".to_vec();
            r.extend_from_slice(&body);
            (r, true)
        }
        RespShape::Continue { size } => {
            let body = cdn_body(target, *size);
            let mut r = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
            r.extend_from_slice(&head("200 OK", "", body.len()));
            r.extend_from_slice(&body);
            (r, false)
        }
        RespShape::Garbage(g) => (g.iter().copied().take(512).collect(), false),
    }
}

/// One call (or host event) in a `node_api` sequence.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// A viewer connects.
    Open,
    /// A viewer sends a request of the given shape.
    Request { v: u8, shape: Shape },
    /// A viewer sends raw bytes.
    Raw { v: u8, bytes: Vec<u8> },
    /// The client closes.
    Close { v: u8 },
    /// The viewer's socket takes at most `limit` bytes per write from now on (0: it never reads).
    Throttle { v: u8, limit: u8 },
    /// The viewer's socket is writable again and unthrottled.
    Writable { v: u8 },
    /// Time passes.
    AdvanceMs { ms: u16 },
    /// Much time passes.
    AdvanceSecs { s: u8 },
    /// `handle_timeout` called early (a no-op by contract).
    EarlyTimeout,
    /// An instruction.
    Instruct { name: u8, prefix: u8, eps: u8, host: bool, prefetch: bool },
    /// A withdrawal.
    Withdraw { name: u8 },
    /// The host answers the oldest pending connect.
    Connect { ok: bool },
    /// The CDN answers the oldest unanswered request on an upstream; `split` sends only the
    /// first part now (the rest with `Flush`).
    Respond { u: u8, shape: RespShape, split: u8 },
    /// The CDN sends the rest of a split response.
    Flush { u: u8 },
    /// The CDN closes (or resets) an upstream connection.
    UpClose { u: u8 },
    /// Arbitrary bytes from the CDN.
    UpRaw { u: u8, bytes: Vec<u8> },
    /// API calls with ids the node never gave or already forgot.
    Dangling,
}

/// `node_api`: a sequence of API calls decoded from the input, with invariants checked after
/// every step and at the end.
pub fn node_api(data: &[u8]) {
    let mut un = Unstructured::new(data);
    let Ok(budget_sel) = u8::arbitrary(&mut un) else { return };
    let cfg = Config {
        memory_budget: [2048, 16 * 1024, 256 << 20][budget_sel as usize % 3],
        max_viewer_backlog: [4096, 32 << 20][(budget_sel as usize / 3) % 2],
        upstream_pool_size: 1 + (budget_sel as usize / 6) % 3,
        max_pipeline: 4,
        ..Config::default()
    };
    let mut h = Host::new(cfg);
    let mut vids: Vec<ViewerId> = Vec::new();
    let mut pending_rest: std::collections::BTreeMap<listo::UpstreamId, Vec<u8>> = Default::default();
    let mut endpoints_named: BTreeSet<SocketAddr> = BTreeSet::new();
    let mut prefixes_named: BTreeSet<String> = BTreeSet::new();
    let mut maybe_truncated = false;
    // The CDN sent bytes the fuzzer chose: bodies are then not the harness's own.
    let mut raw_upstream = false;
    // Start with one channel so most sequences do something.
    let first = Instruction::new("ch1", "/live/ch1/", endpoints(0)[0]);
    endpoints_named.insert(first.endpoints[0]);
    prefixes_named.insert(first.path_prefix.clone());
    h.node.instruct(0, first).unwrap();

    let mut steps = 0;
    while !un.is_empty() && steps < 256 {
        steps += 1;
        let Ok(op) = Op::arbitrary(&mut un) else { break };
        let pick_v = |vids: &Vec<ViewerId>, i: u8| if vids.is_empty() { None } else { Some(vids[i as usize % vids.len()]) };
        let ups: Vec<listo::UpstreamId> = h.ups.keys().copied().collect();
        let pick_u = |i: u8| if ups.is_empty() { None } else { Some(ups[i as usize % ups.len()]) };
        match op {
            Op::Open => {
                if vids.len() < 64 {
                    vids.push(h.open());
                }
            }
            Op::Request { v, shape } => {
                if let Some(v) = pick_v(&vids, v) {
                    h.recv(v, &shape.bytes());
                }
            }
            Op::Raw { v, bytes } => {
                if let Some(v) = pick_v(&vids, v) {
                    h.recv(v, &bytes[..bytes.len().min(2048)]);
                }
            }
            Op::Close { v } => {
                if let Some(v) = pick_v(&vids, v) {
                    h.client_close(v);
                }
            }
            Op::Throttle { v, limit } => {
                if let Some(v) = pick_v(&vids, v) {
                    h.viewers.get_mut(&v).unwrap().write_limit = Some(limit as usize);
                }
            }
            Op::Writable { v } => {
                if let Some(v) = pick_v(&vids, v) {
                    h.viewers.get_mut(&v).unwrap().write_limit = None;
                    if !h.viewers[&v].closed() {
                        h.drain_viewer(v);
                        h.pump();
                    }
                }
            }
            Op::AdvanceMs { ms } => h.advance(ms as u64 * MS),
            Op::AdvanceSecs { s } => h.advance(s as u64 * SECOND),
            Op::EarlyTimeout => {
                let before = h.node.poll_timeout();
                h.node.handle_timeout(h.now);
                h.pump();
                if let Some(b) = before {
                    if b > h.now {
                        // Nothing was due; the earliest deadline may only have moved later or stayed.
                        assert!(h.node.poll_timeout().is_none_or(|t| t > h.now));
                    }
                }
            }
            Op::Instruct { name, prefix, eps, host, prefetch } => {
                let prefix = PREFIXES[prefix as usize % PREFIXES.len()];
                let mut ins = Instruction::new(NAMES[name as usize % NAMES.len()], prefix, endpoints(eps)[0]);
                ins.endpoints = endpoints(eps);
                if host {
                    ins.host = Some("cdn.example".into());
                }
                if prefetch {
                    ins.prefetch = vec![format!("{prefix}index.m3u8"), format!("{prefix}seg_1.ts")];
                }
                let accepted = h.node.instruct(h.now, ins.clone()).is_ok();
                if accepted {
                    endpoints_named.extend(ins.endpoints.iter().copied());
                    prefixes_named.insert(ins.path_prefix.clone());
                }
                h.pump();
            }
            Op::Withdraw { name } => {
                let _ = h.node.withdraw(h.now, NAMES[name as usize % NAMES.len()]);
                h.pump();
            }
            Op::Connect { ok } => {
                h.connect_next(ok);
            }
            Op::Respond { u, shape, split } => {
                let Some(u) = pick_u(u) else { continue };
                let un_ = h.unanswered();
                let Some((_, target)) = un_.iter().find(|(x, _)| *x == u) else { continue };
                let target = target.clone();
                h.mark_answered(u);
                if matches!(shape, RespShape::Truncated { .. } | RespShape::Garbage(_)) {
                    maybe_truncated = true;
                }
                raw_upstream |= matches!(shape, RespShape::Garbage(_));
                let (bytes, close) = resp_bytes(&shape, &target);
                if split != 0 {
                    let at = split as usize % (bytes.len() + 1);
                    h.up_send(u, &bytes[..at]);
                    let rest = pending_rest.entry(u).or_default();
                    rest.extend_from_slice(&bytes[at..]);
                    if close {
                        // The close comes with the rest.
                        rest.extend_from_slice(b"");
                    }
                } else {
                    h.up_send(u, &bytes);
                    if close {
                        h.up_close(u);
                    }
                }
            }
            Op::Flush { u } => {
                let Some(u) = pick_u(u) else { continue };
                if let Some(rest) = pending_rest.remove(&u) {
                    h.up_send(u, &rest);
                }
            }
            Op::UpClose { u } => {
                let Some(u) = pick_u(u) else { continue };
                maybe_truncated = true;
                h.up_close(u);
            }
            Op::UpRaw { u, bytes } => {
                let Some(u) = pick_u(u) else { continue };
                maybe_truncated = true;
                raw_upstream = true;
                h.up_send(u, &bytes[..bytes.len().min(1024)]);
            }
            Op::Dangling => {
                let now = h.now;
                let bogus_v = ViewerId(u64::MAX - 1);
                let bogus_u = listo::UpstreamId(u64::MAX - 1);
                assert!(h.node.user_recv(now, bogus_v, b"GET / HTTP/1.1\r\n\r\n").is_err());
                assert!(h.node.user_sent(now, bogus_v, 10).is_err());
                assert!(h.node.user_close(now, bogus_v).is_err());
                let mut sl = [std::io::IoSlice::new(&[]); 2];
                assert!(h.node.user_poll_transmit(bogus_v, &mut sl).is_err());
                assert!(h.node.upstream_connected(now, bogus_u).is_err());
                assert!(h.node.upstream_recv(now, bogus_u, b"x").is_err());
                assert!(h.node.upstream_closed(now, bogus_u).is_err());
                assert!(h.node.upstream_sent(now, bogus_u, 1).is_err());
                assert!(h.node.upstream_poll_transmit(bogus_u).is_err());
                // Closed ids stay refused.
                if let Some((v, _)) = h.viewers.iter().find(|(_, l)| l.closed()) {
                    assert!(h.node.user_recv(now, *v, b"GET").is_err(), "a closed viewer id is still accepted");
                }
                if let Some((u, _)) = h.ups.iter().find(|(_, l)| l.closed) {
                    assert!(h.node.upstream_recv(now, *u, b"HTTP").is_err(), "a closed upstream id is still accepted");
                }
                // A second upstream_connected on a connected upstream is an error, not a panic.
                if let Some((u, _)) = h.ups.iter().find(|(_, l)| l.connected && !l.closed) {
                    assert!(h.node.upstream_connected(now, *u).is_err());
                }
            }
        }
        step_checks(&h, &endpoints_named, &prefixes_named, raw_upstream, steps % 8 == 0);
    }

    // Settle: flush split responses, unthrottle everyone, answer every request with a valid
    // response, and let every timer run.
    for (u, rest) in std::mem::take(&mut pending_rest) {
        h.up_send(u, &rest);
    }
    let vs: Vec<ViewerId> = h.viewers.keys().copied().collect();
    for v in vs {
        h.viewers.get_mut(&v).unwrap().write_limit = None;
        if !h.viewers[&v].closed() {
            h.drain_viewer(v);
        }
    }
    h.pump();
    let answer = |t: &str| resp_bytes(&RespShape::Ok { size: 3, cache: 0 }, t);
    h.settle(3600 * SECOND, Some(&answer));
    step_checks(&h, &endpoints_named, &prefixes_named, raw_upstream, true);
    for (v, log) in &h.viewers {
        assert!(
            log.closed(),
            "viewer {v:?} left open with no timer to close it (timeout {:?}, now {}): {:?}",
            h.node.poll_timeout(),
            h.now,
            String::from_utf8_lossy(&log.rx)
        );
        let rs = parse_responses(&log.rx, true).unwrap_or_else(|e| panic!("viewer {v:?} received garbage: {e}"));
        for (i, r) in rs.iter().enumerate() {
            if !r.complete {
                assert_eq!(i + 1, rs.len(), "a truncated response followed by another");
                // A truncated response ends with a close: upstream failure or a slow viewer.
                assert!(log.closed_by_node || log.closed_by_client, "truncated and not closed");
                let _ = maybe_truncated;
            }
        }
    }
    assert_eq!(h.node.stats().viewer_connections, 0, "the node still counts viewers that are gone");
}

/// `full`: also parse everything every viewer received (costly: done every few steps).
fn step_checks(h: &Host, endpoints_named: &BTreeSet<SocketAddr>, prefixes_named: &BTreeSet<String>, raw_upstream: bool, full: bool) {
    h.check_nothing_hidden();
    h.check_store_bound();
    // Bodies here are at most ~9.5 KiB and heads ~1 KiB: a few responses of slack.
    h.check_viewer_backlog(64 * 1024);
    for (u, log) in &h.ups {
        assert!(endpoints_named.contains(&log.addr), "upstream {u:?} to {} which no instruction named", log.addr);
        for t in &log.requests {
            assert!(prefixes_named.iter().any(|p| t.starts_with(p.as_str())), "fetched {t:?} outside every instructed prefix");
        }
    }
    if !full {
        return;
    }
    for (v, log) in &h.viewers {
        let rs = parse_responses(&log.rx, log.closed()).unwrap_or_else(|e| panic!("viewer {v:?} received garbage: {e}"));
        for r in rs.iter().filter(|r| !raw_upstream && r.complete && !r.head_only && r.status == 200) {
            check_cdn_body(&r.body);
        }
        let bound = 8192 + 64 * log.fed as u64;
        assert!(log.rx.len() as u64 <= bound + 64 * 1024 * rs.len() as u64, "viewer {v:?} got {} bytes", log.rx.len());
    }
}

/// A complete 200 body is one the CDN could have sent for some target (bodies of different
/// objects never mix).
fn check_cdn_body(body: &[u8]) {
    if body.is_empty() || body.starts_with(b"#EXTM3U") || body.starts_with(b"<?xml") || body == b"nope!\n" {
        return;
    }
    if body[0] != b'<' {
        return; // garbage the fuzzer sent as a close-delimited body, say
    }
    let Some(end) = body.iter().position(|b| *b == b'>') else { return };
    let target = String::from_utf8_lossy(&body[1..end]).into_owned();
    let expect = segment_body(&target, body.len());
    assert_eq!(body, &expect[..], "a 200 body mixes objects");
}
