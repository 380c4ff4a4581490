//! A stand-in third-party CDN controller (issue 10; seed figures 3 and 5): the CDN belongs to
//! someone else, so the operator's `listo instructor --alto` is reached as an ALTO server over
//! the AC interface. For every viewer's GET the controller
//!
//!  1. asks the ALTO server's LISTO **selection** resource which LISTO node suits the viewer
//!     (`{"endpoint":"ipv4:…","channel":…}` → a node URL, or `"none"`);
//!  2. picks one of its CDN endpoints — the cheapest from the node by the ALTO **endpoint cost**
//!     service (`routingcost`), the first on a tie;
//!  3. sends the **notification** (channel, chosen endpoint, node, the requested playlist) and
//!     the **302** to the node *in parallel* (claim 9): the ALTO server instructs the node (LA),
//!     which starts fetching the playlist while the 302 travels. Only for a (node, channel,
//!     endpoint) not yet acknowledged does the 302 wait for the notification's answer (at most
//!     the ALTO server's acknowledgement wait), so the viewer can never reach a node that does
//!     not know the channel yet; once acknowledged, every later viewer's 302 leaves at once and
//!     its notification (deduplicated by the ALTO server) runs beside it;
//!  4. answers `"none"` or a failed notification with a 302 to the CDN endpoint itself.
//!
//! The resources are found through the ALTO directory (`GET /alto`) by media type, as a stock
//! ALTO client would. The client address is the TCP peer, or the last `X-Forwarded-For` hop
//! when the peer is a `--trusted-proxy` (the demo and tests simulate subnets that way).
//!
//!     cargo run --example cdn_controller -- --listen 127.0.0.1:8100 \
//!         --alto http://127.0.0.1:8090/alto --token s3cret \
//!         --endpoint 127.0.0.1:18080 --channel ch0=/live/ch0/ [--trusted-proxy 127.0.0.1] [--seconds S]
//!
//! `tests/alto.rs` runs the same code in-process (this file is included there as a module).

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ipnet::IpNet;
use listo::instructor::mediator_http::{check_target, client_ip};
use serde_json::{json, Value};

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Where viewers connect.
    pub listen: SocketAddr,
    /// The ALTO server's directory URL (`http://IP:PORT/alto`).
    pub alto: String,
    /// The bearer token the ALTO server gave this controller.
    pub token: String,
    /// The CDN's endpoints for every channel.
    pub endpoints: Vec<SocketAddr>,
    /// Channels: name and path prefix.
    pub channels: Vec<(String, String)>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Timeout of every ALTO request and viewer connection.
    pub timeout: Duration,
}

/// What the controller did so far.
#[derive(Debug, Default)]
pub struct ControllerStats {
    /// 302s to a LISTO node.
    pub to_node: AtomicU64,
    /// 302s to a CDN endpoint.
    pub to_cdn: AtomicU64,
    /// Selections answered.
    pub selections: AtomicU64,
    /// Notifications sent.
    pub notifications: AtomicU64,
    /// 302s that waited for a notification's answer (new node, channel, endpoint).
    pub waited: AtomicU64,
    /// Viewer requests refused (400, 404, 405, 502).
    pub refused: AtomicU64,
}

/// A resource of the ALTO directory: where to POST it.
#[derive(Debug, Clone)]
struct Resource {
    addr: SocketAddr,
    path: String,
}

struct Ctx {
    cfg: ControllerConfig,
    selection: Resource,
    notification: Resource,
    endpoint_cost: Option<Resource>,
    acknowledged: Mutex<HashSet<(SocketAddr, String, SocketAddr)>>,
    stats: Arc<ControllerStats>,
    stop: AtomicBool,
}

/// A running controller.
pub struct Controller {
    local: SocketAddr,
    ctx: Arc<Ctx>,
    thread: Option<JoinHandle<()>>,
}

