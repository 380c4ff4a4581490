//! `listo demo`: a synthetic live origin, a node (the mio driver) and N players in one process,
//! on loopback, real sockets. Prints a live table once a second and ends with a JSON summary
//! (the keys of `listo simulate` plus TTFB percentiles); optionally an SVG chart of upstream vs
//! downstream bandwidth.
//!
//! With [`DemoConfig::ll`] (`listo demo --ll`) the origin serves LL-HLS (1 s segments of three
//! ~333 ms parts) and the players are low-latency clients
//! ([`crate::player_ll::run_ll_player`]): blocking reloads for the next part,
//! each part fetched once listed. The summary adds part TTFB and publication → received delay
//! percentiles, and the origin's part requests against the distinct parts it served.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::driver::{bind_workers, run_all, DriverConfig, Listener};
use crate::origin::{OriginConfig, OriginServer};
use crate::player::{run_player, PlayerConfig, PlayerReport};
use crate::player_ll::{part_of_path, run_ll_player, LlPlayerConfig, LlPlayerReport};
use crate::Instruction;

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Players.
    pub viewers: usize,
    /// Seconds the players watch.
    pub seconds: u64,
    /// Channels at the origin (players are spread over channels and renditions).
    pub channels: usize,
    /// Write a bandwidth chart here.
    pub svg: Option<std::path::PathBuf>,
    /// Print the live table.
    pub live_table: bool,
    /// Low latency: an LL-HLS origin and low-latency players (part TTFB in the summary).
    pub ll: bool,
    /// Node workers (one mio loop each, sharing one store), as `listo node --workers`.
    pub workers: usize,
}

impl Default for DemoConfig {
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(256);
        DemoConfig { viewers: 200, seconds: 20, channels: 1, svg: None, live_table: true, ll: false, workers }
    }
}

/// One second of the live table.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the players started.
    pub t: f64,
    /// Open viewer connections.
    pub viewers: u64,
    /// Downstream (node → viewers) Mbit/s over the last interval.
    pub down_mbps: f64,
    /// Upstream (origin → node) Mbit/s over the last interval.
    pub up_mbps: f64,
}

/// The demo's figures.
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    /// The summary object (keys of `listo simulate` plus `p50_ttfb_ms`, `p99_ttfb_ms`).
    pub json: serde_json::Value,
    /// The live table's samples.
    pub samples: Vec<Sample>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the demo, writing the live table and summary lines to `out`.
