//! Memory of node state (issue 7, item 2). A plain `main` (harness = false) that prints tables;
//! run it with `cargo bench --bench memory`.
//!
//! A counting global allocator (this binary only) tracks the heap bytes requested and the live
//! allocations; every figure is a difference of the live heap between two moments of one node
//! driven through its public API in virtual time (allocator overhead, ~16 B per live allocation,
//! is not included; the live allocation counts are printed so it can be added).
//!
//! Reports:
//! 1. node state per viewer connection: just opened (idle), idle after one request (keep-alive,
//!    buffers warmed), active (attached to a 1 MiB segment being fetched, half of it streamed
//!    and written), and active with a backlog (half of it queued, nothing written yet);
//! 2. the store per segment as the number of viewers grows (1 … 10 000): body bytes held and
//!    the heap left after the segment — it must not grow with viewers;
//! 3. the store for C channels × a window of 6 segments (plus the playlist);
//! 4. steady state over time: heap and time per segment while one viewer follows a live
//!    channel for thousands of segments — both should stay flat.
//!
//! Expectations (issue 7): ≤ 2 KiB per idle viewer; per-viewer figures independent of the
//! segment size (viewers hold references, never copies); store bytes = one copy per object.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::Instant;

use bytes::Bytes;
use listo::{Config, Node, UpstreamId, ViewerId, SECOND};

use common::{cdn_head, endpoint, hls_playlist, player_request, Host};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(l.size() as isize, Relaxed);
            LIVE_ALLOCS.fetch_add(1, Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(l.size() as isize, Relaxed);
            LIVE_ALLOCS.fetch_add(1, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE_BYTES.fetch_sub(l.size() as isize, Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            LIVE_BYTES.fetch_add(new as isize - l.size() as isize, Relaxed);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy)]
struct Snap {
    bytes: isize,
    allocs: isize,
}

fn snap() -> Snap {
    Snap { bytes: LIVE_BYTES.load(Relaxed), allocs: LIVE_ALLOCS.load(Relaxed) }
}

impl Snap {
    fn since(self, before: Snap) -> Snap {
        Snap { bytes: self.bytes - before.bytes, allocs: self.allocs - before.allocs }
    }
}

const PIECE: usize = 16 * 1024;
/// Full figures under `cargo bench` (which passes `--bench`); a quick pass under
/// `cargo test --benches`.
fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn viewers_n() -> usize {
    if full() {
        10_000
    } else {
        1_000
    }
}

fn kib(b: f64) -> String {
    if b.abs() >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / 1024.0 / 1024.0)
    } else if b.abs() >= 10.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// A node with channel ch1 and its upstream connection already open and idle (one warm-up
/// segment went through it), so that later figures hold no one-off pool or table growth.
fn node_with_channel() -> (Host, Bytes) {
    let mut h = Host::new(Config { memory_budget: 4 << 30, ..Config::default() });
    h.instruct("ch1", "/live/ch1/", endpoint(1));
    let v = h.node.user_open(0, None);
    let body = Bytes::from(vec![0x47u8; 64 << 10]);
    let head = cdn_head("video/mp2t", body.len(), Some(30));
    h.node.user_recv(0, v, &player_request("/live/ch1/warmup.ts")).unwrap();
    h.pump();
    let (u, _) = h.requests.pop_front().unwrap();
    h.answer(u, head, &body, PIECE);
    h.node.user_close(0, v).unwrap();
    (h, body)
}

/// Feeds a CDN response through `upstream_recv` (the node copies each piece once into its
/// own buffer, as a host reading a socket would), pumping after each piece when `drain`.
fn feed(h: &mut Host, u: UpstreamId, head: &[u8], body: &[u8], upto: usize, drain: bool) {
    if !head.is_empty() {
        h.node.upstream_recv(h.now, u, head).unwrap();
        if drain {
            h.pump();
        }
    }
    let mut off = 0;
    while off < upto {
        let n = PIECE.min(upto - off);
        h.node.upstream_recv(h.now, u, &body[off..off + n]).unwrap();
        if drain {
            h.pump();
        }
        off += n;
    }
}

