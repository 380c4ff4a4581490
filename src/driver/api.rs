//! The driver's two small HTTP APIs: the control port (LA/LC: instruct, list, withdraw, JSON)
//! and the admin port (LR: Prometheus `/metrics`, `/v1/stats` JSON). One request per
//! connection (`Connection: close`), bodies by Content-Length, bounded sizes.

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use mio::Token;

use super::conn::{Entry, Listener};
use super::Driver;
use crate::control::{instruction_json, parse_instruction_json};
use crate::http::reason_phrase;
use crate::{Error, Stats};

const MAX_REQUEST: usize = 1 << 20;

/// One control/admin connection.
pub(super) struct ApiConn {
    stream: TcpStream,
    kind: Listener,
    buf: Vec<u8>,
    out: Vec<u8>,
    answered: bool,
    opened: std::time::Instant,
}

impl ApiConn {
    pub(super) fn new(stream: TcpStream, kind: Listener) -> Self {
        ApiConn { stream, kind, buf: Vec::new(), out: Vec::new(), answered: false, opened: std::time::Instant::now() }
    }
}

/// A parsed API request.
struct ApiRequest {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// Parses a complete request from `buf`: `Ok(None)` while incomplete.
fn parse(buf: &[u8]) -> Result<Option<ApiRequest>, (u16, String)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > 64 * 1024 => return Err((431, "request head too large".into())),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err((400, format!("malformed request: {e}"))),
    };
    let mut len = 0usize;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or((400, "invalid Content-Length".to_string()))?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err((400, "chunked request bodies are not accepted; send Content-Length".into()));
        }
    }
    if len > MAX_REQUEST {
        return Err((413, "request body too large".into()));
    }
    if buf.len() < head_len + len {
        return Ok(None);
    }
    Ok(Some(ApiRequest {
        method: req.method.unwrap_or("").to_string(),
        path: req.path.unwrap_or("").to_string(),
        body: buf[head_len..head_len + len].to_vec(),
    }))
}

fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        reason_phrase(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn json(status: u16, v: serde_json::Value) -> Vec<u8> {
    let mut body = v.to_string().into_bytes();
    body.push(b'\n');
    response(status, "application/json", &body)
}

fn json_error(status: u16, msg: &str) -> Vec<u8> {
    json(status, serde_json::json!({ "error": msg }))
}

/// An API request must arrive whole (head and body) within this long.
const API_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Driver {
    /// Answers 408 to API connections whose request did not arrive in time (e.g. a body
    /// shorter than its Content-Length), and closes them.
    pub(super) fn api_timeouts(&mut self) {
        let late: Vec<Token> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Api(c) if !c.answered && c.opened.elapsed() >= API_TIMEOUT))
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            if let Some(Entry::Api(c)) = self.entries.get_mut(&t) {
                c.out = json_error(408, "the request did not arrive in time");
                c.answered = true;
            }
            self.api_flush(t);
        }
    }

    pub(super) fn api_event(&mut self, token: Token, readable: bool, _writable: bool) {
        if readable {
            let mut chunk = [0u8; 16 * 1024];
            for _ in 0..128 {
                let Some(Entry::Api(c)) = self.entries.get_mut(&token) else { return };
                if c.answered {
                    break;
                }
                match c.stream.read(&mut chunk) {
                    Ok(0) => {
                        self.drop_api(token);
                        return;
                    }
                    Ok(n) => {
                        c.buf.extend_from_slice(&chunk[..n]);
                        if c.buf.len() > MAX_REQUEST + 64 * 1024 {
                            c.out = json_error(413, "request too large");
                            c.answered = true;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        self.drop_api(token);
                        return;
                    }
                }
            }
            let Some(Entry::Api(c)) = self.entries.get_mut(&token) else { return };
            if !c.answered {
                match parse(&c.buf) {
                    Ok(None) => {}
                    Ok(Some(req)) => {
                        let kind = c.kind;
                        let out = match kind {
                            Listener::Control => self.control(&req),
                            _ => self.admin(&req),
                        };
                        if let Some(Entry::Api(c)) = self.entries.get_mut(&token) {
                            c.out = out;
                            c.answered = true;
                        }
                    }
                    Err((status, msg)) => {
                        c.out = json_error(status, &msg);
                        c.answered = true;
                    }
                }
            }
        }
        self.api_flush(token);
    }

    fn api_flush(&mut self, token: Token) {
        let Some(Entry::Api(c)) = self.entries.get_mut(&token) else { return };
        while c.answered && !c.out.is_empty() {
            match c.stream.write(&c.out) {
                Ok(0) => break,
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if c.answered {
            self.drop_api(token);
        }
    }

    fn drop_api(&mut self, token: Token) {
        if let Some(Entry::Api(mut c)) = self.entries.remove(&token) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            let _ = c.stream.flush();
        }
    }

    /// The control port: `POST /v1/channels`, `GET /v1/channels`, `DELETE /v1/channels/{name}`.
    fn control(&mut self, req: &ApiRequest) -> Vec<u8> {
        let now = self.now();
        let path = req.path.split('?').next().unwrap_or("");
        match (req.method.as_str(), path) {
            ("POST", "/v1/channels") => match parse_instruction_json(&req.body) {
                Ok(ins) => {
                    let name = ins.channel.clone();
                    match self.node.instruct(now, ins) {
                        Ok(()) => json(201, serde_json::json!({ "ok": true, "channel": name })),
                        Err(e @ Error::TooManyChannels(_)) => json_error(409, &e.to_string()),
                        Err(e) => json_error(400, &e.to_string()),
                    }
                }
                Err(e) => json_error(400, &e.to_string()),
            },
            ("GET", "/v1/channels") => {
                let list: Vec<serde_json::Value> = self.node.instructions().map(instruction_json).collect();
                json(200, serde_json::json!({ "channels": list }))
            }
            ("DELETE", p) if p.starts_with("/v1/channels/") => {
                let name = &p["/v1/channels/".len()..];
                match self.node.withdraw(now, name) {
                    Ok(()) => json(200, serde_json::json!({ "ok": true, "withdrawn": name })),
                    Err(e) => json_error(404, &e.to_string()),
                }
            }
            (_, "/v1/channels") => json_error(405, "use GET or POST"),
            _ => json_error(404, "no such resource; see /v1/channels"),
        }
    }

    /// The admin port: `GET /metrics` (Prometheus text), `GET /v1/stats` (JSON),
    /// `GET /v1/events?since=N` (events numbered above N), `POST /v1/drain`.
    fn admin(&mut self, req: &ApiRequest) -> Vec<u8> {
        let stats = self.node.stats();
        let (path, query) = req.path.split_once('?').unwrap_or((req.path.as_str(), ""));
        match (req.method.as_str(), path) {
            ("GET", "/v1/events") => {
                let since = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("since="))
                    .map(|v| v.parse::<u64>())
                    .unwrap_or(Ok(0));
                match since {
                    Ok(n) => json(200, self.log.since_json(n)),
                    Err(_) => json_error(400, "since must be a non-negative integer"),
                }
            }
            ("POST", "/v1/drain") => {
                self.start_drain();
                json(200, serde_json::json!({ "ok": true, "draining": true }))
            }
            (_, "/v1/events") => json_error(405, "use GET"),
            (_, "/v1/drain") => json_error(405, "use POST"),
            ("GET", "/metrics") => response(200, "text/plain; version=0.0.4; charset=utf-8", prometheus(&stats, &self.counters).as_bytes()),
            ("GET", "/v1/stats") => json(200, stats_json(&stats, &self.counters)),
            (_, "/metrics") | (_, "/v1/stats") => json_error(405, "use GET"),
            _ => json_error(404, "no such resource; see /metrics, /v1/stats, /v1/events, /v1/drain"),
        }
    }
}

/// The node's counters as JSON (the admin port's `/v1/stats`).
pub fn stats_json(s: &Stats, d: &super::DriverCounters) -> serde_json::Value {
    let channels: Vec<serde_json::Value> = s
        .channels
        .iter()
        .map(|c| {
            serde_json::json!({
                "channel": c.channel, "viewers": c.viewers, "peak_viewers": c.peak_viewers,
                "viewer_seconds": c.viewer_seconds, "viewer_connections": c.viewer_connections,
                "requests": c.requests, "hits": c.hits, "prefetches": c.prefetches,
                "segment_requests": c.segment_requests, "segment_hits": c.segment_hits,
                "coalesced": c.coalesced, "misses": c.misses, "upstream_requests": c.upstream_requests,
                "upstream_bytes": c.upstream_bytes, "downstream_bytes": c.downstream_bytes,
                "upstream_failures": c.upstream_failures,
            })
        })
        .collect();
    let errors: serde_json::Map<String, serde_json::Value> = s.errors.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
    let endpoints: Vec<serde_json::Value> = s
        .endpoints
        .iter()
        .map(|e| {
            serde_json::json!({
                "endpoint": e.endpoint, "healthy": e.healthy, "consecutive_failures": e.consecutive_failures,
                "successes": e.successes, "failures": e.failures, "last_error": e.last_error,
            })
        })
        .collect();
    serde_json::json!({
        "channels": channels,
        "endpoints": endpoints,
        "draining": s.draining,
        "events_dropped": s.events_dropped,
        "followed_playlists": s.followed_playlists,
        "viewer_connections": s.viewer_connections,
        "upstream_connections": s.upstream_connections,
        "store_objects": s.store_objects,
        "store_bytes": s.store_bytes,
        "evictions": s.evictions,
        "slow_viewers_dropped": s.slow_viewers_dropped,
        "downstream_bytes": s.downstream_bytes,
        "errors": errors,
        "connections_accepted": d.accepted,
        "connections_closed_by_node": d.closed_by_node,
        "upstream_connect_errors": d.connect_errors,
    })
}

