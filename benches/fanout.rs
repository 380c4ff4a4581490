//! In-core fan-out (issue 7, item 1a): one live segment to N viewers through the node's public
//! sans-IO API, in virtual time.
//!
//! Measures, per iteration = one new segment: every one of N keep-alive viewers (opened once,
//! before timing) sends a typical player `GET` for the same new segment; the first one makes the
//! node fetch it (one upstream request, asserted), the others coalesce onto it; the CDN answers
//! with the head and then the body in 16 KiB pieces (`upstream_recv_bytes`, no copy in); after
//! every piece the host drains every ready viewer with `user_poll_transmit` (64 `IoSlice`s) +
//! `user_sent` — the slices are summed, never copied — exactly as the mio driver does, minus the
//! syscall. Virtual time advances 2 s per segment (timers and the store sweep run as live).
//!
//! Reported with `Throughput::Elements(viewers)`, so criterion's "thrpt" is viewers per second
//! and `time / viewers` is the cost per viewer per segment. Expectation (issue 7): at large N
//! that cost is ≤ 200 ns and *flat in the segment size* (64 KiB, 1 MiB, 4 MiB), since no viewer
//! ever gets a copy of the body. What remains per viewer is per *piece* work (a `Bytes`
//! refcount, a queue push, a wake-up, one poll/sent round), so a 4 MiB segment (256 pieces)
//! costs more per viewer than a 64 KiB one (4 pieces) unless pieces are batched; the ratio
//! 4 MiB / 64 KiB per viewer is the number to watch (1.0 is the ideal, 64 is "linear in pieces",
//! 4 MiB·(memcpy speed) would be a copy).
//!
//! Note: every node is rebuilt (untimed) after 40 segments (80 virtual seconds, so idle and
//! pool timers still fire). Without that, the per-segment fixed cost grows with the number of
//! segments the bench happens to run: the node's timer heap gains about one stale
//! `Upstream` entry per fetch on a kept-alive upstream connection (a popped stale entry resets
//! `scheduled` and re-arms, so duplicates never die), and `handle_timeout` then pops and
//! re-pushes ~entries/15 of them every 2 s. `benches/memory.rs` shows that growth.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use listo::{Config, ViewerId, SECOND};

use common::{cdn_head, endpoint, player_request, Host};

/// Upstream delivery piece (what one socket read typically hands the node).
const PIECE: usize = 16 * 1024;
const SIZES: [(usize, &str); 3] = [(64 << 10, "64KiB"), (1 << 20, "1MiB"), (4 << 20, "4MiB")];
const VIEWERS: [usize; 5] = [1, 10, 100, 1_000, 10_000];
/// Segments per node before it is rebuilt (untimed).
const RESET_EVERY: u64 = 40;

struct Fanout {
    host: Host,
    viewers: Vec<ViewerId>,
    body: Bytes,
    head: Bytes,
    seq: u64,
}

impl Fanout {
    fn new(viewers: usize, size: usize) -> Self {
        let cfg = Config { memory_budget: 256 << 20, ..Config::default() };
        let mut host = Host::new(cfg);
        host.instruct("ch1", "/live/ch1/", endpoint(1));
        let viewers = (0..viewers).map(|_| host.node.user_open(0, None)).collect();
        let body = Bytes::from(vec![0x47u8; size]);
        let head = cdn_head("video/mp2t", size, Some(30));
        Fanout { host, viewers, body, head, seq: 0 }
    }

    /// One segment to every viewer; returns the bytes the viewers received.
    fn segment(&mut self) -> u64 {
        self.seq += 1;
        let h = &mut self.host;
        h.advance_to(self.seq * 2 * SECOND);
        let before = h.downstream;
        let req = player_request(&format!("/live/ch1/seg_{}.ts", self.seq));
        for &v in &self.viewers {
            h.node.user_recv(h.now, v, &req).expect("user_recv");
        }
        h.pump();
        let (u, _path) = h.requests.pop_front().expect("one upstream request per segment");
        h.answer(u, self.head.clone(), &self.body, PIECE);
        h.downstream - before
    }

