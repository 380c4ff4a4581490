//! A hand-driven harness for a `listo::Node` in virtual time.
//!
//! The harness plays the host: it opens viewer connections and feeds them request bytes, drains
//! every connection `poll_ready` names into a per-viewer received buffer, accepts (or refuses)
//! the connections `poll_connect` asks for and plays the CDN endpoint on them (it reads the
//! request bytes the node writes and answers with bytes the test chooses), and moves virtual
//! time forward through `poll_timeout` / `handle_timeout`. Every loop is bounded: a node that
//! never settles makes the test panic instead of hanging.
//!
//! Each parsed viewer response is checked for what every response must carry (a `Date` header
//! that matches the virtual wall clock, and `Content-Length` or chunked framing).
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::io::IoSlice;
use std::net::SocketAddr;

use listo::{ChannelStats, Config, ConnId, Instruction, Node, Stats, Transmit, UpTransmit, UpstreamId, ViewerId, SECOND};

/// One millisecond in node time.
pub const MS: u64 = 1_000_000;

/// The wall clock at virtual time 0: Tue, 25 Nov 2025 10:00:00 GMT.
pub const WALL_START_UNIX: u64 = 1_764_064_800;

/// Bound on pump iterations (each drains one ready connection).
const PUMP_LIMIT: usize = 1_000_000;
/// Bound on timer firings while advancing time.
const TIMER_LIMIT: usize = 100_000;

pub const EP1: &str = "10.0.0.1:80";
pub const EP1B: &str = "10.0.0.11:80";
pub const EP2: &str = "10.0.0.2:80";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A fixture file from tests/fixtures.
pub fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// The `Date` value the node must write at virtual time `now`.
pub fn http_date_at(now: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(WALL_START_UNIX + now / SECOND);
    httpdate::fmt_http_date(t)
}

// ---------------------------------------------------------------------------------------------
// Viewer side
// ---------------------------------------------------------------------------------------------

/// What the harness knows of one viewer connection.
#[derive(Debug, Default)]
pub struct ViewerState {
    /// Every byte the node gave this viewer, in order.
    pub rx: Vec<u8>,
    /// Bytes of `rx` already returned as parsed responses.
    pub consumed: usize,
    /// The node said `Transmit::Close` (or the harness closed it as the client).
    pub closed: bool,
    /// The node said `Transmit::Close` (not the client).
    pub closed_by_node: bool,
    /// Bytes the host reported written for this viewer.
    pub written: u64,
    /// Most bytes the socket takes per drain (a slow viewer); `None`: everything.
    pub write_limit: Option<usize>,
    /// The last drain stopped because the socket would block.
    pub blocked: bool,
}

/// A response a viewer received, parsed strictly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resp {
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The decoded body (chunked coding removed).
    pub body: Vec<u8>,
    /// The body came with chunked coding.
    pub chunked: bool,
    /// Sizes of the chunks when chunked (last chunk excluded).
    pub chunk_sizes: Vec<usize>,
    /// The head bytes, verbatim.
    pub raw_head: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count()
    }
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").map(|v| v.parse().expect("numeric Content-Length"))
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The result of parsing a viewer's received bytes from some offset.
#[derive(Debug)]
pub enum Parsed {
    /// Not even a whole head yet.
    NoHead,
    /// The head and the body bytes so far (decoded); more is expected.
    Partial(Resp),
    /// A whole response, and the bytes it used.
    Complete(Resp, usize),
}

