//! Every Rust example in `examples/` runs here, bounded, so none of them rots: each serves a
//! few viewer requests through a test [`OriginServer`], hands out segments byte-identical to
//! the origin's, costs one upstream request per distinct object (per worker for
//! `embed_threads`), and exits 0 on its own. Every child process runs under a deadline and is
//! killed (by its own pid) if it overstays. The newcomer errors of the examples (a bad flag, a
//! port in use, a refused instruction) are checked too.
//!
//! The example binaries sit next to the `listo` binary, in `target/<profile>/examples/`.
//! `cargo test` builds them; `cargo test --test examples` alone does not, so the first test
//! to need them runs `cargo build --examples` for the same profile (a no-op when up to date).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use listo::origin::{OriginConfig, OriginServer};
use listo::player::{http_get, resolve_uri, HttpConn};

const LISTO: &str = env!("CARGO_BIN_EXE_listo");
/// Longest any example may run before it is killed and the test fails.
const LIMIT: Duration = Duration::from_secs(30);
/// The origin's segment duration: playlists stay fresh for half of it (3 s), longer than a
/// test takes, so a second playlist fetch only comes with a slow machine (and is allowed then).
const SEGMENT_SECS: u64 = 6;

/// Builds the examples once per test process, for the profile this test was built with.
fn build_examples() -> Result<(), String> {
    let profile_dir = Path::new(LISTO).parent().ok_or("listo binary has no directory")?;
    let target_dir = profile_dir.parent().ok_or("profile directory has no parent")?;
    if !target_dir.join("CACHEDIR.TAG").exists() {
        // A `--target TRIPLE` layout: rely on `cargo test` having built the examples.
        return Ok(());
    }
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(p) => p.to_string(),
        None => return Err("odd profile directory".into()),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        .args(["build", "--examples", "--profile", &profile, "--target-dir"])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            return if s.success() { Ok(()) } else { Err(format!("cargo build --examples: {s}")) };
        }
        if t.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("cargo build --examples took over 10 minutes".into());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The path of example `name`'s binary, built if needed.
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(build_examples);
    let path = Path::new(LISTO).parent().expect("profile dir").join("examples").join(name);
    assert!(path.exists(), "{} is missing ({built:?}); run `cargo build --examples`", path.display());
    path
}

/// A child process whose stdout and stderr lines are collected by threads.
struct Running {
    what: String,
    child: Option<Child>,
    stdout: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn spawn(program: &Path, args: &[&str]) -> Running {
        let what = format!("{} {}", program.file_name().and_then(|n| n.to_str()).unwrap_or("?"), args.join(" "));
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (err, sink) = (child.stderr.take().expect("stderr"), stderr.clone());
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().expect("stderr lines").push(line);
            }
        });
        Running { what, child: Some(child), stdout, seen: Vec::new(), stderr }
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lines").clone()
    }

    /// Waits for a stdout line starting with `prefix`; returns the rest of it.
    fn line_after(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.stdout.recv_timeout(left).unwrap_or_else(|_| {
                panic!("{}: no line starting {prefix:?}; stdout {:?}, stderr {:?}", self.what, self.seen, self.stderr())
            });
            self.seen.push(line.clone());
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_string();
            }
        }
    }

    /// Waits for a stderr line starting with `prefix` (e.g. the `listo node` start line).
    fn stderr_line_after(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self.stderr().iter().find_map(|l| l.strip_prefix(prefix)) {
                return l.to_string();
            }
            assert!(Instant::now() < deadline, "{}: no stderr line starting {prefix:?}: {:?}", self.what, self.stderr());
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the exit (killing the child after `limit`): status, stdout and stderr lines.
    fn finish(mut self, limit: Duration) -> (ExitStatus, Vec<String>, Vec<String>) {
        let mut child = self.child.take().expect("child");
        let t = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if t.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} still running after {limit:?}; stdout {:?}, stderr {:?}", self.what, self.seen, self.stderr());
            }
            thread::sleep(Duration::from_millis(10));
        };
        // The reader threads end at EOF, right after the exit.
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(l) = self.stdout.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.seen.push(l);
        }
        thread::sleep(Duration::from_millis(20));
        (status, std::mem::take(&mut self.seen), self.stderr())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill(); // only this child, by its pid
            }
            let _ = c.wait();
        }
    }
}

fn origin() -> OriginServer {
    let cfg = OriginConfig { channels: 1, segment_secs: SEGMENT_SECS, ..OriginConfig::default() };
    OriginServer::start("127.0.0.1:0".parse().expect("addr"), cfg).expect("origin")
}