/// The node's counters in the Prometheus text exposition format.
pub fn prometheus(s: &Stats, d: &super::DriverCounters) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let per_channel: [(&str, &str, &str, fn(&crate::ChannelStats) -> u64); 15] = [
        ("listo_viewers", "gauge", "Viewer sessions (address + user agent) active within the target duration.", |c| c.viewers),
        ("listo_peak_viewers", "gauge", "Most viewer sessions at once.", |c| c.peak_viewers),
        ("listo_viewer_seconds_total", "counter", "Viewer-seconds watched.", |c| c.viewer_seconds),
        ("listo_channel_viewer_connections", "gauge", "Open viewer connections whose latest request was for the channel.", |c| c.viewer_connections),
        ("listo_prefetches_total", "counter", "Segment fetches started before any viewer asked.", |c| c.prefetches),
        ("listo_segment_requests_total", "counter", "Viewer requests for segments.", |c| c.segment_requests),
        ("listo_segment_hits_total", "counter", "Segment requests answered from a complete object.", |c| c.segment_hits),
        ("listo_requests_total", "counter", "Viewer requests routed to the channel.", |c| c.requests),
        ("listo_hits_total", "counter", "Requests answered from a complete cached object.", |c| c.hits),
        ("listo_coalesced_total", "counter", "Requests attached to an object already being fetched.", |c| c.coalesced),
        ("listo_misses_total", "counter", "Requests that started an upstream fetch.", |c| c.misses),
        ("listo_upstream_requests_total", "counter", "Requests sent to the CDN endpoint.", |c| c.upstream_requests),
        ("listo_upstream_bytes_total", "counter", "Body bytes received from the CDN endpoint.", |c| c.upstream_bytes),
        ("listo_downstream_bytes_total", "counter", "Bytes written to viewers.", |c| c.downstream_bytes),
        ("listo_upstream_failures_total", "counter", "Upstream fetches that failed.", |c| c.upstream_failures),
    ];
    for (name, kind, help, get) in per_channel {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for c in &s.channels {
            let _ = writeln!(out, "{name}{{channel=\"{}\"}} {}", escape_label(&c.channel), get(c));
        }
    }
    let node: [(&str, &str, &str, u64); 9] = [
        ("listo_slow_viewers_dropped_total", "counter", "Viewers disconnected for falling behind the live window.", s.slow_viewers_dropped),
        ("listo_viewer_connections", "gauge", "Open viewer connections.", s.viewer_connections),
        ("listo_upstream_connections", "gauge", "Open upstream connections.", s.upstream_connections),
        ("listo_store_objects", "gauge", "Objects in the store.", s.store_objects),
        ("listo_store_bytes", "gauge", "Body bytes held by the store.", s.store_bytes),
        ("listo_evictions_total", "counter", "Objects evicted for the memory budget.", s.evictions),
        ("listo_connections_accepted_total", "counter", "Viewer connections accepted.", d.accepted),
        ("listo_connections_closed_by_node_total", "counter", "Viewer connections the node closed.", d.closed_by_node),
        ("listo_upstream_connect_errors_total", "counter", "Upstream connects that failed.", d.connect_errors),
    ];
    for (name, kind, help, v) in node {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
    let _ = writeln!(out, "# HELP listo_endpoint_healthy 1 when the CDN endpoint's last fetch succeeded.\n# TYPE listo_endpoint_healthy gauge");
    for e in &s.endpoints {
        let _ = writeln!(out, "listo_endpoint_healthy{{endpoint=\"{}\"}} {}", escape_label(&e.endpoint), u8::from(e.healthy));
    }
    let _ = writeln!(out, "# HELP listo_endpoint_failures_total Failed fetches per CDN endpoint.\n# TYPE listo_endpoint_failures_total counter");
    for e in &s.endpoints {
        let _ = writeln!(out, "listo_endpoint_failures_total{{endpoint=\"{}\"}} {}", escape_label(&e.endpoint), e.failures);
    }
    let _ = writeln!(out, "# HELP listo_error_responses_total Error responses sent to viewers, by status.\n# TYPE listo_error_responses_total counter");
    for (status, n) in &s.errors {
        let _ = writeln!(out, "listo_error_responses_total{{status=\"{status}\"}} {n}");
    }
    out
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