fn per_viewer() {
    let nv = viewers_n();
    println!("\n1. Node state per viewer connection ({nv} viewers, 1 MiB segment in 16 KiB pieces)\n");
    println!(
        "   size_of: Node {} B, ViewerConn {} B, store Object {} B, Request {} B",
        std::mem::size_of::<Node>(),
        std::mem::size_of::<listo::user::ViewerConn>(),
        std::mem::size_of::<listo::store::Object>(),
        std::mem::size_of::<listo::http::Request>(),
    );
    println!("\n   {:<58} {:>12} {:>14}", "state", "per viewer", "allocs/viewer");
    let row = |what: &str, d: Snap| {
        println!("   {:<58} {:>12} {:>14.2}", what, kib(d.bytes as f64 / nv as f64), d.allocs as f64 / nv as f64);
    };

    let (mut h, _) = node_with_channel();
    let size = 1 << 20;
    let body: Vec<u8> = vec![0x47; size];
    let head = cdn_head("video/mp2t", size, Some(30));

    let s0 = snap();
    let viewers: Vec<ViewerId> = (0..nv).map(|_| h.node.user_open(h.now, None)).collect();
    let s1 = snap();
    row("idle, just opened", s1.since(s0));

    // One small request each (a playlist-sized object), answered and written: keep-alive idle.
    let small = Bytes::from(hls_playlist(6, 1));
    let phead = cdn_head("application/vnd.apple.mpegurl", small.len(), Some(1));
    let req = player_request("/live/ch1/first.ts");
    for &v in &viewers {
        h.node.user_recv(h.now, v, &req).unwrap();
    }
    h.pump();
    let (u, _) = h.requests.pop_front().unwrap();
    feed(&mut h, u, &phead, &small, small.len(), true);
    let store_small = h.node.stats().store_bytes;
    let s2 = snap();
    row(
        "idle after one request (keep-alive, buffers kept)",
        Snap { bytes: s2.since(s0).bytes - store_small as isize, ..s2.since(s0) },
    );

    // Every viewer asks for the 1 MiB segment; half of it arrives and is written.
    h.now += SECOND;
    let req = player_request("/live/ch1/seg_1.ts");
    for &v in &viewers {
        h.node.user_recv(h.now, v, &req).unwrap();
    }
    h.pump();
    let (u, _) = h.requests.pop_front().unwrap();
    feed(&mut h, u, &head, &body, size / 2, true);
    let s3 = snap();
    let st = h.node.stats();
    let store_half = st.store_bytes as isize - store_small as isize;
    let active = s3.since(s2);
    row(
        "active: attached, half of the segment streamed and written",
        Snap { bytes: active.bytes - store_half, allocs: active.allocs - (size / 2 / PIECE) as isize },
    );
    println!("   {:<58} {:>12}", "  (store body bytes held meanwhile, once for all)", kib(store_half as f64));

    // The rest arrives but nobody writes: every viewer holds references to 32 pieces.
    feed(&mut h, u, &[], &body[size / 2..], size / 2, false);
    let s4 = snap();
    let st = h.node.stats();
    let store_full = st.store_bytes as isize - store_small as isize;
    let backlog = s4.since(s2);
    row(
        "active with a backlog: other half queued (32 refs), unwritten",
        Snap { bytes: backlog.bytes - store_full, allocs: backlog.allocs - (size / PIECE) as isize },
    );
    println!("   {:<58} {:>12}", "  (store body bytes, once for all)", kib(store_full as f64));
    h.pump();
    assert_eq!(h.closed, 0);
    let s5 = snap();
    row(
        "idle again after the segment was written",
        Snap { bytes: s5.since(s0).bytes - st.store_bytes as isize, ..s5.since(s0) },
    );
}

fn store_vs_viewers() {
    println!("\n2. The store does not grow with viewers: one 1 MiB segment, N viewers\n");
    println!(
        "   {:>7} {:>14} {:>9} {:>24} {:>26}",
        "viewers", "store bytes", "objects", "heap kept − body", "extra per added viewer"
    );
    let size = 1 << 20;
    let body: Vec<u8> = vec![0x47; size];
    let head = cdn_head("video/mp2t", size, Some(30));
    let mut kept_one: Option<isize> = None;
    for n in [1usize, 100, 1_000, 10_000].into_iter().filter(|&n| n <= viewers_n()) {
        let (mut h, _) = node_with_channel();
        let viewers: Vec<ViewerId> = (0..n).map(|_| h.node.user_open(h.now, None)).collect();
        // Two segments first, so viewers' buffers and the node's tables reach their size; the
        // third is measured.
        for seq in 1..=3u64 {
            let before_stats = h.node.stats();
            let before = snap();
            h.now += 2 * SECOND;
            let req = player_request(&format!("/live/ch1/seg_{seq}.ts"));
            for &v in &viewers {
                h.node.user_recv(h.now, v, &req).unwrap();
            }
            h.pump();
            let (u, _) = h.requests.pop_front().unwrap();
            feed(&mut h, u, &head, &body, size, true);
            if seq == 3 {
                let kept = snap().since(before).bytes - size as isize;
                let st = h.node.stats();
                let one = *kept_one.get_or_insert(kept);
                let per = if n > 1 { kib((kept - one) as f64 / (n - 1) as f64) } else { "-".to_string() };
                println!(
                    "   {:>7} {:>14} {:>9} {:>24} {:>26}",
                    n,
                    st.store_bytes - before_stats.store_bytes,
                    st.store_objects - before_stats.store_objects,
                    kib(kept as f64),
                    per
                );
            }
        }
    }
    println!("\n   (store bytes: body bytes the store owns, from stats(); heap kept: live heap once the");
    println!("   segment was written to every viewer, minus before it was requested, minus the body)");
}

