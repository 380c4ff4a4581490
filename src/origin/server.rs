//! The origin's HTTP/1.1 server: one accept thread, one blocking thread per connection.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;

use super::content::{path_kind, OriginPath, PathKind, SegmentCache};
use super::dash::DashTrack;
use super::ll::{self, PartState, STREAM_PIECES};
use super::{OriginConfig, OriginCounts, Shared};

/// Longest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body skipped (GET/HEAD should carry none).
const MAX_BODY: u64 = 1 << 20;
/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A write that makes no progress for this long ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `shutdown` waits for the accept and connection threads.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Open connections, so `shutdown` can cut them.
#[derive(Debug, Default)]
struct Conns {
    next: AtomicU64,
    open: Mutex<HashMap<u64, TcpStream>>,
    active: AtomicUsize,
}

/// A running synthetic origin. Dropping it shuts it down too.
#[derive(Debug)]
pub struct OriginServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Conns>,
    accept: Option<JoinHandle<()>>,
}

impl OriginServer {
    /// Binds `listen` (IPv4 or IPv6; port 0 picks one), spawns the accept thread and returns at once.
    pub fn start(listen: SocketAddr, cfg: OriginConfig) -> io::Result<OriginServer> {
        if cfg.channels == 0 || cfg.renditions_kbps.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "origin needs at least one channel and one rendition"));
        }
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            cache: SegmentCache::new(&cfg),
            cfg,
            start: Instant::now(),
            start_wall: SystemTime::now(),
            stopping: AtomicBool::new(false),
            counts: Mutex::new(OriginCounts::default()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Conns::default());
        let accept = {
            let (shared, stop, conns) = (shared.clone(), stop.clone(), conns.clone());
            thread::Builder::new().name("origin-accept".into()).spawn(move || accept_loop(listener, shared, stop, conns))?
        };
        Ok(OriginServer { shared, addr, stop, conns, accept: Some(accept) })
    }

    /// The bound address (with the port actually chosen).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configuration it serves.
    pub fn config(&self) -> &OriginConfig {
        &self.shared.cfg
    }

    /// A snapshot of the request counts.
    pub fn counts(&self) -> OriginCounts {
        self.shared.counts.lock().clone()
    }

    /// Milliseconds since the origin started (its clock).
    pub fn elapsed_ms(&self) -> u64 {
        self.shared.elapsed_ms()
    }

    /// The newest published segment number now (the same for every channel and rendition).
    pub fn live_edge(&self) -> u64 {
        self.shared.cfg.live_edge(self.shared.stream_ms())
    }

    /// The stream clock now: [`elapsed_ms`](Self::elapsed_ms), frozen at
    /// [`OriginConfig::stall_after_ms`] if set. Publication times
    /// ([`OriginConfig::part_published_ms`] and friends) are on this clock.
    pub fn stream_ms(&self) -> u64 {
        self.shared.stream_ms()
    }

    /// Wall-clock time the origin started (DASH `availabilityStartTime` is this minus `window`
    /// segments).
    pub fn start_wall(&self) -> SystemTime {
        self.shared.start_wall
    }

    /// The bytes of segment `k` of channel `c`, rendition `r` (identical to what is served).
    pub fn segment_bytes(&self, c: usize, r: usize, k: u64) -> Bytes {
        self.shared.cache.get(&self.shared.cfg, c, r, k)
    }

    /// Stops accepting, cuts open connections (in-flight responses end short) and waits a
    /// bounded time (about 2 s at most) for the threads to finish.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        if let Some(handle) = self.accept.take() {
            // Wake the blocking accept with a connection of our own.
            let wake = match self.addr.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.addr.port()),
                IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), self.addr.port()),
                _ => self.addr,
            };
            let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(500));
            while !handle.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(2));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
        for s in self.conns.open.lock().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        while self.conns.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for OriginServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>, conns: Arc<Conns>) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                if shared.cfg.verbose {
                    eprintln!("origin: accept: {e}");
                }
                // EMFILE and friends: back off a little instead of spinning.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        shared.counts.lock().connections += 1;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let id = conns.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            conns.open.lock().insert(id, clone);
        }
        conns.active.fetch_add(1, Ordering::SeqCst);
        let (shared2, conns2) = (shared.clone(), conns.clone());
        let spawned = thread::Builder::new().name("origin-conn".into()).spawn(move || {
            serve_connection(&shared2, stream, peer);
            conns2.open.lock().remove(&id);
            conns2.active.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            conns.open.lock().remove(&id);
            conns.active.fetch_sub(1, Ordering::SeqCst);
        }
        // A shutdown that raced with this accept cuts the new connection too.
        if stop.load(Ordering::SeqCst) {
            if let Some(s) = conns.open.lock().get(&id) {
                let _ = s.shutdown(Shutdown::Both);
            }
            return;
        }
    }
}

