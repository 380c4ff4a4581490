//! Nodes sharing one store (one node per worker thread, issue 7 item 4), in virtual time: an
//! object is fetched once for all of them, waiters on another node get its bytes as they arrive
//! (a node that misses it mid-fetch gets what arrived so far, then the rest), a failure reaches
//! them as 502 (or a close once bytes went out, never a clean end), and an object one node
//! completed is a hit for the others.

mod common;

use common::*;
use listo::store::shared::SharedStore;
use listo::ViewerId;

const TS: &str = "Content-Type: video/mp2t\r\n";

fn two_nodes() -> (Harness, Harness) {
    let (a, b, _) = three_nodes();
    (a, b)
}

fn three_nodes() -> (Harness, Harness, Harness) {
    let store = SharedStore::new();
    let mut a = Harness::default_node();
    let mut b = Harness::default_node();
    let mut c = Harness::default_node();
    a.node.join_shared(&store, || {});
    b.node.join_shared(&store, || {});
    c.node.join_shared(&store, || {});
    (a, b, c)
}

/// Lets `h` take what other nodes passed on.
fn wake(h: &mut Harness) {
    h.node.handle_shared(h.now);
    h.pump();
}

#[test]
fn a_segment_missed_on_two_nodes_is_fetched_once_and_both_get_the_same_bytes() {
    let (mut a, mut b) = two_nodes();
    let body = fixture("seg_1.ts");
    let va: Vec<ViewerId> = (0..10).map(|_| a.get("/live/ch1/seg_1.ts")).collect();
    let vb: Vec<ViewerId> = (0..10).map(|_| b.get("/live/ch1/seg_1.ts")).collect();
    let u = a.expect_request("/live/ch1/seg_1.ts");
    assert!(b.try_next_request().is_none(), "the second node waits for the first's fetch");
    assert!(b.pending_connects.is_empty());
    a.cdn_send_pieces(u, &resp_200(&body, TS), 10_000);
    for v in va {
        assert!(a.response(v).body == body);
    }
    // The first node published it; the second takes it when its host wakes it.
    b.node.handle_shared(b.now);
    b.pump();
    for v in vb {
        let r = b.response(v);
        assert_eq!(r.status, 200);
        assert!(r.body == body, "same bytes on the other node");
    }
    assert_eq!(a.cdn_requests() + b.cdn_requests(), 1, "one upstream request for both nodes");
    assert_eq!(b.ch("ch1").upstream_requests, 0);
    // Later viewers on either node: hits.
    assert!(b.fetch_through("/live/ch1/seg_1.ts", b"").body == body);
    assert_eq!(a.cdn_requests() + b.cdn_requests(), 1);
}

#[test]
fn an_object_one_node_completed_is_a_hit_for_the_other_without_an_upstream_request() {
    let (mut a, mut b) = two_nodes();
    let body = fixture("seg_2.ts");
    assert!(a.fetch_through("/live/ch1/seg_2.ts", &resp_200(&body, TS)).body == body);
    let r = b.fetch_through("/live/ch1/seg_2.ts", b"");
    assert_eq!(r.status, 200);
    assert!(r.body == body);
    assert_eq!(b.cdn_requests(), 0);
}

#[test]
fn a_failed_fetch_reaches_the_other_nodes_waiters_as_502_and_is_not_kept() {
    let (mut a, mut b) = two_nodes();
    let va = a.get("/live/ch1/seg_3.ts");
    let vb = b.get("/live/ch1/seg_3.ts");
    let u = a.expect_request("/live/ch1/seg_3.ts");
    a.cdn_send(u, &resp_status(503, "Service Unavailable", b"", ""));
    assert_eq!(a.response(va).status, 502);
    b.node.handle_shared(b.now);
    b.pump();
    assert_eq!(b.response(vb).status, 502);
    // Nothing kept: the next miss (on the other node) fetches again.
    let _v = b.get("/live/ch1/seg_3.ts");
    b.expect_request("/live/ch1/seg_3.ts");
    b.assert_still_serving();
}

