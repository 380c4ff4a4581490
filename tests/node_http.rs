//! The viewer side of a node (issue 2 item 3), driven by hand in virtual time: every error
//! status, keep-alive and pipelining, `Connection: close`, HEAD, Range, conditional requests,
//! `Date` and framing. After each error the node must go on serving other viewers.

mod common;

use common::*;
use listo::{Config, Instruction, SECOND};

/// Puts `path` in the cache (complete) with `response` from the CDN; returns the viewer's 200.
fn warm(h: &mut Harness, path: &str, response: &[u8]) -> Resp {
    let r = h.fetch_through(path, response);
    assert_eq!(r.status, 200);
    r
}

const SEG_HEADERS: &str = "Content-Type: video/mp2t\r\nETag: \"seg1-v1\"\r\nLast-Modified: Tue, 25 Nov 2025 09:00:00 GMT\r\n";

fn warm_seg1(h: &mut Harness) -> Vec<u8> {
    let body = fixture("seg_1.ts");
    let r = warm(h, "/live/ch1/seg_1.ts", &resp_200(&body, SEG_HEADERS));
    assert!(r.body == body);
    body
}

/// The node answered `status`, said `Connection: close`, and closed the connection after it;
/// the body is the short text the node writes for errors.
fn assert_error_and_close(h: &mut Harness, v: listo::ViewerId, status: u16) -> Resp {
    let r = h.response(v);
    assert_eq!(r.status, status, "{}", r.raw_head);
    assert_eq!(r.header("connection"), Some("close"), "{}", r.raw_head);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let expect_body = format!("{} {}\n", status, listo::http::reason_phrase(status));
    assert_eq!(r.body_str(), expect_body);
    assert_eq!(r.content_length(), Some(expect_body.len() as u64));
    h.assert_nothing_new(v);
    assert!(h.is_closed(v), "the connection is closed after a {status}");
    r
}

/// Sends `raw` on a new viewer, expects `status` and a close, no upstream activity, the error
/// counted, and the node still serving others.
fn rejected_with(raw: &[u8], status: u16) -> Resp {
    let mut h = Harness::default_node();
    let v = h.open();
    h.send(v, raw);
    let r = assert_error_and_close(&mut h, v, status);
    h.assert_no_upstream_activity();
    assert!(h.connect_log.is_empty(), "a rejected request never reaches upstream");
    assert_eq!(h.errors(status), 1);
    assert_eq!(h.ch("ch1").requests, 0);
    h.assert_still_serving();
    r
}

// ------------------------------------------------------------------------------------------
// Error statuses
// ------------------------------------------------------------------------------------------

