//! `listo origin` on real loopback sockets: playlists, the sliding window, segment bytes and
//! sizes, counting, keep-alive, latency/rate shaping, shutdown, a player and (when installed)
//! ffmpeg against it. Every test is bounded in time.
#![cfg(feature = "driver")]

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use listo::media::{parse_playlist, PlaylistKind};
use listo::origin::{media_path, segment_path, OriginConfig, OriginServer};
use listo::player::{http_get, http_request, run_player, HttpConn, PlayerConfig};

fn start(cfg: OriginConfig) -> OriginServer {
    OriginServer::start("127.0.0.1:0".parse().expect("addr"), cfg).expect("origin starts")
}

/// One-second segments keep the tests short.
fn fast() -> OriginConfig {
    OriginConfig { channels: 2, segment_secs: 1, window: 6, ..OriginConfig::default() }
}

fn get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    http_get(addr, path, &[]).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn seq_of(uri: &str) -> u64 {
    let k = uri.rsplit("seg_").next().and_then(|s| s.strip_suffix(".ts")).expect("segment uri");
    k.parse().expect("segment number")
}

#[test]
fn master_and_media_playlists_are_valid() {
    let origin = start(fast());
    let addr = origin.local_addr();
    for c in 0..2 {
        let path = format!("/live/ch{c}/master.m3u8");
        let (status, h, body) = get(addr, &path);
        assert_eq!(status, 200);
        assert_eq!(header(&h, "content-type"), Some("application/vnd.apple.mpegurl"));
        assert_eq!(header(&h, "cache-control"), None, "no Cache-Control on playlists");
        assert_eq!(header(&h, "access-control-allow-origin"), Some("*"));
        assert!(header(&h, "date").is_some());
        let info = parse_playlist(&path, &body).expect("master parses");
        assert_eq!(info.kind, PlaylistKind::HlsMaster);
        assert_eq!(info.uris, vec!["v0/index.m3u8".to_string(), "v1/index.m3u8".to_string()]);
        let text = String::from_utf8(body).expect("utf-8");
        assert_eq!(text.matches("#EXT-X-STREAM-INF:").count(), 2);
        for attr in [":BANDWIDTH=", ",AVERAGE-BANDWIDTH=", "RESOLUTION=", "CODECS=\"avc1.42c00d,mp4a.40.2\""] {
            assert_eq!(text.matches(attr).count(), 2, "{attr} in {text}");
        }
    }
    for r in 0..2 {
        let path = media_path(1, r);
        let (status, h, body) = get(addr, &path);
        assert_eq!(status, 200);
        assert_eq!(header(&h, "content-type"), Some("application/vnd.apple.mpegurl"));
        assert_eq!(header(&h, "cache-control"), None);
        let info = parse_playlist(&path, &body).expect("media parses");
        assert_eq!(info.kind, PlaylistKind::HlsMedia);
        assert_eq!(info.target_duration_ms, Some(1000));
        assert!(!info.ended, "live: no ENDLIST");
        assert_eq!(info.uris.len(), 6, "the window is full at once");
        let first = info.media_sequence.expect("media sequence");
        let seqs: Vec<u64> = info.uris.iter().map(|u| seq_of(u)).collect();
        assert_eq!(seqs, (first..first + 6).collect::<Vec<_>>());
        let text = String::from_utf8(body).expect("utf-8");
        assert!(text.contains("#EXT-X-VERSION:3\n"));
        assert_eq!(text.matches("#EXTINF:1.000,").count(), 6);
        // Every listed segment is there.
        for u in &info.uris {
            let (s, _, _) = get(addr, &format!("/live/ch1/v{r}/{u}"));
            assert_eq!(s, 200, "{u}");
        }
    }
    // The channel-level alias of rendition 0.
    let (status, _, body) = get(addr, "/live/ch0/index.m3u8");
    assert_eq!(status, 200);
    let info = parse_playlist("/live/ch0/index.m3u8", &body).expect("alias parses");
    assert!(info.uris.iter().all(|u| u.starts_with("v0/seg_")));
    // Unknown paths.
    for p in ["/", "/live/ch2/master.m3u8", "/live/ch0/v2/index.m3u8", "/live/ch0/v0/seg_x.ts", "/nope"] {
        assert_eq!(get(addr, p).0, 404, "{p}");
    }
    origin.shutdown();
}

