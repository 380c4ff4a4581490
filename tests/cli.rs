//! The `listo` command line as scripts use it (DESIGN §6): exit codes, one-line errors on
//! stderr, the JSON last line of `simulate` and `demo`, and a `listo node` child process that
//! serves through a real socket and stops cleanly on SIGTERM. Every child runs under a deadline
//! and is killed (by its own pid) if it overstays.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use listo::origin::{segment_path, OriginConfig, OriginServer};
use listo::player::http_request;

const LISTO: &str = env!("CARGO_BIN_EXE_listo");

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Kills and reaps a child that is still running (only this child, by its pid).
struct Reaper(Option<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

/// Runs `listo args…` to completion within `limit` (killed and failed otherwise).
fn listo(args: &[&str], limit: Duration) -> Output {
    let child = Command::new(LISTO)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn listo");
    let mut reaper = Reaper(Some(child));
    let child = reaper.0.as_mut().expect("child");
    // Drain both pipes in threads so a chatty child never blocks on a full pipe.
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_t = thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_t = thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait listo") {
            break s;
        }
        if Instant::now() > deadline {
            drop(reaper);
            panic!("listo {args:?} did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: out_t.join().expect("stdout reader"), stderr: err_t.join().expect("stderr reader") }
}

/// Asserts exit code 2, nothing on stdout and exactly one `listo: …` line on stderr that
/// contains every one of `mentions`.
fn assert_usage_error(args: &[&str], mentions: &[&str]) {
    let o = listo(args, Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(2), "listo {args:?}: exit code (stderr: {})", o.stderr);
    assert!(o.stdout.is_empty(), "listo {args:?}: nothing on stdout, got {:?}", o.stdout);
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "listo {args:?}: one line on stderr, got {:?}", o.stderr);
    assert!(lines[0].starts_with("listo: "), "listo {args:?}: {:?}", lines[0]);
    for m in mentions {
        assert!(lines[0].contains(m), "listo {args:?}: {:?} should mention {m:?}", lines[0]);
    }
}

fn last_json_line(o: &Output) -> serde_json::Value {
    let last = o.stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_else(|| panic!("no output; stderr {}", o.stderr));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

fn num(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} is not an unsigned number in {v}"))
}

#[test]
fn node_with_a_bad_flag_exits_2_with_one_line() {
    assert_usage_error(&["node", "--listen", "127.0.0.1:0", "--bogus", "1"], &["--bogus"]);
    assert_usage_error(&["node", "--listen", "127.0.0.1:0", "--bogus"], &["--bogus"]);
    assert_usage_error(&["node", "--listen", "not-an-address"], &["--listen", "not-an-address"]);
    assert_usage_error(&["node", "--listen", "127.0.0.1:0", "--memory-mib", "lots"], &["--memory-mib", "lots"]);
    assert_usage_error(&["node", "--listen", "127.0.0.1:0", "--workers", "0"], &["--workers", "0"]);
    assert_usage_error(&["node", "--listen", "127.0.0.1:0", "--workers", "many"], &["--workers", "many"]);
    assert_usage_error(&["node", "--listen", "127.0.0.1:0", "--sendfile", "maybe"], &["--sendfile", "maybe"]);
    assert_usage_error(&["demo", "--workers", "0"], &["--workers", "0"]);
    assert_usage_error(&["node", "--listen", "127.0.0.1:0", "stray"], &["stray"]);
    assert_usage_error(&["bogus-command"], &["bogus-command"]);
}

#[test]
fn node_with_a_malformed_channel_exits_2_with_one_line() {
    for spec in [
        "nonsense",                          // no '=' nor '@'
        "ch1=/live/ch1/",                    // no endpoint
        "ch1=/live/ch1/@cdn.example:80",     // endpoint host is not an IP
        "ch1=/live/ch1/@127.0.0.1",          // no port
        "ch1=live/ch1/@127.0.0.1:8080",      // prefix without a leading '/'
        "=/live/ch1/@127.0.0.1:8080",        // empty name
        "ch 1=/live/ch1/@127.0.0.1:8080",    // bad name
        "ch1=/live/ch1/@127.0.0.1:8080,x:1", // second endpoint bad
    ] {
        assert_usage_error(&["node", "--listen", "127.0.0.1:0", "--channel", spec], &["--channel", spec]);
    }
}

#[test]
fn node_on_a_port_in_use_exits_2_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    assert_usage_error(&["node", "--listen", &addr], &[&addr, "in use"]);
    assert_usage_error(&["node", "--listen", "127.0.0.1:0", "--control", &addr], &[&addr, "in use"]);
    assert_usage_error(&["node", "--listen", "127.0.0.1:0", "--admin", &addr], &[&addr, "in use"]);
}

