//! `soak`: the node under churn for a while, printing its memory at the start and the end
//! (issue 8's soak). In one process, on loopback: the synthetic origin, a node on real sockets
//! (the mio driver, with its control port), and viewers that join, watch a few seconds and
//! leave, all the time; a second channel is instructed and withdrawn over the control port
//! every few seconds while some viewers watch it. Memory is the process RSS (`/proc/self/status`)
//! after a warm-up and at the end, plus the node's own counts once everyone left.
//!
//! ```sh
//! cargo run --release --example soak -- --seconds 300 --viewers 100
//! ```
//!
//! Prints one line per 10 s and a last JSON line; exits 1 if the RSS grew by more than
//! `--max-growth-mib` (default 32) from the warm-up to the end, or if the node still holds viewer
//! connections or more objects than the live windows need once every viewer left. RSS is read
//! after `malloc_trim`, so the allocator's cached free memory does not count.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use listo::driver::{Driver, DriverConfig, Listener};
use listo::origin::{media_path, OriginConfig, OriginServer};
use listo::player::{run_player, PlayerConfig};
use listo::Instruction;

struct Args {
    seconds: u64,
    viewers: usize,
    max_growth_mib: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { seconds: 60, viewers: 60, max_growth_mib: 32 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a number"))?;
            v.parse().map_err(|_| format!("{name}: '{v}' is not a number"))
        };
        match flag.as_str() {
            "--seconds" => a.seconds = num("--seconds")?.max(5),
            "--viewers" => a.viewers = num("--viewers")?.max(1) as usize,
            "--max-growth-mib" => a.max_growth_mib = num("--max-growth-mib")?,
            "--help" | "-h" => return Err("usage: soak [--seconds S] [--viewers N] [--max-growth-mib M]".into()),
            other => return Err(format!("unknown flag '{other}' (try --help)")),
        }
    }
    Ok(a)
}

/// This process's resident set size in KiB, after handing free heap memory back to the system
/// (so what is measured is memory in use, not what the allocator's per-thread arenas keep).
fn rss_kib() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())))
        .unwrap_or(0)
}

/// One request to the control port; returns the status code.
fn control(addr: SocketAddr, method: &str, path: &str, body: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return 0 };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> std::io::Result<bool> {
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let ocfg = OriginConfig { channels: 2, ..OriginConfig::default() };
    let origin = OriginServer::start(loopback, ocfg.clone())?;
    let origin_addr = origin.local_addr();
    let driver = Driver::bind(DriverConfig {
        listen: vec![loopback],
        control: Some(loopback),
        instructions: vec![Instruction::new("ch0", "/live/ch0/", origin_addr)],
        ..DriverConfig::default()
    })?;
    let node = driver.local_addr(Listener::Viewers).ok_or_else(|| std::io::Error::other("no viewer listener"))?;
    let ctl = driver.local_addr(Listener::Control).ok_or_else(|| std::io::Error::other("no control listener"))?;
    let stop = driver.stop_handle();
    let stats = driver.stats_handle();
    let node_thread = thread::spawn(move || driver.run());

    let end = Instant::now() + Duration::from_secs(args.seconds);
    let done = Arc::new(AtomicBool::new(false));
    let sessions = Arc::new(AtomicU64::new(0));
    let segments = Arc::new(AtomicU64::new(0));
    // Viewers: each slot plays a session of 2-7 s, leaves, and a new viewer takes its place.
    // One slot in five watches ch1, which comes and goes.
    let mut slots = Vec::new();
    for i in 0..args.viewers {
        let (done, sessions, segments) = (done.clone(), sessions.clone(), segments.clone());
        let renditions = ocfg.renditions_kbps.len().max(1);
        slots.push(thread::Builder::new().stack_size(256 * 1024).spawn(move || {
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) && Instant::now() < end {
                let ch = usize::from(i % 5 == 4);
                let secs = 2 + (i as u64 * 7 + n * 3) % 6;
                let left = end.saturating_duration_since(Instant::now());
                let pc = PlayerConfig::new(node, media_path(ch, (i + n as usize) % renditions), Duration::from_secs(secs).min(left));
                let r = run_player(pc);
                sessions.fetch_add(1, Ordering::Relaxed);
                segments.fetch_add(r.segments, Ordering::Relaxed);
                n += 1;
            }
        })?);
    }
    // Channel churn: ch1 instructed for 3 s, withdrawn for 2 s, again and again.
    let churn = {
        let done = done.clone();
        thread::spawn(move || {
            let body = format!(r#"{{"channel":"ch1","path_prefix":"/live/ch1/","endpoints":["{origin_addr}"]}}"#);
            let mut cycles = 0u64;
            while !done.load(Ordering::Relaxed) && Instant::now() < end {
                if control(ctl, "POST", "/v1/channels", &body) == 201 {
                    cycles += 1;
                }
                thread::sleep(Duration::from_secs(3));
                control(ctl, "DELETE", "/v1/channels/ch1", "");
                thread::sleep(Duration::from_secs(2));
            }
            cycles
        })
    };

    let warm = Duration::from_secs((args.seconds / 6).clamp(3, 30));
    thread::sleep(warm);
    let rss_start = rss_kib();
    let objects_start = stats.lock().store_objects;
    println!("soak: {} viewer slots for {} s; RSS after {} s warm-up: {} KiB", args.viewers, args.seconds, warm.as_secs(), rss_start);
    let mut next = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        thread::sleep(Duration::from_millis(200).min(end.saturating_duration_since(Instant::now())));
        if Instant::now() >= next {
            let s = stats.lock().clone();
            println!(
                "  rss {} KiB  viewer conns {}  store {} objects / {} KiB  sessions so far {}",
                rss_kib(),
                s.viewer_connections,
                s.store_objects,
                s.store_bytes / 1024,
                sessions.load(Ordering::Relaxed)
            );
            next += Duration::from_secs(10);
        }
    }
    done.store(true, Ordering::Relaxed);
    for s in slots {
        let _ = s.join();
    }
    let cycles = churn.join().unwrap_or(0);
    // Everyone left: let the node notice the closes and its follows go idle.
    thread::sleep(Duration::from_secs(2));
    let rss_end = rss_kib();
    let s = stats.lock().clone();
    stop.stop();
    let _ = node_thread.join();
    drop(origin);

    let growth_kib = rss_end.saturating_sub(rss_start);
    // The store holds the live windows: no more objects at the end than after the warm-up (the
    // windows were filling then), with slack for the churning channel's.
    let store_ok = s.store_objects <= 2 * objects_start + 16;
    let ok = growth_kib <= args.max_growth_mib * 1024 && s.viewer_connections == 0 && store_ok;
    println!(
        "{{\"seconds\":{},\"viewer_slots\":{},\"sessions\":{},\"segments\":{},\"channel_cycles\":{},\"rss_start_kib\":{},\"rss_end_kib\":{},\"rss_growth_kib\":{},\"viewer_connections_after\":{},\"store_objects_after\":{},\"store_bytes_after\":{},\"ok\":{}}}",
        args.seconds,
        args.viewers,
        sessions.load(Ordering::Relaxed),
        segments.load(Ordering::Relaxed),
        cycles,
        rss_start,
        rss_end,
        growth_kib,
        s.viewer_connections,
        s.store_objects,
        s.store_bytes,
        ok
    );
    Ok(ok)
}