#[test]
fn window_slides_and_unpublished_segments_are_404() {
    let origin = start(fast());
    let addr = origin.local_addr();
    let path = media_path(0, 0);
    let info0 = parse_playlist(&path, &get(addr, &path).2).expect("parses");
    let seq0 = info0.media_sequence.expect("seq");
    assert_eq!(seq0, 0, "starts at sequence 0 with a full window");

    // The segment after the live edge is not there yet (retry if the edge moved meanwhile).
    let mut checked = false;
    for _ in 0..5 {
        let edge = origin.live_edge();
        let status = get(addr, &segment_path(0, 0, edge + 1)).0;
        if origin.live_edge() == edge {
            assert_eq!(status, 404);
            checked = true;
            break;
        }
    }
    assert!(checked);
    let far = origin.live_edge() + 3;
    assert_eq!(get(addr, &segment_path(0, 0, far)).0, 404);

    // ~2.2 s later the window moved by 2 (or 3) segments and is still 6 long.
    thread::sleep(Duration::from_millis(2200));
    let info1 = parse_playlist(&path, &get(addr, &path).2).expect("parses");
    let seq1 = info1.media_sequence.expect("seq");
    assert!((2..=3).contains(&(seq1 - seq0)), "moved {seq0} -> {seq1}");
    assert_eq!(info1.uris.len(), 6);
    assert_eq!(seq_of(info1.uris.last().expect("last")), seq1 + 5);
    let newest = seq1 + 5;
    assert_eq!(get(addr, &segment_path(0, 0, newest)).0, 200);

    // The segment that was 3 ahead is published now (within ~1 s).
    let deadline = Instant::now() + Duration::from_secs(3);
    while origin.live_edge() < far {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(addr, &segment_path(0, 0, far)).0, 200);
    // Segments just removed from the playlist stay fetchable for a while (RFC 8216 §6.2.2).
    assert_eq!(get(addr, &segment_path(0, 0, 0)).0, 200);
    origin.shutdown();
}

#[test]
fn segments_are_ts_sized_by_bitrate_and_byte_identical() {
    let cfg = OriginConfig { channels: 2, renditions_kbps: vec![1000, 4000], segment_secs: 1, ..OriginConfig::default() };
    let origin = start(cfg.clone());
    let addr = origin.local_addr();
    let mut seen = BTreeSet::new();
    for c in 0..2 {
        for (r, kbps) in [1000u64, 4000].into_iter().enumerate() {
            for k in 0..4u64 {
                let path = segment_path(c, r, k);
                let (status, h, body) = get(addr, &path);
                assert_eq!(status, 200, "{path}");
                assert_eq!(header(&h, "content-type"), Some("video/mp2t"));
                assert_eq!(header(&h, "cache-control"), Some("max-age=60"));
                assert_eq!(header(&h, "access-control-allow-origin"), Some("*"));
                assert!(header(&h, "etag").is_some());
                assert_eq!(header(&h, "content-length"), Some(body.len().to_string().as_str()));
                // kbit/s × 1 s / 8, rounded up to whole 188-byte packets.
                let target = (kbps * 1000 / 8) as usize;
                assert!(body.len() >= target && body.len() < target + 188, "{path}: {} vs {target}", body.len());
                assert_eq!(body.len() % 188, 0);
                assert!(body.chunks(188).all(|p| p[0] == 0x47), "{path}: every packet starts with 0x47");
                assert_eq!(body, cfg.segment_bytes(c, r, k).to_vec(), "{path}: deterministic bytes");
                assert_eq!(body, origin.segment_bytes(c, r, k).to_vec());
                assert!(seen.insert(body), "{path}: distinct bytes");
            }
        }
    }
    // A low bitrate never cuts the real TS fixture short.
    let low = OriginConfig { renditions_kbps: vec![50], ..cfg.clone() };
    assert!(low.segment_bytes(0, 0, 0).len() > 100_000);

    // HEAD: same head, no body. If-None-Match: 304.
    let path = segment_path(0, 1, 2);
    let head = http_request(addr, "HEAD", &path, &[]).expect("HEAD");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some(cfg.segment_len(1, 2).to_string().as_str()));
    let etag = head.header("etag").expect("etag").to_string();
    let cond = http_request(addr, "GET", &path, &[("If-None-Match", &etag)]).expect("conditional GET");
    assert_eq!(cond.status, 304);
    assert!(cond.body.is_empty());
    let post = http_request(addr, "POST", &path, &[("Content-Length", "0")]).expect("POST");
    assert_eq!(post.status, 405);
    origin.shutdown();
}

