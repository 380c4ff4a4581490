//! `listo node --workers N` on real sockets (issue 7 item 4): two workers share the viewer port
//! (`SO_REUSEPORT`) and one store. Viewers land on both workers, yet the origin serves exactly
//! one request per distinct segment; instructions given to worker 0's control port apply on
//! every worker; the admin port adds up both workers' counters, fresh at the moment it answers,
//! and lists each channel event once. An object still arriving from the origin streams to the
//! viewers of every worker as it arrives, not only once complete.
#![cfg(feature = "driver")]

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use listo::driver::{bind_workers, run_all, DriverConfig, Listener};
use listo::origin::{media_path, OriginConfig, OriginServer};
use listo::player::{http_request, run_player, PlayerConfig};
use listo::Instruction;

fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// A POST with a JSON body; returns the status.
fn post(addr: SocketAddr, path: &str, body: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let head = format!("POST {path} HTTP/1.1\r\nHost: n\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(body).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn two_workers_share_one_store_one_origin_request_per_segment() {
    let ocfg = OriginConfig { channels: 2, segment_secs: 1, ..OriginConfig::default() };
    let origin = OriginServer::start(lo(), ocfg.clone()).expect("origin");
    let cfg = DriverConfig {
        listen: vec![lo()],
        control: Some(lo()),
        admin: Some(lo()),
        instructions: vec![Instruction::new("ch0", "/live/ch0/", origin.local_addr())],
        drain: Duration::from_secs(1),
        ..DriverConfig::default()
    };
    let drivers = bind_workers(cfg, 2).expect("workers bind");
    assert_eq!(drivers.len(), 2);
    let node = drivers[0].local_addr(Listener::Viewers).expect("viewers");
    let control = drivers[0].local_addr(Listener::Control).expect("control");
    let admin = drivers[0].local_addr(Listener::Admin).expect("admin");
    assert_eq!(drivers[1].local_addr(Listener::Viewers), Some(node), "both workers on one port");
    let per_worker: Vec<_> = drivers.iter().map(|d| d.stats_handle()).collect();
    let stop = drivers[0].stop_handle();
    let runner = thread::spawn(move || run_all(drivers));

    // ch1 arrives through worker 0's control port: every worker must know it.
    let body = format!(r#"{{"channel":"ch1","path_prefix":"/live/ch1/","endpoints":["{}"]}}"#, origin.local_addr());
    assert_eq!(post(control, "/v1/channels", body.as_bytes()), 201);

    // 40 players on their own connections over both channels for 6 s.
    let players: Vec<_> = (0..40)
        .map(|i| {
            let cfg = PlayerConfig::new(node, media_path(i % 2, (i / 2) % 2), Duration::from_secs(6));
            thread::spawn(move || run_player(cfg))
        })
        .collect();
    let reports: Vec<_> = players.into_iter().map(|p| p.join().expect("player")).collect();
    let segments: u64 = reports.iter().map(|r| r.segments).sum();
    let errors: u64 = reports.iter().map(|r| r.errors).sum();
    assert!(segments >= 40 * 3, "players played: {segments}");
    assert_eq!(errors, 0, "no player error");

    // One request per distinct segment at the origin, whichever worker served the viewers.
    let counts = origin.counts();
    let seg_paths: Vec<(&String, &u64)> = counts.per_path.iter().filter(|(p, _)| p.ends_with(".ts")).collect();
    assert!(!seg_paths.is_empty());
    for (p, n) in &seg_paths {
        assert_eq!(**n, 1, "{p} fetched {n} times from the origin by two workers");
    }
    // Both workers served viewers (the kernel spread the connections).
    thread::sleep(Duration::from_millis(400));
    let requests: Vec<u64> = per_worker.iter().map(|s| s.lock().channels.iter().map(|c| c.requests).sum()).collect();
    assert!(requests.iter().all(|&r| r > 0), "connections reached both workers: {requests:?}");
    // The admin port adds them up.
    let deadline = Instant::now() + Duration::from_secs(5);
    let total: u64 = requests.iter().sum();
    loop {
        let r = http_request(admin, "GET", "/v1/stats", &[]).expect("stats");
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        let sum: u64 = v["channels"].as_array().map_or(0, |a| a.iter().map(|c| c["requests"].as_u64().unwrap_or(0)).sum());
        if sum >= total {
            assert_eq!(v["channels"].as_array().map(|a| a.len()), Some(2), "ch0 and ch1 on every worker: {v}");
            break;
        }
        assert!(Instant::now() < deadline, "admin sums both workers: {sum} < {total}");
        thread::sleep(Duration::from_millis(100));
    }
    stop.stop();
    runner.join().expect("runner").expect("workers ran");
}

/// A scripted origin for one object: a head with Content-Length, then `pieces` pieces of
/// `piece` bytes, `gap` apart. Counts requests.
fn trickling_origin(pieces: usize, piece: usize, gap: Duration) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>, Vec<u8>) {
    use std::io::{Read, Write};
    let body: Vec<u8> = (0..pieces * piece).map(|i| (i * 7 % 251) as u8).collect();
    let l = std::net::TcpListener::bind(lo()).expect("bind");
    let addr = l.local_addr().expect("addr");
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (b, c) = (body.clone(), count.clone());
    thread::spawn(move || {
        for s in l.incoming().take(8) {
            let Ok(mut s) = s else { continue };
            let (b, c) = (b.clone(), c.clone());
            thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let head = format!("HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nContent-Length: {}\r\n\r\n", b.len());
                let _ = s.write_all(head.as_bytes());
                for p in b.chunks(piece) {
                    let _ = s.write_all(p);
                    thread::sleep(gap);
                }
                thread::sleep(Duration::from_secs(1));
            });
        }
    });
    (addr, count, body)
}