fn store_channels() {
    println!("\n3. Store for C channels × a live window (playlist + 6 segments of 64 KiB each)\n");
    println!(
        "   {:>8} {:>9} {:>14} {:>14} {:>20}",
        "channels", "objects", "store bytes", "heap", "heap − body / object"
    );
    let seg = 64 << 10;
    for c in [10usize, 100, 1_000].into_iter().filter(|&c| full() || c <= 100) {
        let mut h = Host::new(Config { memory_budget: 4 << 30, max_channels: 1024, ..Config::default() });
        for i in 0..c {
            h.instruct(&format!("ch{i:04}"), &format!("/live/ch{i:04}/"), endpoint(i % 4));
        }
        let v = h.node.user_open(0, None);
        let pl = Bytes::from(hls_playlist(6, 100));
        let seg_body = vec![0x47u8; seg];
        let s0 = snap();
        let cdn = |path: &str| -> (Bytes, Bytes) {
            if path.ends_with(".m3u8") {
                (cdn_head("application/vnd.apple.mpegurl", pl.len(), None), pl.clone())
            } else {
                // A fresh buffer per segment, as if read from a socket.
                (cdn_head("video/mp2t", seg, Some(30)), Bytes::from(seg_body.clone()))
            }
        };
        for i in 0..c {
            h.request(v, &player_request(&format!("/live/ch{i:04}/index.m3u8")), &cdn);
            for s in 0..6 {
                h.request(v, &player_request(&format!("/live/ch{i:04}/seg_{}.ts", 100 + s)), &cdn);
            }
        }
        let d = snap().since(s0);
        let st = h.node.stats();
        println!(
            "   {:>8} {:>9} {:>14} {:>14} {:>20}",
            c,
            st.store_objects,
            kib(st.store_bytes as f64),
            kib(d.bytes as f64),
            kib((d.bytes as f64 - st.store_bytes as f64) / st.store_objects as f64)
        );
    }
    println!("\n   (heap − body includes the per-channel tables and one viewer, spread over the objects)");
}

fn steady_state() {
    println!("\n4. Steady state: one viewer follows a live channel (64 KiB segments every 2 s)\n");
    println!("   {:>9} {:>14} {:>16} {:>20}", "segments", "virtual time", "node heap", "µs per segment (last)");
    let (mut h, body) = node_with_channel();
    let head = cdn_head("video/mp2t", body.len(), Some(30));
    let v = h.node.user_open(h.now, None);
    let base = snap();
    let mut t = Instant::now();
    let mut last = 0u64;
    let segments = if full() { 8_000 } else { 1_000 };
    for seq in 1..=segments {
        h.advance_to(seq * 2 * SECOND);
        h.node.user_recv(h.now, v, &player_request(&format!("/live/ch1/seg_{seq}.ts"))).unwrap();
        h.pump();
        let (u, _) = h.requests.pop_front().unwrap();
        h.answer(u, head.clone(), &body, PIECE);
        if [100, 500, 1_000, 2_000, 4_000, 8_000].contains(&seq) {
            let us = t.elapsed().as_secs_f64() * 1e6 / (seq - last) as f64;
            println!(
                "   {:>9} {:>13}h {:>16} {:>20.1}",
                seq,
                format!("{:.1}", (seq * 2) as f64 / 3600.0),
                kib(snap().since(base).bytes as f64),
                us
            );
            t = Instant::now();
            last = seq;
        }
    }
    assert_eq!(h.closed, 0);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: a quick pass.
    println!(
        "listo memory figures (live heap bytes requested, counting allocator){}",
        if full() { "" } else { " — quick pass; `cargo bench --bench memory` for the full one" }
    );
    per_viewer();
    store_vs_viewers();
    store_channels();
    steady_state();
}