impl Controller {
    /// Reads the ALTO directory, binds and serves in background threads.
    pub fn start(cfg: ControllerConfig) -> Result<Controller, String> {
        if cfg.endpoints.is_empty() {
            return Err("at least one --endpoint is needed".into());
        }
        let (dir_addr, dir_path) = split_url(&cfg.alto).ok_or_else(|| format!("--alto: '{}' is not http://IP:PORT/PATH", cfg.alto))?;
        let (status, dir) = request(dir_addr, "GET", &dir_path, &[("Accept", "application/alto-directory+json,application/alto-error+json")], None, cfg.timeout)
            .map_err(|e| format!("ALTO directory {}: {e}", cfg.alto))?;
        if status != 200 {
            return Err(format!("ALTO directory {}: status {status}: {dir}", cfg.alto));
        }
        let find = |mt: &str| -> Option<Resource> {
            let resources = dir.get("resources")?.as_object()?;
            resources.values().filter(|r| r["media-type"] == mt).find_map(|r| {
                let (addr, path) = split_url(r["uri"].as_str()?)?;
                Some(Resource { addr, path })
            })
        };
        let selection = find("application/alto-listo-selection+json").ok_or("the ALTO directory lists no LISTO selection resource")?;
        let notification = find("application/alto-listo-notification+json").ok_or("the ALTO directory lists no LISTO notification resource")?;
        let endpoint_cost = find("application/alto-endpointcost+json");
        let listener = TcpListener::bind(cfg.listen).map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let ctx = Arc::new(Ctx {
            cfg,
            selection,
            notification,
            endpoint_cost,
            acknowledged: Mutex::new(HashSet::new()),
            stats: Arc::new(ControllerStats::default()),
            stop: AtomicBool::new(false),
        });
        let c = ctx.clone();
        let thread = std::thread::Builder::new()
            .name("cdn-controller".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if c.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = conn else { continue };
                    let c2 = c.clone();
                    let _ = std::thread::Builder::new().name("cdn-controller-conn".into()).spawn(move || serve(stream, &c2));
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Controller { local, ctx, thread: Some(thread) })
    }

    /// Where viewers connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The counters.
    pub fn stats(&self) -> Arc<ControllerStats> {
        self.ctx.stats.clone()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.ctx.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.local, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `http://IP:PORT/path` → (address, path).
fn split_url(url: &str) -> Option<(SocketAddr, String)> {
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    Some((hostport.parse().ok()?, path))
}

/// One HTTP/1.1 request (`Connection: close`); the status and the JSON body (`Null` if none).
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>, timeout: Duration) -> io::Result<(u16, Value)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let _ = s.set_nodelay(true);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 4 << 20 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "answer too large"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let mut hs = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut hs);
    let head = match resp.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed answer")),
    };
    let code = resp.code.unwrap_or(0);
    let v = if buf.len() > head { serde_json::from_slice(&buf[head..]).unwrap_or(Value::Null) } else { Value::Null };
    Ok((code, v))
}

impl Ctx {
    fn post(&self, r: &Resource, params_type: &str, answer_type: &str, body: &Value) -> Result<Value, String> {
        let auth = format!("Bearer {}", self.cfg.token);
        let accept = format!("{answer_type},application/alto-error+json");
        let (status, v) = request(r.addr, "POST", &r.path, &[("Authorization", &auth), ("Content-Type", params_type), ("Accept", &accept)], Some(body), self.cfg.timeout)
            .map_err(|e| format!("{}{}: {e}", r.addr, r.path))?;
        if status != 200 {
            return Err(format!("{}{}: status {status}: {v}", r.addr, r.path));
        }
        Ok(v)
    }

    /// The LISTO node for a viewer and channel (`None`: serve it from the CDN).
    fn select(&self, viewer: IpAddr, channel: &str) -> Result<Option<SocketAddr>, String> {
        let typed = match viewer {
            IpAddr::V4(a) => format!("ipv4:{a}"),
            IpAddr::V6(a) => format!("ipv6:{a}"),
        };
        let v = self.post(
            &self.selection,
            "application/alto-listo-selectionparams+json",
            "application/alto-listo-selection+json",
            &json!({"endpoint": typed, "channel": channel}),
        )?;
        self.stats.selections.fetch_add(1, Ordering::Relaxed);
        match v["selection"]["listo-node"].as_str() {
            Some("none") => Ok(None),
            Some(_) => {
                let url = v["selection"]["url"].as_str().ok_or("selection without url")?;
                let (addr, _) = split_url(url).ok_or_else(|| format!("selection url '{url}'"))?;
                Ok(Some(addr))
            }
            None => Err(format!("odd selection answer {v}")),
        }
    }

