//! The whole system in one process, on loopback (issue 6 item 5):
//!
//!     origin ──▶ regional node ──▶ access node "east" (clients 10.1.0.0/16) ──▶ viewers
//!                               └─▶ access node "west" (clients 10.2.0.0/16) ──▶ viewers
//!
//! Every viewer first asks the HTTP mediator (`listo instructor`'s server) for the channel; it
//! is steered by its subnet (simulated with `X-Forwarded-For`, the mediator trusting 127.0.0.1)
//! to its access node, which the mediator has just instructed (with the regional node as its
//! endpoint; the regional node with the origin). At the end: what the origin served per
//! distinct segment, and what each node fetched.
//!
//!     cargo run --release --example system -- [--viewers N] [--seconds S]
//!
//! (N viewers per subnet, default 50; S seconds of play, default 10.)

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use listo::driver::{Driver, DriverConfig, Listener};
use listo::instructor::{HttpMediator, HttpMediatorConfig, Instructor, InstructorConfig, Topology};
use listo::origin::{media_path, OriginConfig, OriginServer};
use listo::player::{http_request, run_player, PlayerConfig};

struct Node {
    name: &'static str,
    viewers: SocketAddr,
    control: SocketAddr,
    stop: listo::driver::StopHandle,
    stats: std::sync::Arc<parking_lot::Mutex<listo::Stats>>,
    thread: thread::JoinHandle<std::io::Result<listo::driver::DriverCounters>>,
}

fn node(name: &'static str) -> Result<Node, Box<dyn std::error::Error>> {
    let lo: SocketAddr = "127.0.0.1:0".parse()?;
    let d = Driver::bind(DriverConfig { listen: vec![lo], control: Some(lo), ..DriverConfig::default() })?;
    let viewers = d.local_addr(Listener::Viewers).ok_or("no viewer listener")?;
    let control = d.local_addr(Listener::Control).ok_or("no control listener")?;
    let (stop, stats) = (d.stop_handle(), d.stats_handle());
    let thread = thread::Builder::new().name(name.into()).spawn(move || d.run())?;
    Ok(Node { name, viewers, control, stop, stats, thread })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut viewers = 50usize;
    let mut seconds = 10u64;
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--viewers", Some(v)) => viewers = v.parse()?,
            ("--seconds", Some(v)) => seconds = v.parse()?,
            _ => return Err(format!("usage: system [--viewers N] [--seconds S] (got {pair:?})").into()),
        }
    }
    let origin = OriginServer::start("127.0.0.1:0".parse()?, OriginConfig { channels: 1, segment_secs: 2, ..OriginConfig::default() })?;
    let regional = node("regional")?;
    let east = node("east")?;
    let west = node("west")?;
    let topology = serde_json::json!({
        "network_map": {"meta": {"vtag": {"resource-id": "example-map", "tag": "1"}}, "network-map": {
            "pid-east": {"ipv4": ["10.1.0.0/16"]},
            "pid-west": {"ipv4": ["10.2.0.0/16"]},
            "pid-regional": {"ipv4": ["10.200.0.0/16"]}
        }},
        "nodes": {
            "pid-east": [{"listen": east.viewers.to_string(), "control": east.control.to_string()}],
            "pid-west": [{"listen": west.viewers.to_string(), "control": west.control.to_string()}],
            "pid-regional": [{"listen": regional.viewers.to_string(), "control": regional.control.to_string()}]
        },
        "channels": {"ch0": {"path_prefix": "/live/ch0/", "endpoints": [origin.local_addr().to_string()]}},
        "parents": {east.viewers.to_string(): regional.viewers.to_string(), west.viewers.to_string(): regional.viewers.to_string()}
    });
    let instructor = Instructor::new(Topology::parse(topology.to_string().as_bytes(), None)?, InstructorConfig::default());
    let mut mcfg = HttpMediatorConfig::new("127.0.0.1:0".parse()?);
    mcfg.trusted_proxies = vec!["127.0.0.1/32".parse()?];
    let mediator = HttpMediator::start(mcfg, instructor.clone())?;
    let m = mediator.local_addr();
    println!("origin {}, regional {}, east {}, west {}, mediator {m}", origin.local_addr(), regional.viewers, east.viewers, west.viewers);
    println!("{} viewers per subnet for {seconds} s ...", viewers);

    let playlist = media_path(0, 0);
    let handles: Vec<_> = (0..2 * viewers)
        .map(|i| {
            let playlist = playlist.clone();
            thread::spawn(move || -> Result<(SocketAddr, listo::player::PlayerReport), String> {
                let client = format!("10.{}.{}.{}", 1 + i % 2, i / 200, i % 200 + 1);
                let r = http_request(m, "GET", &playlist, &[("X-Forwarded-For", client.as_str())]).map_err(|e| e.to_string())?;
                let loc = r.header("location").ok_or("no Location")?.to_string();
                let rest = loc.strip_prefix("http://").ok_or("not http")?;
                let slash = rest.find('/').ok_or("no path")?;
                let node: SocketAddr = rest[..slash].parse().map_err(|_| "bad host")?;
                Ok((node, run_player(PlayerConfig::new(node, &rest[slash..], Duration::from_secs(seconds)))))
            })
        })
        .collect();
    let (mut per_node, mut segments, mut errors, mut stalls) = (std::collections::BTreeMap::new(), 0, 0, 0);
    for h in handles {
        match h.join() {
            Ok(Ok((node, rep))) => {
                *per_node.entry(node).or_insert(0) += 1;
                segments += rep.segments;
                errors += rep.errors;
                stalls += rep.stalls;
            }
            Ok(Err(e)) => eprintln!("viewer failed: {e}"),
            Err(_) => eprintln!("viewer panicked"),
        }
    }
    thread::sleep(Duration::from_millis(300)); // let the nodes publish their counters
    println!("viewers per node: {}", per_node.iter().map(|(n, c)| format!("{n}: {c}")).collect::<Vec<_>>().join(", "));
    println!("viewers received {segments} segments ({errors} errors, {stalls} stalls)");
    for n in [&regional, &east, &west] {
        let s = n.stats.lock().clone();
        for c in &s.channels {
            println!(
                "  {:8} {}: {} upstream requests, {:.1} MB in, {:.1} MB out",
                n.name,
                c.channel,
                c.upstream_requests,
                c.upstream_bytes as f64 / 1e6,
                c.downstream_bytes as f64 / 1e6
            );
        }
    }
    let counts = origin.counts();
    let segs: Vec<u64> = counts.per_path.iter().filter(|(p, _)| p.ends_with(".ts")).map(|(_, n)| *n).collect();
    println!(
        "origin: {} segment requests for {} distinct segments (max {} per segment), {} playlist requests",
        counts.segment_requests,
        segs.len(),
        segs.iter().max().copied().unwrap_or(0),
        counts.playlist_requests
    );
    println!("mediator: {:?}; instructor: {:?}", mediator.stats(), instructor.stats());
    mediator.shutdown();
    instructor.stop();
    for n in [regional, east, west] {
        n.stop.stop();
        let _ = n.thread.join();
    }
    origin.shutdown();
    Ok(())
}
