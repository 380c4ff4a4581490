//! The HTTP mediator (`listo instructor`): answers a viewer's `GET` for a channel path with
//! `302 Found` to the same path and query on the chosen node, instructing that node (and every
//! level above it) first — see the module docs of [`crate::instructor`] for the timing.
//!
//! * Client address: the TCP peer, or — only when the peer is a trusted proxy — the last hop of
//!   `X-Forwarded-For` (the one the trusted proxy itself appended).
//! * `Location` is `http://{node listen}{target}`, built from the validated request target only:
//!   a target with a control byte, space, non-ASCII byte, `#`, `\`, a dot segment or not in
//!   origin form is refused with 400, and no request header ever reaches `Location`.
//! * Unknown channel path → 404; client in no PID with nodes → 302 to the channel's CDN
//!   endpoint; a node that could not be instructed → 302 to the CDN endpoint too.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::http_server::{client_wants_close, Reply, Server, ServerConfig, Service};
use super::lpm::canonical;
use super::{Instructor, Readiness, Route};

/// Longest request target accepted.
const MAX_TARGET: usize = 8 * 1024;

/// How the HTTP mediator runs.
#[derive(Debug, Clone)]
pub struct HttpMediatorConfig {
    /// Where viewers (or the proxy in front) connect.
    pub listen: SocketAddr,
    /// Peers whose `X-Forwarded-For` is believed (addresses or prefixes).
    pub trusted_proxies: Vec<IpNet>,
    /// Most connections served at once; more are closed at accept.
    pub max_connections: usize,
    /// Idle and I/O timeout per connection.
    pub io_timeout: Duration,
    /// Log one line per redirect to stderr.
    pub verbose: bool,
}

impl HttpMediatorConfig {
    /// A mediator on `listen` that trusts no proxy.
    pub fn new(listen: SocketAddr) -> Self {
        HttpMediatorConfig { listen, trusted_proxies: Vec::new(), max_connections: 4096, io_timeout: Duration::from_secs(10), verbose: false }
    }
}

/// What the HTTP mediator answered so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediatorStats {
    /// 302s to a node.
    pub to_node: u64,
    /// 302s to a CDN endpoint (client in no PID with nodes, or the node could not be instructed).
    pub to_cdn: u64,
    /// Redirects sent while the node's acknowledgement was still outstanding.
    pub unacknowledged: u64,
    /// 404s (no channel for the path).
    pub not_found: u64,
    /// 400/405/431 answers.
    pub refused: u64,
    /// Connections accepted.
    pub connections: u64,
}

#[derive(Debug, Default)]
struct Counters {
    to_node: AtomicU64,
    to_cdn: AtomicU64,
    unacknowledged: AtomicU64,
    not_found: AtomicU64,
    refused: AtomicU64,
    connections: AtomicU64,
}

struct Ctx {
    instructor: Arc<Instructor>,
    cfg: HttpMediatorConfig,
    counters: Counters,
}

/// A running HTTP mediator.
pub struct HttpMediator {
    server: Server,
    ctx: Arc<Ctx>,
}

impl std::fmt::Debug for HttpMediator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMediator").field("local", &self.server.local_addr()).finish_non_exhaustive()
    }
}