/// GETs `path` on its own connection; returns (first body byte at, body).
fn timed_get(node: SocketAddr, path: &str) -> (Option<Instant>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&node, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: n\r\n\r\n").as_bytes()).expect("write");
    let mut got = Vec::new();
    let mut first_body = None;
    let mut buf = [0u8; 65536];
    let mut head_len = None;
    let mut want = usize::MAX;
    for _ in 0..10_000 {
        if head_len.is_some_and(|h| got.len() >= h + want) {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if head_len.is_none() {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                head_len = Some(end + 4);
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                want = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            }
        }
        if first_body.is_none() && head_len.is_some_and(|h| got.len() > h) {
            first_body = Some(Instant::now());
        }
    }
    let body = head_len.map(|h| got[h..].to_vec()).unwrap_or_default();
    (first_body, body)
}

#[test]
fn a_trickled_object_streams_to_the_viewers_of_every_worker_and_admin_counts_them_at_once() {
    // 24 pieces of 16 KiB, 50 ms apart: about 1.2 s from first to last byte.
    let (origin, count, body) = trickling_origin(24, 16 << 10, Duration::from_millis(50));
    let cfg = DriverConfig {
        listen: vec![lo()],
        admin: Some(lo()),
        instructions: vec![Instruction::new("t", "/live/t/", origin)],
        drain: Duration::from_secs(1),
        ..DriverConfig::default()
    };
    let drivers = bind_workers(cfg, 2).expect("workers bind");
    let node = drivers[0].local_addr(Listener::Viewers).expect("viewers");
    let admin = drivers[0].local_addr(Listener::Admin).expect("admin");
    let per_worker: Vec<_> = drivers.iter().map(|d| d.stats_handle()).collect();
    let stop = drivers[0].stop_handle();
    let runner = thread::spawn(move || run_all(drivers));

    const VIEWERS: usize = 24;
    let viewers: Vec<_> = (0..VIEWERS).map(|_| thread::spawn(move || timed_get(node, "/live/t/obj.ts"))).collect();
    let results: Vec<_> = viewers.into_iter().map(|v| v.join().expect("viewer")).collect();
    for (_, b) in &results {
        assert!(*b == body, "every viewer got the whole object, byte-exact ({} of {} bytes)", b.len(), body.len());
    }
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1, "one origin request for both workers");
    let firsts: Vec<Instant> = results.iter().filter_map(|(f, _)| *f).collect();
    let earliest = *firsts.iter().min().expect("first bytes");
    let spread = firsts.iter().map(|f| f.duration_since(earliest)).max().unwrap_or_default();
    // Waiters on the worker that did not fetch it used to get it only once complete (~1.2 s).
    assert!(spread < Duration::from_millis(400), "first body bytes within {spread:?} of the first viewer's");

    // The admin answer counts every request already served, on both workers, without waiting.
    let r = http_request(admin, "GET", "/v1/stats", &[]).expect("stats");
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["channels"][0]["requests"].as_u64(), Some(VIEWERS as u64), "{v}");
    assert_eq!(v["connections_accepted"].as_u64(), Some(VIEWERS as u64), "{v}");
    // The connections really reached both workers (else this proved nothing).
    let served: Vec<u64> = per_worker.iter().map(|s| s.lock().channels.iter().map(|c| c.requests).sum()).collect();
    assert!(served.iter().all(|&n| n > 0), "both workers served viewers: {served:?}");
    // One channel, instructed on both workers, is one event.
    let r = http_request(admin, "GET", "/v1/events", &[]).expect("events");
    let text = String::from_utf8_lossy(&r.body);
    assert_eq!(text.matches("channel_instructed").count(), 1, "{text}");
    stop.stop();
    runner.join().expect("runner").expect("workers ran");
}
