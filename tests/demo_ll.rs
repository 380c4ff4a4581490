//! `listo demo --ll` (issue 9): an LL-HLS origin, a node and low-latency players in one
//! process. The JSON last line carries part TTFB percentiles, and the origin served each part
//! once for all the viewers. The child runs under a deadline and is killed (by its own pid) if
//! it overstays.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const LISTO: &str = env!("CARGO_BIN_EXE_listo");

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

#[test]
fn demo_ll_reports_part_ttfb_and_one_upstream_request_per_part() {
    let limit = Duration::from_secs(40);
    let args = ["demo", "--ll", "--viewers", "20", "--seconds", "5"];
    let child =
        Command::new(LISTO).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn listo");
    let mut reaper = Reaper(Some(child));
    let child = reaper.0.as_mut().expect("child");
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
        thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (out_t.join().expect("stdout reader"), err_t.join().expect("stderr reader"));
    assert!(status.success(), "demo --ll failed: {stderr}");
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