impl HttpMediator {
    /// Binds and starts serving in background threads.
    pub fn start(cfg: HttpMediatorConfig, instructor: Arc<Instructor>) -> io::Result<HttpMediator> {
        let scfg = ServerConfig { listen: cfg.listen, max_connections: cfg.max_connections, io_timeout: cfg.io_timeout, name: "listo-mediator" };
        let ctx = Arc::new(Ctx { instructor, cfg, counters: Counters::default() });
        let server = Server::start(scfg, ctx.clone())?;
        Ok(HttpMediator { server, ctx })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Counters so far.
    pub fn stats(&self) -> MediatorStats {
        let c = &self.ctx.counters;
        MediatorStats {
            to_node: c.to_node.load(Ordering::Relaxed),
            to_cdn: c.to_cdn.load(Ordering::Relaxed),
            unacknowledged: c.unacknowledged.load(Ordering::Relaxed),
            not_found: c.not_found.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting (connections in progress finish their current request).
    pub fn shutdown(mut self) {
        self.server.shutdown();
    }
}

/// One answer: status, extra header lines (already safe), body, and whether to close after.
struct Answer {
    status: u16,
    location: Option<String>,
    allow: bool,
    body: String,
    close: bool,
}

impl Answer {
    fn error(status: u16, body: &str) -> Answer {
        Answer { status, location: None, allow: status == 405, body: format!("{body}\n"), close: true }
    }

    fn into_reply(self) -> Reply {
        let mut headers = Vec::with_capacity(5);
        if let Some(l) = self.location {
            headers.push(("Location", l));
        }
        if self.allow {
            headers.push(("Allow", "GET, HEAD".to_string()));
        }
        headers.push(("Cache-Control", "no-store".to_string()));
        headers.push(("Access-Control-Allow-Origin", "*".to_string()));
        headers.push(("Content-Type", "text/plain; charset=utf-8".to_string()));
        Reply { status: self.status, headers, body: self.body.into_bytes(), close: self.close }
    }
}

impl Service for Ctx {
    fn handle(&self, head: &[u8], _body: &[u8], peer: SocketAddr) -> Reply {
        let answer = handle(head, peer.ip(), self);
        if answer.status >= 400 {
            let c = &self.counters;
            if answer.status == 404 { c.not_found.fetch_add(1, Ordering::Relaxed) } else { c.refused.fetch_add(1, Ordering::Relaxed) };
        }
        answer.into_reply()
    }

    fn refuse(&self, status: u16, why: &str) -> Reply {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        Answer::error(status, why).into_reply()
    }

    fn connection(&self) {
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
    }
}

/// Answers one complete request head.
fn handle(head: &[u8], peer: IpAddr, ctx: &Ctx) -> Answer {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Answer::error(400, "incomplete request"),
        Err(e) => return Answer::error(400, &format!("malformed request: {e}")),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Answer::error(400, "malformed request line");
    };
    let close = client_wants_close(version, req.headers);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length") && h.value.iter().any(|&b| b != b'0' && !b.is_ascii_whitespace()))
        {
            return Answer::error(400, "request bodies are not accepted");
        }
    }
    if method != "GET" && method != "HEAD" {
        return Answer::error(405, "only GET and HEAD");
    }
    let (path, _query) = match check_target(target) {
        Ok(x) => x,
        Err(why) => return Answer::error(400, why),
    };
    let client = match client_ip(peer, req.headers, &ctx.cfg.trusted_proxies) {
        Ok(ip) => ip,
        Err(why) => return Answer::error(400, why),
    };
    let topo = ctx.instructor.topology();
    let Some(channel) = topo.channel_for_path(path) else {
        return Answer::error(404, "no channel for this path");
    };
    let route = topo.route(&IpNet::from(client), channel);
    let (to, via) = match route {
        Route::Nowhere => return Answer::error(503, "the channel has no endpoint"),
        Route::Cdn { endpoint } => (endpoint, "cdn"),
        Route::Node { listen, steps } => {
            let prefetch = crate::media::is_playlist_path(path).then_some(target);
            match ctx.instructor.instruct(&steps, prefetch, ctx.instructor.config().ack_wait) {
                Readiness::Ready => (listen, "node"),
                Readiness::Pending => {
                    ctx.counters.unacknowledged.fetch_add(1, Ordering::Relaxed);
                    (listen, "node")
                }
                Readiness::Failed(e) => {
                    if ctx.cfg.verbose {
                        eprintln!("listo instructor: {client}: node {listen} unavailable ({e}); sending to the CDN");
                    }
                    (topo.endpoints_from(channel, topo.pid_of(client).map(|(_, p)| p)).first().copied().unwrap_or(listen), "cdn")
                }
            }
        }
    };
    if via == "node" {
        ctx.counters.to_node.fetch_add(1, Ordering::Relaxed);
    } else {
        ctx.counters.to_cdn.fetch_add(1, Ordering::Relaxed);
    }
    if ctx.cfg.verbose {
        eprintln!("listo instructor: {client} {method} {target} → {via} {to}");
    }
    Answer { status: 302, location: Some(format!("http://{to}{target}")), allow: false, body: String::new(), close }
}

/// Checks a request target for use in `Location`; returns (path, query).
pub fn check_target(target: &str) -> Result<(&str, Option<&str>), &'static str> {
    if target.len() > MAX_TARGET {
        return Err("request target too long");
    }
    if !target.starts_with('/') || target.starts_with("//") {
        return Err("request target must be a path (origin form)");
    }
    if target.bytes().any(|b| b <= b' ' || b >= 0x7f || b == b'#' || b == b'\\') {
        return Err("request target holds a control byte, space, non-ASCII byte, '#' or '\\'");
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    for seg in path.split('/') {
        let decoded = seg.replace("%2e", ".").replace("%2E", ".");
        if decoded == "." || decoded == ".." {
            return Err("request path holds a dot segment");
        }
    }
    Ok((path, query))
}

/// The client's address: the peer, or the last `X-Forwarded-For` hop when the peer is trusted.
pub fn client_ip(peer: IpAddr, headers: &[httparse::Header<'_>], trusted: &[IpNet]) -> Result<IpAddr, &'static str> {
    let peer = canonical(peer);
    if !trusted.iter().any(|n| n.contains(&peer)) {
        return Ok(peer);
    }
    let mut last: Option<&[u8]> = None;
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for")) {
        if let Some(hop) = h.value.split(|&b| b == b',').map(trim).rev().find(|s| !s.is_empty()) {
            last = Some(hop);
        }
    }
    let Some(hop) = last else { return Ok(peer) };
    let hop = std::str::from_utf8(hop).map_err(|_| "X-Forwarded-For is not ASCII")?;
    parse_hop(hop).map(canonical).ok_or("X-Forwarded-For's last hop is not an IP address")
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

/// `1.2.3.4`, `1.2.3.4:5`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:5`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, tail) = rest.split_once(']')?;
        if !(tail.is_empty() || tail.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok())) {
            return None;
        }
        return ip.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (ip, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(check_target("/live/ch1/index.m3u8?a=1"), Ok(("/live/ch1/index.m3u8", Some("a=1"))));
        for bad in ["live", "//evil.example/x", "/a b", "/a\r\nSet-Cookie: x", "/a\t", "/x#y", "/a/../b", "/a/%2e%2E/b", "/a\\b", "/é", "/a/./b"] {
            assert!(check_target(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hops() {
        let h = |v: &'static [u8]| httparse::Header { name: "X-Forwarded-For", value: v };
        let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(client_ip(lo, &[h(b"1.1.1.1, 10.1.2.3")], &trusted), Ok("10.1.2.3".parse().unwrap()));
        assert_eq!(client_ip(lo, &[h(b"1.1.1.1"), h(b"[2001:db8::1]:443")], &trusted), Ok("2001:db8::1".parse().unwrap()));
        assert_eq!(client_ip(lo, &[h(b"10.0.0.1:80")], &trusted), Ok("10.0.0.1".parse().unwrap()));
        assert_eq!(client_ip(lo, &[h(b"::ffff:10.0.0.9")], &trusted), Ok("10.0.0.9".parse().unwrap()));
        assert!(client_ip(lo, &[h(b"unknown")], &trusted).is_err());
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(client_ip(other, &[h(b"10.1.2.3")], &trusted), Ok(other));
        assert_eq!(client_ip(lo, &[], &trusted), Ok(lo));
    }
}