/// One parsed request head.
#[derive(Debug)]
struct Req {
    method: String,
    path: String,
    keep_alive: bool,
    content_length: u64,
    chunked: bool,
    if_none_match: Option<String>,
}

/// Why reading a request stopped.
enum ReadOutcome {
    Request(Req),
    /// Peer closed (or idle timeout) between requests.
    Closed,
    /// Malformed or oversized: answer this status and close.
    Bad(u16),
}

fn has_token(v: &str, token: &str) -> bool {
    v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> ReadOutcome {
    let mut chunk = [0u8; 4096];
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
                        return ReadOutcome::Bad(400);
                    };
                    let mut r = Req {
                        method: method.to_string(),
                        path: path.to_string(),
                        keep_alive: version >= 1,
                        content_length: 0,
                        chunked: false,
                        if_none_match: None,
                    };
                    for h in req.headers.iter() {
                        let v = String::from_utf8_lossy(h.value);
                        if h.name.eq_ignore_ascii_case("connection") {
                            if has_token(&v, "close") {
                                r.keep_alive = false;
                            } else if has_token(&v, "keep-alive") {
                                r.keep_alive = true;
                            }
                        } else if h.name.eq_ignore_ascii_case("content-length") {
                            match v.trim().parse() {
                                Ok(n) => r.content_length = n,
                                Err(_) => return ReadOutcome::Bad(400),
                            }
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            r.chunked = true;
                        } else if h.name.eq_ignore_ascii_case("if-none-match") {
                            r.if_none_match = Some(v.trim().to_string());
                        }
                    }
                    buf.drain(..n);
                    return ReadOutcome::Request(r);
                }
                Ok(httparse::Status::Partial) => {
                    if buf.len() > MAX_HEAD {
                        return ReadOutcome::Bad(431);
                    }
                }
                Err(_) => return ReadOutcome::Bad(400),
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return ReadOutcome::Closed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return ReadOutcome::Closed,
        }
    }
}