    /// The CDN endpoint cheapest from `from` by ALTO routingcost (first on a tie or without the
    /// endpoint cost service).
    fn pick_endpoint(&self, from: IpAddr) -> SocketAddr {
        let first = self.cfg.endpoints[0];
        let Some(ecs) = self.endpoint_cost.as_ref().filter(|_| self.cfg.endpoints.len() > 1) else { return first };
        let typed = |ip: IpAddr| match ip {
            IpAddr::V4(a) => format!("ipv4:{a}"),
            IpAddr::V6(a) => format!("ipv6:{a}"),
        };
        let src = typed(from);
        let dsts: Vec<String> = self.cfg.endpoints.iter().map(|e| typed(e.ip())).collect();
        let body = json!({"cost-type": {"cost-mode": "numerical", "cost-metric": "routingcost"}, "endpoints": {"srcs": [src], "dsts": dsts}});
        let Ok(v) = self.post(ecs, "application/alto-endpointcostparams+json", "application/alto-endpointcost+json", &body) else { return first };
        let row = &v["endpoint-cost-map"][&src];
        let mut best = (f64::INFINITY, first);
        for (e, d) in self.cfg.endpoints.iter().zip(&dsts) {
            if let Some(c) = row[d].as_f64() {
                if c < best.0 {
                    best = (c, *e);
                }
            }
        }
        best.1
    }

    /// Tells the ALTO server which endpoint serves `channel` on `node`; true when the node
    /// acknowledged (now or earlier), false when it could not be instructed.
    fn notify(&self, node: SocketAddr, channel: &(String, String), endpoint: SocketAddr, target: &str) -> Result<bool, String> {
        self.stats.notifications.fetch_add(1, Ordering::Relaxed);
        let v = self.post(
            &self.notification,
            "application/alto-listo-notificationparams+json",
            "application/alto-listo-notification+json",
            &json!({"channel": channel.0, "path-prefix": channel.1, "listo-node": node.to_string(),
                    "cdn-endpoint": endpoint.to_string(), "playlist": target}),
        )?;
        match v["notification"]["status"].as_str() {
            Some("ready") => Ok(true),
            Some("pending") => Ok(true),
            _ => Ok(false),
        }
    }

    /// Where a viewer's GET goes: (status, Location).
    fn route(self: &Arc<Self>, viewer: IpAddr, target: &str) -> (u16, Option<String>) {
        let Ok((path, _)) = check_target(target) else { return (400, None) };
        let Some(channel) = self.cfg.channels.iter().filter(|(_, p)| path.starts_with(p.as_str())).max_by_key(|(_, p)| p.len()).cloned() else {
            return (404, None);
        };
        let node = match self.select(viewer, &channel.0) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("cdn_controller: selection failed ({e}); serving from the CDN");
                None
            }
        };
        let Some(node) = node else {
            self.stats.to_cdn.fetch_add(1, Ordering::Relaxed);
            return (302, Some(format!("http://{}{target}", self.pick_endpoint(viewer))));
        };
        let endpoint = self.pick_endpoint(node.ip());
        let key = (node, channel.0.clone(), endpoint);
        let known = self.acknowledged.lock().map(|k| k.contains(&key)).unwrap_or(false);
        if known {
            // Notification and 302 in parallel.
            let (me, t, key2) = (self.clone(), target.to_string(), key.clone());
            let _ = std::thread::Builder::new().name("cdn-controller-notify".into()).spawn(move || {
                if !matches!(me.notify(node, &channel, endpoint, &t), Ok(true)) {
                    if let Ok(mut k) = me.acknowledged.lock() {
                        k.remove(&key2);
                    }
                }
            });
            self.stats.to_node.fetch_add(1, Ordering::Relaxed);
            return (302, Some(format!("http://{node}{target}")));
        }
        // A new (node, channel, endpoint): the 302 leaves once the node has acknowledged (its
        // playlist fetch has started) — the fetch then overlaps the 302 and the reconnect.
        self.stats.waited.fetch_add(1, Ordering::Relaxed);
        match self.notify(node, &channel, endpoint, target) {
            Ok(true) => {
                if let Ok(mut k) = self.acknowledged.lock() {
                    k.insert(key);
                }
                self.stats.to_node.fetch_add(1, Ordering::Relaxed);
                (302, Some(format!("http://{node}{target}")))
            }
            other => {
                if let Err(e) = other {
                    eprintln!("cdn_controller: notification failed ({e}); serving from the CDN");
                }
                self.stats.to_cdn.fetch_add(1, Ordering::Relaxed);
                (302, Some(format!("http://{endpoint}{target}")))
            }
        }
    }
}