pub fn run(cfg: &DemoConfig, out: &mut dyn Write) -> io::Result<DemoReport> {
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut ocfg = OriginConfig { channels: cfg.channels.max(1), latency_ms: 20, ..OriginConfig::default() };
    if cfg.ll {
        ocfg.ll = true;
        ocfg.segment_secs = 1;
    }
    let origin = OriginServer::start(loopback, ocfg.clone())?;
    let origin_addr = origin.local_addr();
    let instructions = (0..ocfg.channels)
        .map(|c| Instruction::new(&format!("ch{c}"), &format!("/live/ch{c}/"), origin_addr))
        .collect();
    let drivers = bind_workers(DriverConfig { listen: vec![loopback], instructions, ..DriverConfig::default() }, cfg.workers.max(1))?;
    let node_addr = drivers.first().and_then(|d| d.local_addr(Listener::Viewers)).ok_or_else(|| io::Error::other("no listener"))?;
    let stop = drivers[0].stop_handle();
    let handles: Vec<_> = drivers.iter().map(|d| d.stats_handle()).collect();
    // Every worker's counters, added up (each refreshed every 250 ms, and at the end).
    let stats = move || {
        let mut total = handles[0].lock().clone();
        for h in &handles[1..] {
            total.merge(&h.lock());
        }
        total
    };
    let workers = drivers.len();
    let node_thread = thread::spawn(move || run_all(drivers));

    let mode = if cfg.ll {
        format!(", LL-HLS: {} parts of ~{} ms per {} s segment", ocfg.parts_per_segment(), ocfg.part_target_ms(), ocfg.segment_secs)
    } else {
        String::new()
    };
    writeln!(
        out,
        "listo demo: origin {origin_addr} (latency 20 ms{mode}) → node {node_addr} ({workers} worker(s)) → {} viewers for {} s",
        cfg.viewers, cfg.seconds
    )?;
    // The origin's clock: the instant its stream age was 0 (to within a millisecond).
    let origin_start = Instant::now().checked_sub(Duration::from_millis(origin.elapsed_ms())).unwrap_or_else(Instant::now);
    let duration = Duration::from_secs(cfg.seconds.max(1));
    let renditions = ocfg.renditions_kbps.len().max(1);
    let verify_cfg = Arc::new(ocfg.clone());
    let mut players = Vec::with_capacity(cfg.viewers);
    let start = Instant::now();
    for i in 0..cfg.viewers {
        let c = i % ocfg.channels;
        let r = (i / ocfg.channels) % renditions;
        // Players join over the first two seconds, as an audience does.
        let delay = Duration::from_millis((i as u64 * 2000) / cfg.viewers.max(1) as u64);
        let handle = if cfg.ll {
            let o = verify_cfg.clone();
            let published: crate::player_ll::PublishedAt = Arc::new(move |path: &str| {
                let (k, i) = part_of_path(path)?;
                origin_start.checked_add(Duration::from_millis(o.part_published_ms(k, i)))
            });
            let mut pc =
                LlPlayerConfig::new(node_addr, crate::origin::media_path(c, r), duration).with_published_at(published);
            if i % 10 == 0 {
                let o = verify_cfg.clone();
                pc = pc.with_verify(Arc::new(move |path: &str, body: &[u8]| {
                    part_of_path(path).is_some_and(|(k, i)| o.part_bytes(c, r, k, i) == body)
                }));
            }
            thread::Builder::new().stack_size(256 * 1024).spawn(move || {
                thread::sleep(delay);
                Played::Ll(run_ll_player(pc))
            })?
        } else {
            let mut pc = PlayerConfig::new(node_addr, crate::origin::media_path(c, r), duration);
            if i % 10 == 0 {
                let o = verify_cfg.clone();
                pc = pc.with_verify(Arc::new(move |path: &str, body: &[u8]| o.expected_segment(path).is_some_and(|b| b == body)));
            }
            thread::Builder::new().stack_size(256 * 1024).spawn(move || {
                thread::sleep(delay);
                Played::Hls(run_player(pc))
            })?
        };
        players.push(handle);
    }

    if cfg.live_table {
        writeln!(out, "{:>6} {:>8} {:>14} {:>12} {:>8}", "time", "viewers", "downstream", "upstream", "saving")?;
        writeln!(out, "{:>6} {:>8} {:>14} {:>12} {:>8}", "", "(conns)", "node→viewers", "origin→node", "(total)")?;
    }
    let mut samples = Vec::new();
    let (mut last_down, mut last_up, mut last_t) = (0u64, 0u64, 0.0f64);
    while start.elapsed() < duration + Duration::from_millis(500) {
        thread::sleep(Duration::from_secs(1));
        let s = stats();
        let t = start.elapsed().as_secs_f64();
        let down: u64 = s.downstream_bytes;
        let up: u64 = s.channels.iter().map(|c| c.upstream_bytes).sum();
        let dt = (t - last_t).max(1e-3);
        let sample = Sample {
            t,
            viewers: s.viewer_connections,
            down_mbps: (down - last_down.min(down)) as f64 * 8.0 / dt / 1e6,
            up_mbps: (up - last_up.min(up)) as f64 * 8.0 / dt / 1e6,
        };
        (last_down, last_up, last_t) = (down, up, t);
        if cfg.live_table {
            // Cumulative: bytes delivered to viewers per byte fetched from the origin.
            let saving = if up > 0 { format!("{:.0}x", down as f64 / up as f64) } else { "-".into() };
            writeln!(
                out,
                "{:>5.0}s {:>8} {:>9.1} Mb/s {:>7.1} Mb/s {:>8}",
                t, sample.viewers, sample.down_mbps, sample.up_mbps, saving
            )?;
        }
        samples.push(sample);
    }

    let played: Vec<Played> = players.into_iter().filter_map(|h| h.join().ok()).collect();
    let (mut reports, mut ll_reports): (Vec<PlayerReport>, Vec<LlPlayerReport>) = (Vec::new(), Vec::new());
    for p in played {
        match p {
            Played::Hls(r) => reports.push(r),
            Played::Ll(r) => {
                // The usual keys count LL players' bytes, errors and corruption too; their media
                // objects are parts, so `p50_ttfb_ms`/`p99_ttfb_ms` are part TTFBs.
                reports.push(PlayerReport {
                    bytes: r.bytes,
                    errors: r.errors,
                    corrupt: r.corrupt,
                    ttfb_ms: r.part_ttfb_ms.clone(),
                    ..PlayerReport::default()
                });
                ll_reports.push(r);
            }
        }
    }
    stop.stop();
    let _ = node_thread.join();
    let counts = origin.counts();
    origin.shutdown();
    let final_stats = stats();

    // Segments the players got, and the distinct media paths the origin served, counted as it
    // counts `upstream_segment_requests` (the node also prefetches what is published after the
    // players stop, which no player saw).
    let watched: BTreeSet<&str> = reports.iter().flat_map(|r| r.segment_paths.iter().map(String::as_str)).collect();
    let distinct: BTreeSet<&str> = counts
        .per_path
        .keys()
        .map(String::as_str)
        .filter(|p| crate::origin::path_kind(p) == crate::origin::PathKind::Segment)
        .collect();
    let mut ttfb: Vec<f64> = reports.iter().flat_map(|r| r.ttfb_ms.iter().copied()).collect();
    ttfb.sort_by(|a, b| a.total_cmp(b));
    let downstream: u64 = reports.iter().map(|r| r.bytes).sum();
    let upstream = counts.bytes_sent;
    let saving = if downstream > 0 { 1.0 - upstream as f64 / downstream as f64 } else { 0.0 };
    let seg_requests: u64 = final_stats.channels.iter().map(|c| c.segment_requests).sum();
    let seg_hits: u64 = final_stats.channels.iter().map(|c| c.segment_hits).sum();
    let hit_ratio = if seg_requests > 0 { seg_hits as f64 / seg_requests as f64 } else { 0.0 };
    let max_wait = reports.iter().flat_map(|r| r.complete_ms.iter().copied()).fold(0.0, f64::max);
    let playlist_max = counts.per_path.iter().filter(|(p, _)| p.ends_with(".m3u8")).map(|(_, n)| *n).max().unwrap_or(0);
    let mut json = serde_json::json!({
        "viewers": cfg.viewers,
        "workers": workers,
        "channels": ocfg.channels,
        "seconds": cfg.seconds,
        "distinct_segments": distinct.len(),
        "watched_segments": watched.len(),
        "upstream_segment_requests": counts.segment_requests,
        "upstream_playlist_requests": counts.playlist_requests,
        "upstream_playlist_requests_max_per_channel": playlist_max,
        "node_downstream_bytes": final_stats.downstream_bytes,
        "hit_ratio": (hit_ratio * 1e6).round() / 1e6,
        "prefetch": true,
        "max_segment_wait_ms": max_wait.round() as u64,
        "upstream_bytes": upstream,
        "downstream_bytes": downstream,
        "saving_ratio": (saving * 1e6).round() / 1e6,
        "stalls": reports.iter().map(|r| r.stalls).sum::<u64>(),
        "segments_received": reports.iter().map(|r| r.segments).sum::<u64>(),
        "errors": reports.iter().map(|r| r.errors).sum::<u64>(),
        "corrupt": reports.iter().map(|r| r.corrupt).sum::<u64>(),
        "hits": final_stats.channels.iter().map(|c| c.hits).sum::<u64>(),
        "coalesced": final_stats.channels.iter().map(|c| c.coalesced).sum::<u64>(),
        "misses": final_stats.channels.iter().map(|c| c.misses).sum::<u64>(),
        "p50_ttfb_ms": (percentile(&ttfb, 0.50) * 100.0).round() / 100.0,
        "p99_ttfb_ms": (percentile(&ttfb, 0.99) * 100.0).round() / 100.0,
        "wall_ms": start.elapsed().as_millis() as u64,
    });
    if cfg.ll {
        let (parts, part_requests, distinct_parts) = ll_summary(&mut json, &ll_reports, &counts);
        writeln!(
            out,
            "summary: {} viewers received {parts} parts (part TTFB p50 {} ms, p99 {} ms; published → received p50 {} ms, p99 {} ms); the origin served {part_requests} part requests for {distinct_parts} distinct parts ({:.1} MB upstream, {:.1} MB to viewers)",
            cfg.viewers,
            json["part_ttfb_p50_ms"],
            json["part_ttfb_p99_ms"],
            json["part_delay_p50_ms"],
            json["part_delay_p99_ms"],
            upstream as f64 / 1e6,
            downstream as f64 / 1e6,
        )?;
    } else {
        writeln!(
            out,
            "summary: {} viewers received {} segments ({:.1} MB); the origin served {} segment requests for {} distinct segments ({:.1} MB): saving ratio {:.4}",
            cfg.viewers,
            json["segments_received"],
            downstream as f64 / 1e6,
            counts.segment_requests,
            distinct.len(),
            upstream as f64 / 1e6,
            saving
        )?;
    }
    if let Some(path) = &cfg.svg {
        std::fs::write(path, svg_chart(&samples))?;
        writeln!(out, "chart written to {}", path.display())?;
    }
    writeln!(out, "{json}")?;
    Ok(DemoReport { json, samples })
}