#[test]
fn malformed_request_line_gets_400_and_close() {
    rejected_with(b"GARBAGE\r\n\r\n", 400);
    rejected_with(b"GET /live/ch1/seg_1.ts FOO/1.1\r\nHost: a\r\n\r\n", 400);
    rejected_with(b"GET live/ch1/seg_1.ts HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    rejected_with(b"GET /live/ch1/\x01seg HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

#[test]
fn http11_request_without_host_gets_400() {
    rejected_with(b"GET /live/ch1/seg_1.ts HTTP/1.1\r\n\r\n", 400);
}

#[test]
fn dot_segments_that_could_escape_the_channel_prefix_get_400() {
    rejected_with(b"GET /live/ch1/../ch2/seg_1.ts HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    rejected_with(b"GET /live/ch1/%2e%2e/ch2/seg_1.ts HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

#[test]
fn path_of_no_instructed_channel_gets_404_and_no_upstream_connection() {
    let mut h = Harness::default_node();
    let v = h.open();
    // Origin form, absolute form naming another host, a prefix look-alike.
    for target in ["/vod/movie.ts", "http://evil.example/steal.ts", "/live/ch3/seg_1.ts", "/live/ch1"] {
        h.send(v, get_req(target).as_bytes());
        let r = h.response(v);
        assert_eq!(r.status, 404, "{target}");
        assert_eq!(r.body_str(), "404 Not Found\n");
        assert_eq!(r.content_length(), Some(14));
        assert_eq!(r.header("connection"), Some("keep-alive"), "a 404 keeps the connection");
        assert!(!h.is_closed(v));
    }
    assert!(h.connect_log.is_empty(), "never an open proxy: no upstream connection requested");
    h.assert_no_upstream_activity();
    assert_eq!(h.stats().upstream_connections, 0);
    assert_eq!(h.errors(404), 4);
    for c in h.stats().channels {
        assert_eq!((c.requests, c.upstream_requests), (0, 0), "{c:?}");
    }
    // The same connection then gets a real object.
    let body = fixture("seg_1.ts");
    h.send(v, get_req("/live/ch1/seg_1.ts").as_bytes());
    h.serve_next("/live/ch1/seg_1.ts", &resp_200(&body, ""));
    let r = h.response(v);
    assert_eq!(r.status, 200);
    assert!(r.body == body);
    h.assert_still_serving();
}

#[test]
fn head_of_unknown_path_gets_404_head_without_body() {
    let mut h = Harness::default_node();
    let v = h.open();
    h.send(v, req_with("HEAD", "/nowhere.m3u8", "").as_bytes());
    let r = h.head_response(v);
    assert_eq!(r.status, 404);
    assert_eq!(r.content_length(), Some(14), "HEAD carries the length the GET would have");
    h.assert_nothing_new(v);
    assert!(h.connect_log.is_empty());
}

#[test]
fn other_methods_get_405_with_allow_and_close() {
    for m in ["POST", "PUT", "DELETE", "PATCH", "CONNECT", "TRACE", "BREW"] {
        let r = rejected_with(req_with(m, "/live/ch1/seg_1.ts", "").as_bytes(), 405);
        let allow = r.header("allow").unwrap_or_else(|| panic!("{m}: 405 without Allow"));
        let methods: Vec<&str> = allow.split(',').map(str::trim).collect();
        assert!(methods.contains(&"GET") && methods.contains(&"HEAD"), "{m}: Allow: {allow}");
        assert!(!methods.contains(&m), "{m}: Allow: {allow}");
    }
}

#[test]
fn overlong_target_gets_414_even_before_the_head_ends() {
    let long = format!("/live/ch1/{}.ts", "a".repeat(5000));
    rejected_with(get_req(&long).as_bytes(), 414);
    // Only the request line, no end of head yet: already hopeless.
    rejected_with(format!("GET {long} HTTP/1.1\r\n").as_bytes(), 414);
}

#[test]
fn head_over_the_byte_limit_gets_431() {
    let big = req_with("GET", "/live/ch1/seg_1.ts", &format!("X-Big: {}\r\n", "b".repeat(9000)));
    rejected_with(big.as_bytes(), 431);
}

#[test]
fn head_over_the_byte_limit_fed_slowly_gets_431_without_waiting_for_its_end() {
    let mut h = Harness::default_node();
    let v = h.open();
    let mut sent = 0;
    let chunk = format!("X-Pad: {}\r\n", "p".repeat(90));
    h.send(v, b"GET /live/ch1/seg_1.ts HTTP/1.1\r\nHost: a\r\n");
    while !h.is_closed(v) {
        assert!(sent < 200, "never answered an ever-growing head");
        h.send(v, chunk.as_bytes());
        sent += 1;
    }
    assert!(sent * chunk.len() <= 8192 + chunk.len() * 2, "answered as soon as the limit was passed");
    assert_error_and_close(&mut h, v, 431);
    h.assert_still_serving();
}

#[test]
fn too_many_header_fields_get_431() {
    let many: String = (0..70).map(|i| format!("X-F{i}: {i}\r\n")).collect();
    rejected_with(req_with("GET", "/live/ch1/seg_1.ts", &many).as_bytes(), 431);
}

#[test]
fn header_field_limit_follows_config() {
    let mut h = Harness::new(Config { max_headers: 4, ..Config::default() });
    let v = h.open();
    h.send(v, req_with("GET", "/live/ch1/seg_1.ts", "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n").as_bytes());
    assert_error_and_close(&mut h, v, 431);
}

#[test]
fn other_http_versions_get_505() {
    rejected_with(b"GET /live/ch1/seg_1.ts HTTP/2.0\r\nHost: a\r\n\r\n", 505);
    rejected_with(b"GET /live/ch1/seg_1.ts HTTP/1.2\r\nHost: a\r\n\r\n", 505);
    rejected_with(b"GET /live/ch1/seg_1.ts HTTP/3.0\r\nHost: a\r\n\r\n", 505);
}

#[test]
fn head_not_complete_within_head_timeout_gets_408_then_close() {
    let mut h = Harness::default_node();
    let head_timeout = h.node.config().head_timeout;
    let v = h.open();
    h.send(v, b"GET /live/ch1/seg_1.ts HTTP/1.1\r\nHost: node.examp");
    h.advance(head_timeout - 1);
    h.assert_nothing_new(v);
    assert!(!h.is_closed(v));
    h.advance(1);
    let r = assert_error_and_close(&mut h, v, 408);
    assert_eq!(r.header("date"), Some(http_date_at(head_timeout).as_str()));
    assert!(h.connect_log.is_empty(), "the half request never went upstream");
    assert_eq!(h.errors(408), 1);
    h.assert_still_serving();
}

#[test]
fn trickled_head_gets_408_at_head_timeout_from_its_first_byte() {
    // A slowloris client sending one byte a second does not keep the deadline moving.
    let mut h = Harness::default_node();
    let head_timeout = h.node.config().head_timeout;
    let v = h.open();
    let req = get_req("/live/ch1/seg_1.ts");
    for (i, b) in req.as_bytes().iter().take(40).enumerate() {
        if h.is_closed(v) {
            assert_eq!(i as u64, head_timeout / SECOND, "408 exactly at the head deadline");
            break;
        }
        h.send(v, &[*b]);
        h.advance(SECOND);
    }
    assert_error_and_close(&mut h, v, 408);
}

#[test]
fn idle_connection_is_closed_quietly_after_idle_timeout() {
    let mut h = Harness::default_node();
    let idle = h.node.config().idle_timeout;
    let body = fixture("seg_1.ts");
    let v = h.get("/live/ch1/seg_1.ts");
    h.serve_next("/live/ch1/seg_1.ts", &resp_200(&body, ""));
    assert_eq!(h.response(v).status, 200);
    let done_at = h.now;
    h.advance(idle - 1);
    assert!(!h.is_closed(v));
    h.advance(1);
    assert_eq!(h.now, done_at + idle);
    assert!(h.is_closed(v), "idle keep-alive connection closed");
    h.assert_nothing_new(v);
    assert_eq!(h.errors(408), 0, "an idle connection gets no 408");
}

#[test]
fn connection_that_never_sends_a_request_is_closed_quietly_at_the_head_timeout() {
    let mut h = Harness::default_node();
    let head = h.node.config().head_timeout;
    assert!(head < h.node.config().idle_timeout);
    let silent = h.open();
    h.advance(head - 1);
    assert!(!h.is_closed(silent));
    h.advance(1);
    assert!(h.is_closed(silent), "a silent connection does not hold a descriptor for the idle timeout");
    assert!(h.rx(silent).is_empty(), "closed without a response");
    assert_eq!(h.errors(408), 0);
    h.assert_still_serving();
}

#[test]
fn content_length_with_transfer_encoding_gets_400() {
    rejected_with(
        req_with("GET", "/live/ch1/seg_1.ts", "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n").as_bytes(),
        400,
    );
    rejected_with(
        req_with("GET", "/live/ch1/seg_1.ts", "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n").as_bytes(),
        400,
    );
}

#[test]
fn body_on_get_gets_400() {
    let mut raw = req_with("GET", "/live/ch1/seg_1.ts", "Content-Length: 5\r\n").into_bytes();
    raw.extend_from_slice(b"hello");
    rejected_with(&raw, 400);
    let mut raw = req_with("GET", "/live/ch1/seg_1.ts", "Transfer-Encoding: chunked\r\n").into_bytes();
    raw.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
    rejected_with(&raw, 400);
    rejected_with(req_with("HEAD", "/live/ch1/seg_1.ts", "Content-Length: 1\r\n").as_bytes(), 400);
}

#[test]
fn get_with_content_length_zero_is_served() {
    let mut h = Harness::default_node();
    let v = h.open();
    h.send(v, req_with("GET", "/live/ch1/seg_1.ts", "Content-Length: 0\r\n").as_bytes());
    h.serve_next("/live/ch1/seg_1.ts", &resp_200(b"abc", ""));
    assert_eq!(h.response(v).body, b"abc");
}

#[test]
fn error_after_pipelined_requests_comes_after_their_responses_in_order() {
    let mut h = Harness::default_node();
    let body = warm_seg1(&mut h);
    let v = h.open();
    let mut raw = get_req("/live/ch1/seg_1.ts");
    raw.push_str(&req_with("POST", "/live/ch1/seg_1.ts", ""));
    raw.push_str(&get_req("/live/ch1/seg_1.ts"));
    h.send(v, raw.as_bytes());
    let r = h.response(v);
    assert_eq!(r.status, 200);
    assert!(r.body == body);
    assert_error_and_close(&mut h, v, 405);
    assert_eq!(h.ch("ch1").requests, 2, "nothing after the bad request is answered");
}

#[test]
fn error_statuses_do_not_disturb_a_response_streaming_to_another_viewer() {
    let mut h = Harness::default_node();
    let body = fixture("seg_1.ts");
    let a = h.get("/live/ch1/seg_1.ts");
    let u = h.expect_request("/live/ch1/seg_1.ts");
    let resp = resp_200(&body, "");
    let half = resp.len() / 2;
    h.cdn_send(u, &resp[..half]);
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"POST /live/ch1/seg_1.ts HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /live/ch1/seg_1.ts HTTP/2.0\r\nHost: a\r\n\r\n",
        b"GET /live/ch1/seg_1.ts HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab",
    ] {
        let v = h.open();
        h.send(v, raw);
        let r = h.response(v);
        assert!(r.status >= 400);
        assert!(h.is_closed(v));
    }
    h.cdn_send(u, &resp[half..]);
    let r = h.response(a);
    assert_eq!(r.status, 200);
    assert!(r.body == body);
    assert_eq!(h.ch("ch1").upstream_requests, 1);
}

// ------------------------------------------------------------------------------------------
// Keep-alive, pipelining, Connection: close
// ------------------------------------------------------------------------------------------

#[test]
fn pipelined_requests_are_answered_in_request_order() {
    let mut h = Harness::default_node();
    let pl = fixture("index.m3u8");
    let s1 = fixture("seg_1.ts");
    let s2 = fixture("seg_2.ts");
    let v = h.open();
    let mut raw = get_req("/live/ch1/index.m3u8");
    raw.push_str(&get_req("/live/ch1/seg_1.ts"));
    raw.push_str(&req_with("HEAD", "/live/ch1/seg_2.ts", ""));
    raw.push_str(&get_req("/live/ch1/seg_2.ts"));
    raw.push_str(&get_req("/nowhere/x.ts"));
    raw.push_str(&get_req("/live/ch1/seg_1.ts"));
    h.send(v, raw.as_bytes());
    // The CDN answers whatever the node asks (the node may also prefetch what the playlist
    // lists), each request as it comes.
    let served = h.cdn_serve_all(&mut fixture_cdn);
    let mut distinct = served.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), served.len(), "no object fetched twice: {served:?}");
    for p in ["/live/ch1/index.m3u8", "/live/ch1/seg_1.ts", "/live/ch1/seg_2.ts"] {
        assert!(served.iter().any(|s| s == p), "{p} fetched: {served:?}");
    }
    let r = h.response(v);
    assert_eq!(r.status, 200);
    assert!(r.body == pl);
    let r = h.response(v);
    assert!(r.status == 200 && r.body == s1);
    let r = h.head_response(v);
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), Some(s2.len() as u64));
    let r = h.response(v);
    assert!(r.status == 200 && r.body == s2);
    assert_eq!(h.response(v).status, 404);
    let r = h.response(v);
    assert!(r.status == 200 && r.body == s1);
    h.assert_nothing_new(v);
    assert!(!h.is_closed(v), "keep-alive");
    let c = h.ch("ch1");
    assert_eq!(c.requests, 5, "{c:?}");
    assert_eq!(c.upstream_requests, served.len() as u64, "{c:?}");
}

