//! A blocking HLS live player for `listo demo` and tests, plus small blocking HTTP/1.1 client
//! helpers.
//!
//! [`run_player`] follows one media playlist like hls.js does: it reloads the playlist every
//! target duration (half of it when nothing changed), starts 3 segments behind the live edge,
//! fetches every new segment once and in order, and reports per-segment timings. It keeps one
//! keep-alive connection for playlists and one for segments, reconnecting when one closes. Every
//! socket operation is bounded by a timeout.
//!
//! ```no_run
//! use std::time::Duration;
//! use listo::player::{run_player, PlayerConfig};
//! let cfg = PlayerConfig::new("127.0.0.1:8080".parse().unwrap(), "/live/ch0/v0/index.m3u8", Duration::from_secs(10));
//! let report = run_player(cfg);
//! println!("{} segments, {} stalls", report.segments, report.stalls);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Default timeout for connecting, each read and each write.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted (guards memory against a broken peer).
const MAX_BODY: usize = 256 << 20;

/// Response header fields in order: `(name, value)`.
pub type Headers = Vec<(String, String)>;

/// Checks a received segment: `(path, body) -> is it correct`.
pub type Verifier = Arc<dyn Fn(&str, &[u8]) -> bool + Send + Sync>;

/// One complete HTTP response.
#[derive(Debug, Clone, Default)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
    /// Bytes read off the wire for this response (head, framing and body).
    pub wire_bytes: u64,
    /// Request fully written → first response byte.
    pub ttfb: Duration,
    /// Request fully written → last response byte.
    pub total: Duration,
    /// Whether the connection stays usable afterwards.
    pub keep_alive: bool,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A blocking HTTP/1.1 client connection that is kept alive between requests and reopened
/// when the server closed it.
#[derive(Debug)]
pub struct HttpConn {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    used: u64,
    connects: u64,
}

/// Body framing of a response.
enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

