//! `listo simulate`: a whole network in virtual time, in one process — a simulated live HLS
//! origin (latency and bandwidth modelled), one [`Node`], and N players that start at random
//! moments, poll the playlist like a player and fetch each new segment. Deterministic for a
//! seed. Used by the CLI and by the whole-node tests.

mod origin;
mod player;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io::IoSlice;
use std::net::SocketAddr;

use crate::{Config, ConnId, Instruction, Node, Transmit, UpTransmit, UpstreamId, ViewerId, SECOND};

pub use origin::{playlist_path, segment_path, splitmix, Origin, OriginObject};
use player::{Completed, Player};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Players.
    pub viewers: usize,
    /// Virtual seconds.
    pub seconds: u64,
    /// Live channels at the origin (each player watches one, round-robin).
    pub channels: usize,
    /// Seed for start times and segment sizes.
    pub seed: u64,
    /// Segment duration (also the playlist's target duration), seconds.
    pub segment_secs: u64,
    /// Segments listed in the playlist.
    pub window: usize,
    /// One-way latency node ↔ origin, ms (connect costs one round trip).
    pub latency_ms: u64,
    /// Origin bandwidth per connection, Mbit/s.
    pub bandwidth_mbps: u64,
    /// Smallest segment, bytes.
    pub min_segment_bytes: u64,
    /// Largest segment, bytes.
    pub max_segment_bytes: u64,
    /// Check every byte received by one player in this many (0: none).
    pub verify_every: usize,
    /// The node's configuration.
    pub node: Config,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            viewers: 1000,
            seconds: 120,
            channels: 2,
            seed: 1,
            segment_secs: 2,
            window: 6,
            latency_ms: 20,
            bandwidth_mbps: 200,
            min_segment_bytes: 500_000,
            max_segment_bytes: 2_000_000,
            verify_every: 50,
            node: Config::default(),
        }
    }
}

impl SimConfig {
    /// Segment duration in ns.
    pub fn segment_ns(&self) -> u64 {
        self.segment_secs * SECOND
    }
}

/// What a simulation measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimReport {
    /// Players.
    pub viewers: usize,
    /// Channels.
    pub channels: usize,
    /// Virtual seconds.
    pub seconds: u64,
    /// Distinct segments any player asked for.
    pub distinct_segments: u64,
    /// Segment requests the origin received.
    pub upstream_segment_requests: u64,
    /// Playlist requests the origin received.
    pub upstream_playlist_requests: u64,
    /// Playlist requests the origin received, most for one channel.
    pub upstream_playlist_requests_max_per_channel: u64,
    /// Body bytes the origin sent.
    pub upstream_bytes: u64,
    /// Bytes (heads and bodies) the players received.
    pub downstream_bytes: u64,
    /// Bytes the node was told it wrote (must equal `downstream_bytes`).
    pub node_downstream_bytes: u64,
    /// 1 − upstream / downstream bytes: the share of traffic the node kept off the network.
    pub saving_ratio: f64,
    /// Segments listed in a playlist that a player did not have complete within one segment
    /// duration of learning about them.
    pub stalls: u64,
    /// Segments players completed.
    pub segments_received: u64,
    /// Responses players got with a status other than 200.
    pub errors: u64,
    /// Bytes that differed from the origin's (checked players only).
    pub corrupt: u64,
    /// Longest wait for a segment, from learning of it to having it complete, ms.
    pub max_segment_wait_ms: u64,
    /// Requests answered from complete objects / coalesced onto a fetch / that fetched.
    pub hits: u64,
    /// See `hits`.
    pub coalesced: u64,
    /// See `hits`.
    pub misses: u64,
    /// Segment requests answered entirely from complete objects, over all segment requests.
    pub hit_ratio: f64,
    /// Whether the node prefetched (followed playlists).
    pub prefetch: bool,
    /// Real time the run took, ms (filled by the caller that timed it).
    pub wall_ms: u64,
}

