//! Shared harness for the listo fuzz targets: a host that drives a `listo::Node` in virtual
//! time through its public sans-IO API, plays a CDN endpoint on the upstream connections, and
//! parses what every viewer receives strictly, so each target can check its invariants.
//!
//! The target bodies live here too (`viewer_stream`, `upstream_stream`, `playlist`,
//! `control_json`, `node_api`), so a corpus can be replayed by `cargo test` without libFuzzer.

use std::collections::{BTreeMap, VecDeque};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::rc::Rc;

use listo::{Config, ConnId, Node, Transmit, UpTransmit, UpstreamId, ViewerId, SECOND};

pub mod targets;

/// Set `LISTO_FUZZ_TRACE=1` to print every host action (debugging a crash).
pub fn tracing() -> bool {
    static T: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *T.get_or_init(|| std::env::var_os("LISTO_FUZZ_TRACE").is_some())
}

macro_rules! trace {
    ($($t:tt)*) => {
        if $crate::tracing() {
            eprintln!($($t)*);
        }
    };
}

/// One millisecond in node time.
pub const MS: u64 = 1_000_000;
/// Wall clock at virtual time 0 (Tue, 25 Nov 2025 10:00:00 GMT).
pub const WALL_START_UNIX: u64 = 1_764_064_800;
/// Bound on pump iterations: a node that never settles is a bug (livelock).
const PUMP_LIMIT: usize = 200_000;
/// Bound on timer firings while settling.
const TIMER_LIMIT: usize = 20_000;

/// What the host knows of one viewer connection.
#[derive(Debug, Default)]
pub struct ViewerLog {
    /// Every byte the node gave this viewer, in order.
    pub rx: Vec<u8>,
    /// The node said `Transmit::Close`.
    pub closed_by_node: bool,
    /// The client (the host) closed it.
    pub closed_by_client: bool,
    /// Most bytes the socket takes per drain; `Some(0)`: the socket is full (never-reading
    /// viewer), the host leaves the output queued.
    pub write_limit: Option<usize>,
    /// Bytes fed to the node for this viewer.
    pub fed: usize,
    /// `(rx.len(), closed())` when `check_parses` last parsed `rx` (which only grows).
    pub checked: std::cell::Cell<Option<(usize, bool)>>,
}

impl ViewerLog {
    /// Gone, either way.
    pub fn closed(&self) -> bool {
        self.closed_by_node || self.closed_by_client
    }

    /// Everything received parses (`parse_responses`); skipped when nothing arrived and the
    /// connection did not close since the last check (the same bytes parse the same way).
    pub fn check_parses(&self) {
        let state = (self.rx.len(), self.closed());
        if self.checked.get() == Some(state) {
            return;
        }
        parse_responses(&self.rx, self.closed()).unwrap_or_else(|e| panic!("viewer received garbage: {e}"));
        self.checked.set(Some(state));
    }
}

/// What the host knows of one upstream connection (the CDN's end of it).
#[derive(Debug)]
pub struct UpLog {
    /// Where the node asked to connect.
    pub addr: SocketAddr,
    /// `upstream_connected` was called.
    pub connected: bool,
    /// Gone (node asked to close, or the host reported it closed).
    pub closed: bool,
    /// Request bytes the node wrote and the CDN has not parsed yet.
    pub inbox: Vec<u8>,
    /// Request targets parsed from the inbox, in order.
    pub requests: Vec<String>,
    /// How many of `requests` the CDN answered (or started answering).
    pub answered: usize,
    /// Bytes the CDN sent since the latest request was written (an upper bound on what
    /// a filling object fed by this connection holds).
    pub fed_since_request: u64,
}

/// How the fake CDN answers a request target: the response bytes, and whether it closes the
/// connection after them.
pub type Answer<'a> = &'a dyn Fn(&str) -> (Vec<u8>, bool);