impl HttpConn {
    /// A connection to `addr` (opened lazily) with `timeout` for connect, reads and writes.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        HttpConn { addr, timeout, stream: None, buf: Vec::new(), used: 0, connects: 0 }
    }

    /// How many TCP connections this client has opened so far.
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// Whether a connection is currently open.
    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// Closes the connection (the next request opens a new one).
    pub fn close(&mut self) {
        if let Some(s) = self.stream.take() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.buf.clear();
        self.used = 0;
    }

    fn connect(&mut self) -> io::Result<()> {
        let s = TcpStream::connect_timeout(&self.addr, self.timeout)?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        let _ = s.set_nodelay(true);
        self.stream = Some(s);
        self.buf.clear();
        self.used = 0;
        self.connects += 1;
        Ok(())
    }

    /// Sends `method path` with a `Host` header, `headers` and no body, and reads the whole
    /// response. A request on a reused connection that the server had closed before answering
    /// is retried once on a new connection.
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> io::Result<HttpResponse> {
        let reused = self.stream.is_some() && self.used > 0;
        match self.request_once(method, path, headers) {
            Err((e, got_bytes)) => {
                self.close();
                if reused && !got_bytes {
                    self.request_once(method, path, headers).map_err(|(e, _)| {
                        self.close();
                        e
                    })
                } else {
                    Err(e)
                }
            }
            Ok(r) => {
                if !r.keep_alive {
                    self.close();
                }
                Ok(r)
            }
        }
    }

    /// One attempt; the error carries whether any response byte had arrived.
    fn request_once(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<HttpResponse, (io::Error, bool)> {
        if self.stream.is_none() {
            self.connect().map_err(|e| (e, false))?;
        }
        self.used += 1;
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str(&format!("Host: {}\r\n", self.addr));
        }
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("user-agent")) {
            req.push_str("User-Agent: listo-player\r\n");
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        // Bytes left over from an earlier response would be garbage: start clean.
        self.buf.clear();
        let stream = self.stream.as_mut().ok_or_else(|| (io::Error::from(io::ErrorKind::NotConnected), false))?;
        stream.write_all(req.as_bytes()).map_err(|e| (e, false))?;
        let sent = Instant::now();
        self.read_response(method == "HEAD", sent)
    }

    /// Reads more bytes into the buffer; 0 means the peer closed.
    fn fill(&mut self, wire: &mut u64) -> io::Result<usize> {
        let stream = self.stream.as_mut().ok_or(io::ErrorKind::NotConnected)?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    *wire += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn read_response(&mut self, head_only: bool, sent: Instant) -> Result<HttpResponse, (io::Error, bool)> {
        let mut wire = 0u64;
        let mut ttfb = None;
        // Head.
        let (status, headers, head_len, version) = loop {
            if !self.buf.is_empty() {
                let mut hs = [httparse::EMPTY_HEADER; 64];
                let mut resp = httparse::Response::new(&mut hs);
                match resp.parse(&self.buf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let status = resp.code.unwrap_or(0);
                        let version = resp.version.unwrap_or(1);
                        let headers: Vec<(String, String)> = resp
                            .headers
                            .iter()
                            .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).trim().to_string()))
                            .collect();
                        break (status, headers, n, version);
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEAD => {
                        return Err((io::Error::new(io::ErrorKind::InvalidData, "response head too large"), true));
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => return Err((io::Error::new(io::ErrorKind::InvalidData, format!("bad response head: {e}")), true)),
                }
            }
            let n = self.fill(&mut wire).map_err(|e| (e, wire > 0))?;
            if n == 0 {
                return Err((io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before the response"), wire > 0));
            }
            ttfb.get_or_insert_with(|| sent.elapsed());
        };
        // 1xx interim responses are skipped.
        if (100..200).contains(&status) && status != 101 {
            self.buf.drain(..head_len);
            let mut r = self.read_response(head_only, sent)?;
            r.wire_bytes += wire;
            if let Some(t) = ttfb {
                r.ttfb = t;
            }
            return Ok(r);
        }
        self.buf.drain(..head_len);
        let find = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        let mut keep_alive = version >= 1;
        if let Some(c) = find("connection") {
            if c.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")) {
                keep_alive = false;
            } else if c.split(',').any(|t| t.trim().eq_ignore_ascii_case("keep-alive")) {
                keep_alive = true;
            }
        }
        let framing = if head_only || status == 204 || status == 304 {
            Framing::None
        } else if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            Framing::Chunked
        } else if let Some(cl) = find("content-length") {
            match cl.parse::<usize>() {
                Ok(n) if n <= MAX_BODY => Framing::Length(n),
                _ => return Err((io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"), true)),
            }
        } else {
            keep_alive = false;
            Framing::UntilClose
        };
        let body = match framing {
            Framing::None => Vec::new(),
            Framing::Length(n) => {
                while self.buf.len() < n {
                    let got = self.fill(&mut wire).map_err(|e| (e, true))?;
                    if got == 0 {
                        return Err((io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-body"), true));
                    }
                }
                self.buf.drain(..n).collect()
            }
            Framing::Chunked => self.read_chunked(&mut wire).map_err(|e| (e, true))?,
            Framing::UntilClose => {
                while self.fill(&mut wire).map_err(|e| (e, true))? > 0 {
                    if self.buf.len() > MAX_BODY {
                        return Err((io::Error::new(io::ErrorKind::InvalidData, "body too large"), true));
                    }
                }
                std::mem::take(&mut self.buf)
            }
        };
        // Anything past this response on a non-pipelined connection is not ours.
        wire -= self.buf.len() as u64;
        if !self.buf.is_empty() {
            keep_alive = false;
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
            wire_bytes: wire,
            ttfb: ttfb.unwrap_or_default(),
            total: sent.elapsed(),
            keep_alive,
        })
    }

    /// Index just past the next CRLF-terminated line in the buffer, reading as needed.
    fn line_end(&mut self, wire: &mut u64) -> io::Result<usize> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return Ok(i + 2);
            }
            if self.buf.len() > 8 * 1024 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "chunk line too long"));
            }
            if self.fill(wire)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-chunk"));
            }
        }
    }

    fn read_chunked(&mut self, wire: &mut u64) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let end = self.line_end(wire)?;
            let line = String::from_utf8_lossy(&self.buf[..end - 2]).into_owned();
            let size_str = line.split(';').next().unwrap_or("").trim();
            let size =
                usize::from_str_radix(size_str, 16).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            self.buf.drain(..end);
            if size == 0 {
                // Trailers up to the empty line.
                loop {
                    let end = self.line_end(wire)?;
                    self.buf.drain(..end);
                    if end == 2 {
                        return Ok(body);
                    }
                }
            }
            if body.len() + size > MAX_BODY {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
            }
            while self.buf.len() < size + 2 {
                if self.fill(wire)? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-chunk"));
                }
            }
            body.extend_from_slice(&self.buf[..size]);
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "chunk not followed by CRLF"));
            }
            self.buf.drain(..size + 2);
        }
    }
}

