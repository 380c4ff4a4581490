//! A minimal host for benches: drives a `listo::Node` in virtual time through its public sans-IO
//! API only. Viewer output is drained the way the mio driver does it (`user_poll_transmit` into
//! 64 `IoSlice`s, then `user_sent` with the total) but nothing is copied: the slices are only
//! summed. The CDN side is played by hand: upstream requests are collected, and the bench decides
//! when and in which pieces to answer (`upstream_recv_bytes`, so no copy on the way in either).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;

use bytes::Bytes;
use listo::{Config, ConnId, Instruction, Node, Transmit, UpTransmit, UpstreamId, ViewerId, SECOND};

/// One millisecond in node time.
pub const MS: u64 = 1_000_000;

/// A CDN endpoint address. Nothing is ever connected: the bench plays the endpoint.
pub fn endpoint(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i >> 8) as u8, (i & 0xff) as u8], 80))
}

/// A typical player request head (hls.js / AVPlayer shape).
pub fn player_request(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: cdn.example.net\r\nUser-Agent: Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) Version/6.0 TV Safari/537.36\r\nAccept: */*\r\nAccept-Encoding: identity\r\nOrigin: https://player.example.net\r\nReferer: https://player.example.net/\r\nConnection: keep-alive\r\n\r\n"
    )
    .into_bytes()
}

/// A CDN response head for a body of `len` bytes.
pub fn cdn_head(content_type: &str, len: usize, max_age: Option<u64>) -> Bytes {
    let cc = match max_age {
        Some(s) => format!("Cache-Control: public, max-age={s}\r\n"),
        None => String::new(),
    };
    Bytes::from(format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nETag: \"5f3e-{len}\"\r\nLast-Modified: Tue, 25 Nov 2025 09:59:58 GMT\r\n{cc}Access-Control-Allow-Origin: *\r\nConnection: keep-alive\r\n\r\n"
    ))
}

/// A synthetic live HLS media playlist: `n` segments of 2 s starting at `first`.
pub fn hls_playlist(n: usize, first: u64) -> String {
    let mut s = format!("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for i in 0..n as u64 {
        let seq = first + i;
        let (sec, ms) = ((seq * 2) % 60, 577);
        s.push_str(&format!(
            "#EXTINF:2.000000,\n#EXT-X-PROGRAM-DATE-TIME:2026-11-25T08:{:02}:{:02}.{ms}+0000\nseg_{seq}.ts\n",
            (seq * 2 / 60) % 60,
            sec
        ));
    }
    s
}

/// The bench host around one node.
pub struct Host {
    pub node: Node,
    pub now: u64,
    /// Upstream requests the node wrote, complete heads only: (connection, request path).
    pub requests: VecDeque<(UpstreamId, String)>,
    /// Partial upstream request bytes per connection (rarely more than one head at a time).
    up_partial: Vec<(UpstreamId, Vec<u8>)>,
    /// Bytes handed to viewers (what the sockets "took").
    pub downstream: u64,
    /// Viewer connections the node asked to close.
    pub closed: u64,
}

impl Host {
    pub fn new(cfg: Config) -> Self {
        let mut node = Node::new(cfg);
        // Tue, 25 Nov 2025 10:00:00 GMT at virtual time 0.
        node.set_wall_clock(0, 1_764_064_800 * SECOND);
        Host { node, now: 0, requests: VecDeque::new(), up_partial: Vec::new(), downstream: 0, closed: 0 }
    }

    pub fn instruct(&mut self, channel: &str, prefix: &str, ep: SocketAddr) {
        let ins = Instruction::new(channel, prefix, ep);
        self.node.instruct(self.now, ins).expect("instruction accepted");
    }

    /// Accepts every connection the node asks for, then drains every ready connection. Returns
    /// the bytes given to viewers.
    pub fn pump(&mut self) -> u64 {
        let before = self.downstream;
        loop {
            while let Some((u, _addr)) = self.node.poll_connect() {
                self.node.upstream_connected(self.now, u).expect("connected");
            }
            let Some(c) = self.node.poll_ready() else { break };
            match c {
                ConnId::Viewer(v) => self.flush_viewer(v),
                ConnId::Upstream(u) => self.flush_upstream(u),
            }
        }
        self.downstream - before
    }

    /// Writes what the node has for viewer `v`: vectored, from the shared buffers, no copy.
    #[inline]
    pub fn flush_viewer(&mut self, v: ViewerId) {
        loop {
            let mut slices = [IoSlice::new(&[]); 64];
            let total = match self.node.user_poll_transmit(v, &mut slices) {
                Ok(Transmit::Send(n)) => slices[..n].iter().map(|s| s.len()).sum::<usize>(),
                Ok(Transmit::Close) => {
                    let _ = self.node.user_close(self.now, v);
                    self.closed += 1;
                    return;
                }
                Ok(Transmit::Wait) | Err(_) => return,
            };
            self.downstream += total as u64;
            self.node.user_sent(self.now, v, total).expect("user_sent");
        }
    }

    fn flush_upstream(&mut self, u: UpstreamId) {
        let bytes = match self.node.upstream_poll_transmit(u) {
            Ok(UpTransmit::Send(b)) => b.to_vec(),
            Ok(UpTransmit::Close) => {
                let _ = self.node.upstream_closed(self.now, u);
                return;
            }
            _ => return,
        };
        self.node.upstream_sent(self.now, u, bytes.len()).expect("upstream_sent");
        let buf = match self.up_partial.iter_mut().find(|(x, _)| *x == u) {
            Some((_, b)) => b,
            None => {
                self.up_partial.push((u, Vec::new()));
                &mut self.up_partial.last_mut().unwrap().1
            }
        };
        buf.extend_from_slice(&bytes);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) {
            let head: Vec<u8> = buf.drain(..end).collect();
            let line = String::from_utf8_lossy(&head);
            let path = line.split(' ').nth(1).unwrap_or("/").to_string();
            self.requests.push_back((u, path));
        }
    }

    /// Answers upstream request on `u` with `head` then `body` in pieces of `piece` bytes,
    /// pumping after each piece (bytes reach viewers as they arrive).
    pub fn answer(&mut self, u: UpstreamId, head: Bytes, body: &Bytes, piece: usize) {
        self.node.upstream_recv_bytes(self.now, u, head).expect("upstream_recv");
        self.pump();
        let mut off = 0;
        while off < body.len() {
            let n = piece.min(body.len() - off);
            self.node.upstream_recv_bytes(self.now, u, body.slice(off..off + n)).expect("upstream_recv");
            self.pump();
            off += n;
        }
    }

    /// Moves virtual time to `t` and runs due timers.
    pub fn advance_to(&mut self, t: u64) {
        self.now = t;
        if self.node.poll_timeout().is_some_and(|d| d <= t) {
            self.node.handle_timeout(t);
            self.pump();
        }
    }
}

/// What a bench's CDN answers for a path: (response head, body).
pub type Cdn<'a> = &'a dyn Fn(&str) -> (Bytes, Bytes);

impl Host {
    /// Answers every upstream request (including those the node makes on its own, such as
    /// prefetches), in order, until none is left; bodies go in pieces of `piece` bytes.
    pub fn serve_cdn(&mut self, cdn: Cdn<'_>, piece: usize) -> usize {
        let mut n = 0;
        self.pump();
        while let Some((u, path)) = self.requests.pop_front() {
            let (head, body) = cdn(&path);
            self.answer(u, head, &body, piece);
            n += 1;
        }
        n
    }

    /// One viewer request, answered by the node and (if it fetches) by `cdn`; returns the
    /// bytes the viewer received.
    pub fn request(&mut self, v: ViewerId, req: &[u8], cdn: Cdn<'_>) -> u64 {
        let before = self.downstream;
        self.node.user_recv(self.now, v, req).expect("user_recv");
        self.serve_cdn(cdn, 16 * 1024);
        self.downstream - before
    }
}

/// A small xorshift generator: deterministic shuffles without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