#[test]
fn counts_and_stats() {
    let origin = start(fast());
    let addr = origin.local_addr();
    let mut body_bytes = 0;
    for p in [media_path(0, 0), media_path(0, 0), "/live/ch1/master.m3u8".to_string()] {
        body_bytes += get(addr, &p).2.len();
    }
    for k in [0u64, 1, 1] {
        body_bytes += get(addr, &segment_path(0, 1, k)).2.len();
    }
    get(addr, &segment_path(0, 1, 999_999)); // 404, still counted
    get(addr, "/favicon.ico");
    let c = origin.counts();
    assert_eq!(c.playlist_requests, 3);
    assert_eq!(c.segment_requests, 4);
    assert_eq!(c.other_requests, 1);
    assert_eq!(c.requests(), 8);
    assert_eq!(c.connections, 8);
    assert_eq!(c.path(&media_path(0, 0)), 2);
    assert_eq!(c.path(&segment_path(0, 1, 1)), 2);
    assert_eq!(c.path(&segment_path(0, 1, 0)), 1);
    assert_eq!(c.path(&segment_path(0, 1, 999_999)), 1);
    assert_eq!(c.path("/favicon.ico"), 1);
    assert_eq!(c.per_path.len(), 6);
    assert!(c.bytes_sent as usize > body_bytes, "{} > {body_bytes} (heads too)", c.bytes_sent);

    let (status, h, body) = get(addr, "/origin/stats");
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&body).expect("stats JSON");
    assert_eq!(v["segment_requests"], 4);
    assert_eq!(v["playlist_requests"], 3);
    assert_eq!(v["other_requests"], 2, "the stats request counts itself");
    assert_eq!(v["per_path"][media_path(0, 0)], 2);
    assert!(v["bytes_sent"].as_u64().expect("bytes_sent") >= c.bytes_sent);
    origin.shutdown();
}

#[test]
fn keep_alive_reuses_one_connection() {
    let origin = start(fast());
    let addr = origin.local_addr();
    let mut conn = HttpConn::new(addr, Duration::from_secs(5));
    for k in 0..3u64 {
        let r = conn.request("GET", &segment_path(0, 0, k), &[]).expect("GET");
        assert_eq!(r.status, 200);
        assert!(r.keep_alive);
        assert_eq!(r.body, origin.segment_bytes(0, 0, k).to_vec());
        let p = conn.request("GET", &media_path(0, 0), &[]).expect("GET playlist");
        assert_eq!(p.status, 200);
    }
    assert_eq!(conn.connects(), 1);
    assert_eq!(origin.counts().connections, 1);
    assert_eq!(origin.counts().requests(), 6);
    // Connection: close is honoured; the client reconnects for the next request.
    let r = conn.request("GET", &media_path(0, 0), &[("Connection", "close")]).expect("GET");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(!conn.is_connected());
    assert_eq!(conn.request("GET", &media_path(0, 0), &[]).expect("GET").status, 200);
    assert_eq!(conn.connects(), 2);
    assert_eq!(origin.counts().connections, 2);
    origin.shutdown();
}