/// The host: a node, its viewers and upstream connections, and virtual time.
pub struct Host {
    /// The node under test.
    pub node: Node,
    /// Virtual time (ns).
    pub now: u64,
    /// Viewers by id.
    pub viewers: BTreeMap<ViewerId, ViewerLog>,
    /// Upstream connections by id.
    pub ups: BTreeMap<UpstreamId, UpLog>,
    /// Connections the node asked for that the host has not answered yet.
    pub pending_connects: VecDeque<UpstreamId>,
    /// Every connect the node asked for.
    pub connects: usize,
    /// Every upstream request the node wrote (all connections).
    pub requests_written: usize,
}

impl Host {
    /// A node with `cfg` and the wall clock set.
    pub fn new(cfg: Config) -> Self {
        let mut node = Node::new(cfg);
        node.set_wall_clock(0, WALL_START_UNIX * SECOND);
        Host {
            node,
            now: 0,
            viewers: BTreeMap::new(),
            ups: BTreeMap::new(),
            pending_connects: VecDeque::new(),
            connects: 0,
            requests_written: 0,
        }
    }

    /// Opens a viewer connection.
    pub fn open(&mut self) -> ViewerId {
        let v = self.node.user_open(self.now, None);
        trace!("[{}] open {v:?}", self.now);
        assert!(!self.viewers.contains_key(&v), "viewer id {v:?} reused");
        self.viewers.insert(v, ViewerLog::default());
        self.pump();
        v
    }

    /// Viewer bytes in. Refused only for unknown ids.
    pub fn recv(&mut self, v: ViewerId, data: &[u8]) {
        let open = self.viewers.get(&v).is_some_and(|l| !l.closed());
        trace!("[{}] user_recv {v:?} {:?}", self.now, String::from_utf8_lossy(data));
        let r = self.node.user_recv(self.now, v, data);
        if open {
            r.unwrap_or_else(|e| panic!("user_recv on an open viewer failed: {e}"));
            self.viewers.get_mut(&v).unwrap().fed += data.len();
        } else {
            assert!(r.is_err(), "user_recv on a closed viewer must be refused");
        }
        self.pump();
    }

    /// The client closes its connection.
    pub fn client_close(&mut self, v: ViewerId) {
        let open = self.viewers.get(&v).is_some_and(|l| !l.closed());
        trace!("[{}] client close {v:?}", self.now);
        let r = self.node.user_close(self.now, v);
        if open {
            r.expect("user_close on an open viewer");
            self.viewers.get_mut(&v).unwrap().closed_by_client = true;
        } else {
            assert!(r.is_err(), "user_close twice must be refused");
        }
        self.pump();
    }

    /// Drains everything the node wants done now. Bounded.
    pub fn pump(&mut self) {
        for _ in 0..PUMP_LIMIT {
            let mut progressed = false;
            while let Some((u, a)) = self.node.poll_connect() {
                assert!(!self.ups.contains_key(&u), "upstream id {u:?} reused");
                self.ups.insert(
                    u,
                    UpLog {
                        addr: a,
                        connected: false,
                        closed: false,
                        inbox: Vec::new(),
                        requests: Vec::new(),
                        answered: 0,
                        fed_since_request: 0,
                    },
                );
                self.pending_connects.push_back(u);
                self.connects += 1;
                progressed = true;
            }
            match self.node.poll_ready() {
                Some(ConnId::Viewer(v)) => {
                    self.drain_viewer(v);
                    progressed = true;
                }
                Some(ConnId::Upstream(u)) => {
                    self.drain_upstream(u);
                    progressed = true;
                }
                None => {}
            }
            if !progressed {
                return;
            }
        }
        panic!("the node never settled (pump limit)");
    }

