//! Low-latency HLS: blocking playlist reloads held and collapsed onto one upstream request,
//! their deadline (503), and origin restarts (media sequence going backwards).

mod common;

use common::*;
use listo::{Config, Event, SECOND};

const M3U8: &str = "Content-Type: application/vnd.apple.mpegurl\r\n";

#[test]
fn blocking_reloads_for_one_part_share_one_upstream_request() {
    let mut h = Harness::default_node();
    let target = "/live/ch1/index.m3u8?_HLS_msn=5&_HLS_part=1";
    let vs: Vec<_> = (0..20).map(|_| h.get(target)).collect();
    let (u, r) = h.next_request();
    assert_eq!(r.target, target, "the blocking query goes upstream as sent");
    assert!(h.try_next_request().is_none(), "20 held viewers, one upstream blocking request");
    // The origin answers when the part exists.
    h.advance(700 * MS);
    h.cdn_send(u, &resp_200(&playlist(5), M3U8));
    for v in vs {
        let resp = h.response(v);
        assert_eq!(resp.status, 200);
        assert!(resp.body == playlist(5));
    }
    // Another part is another object (and another upstream request).
    let w = h.get("/live/ch1/index.m3u8?_HLS_msn=5&_HLS_part=2");
    h.serve_next("/live/ch1/index.m3u8?_HLS_msn=5&_HLS_part=2", &resp_200(&playlist(5), M3U8));
    assert_eq!(h.response(w).status, 200);
}

#[test]
fn five_hundred_viewers_over_two_renditions_and_three_parts_cost_one_blocking_request_each_answered_at_publication() {
    let mut h = Harness::default_node();
    let renditions = ["/live/ch1/v0/index.m3u8", "/live/ch1/v1/index.m3u8"];
    let mut held = Vec::new();
    for part in 0..3u32 {
        for (r, path) in renditions.iter().enumerate() {
            let target = format!("{path}?_HLS_msn=7&_HLS_part={part}");
            // Players order query parameters differently: still one object.
            let alt = format!("{path}?_HLS_part={part}&_HLS_msn=7");
            for i in 0..84 {
                let t = if i % 2 == 0 { &target } else { &alt };
                held.push((r, part, h.get(t)));
            }
        }
    }
    assert!(held.len() >= 500);
    let mut upstream = Vec::new();
    while let Some((u, r)) = h.try_next_request() {
        upstream.push((u, r.target.clone()));
    }
    assert_eq!(upstream.len(), 6, "one upstream blocking request per (rendition, msn, part): {upstream:?}");
    // Nothing is answered before the CDN publishes the part.
    h.advance(200 * MS);
    for (_, _, v) in &held {
        h.assert_nothing_new(*v);
    }
    // Parts publish 333 ms apart; each answer reaches its viewers at once.
    for part in 0..3u32 {
        for (u, target) in upstream.iter().filter(|(_, t)| t.contains(&format!("_HLS_part={part}"))) {
            let body = format!("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:7\n#X-PART:{part}\n# {target}\n");
            h.cdn_send(*u, &resp_200(body.as_bytes(), M3U8));
        }
        for (r, p, v) in held.iter().filter(|(_, p, _)| *p == part) {
            let resp = h.response(*v);
            assert_eq!(resp.status, 200);
            let text = resp.body_str();
            assert!(text.contains(&format!("#X-PART:{p}")) && text.contains(renditions[*r]), "viewer got its own rendition and part: {text}");
        }
        h.advance(333 * MS);
    }
    assert_eq!(h.cdn_requests(), 6);
}

#[test]
fn blocking_reload_not_answered_within_three_target_durations_gets_503() {
    let mut h = Harness::new(Config { prefetch: false, ..Config::default() });
    // Learn the target duration (2 s) from a plain playlist.
    let v = h.get("/live/ch1/index.m3u8");
    h.serve_next("/live/ch1/index.m3u8", &resp_200(&playlist(1), M3U8));
    assert_eq!(h.response(v).status, 200);
    let held = h.get("/live/ch1/index.m3u8?_HLS_msn=9");
    let _u = h.expect_request("/live/ch1/index.m3u8?_HLS_msn=9");
    h.advance(5 * SECOND);
    assert!(h.try_response(held, false).is_none(), "still held before 3 × 2 s");
    h.advance(2 * SECOND);
    let r = h.response(held);
    assert_eq!(r.status, 503, "held past three target durations");
    h.assert_still_serving();
}

#[test]
fn media_sequence_going_back_drops_the_renditions_segments() {
    let mut h = Harness::new(Config { prefetch: false, ..Config::default() });
    let v = h.get("/live/ch1/index.m3u8");
    h.serve_next("/live/ch1/index.m3u8", &resp_200(&playlist(10), M3U8));
    assert_eq!(h.response(v).status, 200);
    let first = h.fetch_through("/live/ch1/seg_10.ts", &resp_200(b"old bytes", "Cache-Control: max-age=60\r\n"));
    assert_eq!(first.body, b"old bytes");
    // The origin restarts: the playlist now starts at 1 again.
    h.advance(2 * SECOND);
    let v = h.get("/live/ch1/index.m3u8");
    h.serve_next("/live/ch1/index.m3u8", &resp_200(&playlist(1), M3U8));
    assert_eq!(h.response(v).status, 200);
    let mut reset = false;
    while let Some(e) = h.node.poll_event() {
        reset |= matches!(e, Event::RenditionReset { from: 10, to: 1, .. });
    }
    assert!(reset, "the reset is reported");
    // The reused name is fetched anew, never served from the old origin's bytes.
    let again = h.fetch_through("/live/ch1/seg_10.ts", &resp_200(b"new bytes", ""));
    assert_eq!(again.body, b"new bytes");
}
