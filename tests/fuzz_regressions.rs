//! Regression tests for what the fuzz targets in `fuzz/` found, each reproduced through the
//! public sans-IO API with a tiny host of its own (no sockets, virtual time). The fuzz input
//! that found it is named in each test.

use std::collections::BTreeMap;
use std::io::IoSlice;

use listo::{Config, ConnId, Instruction, Node, Transmit, UpTransmit, UpstreamId, ViewerId, SECOND};

const EP: &str = "10.0.0.1:80";

/// A minimal host: drains every connection the node names, records what viewers receive and
/// what the node asks upstream.
struct Host {
    node: Node,
    now: u64,
    rx: BTreeMap<ViewerId, Vec<u8>>,
    closed: BTreeMap<ViewerId, bool>,
    /// Connects asked for and not yet answered.
    connects: Vec<UpstreamId>,
    /// Request heads written on each upstream connection.
    upstream_requests: BTreeMap<UpstreamId, Vec<String>>,
}

impl Host {
    fn new(cfg: Config) -> Self {
        let mut node = Node::new(cfg);
        node.instruct(0, Instruction::new("ch1", "/live/ch1/", EP.parse().unwrap())).unwrap();
        Host { node, now: 0, rx: BTreeMap::new(), closed: BTreeMap::new(), connects: Vec::new(), upstream_requests: BTreeMap::new() }
    }

    fn open(&mut self) -> ViewerId {
        let v = self.node.user_open(self.now, None);
        self.rx.insert(v, Vec::new());
        v
    }