/// One request on a fresh connection (closed afterwards), every step bounded by
/// [`DEFAULT_TIMEOUT`].
pub fn http_request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> io::Result<HttpResponse> {
    let mut conn = HttpConn::new(addr, DEFAULT_TIMEOUT);
    let mut hs: Vec<(&str, &str)> = headers.to_vec();
    if !hs.iter().any(|(k, _)| k.eq_ignore_ascii_case("connection")) {
        hs.push(("Connection", "close"));
    }
    let r = conn.request(method, path, &hs);
    conn.close();
    r
}

/// One-shot `GET path` to `addr` with extra `headers`: `(status, headers, body)`.
pub fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> io::Result<(u16, Headers, Vec<u8>)> {
    let r = http_request(addr, "GET", path, headers)?;
    Ok((r.status, r.headers, r.body))
}

/// What the player is told to play.
#[derive(Clone)]
pub struct PlayerConfig {
    /// Address to connect to (a node, or an origin directly).
    pub node: SocketAddr,
    /// Path of a media playlist (a master playlist is followed to its first variant).
    pub playlist_path: String,
    /// How long to play; no new request starts after it.
    pub duration: Duration,
    /// Checks every received segment body; a `false` counts as corrupt.
    pub verify: Option<Verifier>,
    /// Timeout for connecting, each read and each write.
    pub timeout: Duration,
}

impl fmt::Debug for PlayerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlayerConfig")
            .field("node", &self.node)
            .field("playlist_path", &self.playlist_path)
            .field("duration", &self.duration)
            .field("verify", &self.verify.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl PlayerConfig {
    /// A player of `playlist_path` at `node` for `duration`, no verification, 10 s timeouts.
    pub fn new(node: SocketAddr, playlist_path: impl Into<String>, duration: Duration) -> Self {
        PlayerConfig { node, playlist_path: playlist_path.into(), duration, verify: None, timeout: DEFAULT_TIMEOUT }
    }

    /// The same with a segment verifier.
    pub fn with_verify(mut self, verify: Verifier) -> Self {
        self.verify = Some(verify);
        self
    }
}

/// What one player run saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlayerReport {
    /// Segments received complete with status 200.
    pub segments: u64,
    /// Bytes received (heads, framing and bodies; playlists and segments).
    pub bytes: u64,
    /// Failed requests: non-200 status or I/O error (playlists and segments).
    pub errors: u64,
    /// Segments not complete within one segment duration of the playlist load that listed them.
    pub stalls: u64,
    /// Time to first byte of every received segment, in ms.
    pub ttfb_ms: Vec<f64>,
    /// Paths of the received segments, in order.
    pub segment_paths: Vec<String>,
    /// Segments the verifier rejected.
    pub corrupt: u64,
    /// Playlist loads answered 200.
    pub playlists: u64,
    /// Segments that left the playlist before the player got to them.
    pub skipped: u64,
    /// For every received segment: ms from learning of it to its last byte.
    pub complete_ms: Vec<f64>,
    /// TCP connections opened (playlist and segment connections together).
    pub connects: u64,
}

/// One segment entry of a media playlist.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    seq: u64,
    uri: String,
    duration: Duration,
}

/// What the player needs from a playlist.
#[derive(Debug, Default)]
struct Parsed {
    target: Option<Duration>,
    entries: Vec<Entry>,
    ended: bool,
    /// First variant URI, when this is a master playlist.
    variant: Option<String>,
}