#[test]
fn waiters_on_another_node_get_the_bytes_as_they_arrive_and_a_late_node_gets_the_backlog() {
    let (mut a, mut b, mut c) = three_nodes();
    let body = fixture("seg_1.ts");
    let full = resp_200(&body, TS);
    let head_len = find(&full, b"\r\n\r\n").unwrap() + 4;
    let half = head_len + body.len() / 2;
    let va = a.get("/live/ch1/seg_9.ts");
    let vb: Vec<ViewerId> = (0..5).map(|_| b.get("/live/ch1/seg_9.ts")).collect();
    let u = a.expect_request("/live/ch1/seg_9.ts");
    a.cdn_send(u, &full[..half]);
    wake(&mut b);
    for &v in &vb {
        match b.peek(v, false) {
            Parsed::Partial(_) => {}
            other => panic!("expected a response in progress, got {other:?}"),
        }
        let rx = b.rx(v);
        let got_head = find(rx, b"\r\n\r\n").expect("head streamed before the object completed") + 4;
        assert!(rx.starts_with(b"HTTP/1.1 200"));
        assert!(rx.len() - got_head >= body.len() / 2 - 64, "half the body streamed, got {}", rx.len() - got_head);
    }
    // A third node misses it now: what arrived so far at once, then the rest.
    let vc = c.get("/live/ch1/seg_9.ts");
    assert!(c.try_next_request().is_none(), "no second fetch");
    assert!(c.rx(vc).len() > body.len() / 2, "the backlog, without waiting for the rest");
    a.cdn_send(u, &full[half..]);
    wake(&mut b);
    wake(&mut c);
    assert!(a.response(va).body == body);
    for v in vb {
        let r = b.response(v);
        assert_eq!(r.status, 200);
        assert!(r.body == body, "same bytes, streamed");
    }
    assert!(c.response(vc).body == body);
    assert_eq!(a.cdn_requests() + b.cdn_requests() + c.cdn_requests(), 1, "one upstream request for three nodes");
    // Still a hit on the waiting nodes afterwards.
    assert!(b.fetch_through("/live/ch1/seg_9.ts", b"").body == body);
    assert_eq!(a.cdn_requests() + b.cdn_requests() + c.cdn_requests(), 1);
}

#[test]
fn a_fetch_cut_mid_body_closes_the_other_nodes_streaming_viewers_and_is_not_kept() {
    let (mut a, mut b) = two_nodes();
    let body = fixture("seg_2.ts");
    let full = resp_200(&body, TS);
    let va = a.get("/live/ch1/seg_8.ts");
    let vb = b.get("/live/ch1/seg_8.ts");
    let u = a.expect_request("/live/ch1/seg_8.ts");
    a.cdn_send(u, &full[..full.len() / 2]);
    wake(&mut b);
    assert!(b.rx(vb).starts_with(b"HTTP/1.1 200"), "streaming on the other node");
    a.cdn_close(u);
    wake(&mut b);
    for (h, v) in [(&a, va), (&b, vb)] {
        assert!(h.is_closed(v), "closed, so the player retries");
        assert!(!matches!(h.peek(v, false), Parsed::Complete(..)), "a truncated body never ends cleanly");
    }
    // Nothing kept: the next miss fetches again.
    let _v = b.get("/live/ch1/seg_8.ts");
    b.expect_request("/live/ch1/seg_8.ts");
    b.assert_still_serving();
}

#[test]
fn a_playlist_taken_from_another_node_goes_stale_when_it_does_there() {
    let store = SharedStore::new();
    let cfg = listo::Config { prefetch: false, ..listo::Config::default() };
    let (mut a, mut b) = (Harness::new(cfg.clone()), Harness::new(cfg));
    a.node.join_shared(&store, || {});
    b.node.join_shared(&store, || {});
    let path = "/live/ch1/index.m3u8";
    let pl = playlist(10);
    let m3u8 = "Content-Type: application/vnd.apple.mpegurl\r\n";
    assert!(a.fetch_through(path, &resp_200(&pl, m3u8)).body == pl);
    // Half a second later the other node serves the first node's copy.
    b.advance(500 * MS);
    assert!(b.fetch_through(path, b"").body == pl);
    assert_eq!(b.cdn_requests(), 0);
    // The first node keeps it for half a target (1 s: no max-age, no publication learned yet);
    // so does the second: at 1.1 s it asks again (it used to keep it 1 s from when it got it).
    b.advance(600 * MS);
    let _v = b.get(path);
    b.expect_request(path);
    assert_eq!(a.cdn_requests() + b.cdn_requests(), 2, "one refresh, through the shared store");
}