/// One viewer on one keep-alive connection: the playlist, then its `segments` newest
/// segments, each checked byte for byte against the origin. Returns the requests made.
fn view(node: SocketAddr, origin: &OriginConfig, who: usize, segments: usize) -> u64 {
    let playlist = "/live/ch0/index.m3u8";
    let ua = format!("test-viewer-{who}");
    let headers = [("User-Agent", ua.as_str())];
    let mut conn = HttpConn::new(node, Duration::from_secs(10));
    let r = conn.request("GET", playlist, &headers).unwrap_or_else(|e| panic!("viewer {who}: GET {playlist}: {e}"));
    assert_eq!(r.status, 200, "viewer {who}: {playlist}: {}", String::from_utf8_lossy(&r.body));
    let text = String::from_utf8(r.body).expect("playlist is text");
    let uris: Vec<&str> = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert!(uris.len() >= segments, "viewer {who}: playlist lists {uris:?}");
    for uri in &uris[uris.len() - segments..] {
        let path = resolve_uri(playlist, uri);
        let r = conn.request("GET", &path, &headers).unwrap_or_else(|e| panic!("viewer {who}: GET {path}: {e}"));
        assert_eq!(r.status, 200, "viewer {who}: {path}");
        let want = origin.expected_segment(&path).expect("a segment path");
        assert!(r.body == want, "viewer {who}: {path}: {} bytes, not the origin's {} bytes", r.body.len(), want.len());
    }
    1 + segments as u64
}

/// `viewers` viewers at once, each with its own connection.
fn view_all(node: SocketAddr, origin: &OriginConfig, viewers: usize, segments: usize) -> u64 {
    let handles: Vec<_> = (0..viewers)
        .map(|who| {
            let cfg = origin.clone();
            thread::spawn(move || view(node, &cfg, who, segments))
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("viewer thread")).sum()
}

/// Every segment was fetched from the origin at most `per_object` times (once per node), and
/// at least once; playlists likewise, plus one refresh per half target duration that passed.
fn assert_fetches(origin: &OriginServer, per_object: u64, exact: bool, elapsed: Duration) {
    let counts = origin.counts();
    let refreshes = elapsed.as_millis() as u64 / (SEGMENT_SECS * 1000 / 2);
    assert!(counts.segment_requests > 0 && counts.playlist_requests > 0, "{counts:?}");
    for (path, &n) in &counts.per_path {
        if path.ends_with(".ts") {
            assert!(n >= 1 && n <= per_object, "{path} fetched {n} times (at most {per_object}): {counts:?}");
            if exact {
                assert_eq!(n, per_object, "{path}: {counts:?}");
            }
        } else {
            assert!(path.ends_with(".m3u8"), "only playlists and segments go upstream: {counts:?}");
            assert!(n <= per_object * (1 + refreshes), "{path} fetched {n} times in {elapsed:?}: {counts:?}");
        }
    }
}

/// A bound listener and its address (drop the listener to get an address nobody listens on).
fn busy_port() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr").to_string();
    (l, a)
}

#[test]
fn embed_poll_serves_two_viewers_one_fetch_per_object_and_exits() {
    let t = Instant::now();
    let origin = origin();
    let channel = format!("ch0=/live/ch0/@{}", origin.local_addr());
    let (viewers, segments) = (2, 2);
    let requests = (viewers * (1 + segments)).to_string();
    let mut ex = Running::spawn(
        &example("embed_poll"),
        &["--listen", "127.0.0.1:0", "--channel", &channel, "--requests", &requests, "--seconds", "25"],
    );
    let node: SocketAddr = ex.line_after("listening on ").trim().parse().expect("listening on ADDR");
    assert_ne!(node.port(), 0);
    let made = view_all(node, origin.config(), viewers, segments);
    let (status, out, err) = ex.finish(LIMIT);
    assert!(status.success(), "embed_poll exit {status}; stdout {out:?}; stderr {err:?}");
    let summary = out.last().expect("a summary line");
    assert!(summary.starts_with(&format!("requests {made} ")), "summary: {summary}");
    assert!(err.iter().any(|l| l.contains("channel_instructed")), "events logged: {err:?}");
    assert_fetches(&origin, 1, true, t.elapsed());
    eprintln!("embed_poll: {made} requests in {:?}", t.elapsed());
    origin.shutdown();
}