fn secs(s: &str) -> Option<Duration> {
    let v: f64 = s.trim().parse().ok()?;
    (0.0..1e6).contains(&v).then(|| Duration::from_secs_f64(v))
}

fn parse_hls(body: &[u8]) -> Option<Parsed> {
    let text = std::str::from_utf8(body).ok()?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next()? != "#EXTM3U" {
        return None;
    }
    let mut p = Parsed::default();
    let mut seq = 0u64;
    let mut dur = None;
    let mut stream_inf = false;
    for l in lines {
        if let Some(v) = l.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target = secs(v);
        } else if let Some(v) = l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            seq = v.trim().parse().ok()?;
        } else if let Some(v) = l.strip_prefix("#EXTINF:") {
            dur = secs(v.split(',').next().unwrap_or(""));
        } else if l.starts_with("#EXT-X-STREAM-INF") {
            stream_inf = true;
        } else if l == "#EXT-X-ENDLIST" {
            p.ended = true;
        } else if !l.starts_with('#') {
            if stream_inf {
                p.variant.get_or_insert_with(|| l.to_string());
                stream_inf = false;
            } else {
                let d = dur.take().or(p.target).unwrap_or(Duration::from_secs(2));
                p.entries.push(Entry { seq, uri: l.to_string(), duration: d });
                seq += 1;
            }
        }
    }
    Some(p)
}