#[test]
fn pipelined_requests_split_at_every_byte_are_answered_the_same() {
    let mut h = Harness::default_node();
    let body = warm_seg1(&mut h);
    let mut raw = get_req("/live/ch1/seg_1.ts");
    raw.push_str(&req_with("GET", "/live/ch1/seg_1.ts", "Range: bytes=10-19\r\n"));
    let raw = raw.into_bytes();
    for split in (0..raw.len()).step_by(7) {
        let v = h.open();
        h.send(v, &raw[..split]);
        h.send(v, &raw[split..]);
        let r = h.response(v);
        assert!(r.status == 200 && r.body == body, "split {split}");
        let r = h.response(v);
        assert_eq!((r.status, &r.body[..]), (206, &body[10..20]), "split {split}");
    }
    assert_eq!(h.ch("ch1").upstream_requests, 1);
}

#[test]
fn keep_alive_connection_serves_many_requests_sequentially() {
    let mut h = Harness::default_node();
    let body = warm_seg1(&mut h);
    let v = h.open();
    for i in 0..20 {
        h.send(v, get_req("/live/ch1/seg_1.ts").as_bytes());
        let r = h.response(v);
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert!(r.body == body);
    }
    assert!(!h.is_closed(v));
    assert_eq!(h.ch("ch1").hits, 20);
}

