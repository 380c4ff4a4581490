//! The store and the CDN side of a node (issue 2 items 2 and 4), driven by hand in virtual time:
//! single-flight fan-out, read-while-write, playlist freshness, no-store, negative caching, and
//! every upstream failure — 5xx, refused connect, timeouts, truncated and malformed bodies,
//! retry on the second endpoint, a dead pooled connection. In every failure case nothing
//! truncated is cached and the node goes on serving other viewers.

mod common;

use common::*;
use listo::{Config, Event, Instruction, ViewerId, SECOND};
use common::UpRequest;

const TS: &str = "Content-Type: video/mp2t\r\n";
const M3U8: &str = "Content-Type: application/vnd.apple.mpegurl\r\n";

/// A fresh viewer's GET of `path` must start a new upstream request (nothing usable cached).
fn assert_refetched(h: &mut Harness, path: &str, body: &[u8]) {
    let before = h.cdn_requests();
    let v = h.get(path);
    h.assert_nothing_new(v);
    h.serve_next(path, &resp_200(body, TS));
    assert_eq!(h.cdn_requests(), before + 1);
    let r = h.response(v);
    assert_eq!(r.status, 200);
    assert!(r.body == body, "refetched body differs");
}

fn events(h: &mut Harness) -> Vec<Event> {
    std::iter::from_fn(|| h.node.poll_event()).collect()
}

/// A viewer that got a 200 head and part of the body was closed without the whole body.
fn assert_cut_off(h: &Harness, v: ViewerId, full: &[u8]) {
    assert!(h.is_closed(v), "viewer {v:?} must be closed");
    match h.peek(v, false) {
        Parsed::Partial(r) => {
            assert_eq!(r.status, 200);
            assert_eq!(r.content_length(), Some(full.len() as u64));
            assert!(r.body.len() < full.len(), "never the whole body");
            assert!(r.body == full[..r.body.len()], "what was sent is a true prefix");
        }
        other => panic!("viewer {v:?}: expected a cut-off 200, got {other:?}"),
    }
}

// ------------------------------------------------------------------------------------------
// Fan-out, single flight, read-while-write
// ------------------------------------------------------------------------------------------

#[test]
fn hundred_viewers_of_one_segment_cost_one_upstream_request_and_get_identical_bytes() {
    let mut h = Harness::default_node();
    let body = fixture("seg_1.ts");
    let vs: Vec<ViewerId> = (0..100).map(|_| h.get("/live/ch1/seg_1.ts")).collect();
    assert_eq!(h.pending_connects.len(), 1, "one connection for one object");
    let u = h.expect_request("/live/ch1/seg_1.ts");
    let req = h.ups[&u].requests[0].clone();
    assert_eq!(req.header("host"), Some("cdn1.example"), "Host from the instruction");
    assert_eq!(h.ups[&u].addr, addr(EP1));
    h.cdn_send_pieces(u, &resp_200(&body, TS), 10_000);
    assert!(h.try_next_request().is_none(), "exactly one upstream request");
    assert_eq!(h.connect_log.len(), 1);
    let mut total = 0;
    for v in &vs {
        let r = h.response(*v);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("video/mp2t"));
        assert!(r.body == body, "viewer {v:?} got different bytes");
        h.assert_nothing_new(*v);
        total += h.rx(*v).len() as u64;
    }
    let c = h.ch("ch1");
    assert_eq!((c.requests, c.misses, c.coalesced, c.hits), (100, 1, 99, 0), "{c:?}");
    assert_eq!(c.upstream_requests, 1);
    assert_eq!(c.upstream_bytes, body.len() as u64);
    assert_eq!(c.downstream_bytes, total);
    assert_eq!(c.viewers, 100);
    // Later viewers are hits.
    for _ in 0..10 {
        let r = h.fetch_through("/live/ch1/seg_1.ts", b"");
        assert!(r.body == body);
    }
    assert_eq!(h.ch("ch1").hits, 10);
    assert_eq!(h.cdn_requests(), 1);
    assert_eq!(h.stats().store_bytes, body.len() as u64);
}

#[test]
fn two_channels_fetch_from_their_own_endpoints_once_each() {
    let mut h = Harness::default_node();
    let s1 = fixture("seg_1.ts");
    let s2 = fixture("seg_2.ts");
    let a: Vec<ViewerId> = (0..10).map(|_| h.get("/live/ch1/seg.ts")).collect();
    let b: Vec<ViewerId> = (0..10).map(|_| h.get("/live/ch2/seg.ts")).collect();
    h.accept_all();
    assert_eq!(h.connect_log.iter().map(|(_, a)| *a).collect::<Vec<_>>(), vec![addr(EP1), addr(EP2)]);
    let (u1, r1) = h.next_request();
    let (u2, r2) = h.next_request();
    assert_eq!((r1.target.as_str(), r2.target.as_str()), ("/live/ch1/seg.ts", "/live/ch2/seg.ts"));
    assert_eq!(r2.header("host"), Some(EP2), "Host defaults to the endpoint");
    h.cdn_send(u2, &resp_200(&s2, TS));
    h.cdn_send(u1, &resp_200(&s1, TS));
    for v in a {
        assert!(h.response(v).body == s1);
    }
    for v in b {
        assert!(h.response(v).body == s2);
    }
    assert_eq!((h.ch("ch1").upstream_requests, h.ch("ch2").upstream_requests), (1, 1));
}

#[test]
fn viewer_arriving_mid_body_gets_bytes_so_far_at_once_then_the_rest() {
    let mut h = Harness::default_node();
    let body = fixture("seg_1.ts");
    let a = h.get("/live/ch1/seg_1.ts");
    let u = h.expect_request("/live/ch1/seg_1.ts");
    let resp = resp_200(&body, TS);
    let head_len = resp.len() - body.len();
    h.cdn_send(u, &resp[..head_len + 40_000]);
    let b = h.get("/live/ch1/seg_1.ts");
    match h.peek(b, false) {
        Parsed::Partial(r) => {
            assert_eq!(r.status, 200);
            assert_eq!(r.content_length(), Some(body.len() as u64));
            assert_eq!(r.body.len(), 40_000, "everything that has arrived, at once");
            assert!(r.body == body[..40_000]);
        }
        other => panic!("{other:?}"),
    }
    h.cdn_send(u, &resp[head_len + 40_000..head_len + 41_000]);
    match h.peek(b, false) {
        Parsed::Partial(r) => assert_eq!(r.body.len(), 41_000, "woken by the bytes themselves"),
        other => panic!("{other:?}"),
    }
    h.cdn_send(u, &resp[head_len + 41_000..]);
    let ra = h.response(a);
    let rb = h.response(b);
    assert!(ra.body == body && rb.body == body);
    assert_eq!(ra.headers.iter().filter(|(n, _)| n != "Date").collect::<Vec<_>>(), rb.headers.iter().filter(|(n, _)| n != "Date").collect::<Vec<_>>());
    let c = h.ch("ch1");
    assert_eq!((c.misses, c.coalesced, c.upstream_requests), (1, 1, 1));
}

#[test]
fn viewer_arriving_before_the_head_waits_and_is_not_a_second_fetch() {
    let mut h = Harness::default_node();
    let body = fixture("seg_2.ts");
    let a = h.get("/live/ch1/seg_2.ts");
    let u = h.expect_request("/live/ch1/seg_2.ts");
    let resp = resp_200(&body, TS);
    h.cdn_send(u, &resp[..10]); // part of the head
    let b = h.get("/live/ch1/seg_2.ts");
    h.assert_nothing_new(a);
    h.assert_nothing_new(b);
    assert!(h.try_next_request().is_none());
    h.cdn_send(u, &resp[10..]);
    assert!(h.response(a).body == body);
    assert!(h.response(b).body == body);
}