#[test]
fn latency_and_rate_shape_responses() {
    let cfg = OriginConfig {
        latency_ms: 150,
        rate_mbps: Some(8),
        renditions_kbps: vec![4000],
        segment_secs: 1,
        ..OriginConfig::default()
    };
    let origin = start(cfg);
    let addr = origin.local_addr();
    let mut conn = HttpConn::new(addr, Duration::from_secs(10));
    let p = conn.request("GET", &media_path(0, 0), &[]).expect("playlist");
    assert!(p.ttfb >= Duration::from_millis(140), "latency before the head: {:?}", p.ttfb);
    // 500 kB at 8 Mbit/s (1 MB/s) takes about half a second.
    let s = conn.request("GET", &segment_path(0, 0, 1), &[]).expect("segment");
    assert_eq!(s.status, 200);
    assert!(s.total >= Duration::from_millis(140 + 400), "paced: {:?}", s.total);
    assert!(s.total < Duration::from_secs(3), "but not absurdly slow: {:?}", s.total);
    origin.shutdown();
}

#[test]
fn ipv6_and_bounded_shutdown() {
    match OriginServer::start("[::1]:0".parse().expect("addr"), fast()) {
        Ok(o6) => {
            let (status, _, body) = get(o6.local_addr(), "/live/ch0/master.m3u8");
            assert_eq!(status, 200);
            assert!(body.starts_with(b"#EXTM3U"));
            o6.shutdown();
        }
        Err(e) => println!("note: no IPv6 loopback here ({e}); IPv6 part skipped"),
    }
    let origin = start(fast());
    let addr = origin.local_addr();
    // An idle keep-alive connection does not hold shutdown up.
    let mut conn = HttpConn::new(addr, Duration::from_secs(5));
    assert_eq!(conn.request("GET", &media_path(0, 0), &[]).expect("GET").status, 200);
    let t = Instant::now();
    origin.shutdown();
    assert!(t.elapsed() < Duration::from_secs(3), "shutdown took {:?}", t.elapsed());
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(), "no longer accepting");
    assert!(conn.request("GET", &media_path(0, 0), &[]).is_err(), "open connections were cut");
}

#[test]
fn player_gets_every_segment_without_stalls() {
    let cfg = fast();
    let origin = start(cfg.clone());
    let addr = origin.local_addr();
    let check = cfg.clone();
    let player = PlayerConfig::new(addr, media_path(1, 1), Duration::from_millis(4200))
        .with_verify(Arc::new(move |path: &str, body: &[u8]| check.expected_segment(path).is_some_and(|b| b == body)));
    let report = run_player(player);
    println!("{report:?}");
    assert_eq!(report.errors, 0);
    assert_eq!(report.stalls, 0);
    assert_eq!(report.corrupt, 0);
    assert_eq!(report.skipped, 0);
    // 3 behind the edge at start, then about one new segment per second.
    assert!((6..=9).contains(&report.segments), "{} segments", report.segments);
    assert_eq!(report.ttfb_ms.len() as u64, report.segments);
    assert_eq!(report.connects, 2, "one keep-alive connection each for playlists and segments");
    let seqs: Vec<u64> = report.segment_paths.iter().map(|p| seq_of(p)).collect();
    assert_eq!(seqs[0], 3, "starts 3 segments behind the live edge (0..=5 listed)");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "in order, none missed: {seqs:?}");
    let c = origin.counts();
    for p in &report.segment_paths {
        assert_eq!(c.path(p), 1, "{p} fetched once");
    }
    assert_eq!(c.segment_requests, report.segments);
    // Reloaded about every target duration (half of it when unchanged): bounded.
    assert!((3..=12).contains(&c.playlist_requests), "{} playlist loads", c.playlist_requests);
    let wire: u64 = report.segment_paths.iter().map(|p| cfg.expected_segment(p).map_or(0, |b| b.len() as u64)).sum();
    assert!(report.bytes > wire);
    origin.shutdown();
}

#[test]
fn ffmpeg_plays_the_origin() {
    let found = Command::new("which").arg("ffmpeg").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !found.is_ok_and(|s| s.success()) {
        println!("note: ffmpeg not installed; ffmpeg_plays_the_origin skipped");
        return;
    }
    let origin = start(fast());
    let url = format!("http://{}/live/ch0/v0/index.m3u8", origin.local_addr());
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i", &url, "-t", "3", "-c", "copy", "-f", "null", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait ffmpeg") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ffmpeg did not finish within 60 s");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "ffmpeg failed ({status}): {err}");
    let c = origin.counts();
    assert!(c.segment_requests >= 2, "ffmpeg fetched segments: {c:?}");
    origin.shutdown();
}