#[test]
fn connection_close_is_honoured_after_the_response() {
    let mut h = Harness::default_node();
    let body = fixture("seg_1.ts");
    let v = h.open();
    let mut raw = req_with("GET", "/live/ch1/seg_1.ts", "Connection: close\r\n");
    raw.push_str(&get_req("/live/ch1/seg_2.ts")); // after close: never answered
    h.send(v, raw.as_bytes());
    h.serve_next("/live/ch1/seg_1.ts", &resp_200(&body, ""));
    let r = h.response(v);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.body == body);
    h.assert_nothing_new(v);
    assert!(h.is_closed(v));
    assert!(h.try_next_request().is_none(), "the request after Connection: close is ignored");
    assert_eq!(h.ch("ch1").requests, 1);
}

#[test]
fn http10_viewer_gets_close_unless_keep_alive() {
    let mut h = Harness::default_node();
    let body = warm_seg1(&mut h);
    let v = h.open();
    h.send(v, b"GET /live/ch1/seg_1.ts HTTP/1.0\r\n\r\n");
    let r = h.response(v);
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert_eq!(r.content_length(), Some(body.len() as u64));
    assert!(r.body == body);
    assert!(h.is_closed(v));
    let v = h.open();
    h.send(v, b"GET /live/ch1/seg_1.ts HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = h.response(v);
    assert_eq!((r.status, r.header("connection")), (200, Some("keep-alive")));
    assert!(!h.is_closed(v));
}

// ------------------------------------------------------------------------------------------
// HEAD, Range, conditional requests
// ------------------------------------------------------------------------------------------

#[test]
fn head_gets_the_head_only_with_the_full_content_length() {
    let mut h = Harness::default_node();
    // HEAD on a miss: the node fetches the object; the HEAD viewer gets the head only.
    let body = fixture("seg_1.ts");
    let v = h.open();
    h.send(v, req_with("HEAD", "/live/ch1/seg_1.ts", "").as_bytes());
    let u = h.expect_request("/live/ch1/seg_1.ts");
    let resp = resp_200(&body, SEG_HEADERS);
    h.cdn_send(u, &resp[..resp.len() - 1000]);
    let r = h.head_response(v);
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), Some(body.len() as u64));
    assert_eq!(r.header("etag"), Some("\"seg1-v1\""));
    assert_eq!(r.header("content-type"), Some("video/mp2t"));
    h.assert_nothing_new(v);
    h.cdn_send(u, &resp[resp.len() - 1000..]);
    h.assert_nothing_new(v);
    // HEAD on the complete object, then a GET on the same connection.
    h.send(v, req_with("HEAD", "/live/ch1/seg_1.ts", "").as_bytes());
    let r = h.head_response(v);
    assert_eq!(r.content_length(), Some(body.len() as u64));
    h.assert_nothing_new(v);
    h.send(v, get_req("/live/ch1/seg_1.ts").as_bytes());
    let r = h.response(v);
    assert!(r.body == body);
    assert_eq!(h.ch("ch1").upstream_requests, 1);
    h.assert_nothing_new(v);
}