    /// Writes what the node has for viewer `v`, as much as its socket takes.
    pub fn drain_viewer(&mut self, v: ViewerId) {
        let now = self.now;
        let Some(log) = self.viewers.get_mut(&v) else { panic!("poll_ready named a viewer never opened: {v:?}") };
        assert!(!log.closed(), "poll_ready named a closed viewer {v:?}");
        let mut budget = log.write_limit.unwrap_or(usize::MAX);
        for _ in 0..PUMP_LIMIT {
            let mut slices = [IoSlice::new(&[]); 32];
            let t = self.node.user_poll_transmit(v, &mut slices).expect("user_poll_transmit on an open viewer");
            match t {
                Transmit::Send(n) => {
                    assert!(n > 0 && n <= slices.len(), "Send({n}) with {} slices", slices.len());
                    if budget == 0 {
                        return; // socket full: the host waits for writable
                    }
                    let mut total = 0;
                    let before = log.rx.len();
                    for s in &slices[..n] {
                        assert!(!s.is_empty(), "an empty slice");
                        let take = s.len().min(budget - total);
                        log.rx.extend_from_slice(&s[..take]);
                        total += take;
                        if total == budget {
                            break;
                        }
                    }
                    budget -= total;
                    trace!("[{now}] viewer {v:?} <- {:?}", String::from_utf8_lossy(&log.rx[before..]));
                    self.node.user_sent(now, v, total).expect("user_sent");
                }
                Transmit::Close => {
                    trace!("[{now}] viewer {v:?} closed by node");
                    log.closed_by_node = true;
                    self.node.user_close(now, v).expect("user_close after Transmit::Close");
                    return;
                }
                Transmit::Wait => return,
            }
        }
        panic!("viewer output never ends");
    }

    /// Writes what the node has for upstream `u` into the CDN's inbox (or closes it).
    pub fn drain_upstream(&mut self, u: UpstreamId) {
        let now = self.now;
        for _ in 0..1000 {
            let Some(log) = self.ups.get_mut(&u) else { panic!("poll_ready named an upstream never opened: {u:?}") };
            assert!(!log.closed, "poll_ready named a closed upstream {u:?}");
            match self.node.upstream_poll_transmit(u).expect("upstream_poll_transmit on an open upstream") {
                UpTransmit::Send(b) => {
                    assert!(log.connected, "request bytes before the connection is up");
                    assert!(!b.is_empty(), "UpTransmit::Send of nothing");
                    let n = b.len();
                    trace!("[{now}] upstream {u:?} -> {:?}", String::from_utf8_lossy(b));
                    log.inbox.extend_from_slice(b);
                    self.node.upstream_sent(now, u, n).expect("upstream_sent");
                    let log = self.ups.get_mut(&u).unwrap();
                    while let Some(end) = find(&log.inbox, b"\r\n\r\n") {
                        let head: Vec<u8> = log.inbox.drain(..end + 4).collect();
                        let line = String::from_utf8(head).expect("upstream request is UTF-8");
                        let first = line.lines().next().unwrap_or("").to_string();
                        let mut parts = first.split(' ');
                        assert_eq!(parts.next(), Some("GET"), "upstream request line {first:?}");
                        let target = parts.next().expect("upstream request target").to_string();
                        assert_eq!(parts.next(), Some("HTTP/1.1"), "upstream request line {first:?}");
                        check_upstream_target(&target);
                        log.requests.push(target);
                        log.fed_since_request = 0;
                        self.requests_written += 1;
                    }
                }
                UpTransmit::Close => {
                    trace!("[{now}] upstream {u:?} closed by node");
                    log.closed = true;
                    self.node.upstream_closed(now, u).expect("upstream_closed after UpTransmit::Close");
                    return;
                }
                UpTransmit::Wait => return,
            }
        }
        panic!("upstream output never ends");
    }

    /// Answers the oldest pending connect: `ok` connects it, else refuses it.
    pub fn connect_next(&mut self, ok: bool) -> Option<UpstreamId> {
        while let Some(u) = self.pending_connects.pop_front() {
            if self.ups.get(&u).is_some_and(|l| !l.closed) {
                self.connect(u, ok);
                return Some(u);
            }
        }
        None
    }

