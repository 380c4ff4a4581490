//! The ALTO server of `listo instructor --alto ADDR` (RFC 7285 plus the LISTO extension of the
//! AC interface; documents and shapes in [`super::alto`]), on the instructor's blocking HTTP
//! server.
//!
//! | method | path | media type (accepts) |
//! |---|---|---|
//! | GET | `/alto` | `application/alto-directory+json` |
//! | GET | `/alto/networkmap` | `application/alto-networkmap+json` |
//! | GET | `/alto/costmap/num-routing` | `application/alto-costmap+json` |
//! | POST | `/alto/endpointcost` | `application/alto-endpointcost+json` (`…endpointcostparams+json`) |
//! | POST | `/alto/listo/selection` | `application/alto-listo-selection+json` (`…selectionparams+json`) |
//! | POST | `/alto/listo/notification` | `application/alto-listo-notification+json` (`…notificationparams+json`) |
//!
//! The read side is open. Selection and notification need `Authorization: Bearer TOKEN` with a
//! token of [`AltoServerConfig::tokens`], compared in constant time; otherwise 401
//! (`WWW-Authenticate: Bearer`, body `E_UNAUTHORIZED`) and nothing happens. The order of checks
//! is method, token, `Content-Type`, body — a request refused at any step changes nothing.
//! A notification instructs at once (deduplicated per node, channel and endpoint) and answers
//! when the node has acknowledged, at most [`super::InstructorConfig::ack_wait`]: the node is
//! then fetching the playlist while the controller's 302 travels (claim 9).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;

use super::alto::{self, AltoError, AltoMaps, Bearer};
use super::http_server::{client_wants_close, Reply, Server, ServerConfig, Service};
use super::{Instructor, Readiness, Topology};

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// How the ALTO server runs.
#[derive(Debug, Clone)]
pub struct AltoServerConfig {
    /// Where ALTO clients (the CDN controller) connect.
    pub listen: SocketAddr,
    /// Bearer tokens allowed to use the LISTO selection and notification resources (none: both
    /// refuse every request).
    pub tokens: Vec<String>,
    /// The URL the directory's `uri`s start with (`http://alto.example:8090`); default: from
    /// the request's `Host` when it is a plain host\[:port\], else the bound address.
    pub public_url: Option<String>,
    /// Most connections served at once; more are closed at accept.
    pub max_connections: usize,
    /// Idle and I/O timeout per connection.
    pub io_timeout: Duration,
    /// Log selections and notifications to stderr.
    pub verbose: bool,
}

impl AltoServerConfig {
    /// An ALTO server on `listen` with no client tokens.
    pub fn new(listen: SocketAddr) -> Self {
        AltoServerConfig { listen, tokens: Vec::new(), public_url: None, max_connections: 1024, io_timeout: Duration::from_secs(10), verbose: false }
    }
}

/// What the ALTO server answered so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AltoStats {
    /// Directory, network map and cost map documents served.
    pub documents: u64,
    /// Endpoint cost answers.
    pub endpoint_costs: u64,
    /// Selection answers naming a node.
    pub selections_node: u64,
    /// Selection answers saying "none".
    pub selections_none: u64,
    /// Notifications accepted (instructions started or already in place).
    pub notifications: u64,
    /// Requests refused for a missing or wrong token.
    pub unauthorized: u64,
    /// Other error answers (400, 404, 405, 406, 411, 413, 415, 431).
    pub errors: u64,
    /// Connections accepted.
    pub connections: u64,
}

#[derive(Debug, Default)]
struct Counters {
    documents: AtomicU64,
    endpoint_costs: AtomicU64,
    selections_node: AtomicU64,
    selections_none: AtomicU64,
    notifications: AtomicU64,
    unauthorized: AtomicU64,
    errors: AtomicU64,
    connections: AtomicU64,
}

struct Ctx {
    instructor: Arc<Instructor>,
    cfg: AltoServerConfig,
    local: Mutex<Option<SocketAddr>>,
    maps: Mutex<Option<(Arc<Topology>, Arc<AltoMaps>)>>,
    counters: Counters,
}

/// A running ALTO server.
pub struct AltoServer {
    server: Server,
    ctx: Arc<Ctx>,
}

impl std::fmt::Debug for AltoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AltoServer").field("local", &self.server.local_addr()).finish_non_exhaustive()
    }
}