#[test]
fn range_on_complete_object_gets_206_with_content_range_and_exact_bytes() {
    let mut h = Harness::default_node();
    let body = warm_seg1(&mut h);
    let len = body.len();
    let cases: Vec<(String, usize, usize)> = vec![
        ("bytes=0-99".into(), 0, 99),
        ("bytes=0-0".into(), 0, 0),
        ("bytes=1000-".into(), 1000, len - 1),
        ("bytes=-500".into(), len - 500, len - 1),
        (format!("bytes=50000-{}", len + 1000), 50000, len - 1),
        (format!("bytes={}-{}", len - 1, len - 1), len - 1, len - 1),
        (format!("bytes=-{}", len * 2), 0, len - 1),
    ];
    let v = h.open();
    for (spec, start, end) in cases {
        h.send(v, req_with("GET", "/live/ch1/seg_1.ts", &format!("Range: {spec}\r\n")).as_bytes());
        let r = h.response(v);
        assert_eq!(r.status, 206, "{spec}");
        assert_eq!(r.header("content-range"), Some(format!("bytes {start}-{end}/{len}").as_str()), "{spec}");
        assert_eq!(r.content_length(), Some((end - start + 1) as u64), "{spec}");
        assert!(r.body == body[start..=end], "{spec}: bytes differ");
        assert_eq!(r.header("etag"), Some("\"seg1-v1\""));
    }
    assert_eq!(h.ch("ch1").upstream_requests, 1, "ranges are served from the cache");
    assert!(!h.is_closed(v));
}

#[test]
fn range_on_filling_object_is_answered_206_once_complete() {
    let mut h = Harness::default_node();
    let body = fixture("seg_2.ts");
    let a = h.get("/live/ch1/seg_2.ts");
    let u = h.expect_request("/live/ch1/seg_2.ts");
    let resp = resp_200(&body, "");
    h.cdn_send(u, &resp[..resp.len() / 2]);
    let v = h.open();
    h.send(v, req_with("GET", "/live/ch1/seg_2.ts", "Range: bytes=100-199\r\n").as_bytes());
    h.assert_nothing_new(v);
    h.cdn_send(u, &resp[resp.len() / 2..]);
    let r = h.response(v);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some(format!("bytes 100-199/{}", body.len()).as_str()));
    assert!(r.body == body[100..200]);
    assert!(h.response(a).body == body);
    assert_eq!(h.ch("ch1").upstream_requests, 1);
}

#[test]
fn unsatisfiable_range_gets_416_with_the_length() {
    let mut h = Harness::default_node();
    let body = warm_seg1(&mut h);
    let len = body.len();
    let v = h.open();
    for spec in [format!("bytes={len}-"), format!("bytes={}-{}", len + 10, len + 20), "bytes=-0".to_string()] {
        h.send(v, req_with("GET", "/live/ch1/seg_1.ts", &format!("Range: {spec}\r\n")).as_bytes());
        let r = h.response(v);
        assert_eq!(r.status, 416, "{spec}");
        assert_eq!(r.header("content-range"), Some(format!("bytes */{len}").as_str()), "{spec}");
        assert_eq!(r.content_length(), Some(0));
        assert!(r.body.is_empty());
    }
    assert!(!h.is_closed(v), "416 keeps the connection");
    // Ranges the node does not handle (several ranges, other units) get the whole object.
    for spec in ["bytes=0-1,5-6", "items=0-1"] {
        h.send(v, req_with("GET", "/live/ch1/seg_1.ts", &format!("Range: {spec}\r\n")).as_bytes());
        let r = h.response(v);
        assert_eq!(r.status, 200, "{spec}");
        assert!(r.body == body);
    }
}

#[test]
fn if_none_match_gets_304_with_etag_passed_through() {
    let mut h = Harness::default_node();
    warm_seg1(&mut h);
    let v = h.open();
    for inm in ["\"seg1-v1\"", "W/\"seg1-v1\"", "\"other\", \"seg1-v1\"", "*"] {
        h.send(v, req_with("GET", "/live/ch1/seg_1.ts", &format!("If-None-Match: {inm}\r\n")).as_bytes());
        let r = h.response(v);
        assert_eq!(r.status, 304, "{inm}");
        assert_eq!(r.header("etag"), Some("\"seg1-v1\""));
        assert_eq!(r.header("last-modified"), Some("Tue, 25 Nov 2025 09:00:00 GMT"));
        assert!(r.body.is_empty());
        h.assert_nothing_new(v);
    }
    // A different tag: the whole object. If-None-Match wins over a matching If-Modified-Since.
    h.send(
        v,
        req_with("GET", "/live/ch1/seg_1.ts", "If-None-Match: \"v0\"\r\nIf-Modified-Since: Tue, 25 Nov 2025 09:30:00 GMT\r\n")
            .as_bytes(),
    );
    let r = h.response(v);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), fixture("seg_1.ts").len());
    assert!(!h.is_closed(v));
}