/// Resolves a playlist URI against the playlist's path (absolute URLs keep only their path:
/// the player always talks to its configured address).
pub fn resolve_uri(playlist_path: &str, uri: &str) -> String {
    if let Some(rest) = uri.strip_prefix("http://").or_else(|| uri.strip_prefix("https://")) {
        return match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        };
    }
    if uri.starts_with('/') {
        return uri.to_string();
    }
    let base = playlist_path.split(['?', '#']).next().unwrap_or(playlist_path);
    let dir = match base.rfind('/') {
        Some(i) => &base[..=i],
        None => "/",
    };
    let mut parts: Vec<&str> = Vec::new();
    for seg in dir.split('/').chain(uri.split('/')).filter(|s| !s.is_empty()) {
        match seg {
            "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = format!("/{}", parts.join("/"));
    if uri.ends_with('/') {
        out.push('/');
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sleeps until `t` but not past `end`.
fn sleep_until(t: Instant, end: Instant) {
    let until = t.min(end);
    let now = Instant::now();
    if until > now {
        thread::sleep(until - now);
    }
}

/// A segment the player knows of and has not fetched yet.
#[derive(Debug)]
struct Pending {
    path: String,
    duration: Duration,
    learned: Instant,
}

/// Plays `cfg.playlist_path` live for `cfg.duration` and reports what it saw.
pub fn run_player(cfg: PlayerConfig) -> PlayerReport {
    let start = Instant::now();
    let end = start + cfg.duration;
    let mut report = PlayerReport::default();
    let mut pl_conn = HttpConn::new(cfg.node, cfg.timeout);
    let mut seg_conn = HttpConn::new(cfg.node, cfg.timeout);
    let mut playlist_path = cfg.playlist_path.clone();
    let mut followed_master = false;
    let mut next_seq: Option<u64> = None;
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut target = Duration::from_secs(2);
    let mut next_reload = start;
    let mut ended = false;

    while Instant::now() < end {
        // Playlist reload when due.
        if !ended && Instant::now() >= next_reload {
            let load_start = Instant::now();
            let mut changed = false;
            match pl_conn.request("GET", &playlist_path, &[]) {
                Ok(r) => {
                    report.bytes += r.wire_bytes;
                    let parsed = if r.status == 200 { parse_hls(&r.body) } else { None };
                    match parsed {
                        Some(p) if p.variant.is_some() && p.entries.is_empty() && !followed_master => {
                            report.playlists += 1;
                            if let Some(v) = p.variant {
                                playlist_path = resolve_uri(&playlist_path, &v);
                            }
                            followed_master = true;
                            continue;
                        }
                        Some(p) => {
                            report.playlists += 1;
                            let learned = Instant::now();
                            if let Some(t) = p.target.filter(|t| !t.is_zero()) {
                                target = t;
                            }
                            ended = p.ended;
                            let first = p.entries.first().map(|e| e.seq);
                            let last = p.entries.last().map(|e| e.seq);
                            if let (Some(first), Some(last)) = (first, last) {
                                let from = *next_seq.get_or_insert(last.saturating_sub(2).max(first));
                                if first > from {
                                    // Segments from..first left the window before we got to them.
                                    report.skipped += first - from;
                                    pending.retain(|&k, _| k >= first);
                                    next_seq = Some(first);
                                }
                                for e in p.entries.iter().filter(|e| e.seq >= next_seq.unwrap_or(first)) {
                                    if let std::collections::btree_map::Entry::Vacant(slot) = pending.entry(e.seq) {
                                        slot.insert(Pending {
                                            path: resolve_uri(&playlist_path, &e.uri),
                                            duration: e.duration,
                                            learned,
                                        });
                                        changed = true;
                                    }
                                }
                            }
                        }
                        None => report.errors += 1,
                    }
                }
                Err(_) => report.errors += 1,
            }
            next_reload = load_start + if changed { target } else { target / 2 };
        }
        // Fetch what is pending, in order.
        while let Some((&seq, _)) = pending.iter().next() {
            if Instant::now() >= end {
                break;
            }
            let Some(seg) = pending.remove(&seq) else { break };
            next_seq = Some(seq + 1);
            match seg_conn.request("GET", &seg.path, &[]) {
                Ok(r) => {
                    report.bytes += r.wire_bytes;
                    if r.status == 200 {
                        let done = seg.learned.elapsed();
                        report.segments += 1;
                        report.ttfb_ms.push(ms(r.ttfb));
                        report.complete_ms.push(ms(done));
                        if done > seg.duration {
                            report.stalls += 1;
                        }
                        if let Some(v) = &cfg.verify {
                            if !v(&seg.path, &r.body) {
                                report.corrupt += 1;
                            }
                        }
                        report.segment_paths.push(seg.path);
                    } else {
                        report.errors += 1;
                    }
                }
                Err(_) => report.errors += 1,
            }
            // Keep reloading on time even while working through a backlog.
            if Instant::now() >= next_reload {
                break;
            }
        }
        if ended && pending.is_empty() {
            break;
        }
        if pending.is_empty() || Instant::now() < next_reload {
            sleep_until(next_reload, end);
        }
    }
    report.connects = pl_conn.connects() + seg_conn.connects();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_uris() {
        assert_eq!(resolve_uri("/live/ch0/v0/index.m3u8", "seg_1.ts"), "/live/ch0/v0/seg_1.ts");
        assert_eq!(resolve_uri("/live/ch0/index.m3u8", "v0/seg_1.ts"), "/live/ch0/v0/seg_1.ts");
        assert_eq!(resolve_uri("/live/ch0/master.m3u8?x=1", "v1/index.m3u8"), "/live/ch0/v1/index.m3u8");
        assert_eq!(resolve_uri("/a/b/index.m3u8", "../c/s.ts"), "/a/c/s.ts");
        assert_eq!(resolve_uri("/a/index.m3u8", "/x/s.ts"), "/x/s.ts");
        assert_eq!(resolve_uri("/a/index.m3u8", "http://cdn.example:80/x/s.ts"), "/x/s.ts");
    }

    #[test]
    fn parses_media_and_master() {
        let p =
            parse_hls(b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.000,\na.ts\n#EXTINF:1.5,\nb.ts\n")
                .unwrap_or_default();
        assert_eq!(p.target, Some(Duration::from_secs(2)));
        assert_eq!(p.entries.len(), 2);
        assert_eq!(p.entries[1].seq, 8);
        assert_eq!(p.entries[1].duration, Duration::from_millis(1500));
        assert!(!p.ended);
        let m =
            parse_hls(b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv0/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2\nv1/index.m3u8\n")
                .unwrap_or_default();
        assert_eq!(m.variant.as_deref(), Some("v0/index.m3u8"));
        assert!(m.entries.is_empty());
        assert!(parse_hls(b"nope").is_none());
    }
}
