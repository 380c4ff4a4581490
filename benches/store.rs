//! Store lookups and hits under many channels (issue 7, item 1d).
//!
//! Setup (untimed): a node instructed with C channels (`/live/chNNNN/`) × 6 renditions
//! (`rR/index.m3u8`, a 6-segment live HLS playlist), every playlist warmed through the node
//! (a viewer asks, the node fetches; its own prefetches are answered too), then every segment
//! of every window requested once, so the store holds C × 6 × (1 playlist + 6 segments)
//! objects. Virtual time is then frozen, so everything stays fresh.
//!
//! Measures, for C = 1 (one rendition) and C = 1 000 (× 6 renditions, 42 000 objects):
//! - `hit_playlist/C`: one keep-alive viewer's request for a random playlist, end to end through
//!   the node API (`user_recv` → route → store hit → response head + shared body →
//!   `user_poll_transmit`/`user_sent`);
//! - `hit_segment/C`: the same for a random segment (1 880-byte body);
//! - `lookup/C`: `Store::lookup` alone on a store of the same shape (a prebuilt key).
//!
//! Expectation: a hit costs the same with 1 or 1 000 channels (hash lookups), a few µs end to
//! end, and `lookup` well under 100 ns. A growing gap between C = 1 and C = 1 000 points at
//! a per-request scan over channels.

mod common;

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use listo::store::{Lookup, ObjKind, ObjectKey, Store};
use listo::{Config, ViewerId, SECOND};

use common::{cdn_head, endpoint, hls_playlist, player_request, Host, Rng};

const RENDITIONS: usize = 6;
const WINDOW: usize = 6;
const FIRST_SEQ: u64 = 171_234;
const SEGMENT_BYTES: usize = 1880;

fn cdn(path: &str) -> (Bytes, Bytes) {
    if path.ends_with(".m3u8") {
        let body = Bytes::from(hls_playlist(WINDOW, FIRST_SEQ));
        (cdn_head("application/vnd.apple.mpegurl", body.len(), None), body)
    } else {
        let body = Bytes::from(vec![0x47u8; SEGMENT_BYTES]);
        (cdn_head("video/mp2t", body.len(), Some(30)), body)
    }
}

fn playlist_path(c: usize, r: usize) -> String {
    format!("/live/ch{c:04}/r{r}/index.m3u8")
}

fn segment_path(c: usize, r: usize, i: usize) -> String {
    format!("/live/ch{c:04}/r{r}/seg_{}.ts", FIRST_SEQ + i as u64)
}

struct Warm {
    host: Host,
    viewer: ViewerId,
    playlists: Vec<Vec<u8>>,
    segments: Vec<Vec<u8>>,
    upstream_requests: u64,
}

fn warm(channels: usize) -> Warm {
    let renditions = if channels == 1 { 1 } else { RENDITIONS };
    let cfg = Config { max_channels: channels.max(1024), memory_budget: 1 << 30, ..Config::default() };
    let mut host = Host::new(cfg);
    host.advance_to(SECOND);
    for c in 0..channels {
        host.instruct(&format!("ch{c:04}"), &format!("/live/ch{c:04}/"), endpoint(c % 4));
    }
    let viewer = host.node.user_open(host.now, None);
    let mut fetched = 0usize;
    for c in 0..channels {
        for r in 0..renditions {
            let got = host.request(viewer, &player_request(&playlist_path(c, r)), &cdn);
            assert!(got > 400, "playlist {c}/{r} served ({got} bytes)");
        }
    }
    for c in 0..channels {
        for r in 0..renditions {
            for i in 0..WINDOW {
                let got = host.request(viewer, &player_request(&segment_path(c, r, i)), &cdn);
                assert!(got > SEGMENT_BYTES as u64, "segment served");
            }
        }
    }
    let st = host.node.stats();
    let upstream_requests: u64 = st.channels.iter().map(|c| c.upstream_requests).sum();
    fetched += upstream_requests as usize;
    let objects = channels * renditions * (1 + WINDOW);
    assert_eq!(st.store_objects as usize, objects, "all objects cached");
    assert_eq!(fetched, objects, "each object fetched exactly once");
    // A shuffled sample of requests to replay.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let playlists =
        (0..4096).map(|_| player_request(&playlist_path(rng.below(channels), rng.below(renditions)))).collect();
    let segments = (0..4096)
        .map(|_| player_request(&segment_path(rng.below(channels), rng.below(renditions), rng.below(WINDOW))))
        .collect();
    Warm { host, viewer, playlists, segments, upstream_requests }
}

fn no_cdn(path: &str) -> (Bytes, Bytes) {
    panic!("a hit went upstream: {path}")
}

fn store(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_millis(500));
    g.sample_size(50);
    for channels in [1usize, 1000] {
        let mut w: Option<Warm> = None;
        for (name, pick_segments) in [("hit_playlist", false), ("hit_segment", true)] {
            g.bench_with_input(BenchmarkId::new(name, channels), &channels, |b, &channels| {
                let w = w.get_or_insert_with(|| warm(channels));
                let mut i = 0usize;
                b.iter(|| {
                    let reqs = if pick_segments { &w.segments } else { &w.playlists };
                    let req = &reqs[i % reqs.len()];
                    i += 1;
                    w.host.request(w.viewer, req, &no_cdn)
                });
            });
        }
        if let Some(w) = w.as_mut() {
            let st = w.host.node.stats();
            let up: u64 = st.channels.iter().map(|c| c.upstream_requests).sum();
            assert_eq!(up, w.upstream_requests, "hits only");
            assert_eq!(w.host.closed, 0);
        }

        // The store alone, same shape.
        let renditions = if channels == 1 { 1 } else { RENDITIONS };
        let mut s = Store::new(1 << 30);
        let mut keys = Vec::new();
        for ch in 0..channels {
            for r in 0..renditions {
                let mut paths = vec![playlist_path(ch, r)];
                paths.extend((0..WINDOW).map(|i| segment_path(ch, r, i)));
                for p in paths {
                    let key = ObjectKey { channel: ch as u64 + 1, path: p.into() };
                    let id = s.insert_filling(key.clone(), ObjKind::Segment, 0);
                    s.append(id, Bytes::from_static(b"x"));
                    s.complete(id, 0, 3600 * SECOND);
                    keys.push(key);
                }
            }
        }
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let sample: Vec<ObjectKey> = (0..4096).map(|_| keys[rng.below(keys.len())].clone()).collect();
        assert!(matches!(s.lookup(&sample[0], SECOND), Lookup::Hit(_)));
        g.bench_with_input(BenchmarkId::new("lookup", channels), &channels, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                let k = &sample[i % sample.len()];
                i += 1;
                s.lookup(black_box(k), SECOND)
            });
        });
    }
    g.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