#[test]
fn if_modified_since_gets_304_when_not_modified() {
    let mut h = Harness::default_node();
    let body = warm_seg1(&mut h);
    let v = h.open();
    for (ims, status) in [
        ("Tue, 25 Nov 2025 09:00:00 GMT", 304),
        ("Tue, 25 Nov 2025 09:30:00 GMT", 304),
        ("Tue, 25 Nov 2025 08:59:59 GMT", 200),
        ("not a date", 200),
    ] {
        h.send(v, req_with("GET", "/live/ch1/seg_1.ts", &format!("If-Modified-Since: {ims}\r\n")).as_bytes());
        let r = h.response(v);
        assert_eq!(r.status, status, "{ims}");
        assert_eq!(r.header("last-modified"), Some("Tue, 25 Nov 2025 09:00:00 GMT"));
        assert_eq!(r.header("etag"), Some("\"seg1-v1\""));
        if status == 200 {
            assert!(r.body == body);
        }
    }
}

#[test]
fn conditional_request_waiting_on_a_fetch_gets_304_when_the_head_arrives() {
    let mut h = Harness::default_node();
    let pl = fixture("index.m3u8");
    let v = h.open();
    h.send(v, req_with("GET", "/live/ch1/index.m3u8", "If-None-Match: \"pl-7\"\r\n").as_bytes());
    h.serve_next("/live/ch1/index.m3u8", &resp_200(&pl, "ETag: \"pl-7\"\r\n"));
    let r = h.response(v);
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some("\"pl-7\""));
    h.assert_nothing_new(v);
}

// ------------------------------------------------------------------------------------------
// Date, framing
// ------------------------------------------------------------------------------------------

#[test]
fn date_header_follows_the_virtual_wall_clock() {
    let mut h = Harness::default_node();
    let v = h.get("/nowhere");
    let r = h.response(v);
    assert_eq!(r.header("date"), Some("Tue, 25 Nov 2025 10:00:00 GMT"));
    h.advance(3_600 * SECOND + 1_500 * MS);
    let v = h.get("/nowhere");
    let r = h.response(v);
    assert_eq!(r.header("date"), Some("Tue, 25 Nov 2025 11:00:01 GMT"));
    assert_eq!(r.header("date"), Some(http_date_at(h.now).as_str()));
}

#[test]
fn every_response_carries_content_length_matching_its_body() {
    let mut h = Harness::default_node();
    let body = fixture("seg_1.ts");
    let mut statuses = Vec::new();
    // 200 (miss, streamed), 200 (hit), 206, 416, 404, 404 from upstream, 502, 400.
    let r = h.fetch_through("/live/ch1/seg_1.ts", &resp_200(&body, ""));
    statuses.push((r.status, r.content_length(), r.body.len()));
    let r = h.fetch_through("/live/ch1/seg_1.ts", b"");
    statuses.push((r.status, r.content_length(), r.body.len()));
    let v = h.open();
    h.send(v, req_with("GET", "/live/ch1/seg_1.ts", "Range: bytes=5-9\r\n").as_bytes());
    let r = h.response(v);
    statuses.push((r.status, r.content_length(), r.body.len()));
    h.send(v, req_with("GET", "/live/ch1/seg_1.ts", "Range: bytes=999999-\r\n").as_bytes());
    let r = h.response(v);
    statuses.push((r.status, r.content_length(), r.body.len()));
    let r = h.fetch_through("/x", b"");
    statuses.push((r.status, r.content_length(), r.body.len()));
    let r = h.fetch_through("/live/ch1/missing.ts", &resp_status(404, "Not Found", b"no such segment", ""));
    statuses.push((r.status, r.content_length(), r.body.len()));
    let r = h.fetch_through("/live/ch1/broken.ts", &resp_status(500, "Internal Server Error", b"oops", ""));
    statuses.push((r.status, r.content_length(), r.body.len()));
    let v = h.open();
    h.send(v, b"BAD\r\n\r\n");
    let r = h.response(v);
    statuses.push((r.status, r.content_length(), r.body.len()));
    let got: Vec<u16> = statuses.iter().map(|s| s.0).collect();
    assert_eq!(got, vec![200, 200, 206, 416, 404, 404, 502, 400]);
    for (status, cl, len) in statuses {
        assert_eq!(cl, Some(len as u64), "status {status}");
    }
}