    /// Connects (or refuses) upstream `u`.
    pub fn connect(&mut self, u: UpstreamId, ok: bool) {
        self.pending_connects.retain(|x| *x != u);
        let now = self.now;
        let log = self.ups.get_mut(&u).expect("known upstream");
        if log.closed || log.connected {
            return;
        }
        trace!("[{now}] connect {u:?} to {} ok={ok}", log.addr);
        if ok {
            log.connected = true;
            self.node.upstream_connected(now, u).expect("upstream_connected on a connecting upstream");
        } else {
            log.closed = true;
            self.node.upstream_closed(now, u).expect("upstream_closed on a connecting upstream");
        }
        self.pump();
    }

    /// The CDN sends `data` on `u` (ignored if the connection is gone).
    pub fn up_send(&mut self, u: UpstreamId, data: &[u8]) {
        let now = self.now;
        let Some(log) = self.ups.get_mut(&u) else { return };
        if log.closed || !log.connected {
            return;
        }
        log.fed_since_request += data.len() as u64;
        trace!("[{now}] upstream {u:?} <- {:?}", String::from_utf8_lossy(data));
        self.node.upstream_recv(now, u, data).expect("upstream_recv on an open upstream");
        self.pump();
    }

    /// The CDN closes (or resets) `u`.
    pub fn up_close(&mut self, u: UpstreamId) {
        let now = self.now;
        let Some(log) = self.ups.get_mut(&u) else { return };
        if log.closed {
            assert!(self.node.upstream_closed(now, u).is_err(), "upstream_closed twice must be refused");
            return;
        }
        log.closed = true;
        trace!("[{now}] upstream {u:?} closed by CDN");
        self.node.upstream_closed(now, u).expect("upstream_closed on an open upstream");
        self.pump();
    }

    /// Upstream connections with a request the CDN has not answered yet.
    pub fn unanswered(&self) -> Vec<(UpstreamId, String)> {
        self.ups
            .iter()
            .filter(|(_, l)| !l.closed && l.connected && l.answered < l.requests.len())
            .map(|(u, l)| (*u, l.requests[l.answered].clone()))
            .collect()
    }

    /// Marks the oldest request on `u` answered.
    pub fn mark_answered(&mut self, u: UpstreamId) {
        if let Some(l) = self.ups.get_mut(&u) {
            l.answered = (l.answered + 1).min(l.requests.len());
        }
    }

    /// Connects every pending connect and answers every request with `answer(target)`, until
    /// nothing is left to do. Bounded.
    pub fn serve_upstream(&mut self, answer: Answer<'_>) {
        for _ in 0..1000 {
            let mut progressed = false;
            while self.connect_next(true).is_some() {
                progressed = true;
            }
            for (u, target) in self.unanswered() {
                self.mark_answered(u);
                let (resp, close) = answer(&target);
                self.up_send(u, &resp);
                if close {
                    self.up_close(u);
                }
                progressed = true;
            }
            if !progressed {
                return;
            }
        }
        panic!("upstream never settles");
    }

    /// Time moves on by `dt`; due timers run.
    pub fn advance(&mut self, dt: u64) {
        self.now = self.now.saturating_add(dt);
        self.run_due_timers();
    }

    /// Runs every timer due at `now` and checks the deadline moved past `now`.
    pub fn run_due_timers(&mut self) {
        for _ in 0..TIMER_LIMIT {
            match self.node.poll_timeout() {
                Some(t) if t <= self.now => {
                    trace!("[{}] handle_timeout (due {t})", self.now);
                    self.node.handle_timeout(self.now);
                    self.pump();
                    if let Some(t2) = self.node.poll_timeout() {
                        assert!(t2 > self.now, "handle_timeout({}) left a deadline at {t2}", self.now);
                    }
                }
                _ => return,
            }
        }
        panic!("timers never settle");
    }