    /// Every viewer asks for the segment fetched last, complete and fresh in the store (time
    /// does not move): a hit each; returns the bytes the viewers received.
    fn hit(&mut self) -> u64 {
        let h = &mut self.host;
        let before = h.downstream;
        let req = player_request(&format!("/live/ch1/seg_{}.ts", self.seq));
        for &v in &self.viewers {
            h.node.user_recv(h.now, v, &req).expect("user_recv");
        }
        h.pump();
        h.downstream - before
    }

    /// One segment, with the checks that keep the bench honest.
    fn checked_segment(&mut self) {
        let got = self.segment();
        let n = self.viewers.len() as u64;
        let size = self.body.len() as u64;
        assert!(got >= n * size && got < n * (size + 1024), "every viewer got the whole segment once: {got}");
        assert!(self.host.requests.is_empty(), "exactly one upstream request");
        assert_eq!(self.host.closed, 0, "no viewer dropped");
        let st = self.host.node.stats();
        assert_eq!(st.channels[0].upstream_requests, self.seq, "one upstream request per segment");
    }
}

fn fanout(c: &mut Criterion) {
    for &(size, label) in &SIZES {
        let mut g = c.benchmark_group(format!("fanout_{label}"));
        g.measurement_time(Duration::from_secs(3));
        g.warm_up_time(Duration::from_millis(500));
        for &n in &VIEWERS {
            // Viewer-pieces per iteration decide how long one iteration takes.
            let work = n * size.div_ceil(PIECE);
            if work >= 50_000 {
                g.sampling_mode(SamplingMode::Flat).sample_size(10);
            } else {
                g.sampling_mode(SamplingMode::Auto).sample_size(30);
            }
            g.throughput(Throughput::Elements(n as u64));
            // Set up lazily, inside the closure: criterion calls it only for the benchmarks the
            // filter keeps (and once per sample, hence the cache). The node is rebuilt, untimed,
            // every `RESET_EVERY` segments: see the note on the timer heap at the top.
            let mut state: Option<Fanout> = None;
            g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        if state.as_ref().is_none_or(|f| f.seq >= RESET_EVERY) {
                            let mut f = Fanout::new(n, size);
                            f.checked_segment();
                            state = Some(f);
                        }
                        let f = state.as_mut().unwrap();
                        let t = Instant::now();
                        black_box(f.segment());
                        total += t.elapsed();
                    }
                    total
                });
            });
            if let Some(f) = state.as_mut() {
                f.checked_segment();
            }
        }
        g.finish();
    }
}

/// The same segment sizes, served to N viewers from a complete object (a cache hit each, no
/// upstream, no wake-ups per piece): what is left is parsing the viewer's request, its response
/// head and one shared reference to the object, which the store compacted into one page-aligned
/// buffer when it completed. Expectation: flat in segment size. Measured (1000 viewers, medians
/// of 3 alternating runs on a loaded 2-core machine): 2.9 / 3.2 / 4.8 µs per viewer for 64 KiB /
/// 1 MiB / 4 MiB, against 4.9 / 11.3 / 27.7 µs when the store kept the 16 KiB pieces.
fn fanout_hit(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_hit");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_millis(500));
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    for &(size, label) in &SIZES {
        for n in [1_000usize, 10_000] {
            g.throughput(Throughput::Elements(n as u64));
            let mut state: Option<Fanout> = None;
            g.bench_with_input(BenchmarkId::new(label, n), &n, |b, &n| {
                let f = state.get_or_insert_with(|| {
                    let mut f = Fanout::new(n, size);
                    f.checked_segment();
                    f
                });
                b.iter(|| f.hit());
            });
            if let Some(f) = state.as_mut() {
                let got = f.hit();
                let size = size as u64;
                assert!(got >= n as u64 * size && got < n as u64 * (size + 1024), "hits served whole: {got}");
                assert!(f.host.requests.is_empty() && f.host.closed == 0);
                assert_eq!(f.host.node.stats().channels[0].upstream_requests, f.seq, "hits only");
            }
        }
    }
    g.finish();
}

criterion_group!(benches, fanout, fanout_hit);
criterion_main!(benches);