/// One viewer request per connection.
fn serve(mut s: TcpStream, ctx: &Arc<Ctx>) {
    let _ = s.set_read_timeout(Some(ctx.cfg.timeout));
    let _ = s.set_write_timeout(Some(ctx.cfg.timeout));
    let _ = s.set_nodelay(true);
    let Ok(peer) = s.peer_addr() else { return };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 16 * 1024 {
            return;
        }
    }
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut hs);
    let (status, location) = match req.parse(&buf) {
        Ok(httparse::Status::Complete(_)) => match (req.method, req.path) {
            (Some("GET" | "HEAD"), Some(target)) => match client_ip(peer.ip(), req.headers, &ctx.cfg.trusted_proxies) {
                Ok(viewer) => ctx.route(viewer, target),
                Err(_) => (400, None),
            },
            _ => (405, None),
        },
        _ => (400, None),
    };
    if status != 302 {
        ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
    }
    let reason = match status {
        302 => "Found",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    if let Some(l) = location {
        out.push_str(&format!("Location: {l}\r\n"));
    }
    out.push_str("Cache-Control: no-store\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(out.as_bytes());
    let _ = s.shutdown(Shutdown::Write);
}

#[allow(dead_code)] // `tests/alto.rs` includes this file as a module and starts `Controller` itself.
fn main() -> Result<(), String> {
    let mut cfg = ControllerConfig {
        listen: "127.0.0.1:8100".parse().map_err(|_| "default address")?,
        alto: String::new(),
        token: String::new(),
        endpoints: Vec::new(),
        channels: Vec::new(),
        trusted_proxies: Vec::new(),
        timeout: Duration::from_secs(5),
    };
    let mut seconds: Option<u64> = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: cdn_controller --alto http://IP:PORT/alto --token TOKEN --endpoint IP:PORT... --channel NAME=PREFIX... \
                 [--listen ADDR] [--trusted-proxy IP]... [--seconds S]";
    for pair in args.chunks(2) {
        let (flag, v) = match pair {
            [f, v] => (f.as_str(), v.as_str()),
            _ => return Err(format!("{usage} (a flag without a value)")),
        };
        match flag {
            "--listen" => cfg.listen = v.parse().map_err(|_| format!("--listen: '{v}' is not IP:PORT"))?,
            "--alto" => cfg.alto = v.to_string(),
            "--token" => cfg.token = v.to_string(),
            "--endpoint" => cfg.endpoints.push(v.parse().map_err(|_| format!("--endpoint: '{v}' is not IP:PORT"))?),
            "--channel" => {
                let (n, p) = v.split_once('=').ok_or_else(|| format!("--channel: '{v}' is not NAME=PREFIX"))?;
                cfg.channels.push((n.to_string(), p.to_string()));
            }
            "--trusted-proxy" => {
                let net = match v.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => v.parse().map_err(|_| format!("--trusted-proxy: '{v}' is not an IP or prefix"))?,
                };
                cfg.trusted_proxies.push(net);
            }
            "--seconds" => seconds = Some(v.parse().map_err(|_| format!("--seconds: '{v}' is not a number"))?),
            _ => return Err(format!("{usage} (unknown flag {flag})")),
        }
    }
    if cfg.alto.is_empty() || cfg.token.is_empty() || cfg.channels.is_empty() {
        return Err(usage.into());
    }
    let c = Controller::start(cfg)?;
    eprintln!("cdn_controller on {}", c.local_addr());
    let t = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if seconds.is_some_and(|s| t.elapsed() >= Duration::from_secs(s)) {
            break;
        }
    }
    let s = c.stats();
    eprintln!(
        "cdn_controller: stopped; {} to nodes, {} to the CDN, {} notifications",
        s.to_node.load(Ordering::Relaxed),
        s.to_cdn.load(Ordering::Relaxed),
        s.notifications.load(Ordering::Relaxed)
    );
    Ok(())
}