#[test]
fn query_parameter_order_does_not_split_the_cache() {
    let mut h = Harness::default_node();
    let body = fixture("seg_1.ts");
    let a = h.get("/live/ch1/seg_1.ts?b=2&a=1");
    let b = h.get("/live/ch1/seg_1.ts?a=1&b=2");
    let (u, r) = h.next_request();
    // The first viewer's query goes upstream exactly as sent (signed CDN URLs depend on it).
    assert_eq!(r.target, "/live/ch1/seg_1.ts?b=2&a=1");
    h.cdn_send(u, &resp_200(&body, TS));
    assert!(h.response(a).body == body && h.response(b).body == body);
    assert!(h.try_next_request().is_none());
    // A different query is a different object.
    let c = h.get("/live/ch1/seg_1.ts?a=2");
    h.serve_next("/live/ch1/seg_1.ts?a=2", &resp_200(b"other", TS));
    assert_eq!(h.response(c).body, b"other");
}

#[test]
fn viewer_that_stops_reading_is_closed_after_idle_timeout_and_counted() {
    let mut h = Harness::default_node();
    let body = fixture("seg_1.ts");
    let stuck = h.open();
    h.set_write_limit(stuck, Some(0));
    h.send(stuck, b"GET /live/ch1/seg_1.ts HTTP/1.1\r\nHost: n\r\n\r\n");
    h.serve_next("/live/ch1/seg_1.ts", &resp_200(&body, TS));
    assert!(!h.is_closed(stuck));
    let idle = h.node.config().idle_timeout;
    h.advance(idle + SECOND);
    assert!(h.is_closed(stuck), "a viewer whose socket takes nothing is dropped");
    assert_eq!(h.stats().slow_viewers_dropped, 1);
    h.assert_still_serving();
}

#[test]
fn viewer_disconnecting_mid_body_does_not_disturb_the_fetch_or_the_others() {
    let mut h = Harness::default_node();
    let body = fixture("seg_1.ts");
    let a = h.get("/live/ch1/seg_1.ts");
    let b = h.get("/live/ch1/seg_1.ts");
    let u = h.expect_request("/live/ch1/seg_1.ts");
    let resp = resp_200(&body, TS);
    h.cdn_send(u, &resp[..50_000]);
    h.disconnect(a);
    h.cdn_send(u, &resp[50_000..]);
    assert!(h.response(b).body == body);
    // The object completed and is cached.
    let r = h.fetch_through("/live/ch1/seg_1.ts", b"");
    assert!(r.body == body);
    assert_eq!(h.cdn_requests(), 1);
}

#[test]
fn upstream_keep_alive_connection_is_reused_for_the_next_fetch() {
    let mut h = Harness::default_node();
    let s1 = fixture("seg_1.ts");
    let s2 = fixture("seg_2.ts");
    h.fetch_through("/live/ch1/seg_1.ts", &resp_200(&s1, TS));
    let r = h.fetch_through("/live/ch1/seg_2.ts", &resp_200(&s2, TS));
    assert!(r.body == s2);
    assert_eq!(h.connect_log.len(), 1, "the pooled connection served both");
    let (u, _) = h.connect_log[0];
    assert_eq!(h.ups[&u].requests.len(), 2);
    assert_eq!(h.stats().upstream_connections, 1);
}

#[test]
fn pool_size_caps_connections_per_endpoint_and_queued_fetches_proceed() {
    let mut h = Harness::new(Config { upstream_pool_size: 2, ..Config::default() });
    let vs: Vec<(ViewerId, String)> = (0..5)
        .map(|i| {
            let p = format!("/live/ch1/seg_{i}.ts");
            (h.get(&p), p)
        })
        .collect();
    assert_eq!(h.pending_connects.len(), 2, "at most the pool size");
    for _ in 0..5 {
        let (u, r) = h.next_request();
        let body = format!("body of {}", r.target).into_bytes();
        h.cdn_send(u, &resp_200(&body, TS));
    }
    assert!(h.try_next_request().is_none());
    assert_eq!(h.connect_log.len(), 2);
    for (v, p) in vs {
        assert_eq!(h.response(v).body_str(), format!("body of {p}"));
    }
    assert_eq!(h.ch("ch1").upstream_requests, 5);
}

// ------------------------------------------------------------------------------------------
// Freshness
// ------------------------------------------------------------------------------------------

/// A node whose playlists are refreshed only when viewers ask (no following, no prefetch):
/// freshness is then visible request by request.
fn viewer_driven() -> Harness {
    Harness::new(Config { prefetch: false, ..Config::default() })
}

#[test]
fn playlist_is_refreshed_at_most_once_per_half_target_duration() {
    // Target duration 2 s → fresh for 1 s. A viewer every 100 ms for 10 s.
    let mut h = viewer_driven();
    let mut seq = 0;
    let mut viewers: Vec<(ViewerId, u64)> = Vec::new();
    for step in 0..100u64 {
        h.advance_to(step * 100 * MS);
        let v = h.get("/live/ch1/index.m3u8");
        if let Some((u, r)) = h.try_next_request() {
            assert_eq!(r.target, "/live/ch1/index.m3u8");
            assert_eq!(h.now % SECOND, 0, "refresh only when the last copy reached 1 s of age");
            seq += 1;
            h.cdn_send(u, &resp_200(&playlist(seq), M3U8));
        }
        viewers.push((v, seq));
    }
    assert_eq!(h.cdn_requests(), 10, "one refresh per half target duration over 10 s");
    assert_eq!(h.ch("ch1").upstream_requests, 10);
    for (v, seq) in viewers {
        let r = h.response(v);
        assert_eq!(r.status, 200);
        assert!(r.body == playlist(seq), "viewer {v:?} got the playlist of its time");
    }
    let c = h.ch("ch1");
    assert_eq!((c.misses, c.hits), (10, 90));
}

#[test]
fn stale_playlist_is_never_served_the_next_viewer_waits_for_the_refresh() {
    let mut h = viewer_driven();
    let r = h.fetch_through("/live/ch1/index.m3u8", &resp_200(&fixture("index.m3u8"), M3U8));
    assert!(r.body == fixture("index.m3u8"));
    // Idle period: the copy is far past its freshness.
    h.advance(30 * SECOND);
    let v = h.get("/live/ch1/index.m3u8");
    h.assert_nothing_new(v);
    // Viewers arriving during the refresh collapse onto it.
    let w = h.get("/live/ch1/index.m3u8");
    h.assert_nothing_new(w);
    let (u, r) = h.next_request();
    assert_eq!(r.target, "/live/ch1/index.m3u8");
    assert!(h.try_next_request().is_none());
    h.assert_nothing_new(v);
    h.cdn_send(u, &resp_200(&playlist(16), M3U8));
    assert!(h.response(v).body == playlist(16), "the fresh playlist, never the stale one");
    assert!(h.response(w).body == playlist(16));
    assert_eq!(h.ch("ch1").upstream_requests, 2);
    assert_eq!(h.ch("ch1").coalesced, 1);
}

