//! HTTP/1.1 head handling per request (issue 7, item 1b).
//!
//! Measures, each on its own: `parse_request` of a typical player request head (a smart-TV
//! player's `GET` for a segment: Host, User-Agent, Accept, Accept-Encoding, Origin, Referer,
//! Connection; ~330 bytes), the same with a `Range` and an `If-None-Match`, `write_response_head`
//! of the head the node sends a viewer for a cached segment (status line, Date, Server, the
//! upstream's passed-through fields, Content-Length, Connection), and `parse_response_head` of a
//! CDN's segment response head (once per upstream fetch, not per viewer).
//!
//! Expectation: each well under 1 µs (they run once per viewer request, next to a ≥ 64 KiB
//! body that the node never copies); `Throughput::Bytes` gives the head bytes per second.

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use listo::http::{parse_request, parse_response_head, write_response_head, BodyFraming, RequestLimits};

use common::{cdn_head, player_request};

fn http(c: &mut Criterion) {
    let mut g = c.benchmark_group("http");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_millis(500));
    let limits = RequestLimits::default();

    let req = player_request("/live/ch1/1080p/seg_171234.ts");
    let (parsed, used) = parse_request(&req, &limits).expect("valid").expect("complete");
    assert_eq!(used, req.len());
    assert_eq!(parsed.path, "/live/ch1/1080p/seg_171234.ts");
    g.throughput(Throughput::Bytes(req.len() as u64));
    g.bench_function("parse_request/player_get", |b| b.iter(|| parse_request(black_box(&req), &limits)));

    let mut cond = String::from_utf8(player_request("/live/ch1/1080p/index.m3u8?token=abc123&exp=1764064800")).unwrap();
    cond.truncate(cond.len() - 2);
    cond.push_str("Range: bytes=0-1023\r\nIf-None-Match: \"5f3e-1048576\"\r\n\r\n");
    let cond = cond.into_bytes();
    let (parsed, _) = parse_request(&cond, &limits).expect("valid").expect("complete");
    assert_eq!(parsed.range.as_deref(), Some("bytes=0-1023"));
    g.throughput(Throughput::Bytes(cond.len() as u64));
    g.bench_function("parse_request/range_inm_query", |b| b.iter(|| parse_request(black_box(&cond), &limits)));

    // What the node writes for a cached segment: the upstream's end-to-end fields pass through.
    let cdn = cdn_head("video/mp2t", 1 << 20, Some(30));
    let (head, _) = parse_response_head(&cdn).expect("valid").expect("complete");
    let date = b"Tue, 25 Nov 2025 10:00:00 GMT";
    let out = write_response_head(200, date, &[&head.passthrough, b""], BodyFraming::Length(1 << 20), true);
    assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n") && out.ends_with(b"\r\n\r\n"));
    g.throughput(Throughput::Bytes(out.len() as u64));
    g.bench_function("write_response_head/segment_200", |b| {
        b.iter(|| {
            write_response_head(
                200,
                black_box(date),
                &[black_box(&head.passthrough), b""],
                BodyFraming::Length(1 << 20),
                true,
            )
        })
    });

    g.throughput(Throughput::Bytes(cdn.len() as u64));
    g.bench_function("parse_response_head/cdn_segment", |b| b.iter(|| parse_response_head(black_box(&cdn))));
    g.finish();
}

criterion_group!(benches, http);
criterion_main!(benches);