#[test]
fn node_without_listen_exits_2_with_one_line() {
    assert_usage_error(&["node"], &["--listen"]);
    assert_usage_error(&["node", "--channel", "ch1=/live/ch1/@127.0.0.1:18080"], &["--listen"]);
}

#[test]
fn control_port_off_loopback_needs_a_token() {
    assert_usage_error(&["node", "--listen", "127.0.0.1:0", "--control", "0.0.0.0:0"], &["--control", "--control-token"]);
    assert_usage_error(&["node", "--listen", "127.0.0.1:0", "--control", "0", "--control-token", "a b"], &["--control-token"]);
    assert_usage_error(
        &["node", "--listen", "127.0.0.1:0", "--control", "0", "--control-token-file", "/nonexistent/token"],
        &["--control-token-file", "/nonexistent/token"],
    );
}

#[test]
fn simulate_prints_json_last_with_one_upstream_request_per_segment_and_no_stalls() {
    let o = listo(&["simulate", "--viewers", "200", "--seconds", "30"], Duration::from_secs(60));
    assert!(o.status.success(), "simulate failed: {}", o.stderr);
    let j = last_json_line(&o);
    assert_eq!(num(&j, "viewers"), 200);
    assert_eq!(num(&j, "seconds"), 30);
    assert!(num(&j, "distinct_segments") > 10, "{j}");
    assert_eq!(num(&j, "upstream_segment_requests"), num(&j, "distinct_segments"), "{j}");
    assert_eq!(num(&j, "stalls"), 0, "{j}");
    assert_eq!(num(&j, "errors"), 0, "{j}");
    assert_eq!(num(&j, "corrupt"), 0, "{j}");
}

#[test]
fn node_child_serves_a_segment_then_exits_0_on_sigterm() {
    let ocfg = OriginConfig { channels: 1, segment_secs: 1, ..OriginConfig::default() };
    let origin = OriginServer::start("127.0.0.1:0".parse().expect("addr"), ocfg.clone()).expect("origin");
    let spec = format!("ch0=/live/ch0/@{}", origin.local_addr());
    let child = Command::new(LISTO)
        .args(["node", "--listen", "127.0.0.1:0", "--channel", &spec])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn listo node");
    let mut reaper = Reaper(Some(child));
    let child = reaper.0.as_mut().expect("child");
    let pid = child.id();
    // stderr lines, read in a thread: the start line names the bound address.
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().expect("stderr");
    let reader = thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let node: SocketAddr = loop {
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("no start line; stderr so far {seen:?}"));
        seen.push(line.clone());
        if let Some(rest) = line.strip_prefix("listo node: viewers on ") {
            let a = rest.split([',', ';']).next().unwrap_or("").trim();
            break a.parse().unwrap_or_else(|_| panic!("start line names an address: {line}"));
        }
    };
    assert_ne!(node.port(), 0, "the start line names the bound port, not :0");

    let path = segment_path(0, 1, origin.live_edge());
    let r = http_request(node, "GET", &path, &[("User-Agent", "curl/8.0")]).expect("GET through listo node");
    assert_eq!(r.status, 200);
    assert!(r.body == ocfg.expected_segment(&path).expect("segment"), "the origin's bytes");
    assert_eq!(origin.counts().path(&path), 1);

    let t = Instant::now();
    // SAFETY: plain kill(2) on our own child's pid (still unreaped, so the pid is ours).
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait node") {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "listo node still running 5 s after SIGTERM");
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM: {status}");
    let _ = reader.join();
    seen.extend(rx.try_iter());
    assert!(seen.iter().any(|l| l.contains("stopped")), "a stop line: {seen:?}");
    drop(reaper);
    origin.shutdown();
}