    /// Moves time through every deadline up to `limit` ahead, answering upstream requests with
    /// `answer` (when given) as they come. Bounded.
    pub fn settle(&mut self, limit: u64, answer: Option<Answer<'_>>) {
        let end = self.now.saturating_add(limit);
        for _ in 0..TIMER_LIMIT {
            if let Some(a) = answer {
                self.serve_upstream(a);
            }
            match self.node.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.run_due_timers();
                }
                _ => return,
            }
        }
        panic!("settle never ends");
    }

    /// Every open connection that the node did not name in `poll_ready` must have nothing to
    /// do: otherwise its output would wait forever.
    pub fn check_nothing_hidden(&self) {
        for (v, log) in &self.viewers {
            if log.closed() || log.write_limit == Some(0) {
                continue;
            }
            let mut slices = [IoSlice::new(&[]); 4];
            let t = self.node.user_poll_transmit(*v, &mut slices).expect("open viewer");
            // A limited socket may have left output queued; it waits for writable.
            if log.write_limit.is_none() {
                assert_eq!(t, Transmit::Wait, "viewer {v:?} has output the node never announced");
            }
        }
        for (u, log) in &self.ups {
            if log.closed || !log.connected {
                continue;
            }
            let t = self.node.upstream_poll_transmit(*u).expect("open upstream");
            assert_eq!(t, UpTransmit::Wait, "upstream {u:?} has output the node never announced");
        }
    }

    /// Bytes the node holds queued for viewer `v` (what `user_poll_transmit` offers, up to
    /// 256 slices).
    pub fn queued(&self, v: ViewerId) -> u64 {
        let mut slices = [IoSlice::new(&[]); 256];
        match self.node.user_poll_transmit(v, &mut slices) {
            Ok(Transmit::Send(n)) => slices[..n].iter().map(|s| s.len() as u64).sum(),
            _ => 0,
        }
    }

    /// No viewer has more output queued than the backlog limit plus `slack` (one response):
    /// a viewer that never reads must not make the node hold ever more for it.
    pub fn check_viewer_backlog(&self, slack: u64) {
        let limit = self.node.config().max_viewer_backlog + slack;
        for (v, log) in &self.viewers {
            if log.closed() {
                continue;
            }
            let q = self.queued(*v);
            assert!(q <= limit, "viewer {v:?} has {q} bytes queued (backlog limit {})", self.node.config().max_viewer_backlog);
        }
    }

    /// Store bytes are bounded by the budget plus what filling objects may hold.
    pub fn check_store_bound(&self) {
        let budget = self.node.config().memory_budget;
        let in_flight: u64 = self.ups.values().filter(|l| !l.closed).map(|l| l.fed_since_request).sum();
        let s = self.node.stats();
        assert!(
            s.store_bytes <= budget + in_flight,
            "store holds {} bytes, budget {} + in flight {}",
            s.store_bytes,
            budget,
            in_flight
        );
    }
}

/// What the node asks upstream must be a plain origin-form target (no CR/LF/space, absolute
/// path, no dot segments): it never forwards what it could not have been instructed to fetch.
pub fn check_upstream_target(t: &str) {
    assert!(t.starts_with('/'), "upstream target {t:?} is not an absolute path");
    assert!(t.bytes().all(|b| b > b' ' && b < 0x7f), "upstream target {t:?} holds a byte not allowed in a request line");
    let path = t.split('?').next().unwrap_or("");
    assert!(!path.split('/').any(|s| s == ".." || s == "."), "upstream target {t:?} holds a dot segment");
}

/// Finds `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How a viewer response's body was framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (1xx, 204, 304, or an answer to HEAD).
    None,
    /// Content-Length.
    Length(u64),
    /// Transfer-Encoding: chunked.
    Chunked,
    /// Until the connection closes.
    Close,
}

/// One response a viewer received.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Header fields, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body bytes received (chunked coding removed).
    pub body: Vec<u8>,
    /// Framing.
    pub framing: Framing,
    /// The whole response arrived.
    pub complete: bool,
    /// No body was expected after the head although Content-Length says how long the
    /// representation is (HEAD); guessed from what follows.
    pub head_only: bool,
}