#[test]
fn playlist_exactly_at_half_target_age_is_stale() {
    let mut h = viewer_driven();
    h.fetch_through("/live/ch1/index.m3u8", &resp_200(&playlist(1), M3U8));
    h.advance(SECOND - 1);
    assert!(h.fetch_through("/live/ch1/index.m3u8", b"").body == playlist(1));
    assert_eq!(h.cdn_requests(), 1);
    h.advance(1);
    let v = h.get("/live/ch1/index.m3u8");
    h.assert_nothing_new(v);
    h.serve_next("/live/ch1/index.m3u8", &resp_200(&playlist(2), M3U8));
    assert!(h.response(v).body == playlist(2));
}

#[test]
fn upstream_max_age_wins_for_playlists() {
    let mut h = viewer_driven();
    h.fetch_through("/live/ch1/index.m3u8", &resp_200(&playlist(1), &format!("{M3U8}Cache-Control: max-age=3\r\n")));
    h.advance(2_900 * MS);
    assert!(h.fetch_through("/live/ch1/index.m3u8", b"").body == playlist(1));
    assert_eq!(h.cdn_requests(), 1);
    h.advance(100 * MS);
    let v = h.get("/live/ch1/index.m3u8");
    h.assert_nothing_new(v);
    h.serve_next("/live/ch1/index.m3u8", &resp_200(&playlist(2), M3U8));
    assert!(h.response(v).body == playlist(2));
}

#[test]
fn playlist_with_max_age_zero_still_collapses_concurrent_viewers_onto_one_fetch() {
    for mut h in [viewer_driven(), Harness::default_node()] {
        let vs: Vec<ViewerId> = (0..20).map(|_| h.get("/live/ch1/index.m3u8")).collect();
        let body = resp_200(&playlist(1), &format!("{M3U8}Cache-Control: max-age=0\r\n"));
        let served = h.cdn_serve_all(&mut |_, r| if r.target.ends_with(".m3u8") { body.clone() } else { resp_200(b"seg", TS) });
        assert_eq!(served.iter().filter(|t| t.ends_with(".m3u8")).count(), 1, "{served:?}");
        for v in vs {
            assert!(h.response(v).body == playlist(1));
        }
        // Not kept: the next viewer fetches again.
        let v = h.get("/live/ch1/index.m3u8");
        h.assert_nothing_new(v);
        let served = h.cdn_serve_all(&mut |_, r| if r.target.ends_with(".m3u8") { resp_200(&playlist(2), M3U8) } else { resp_200(b"seg", TS) });
        assert_eq!(served.iter().filter(|t| t.ends_with(".m3u8")).count(), 1, "{served:?}");
        assert!(h.response(v).body == playlist(2));
    }
}

#[test]
fn followed_playlist_tracks_the_cdns_publication_with_at_most_two_refreshes_per_target() {
    // Default config: the node follows the playlist and prefetches segments itself. Viewers
    // every 100 ms for 20 s against a live origin publishing every 2 s; the node learns when it
    // publishes and refreshes just after: once it has seen a few publications, no viewer gets a
    // playlist missing a segment published more than 100 ms before (at first, 1 s: half a
    // target), and the origin sees at most two playlist requests per target duration.
    let mut h = Harness::default_node();
    let mut playlist_times: Vec<u64> = Vec::new();
    let mut origin = |now: u64, r: &UpRequest| {
        if r.target.ends_with(".m3u8") {
            playlist_times.push(now);
        }
        live_origin(now, r)
    };
    let mut waiting: Vec<ViewerId> = Vec::new();
    let mut got = 0;
    let mut segment_targets = Vec::new();
    for step in 0..200u64 {
        segment_targets.extend(h.advance_serving(step * 100 * MS, &mut origin));
        waiting.push(h.get("/live/ch1/index.m3u8"));
        segment_targets.extend(h.cdn_serve_all(&mut origin));
        let now = h.now;
        let mut still = Vec::new();
        for v in waiting.drain(..) {
            match h.try_response(v, false) {
                Some(r) => {
                    assert_eq!(r.status, 200);
                    let seq: u64 = String::from_utf8_lossy(&r.body)
                        .lines()
                        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
                        .and_then(|v| v.trim().parse().ok())
                        .expect("a media sequence");
                    let allowance = if now >= 8 * SECOND { 100 * MS } else { SECOND };
                    let published = now.saturating_sub(allowance) / (2 * SECOND) + 1;
                    assert!(seq >= published, "served media sequence {seq} at {now}: {published} was published over {allowance} ns before");
                    got += 1;
                }
                None => still.push(v),
            }
        }
        waiting = still;
    }
    assert!(got >= 190, "viewers were answered: {got}");
    for w in playlist_times.windows(3) {
        assert!(w[2] - w[0] >= SECOND, "three playlist fetches within {} ns", w[2] - w[0]);
    }
    assert!(playlist_times.len() <= 21, "{} playlist fetches in 20 s", playlist_times.len());
    let mut segs: Vec<&String> = segment_targets.iter().filter(|t| t.ends_with(".ts")).collect();
    let n = segs.len();
    segs.sort();
    segs.dedup();
    assert_eq!(segs.len(), n, "no segment fetched twice");
}

#[test]
fn followed_playlist_idle_past_its_freshness_is_refetched_before_anyone_gets_it() {
    let mut h = Harness::default_node();
    let v = h.get("/live/ch1/index.m3u8");
    h.cdn_serve_all(&mut live_origin);
    assert_eq!(fetched_at(&h.response(v).body), 0);
    // Nobody asks for a while: following stops, the copy goes stale.
    h.advance_serving(40 * SECOND, &mut live_origin);
    let v = h.get("/live/ch1/index.m3u8");
    h.assert_nothing_new(v);
    assert!(h.try_next_request().is_some_and(|(u, r)| {
        let resp = live_origin(h.now, &r);
        h.cdn_send(u, &resp);
        r.target == "/live/ch1/index.m3u8"
    }));
    h.cdn_serve_all(&mut live_origin);
    let r = h.response(v);
    assert_eq!(fetched_at(&r.body), 40 * SECOND, "the refreshed copy, never the stale one");
}

#[test]
fn segments_listed_in_a_served_playlist_are_already_cached() {
    // With prefetch (default), a viewer never learns of a segment the node does not have:
    // the newest segment of every playlist it gets is a hit, answered at once.
    let mut h = Harness::default_node();
    for step in 0..10u64 {
        h.advance_serving(step * 2 * SECOND, &mut live_origin);
        let v = h.get("/live/ch1/index.m3u8");
        h.cdn_serve_all(&mut live_origin);
        let pl = h.response(v).body;
        let newest = playlist_uris(&pl).pop().unwrap();
        let before = h.cdn_requests();
        let hits = h.ch("ch1").hits;
        h.send(v, get_req(&format!("/live/ch1/{newest}")).as_bytes());
        let r = h.response(v);
        assert_eq!(r.status, 200, "{newest}");
        let n: u64 = newest.trim_start_matches("seg_").trim_end_matches(".ts").parse().unwrap();
        assert!(r.body == live_segment(n), "{newest} bytes");
        assert_eq!(h.cdn_requests(), before, "{newest} was already in the store");
        assert_eq!(h.ch("ch1").hits, hits + 1);
    }
}

#[test]
fn no_store_response_is_served_to_its_waiters_but_not_kept() {
    let mut h = Harness::default_node();
    let body = fixture("seg_1.ts");
    let a = h.get("/live/ch1/seg_1.ts");
    let b = h.get("/live/ch1/seg_1.ts");
    h.serve_next("/live/ch1/seg_1.ts", &resp_200(&body, &format!("{TS}Cache-Control: no-store\r\n")));
    for v in [a, b] {
        let r = h.response(v);
        assert!(r.body == body);
        assert_eq!(r.header("cache-control"), Some("no-store"), "passed through");
    }
    h.advance(SECOND); // memory goes at the next sweep at the latest
    assert_eq!(h.stats().store_objects, 0);
    assert_eq!(h.stats().store_bytes, 0);
    assert_refetched(&mut h, "/live/ch1/seg_1.ts", &body);
}