impl SimReport {
    /// One JSON object, keys as `listo simulate` documents them.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "viewers": self.viewers,
            "channels": self.channels,
            "seconds": self.seconds,
            "distinct_segments": self.distinct_segments,
            "upstream_segment_requests": self.upstream_segment_requests,
            "upstream_playlist_requests": self.upstream_playlist_requests,
            "upstream_playlist_requests_max_per_channel": self.upstream_playlist_requests_max_per_channel,
            "upstream_bytes": self.upstream_bytes,
            "downstream_bytes": self.downstream_bytes,
            "node_downstream_bytes": self.node_downstream_bytes,
            "saving_ratio": (self.saving_ratio * 1e6).round() / 1e6,
            "stalls": self.stalls,
            "segments_received": self.segments_received,
            "errors": self.errors,
            "corrupt": self.corrupt,
            "max_segment_wait_ms": self.max_segment_wait_ms,
            "hits": self.hits,
            "coalesced": self.coalesced,
            "misses": self.misses,
            "hit_ratio": (self.hit_ratio * 1e6).round() / 1e6,
            "prefetch": self.prefetch,
            "wall_ms": self.wall_ms,
        })
        .to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Start(usize),
    Poll(usize),
    Connected(u64),
    Deliver(u64),
    NodeTimer,
}

/// One upstream connection as the origin sees it.
#[derive(Debug, Default)]
struct OriginConn {
    request: Vec<u8>,
    chunks: std::collections::VecDeque<bytes::Bytes>,
}

struct Sim {
    cfg: SimConfig,
    node: Node,
    origin: Origin,
    now: u64,
    end: u64,
    seq: u64,
    events: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    node_timer_at: u64,
    players: Vec<Player>,
    owner: HashMap<u64, (usize, bool)>,
    oconns: HashMap<u64, OriginConn>,
    distinct: HashSet<(usize, u64)>,
    playlist_requests: Vec<u64>,
    report: SimReport,
}