/// What one player thread returns.
enum Played {
    Hls(PlayerReport),
    Ll(LlPlayerReport),
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Adds the LL keys to `json`: part TTFB and delay percentiles, parts received, and the
/// origin's part requests and distinct parts. Returns `(parts, part requests, distinct parts)`.
fn ll_summary(json: &mut serde_json::Value, reports: &[LlPlayerReport], counts: &crate::origin::OriginCounts) -> (u64, u64, usize) {
    let mut ttfb: Vec<f64> = reports.iter().flat_map(|r| r.part_ttfb_ms.iter().copied()).collect();
    ttfb.sort_by(|a, b| a.total_cmp(b));
    let mut delay: Vec<f64> = reports.iter().flat_map(|r| r.part_delay_ms.iter().copied()).collect();
    delay.sort_by(|a, b| a.total_cmp(b));
    let parts: u64 = reports.iter().map(|r| r.parts).sum();
    // Part paths as the origin counted them (requests with a query are playlists, never parts).
    let part_paths = counts.per_path.iter().filter(|(p, _)| !p.contains('?') && part_of_path(p).is_some());
    let (mut part_requests, mut distinct_parts) = (0u64, 0usize);
    for (_, n) in part_paths {
        part_requests += n;
        distinct_parts += 1;
    }
    let received: BTreeSet<&str> = reports.iter().flat_map(|r| r.part_paths.iter().map(String::as_str)).collect();
    if let Some(obj) = json.as_object_mut() {
        obj.insert("ll".into(), true.into());
        obj.insert("parts".into(), parts.into());
        obj.insert("distinct_parts_received".into(), received.len().into());
        obj.insert("upstream_part_requests".into(), part_requests.into());
        obj.insert("distinct_parts".into(), distinct_parts.into());
        obj.insert("catch_up_parts".into(), reports.iter().map(|r| r.catch_up_parts).sum::<u64>().into());
        obj.insert("ll_playlists".into(), reports.iter().map(|r| r.playlists).sum::<u64>().into());
        obj.insert("part_ttfb_p50_ms".into(), round2(percentile(&ttfb, 0.50)).into());
        obj.insert("part_ttfb_p99_ms".into(), round2(percentile(&ttfb, 0.99)).into());
        obj.insert("part_delay_p50_ms".into(), round2(percentile(&delay, 0.50)).into());
        obj.insert("part_delay_p99_ms".into(), round2(percentile(&delay, 0.99)).into());
    }
    (parts, part_requests, distinct_parts)
}

/// A small SVG line chart: downstream (what viewers get) vs upstream (what the operator's
/// network carries from the CDN with LISTO), Mbit/s over time.
pub fn svg_chart(samples: &[Sample]) -> String {
    let (w, h, pad) = (720.0, 360.0, 50.0);
    let tmax = samples.last().map_or(1.0, |s| s.t).max(1.0);
    let ymax = samples.iter().map(|s| s.down_mbps.max(s.up_mbps)).fold(1.0, f64::max) * 1.1;
    let x = |t: f64| pad + (w - 2.0 * pad) * t / tmax;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * v / ymax;
    let line = |f: &dyn Fn(&Sample) -> f64| {
        samples.iter().map(|s| format!("{:.1},{:.1}", x(s.t), y(f(s)))).collect::<Vec<_>>().join(" ")
    };
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{pad}" y="20">LISTO demo: bandwidth (Mbit/s) over time (s)</text>
<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="black"/>
<text x="{pad}" y="{lb}">0</text><text x="{r}" y="{lb}" text-anchor="end">{tmax:.0} s</text>
<text x="5" y="{pad}">{ymax:.0}</text>
<polyline fill="none" stroke="#d62728" stroke-width="2" points="{down}"/>
<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{up}"/>
<text x="{lx}" y="40" fill="#d62728">downstream: what viewers receive (and what the network would carry without LISTO)</text>
<text x="{lx}" y="56" fill="#1f77b4">upstream: what crosses the network with LISTO</text>
</svg>
"##,
        b = h - pad,
        r = w - pad,
        lb = h - pad + 16.0,
        lx = pad + 10.0,
        down = line(&|s| s.down_mbps),
        up = line(&|s| s.up_mbps),
    )
}