/// Parses one response from `buf`. `head_only`: the request was HEAD. `eof`: the connection is
/// closed (a close-delimited body is then complete).
pub fn parse_response(buf: &[u8], head_only: bool, eof: bool) -> Parsed {
    let Some(end) = find(buf, b"\r\n\r\n").map(|i| i + 4) else { return Parsed::NoHead };
    let raw_head = std::str::from_utf8(&buf[..end]).expect("response head is UTF-8").to_string();
    let mut lines = raw_head[..end - 4].split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap().to_string();
    let status: u16 = parts.next().expect("status code").parse().expect("numeric status");
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for l in lines {
        let (n, v) = l.split_once(':').unwrap_or_else(|| panic!("bad header line {l:?} in {raw_head:?}"));
        assert!(!n.contains(' '), "bad header name {n:?}");
        headers.push((n.to_string(), v.trim().to_string()));
    }
    let mut resp = Resp { version, status, reason, headers, body: Vec::new(), chunked: false, chunk_sizes: Vec::new(), raw_head };
    let rest = &buf[end..];
    let no_body = head_only || status == 304 || status == 204 || (100..200).contains(&status);
    if no_body {
        return Parsed::Complete(resp, end);
    }
    if resp.header("transfer-encoding").is_some() {
        assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
        assert!(resp.header("content-length").is_none(), "both Content-Length and chunked: {}", resp.raw_head);
        resp.chunked = true;
        let mut pos = 0;
        loop {
            let Some(le) = find(&rest[pos..], b"\r\n") else { return Parsed::Partial(resp) };
            let size_s = std::str::from_utf8(&rest[pos..pos + le]).unwrap();
            let size = usize::from_str_radix(size_s, 16).unwrap_or_else(|_| panic!("bad chunk size {size_s:?}"));
            let data_at = pos + le + 2;
            if size == 0 {
                if rest.len() < data_at + 2 {
                    return Parsed::Partial(resp);
                }
                assert_eq!(&rest[data_at..data_at + 2], b"\r\n", "no trailers expected");
                return Parsed::Complete(resp, end + data_at + 2);
            }
            if rest.len() < data_at + size {
                resp.body.extend_from_slice(&rest[data_at..]);
                return Parsed::Partial(resp);
            }
            resp.body.extend_from_slice(&rest[data_at..data_at + size]);
            resp.chunk_sizes.push(size);
            if rest.len() < data_at + size + 2 {
                return Parsed::Partial(resp);
            }
            assert_eq!(&rest[data_at + size..data_at + size + 2], b"\r\n", "chunk not followed by CRLF");
            pos = data_at + size + 2;
        }
    }
    match resp.content_length() {
        Some(n) => {
            let n = n as usize;
            if rest.len() < n {
                resp.body.extend_from_slice(rest);
                Parsed::Partial(resp)
            } else {
                resp.body.extend_from_slice(&rest[..n]);
                Parsed::Complete(resp, end + n)
            }
        }
        None => {
            resp.body.extend_from_slice(rest);
            if eof {
                Parsed::Complete(resp, buf.len())
            } else {
                Parsed::Partial(resp)
            }
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// CDN side
// ---------------------------------------------------------------------------------------------

/// What the harness knows of one upstream connection (the fake CDN's end of it).
#[derive(Debug)]
pub struct UpState {
    pub addr: SocketAddr,
    pub connected: bool,
    /// Gone (the node asked to close it, or the CDN / connect failed).
    pub closed: bool,
    /// The node asked the host to close it.
    pub closed_by_node: bool,
    /// Request bytes written by the node and not yet read by the CDN.
    pub inbox: Vec<u8>,
    /// Requests the CDN read on this connection.
    pub requests: Vec<UpRequest>,
}

/// A request the node sent upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpRequest {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub raw: String,
}

impl UpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A 200 response with Content-Length.
pub fn resp_200(body: &[u8], extra: &str) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra}\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

/// A status response with a small body.
pub fn resp_status(status: u16, reason: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n{extra}\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

/// Chunked framing of `body` in pieces of `piece` bytes, with the last chunk.
pub fn chunked(body: &[u8], piece: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(piece) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A CDN that serves the fixture files by name (`/live/chN/NAME` → tests/fixtures/NAME), and
/// 404 for anything else.
pub fn fixture_cdn(_now: u64, r: &UpRequest) -> Vec<u8> {
    let name = r.target.rsplit('/').next().unwrap_or("");
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    match std::fs::read(&p) {
        Ok(body) if !name.is_empty() => resp_200(&body, ""),
        _ => resp_status(404, "Not Found", b"", ""),
    }
}

/// The body of live segment `n` (deterministic, ~60 KB).
pub fn live_segment(n: u64) -> Vec<u8> {
    let len = 60_000 + (n as usize * 7_919) % 10_000;
    (0..len).map(|i| (i as u64 * 31 + n * 17) as u8).collect()
}

/// A simulated live HLS origin with 2 s segments: at time `now` the playlist lists the 4
/// newest segments and says when it was produced (`#X-FETCHED-AT:<ns>`).
pub fn live_origin(now: u64, r: &UpRequest) -> Vec<u8> {
    let name = r.target.rsplit('/').next().unwrap_or("");
    if name == "index.m3u8" {
        let seq = now / (2 * SECOND) + 1;
        let mut body = playlist(seq);
        body.extend_from_slice(format!("#X-FETCHED-AT:{now}\n").as_bytes());
        return resp_200(&body, "Content-Type: application/vnd.apple.mpegurl\r\n");
    }
    if let Some(n) = name.strip_prefix("seg_").and_then(|s| s.strip_suffix(".ts")).and_then(|s| s.parse::<u64>().ok()) {
        if n <= now / (2 * SECOND) + 4 {
            return resp_200(&live_segment(n), "Content-Type: video/mp2t\r\n");
        }
    }
    resp_status(404, "Not Found", b"", "")
}

/// The `#X-FETCHED-AT` of a `live_origin` playlist.
pub fn fetched_at(playlist: &[u8]) -> u64 {
    let s = std::str::from_utf8(playlist).unwrap();
    s.lines().find_map(|l| l.strip_prefix("#X-FETCHED-AT:")).expect("a live_origin playlist").parse().unwrap()
}

/// The segment URIs of a playlist.
pub fn playlist_uris(playlist: &[u8]) -> Vec<String> {
    std::str::from_utf8(playlist).unwrap().lines().filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect()
}

/// A playlist with media sequence `seq` and target duration 2 s (four 2 s segments).
pub fn playlist(seq: u64) -> Vec<u8> {
    let mut s = format!("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{seq}\n");
    for i in seq..seq + 4 {
        s.push_str(&format!("#EXTINF:2.000000,\nseg_{i}.ts\n"));
    }
    s.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

pub struct Harness {
    pub node: Node,
    pub now: u64,
    pub viewers: BTreeMap<ViewerId, ViewerState>,
    pub ups: BTreeMap<UpstreamId, UpState>,
    /// Connections the node asked for and the harness has not answered yet.
    pub pending_connects: VecDeque<(UpstreamId, SocketAddr)>,
    /// Every connection the node asked for, in order.
    pub connect_log: Vec<(UpstreamId, SocketAddr)>,
    /// Most request bytes an upstream socket takes per write opportunity; `None`: everything.
    pub up_write_limit: Option<usize>,
}

impl Harness {
    /// A node with the given config and no channels; wall clock set to `WALL_START_UNIX`.
    pub fn bare(cfg: Config) -> Self {
        let mut node = Node::new(cfg);
        node.set_wall_clock(0, WALL_START_UNIX * SECOND);
        Harness {
            node,
            now: 0,
            viewers: BTreeMap::new(),
            ups: BTreeMap::new(),
            pending_connects: VecDeque::new(),
            connect_log: Vec::new(),
            up_write_limit: None,
        }
    }

    /// A node with channels ch1 (`/live/ch1/` at EP1, Host cdn1.example) and ch2
    /// (`/live/ch2/` at EP2).
    pub fn new(cfg: Config) -> Self {
        let mut h = Self::bare(cfg);
        let mut i1 = Instruction::new("ch1", "/live/ch1/", addr(EP1));
        i1.host = Some("cdn1.example".into());
        h.instruct(i1);
        h.instruct(Instruction::new("ch2", "/live/ch2/", addr(EP2)));
        h
    }

    pub fn default_node() -> Self {
        Self::new(Config::default())
    }

    pub fn instruct(&mut self, ins: Instruction) {
        self.node.instruct(self.now, ins).expect("instruction accepted");
        self.pump();
    }

    pub fn stats(&self) -> Stats {
        self.node.stats()
    }

    pub fn ch(&self, name: &str) -> ChannelStats {
        self.node.stats().channels.into_iter().find(|c| c.channel == name).unwrap_or_else(|| panic!("no channel {name}"))
    }

    /// Errors sent to viewers with this status so far.
    pub fn errors(&self, status: u16) -> u64 {
        self.node.stats().errors.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n)
    }

    // --- the host loop ---

    /// Drains everything the node wants done now: connect requests are recorded, ready viewer
    /// connections are written into their `rx`, ready upstream connections into the CDN inbox,
    /// closes are performed. Bounded.
    pub fn pump(&mut self) {
        for _ in 0..PUMP_LIMIT {
            let mut progressed = false;
            while let Some((u, a)) = self.node.poll_connect() {
                assert!(!self.ups.contains_key(&u), "upstream id {u:?} reused");
                self.ups.insert(
                    u,
                    UpState { addr: a, connected: false, closed: false, closed_by_node: false, inbox: Vec::new(), requests: Vec::new() },
                );
                self.pending_connects.push_back((u, a));
                self.connect_log.push((u, a));
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

    fn drain_viewer(&mut self, v: ViewerId) {
        let mut budget = self.viewers.get(&v).and_then(|s| s.write_limit).unwrap_or(usize::MAX);
        for _ in 0..PUMP_LIMIT {
            let now = self.now;
            let st = self.viewers.get_mut(&v).expect("poll_ready named a viewer the host never opened");
            assert!(!st.closed, "poll_ready named closed viewer {v:?}");
            st.blocked = false;
            let mut slices = [IoSlice::new(&[]); 64];
            let t = self.node.user_poll_transmit(v, &mut slices).expect("user_poll_transmit on a live viewer");
            match t {
                Transmit::Send(n) => {
                    assert!(n > 0 && n <= slices.len());
                    if budget == 0 {
                        st.blocked = true; // the socket would block: wait for writable
                        return;
                    }
                    let mut total = 0;
                    for s in &slices[..n] {
                        assert!(!s.is_empty(), "an empty slice");
                        let take = s.len().min(budget - total);
                        st.rx.extend_from_slice(&s[..take]);
                        total += take;
                        if total == budget {
                            break;
                        }
                    }
                    budget -= total;
                    st.written += total as u64;
                    self.node.user_sent(now, v, total).unwrap();
                }
                Transmit::Close => {
                    st.closed = true;
                    st.closed_by_node = true;
                    self.node.user_close(now, v).unwrap();
                    return;
                }
                Transmit::Wait => return,
            }
        }
        panic!("viewer {v:?} never stopped transmitting");
    }

    fn drain_upstream(&mut self, u: UpstreamId) {
        let mut budget = self.up_write_limit.unwrap_or(usize::MAX);
        for _ in 0..PUMP_LIMIT {
            let now = self.now;
            let st = self.ups.get_mut(&u).expect("poll_ready named an upstream the node never asked for");
            assert!(!st.closed, "poll_ready named closed upstream {u:?}");
            match self.node.upstream_poll_transmit(u).expect("upstream_poll_transmit on a live upstream") {
                UpTransmit::Send(b) => {
                    assert!(st.connected, "bytes to write on an unconnected upstream {u:?}");
                    assert!(!b.is_empty());
                    if budget == 0 {
                        return; // would block: `up_writable` resumes
                    }
                    let n = b.len().min(budget);
                    budget -= n;
                    st.inbox.extend_from_slice(&b[..n]);
                    self.node.upstream_sent(now, u, n).unwrap();
                }
                UpTransmit::Close => {
                    st.closed = true;
                    st.closed_by_node = true;
                    self.node.upstream_closed(now, u).unwrap();
                    return;
                }
                UpTransmit::Wait => return,
            }
        }
        panic!("upstream {u:?} never stopped transmitting");
    }

    /// Moves virtual time to `to`, firing every timer due on the way (in order), pumping after
    /// each. Bounded.
    pub fn advance_to(&mut self, to: u64) {
        assert!(to >= self.now, "time goes forward");
        for _ in 0..TIMER_LIMIT {
            match self.node.poll_timeout() {
                Some(t) if t <= to => {
                    self.now = self.now.max(t);
                    self.node.handle_timeout(self.now);
                    self.pump();
                }
                _ => {
                    self.now = to;
                    // Calling it with nothing due must be harmless.
                    self.node.handle_timeout(self.now);
                    self.pump();
                    return;
                }
            }
        }
        panic!("timers kept firing (timer limit)");
    }

    pub fn advance(&mut self, by: u64) {
        self.advance_to(self.now + by);
    }

    // --- viewers ---

    pub fn open(&mut self) -> ViewerId {
        let v = self.node.user_open(self.now, None);
        assert!(self.viewers.insert(v, ViewerState::default()).is_none(), "viewer id reused");
        self.pump();
        v
    }

    /// Feeds raw bytes from viewer `v`.
    pub fn send(&mut self, v: ViewerId, bytes: &[u8]) {
        assert!(!self.viewers[&v].closed, "sending on a closed viewer");
        self.node.user_recv(self.now, v, bytes).unwrap();
        self.pump();
    }

    /// Opens a viewer and sends one `GET path` (HTTP/1.1, keep-alive).
    pub fn get(&mut self, path: &str) -> ViewerId {
        let v = self.open();
        self.send(v, get_req(path).as_bytes());
        v
    }

    /// The client side closes viewer `v`.
    pub fn disconnect(&mut self, v: ViewerId) {
        let st = self.viewers.get_mut(&v).unwrap();
        assert!(!st.closed);
        st.closed = true;
        self.node.user_close(self.now, v).unwrap();
        self.pump();
    }

    /// The viewer's socket becomes writable again: the host writes what it can.
    pub fn writable(&mut self, v: ViewerId) {
        if !self.viewers[&v].closed {
            self.drain_viewer(v);
            self.pump();
        }
    }

    /// Makes viewer `v` a slow reader: at most `limit` bytes per write opportunity.
    pub fn set_write_limit(&mut self, v: ViewerId, limit: Option<usize>) {
        self.viewers.get_mut(&v).unwrap().write_limit = limit;
    }

    pub fn rx(&self, v: ViewerId) -> &[u8] {
        &self.viewers[&v].rx
    }

    /// Bytes not yet returned as responses.
    pub fn unread(&self, v: ViewerId) -> &[u8] {
        let st = &self.viewers[&v];
        &st.rx[st.consumed..]
    }

    pub fn is_closed(&self, v: ViewerId) -> bool {
        self.viewers[&v].closed_by_node
    }

    /// Parses the next response without consuming it.
    pub fn peek(&self, v: ViewerId, head_only: bool) -> Parsed {
        let st = &self.viewers[&v];
        parse_response(&st.rx[st.consumed..], head_only, st.closed)
    }

    /// The next complete response of `v`, consumed; `None` when not complete yet.
    pub fn try_response(&mut self, v: ViewerId, head_only: bool) -> Option<Resp> {
        match self.peek(v, head_only) {
            Parsed::Complete(r, used) => {
                self.check_response_invariants(&r);
                self.viewers.get_mut(&v).unwrap().consumed += used;
                Some(r)
            }
            _ => None,
        }
    }

    /// The next complete response of `v` (panics with what arrived when there is none).
    pub fn response(&mut self, v: ViewerId) -> Resp {
        self.response_ex(v, false)
    }

    /// The next complete response of `v` to a HEAD request.
    pub fn head_response(&mut self, v: ViewerId) -> Resp {
        self.response_ex(v, true)
    }

    fn response_ex(&mut self, v: ViewerId, head_only: bool) -> Resp {
        match self.try_response(v, head_only) {
            Some(r) => r,
            None => panic!(
                "viewer {v:?}: no complete response; unread {} bytes: {:?}",
                self.unread(v).len(),
                String::from_utf8_lossy(&self.unread(v)[..self.unread(v).len().min(400)])
            ),
        }
    }

    /// Every response: one `Date` that is the virtual wall clock (at or before now), a `Server`,
    /// and framing (Content-Length or chunked; a 304 may omit both), an HTTP/1.1 status line.
    pub fn check_response_invariants(&self, r: &Resp) {
        assert_eq!(r.version, "HTTP/1.1", "{}", r.raw_head);
        assert_eq!(r.reason, listo::http::reason_phrase(r.status), "{}", r.raw_head);
        assert_eq!(r.header_count("date"), 1, "exactly one Date: {}", r.raw_head);
        let date = httpdate::parse_http_date(r.header("date").unwrap()).expect("Date is an HTTP date");
        let unix = date.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert!(
            (WALL_START_UNIX..=WALL_START_UNIX + self.now / SECOND).contains(&unix),
            "Date {unix} outside the virtual wall clock: {}",
            r.raw_head
        );
        assert!(r.header_count("content-length") <= 1, "{}", r.raw_head);
        // A 304 may omit both and a 204 must not carry a length; a close-delimited body (HTTP/1.0
        // viewer of an object of unknown length) must say Connection: close.
        if r.status == 204 {
            assert!(r.header("content-length").is_none() && !r.chunked, "{}", r.raw_head);
        } else if r.status != 304 && r.header("connection") != Some("close") {
            assert!(
                r.header("content-length").is_some() || r.chunked,
                "no Content-Length and not chunked: {}",
                r.raw_head
            );
        }
        if let Some(n) = r.content_length() {
            if r.status != 304 && !r.body.is_empty() {
                assert_eq!(n as usize, r.body.len(), "{}", r.raw_head);
            }
        }
    }

    /// Asserts viewer `v` has received nothing it has not read yet.
    pub fn assert_nothing_new(&self, v: ViewerId) {
        assert!(self.unread(v).is_empty(), "unexpected bytes: {:?}", String::from_utf8_lossy(self.unread(v)));
    }

    // --- the CDN ---

    /// Accepts the oldest pending connect: the host's TCP connect succeeded.
    pub fn accept_connect(&mut self) -> (UpstreamId, SocketAddr) {
        let (u, a) = self.pending_connects.pop_front().expect("the node asked for no upstream connection");
        self.ups.get_mut(&u).unwrap().connected = true;
        self.node.upstream_connected(self.now, u).unwrap();
        self.pump();
        (u, a)
    }

    /// Fails the oldest pending connect (connection refused).
    pub fn refuse_connect(&mut self) -> (UpstreamId, SocketAddr) {
        let (u, a) = self.pending_connects.pop_front().expect("the node asked for no upstream connection");
        self.ups.get_mut(&u).unwrap().closed = true;
        self.node.upstream_closed(self.now, u).unwrap();
        self.pump();
        (u, a)
    }

    /// The upstream socket `u` became writable again.
    pub fn up_writable(&mut self, u: UpstreamId) {
        if !self.ups[&u].closed {
            self.drain_upstream(u);
            self.pump();
        }
    }

    /// Accepts every pending connect.
    pub fn accept_all(&mut self) {
        while !self.pending_connects.is_empty() {
            self.accept_connect();
        }
    }

    /// The CDN reads the next complete request the node wrote on `u`, if any.
    pub fn take_request(&mut self, u: UpstreamId) -> Option<UpRequest> {
        let st = self.ups.get_mut(&u).unwrap();
        let end = find(&st.inbox, b"\r\n\r\n")? + 4;
        let raw = String::from_utf8(st.inbox.drain(..end).collect()).expect("request head is UTF-8");
        let mut lines = raw[..raw.len() - 4].split("\r\n");
        let mut parts = lines.next().unwrap().split(' ');
        let method = parts.next().unwrap().to_string();
        let target = parts.next().unwrap().to_string();
        let version = parts.next().unwrap().to_string();
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header line");
                (n.to_string(), v.trim().to_string())
            })
            .collect();
        let r = UpRequest { method, target, version, headers, raw };
        st.requests.push(r.clone());
        Some(r)
    }

    /// Accepts pending connects, then returns the first complete request waiting on any live
    /// upstream connection (lowest id first).
    pub fn try_next_request(&mut self) -> Option<(UpstreamId, UpRequest)> {
        self.accept_all();
        let ids: Vec<UpstreamId> = self.ups.iter().filter(|(_, s)| !s.closed && s.connected).map(|(u, _)| *u).collect();
        for u in ids {
            if let Some(r) = self.take_request(u) {
                return Some((u, r));
            }
        }
        None
    }

    pub fn next_request(&mut self) -> (UpstreamId, UpRequest) {
        self.try_next_request().expect("the node sent no upstream request")
    }

    /// Like `next_request`, and checks it is a GET of `target`.
    pub fn expect_request(&mut self, target: &str) -> UpstreamId {
        let (u, r) = self.next_request();
        assert_eq!((r.method.as_str(), r.target.as_str(), r.version.as_str()), ("GET", target, "HTTP/1.1"), "{}", r.raw);
        u
    }

    /// Asserts the node wants nothing from the CDN: no connect, no unread request bytes.
    pub fn assert_no_upstream_activity(&self) {
        assert!(self.pending_connects.is_empty(), "unexpected connect: {:?}", self.pending_connects);
        for (u, s) in &self.ups {
            assert!(s.closed || s.inbox.is_empty(), "unexpected request bytes on {u:?}: {:?}", String::from_utf8_lossy(&s.inbox));
        }
    }

    /// Total requests the CDN received (read) so far.
    pub fn cdn_requests(&self) -> usize {
        self.ups.values().map(|s| s.requests.len()).sum()
    }

    /// The CDN writes `bytes` on `u`.
    pub fn cdn_send(&mut self, u: UpstreamId, bytes: &[u8]) {
        assert!(!self.ups[&u].closed, "CDN writing on closed {u:?}");
        self.node.upstream_recv(self.now, u, bytes).unwrap();
        self.pump();
    }

    /// The CDN writes `bytes` on `u` in pieces of `piece` bytes, pumping after each.
    pub fn cdn_send_pieces(&mut self, u: UpstreamId, bytes: &[u8], piece: usize) {
        for c in bytes.chunks(piece) {
            self.cdn_send(u, c);
        }
    }

    /// The CDN closes `u` (EOF or reset).
    pub fn cdn_close(&mut self, u: UpstreamId) {
        let st = self.ups.get_mut(&u).unwrap();
        assert!(!st.closed, "{u:?} already closed");
        st.closed = true;
        self.node.upstream_closed(self.now, u).unwrap();
        self.pump();
    }

    /// The CDN answers every request the node sends (accepting connects) with `f(now, request)`
    /// until nothing is waiting. Returns the targets served, in order. Bounded.
    pub fn cdn_serve_all(&mut self, f: &mut dyn FnMut(u64, &UpRequest) -> Vec<u8>) -> Vec<String> {
        let mut served = Vec::new();
        for _ in 0..10_000 {
            match self.try_next_request() {
                Some((u, r)) => {
                    let resp = f(self.now, &r);
                    served.push(r.target.clone());
                    self.cdn_send(u, &resp);
                }
                None => return served,
            }
        }
        panic!("the node kept sending upstream requests");
    }

    /// Like `advance_to`, with the CDN answering through `f` at every step (the node's own
    /// fetches — playlist following, prefetch — are served as they go out).
    pub fn advance_serving(&mut self, to: u64, f: &mut dyn FnMut(u64, &UpRequest) -> Vec<u8>) -> Vec<String> {
        let mut served = self.cdn_serve_all(f);
        for _ in 0..TIMER_LIMIT {
            match self.node.poll_timeout() {
                Some(t) if t <= to => {
                    self.now = self.now.max(t);
                    self.node.handle_timeout(self.now);
                    self.pump();
                    served.extend(self.cdn_serve_all(f));
                }
                _ => {
                    self.now = to;
                    self.node.handle_timeout(self.now);
                    self.pump();
                    served.extend(self.cdn_serve_all(f));
                    return served;
                }
            }
        }
        panic!("timers kept firing (timer limit)");
    }

    // --- whole exchanges ---

    /// Serves `target` from the CDN with `response` (answering a request that must be waiting).
    pub fn serve_next(&mut self, target: &str, response: &[u8]) -> UpstreamId {
        let u = self.expect_request(target);
        self.cdn_send(u, response);
        u
    }

    /// A fresh viewer GETs `path`; if the node fetches, the CDN answers `response`. Returns the
    /// viewer's response.
    pub fn fetch_through(&mut self, path: &str, response: &[u8]) -> Resp {
        let v = self.get(path);
        if let Some((u, r)) = self.try_next_request() {
            assert_eq!(r.target, path);
            self.cdn_send(u, response);
        }
        self.response(v)
    }

    /// Proves the node still serves: a new viewer of ch2 gets a fixture segment byte-identical
    /// through a fresh upstream fetch (a unique query makes it a miss), and the request went to
    /// ch2's endpoint.
    pub fn assert_still_serving(&mut self) {
        let n = self.connect_log.len() + self.cdn_requests() + self.viewers.len();
        let path = format!("/live/ch2/seg_2.ts?probe={n}");
        let body = fixture("seg_2.ts");
        let v = self.get(&path);
        let (u, r) = self.next_request();
        assert_eq!(r.target, path);
        assert_eq!(self.ups[&u].addr, addr(EP2), "ch2 is fetched from its own endpoint");
        self.cdn_send(u, &resp_200(&body, "Content-Type: video/mp2t\r\n"));
        let resp = self.response(v);
        assert_eq!(resp.status, 200);
        assert!(resp.body == body, "probe body differs");
        assert!(!self.is_closed(v));
    }
}

/// A GET request head (HTTP/1.1, keep-alive).
pub fn get_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: node.example\r\nUser-Agent: test-player\r\n\r\n")
}

/// A request head with extra header lines.
pub fn req_with(method: &str, path: &str, extra: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: node.example\r\n{extra}\r\n")
}