#[test]
fn chunked_upstream_body_still_arriving_is_sent_chunked_to_http11_viewers() {
    let mut h = Harness::default_node();
    let body = fixture("seg_1.ts");
    let a = h.get("/live/ch1/seg_1.ts");
    let old = h.open();
    h.send(old, b"GET /live/ch1/seg_1.ts HTTP/1.0\r\n\r\n");
    let u = h.expect_request("/live/ch1/seg_1.ts");
    let wire = chunked(&body, 16_000);
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\r\n";
    h.cdn_send(u, head);
    h.cdn_send(u, &wire[..20_000]);
    // The head and what arrived are out already, chunked, without a Content-Length.
    match h.peek(a, false) {
        Parsed::Partial(r) => {
            assert_eq!(r.status, 200);
            assert!(r.chunked);
            assert_eq!(r.header("content-length"), None);
            assert_eq!(r.header("connection"), Some("keep-alive"));
            assert_eq!(r.header("content-type"), Some("video/mp2t"));
            assert!(r.body == body[..r.body.len()] && r.body.len() >= 16_000, "got {}", r.body.len());
        }
        other => panic!("expected a partial chunked response, got {other:?}"),
    }
    // An HTTP/1.0 viewer can't take chunks, and a close-delimited body would hide a truncation:
    // it waits for the whole object and gets it with its length.
    h.assert_nothing_new(old);
    h.cdn_send_pieces(u, &wire[20_000..], 7_000);
    let r = h.response(a);
    assert!(r.chunked);
    assert!(r.body == body, "chunked body decodes to the upstream bytes");
    assert!(!h.is_closed(a));
    let r = h.response(old);
    assert!(!r.chunked);
    assert_eq!(r.content_length(), Some(body.len() as u64), "HTTP/1.0 gets a Content-Length");
    assert!(r.body == body);
    // Once complete the length is known: a later viewer gets Content-Length.
    let r = h.fetch_through("/live/ch1/seg_1.ts", b"");
    assert!(!r.chunked);
    assert_eq!(r.content_length(), Some(body.len() as u64));
    assert!(r.body == body);
    assert_eq!(h.ch("ch1").upstream_requests, 1);
    assert_eq!(h.ch("ch1").upstream_bytes, body.len() as u64);
}

#[test]
fn content_length_upstream_body_still_arriving_is_sent_with_content_length() {
    let mut h = Harness::default_node();
    let body = fixture("seg_2.ts");
    let a = h.get("/live/ch1/seg_2.ts");
    let u = h.expect_request("/live/ch1/seg_2.ts");
    let resp = resp_200(&body, "");
    h.cdn_send(u, &resp[..5_000]);
    match h.peek(a, false) {
        Parsed::Partial(r) => {
            assert!(!r.chunked);
            assert_eq!(r.content_length(), Some(body.len() as u64));
        }
        other => panic!("{other:?}"),
    }
    h.cdn_send(u, &resp[5_000..]);
    assert!(h.response(a).body == body);
}

#[test]
fn downstream_bytes_count_exactly_what_viewers_were_sent() {
    let mut h = Harness::default_node();
    let body = fixture("seg_1.ts");
    let mut vs = Vec::new();
    for _ in 0..5 {
        vs.push(h.get("/live/ch1/seg_1.ts"));
    }
    h.serve_next("/live/ch1/seg_1.ts", &resp_200(&body, ""));
    let v404 = h.get("/nowhere");
    let ch1: u64 = vs.iter().map(|v| h.rx(*v).len() as u64).sum();
    assert_eq!(h.ch("ch1").downstream_bytes, ch1);
    assert_eq!(h.stats().downstream_bytes, ch1 + h.rx(v404).len() as u64);
    let written: u64 = h.viewers.values().map(|s| s.written).sum();
    assert_eq!(h.stats().downstream_bytes, written);
}

#[test]
fn withdrawn_channel_gets_404_and_no_fetch() {
    let mut h = Harness::default_node();
    warm_seg1(&mut h);
    h.node.withdraw(h.now, "ch1").unwrap();
    let n = h.connect_log.len();
    let r = h.fetch_through("/live/ch1/seg_1.ts", b"");
    assert_eq!(r.status, 404);
    assert_eq!(h.connect_log.len(), n);
    h.assert_no_upstream_activity();
    h.instruct(Instruction::new("ch1", "/live/ch1/", addr(EP1)));
    h.assert_still_serving();
}

#[test]
fn more_pipelined_requests_than_the_pipeline_depth_are_all_answered_in_order() {
    let mut h = Harness::default_node();
    let body = warm_seg1(&mut h);
    let depth = h.node.config().max_pipeline;
    let n = depth * 4 + 3;
    let v = h.open();
    let mut raw = String::new();
    for i in 0..n {
        raw.push_str(&req_with("GET", "/live/ch1/seg_1.ts", &format!("Range: bytes={i}-{}\r\n", i + 10)));
    }
    h.send(v, raw.as_bytes());
    for i in 0..n {
        let r = h.response(v);
        assert_eq!(r.status, 206, "request {i} of {n}");
        assert!(r.body == body[i..=i + 10], "request {i}");
    }
    h.assert_nothing_new(v);
    // Nothing half-parsed is left behind to earn a 408 later.
    h.advance(h.node.config().head_timeout + SECOND);
    h.assert_nothing_new(v);
    assert!(!h.is_closed(v));
    assert_eq!(h.errors(408), 0);
}

#[test]
fn pipelined_requests_behind_a_miss_are_all_answered_once_it_completes() {
    let mut h = Harness::default_node();
    let body = fixture("seg_2.ts");
    let n = h.node.config().max_pipeline * 3;
    let v = h.open();
    let raw: String = (0..n).map(|_| get_req("/live/ch1/seg_2.ts")).collect();
    h.send(v, raw.as_bytes());
    h.serve_next("/live/ch1/seg_2.ts", &resp_200(&body, ""));
    for i in 0..n {
        let r = h.response(v);
        assert!(r.status == 200 && r.body == body, "request {i}");
    }
    h.assert_nothing_new(v);
    assert_eq!(h.ch("ch1").requests, n as u64);
    assert_eq!(h.cdn_requests(), 1);
}