/// Discards a request body of `len` bytes (part may already be in `buf`).
fn skip_body(stream: &mut TcpStream, buf: &mut Vec<u8>, len: u64) -> io::Result<()> {
    let in_buf = usize::try_from(len).unwrap_or(usize::MAX).min(buf.len());
    buf.drain(..in_buf);
    let mut left = len - in_buf as u64;
    let mut chunk = [0u8; 4096];
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(chunk.len()).min(chunk.len());
        let n = stream.read(&mut chunk[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        left -= n as u64;
    }
    Ok(())
}

/// A response to write.
struct Resp {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

impl Resp {
    fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        Resp { status, headers: vec![("Content-Type", content_type.to_string())], body: body.into() }
    }

    fn text(status: u16, msg: &str) -> Self {
        Resp::new(status, "text/plain; charset=utf-8", format!("{msg}\n"))
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        503 => "Service Unavailable",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        _ => "Unknown",
    }
}

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

/// What a request gets: a response now, or a body streamed as it is produced.
enum Answer {
    Now(Resp),
    /// A chunked 200 (an LL-HLS part being produced): `pieces` leave at their stream-clock times.
    Stream {
        headers: Vec<(&'static str, String)>,
        pieces: Vec<(u64, Bytes)>,
    },
}

/// A cacheable media object (segment, part, init): 200 or 304 by `If-None-Match`.
fn media_resp(req: &Req, etag: String, content_type: &str, body: Bytes) -> Resp {
    let not_modified = req.if_none_match.as_deref().is_some_and(|v| v.trim() == "*" || v.split(',').any(|t| t.trim() == etag));
    let mut r = if not_modified {
        Resp { status: 304, headers: Vec::new(), body: Bytes::new() }
    } else {
        Resp::new(200, content_type, body)
    };
    r.headers.push(("Cache-Control", "max-age=60".into()));
    r.headers.push(("ETag", etag));
    r
}

/// Sleeps until the stream clock reaches `ready_ms`: true then, false at `deadline` or shutdown.
fn wait_for(shared: &Shared, ready_ms: u64, deadline: Instant) -> bool {
    loop {
        let now = shared.stream_ms();
        if now >= ready_ms {
            return true;
        }
        if shared.stopping.load(Ordering::SeqCst) {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        thread::sleep(Duration::from_millis(ready_ms - now).min(left).min(Duration::from_millis(50)));
    }
}

/// How long a held request waits at most: three target durations (RFC 8216bis §6.2.5.2).
fn hold_limit(cfg: &OriginConfig) -> Duration {
    Duration::from_millis(cfg.segment_ms().saturating_mul(3))
}

fn respond(shared: &Shared, req: &Req) -> Answer {
    let cfg = &shared.cfg;
    let now = shared.stream_ms();
    match req.method.as_str() {
        "GET" | "HEAD" => {}
        "OPTIONS" => {
            let mut r = Resp::new(204, "text/plain", Bytes::new());
            r.headers.push(("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS".into()));
            r.headers.push(("Access-Control-Allow-Headers", "*".into()));
            r.headers.push(("Access-Control-Max-Age", "600".into()));
            return Answer::Now(r);
        }
        _ => {
            let mut r = Resp::text(405, "method not allowed");
            r.headers.push(("Allow", "GET, HEAD, OPTIONS".into()));
            return Answer::Now(r);
        }
    }
    let resp = match cfg.parse_path(&req.path) {
        Some(OriginPath::Master { channel }) => Resp::new(200, PLAYLIST_TYPE, cfg.master_playlist(channel)),
        Some(OriginPath::Media { channel, rendition, alias }) => {
            let query = req.path.split_once('?').map_or("", |(_, q)| q);
            let blocking = if cfg.ll { ll::parse_blocking_query(query) } else { Ok(None) };
            match blocking {
                Err(()) => return Answer::Now(Resp::text(400, "malformed _HLS_msn/_HLS_part")),
                Ok(Some(q)) if cfg.blocking_too_far(q, now) => {
                    return Answer::Now(Resp::text(400, "_HLS_msn more than two segments ahead"));
                }
                Ok(Some(q)) => {
                    if !wait_for(shared, cfg.blocking_ready_ms(q), Instant::now() + hold_limit(cfg)) {
                        return Answer::Now(Resp::text(503, "not available within three target durations"));
                    }
                }
                Ok(None) => {}
            }
            Resp::new(200, PLAYLIST_TYPE, cfg.media_playlist(channel, rendition, alias, shared.stream_ms()))
        }
        Some(OriginPath::Segment { channel, rendition, seq }) => {
            if !cfg.is_available(seq, now) {
                return Answer::Now(Resp::text(404, "segment not available"));
            }
            let body = shared.cache.get(cfg, channel, rendition, seq);
            let etag = format!("\"ch{channel}-v{rendition}-{seq}-{}\"", body.len());
            media_resp(req, etag, "video/mp2t", body)
        }
        Some(OriginPath::Part { channel, rendition, seq, part }) => {
            let state = cfg.part_state(seq, part, now);
            if state == PartState::Unavailable {
                return Answer::Now(Resp::text(404, "part not available"));
            }
            let range = cfg.part_range(rendition, seq, part);
            let body = shared.cache.get(cfg, channel, rendition, seq).slice(range);
            let etag = format!("\"ch{channel}-v{rendition}-{seq}.{part}-{}\"", body.len());
            if state == PartState::Published {
                media_resp(req, etag, "video/mp2t", body)
            } else {
                // Being produced (or about to be): stream it as it is produced.
                let (start, dur) = (cfg.part_started_ms(seq, part), cfg.part_duration_ms(part));
                let len = body.len() as u64;
                let pieces = (0..STREAM_PIECES)
                    .map(|j| {
                        let (a, b) = (len * j / STREAM_PIECES, len * (j + 1) / STREAM_PIECES);
                        let at = start + dur * (j + 1) / STREAM_PIECES;
                        (at, body.slice(a as usize..b as usize))
                    })
                    .collect();
                let headers =
                    vec![("Content-Type", "video/mp2t".to_string()), ("Cache-Control", "max-age=60".to_string()), ("ETag", etag)];
                return Answer::Stream { headers, pieces };
            }
        }
        Some(OriginPath::Mpd { channel }) => Resp::new(200, "application/dash+xml", cfg.mpd(channel, now, shared.start_wall)),
        Some(OriginPath::DashInit { channel, track }) => {
            let ctype = if track == DashTrack::Video { "video/mp4" } else { "audio/mp4" };
            media_resp(req, format!("\"ch{channel}-{}-init\"", track.name()), ctype, cfg.dash_init(track))
        }
        Some(OriginPath::DashSegment { channel, track, seq }) => {
            if !cfg.dash_available(seq, now) {
                return Answer::Now(Resp::text(404, "segment not available"));
            }
            let ctype = if track == DashTrack::Video { "video/mp4" } else { "audio/mp4" };
            let body = cfg.dash_segment_bytes(channel, track, seq);
            media_resp(req, format!("\"ch{channel}-{}-{seq}-{}\"", track.name(), body.len()), ctype, body)
        }
        Some(OriginPath::Stats) => Resp::new(200, "application/json", shared.counts.lock().to_json()),
        None => Resp::text(404, "not found"),
    };
    Answer::Now(resp)
}

/// Writes `data` (paced to `bps` bytes per second since `t0` if set), counting bytes as they go.
fn write_paced(
    stream: &mut TcpStream,
    shared: &Shared,
    data: &[u8],
    pace: Option<(u64, Instant)>,
    sent: &mut u64,
) -> io::Result<()> {
    let step = match pace {
        Some((bps, _)) => usize::try_from(bps / 50).unwrap_or(64 * 1024).clamp(1460, 64 * 1024),
        None => 256 * 1024,
    };
    for chunk in data.chunks(step) {
        if let Some((bps, t0)) = pace {
            // Sleep until sending `sent` bytes so far is within the rate.
            let due = Duration::from_secs_f64(*sent as f64 / bps as f64);
            let elapsed = t0.elapsed();
            if due > elapsed {
                thread::sleep(due - elapsed);
            }
        }
        // Counted before the write, so a client that has read the bytes always sees them counted.
        shared.counts.lock().bytes_sent += chunk.len() as u64;
        *sent += chunk.len() as u64;
        stream.write_all(chunk)?;
    }
    Ok(())
}

fn write_response(stream: &mut TcpStream, shared: &Shared, resp: &Resp, head_only: bool, keep_alive: bool) -> io::Result<u64> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    head.push_str("Server: listo-origin\r\n");
    head.push_str(&format!("Date: {}\r\n", httpdate::fmt_http_date(SystemTime::now())));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Access-Control-Allow-Origin: *\r\n");
    if resp.status != 204 && resp.status != 304 {
        head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    head.push_str(if keep_alive { "Connection: keep-alive\r\n\r\n" } else { "Connection: close\r\n\r\n" });
    let pace = shared.cfg.rate_mbps.filter(|&m| m > 0).map(|m| (m.saturating_mul(125_000), Instant::now()));
    let mut sent = 0;
    if head_only || resp.body.is_empty() {
        write_paced(stream, shared, head.as_bytes(), pace, &mut sent)?;
    } else if resp.body.len() <= 64 * 1024 && pace.is_none() {
        // Small bodies (playlists) leave in one write with the head.
        let mut all = head.into_bytes();
        all.extend_from_slice(&resp.body);
        write_paced(stream, shared, &all, pace, &mut sent)?;
    } else {
        write_paced(stream, shared, head.as_bytes(), pace, &mut sent)?;
        write_paced(stream, shared, &resp.body, pace, &mut sent)?;
    }
    stream.flush()?;
    Ok(sent)
}

/// Writes a chunked 200 whose pieces leave when the stream clock reaches their times (a part
/// being produced). A stalled stream ends the response short after three target durations.
fn write_stream(
    stream: &mut TcpStream,
    shared: &Shared,
    headers: &[(&'static str, String)],
    pieces: &[(u64, Bytes)],
    head_only: bool,
    keep_alive: bool,
) -> io::Result<u64> {
    let mut head = String::from("HTTP/1.1 200 OK\r\nServer: listo-origin\r\n");
    head.push_str(&format!("Date: {}\r\n", httpdate::fmt_http_date(SystemTime::now())));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Access-Control-Allow-Origin: *\r\nTransfer-Encoding: chunked\r\n");
    head.push_str(if keep_alive { "Connection: keep-alive\r\n\r\n" } else { "Connection: close\r\n\r\n" });
    let mut sent = 0;
    write_paced(stream, shared, head.as_bytes(), None, &mut sent)?;
    stream.flush()?;
    if head_only {
        return Ok(sent);
    }
    let deadline = Instant::now() + hold_limit(&shared.cfg);
    for (at, piece) in pieces {
        if !wait_for(shared, *at, deadline) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "part not produced in time"));
        }
        if piece.is_empty() {
            continue;
        }
        let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
        chunk.extend_from_slice(piece);
        chunk.extend_from_slice(b"\r\n");
        write_paced(stream, shared, &chunk, None, &mut sent)?;
        stream.flush()?;
    }
    write_paced(stream, shared, b"0\r\n\r\n", None, &mut sent)?;
    stream.flush()?;
    Ok(sent)
}

fn count(shared: &Shared, path: &str) {
    let mut c = shared.counts.lock();
    match path_kind(path) {
        PathKind::Segment => c.segment_requests += 1,
        PathKind::Playlist => c.playlist_requests += 1,
        PathKind::Other => c.other_requests += 1,
    }
    *c.per_path.entry(path.to_string()).or_insert(0) += 1;
}

fn serve_connection(shared: &Shared, mut stream: TcpStream, peer: SocketAddr) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let req = match read_request(&mut stream, &mut buf) {
            ReadOutcome::Request(r) => r,
            ReadOutcome::Closed => return,
            ReadOutcome::Bad(status) => {
                let _ = write_response(&mut stream, shared, &Resp::text(status, reason(status)), false, false);
                return;
            }
        };
        count(shared, &req.path);
        let started = Instant::now();
        if req.chunked {
            let _ = write_response(&mut stream, shared, &Resp::text(501, "chunked request bodies not supported"), false, false);
            return;
        }
        if req.content_length > MAX_BODY {
            let _ = write_response(&mut stream, shared, &Resp::text(400, "request body too large"), false, false);
            return;
        }
        if req.content_length > 0 && skip_body(&mut stream, &mut buf, req.content_length).is_err() {
            return;
        }
        let answer = respond(shared, &req);
        if shared.cfg.latency_ms > 0 {
            thread::sleep(Duration::from_millis(shared.cfg.latency_ms));
        }
        let head_only = req.method == "HEAD";
        let (status, result) = match &answer {
            Answer::Now(resp) => (resp.status, write_response(&mut stream, shared, resp, head_only, req.keep_alive)),
            Answer::Stream { headers, pieces } => {
                (200, write_stream(&mut stream, shared, headers, pieces, head_only, req.keep_alive))
            }
        };
        if shared.cfg.verbose {
            let outcome = match &result {
                Ok(n) => format!("{n} B"),
                Err(e) => format!("error: {e}"),
            };
            eprintln!("origin: {peer} {} {} {} {outcome} {} ms", req.method, req.path, status, started.elapsed().as_millis());
        }
        if result.is_err() || !req.keep_alive {
            let _ = stream.shutdown(Shutdown::Write);
            return;
        }
    }
}