#[test]
fn upstream_404_is_remembered_for_at_most_one_second() {
    let mut h = Harness::default_node();
    let not_found = resp_status(404, "Not Found", b"not yet", "Cache-Control: max-age=60\r\n");
    let r = h.fetch_through("/live/ch1/seg_9.ts", &not_found);
    assert_eq!(r.status, 404);
    assert_eq!(r.body, b"not yet");
    assert!(r.header("connection").is_none_or(|c| c != "close"));
    // A herd within the second: no new upstream request.
    for t in [1, 500 * MS, SECOND - 1] {
        h.advance_to(t);
        let r = h.fetch_through("/live/ch1/seg_9.ts", b"");
        assert_eq!(r.status, 404);
    }
    assert_eq!(h.cdn_requests(), 1);
    // After 1 s (whatever max-age said): asked again, and now it exists.
    h.advance_to(SECOND);
    let body = fixture("seg_2.ts");
    assert_refetched(&mut h, "/live/ch1/seg_9.ts", &body);
    assert_eq!(h.cdn_requests(), 2);
}

#[test]
fn segment_404_without_max_age_lives_100_ms_so_a_segment_asked_early_is_served_once_it_exists() {
    let mut h = Harness::default_node();
    let r = h.fetch_through("/live/ch1/seg_9.ts", &resp_status(404, "Not Found", b"", ""));
    assert_eq!(r.status, 404);
    // A burst of viewers within 100 ms: one upstream request.
    h.advance_to(99 * MS);
    assert_eq!(h.fetch_through("/live/ch1/seg_9.ts", b"").status, 404);
    assert_eq!(h.cdn_requests(), 1);
    // 100 ms on, the segment exists: asked again.
    h.advance_to(100 * MS);
    let body = fixture("seg_2.ts");
    assert_refetched(&mut h, "/live/ch1/seg_9.ts", &body);
    // A playlist's 404 is still remembered for the second.
    let r = h.fetch_through("/live/ch1/gone.m3u8", &resp_status(404, "Not Found", b"", ""));
    assert_eq!(r.status, 404);
    h.advance_to(900 * MS);
    assert_eq!(h.fetch_through("/live/ch1/gone.m3u8", b"").status, 404);
    assert_eq!(h.cdn_requests(), 3);
}

#[test]
fn segments_stay_cached_while_fresh() {
    let mut h = Harness::default_node();
    let body = fixture("seg_1.ts");
    h.fetch_through("/live/ch1/seg_1.ts", &resp_200(&body, TS));
    h.advance(20 * SECOND);
    assert!(h.fetch_through("/live/ch1/seg_1.ts", b"").body == body);
    assert_eq!(h.cdn_requests(), 1);
}

// ------------------------------------------------------------------------------------------
// Upstream failures
// ------------------------------------------------------------------------------------------

#[test]
fn upstream_5xx_gives_502_to_waiting_viewers_and_is_not_cached() {
    let mut h = Harness::default_node();
    let vs: Vec<ViewerId> = (0..3).map(|_| h.get("/live/ch1/seg_1.ts")).collect();
    let hv = h.open();
    h.send(hv, req_with("HEAD", "/live/ch1/seg_1.ts", "").as_bytes());
    let u = h.serve_next("/live/ch1/seg_1.ts", &resp_status(503, "Service Unavailable", b"busy", ""));
    for v in &vs {
        let r = h.response(*v);
        assert_eq!(r.status, 502);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert!(!r.body_str().contains("busy"), "the upstream's error body is not passed on");
        assert!(!h.is_closed(*v), "a 502 keeps the viewer's connection");
    }
    let r = h.head_response(hv);
    assert_eq!(r.status, 502);
    h.assert_nothing_new(hv);
    assert!(h.ups[&u].closed_by_node, "the connection that answered 5xx is not reused");
    assert_eq!(h.errors(502), 4);
    assert_eq!(h.ch("ch1").upstream_failures, 1);
    assert!(events(&mut h).iter().any(|e| matches!(e, Event::UpstreamFailed { status: 502, path, .. } if path == "/live/ch1/seg_1.ts")));
    assert_eq!(h.stats().store_objects, 0);
    // Not cached: the same viewer asks again and a new fetch goes out.
    let body = fixture("seg_1.ts");
    h.send(vs[0], get_req("/live/ch1/seg_1.ts").as_bytes());
    h.serve_next("/live/ch1/seg_1.ts", &resp_200(&body, TS));
    assert!(h.response(vs[0]).body == body);
    h.assert_still_serving();
}

#[test]
fn upstream_5xx_arriving_mid_head_bytes_still_gives_502() {
    let mut h = Harness::default_node();
    let v = h.get("/live/ch1/seg_1.ts");
    let u = h.expect_request("/live/ch1/seg_1.ts");
    h.cdn_send_pieces(u, &resp_status(500, "Internal Server Error", b"", ""), 3);
    assert_eq!(h.response(v).status, 502);
    h.assert_still_serving();
}

#[test]
fn upstream_connect_failure_gives_502() {
    let mut h = Harness::default_node();
    let vs: Vec<ViewerId> = (0..3).map(|_| h.get("/live/ch1/seg_1.ts")).collect();
    let (_, a) = h.refuse_connect();
    assert_eq!(a, addr(EP1));
    assert!(h.pending_connects.is_empty(), "one endpoint: no retry");
    for v in &vs {
        assert_eq!(h.response(*v).status, 502);
    }
    assert_eq!(h.ch("ch1").upstream_failures, 1);
    assert_eq!(h.stats().store_objects, 0);
    assert_eq!(h.stats().upstream_connections, 0);
    assert_refetched(&mut h, "/live/ch1/seg_1.ts", &fixture("seg_1.ts"));
    h.assert_still_serving();
}

#[test]
fn upstream_connect_timeout_gives_504() {
    let mut h = Harness::default_node();
    let ct = h.node.config().connect_timeout;
    let v = h.get("/live/ch1/seg_1.ts");
    assert_eq!(h.pending_connects.len(), 1);
    h.advance(ct - 1);
    h.assert_nothing_new(v);
    h.advance(1);
    let r = h.response(v);
    assert_eq!(r.status, 504);
    let (u, _) = h.connect_log[0];
    assert!(h.ups[&u].closed_by_node, "the node gave up the connect");
    h.pending_connects.clear();
    h.assert_still_serving();
}

#[test]
fn no_first_byte_within_first_byte_timeout_gives_504() {
    let mut h = Harness::default_node();
    let fbt = h.node.config().first_byte_timeout;
    let vs: Vec<ViewerId> = (0..3).map(|_| h.get("/live/ch1/seg_1.ts")).collect();
    let u = h.expect_request("/live/ch1/seg_1.ts");
    let sent_at = h.now;
    h.advance(fbt - 1);
    for v in &vs {
        h.assert_nothing_new(*v);
    }
    h.advance(1);
    assert_eq!(h.now, sent_at + fbt);
    for v in &vs {
        let r = h.response(*v);
        assert_eq!(r.status, 504);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(!h.is_closed(*v));
    }
    assert!(h.ups[&u].closed_by_node);
    assert_eq!(h.errors(504), 3);
    assert_eq!(h.stats().store_objects, 0);
    assert!(events(&mut h).iter().any(|e| matches!(e, Event::UpstreamFailed { status: 504, .. })));
    assert_refetched(&mut h, "/live/ch1/seg_1.ts", &fixture("seg_1.ts"));
    h.assert_still_serving();
}