/// Runs a simulation to the end and reports.
pub fn run(cfg: &SimConfig) -> SimReport {
    let mut sim = Sim::new(cfg.clone());
    sim.run();
    sim.finish()
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
        let mut node = Node::new(cfg.node.clone());
        let origin_addr: SocketAddr = "127.0.0.1:18080".parse().expect("literal address");
        for c in 0..cfg.channels {
            let mut ins = Instruction::new(&format!("ch{c}"), &format!("/live/ch{c}/"), origin_addr);
            ins.host = Some("origin.example".into());
            // A bad instruction here is a bug in the simulator itself.
            node.instruct(0, ins).expect("simulator instructions are valid");
        }
        let mut rng = cfg.seed;
        let start_span = (cfg.seconds * SECOND / 2).max(1);
        let mut players = Vec::with_capacity(cfg.viewers);
        let mut events = BinaryHeap::new();
        for i in 0..cfg.viewers {
            let verify = cfg.verify_every > 0 && i % cfg.verify_every == 0;
            players.push(Player::new(i % cfg.channels.max(1), verify));
            let at = splitmix(&mut rng) % start_span;
            events.push(Reverse((at, i as u64, Ev::Start(i))));
        }
        Sim {
            origin: Origin::new(&cfg),
            end: cfg.seconds * SECOND,
            seq: cfg.viewers as u64,
            events,
            node_timer_at: u64::MAX,
            players,
            owner: HashMap::new(),
            oconns: HashMap::new(),
            distinct: HashSet::new(),
            playlist_requests: vec![0; cfg.channels],
            report: SimReport::default(),
            node,
            now: 0,
            cfg,
        }
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, ev)));
    }

    fn run(&mut self) {
        while let Some(Reverse((at, _, ev))) = self.events.pop() {
            if at > self.end {
                break;
            }
            self.now = at;
            match ev {
                Ev::Start(i) => self.request_playlist(i),
                Ev::Poll(i) => self.request_playlist(i),
                Ev::Connected(u) => {
                    self.oconns.insert(u, OriginConn::default());
                    let _ = self.node.upstream_connected(self.now, UpstreamId(u));
                }
                Ev::Deliver(u) => self.deliver(u),
                Ev::NodeTimer => {
                    self.node_timer_at = u64::MAX;
                    self.node.handle_timeout(self.now);
                }
            }
            self.pump();
        }
    }

    /// Drains the node's output the way a host does: connects, transmits, then the timer.
    fn pump(&mut self) {
        let latency = self.cfg.latency_ms * 1_000_000;
        loop {
            while let Some((u, _addr)) = self.node.poll_connect() {
                // A TCP connect costs one round trip.
                self.schedule(self.now + 2 * latency, Ev::Connected(u.0));
            }
            let Some(conn) = self.node.poll_ready() else { break };
            match conn {
                ConnId::Viewer(v) => self.transmit_viewer(v),
                ConnId::Upstream(u) => self.transmit_upstream(u),
            }
        }
        if let Some(t) = self.node.poll_timeout() {
            let t = t.max(self.now);
            if t < self.node_timer_at {
                self.node_timer_at = t;
                self.schedule(t, Ev::NodeTimer);
            }
        }
    }

    fn transmit_viewer(&mut self, v: ViewerId) {
        let Some(&(pi, is_seg)) = self.owner.get(&v.0) else {
            let _ = self.node.user_close(self.now, v);
            return;
        };
        for _ in 0..1_000_000 {
            let mut completed: Vec<Completed> = Vec::new();
            let mut slices = [IoSlice::new(&[]); 64];
            let total = match self.node.user_poll_transmit(v, &mut slices) {
                Ok(Transmit::Send(n)) => {
                    let p = &mut self.players[pi];
                    let mut total = 0;
                    for s in &slices[..n] {
                        total += s.len();
                        p.client(is_seg).feed(s, &self.origin, &mut completed);
                    }
                    total
                }
                Ok(Transmit::Close) | Err(_) => {
                    let _ = self.node.user_close(self.now, v);
                    self.owner.remove(&v.0);
                    self.players[pi].conn_closed(is_seg);
                    return;
                }
                Ok(Transmit::Wait) => return,
            };
            self.report.downstream_bytes += total as u64;
            let _ = self.node.user_sent(self.now, v, total);
            for c in completed {
                self.on_response(pi, is_seg, c);
            }
        }
    }

    fn transmit_upstream(&mut self, u: UpstreamId) {
        let bytes = match self.node.upstream_poll_transmit(u) {
            Ok(UpTransmit::Send(b)) => b.to_vec(),
            Ok(UpTransmit::Close) => {
                self.oconns.remove(&u.0);
                let _ = self.node.upstream_closed(self.now, u);
                return;
            }
            _ => return,
        };
        let _ = self.node.upstream_sent(self.now, u, bytes.len());
        let Some(oc) = self.oconns.get_mut(&u.0) else { return };
        oc.request.extend_from_slice(&bytes);
        let Some(end) = crate::http::find_header_end(&oc.request, 1 << 16) else { return };
        let head: Vec<u8> = oc.request.drain(..end).collect();
        let line = String::from_utf8_lossy(&head);
        let path = line.split(' ').nth(1).unwrap_or("/").to_string();
        let (obj, resp_head, body) = self.origin.respond(&path, self.now);
        match obj {
            OriginObject::Playlist(c) => {
                self.report.upstream_playlist_requests += 1;
                self.playlist_requests[c] += 1;
            }
            OriginObject::Segment(..) => self.report.upstream_segment_requests += 1,
            OriginObject::NotFound => {}
        }
        self.report.upstream_bytes += body.len() as u64;
        // Head first, then the body in pieces paced by the bandwidth.
        let piece = 64 * 1024;
        oc.chunks.push_back(resp_head);
        let mut off = 0;
        while off < body.len() {
            let n = piece.min(body.len() - off);
            oc.chunks.push_back(body.slice(off..off + n));
            off += n;
        }
        let latency = self.cfg.latency_ms * 1_000_000;
        self.schedule(self.now + 2 * latency, Ev::Deliver(u.0));
    }

    fn deliver(&mut self, u: u64) {
        let Some(oc) = self.oconns.get_mut(&u) else { return };
        let Some(chunk) = oc.chunks.pop_front() else { return };
        let more = !oc.chunks.is_empty();
        let next_len = oc.chunks.front().map_or(0, |c| c.len() as u64);
        let _ = self.node.upstream_recv(self.now, UpstreamId(u), &chunk);
        if more {
            let bps = self.cfg.bandwidth_mbps.max(1) * 1_000_000;
            let dt = next_len * 8 * SECOND / bps;
            self.schedule(self.now + dt.max(1), Ev::Deliver(u));
        }
    }

    fn conn_for(&mut self, pi: usize, is_seg: bool) -> ViewerId {
        if let Some(v) = self.players[pi].conn(is_seg) {
            return v;
        }
        let v = self.node.user_open(self.now, None);
        self.owner.insert(v.0, (pi, is_seg));
        self.players[pi].set_conn(is_seg, v);
        v
    }

    fn request_playlist(&mut self, pi: usize) {
        if self.players[pi].playlist_busy {
            return;
        }
        let c = self.players[pi].channel;
        let v = self.conn_for(pi, false);
        self.players[pi].playlist_busy = true;
        self.players[pi].playlist_asked_at = self.now;
        let req = format!("GET {} HTTP/1.1\r\nHost: node\r\n\r\n", playlist_path(c));
        let _ = self.node.user_recv(self.now, v, req.as_bytes());
    }

    fn request_next_segment(&mut self, pi: usize) {
        let p = &mut self.players[pi];
        if p.segment_in_flight.is_some() {
            return;
        }
        let Some((seq, wanted)) = p.queue.pop_front() else { return };
        p.segment_in_flight = Some((seq, wanted));
        let c = p.channel;
        p.seg.expect_segment(c, seq);
        self.distinct.insert((c, seq));
        let v = self.conn_for(pi, true);
        let req = format!("GET {} HTTP/1.1\r\nHost: node\r\n\r\n", segment_path(c, seq));
        let _ = self.node.user_recv(self.now, v, req.as_bytes());
    }

    fn on_response(&mut self, pi: usize, is_seg: bool, c: Completed) {
        if c.status != 200 {
            self.report.errors += 1;
        }
        self.report.corrupt += c.corrupt;
        if !is_seg {
            self.players[pi].playlist_busy = false;
            let listed = if c.status == 200 { crate::media::parse_playlist("/index.m3u8", &c.body).ok() } else { None };
            let next_poll = match listed {
                Some(info) => {
                    let first = info.media_sequence.unwrap_or(0);
                    let seqs: Vec<u64> = (0..info.uris.len() as u64).map(|i| first + i).collect();
                    self.players[pi].learn(&seqs, self.now);
                    self.request_next_segment(pi);
                    self.players[pi].playlist_asked_at + self.cfg.segment_ns()
                }
                None => self.now + SECOND,
            };
            self.schedule(next_poll.max(self.now + 1), Ev::Poll(pi));
        } else {
            let p = &mut self.players[pi];
            if let Some((_, wanted)) = p.segment_in_flight.take() {
                if c.status == 200 {
                    let wait = self.now - wanted;
                    self.report.segments_received += 1;
                    self.report.max_segment_wait_ms = self.report.max_segment_wait_ms.max(wait / 1_000_000);
                    if wait > self.cfg.segment_ns() {
                        self.report.stalls += 1;
                    }
                }
            }
            self.request_next_segment(pi);
        }
    }

    fn finish(mut self) -> SimReport {
        // Segments still awaited at the end count as stalls once overdue.
        for p in &self.players {
            let overdue = |wanted: u64| self.end.saturating_sub(wanted) > self.cfg.segment_ns();
            if let Some((_, wanted)) = p.segment_in_flight {
                if overdue(wanted) {
                    self.report.stalls += 1;
                }
            }
            self.report.stalls += p.queue.iter().filter(|(_, w)| overdue(*w)).count() as u64;
        }
        let stats = self.node.stats();
        let r = &mut self.report;
        r.viewers = self.cfg.viewers;
        r.channels = self.cfg.channels;
        r.seconds = self.cfg.seconds;
        r.distinct_segments = self.distinct.len() as u64;
        r.upstream_playlist_requests_max_per_channel = self.playlist_requests.iter().copied().max().unwrap_or(0);
        r.node_downstream_bytes = stats.downstream_bytes;
        r.hits = stats.channels.iter().map(|c| c.hits).sum();
        r.coalesced = stats.channels.iter().map(|c| c.coalesced).sum();
        r.misses = stats.channels.iter().map(|c| c.misses).sum();
        let seg_requests: u64 = stats.channels.iter().map(|c| c.segment_requests).sum();
        let seg_hits: u64 = stats.channels.iter().map(|c| c.segment_hits).sum();
        r.hit_ratio = if seg_requests > 0 { seg_hits as f64 / seg_requests as f64 } else { 0.0 };
        r.prefetch = self.cfg.node.prefetch;
        r.saving_ratio = if r.downstream_bytes > 0 { 1.0 - r.upstream_bytes as f64 / r.downstream_bytes as f64 } else { 0.0 };
        self.report
    }
}
