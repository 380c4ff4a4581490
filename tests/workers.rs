//! `listo node --workers N` on real sockets (issue 7 item 4): two workers share the viewer port
//! (`SO_REUSEPORT`) and one store. Viewers land on both workers, yet the origin serves exactly
//! one request per distinct segment; instructions given to worker 0's control port apply on
//! every worker; the admin port adds up both workers' counters.
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