impl AltoServer {
    /// Binds and starts serving in background threads.
    pub fn start(cfg: AltoServerConfig, instructor: Arc<Instructor>) -> io::Result<AltoServer> {
        let scfg = ServerConfig { listen: cfg.listen, max_connections: cfg.max_connections, io_timeout: cfg.io_timeout, name: "listo-alto" };
        let ctx = Arc::new(Ctx { instructor, cfg, local: Mutex::new(None), maps: Mutex::new(None), counters: Counters::default() });
        let server = Server::start(scfg, ctx.clone())?;
        *ctx.local.lock() = Some(server.local_addr());
        Ok(AltoServer { server, ctx })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Counters so far.
    pub fn stats(&self) -> AltoStats {
        let c = &self.ctx.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AltoStats {
            documents: l(&c.documents),
            endpoint_costs: l(&c.endpoint_costs),
            selections_node: l(&c.selections_node),
            selections_none: l(&c.selections_none),
            notifications: l(&c.notifications),
            unauthorized: l(&c.unauthorized),
            errors: l(&c.errors),
            connections: l(&c.connections),
        }
    }

    /// Stops accepting (connections in progress finish their current request).
    pub fn shutdown(mut self) {
        self.server.shutdown();
    }
}

/// A JSON answer with its media type.
fn json_reply(status: u16, media_type: &str, body: &Value, close: bool) -> Reply {
    let mut bytes = body.to_string().into_bytes();
    bytes.push(b'\n');
    Reply {
        status,
        headers: vec![("Content-Type", media_type.to_string()), ("Cache-Control", "no-store".to_string())],
        body: bytes,
        close,
    }
}

fn error_reply(e: &AltoError, close: bool) -> Reply {
    let mut r = json_reply(e.status, alto::MT_ERROR, &e.body(), close);
    match e.status {
        401 => r.headers.push(("WWW-Authenticate", "Bearer realm=\"listo-alto\"".to_string())),
        405 => r.headers.push(("Allow", "GET, HEAD, POST".to_string())),
        _ => {}
    }
    r
}

/// The media type of a header value (parameters and case dropped).
fn media_type(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    s.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// True when the request's `Accept` (absent: anything) allows `mt`.
fn accepts(headers: &[httparse::Header<'_>], mt: &str) -> bool {
    let mut seen = false;
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case("accept")) {
        seen = true;
        let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
        for range in v.split(',') {
            let r = range.split(';').next().unwrap_or("").trim();
            if r == mt || r == "*/*" || r == "application/*" {
                return true;
            }
        }
    }
    !seen
}

/// `Host` when it is a plain host\[:port\] (letters, digits, `.-:[]`).
fn host_header<'a>(headers: &[httparse::Header<'a>]) -> Option<&'a str> {
    let h = headers.iter().find(|h| h.name.eq_ignore_ascii_case("host"))?;
    let ok = !h.value.is_empty() && h.value.len() <= 255 && h.value.iter().all(|&b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    ok.then(|| std::str::from_utf8(h.value).ok()).flatten()
}

impl Ctx {
    fn maps(&self) -> (Arc<Topology>, Arc<AltoMaps>) {
        let topo = self.instructor.topology();
        let mut cache = self.maps.lock();
        if let Some((t, m)) = cache.as_ref() {
            if Arc::ptr_eq(t, &topo) {
                return (topo, m.clone());
            }
        }
        let m = Arc::new(AltoMaps::new(&topo));
        *cache = Some((topo.clone(), m.clone()));
        (topo, m)
    }