#[test]
fn slow_viewer_socket_gets_exact_bytes_through_partial_writes() {
    let mut h = Harness::default_node();
    let body = fixture("seg_1.ts");
    let slow = h.open();
    h.set_write_limit(slow, Some(1_000));
    h.send(slow, format!("{}{}", get_req("/live/ch1/seg_1.ts"), get_req("/live/ch1/seg_1.ts")).as_bytes());
    let fast = h.get("/live/ch1/seg_1.ts");
    let u = h.expect_request("/live/ch1/seg_1.ts");
    h.cdn_send_pieces(u, &resp_200(&body, ""), 30_000);
    let r = h.response(fast);
    assert!(r.body == body, "a slow viewer does not hold back a fast one");
    assert!(h.rx(slow).len() < body.len());
    for _ in 0..1_000 {
        if !h.viewers[&slow].blocked {
            break;
        }
        h.writable(slow);
    }
    assert!(!h.viewers[&slow].blocked);
    for _ in 0..2 {
        let r = h.response(slow);
        assert!(r.status == 200 && r.body == body);
    }
    h.assert_nothing_new(slow);
    let sum = (h.rx(slow).len() + h.rx(fast).len()) as u64;
    assert_eq!(h.ch("ch1").downstream_bytes, sum, "partial writes are counted exactly");
}

#[test]
fn head_of_an_object_still_arriving_chunked_has_no_length_and_no_body() {
    let mut h = Harness::default_node();
    let body = fixture("seg_1.ts");
    let g = h.get("/live/ch1/seg_1.ts");
    let u = h.expect_request("/live/ch1/seg_1.ts");
    h.cdn_send(u, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    let wire = chunked(&body, 20_000);
    h.cdn_send(u, &wire[..30_000]);
    let v = h.open();
    h.send(v, req_with("HEAD", "/live/ch1/seg_1.ts", "").as_bytes());
    let raw = String::from_utf8_lossy(h.unread(v)).into_owned();
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n") && raw.ends_with("\r\n\r\n"), "{raw}");
    assert_eq!(raw.matches("\r\n\r\n").count(), 1, "a head and nothing else: {raw}");
    assert!(!raw.to_ascii_lowercase().contains("content-length"), "length not known yet: {raw}");
    h.cdn_send(u, &wire[30_000..]);
    assert!(h.response(g).body == body);
    // The same connection goes on.
    h.viewers.get_mut(&v).unwrap().consumed = h.rx(v).len();
    h.send(v, req_with("HEAD", "/live/ch1/seg_1.ts", "").as_bytes());
    assert_eq!(h.head_response(v).content_length(), Some(body.len() as u64));
}

#[test]
fn options_preflight_for_a_channel_path_is_answered_without_upstream() {
    let mut h = Harness::default_node();
    let v = h.open();
    h.send(v, req_with("OPTIONS", "/live/ch1/index.m3u8", "Origin: https://player.example\r\nAccess-Control-Request-Method: GET\r\n").as_bytes());
    let r = h.head_response(v);
    assert_eq!(r.status, 204);
    assert!(r.header("access-control-allow-methods").is_some_and(|m| m.contains("GET")));
    assert!(!h.is_closed(v));
    h.send(v, req_with("OPTIONS", "/elsewhere", "").as_bytes());
    assert_eq!(h.response(v).status, 404);
    assert!(h.connect_log.is_empty());
}

#[test]
fn connection_close_on_a_request_that_errors_closes_after_the_error() {
    let mut h = Harness::default_node();
    let v = h.open();
    h.send(v, req_with("GET", "/nowhere", "Connection: close\r\n").as_bytes());
    let r = h.response(v);
    assert_eq!((r.status, r.header("connection")), (404, Some("close")));
    assert!(h.is_closed(v));
}

#[test]
fn blank_lines_between_pipelined_requests_are_tolerated() {
    let mut h = Harness::default_node();
    let body = warm_seg1(&mut h);
    let v = h.open();
    let raw = format!("\r\n{}\r\n{}", get_req("/live/ch1/seg_1.ts"), get_req("/live/ch1/seg_1.ts"));
    h.send(v, raw.as_bytes());
    for _ in 0..2 {
        let r = h.response(v);
        assert!(r.status == 200 && r.body == body);
    }
    assert!(!h.is_closed(v));
}

#[test]
fn http10_viewer_of_a_fetch_that_breaks_mid_body_gets_502_not_a_clean_looking_close() {
    let mut h = Harness::default_node();
    let old = h.open();
    h.send(old, b"GET /live/ch1/seg_1.ts HTTP/1.0\r\n\r\n");
    let u = h.expect_request("/live/ch1/seg_1.ts");
    h.cdn_send(u, b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\r\n");
    h.cdn_send(u, &chunked(&[7u8; 30_000], 10_000)[..25_000]);
    h.cdn_close(u);
    let r = h.response(old);
    assert_eq!(r.status, 502, "the failure is visible to an HTTP/1.0 viewer");
    assert!(h.is_closed(old));
    h.assert_still_serving();
}
