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
    /// The `Authorization` header's value, if any.
    authorization: Option<Vec<u8>>,
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
    let mut authorization = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(h.value.to_vec());
        } else if h.name.eq_ignore_ascii_case("content-length") {
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
        authorization,
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
        if let Some(token) = &self.control_token {
            let presented = req.authorization.as_deref().and_then(|v| v.strip_prefix(b"Bearer ")).unwrap_or(b"");
            if !crate::http::constant_time_eq(token.as_bytes(), presented) {
                let mut out = json_error(401, "the control port needs Authorization: Bearer <its --control-token>");
                // Insert the challenge after the status line.
                if let Some(i) = out.windows(2).position(|w| w == b"\r\n") {
                    out.splice(i + 2..i + 2, b"WWW-Authenticate: Bearer realm=\"listo-control\"\r\n".iter().copied());
                }
                return out;
            }
        }
        let now = self.now();
        let path = req.path.split('?').next().unwrap_or("");
        match (req.method.as_str(), path) {
            ("POST", "/v1/channels") => match parse_instruction_json(&req.body) {
                Ok(ins) => {
                    let name = ins.channel.clone();
                    match self.node.instruct(now, ins.clone()) {
                        Ok(()) => {
                            self.broadcast(super::ControlMsg::Instruct(ins));
                            json(201, serde_json::json!({ "ok": true, "channel": name }))
                        }
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
                    Ok(()) => {
                        self.broadcast(super::ControlMsg::Withdraw(name.to_string()));
                        json(200, serde_json::json!({ "ok": true, "withdrawn": name }))
                    }
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
        let mut stats = self.node.stats();
        let mut counters = self.counters.clone();
        // Other workers of this node, as of now.
        self.merge_peer_stats(&mut stats, &mut counters);
        let (path, query) = req.path.split_once('?').unwrap_or((req.path.as_str(), ""));
        match (req.method.as_str(), path) {
            ("GET", "/v1/events") => {
                let since = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("since="))
                    .map(|v| v.parse::<u64>())
                    .unwrap_or(Ok(0));
                match since {
                    Ok(n) => json(200, self.log.lock().since_json(n)),
                    Err(_) => json_error(400, "since must be a non-negative integer"),
                }
            }
            ("POST", "/v1/drain") => {
                self.start_drain();
                json(200, serde_json::json!({ "ok": true, "draining": true }))
            }
            (_, "/v1/events") => json_error(405, "use GET"),
            (_, "/v1/drain") => json_error(405, "use POST"),
            ("GET", "/metrics") => response(200, "text/plain; version=0.0.4; charset=utf-8", prometheus(&stats, &counters).as_bytes()),
            ("GET", "/v1/stats") => json(200, stats_json(&stats, &counters)),
            (_, "/metrics") | (_, "/v1/stats") => json_error(405, "use GET"),
            _ => json_error(404, "no such resource; see /metrics, /v1/stats, /v1/events, /v1/drain"),
        }
    }
}

/// The node's counters as JSON (the admin port's `/v1/stats`): [`Stats::to_json`] plus the
/// driver's own connection counters.
pub fn stats_json(s: &Stats, d: &super::DriverCounters) -> serde_json::Value {
    let mut v = s.to_json();
    if let Some(o) = v.as_object_mut() {
        o.insert("connections_accepted".into(), d.accepted.into());
        o.insert("connections_closed_by_node".into(), d.closed_by_node.into());
        o.insert("upstream_connect_errors".into(), d.connect_errors.into());
    }
    v
}

/// One metric family of a per-item table: name, type, help, and how to read it from an item.
type Family<T> = (&'static str, &'static str, &'static str, fn(&T) -> u64);

/// The node's counters in the Prometheus text exposition format.
pub fn prometheus(s: &Stats, d: &super::DriverCounters) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let per_channel: [Family<crate::ChannelStats>; 15] = [
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
    let _ = writeln!(out, "# HELP listo_saving_ratio 1 - upstream bytes / downstream bytes of the channel.\n# TYPE listo_saving_ratio gauge");
    for c in &s.channels {
        let _ = writeln!(out, "listo_saving_ratio{{channel=\"{}\"}} {}", escape_label(&c.channel), c.saving_ratio());
    }
    let _ = writeln!(out, "# HELP listo_upstream_errors_total Failed upstream attempts, by kind (connect, timeout, status, malformed).\n# TYPE listo_upstream_errors_total counter");
    for c in &s.channels {
        for k in crate::admin::UpstreamErrorKind::ALL {
            let _ = writeln!(out, "listo_upstream_errors_total{{channel=\"{}\",kind=\"{}\"}} {}", escape_label(&c.channel), k.as_str(), c.upstream_errors.get(k));
        }
    }
    let _ = writeln!(out, "# HELP listo_channel_error_responses_total Error responses sent to the channel's viewers, by status.\n# TYPE listo_channel_error_responses_total counter");
    for c in &s.channels {
        for (status, n) in &c.error_responses {
            let _ = writeln!(out, "listo_channel_error_responses_total{{channel=\"{}\",status=\"{status}\"}} {n}", escape_label(&c.channel));
        }
    }
    let _ = writeln!(out, "# HELP listo_upstream_latency_seconds Time from sending a request to the CDN endpoint to its response head.\n# TYPE listo_upstream_latency_seconds histogram");
    for c in &s.channels {
        let ch = escape_label(&c.channel);
        let h = &c.upstream_latency;
        for (le, n) in h.cumulative() {
            let le = le.map_or_else(|| "+Inf".to_string(), |ms| format!("{}", ms as f64 / 1000.0));
            let _ = writeln!(out, "listo_upstream_latency_seconds_bucket{{channel=\"{ch}\",le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "listo_upstream_latency_seconds_sum{{channel=\"{ch}\"}} {}", h.sum_us as f64 / 1e6);
        let _ = writeln!(out, "listo_upstream_latency_seconds_count{{channel=\"{ch}\"}} {}", h.count);
    }
    let per_rendition: [Family<crate::admin::RenditionStats>; 9] = [
        ("listo_rendition_viewers", "gauge", "Viewer sessions of the rendition active within the target duration.", |r| r.viewers),
        ("listo_rendition_peak_viewers", "gauge", "Most viewer sessions of the rendition at once.", |r| r.peak_viewers),
        ("listo_rendition_viewer_seconds_total", "counter", "Viewer-seconds of the rendition.", |r| r.viewer_seconds),
        ("listo_rendition_requests_total", "counter", "Viewer requests for the rendition.", |r| r.requests),
        ("listo_rendition_hits_total", "counter", "Rendition requests answered from a complete cached object.", |r| r.hits),
        ("listo_rendition_coalesced_total", "counter", "Rendition requests attached to an object being fetched.", |r| r.coalesced),
        ("listo_rendition_misses_total", "counter", "Rendition requests that started an upstream fetch.", |r| r.misses),
        ("listo_rendition_upstream_bytes_total", "counter", "Body bytes of the rendition received from the CDN endpoint.", |r| r.upstream_bytes),
        ("listo_rendition_downstream_bytes_total", "counter", "Bytes of the rendition written to viewers.", |r| r.downstream_bytes),
    ];
    for (name, kind, help, get) in per_rendition {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for c in &s.channels {
            for r in &c.renditions {
                let _ = writeln!(out, "{name}{{channel=\"{}\",rendition=\"{}\"}} {}", escape_label(&c.channel), escape_label(&r.rendition), get(r));
            }
        }
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