#[test]
fn embed_threads_spreads_viewers_over_workers_logs_events_and_exits() {
    let t = Instant::now();
    let origin = origin();
    let channel = format!("ch0=/live/ch0/@{}", origin.local_addr());
    let (workers, viewers, segments) = (2u64, 3, 2);
    let requests = (viewers * (1 + segments)).to_string();
    let mut ex = Running::spawn(
        &example("embed_threads"),
        &["--workers", &workers.to_string(), "--listen", "127.0.0.1:0", "--channel", &channel, "--requests", &requests, "--seconds", "25"],
    );
    let line = ex.line_after("listening on ");
    let node: SocketAddr = line.split(' ').next().unwrap_or("").parse().expect("listening on ADDR");
    let made = view_all(node, origin.config(), viewers, segments);
    let (status, out, err) = ex.finish(LIMIT);
    assert!(status.success(), "embed_threads exit {status}; stdout {out:?}; stderr {err:?}");
    for w in 0..workers {
        assert!(out.iter().any(|l| l.starts_with(&format!("worker {w}: requests "))), "worker {w} summary: {out:?}");
        // Every node's events reach the logger thread.
        assert!(err.iter().any(|l| l.starts_with(&format!("worker {w}: event channel_instructed"))), "{err:?}");
    }
    let total = out.last().expect("a total line");
    let prefix = format!("total: requests {made}, upstream requests ");
    let upstream: u64 = total
        .strip_prefix(&prefix)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("total line {total:?} should start {prefix:?}"));
    assert_eq!(upstream, origin.counts().requests(), "the workers' upstream count is the origin's");
    // The workers share one store: each segment reaches the origin exactly once.
    assert_fetches(&origin, 1, true, t.elapsed());
    eprintln!("embed_threads: {made} requests, {upstream} upstream, in {:?}", t.elapsed());
    origin.shutdown();
}

#[test]
fn control_client_instructs_a_node_plays_through_it_and_reads_stats() {
    let t = Instant::now();
    let origin = origin();
    let node = Running::spawn(
        Path::new(LISTO),
        &["node", "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
    );
    // "listo node: viewers on A, control on B, admin on C; 0 channel(s)"
    let start = node.stderr_line_after("listo node: viewers on ");
    let addrs: Vec<&str> = start.split([',', ';']).map(|s| s.trim()).collect();
    let viewers = addrs[0].to_string();
    let control = addrs.iter().find_map(|s| s.strip_prefix("control on ")).expect("control address").to_string();
    let admin = addrs.iter().find_map(|s| s.strip_prefix("admin on ")).expect("admin address").to_string();
    let client = example("control_client");
    let channel = format!("ch0=/live/ch0/@{}", origin.local_addr());

    let run = Running::spawn(
        &client,
        &["--control", &control, "--admin", &admin, "--channel", &channel, "--node", &viewers, "--requests", "3"],
    );
    let (status, out, err) = run.finish(LIMIT);
    assert!(status.success(), "control_client exit {status}; stdout {out:?}; stderr {err:?}");
    let has = |s: &str| out.iter().any(|l| l.contains(s));
    assert!(has("POST /v1/channels → 201"), "{out:?}");
    assert!(has("GET /v1/channels → 200") && has("\"path_prefix\":\"/live/ch0/\""), "{out:?}");
    assert!(has("GET /v1/stats → 200"), "{out:?}");
    assert!(out.iter().any(|l| l.starts_with("channel ch0: 3 requests")), "{out:?}");

    // The segments it played are cached: fetching them again costs the origin nothing.
    let viewers: SocketAddr = viewers.parse().expect("viewer address");
    let played: Vec<String> = out.iter().filter_map(|l| l.strip_prefix("GET /live/ch0/v")).map(|l| format!("/live/ch0/v{}", l.split(' ').next().unwrap_or(""))).collect();
    assert_eq!(played.len(), 2, "two segments played: {out:?}");
    for path in &played {
        let (status, _, body) = http_get(viewers, path, &[]).expect("GET through the node");
        assert_eq!(status, 200);
        assert!(body == origin.config().expected_segment(path).expect("segment"), "{path}: the origin's bytes");
    }
    assert_fetches(&origin, 1, true, t.elapsed());

    // What a newcomer gets wrong: the node's reason comes back, exit 1.
    let bad = format!("ch1=live/ch1/@{}", origin.local_addr());
    let (status, _, err) = Running::spawn(&client, &["--control", &control, "--admin", &admin, "--channel", &bad]).finish(LIMIT);
    assert_eq!(status.code(), Some(1), "{err:?}");
    assert!(err.iter().any(|l| l.contains("path_prefix must start with '/'")), "{err:?}");
    let (_hold, taken) = busy_port();
    drop(_hold); // now nobody listens there
    let (status, _, err) = Running::spawn(&client, &["--control", &taken]).finish(LIMIT);
    assert_eq!(status.code(), Some(1), "{err:?}");
    assert!(err.iter().any(|l| l.contains(&format!("cannot reach the control port at {taken}"))), "{err:?}");

    drop(node); // killed by pid
    eprintln!("control_client: in {:?}", t.elapsed());
    origin.shutdown();
}

/// `soak` (issue 8's soak), short: viewers churn and a channel comes and goes over the control
/// port; once everyone left the node holds no viewer connection and no more objects than the live
/// windows need, and the process RSS did not grow past the bound. (Run it for minutes by hand:
/// `cargo run --release --example soak -- --seconds 300`.)
#[test]
fn soak_example_churns_viewers_and_channels_and_leaves_nothing_behind() {
    let (status, out, err) = Running::spawn(&example("soak"), &["--seconds", "12", "--viewers", "12", "--max-growth-mib", "64"]).finish(LIMIT);
    assert!(status.success(), "soak exit {status}; stdout {out:?}; stderr {err:?}");
    let json = out.iter().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("{out:?}"));
    let v: serde_json::Value = serde_json::from_str(json).expect("soak JSON");
    assert!(v["sessions"].as_u64().unwrap_or(0) >= 12, "viewers joined and left: {json}");
    assert!(v["segments"].as_u64().unwrap_or(0) > 0, "{json}");
    assert!(v["channel_cycles"].as_u64().unwrap_or(0) >= 1, "ch1 was instructed and withdrawn: {json}");
    assert_eq!(v["viewer_connections_after"], 0, "{json}");
    assert_eq!(v["ok"], true, "{json}");
}