    fn send(&mut self, v: ViewerId, bytes: &str) {
        self.node.user_recv(self.now, v, bytes.as_bytes()).unwrap();
        self.pump();
    }

    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut progressed = false;
            while let Some((u, _)) = self.node.poll_connect() {
                self.connects.push(u);
                progressed = true;
            }
            match self.node.poll_ready() {
                Some(ConnId::Viewer(v)) => {
                    progressed = true;
                    loop {
                        let mut slices = [IoSlice::new(&[]); 16];
                        match self.node.user_poll_transmit(v, &mut slices).unwrap() {
                            Transmit::Send(n) => {
                                let mut total = 0;
                                for s in &slices[..n] {
                                    self.rx.get_mut(&v).unwrap().extend_from_slice(s);
                                    total += s.len();
                                }
                                self.node.user_sent(self.now, v, total).unwrap();
                            }
                            Transmit::Close => {
                                self.closed.insert(v, true);
                                self.node.user_close(self.now, v).unwrap();
                                break;
                            }
                            Transmit::Wait => break,
                        }
                    }
                }
                Some(ConnId::Upstream(u)) => {
                    progressed = true;
                    loop {
                        match self.node.upstream_poll_transmit(u).unwrap() {
                            UpTransmit::Send(b) => {
                                let n = b.len();
                                let text = String::from_utf8_lossy(b).into_owned();
                                self.upstream_requests.entry(u).or_default().push(text);
                                self.node.upstream_sent(self.now, u, n).unwrap();
                            }
                            UpTransmit::Close => {
                                self.node.upstream_closed(self.now, u).unwrap();
                                break;
                            }
                            UpTransmit::Wait => break,
                        }
                    }
                }
                None => {}
            }
            if !progressed {
                return;
            }
        }
        panic!("the node never settled");
    }

    /// Connects the newest pending connect still wanted and returns it (older ones may have
    /// timed out meanwhile).
    fn connect(&mut self) -> UpstreamId {
        while let Some(u) = self.connects.pop() {
            if self.node.upstream_connected(self.now, u).is_ok() {
                self.pump();
                return u;
            }
        }
        panic!("no pending connect");
    }

    /// Connects every pending connect still wanted.
    fn connect_all(&mut self) {
        while let Some(u) = self.connects.pop() {
            if self.node.upstream_connected(self.now, u).is_ok() {
                self.pump();
            }
        }
    }

    /// Connects whatever is pending, then finds the connection whose latest request is for
    /// `path` (a pooled connection may have taken it).
    fn upstream_for(&mut self, path: &str) -> UpstreamId {
        self.connect_all();
        let line = format!("GET {path} ");
        *self
            .upstream_requests
            .iter()
            .find(|(_, reqs)| reqs.last().is_some_and(|r| r.starts_with(&line)))
            .unwrap_or_else(|| panic!("no upstream request for {path}: {:?}", self.upstream_requests))
            .0
    }

    fn respond(&mut self, u: UpstreamId, bytes: &[u8]) {
        self.node.upstream_recv(self.now, u, bytes).unwrap();
        self.pump();
    }

    /// Moves time to `t`, running every timer due on the way.
    fn advance_to(&mut self, t: u64) {
        for _ in 0..10_000 {
            match self.node.poll_timeout() {
                Some(d) if d <= t => {
                    self.now = self.now.max(d);
                    self.node.handle_timeout(self.now);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = self.now.max(t);
    }

    fn received(&self, v: ViewerId) -> String {
        String::from_utf8_lossy(&self.rx[&v]).into_owned()
    }

    fn all_upstream_requests(&self) -> Vec<String> {
        self.upstream_requests.values().flatten().cloned().collect()
    }
}

fn ok(body: &str, extra: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\n{extra}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// fuzz: viewer_stream, seed `bare-lf` with the CDN answering `Cache-Control: no-store`.
/// A response the store does not keep (no-store, `max-age=0`, or a status with no freshness)
/// was dropped from the store before its streaming readers were finished, so their response
/// never ended: the keep-alive connection stalled behind it, its next requests were never
/// answered, and the connection was never idle-closed (a leak per viewer).
#[test]
fn uncached_response_does_not_stall_the_keep_alive_connection() {
    for extra in ["Cache-Control: no-store\r\n", "Cache-Control: max-age=0\r\n", ""] {
        let mut h = Host::new(Config::default());
        let v = h.open();
        h.send(v, "GET /live/ch1/seg_1.ts HTTP/1.1\r\nHost: node\r\n\r\nGET /live/ch1/seg_2.ts HTTP/1.1\r\nHost: node\r\n\r\n");
        let u = h.connect();
        // A 403 is passed through and never cached (no freshness) — same path as no-store.
        let first = if extra.is_empty() {
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope".to_vec()
        } else {
            ok("segment-one", extra)
        };
        h.respond(u, &first);
        // The second request goes out on a new connection (or the pooled one).
        let u2 = if h.connects.is_empty() { u } else { h.connect() };
        let asked = h.all_upstream_requests();
        assert!(
            asked.iter().any(|r| r.starts_with("GET /live/ch1/seg_2.ts ")),
            "with {extra:?}: the second pipelined request never went upstream; upstream saw {asked:?}, viewer got {:?}",
            h.received(v)
        );
        h.respond(u2, &ok("segment-two", ""));
        let got = h.received(v);
        assert_eq!(got.matches("HTTP/1.1 ").count(), 2, "two responses expected: {got:?}");
        assert!(got.ends_with("segment-two"), "{got:?}");
    }
}

/// fuzz: upstream_stream, seed `cl-playlist` (a live playlist with `Cache-Control: max-age=1`).
/// The playlist is gated while its new segments are prefetched; when the gate opened after the
/// playlist's freshness had run out (max-age 1 s < gate timeout 2 s, or segment fetches that
/// fail late), the store dropped the playlist on completion before the viewers waiting for it
/// were answered: they waited forever.
#[test]
fn playlist_released_after_its_freshness_still_answers_its_viewers() {
    let mut h = Host::new(Config::default());
    let v1 = h.open();
    let v2 = h.open();
    h.send(v1, "GET /live/ch1/index.m3u8 HTTP/1.1\r\nHost: node\r\n\r\n");
    h.send(v2, "GET /live/ch1/index.m3u8 HTTP/1.1\r\nHost: node\r\n\r\n");
    let u = h.connect();
    let playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n#EXTINF:2.0,\nseg_1.ts\n#EXTINF:2.0,\nseg_2.ts\n#EXTINF:2.0,\nseg_3.ts\n";
    h.respond(u, &ok(playlist, "Cache-Control: max-age=1\r\n"));
    // The segment prefetches are never answered: the gate opens on its deadline.
    h.advance_to(10 * SECOND);
    for v in [v1, v2] {
        let got = h.received(v);
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with(playlist), "viewer {v:?} got {got:?}");
    }
}

/// fuzz: viewer_stream, crash-aabe76d8 (`GET /live/ch1/seg_!\xcd\x8bs HTTP/1.1`).
/// httparse accepts bytes 0x80..=0xFF in a request target; the node copied such a target
/// verbatim into the request line it sent upstream — bytes no request-target may hold, which a
/// CDN or a middlebox may read differently from the node (and which give one resource several
/// cache keys). The viewer must get 400 and nothing must go upstream.
#[test]
fn non_ascii_request_target_is_refused_not_forwarded() {
    for target in ["/live/ch1/seg_!\u{34b}s", "/live/ch1/s\u{e9}g_1.ts", "/live/ch1/seg_1.ts?q=\u{e9}"] {
        let mut h = Host::new(Config::default());
        let v = h.open();
        h.send(v, &format!("GET {target} HTTP/1.1\r\nHost: node\r\n\r\n"));
        h.connect_all();
        for r in h.all_upstream_requests() {
            let line = r.lines().next().unwrap_or("");
            assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "non-ASCII forwarded upstream: {line:?}");
        }
        let got = h.received(v);
        assert!(got.starts_with("HTTP/1.1 400 "), "for {target:?} the viewer got {got:?}");
    }
}

/// fuzz: control_json, crash-7e9e0aab (a `prefetch` path holding a DEL byte).
/// `prefetch` paths were only checked to start with the channel's prefix, then written verbatim
/// into upstream request lines: control bytes, CR/LF (a header injected into the request to the
/// CDN), spaces, non-ASCII, and dot segments that climb out of the channel's prefix upstream
/// were all accepted. An instruction with such a path must be refused and fetch nothing.
#[test]
fn prefetch_paths_are_validated_like_request_targets() {
    let bad = [
        "/live/ch1/a\u{7f}b.ts",
        "/live/ch1/a.ts HTTP/1.1\r\nX-Injected: 1\r\nX: y",
        "/live/ch1/a b.ts",
        "/live/ch1/\u{e9}.ts",
        "/live/ch1/../../admin/secret",
        "/live/ch1/./a.ts",
        "/live/ch1/%2e%2e/%2E%2E/admin",
        "/live/ch1/..%2fadmin",
    ];
    for p in bad {
        let json = serde_json::json!({"channel": "ch1", "path_prefix": "/live/ch1/", "endpoints": ["10.0.0.1:80"], "prefetch": [p]});
        let parsed = listo::control::parse_instruction_json(json.to_string().as_bytes());
        assert!(parsed.is_err(), "prefetch {p:?} accepted by parse_instruction_json");
        let mut ins = Instruction::new("ch1", "/live/ch1/", EP.parse().unwrap());
        ins.prefetch = vec![p.to_string()];
        let mut node = Node::new(Config::default());
        assert!(node.instruct(0, ins).is_err(), "prefetch {p:?} accepted by Node::instruct");
        assert!(node.poll_connect().is_none(), "prefetch {p:?} fetched");
    }
    // Ordinary prefetch paths (with a query) still pass.
    let mut ins = Instruction::new("ch1", "/live/ch1/", EP.parse().unwrap());
    ins.prefetch = vec!["/live/ch1/index.m3u8".into(), "/live/ch1/seg_1.ts?token=a%20b".into()];
    assert!(ins.validate().is_ok());
}

/// fuzz: viewer_stream, crash-9cfd4302 (a request that waits for the CDN, ~30 pipelined
/// requests behind it, then bytes that can never become a request).
/// `progress_viewer` answers a bounded number of pipelined requests per call and the rest are
/// resumed from `user_sent` once the output drained — but the resume looked only at queued
/// requests and a partial head, not at a protocol error queued behind them. When the bound ran
/// out right after the error was parsed, the 400 was never sent and the connection (no
/// request, no output, no timer) stayed open forever: a connection leak any client can cause.
#[test]
fn protocol_error_behind_a_long_pipeline_is_answered_and_closes() {
    for n in 10..=50 {
        let mut h = Host::new(Config::default());
        let v = h.open();
        let mut burst = String::from("GET /live/ch1/seg_1.ts HTTP/1.1\r\nHost: node\r\n\r\n");
        for i in 0..n {
            burst.push_str(&format!("GET /nowhere/{i} HTTP/1.1\r\nHost: node\r\n\r\n"));
        }
        burst.push_str("GM\u{7f}"); // can never become a request: 400
        h.send(v, &burst);
        let u = h.connect();
        h.respond(u, &ok("segment-one", ""));
        h.advance_to(3600 * SECOND);
        let got = h.received(v);
        assert_eq!(got.matches("HTTP/1.1 404 ").count(), n, "n={n}: every pipelined request answered");
        assert!(got.contains("HTTP/1.1 400 "), "n={n}: the protocol error behind the pipeline was never answered");
        assert!(h.closed.get(&v).copied().unwrap_or(false), "n={n}: the connection is never closed");
    }
}

/// fuzz: upstream_stream, crash-68c8ade1 (`#EXTINF:9999…9.0,` in a playlist from the CDN).
/// Durations and ages the CDN sends were scaled to nanoseconds and added to `now` with plain
/// arithmetic: a huge `#EXTINF` sum (live window), `#EXT-X-TARGETDURATION` (refresh period, and
/// 3× it for an LL-HLS blocking reload) or `max-age` overflowed — a panic in debug builds,
/// a wrapped (wrong) deadline in release builds. Must saturate instead.
#[test]
fn huge_durations_from_the_cdn_do_not_overflow() {
    let huge = "99999999999999999999999999999999999999";
    let playlists = [
        format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:{huge}.0,\nseg_1.ts\n#EXTINF:{huge}.0,\nseg_2.ts\n"),
        format!("#EXTM3U\n#EXT-X-TARGETDURATION:{huge}\n#EXTINF:2.0,\nseg_1.ts\n"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:18446744073709551\n#EXTINF:2.0,\nseg_1.ts\n".to_string(),
    ];
    let ages = ["", "Cache-Control: max-age=18446744073709551615\r\n", "Cache-Control: s-maxage=99999999999999\r\n"];
    for playlist in &playlists {
        for age in ages {
            let mut h = Host::new(Config::default());
            h.advance_to(5 * SECOND);
            let v = h.open();
            h.send(v, "GET /live/ch1/index.m3u8 HTTP/1.1\r\nHost: node\r\n\r\n");
            let u = h.connect();
            h.respond(u, &ok(playlist, age));
            h.advance_to(20 * SECOND);
            assert!(h.received(v).starts_with("HTTP/1.1 200 OK\r\n"), "{:?}", h.received(v));
            // A blocking reload (LL-HLS) after the target duration was learnt.
            let w = h.open();
            h.send(w, "GET /live/ch1/index.m3u8?_HLS_msn=1000 HTTP/1.1\r\nHost: node\r\n\r\n");
            h.connect_all();
            h.advance_to(60 * SECOND);
            // And a segment with a huge max-age.
            let s = h.open();
            h.send(s, "GET /live/ch1/seg_9.ts HTTP/1.1\r\nHost: node\r\n\r\n");
            let u = h.upstream_for("/live/ch1/seg_9.ts");
            h.respond(u, &ok("segment", age));
            h.advance_to(120 * SECOND);
            assert!(h.received(s).starts_with("HTTP/1.1 200 OK\r\n"), "{:?}", h.received(s));
        }
    }
}