#[test]
fn truncated_body_closes_viewers_that_got_the_head_and_caches_nothing() {
    let mut h = Harness::default_node();
    let body = fixture("seg_1.ts");
    let a = h.get("/live/ch1/seg_1.ts");
    let u = h.expect_request("/live/ch1/seg_1.ts");
    let resp = resp_200(&body, TS);
    h.cdn_send(u, &resp[..resp.len() / 2]);
    let b = h.get("/live/ch1/seg_1.ts"); // read-while-write reader
    let r = h.open(); // Range: waits for the complete object, has no head yet
    h.send(r, req_with("GET", "/live/ch1/seg_1.ts", "Range: bytes=0-9\r\n").as_bytes());
    h.cdn_send(u, &resp[resp.len() / 2..resp.len() - 1]);
    h.cdn_close(u);
    assert_cut_off(&h, a, &body);
    assert_cut_off(&h, b, &body);
    let rr = h.response(r);
    assert_eq!(rr.status, 502, "a viewer still waiting for a head gets 502");
    assert!(!h.is_closed(r));
    assert_eq!(h.stats().store_objects, 0, "nothing truncated is kept");
    assert_eq!(h.stats().store_bytes, 0);
    assert_eq!(h.ch("ch1").upstream_failures, 1);
    assert_refetched(&mut h, "/live/ch1/seg_1.ts", &body);
    h.assert_still_serving();
}

#[test]
fn cdn_closing_before_the_head_gives_502() {
    let mut h = Harness::default_node();
    let v = h.get("/live/ch1/seg_1.ts");
    let u = h.expect_request("/live/ch1/seg_1.ts");
    h.cdn_send(u, b"HTTP/1.1 200 OK\r\nContent-Le");
    h.cdn_close(u);
    assert_eq!(h.response(v).status, 502);
    assert_eq!(h.stats().store_objects, 0);
    h.assert_still_serving();
}