/// `system` (issue 6's whole-system example) brings its own origin, nodes and mediator; its
/// summary says what the origin served: one request per distinct segment through the hierarchy.
#[test]
fn system_example_plays_through_the_hierarchy_with_one_origin_request_per_segment() {
    let t = Instant::now();
    let (status, out, err) = Running::spawn(&example("system"), &["--viewers", "2", "--seconds", "3"]).finish(LIMIT);
    assert!(status.success(), "system exit {status}; stdout {out:?}; stderr {err:?}");
    let received = out.iter().find_map(|l| l.strip_prefix("viewers received ")).unwrap_or_else(|| panic!("{out:?}"));
    let segments: u64 = received.split(' ').next().and_then(|n| n.parse().ok()).expect("a segment count");
    assert!(segments > 0 && received.contains("(0 errors"), "{received}");
    let origin = out.iter().find_map(|l| l.strip_prefix("origin: ")).unwrap_or_else(|| panic!("{out:?}"));
    let words: Vec<&str> = origin.split(' ').collect();
    let (requests, distinct): (u64, u64) = (words[0].parse().expect("requests"), words[4].parse().expect("distinct"));
    assert!(distinct > 0 && requests == distinct && origin.contains("(max 1 per segment)"), "{origin}");
    eprintln!("system: {segments} segments played in {:?}", t.elapsed());
}

#[test]
fn examples_say_what_was_wrong_with_their_flags() {
    let (_hold, taken) = busy_port();
    let cases: [(&str, Vec<&str>, &str); 6] = [
        ("embed_poll", vec!["--bogus", "1"], "unknown flag '--bogus'"),
        ("embed_poll", vec!["--bogus"], "unknown flag '--bogus'"),
        ("embed_poll", vec!["--listen", &taken], "cannot listen on"),
        ("embed_poll", vec!["--channel", "ch0=live/@127.0.0.1:1"], "path_prefix must start with '/'"),
        ("embed_threads", vec!["--workers", "many"], "--workers: 'many' is not a number"),
        ("control_client", vec!["--requests"], "--requests needs a value"),
    ];
    for (name, args, want) in cases {
        let (status, out, err) = Running::spawn(&example(name), &args).finish(LIMIT);
        assert_eq!(status.code(), Some(2), "{name} {args:?}: stdout {out:?} stderr {err:?}");
        assert!(err.first().is_some_and(|l| l.starts_with(&format!("{name}: ")) && l.contains(want)), "{name} {args:?}: {err:?}");
    }
}