impl Resp {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Parses everything a viewer received into responses. A malformed response (bad status line,
/// bad header, both Content-Length and chunked, bad chunk framing, garbage between responses)
/// is an error. The last response may be incomplete (`complete == false`).
///
/// HEAD answers carry a Content-Length but no body; they are recognized by what follows (the
/// next status line, or nothing). Bodies the harness serves never start with `HTTP/1.`.
pub fn parse_responses(rx: &[u8], eof: bool) -> Result<Vec<Resp>, String> {
    let mut ctx = ParseCtx { budget: 4096, memo: std::collections::HashMap::new() };
    let list = parse_at(rx, 0, eof, &mut ctx)?;
    let mut out = Vec::new();
    let mut l = &*list;
    while let Parsed::Cons(r, next, _) = l {
        out.push(r.clone());
        l = next;
    }
    Ok(out)
}

/// The responses parsed from some position on, as a shared list: a result remembered in
/// `ParseCtx::memo` is shared, not copied, by every reading that reaches that position
/// (copying it made a viewer with many pipelined answers quadratic).
enum Parsed {
    Nil,
    /// A response, the ones after it, and whether the last response of the list is complete.
    Cons(Resp, Rc<Parsed>, bool),
}

impl Parsed {
    /// The last response is complete (or there is none).
    fn last_complete(&self) -> bool {
        match self {
            Parsed::Nil => true,
            Parsed::Cons(_, _, c) => *c,
        }
    }
}

impl Drop for Parsed {
    /// Iterative, so a long list does not recurse once per response.
    fn drop(&mut self) {
        let Parsed::Cons(_, tail, _) = self else { return };
        let mut next = std::mem::replace(tail, Rc::new(Parsed::Nil));
        while let Ok(mut p) = Rc::try_unwrap(next) {
            match &mut p {
                Parsed::Cons(_, t, _) => next = std::mem::replace(t, Rc::new(Parsed::Nil)),
                Parsed::Nil => return,
            }
        }
    }
}

/// `out` followed by `tail`.
fn chain(out: Vec<Resp>, tail: Rc<Parsed>) -> Rc<Parsed> {
    out.into_iter().rev().fold(tail, |tail, r| {
        let last = if matches!(*tail, Parsed::Nil) { r.complete } else { tail.last_complete() };
        Rc::new(Parsed::Cons(r, tail, last))
    })
}

/// `out` alone.
fn done(out: Vec<Resp>) -> Result<Rc<Parsed>, String> {
    Ok(chain(out, Rc::new(Parsed::Nil)))
}

/// The search state of `parse_at`: a bound on the positions where both readings are tried, and
/// the result already found from each such position (a run of HEAD answers would otherwise be
/// explored exponentially and run out of budget, reading a HEAD answer as a body: a false
/// "garbage" report).
struct ParseCtx {
    budget: u32,
    memo: std::collections::HashMap<usize, Result<Rc<Parsed>, String>>,
}

/// `parse_at`, remembered per position.
fn parse_from(rx: &[u8], pos: usize, eof: bool, ctx: &mut ParseCtx) -> Result<Rc<Parsed>, String> {
    if let Some(r) = ctx.memo.get(&pos) {
        return r.clone();
    }
    let r = parse_at(rx, pos, eof, ctx);
    ctx.memo.insert(pos, r.clone());
    r
}

/// Parses responses from `pos`. Where a Content-Length head is followed by `HTTP/1.` it may
/// be a HEAD answer or a body that starts with those bytes: both readings are tried (a bounded
/// number of times).
fn parse_at(rx: &[u8], mut pos: usize, eof: bool, ctx: &mut ParseCtx) -> Result<Rc<Parsed>, String> {
    let mut out = Vec::new();
    while pos < rx.len() {
        let buf = &rx[pos..];
        let prefix = b"HTTP/1.1 ";
        if !buf.starts_with(&prefix[..buf.len().min(prefix.len())]) {
            return Err(format!("garbage where a response should start at {pos}: {:?}", String::from_utf8_lossy(&buf[..buf.len().min(40)])));
        }
        let Some(end) = find(buf, b"\r\n\r\n").map(|i| i + 4) else {
            if buf.len() > 64 * 1024 {
                return Err("endless response head".into());
            }
            out.push(Resp { status: 0, headers: Vec::new(), body: Vec::new(), framing: Framing::None, complete: false, head_only: false });
            return done(out);
        };
        // Field values may carry obs-text (bytes >= 0x80) passed through from the CDN.
        let head_owned = String::from_utf8_lossy(&buf[..end - 4]).into_owned();
        let head = head_owned.as_str();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let _version = parts.next();
        let status: u16 = parts
            .next()
            .and_then(|s| if s.len() == 3 { s.parse().ok() } else { None })
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        if !(100..=599).contains(&status) {
            return Err(format!("bad status {status}"));
        }
        let mut headers = Vec::new();
        for l in lines {
            let (n, v) = l.split_once(':').ok_or_else(|| format!("bad header line {l:?}"))?;
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
                return Err(format!("bad header name {n:?}"));
            }
            if v.bytes().any(|b| b < b' ' && b != b'\t' || b == 0x7f) {
                return Err(format!("control byte in header {n}"));
            }
            headers.push((n.to_string(), v.trim().to_string()));
        }
        let count = |name: &str| headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count();
        if count("content-length") > 1 || count("transfer-encoding") > 1 || count("date") != 1 {
            return Err(format!("duplicate or missing framing/Date headers: {head:?}"));
        }
        let mut resp = Resp { status, headers, body: Vec::new(), framing: Framing::None, complete: false, head_only: false };
        let cl = match resp.header("content-length") {
            Some(v) => Some(v.parse::<u64>().map_err(|_| format!("bad Content-Length {v:?}"))?),
            None => None,
        };
        let te = resp.header("transfer-encoding").map(str::to_string);
        if cl.is_some() && te.is_some() {
            return Err(format!("both Content-Length and Transfer-Encoding: {head:?}"));
        }
        let rest = &buf[end..];
        let bodyless = status < 200 || status == 204 || status == 304;
        // What follows is a response, or the start of one that has not fully arrived (a slow
        // socket may have delivered only "HTTP/" of the next status line so far).
        let next_is_response = rest.starts_with(b"HTTP/1.") || b"HTTP/1.".starts_with(rest);
        if bodyless {
            if te.is_some() {
                return Err(format!("{status} with Transfer-Encoding"));
            }
            resp.complete = true;
            out.push(resp);
            pos += end;
            continue;
        }
        if let Some(te) = te {
            if te != "chunked" {
                return Err(format!("Transfer-Encoding {te:?}"));
            }
            resp.framing = Framing::Chunked;
            let mut p = 0;
            loop {
                let Some(le) = find(&rest[p..], b"\r\n") else {
                    if rest.len() - p > 20 {
                        return Err("endless chunk size line".into());
                    }
                    out.push(resp);
                    return done(out);
                };
                let size_s = std::str::from_utf8(&rest[p..p + le]).map_err(|_| "chunk size not UTF-8".to_string())?;
                let size = usize::from_str_radix(size_s, 16).map_err(|_| format!("bad chunk size {size_s:?}"))?;
                let data_at = p + le + 2;
                if size == 0 {
                    if rest.len() < data_at + 2 {
                        out.push(resp);
                        return done(out);
                    }
                    if &rest[data_at..data_at + 2] != b"\r\n" {
                        return Err("last chunk not followed by CRLF".into());
                    }
                    resp.complete = true;
                    pos += end + data_at + 2;
                    break;
                }
                if rest.len() < data_at + size {
                    resp.body.extend_from_slice(&rest[data_at..]);
                    out.push(resp);
                    return done(out);
                }
                resp.body.extend_from_slice(&rest[data_at..data_at + size]);
                if rest.len() < data_at + size + 2 {
                    out.push(resp);
                    return done(out);
                }
                if &rest[data_at + size..data_at + size + 2] != b"\r\n" {
                    return Err("chunk data not followed by CRLF".into());
                }
                p = data_at + size + 2;
            }
            out.push(resp);
            continue;
        }
        match cl {
            Some(n) if n > 0 && rest.is_empty() => {
                // A HEAD answer (or a body that has not started yet).
                resp.framing = Framing::Length(n);
                resp.head_only = true;
                resp.complete = true;
                out.push(resp);
                pos += end;
            }
            Some(n) if n > 0 && next_is_response && ctx.budget > 0 => {
                ctx.budget -= 1;
                let mut head = resp.clone();
                head.framing = Framing::Length(n);
                head.head_only = true;
                head.complete = true;
                // Prefer, in order: a HEAD reading after which everything parses into complete
                // responses; a body reading that parses; a HEAD reading that parses at all.
                let head_alt = parse_from(rx, pos + end, eof, ctx);
                let clean = head_alt.as_ref().is_ok_and(|v| v.last_complete());
                if !clean {
                    let n = n as usize;
                    let mut body = resp.clone();
                    body.framing = Framing::Length(n as u64);
                    if rest.len() < n {
                        body.body.extend_from_slice(rest);
                        out.push(body);
                        return done(out);
                    }
                    if let Ok(more) = parse_from(rx, pos + end + n, eof, ctx) {
                        body.body.extend_from_slice(&rest[..n]);
                        body.complete = true;
                        out.push(body);
                        return Ok(chain(out, more));
                    }
                }
                let more = head_alt?;
                out.push(head);
                return Ok(chain(out, more));
            }
            Some(n) => {
                resp.framing = Framing::Length(n);
                let n = n as usize;
                if rest.len() < n {
                    resp.body.extend_from_slice(rest);
                    out.push(resp);
                    return done(out);
                }
                resp.body.extend_from_slice(&rest[..n]);
                resp.complete = true;
                out.push(resp);
                pos += end + n;
            }
            None => {
                if resp.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("keep-alive")) {
                    // No framing on a kept-alive connection: only a HEAD answer may do that.
                    if !next_is_response {
                        return Err(format!("close-delimited body on a keep-alive response: {head:?}"));
                    }
                    resp.head_only = true;
                    resp.complete = true;
                    out.push(resp);
                    pos += end;
                    continue;
                }
                resp.framing = Framing::Close;
                resp.body.extend_from_slice(rest);
                resp.complete = eof;
                // Nothing after the head and the connection closed: a HEAD answer of unknown
                // length looks the same as an empty close-delimited body.
                resp.head_only = eof && rest.is_empty();
                out.push(resp);
                return done(out);
            }
        }
    }
    done(out)
}

/// The error body the node writes for `status`.
pub fn is_error_body(status: u16, body: &[u8]) -> bool {
    let s = String::from_utf8_lossy(body);
    s.starts_with(&format!("{status} ")) && s.ends_with('\n')
}

/// Parses `Content-Range: bytes a-b/len`.
pub fn content_range(v: &str) -> Option<(u64, u64, u64)> {
    let spec = v.strip_prefix("bytes ")?;
    let (range, len) = spec.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, len.parse().ok()?))
}

/// Splits `payload` at the cumulative `deltas` (a delta of 0 gives an empty piece).
pub fn split_pieces<'a>(payload: &'a [u8], deltas: &[u8]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut pos = 0;
    for d in deltas {
        let end = (pos + *d as usize).min(payload.len());
        pieces.push(&payload[pos..end]);
        pos = end;
    }
    pieces.push(&payload[pos..]);
    pieces
}