#[test]
fn bad_chunk_size_closes_viewers_that_got_the_head_and_caches_nothing() {
    let mut h = Harness::default_node();
    let body = fixture("seg_2.ts");
    let a = h.get("/live/ch1/seg_2.ts");
    let b = h.get("/live/ch1/seg_2.ts");
    let u = h.expect_request("/live/ch1/seg_2.ts");
    h.cdn_send(u, b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\r\n");
    let wire = chunked(&body, 30_000);
    let first = "7530\r\n".len() + 30_000 + 2; // one whole chunk
    h.cdn_send(u, &wire[..first + 6 + 1_000]); // and part of the second
    h.cdn_send(u, &wire[first + 6 + 1_000..2 * first]);
    h.cdn_send(u, b"zz-not-hex\r\n");
    for v in [a, b] {
        assert!(h.is_closed(v), "closed so the player retries");
        match h.peek(v, false) {
            Parsed::Partial(r) => {
                assert!(r.chunked);
                assert!(r.body.len() < body.len() && r.body == body[..r.body.len()]);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(h.ups[&u].closed_by_node, "a broken connection is dropped");
    assert_eq!(h.stats().store_objects, 0);
    assert_refetched(&mut h, "/live/ch1/seg_2.ts", &body);
    h.assert_still_serving();
}

#[test]
fn malformed_upstream_head_gives_502() {
    let mut h = Harness::default_node();
    let v = h.get("/live/ch1/seg_1.ts");
    let u = h.serve_next("/live/ch1/seg_1.ts", b"HTTP/1.1 200 OK\r\nContent-Length: twelve\r\n\r\n");
    assert_eq!(h.response(v).status, 502);
    assert!(h.ups[&u].closed_by_node);
    h.assert_still_serving();
}

#[test]
fn body_silence_past_body_idle_timeout_closes_streaming_viewers() {
    let mut h = Harness::default_node();
    let bit = h.node.config().body_idle_timeout;
    let body = fixture("seg_1.ts");
    let a = h.get("/live/ch1/seg_1.ts");
    let u = h.expect_request("/live/ch1/seg_1.ts");
    let resp = resp_200(&body, TS);
    h.cdn_send(u, &resp[..30_000]);
    h.advance(bit - 1);
    h.cdn_send(u, &resp[30_000..60_000]); // progress moves the deadline
    h.advance(bit - 1);
    assert!(!h.is_closed(a));
    h.advance(1);
    assert_cut_off(&h, a, &body);
    assert!(h.ups[&u].closed_by_node);
    assert_eq!(h.stats().store_objects, 0);
    h.assert_still_serving();
}

#[test]
fn failure_on_the_first_endpoint_is_retried_once_on_the_second_and_viewers_get_200() {
    for failure in ["5xx", "refused", "timeout", "closed"] {
        let mut h = Harness::default_node();
        let mut ins = Instruction::new("ch1", "/live/ch1/", addr(EP1));
        ins.endpoints.push(addr(EP1B));
        ins.host = Some("cdn1.example".into());
        h.instruct(ins);
        let body = fixture("seg_1.ts");
        let vs: Vec<ViewerId> = (0..3).map(|_| h.get("/live/ch1/seg_1.ts")).collect();
        match failure {
            "5xx" => {
                h.serve_next("/live/ch1/seg_1.ts", &resp_status(502, "Bad Gateway", b"", ""));
            }
            "refused" => {
                h.refuse_connect();
            }
            "timeout" => {
                h.expect_request("/live/ch1/seg_1.ts");
                h.advance(h.node.config().first_byte_timeout);
            }
            _ => {
                let u = h.expect_request("/live/ch1/seg_1.ts");
                h.cdn_close(u);
            }
        }
        for v in &vs {
            h.assert_nothing_new(*v);
        }
        assert_eq!(h.pending_connects.len(), 1, "{failure}: retry on a new connection");
        assert_eq!(h.pending_connects[0].1, addr(EP1B), "{failure}: on the second endpoint");
        let (u, r) = h.next_request();
        assert_eq!(r.target, "/live/ch1/seg_1.ts");
        assert_eq!(r.header("host"), Some("cdn1.example"));
        assert_eq!(h.ups[&u].addr, addr(EP1B));
        h.cdn_send(u, &resp_200(&body, TS));
        for v in &vs {
            let r = h.response(*v);
            assert_eq!(r.status, 200, "{failure}");
            assert!(r.body == body);
        }
        assert_eq!(h.ch("ch1").upstream_failures, 0, "{failure}");
        assert_eq!(h.errors(502) + h.errors(504), 0, "{failure}");
        h.assert_still_serving();
    }
}

#[test]
fn failure_on_both_endpoints_gives_502_after_exactly_one_retry() {
    let mut h = Harness::default_node();
    let mut ins = Instruction::new("ch1", "/live/ch1/", addr(EP1));
    ins.endpoints.push(addr(EP1B));
    h.instruct(ins);
    let v = h.get("/live/ch1/seg_1.ts");
    h.refuse_connect();
    h.serve_next("/live/ch1/seg_1.ts", &resp_status(500, "Internal Server Error", b"", ""));
    assert_eq!(h.response(v).status, 502);
    assert_eq!(h.connect_log.iter().map(|(_, a)| *a).collect::<Vec<_>>(), vec![addr(EP1), addr(EP1B)]);
    assert!(h.pending_connects.is_empty());
    assert!(h.try_next_request().is_none(), "no third attempt");
    assert_eq!(h.ch("ch1").upstream_failures, 1);
    h.assert_still_serving();
}

#[test]
fn truncated_body_is_not_retried_once_viewers_got_the_head() {
    let mut h = Harness::default_node();
    let mut ins = Instruction::new("ch1", "/live/ch1/", addr(EP1));
    ins.endpoints.push(addr(EP1B));
    h.instruct(ins);
    let body = fixture("seg_1.ts");
    let a = h.get("/live/ch1/seg_1.ts");
    let u = h.expect_request("/live/ch1/seg_1.ts");
    h.cdn_send(u, &resp_200(&body, TS)[..1_000]);
    h.cdn_close(u);
    assert_cut_off(&h, a, &body);
    assert!(h.pending_connects.is_empty(), "a head already went out: close, don't retry");
    assert_eq!(h.stats().store_objects, 0);
    h.assert_still_serving();
}

#[test]
fn pooled_connection_closed_by_the_cdn_before_answering_is_retried_silently() {
    let mut h = Harness::default_node();
    let s1 = fixture("seg_1.ts");
    let s2 = fixture("seg_2.ts");
    h.fetch_through("/live/ch1/seg_1.ts", &resp_200(&s1, TS));
    let (u1, _) = h.connect_log[0];
    // The next fetch goes on the pooled connection, which the CDN had closed meanwhile.
    let v = h.get("/live/ch1/seg_2.ts");
    let (u, r) = h.next_request();
    assert_eq!(u, u1, "the pooled connection is reused");
    assert_eq!(r.target, "/live/ch1/seg_2.ts");
    h.cdn_close(u);
    h.assert_nothing_new(v);
    assert_eq!(h.pending_connects.len(), 1, "a fresh connection for the retry");
    let (u2, r) = h.next_request();
    assert_ne!(u2, u1);
    assert_eq!(r.target, "/live/ch1/seg_2.ts");
    h.cdn_send(u2, &resp_200(&s2, TS));
    let r = h.response(v);
    assert_eq!(r.status, 200);
    assert!(r.body == s2);
    assert_eq!(h.ch("ch1").upstream_failures, 0);
    assert_eq!(h.stats().errors, vec![]);
    h.assert_still_serving();
}

#[test]
fn pooled_connection_closed_while_idle_is_not_reused() {
    let mut h = Harness::default_node();
    let s1 = fixture("seg_1.ts");
    h.fetch_through("/live/ch1/seg_1.ts", &resp_200(&s1, TS));
    let (u1, _) = h.connect_log[0];
    h.cdn_close(u1);
    assert_eq!(h.stats().upstream_connections, 0);
    let r = h.fetch_through("/live/ch1/seg_2.ts", &resp_200(b"two", TS));
    assert_eq!(r.body, b"two");
    assert_eq!(h.connect_log.len(), 2);
}

#[test]
fn idle_pooled_connection_is_closed_after_pool_idle_timeout() {
    let mut h = Harness::default_node();
    let pit = h.node.config().pool_idle_timeout;
    h.fetch_through("/live/ch1/seg_1.ts", &resp_200(b"one", TS));
    let (u1, _) = h.connect_log[0];
    h.advance(pit - 1);
    assert!(!h.ups[&u1].closed);
    h.advance(1);
    assert!(h.ups[&u1].closed_by_node);
    assert_eq!(h.stats().upstream_connections, 0);
}

#[test]
fn upstream_bytes_after_a_complete_response_drop_the_connection_but_keep_the_object() {
    let mut h = Harness::default_node();
    let v = h.get("/live/ch1/seg_1.ts");
    let mut resp = resp_200(b"abc", TS);
    resp.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    let u = h.serve_next("/live/ch1/seg_1.ts", &resp);
    assert_eq!(h.response(v).body, b"abc");
    assert!(h.ups[&u].closed_by_node, "an out-of-step connection is not pooled");
    assert_eq!(h.fetch_through("/live/ch1/seg_1.ts", b"").body, b"abc");
    assert_eq!(h.cdn_requests(), 1);
}

#[test]
fn close_delimited_upstream_body_completes_on_close() {
    let mut h = Harness::default_node();
    let body = fixture("seg_2.ts");
    let v = h.get("/live/ch1/seg_2.ts");
    let u = h.expect_request("/live/ch1/seg_2.ts");
    h.cdn_send(u, b"HTTP/1.0 200 OK\r\nContent-Type: video/mp2t\r\n\r\n");
    h.cdn_send_pieces(u, &body, 25_000);
    h.cdn_close(u);
    let r = h.response(v);
    assert_eq!(r.status, 200);
    assert!(r.body == body);
    assert!(h.fetch_through("/live/ch1/seg_2.ts", b"").body == body, "cached");
    assert_eq!(h.cdn_requests(), 1);
}

#[test]
fn prefetch_from_the_instruction_warms_the_cache() {
    let mut h = Harness::default_node();
    let mut ins = Instruction::new("ch3", "/live/ch3/", addr("10.0.0.3:80"));
    ins.prefetch = vec!["/live/ch3/index.m3u8".into()];
    h.instruct(ins);
    let (u, r) = h.next_request();
    assert_eq!(r.target, "/live/ch3/index.m3u8");
    assert_eq!(h.ups[&u].addr, addr("10.0.0.3:80"));
    h.cdn_send(u, &resp_200(&fixture("index.m3u8"), M3U8));
    let r = h.fetch_through("/live/ch3/index.m3u8", b"");
    assert!(r.body == fixture("index.m3u8"));
    assert_eq!(h.ch("ch3").hits, 1);
    assert_eq!(h.cdn_requests(), 1);
}

#[test]
fn refused_connect_fails_only_its_fetch_and_queued_fetches_proceed() {
    let mut h = Harness::new(Config { upstream_pool_size: 1, ..Config::default() });
    let a = h.get("/live/ch1/a.ts");
    let b = h.get("/live/ch1/b.ts");
    let c = h.get("/live/ch1/c.ts");
    assert_eq!(h.pending_connects.len(), 1);
    h.refuse_connect();
    assert_eq!(h.response(a).status, 502);
    h.assert_nothing_new(b);
    for (v, p) in [(b, "/live/ch1/b.ts"), (c, "/live/ch1/c.ts")] {
        let (u, r) = h.next_request();
        assert_eq!(r.target, p);
        h.cdn_send(u, &resp_200(p.as_bytes(), TS));
        assert_eq!(h.response(v).body, p.as_bytes());
    }
    assert_eq!(h.connect_log.len(), 2);
    h.assert_still_serving();
}

#[test]
fn first_byte_timeout_fails_only_its_fetch_and_queued_fetches_proceed() {
    let mut h = Harness::new(Config { upstream_pool_size: 1, ..Config::default() });
    let fbt = h.node.config().first_byte_timeout;
    let a = h.get("/live/ch1/a.ts");
    h.expect_request("/live/ch1/a.ts");
    h.advance(SECOND);
    let b = h.get("/live/ch1/b.ts");
    h.advance(fbt - SECOND);
    assert_eq!(h.response(a).status, 504);
    h.assert_nothing_new(b);
    let (u, r) = h.next_request();
    assert_eq!(r.target, "/live/ch1/b.ts");
    h.cdn_send(u, &resp_200(b"bee", TS));
    assert_eq!(h.response(b).body, b"bee");
}

#[test]
fn withdrawn_channel_finishes_fetches_in_flight_for_their_viewers_and_keeps_nothing() {
    let mut h = Harness::default_node();
    let body = fixture("seg_1.ts");
    let a = h.get("/live/ch1/seg_1.ts");
    let u = h.expect_request("/live/ch1/seg_1.ts");
    let resp = resp_200(&body, TS);
    h.cdn_send(u, &resp[..20_000]);
    h.node.withdraw(h.now, "ch1").unwrap();
    h.pump();
    h.cdn_send(u, &resp[20_000..]);
    assert!(h.response(a).body == body, "in-flight responses finish");
    h.advance(SECOND); // memory goes at the next sweep at the latest
    assert_eq!(h.stats().store_objects, 0);
    let r = h.fetch_through("/live/ch1/seg_1.ts", b"");
    assert_eq!(r.status, 404);
    h.assert_still_serving();
}

#[test]
fn slow_viewer_reading_a_failed_fetch_is_closed_without_a_clean_end() {
    let mut h = Harness::default_node();
    let body = fixture("seg_1.ts");
    let slow = h.get("/live/ch1/seg_1.ts");
    h.set_write_limit(slow, Some(500));
    let u = h.expect_request("/live/ch1/seg_1.ts");
    let resp = resp_200(&body, TS);
    h.cdn_send(u, &resp[..60_000]);
    h.cdn_close(u);
    for _ in 0..1_000 {
        if h.viewers[&slow].closed {
            break;
        }
        h.writable(slow);
    }
    assert_cut_off(&h, slow, &body);
    assert_eq!(h.stats().store_objects, 0);
}

#[test]
fn object_dropped_at_completion_still_finishes_every_reader_and_the_connection_goes_on() {
    // no-store, max-age=0, a status that is not cached: the object is not kept, but each of its
    // readers — streaming, waiting for the whole object (Range), HEAD — gets its full answer and
    // its connection serves the next pipelined request.
    for (label, head) in [
        ("no-store", "HTTP/1.1 200 OK\r\nCache-Control: no-store\r\n".to_string()),
        ("max-age=0", "HTTP/1.1 200 OK\r\nCache-Control: max-age=0\r\n".to_string()),
        ("403", "HTTP/1.1 403 Forbidden\r\n".to_string()),
    ] {
        let mut h = viewer_driven();
        let body = fixture("seg_1.ts");
        let mut resp = format!("{head}Content-Length: {}\r\n\r\n", body.len()).into_bytes();
        resp.extend_from_slice(&body);
        let status = if label == "403" { 403 } else { 200 };
        let a = h.open();
        h.send(a, format!("{}{}", get_req("/live/ch1/seg_1.ts"), get_req("/live/ch2/x.ts")).as_bytes());
        let u = h.expect_request("/live/ch1/seg_1.ts");
        h.cdn_send(u, &resp[..resp.len() / 2]);
        let b = h.open();
        h.send(b, format!("{}{}", req_with("GET", "/live/ch1/seg_1.ts", "Range: bytes=0-9\r\n"), get_req("/live/ch2/x.ts")).as_bytes());
        h.cdn_send(u, &resp[resp.len() / 2..]);
        let r = h.response(a);
        assert_eq!(r.status, status, "{label}");
        assert!(r.body == body, "{label}");
        let r = h.response(b);
        if status == 200 {
            assert_eq!((r.status, &r.body[..]), (206, &body[..10]), "{label}: the Range reader is answered");
        } else {
            assert_eq!(r.status, status, "{label}");
        }
        // Both connections go on to their next request (ch2, fetched once).
        let (u2, r2) = h.next_request();
        assert_eq!(r2.target, "/live/ch2/x.ts", "{label}");
        h.cdn_send(u2, &resp_200(b"next", TS));
        for v in [a, b] {
            let r = h.response(v);
            assert_eq!(r.body, b"next", "{label}: the pipelined request after it was answered");
            h.assert_nothing_new(v);
        }
        h.advance(SECOND); // memory goes at the next sweep at the latest
        assert_eq!(h.stats().store_objects, 1, "{label}: only ch2's object is kept");
        assert_refetched(&mut h, "/live/ch1/seg_1.ts", &body);
    }
}

#[test]
fn absolute_form_target_naming_another_host_is_fetched_only_from_the_instructed_endpoint() {
    let mut h = Harness::default_node();
    let v = h.open();
    h.send(v, b"GET http://evil.example:8080/live/ch1/seg_1.ts HTTP/1.1\r\nHost: evil.example:8080\r\n\r\n");
    h.accept_all();
    assert_eq!(h.connect_log.iter().map(|(_, a)| *a).collect::<Vec<_>>(), vec![addr(EP1)]);
    let (u, r) = h.next_request();
    assert_eq!(r.target, "/live/ch1/seg_1.ts", "origin form upstream");
    assert_eq!(r.header("host"), Some("cdn1.example"), "the instruction's Host, never the viewer's");
    assert!(!r.raw.contains("evil"), "{}", r.raw);
    h.cdn_send(u, &resp_200(b"ok", TS));
    assert_eq!(h.response(v).body, b"ok");
}

#[test]
fn upstream_request_written_in_small_pieces_arrives_whole() {
    let mut h = Harness::default_node();
    h.up_write_limit = Some(7);
    let v = h.get("/live/ch1/seg_1.ts");
    let (u, _) = h.accept_connect();
    for _ in 0..100 {
        h.up_writable(u);
    }
    let r = h.take_request(u).expect("the whole request arrived");
    assert_eq!(r.target, "/live/ch1/seg_1.ts");
    assert!(h.ups[&u].inbox.is_empty(), "nothing but the request");
    assert_eq!(r.header("host"), Some("cdn1.example"));
    h.cdn_send(u, &resp_200(b"ok", TS));
    assert_eq!(h.response(v).body, b"ok");
}

#[test]
fn upstream_connection_close_is_not_pooled() {
    let mut h = Harness::default_node();
    let v = h.get("/live/ch1/a.ts");
    let u = h.serve_next("/live/ch1/a.ts", &resp_200(b"a", &format!("{TS}Connection: close\r\n")));
    assert_eq!(h.response(v).body, b"a");
    assert!(h.ups[&u].closed_by_node, "Connection: close is honoured upstream");
    let r = h.fetch_through("/live/ch1/b.ts", &resp_200(b"b", TS));
    assert_eq!(r.body, b"b");
    assert_eq!(h.connect_log.len(), 2);
}

#[test]
fn upstream_head_started_but_never_finished_times_out_with_504() {
    let mut h = Harness::default_node();
    let fbt = h.node.config().first_byte_timeout;
    let v = h.get("/live/ch1/seg_1.ts");
    let u = h.expect_request("/live/ch1/seg_1.ts");
    h.advance(SECOND);
    h.cdn_send(u, b"HTTP/1.1 200 OK\r\nContent-Type: vid");
    h.advance(fbt);
    let r = h.response(v);
    assert_eq!(r.status, 504);
    assert!(h.ups[&u].closed_by_node);
    h.assert_still_serving();
}

#[test]
fn interim_100_continue_from_upstream_is_skipped() {
    let mut h = Harness::default_node();
    let v = h.get("/live/ch1/seg_1.ts");
    let mut resp = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n".to_vec();
    resp.extend_from_slice(&resp_200(b"final", TS));
    h.serve_next("/live/ch1/seg_1.ts", &resp);
    let r = h.response(v);
    assert_eq!((r.status, &r.body[..]), (200, &b"final"[..]));
    h.assert_nothing_new(v);
}

#[test]
fn retry_after_a_dead_pooled_connection_goes_on_a_fresh_connection() {
    // A CDN restart closes every idle keep-alive connection at once; the host may learn of it
    // only when a request is written on one. The silent retry must not pick another pooled
    // connection that is just as dead: it opens a fresh one, and the viewer gets a 200.
    let mut h = Harness::default_node();
    let a = h.get("/live/ch1/a.ts");
    let b = h.get("/live/ch1/b.ts");
    let served = h.cdn_serve_all(&mut |_, r| resp_200(r.target.as_bytes(), TS));
    assert_eq!(served.len(), 2);
    assert_eq!(h.response(a).body, b"/live/ch1/a.ts");
    assert_eq!(h.response(b).body, b"/live/ch1/b.ts");
    let pooled: Vec<_> = h.connect_log.iter().map(|(u, _)| *u).collect();
    assert_eq!(pooled.len(), 2, "two pooled connections");
    let v = h.get("/live/ch1/c.ts");
    let (u, r) = h.next_request();
    assert!(pooled.contains(&u));
    assert_eq!(r.target, "/live/ch1/c.ts");
    h.cdn_close(u); // dead
    // Whatever connection the retry uses, the other pooled one is dead too.
    let other = *pooled.iter().find(|x| **x != u).unwrap();
    if let Some((u2, r2)) = h.try_next_request() {
        if u2 == other {
            assert_eq!(r2.target, "/live/ch1/c.ts");
            h.cdn_close(u2);
        } else {
            h.cdn_send(u2, &resp_200(b"c", TS));
        }
    }
    h.cdn_serve_all(&mut |_, _| resp_200(b"c", TS));
    let r = h.response(v);
    assert_eq!(r.status, 200, "a fresh connection would have worked");
    assert_eq!(r.body, b"c");
    assert_eq!(h.stats().errors, vec![]);
}

// ------------------------------------------------------------------------------------------
// Accounting per rendition, upstream latency, errors by kind (issue 5 item 3)
// ------------------------------------------------------------------------------------------

/// A media playlist listing `names`.
fn media_playlist(names: &[&str]) -> Vec<u8> {
    let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n");
    for n in names {
        s.push_str(&format!("#EXTINF:2.0,\n{n}\n"));
    }
    s.into_bytes()
}

#[test]
fn counters_are_kept_per_rendition_with_segments_attributed_to_the_playlist_listing_them() {
    let cfg = Config { prefetch: false, ..Config::default() };
    let mut h = Harness::new(cfg);
    let master = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nlo.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=3000000\nhi.m3u8\n";
    h.fetch_through("/live/ch1/master.m3u8", &resp_200(master, M3U8));
    // A flat layout: both renditions and their segments share one directory.
    h.fetch_through("/live/ch1/hi.m3u8", &resp_200(&media_playlist(&["hi_1.ts"]), M3U8));
    h.fetch_through("/live/ch1/lo.m3u8", &resp_200(&media_playlist(&["lo_1.ts"]), M3U8));
    let hi_seg = vec![7u8; 30_000];
    let lo_seg = vec![9u8; 10_000];
    // Three viewers of hi_1.ts (one fetch, two coalesced), one of lo_1.ts.
    let vs: Vec<ViewerId> = (0..3).map(|_| h.get("/live/ch1/hi_1.ts")).collect();
    let u = h.expect_request("/live/ch1/hi_1.ts");
    h.cdn_send(u, &resp_200(&hi_seg, TS));
    for v in vs {
        assert_eq!(h.response(v).body, hi_seg);
    }
    h.fetch_through("/live/ch1/lo_1.ts", &resp_200(&lo_seg, TS));
    let c = h.ch("ch1");
    let names: Vec<&str> = c.renditions.iter().map(|r| r.rendition.as_str()).collect();
    assert_eq!(names, ["/live/ch1/hi.m3u8", "/live/ch1/lo.m3u8"], "the master playlist is not a rendition");
    let hi = &c.renditions[0];
    let lo = &c.renditions[1];
    assert_eq!((hi.requests, hi.misses, hi.coalesced, hi.hits), (4, 2, 2, 0), "playlist + 3 segment requests: {hi:?}");
    assert_eq!((lo.requests, lo.misses), (2, 2), "{lo:?}");
    assert!(hi.upstream_bytes >= hi_seg.len() as u64 && hi.upstream_bytes < hi_seg.len() as u64 + 500, "{hi:?}");
    assert!(lo.upstream_bytes >= lo_seg.len() as u64 && lo.upstream_bytes < lo_seg.len() as u64 + 500, "{lo:?}");
    assert!(hi.downstream_bytes > 3 * hi_seg.len() as u64 && hi.downstream_bytes < 3 * hi_seg.len() as u64 + 3_000, "{hi:?}");
    assert!(lo.downstream_bytes > lo_seg.len() as u64 && lo.downstream_bytes < lo_seg.len() as u64 + 1_500, "{lo:?}");
    assert!(hi.downstream_bytes + lo.downstream_bytes <= c.downstream_bytes, "renditions are part of the channel");
    assert_eq!(hi.viewers, 4, "each harness connection is its own session: 3 segment viewers + the playlist's");
    assert_eq!(lo.viewers, 2);
}

#[test]
fn upstream_latency_is_a_histogram_of_request_to_head_time() {
    let mut h = Harness::default_node();
    let v = h.get("/live/ch1/seg_1.ts");
    let u = h.expect_request("/live/ch1/seg_1.ts");
    h.advance(30 * MS);
    h.cdn_send(u, &resp_200(b"abc", TS));
    assert_eq!(h.response(v).status, 200);
    let lat = h.ch("ch1").upstream_latency;
    assert_eq!(lat.count, 1);
    assert_eq!(lat.sum_us, 30_000);
    let bucket = listo::LATENCY_BOUNDS_MS.iter().position(|&b| b == 50).unwrap();
    assert_eq!(lat.counts[bucket], 1, "30 ms lands in the (25, 50] ms bucket: {lat:?}");
}

#[test]
fn upstream_errors_are_counted_by_kind_and_error_responses_by_channel() {
    let mut h = Harness::default_node();
    // Connect refused.
    let v = h.get("/live/ch1/a.ts");
    h.refuse_connect();
    assert_eq!(h.response(v).status, 502);
    // 5xx.
    let v = h.get("/live/ch1/b.ts");
    let u = h.expect_request("/live/ch1/b.ts");
    h.cdn_send(u, &resp_status(503, "Service Unavailable", b"", ""));
    assert_eq!(h.response(v).status, 502);
    // Malformed head.
    let v = h.get("/live/ch1/c.ts");
    let u = h.expect_request("/live/ch1/c.ts");
    h.cdn_send(u, b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n");
    assert_eq!(h.response(v).status, 502);
    // No head within the first-byte timeout.
    let v = h.get("/live/ch1/d.ts");
    h.expect_request("/live/ch1/d.ts");
    h.advance(Config::default().first_byte_timeout + SECOND);
    assert_eq!(h.response(v).status, 504);
    let c = h.ch("ch1");
    let e = &c.upstream_errors;
    assert_eq!((e.connect, e.status, e.malformed, e.timeout), (1, 1, 1, 1), "{e:?}");
    assert_eq!(c.error_responses, vec![(502, 3), (504, 1)]);
    assert_eq!(h.ch("ch2").error_responses, vec![], "other channels untouched");
    assert_eq!(h.ch("ch2").upstream_errors, listo::UpstreamErrors::default());
}