    fn base_url(&self, headers: &[httparse::Header<'_>]) -> String {
        if let Some(u) = &self.cfg.public_url {
            return u.trim_end_matches('/').to_string();
        }
        match host_header(headers) {
            Some(h) => format!("http://{h}"),
            None => format!("http://{}", self.local.lock().unwrap_or(self.cfg.listen)),
        }
    }

    fn count_error(&self, e: &AltoError) {
        if e.status == 401 {
            self.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn answer(&self, head: &[u8], body: &[u8], peer: SocketAddr) -> Reply {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => {
                let e = AltoError::syntax("malformed HTTP request");
                self.count_error(&e);
                return error_reply(&e, true);
            }
        }
        let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
            let e = AltoError::syntax("malformed request line");
            self.count_error(&e);
            return error_reply(&e, true);
        };
        let close = client_wants_close(version, req.headers);
        let path = target.split('?').next().unwrap_or("");
        let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
        let result = self.route(method, path, req.headers, body, peer.ip());
        match result {
            Ok((mt, v)) => json_reply(200, mt, &v, close),
            Err(e) => {
                self.count_error(&e);
                error_reply(&e, close)
            }
        }
    }

    fn route(&self, method: &str, path: &str, headers: &[httparse::Header<'_>], body: &[u8], peer: IpAddr) -> Result<(&'static str, Value), AltoError> {
        let get = method == "GET" || method == "HEAD";
        let (mt, accepts_mt, post) = match path {
            alto::PATH_DIRECTORY => (alto::MT_DIRECTORY, None, false),
            alto::PATH_NETWORK_MAP => (alto::MT_NETWORK_MAP, None, false),
            alto::PATH_COST_MAP => (alto::MT_COST_MAP, None, false),
            alto::PATH_ENDPOINT_COST => (alto::MT_ENDPOINT_COST, Some(alto::MT_ENDPOINT_COST_PARAMS), true),
            alto::PATH_SELECTION => (alto::MT_SELECTION, Some(alto::MT_SELECTION_PARAMS), true),
            alto::PATH_NOTIFICATION => (alto::MT_NOTIFICATION, Some(alto::MT_NOTIFICATION_PARAMS), true),
            _ => return Err(AltoError::http(404)),
        };
        if (post && method != "POST") || (!post && !get) {
            return Err(AltoError::http(405));
        }
        if !post && !body.is_empty() {
            return Err(AltoError::syntax("a GET request has no body"));
        }
        let protected = path == alto::PATH_SELECTION || path == alto::PATH_NOTIFICATION;
        if protected {
            match alto::bearer_token(headers) {
                Bearer::Token(t) if alto::token_allowed(&self.cfg.tokens, t) => {}
                _ => return Err(AltoError::http(401)),
            }
        }
        if let Some(want) = accepts_mt {
            let ct = headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-type")).map(|h| media_type(h.value));
            if ct.as_deref() != Some(want) {
                return Err(AltoError::http(415));
            }
        }
        if !accepts(headers, mt) {
            return Err(AltoError::http(406));
        }
        let (topo, maps) = self.maps();
        let c = &self.counters;
        let v = match path {
            alto::PATH_DIRECTORY => {
                c.documents.fetch_add(1, Ordering::Relaxed);
                maps.directory(&self.base_url(headers))
            }
            alto::PATH_NETWORK_MAP => {
                c.documents.fetch_add(1, Ordering::Relaxed);
                maps.network_map().clone()
            }
            alto::PATH_COST_MAP => {
                c.documents.fetch_add(1, Ordering::Relaxed);
                maps.cost_map().clone()
            }
            alto::PATH_ENDPOINT_COST => {
                let v = maps.endpoint_cost(body, peer)?;
                c.endpoint_costs.fetch_add(1, Ordering::Relaxed);
                v
            }
            alto::PATH_SELECTION => {
                let v = alto::selection(&topo, &maps, body)?;
                let none = v["selection"]["listo-node"] == "none";
                if none { c.selections_none.fetch_add(1, Ordering::Relaxed) } else { c.selections_node.fetch_add(1, Ordering::Relaxed) };
                if self.cfg.verbose {
                    let s = &v["selection"];
                    eprintln!("listo alto: selection {} {} → {}", s["endpoint"], s["channel"], s["listo-node"]);
                }
                v
            }
            _ => {
                let n = alto::parse_notification(&topo, body)?;
                let wait = self.instructor.config().ack_wait;
                let (status, reason) = match self.instructor.instruct_pinned(&n.steps, n.prefetch.as_deref(), wait) {
                    Readiness::Ready => ("ready", None),
                    Readiness::Pending => ("pending", None),
                    Readiness::Failed(e) => ("failed", Some(e)),
                };
                c.notifications.fetch_add(1, Ordering::Relaxed);
                if self.cfg.verbose {
                    eprintln!("listo alto: notification {} on {} from {} → {status}", n.channel, n.node, n.cdn_endpoint);
                }
                alto::notification_answer(&maps, &n, status, reason.as_deref())
            }
        };
        Ok((mt, v))
    }
}

impl Service for Ctx {
    fn max_body(&self) -> usize {
        MAX_BODY
    }

    fn handle(&self, head: &[u8], body: &[u8], peer: SocketAddr) -> Reply {
        self.answer(head, body, peer)
    }

    fn refuse(&self, status: u16, why: &str) -> Reply {
        let mut e = AltoError::http(status);
        if status == 400 {
            e.syntax_error = Some(why.to_string());
        }
        self.count_error(&e);
        error_reply(&e, true)
    }

    fn connection(&self) {
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
    }
}