#[test]
fn demo_prints_json_last_with_the_simulate_keys_and_ttfb_percentiles() {
    let o = listo(&["demo", "--viewers", "20", "--seconds", "4"], Duration::from_secs(40));
    assert!(o.status.success(), "demo failed: {}", o.stderr);
    let j = last_json_line(&o);
    for key in [
        "viewers",
        "channels",
        "seconds",
        "distinct_segments",
        "upstream_segment_requests",
        "upstream_playlist_requests",
        "upstream_bytes",
        "downstream_bytes",
        "saving_ratio",
        "stalls",
        "segments_received",
        "errors",
        "corrupt",
        "hits",
        "coalesced",
        "misses",
        "wall_ms",
        "p50_ttfb_ms",
        "p99_ttfb_ms",
    ] {
        assert!(j.get(key).is_some(), "key {key} missing from {j}");
    }
    assert_eq!(num(&j, "viewers"), 20);
    assert_eq!(num(&j, "seconds"), 4);
    // The node runs as listo node does by default: one worker per core.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert_eq!(num(&j, "workers"), cores.min(256), "{j}");
    assert_eq!(num(&j, "errors"), 0, "{j}");
    assert_eq!(num(&j, "corrupt"), 0, "{j}");
    assert!(num(&j, "segments_received") >= 20 * 3, "{j}");
    let (p50, p99) = (j["p50_ttfb_ms"].as_f64().expect("p50"), j["p99_ttfb_ms"].as_f64().expect("p99"));
    assert!(p50 > 0.0 && p50 <= p99, "p50 {p50} ≤ p99 {p99}");
    // The live table came first, then the JSON.
    assert!(o.stdout.lines().count() >= 5, "a live table before the summary:\n{}", o.stdout);
}

// The contract (DESIGN §6, issue 3) is "the keys of `listo simulate` plus p50_ttfb_ms,
// p99_ttfb_ms"; today `listo demo` lacks hit_ratio, max_segment_wait_ms, node_downstream_bytes,
// prefetch and upstream_playlist_requests_max_per_channel (src/demo.rs builds its own object).
#[test]
fn demo_json_has_every_key_of_simulate_json() {
    let sim = listo(&["simulate", "--viewers", "5", "--seconds", "5"], Duration::from_secs(30));
    assert!(sim.status.success(), "{}", sim.stderr);
    let demo = listo(&["demo", "--viewers", "2", "--seconds", "1"], Duration::from_secs(30));
    assert!(demo.status.success(), "{}", demo.stderr);
    let (s, d) = (last_json_line(&sim), last_json_line(&demo));
    let missing: Vec<&String> = s.as_object().expect("object").keys().filter(|k| d.get(k.as_str()).is_none()).collect();
    assert!(missing.is_empty(), "demo JSON lacks simulate's keys {missing:?}: {d}");
    assert!(d.get("p50_ttfb_ms").is_some() && d.get("p99_ttfb_ms").is_some());
}

/// `listo demo --ll` (issue 9): an LL-HLS origin, a node and low-latency players in one
/// process. The JSON last line carries part TTFB percentiles, and the origin served each part
/// once for all the viewers.
#[test]
fn demo_ll_reports_part_ttfb_and_one_upstream_request_per_part() {
    let args = ["demo", "--ll", "--viewers", "20", "--seconds", "5"];
    let o = listo(&args, Duration::from_secs(40));
    assert!(o.status.success(), "demo --ll failed: {}", o.stderr);
    let (stdout, stderr) = (&o.stdout, &o.stderr);
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_else(|| panic!("no output; stderr {stderr}"));
    let j: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"));
    let num = |k: &str| j[k].as_u64().unwrap_or_else(|| panic!("{k} is not an unsigned number in {j}"));
    let float = |k: &str| j[k].as_f64().unwrap_or_else(|| panic!("{k} is not a number in {j}"));

    // 20 viewers × ~5 s × 3 parts a second, less joining: well over 100 parts.
    assert!(num("parts") > 100, "{j}");
    assert_eq!(num("errors"), 0, "{j}");
    assert_eq!(num("corrupt"), 0, "{j}");
    // One upstream request per part, however many viewers asked for it.
    assert!(num("distinct_parts") > 0, "{j}");
    assert_eq!(num("upstream_part_requests"), num("distinct_parts"), "{j}");
    // Parts are ~333 ms; the first byte comes much sooner (origin latency 20 ms).
    let (p50, p99) = (float("part_ttfb_p50_ms"), float("part_ttfb_p99_ms"));
    assert!(p50 > 0.0 && p50 < 333.0, "part TTFB p50 {p50} ms: {j}");
    assert!(p99 >= p50, "{j}");
    // Published → received at the live edge: a blocking reload and a part fetch, each
    // through the node to the 20 ms origin; well under one part.
    let d50 = float("part_delay_p50_ms");
    assert!(d50 > 0.0 && d50 < 333.0, "publication → received p50 {d50} ms: {j}");
    // The words before it.
    let summary = stdout.lines().find(|l| l.starts_with("summary:")).unwrap_or_else(|| panic!("no summary line: {stdout}"));
    assert!(summary.contains(&format!("received {} parts", num("parts"))), "{summary}");
    assert!(
        summary.contains(&format!("{} part requests for {} distinct parts", num("upstream_part_requests"), num("distinct_parts"))),
        "{summary}"
    );
    assert!(stdout.contains("LL-HLS"), "{stdout}");
}
