//! The admin port's `/metrics` is valid Prometheus text exposition, checked by `promtool` when
//! it is installed (`.ci/run` installs it), and by shape otherwise.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use listo::driver::{Driver, DriverConfig, Listener};
use listo::Instruction;

/// One request with an empty body on a fresh connection; the whole answer as text.
fn request(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn get(addr: SocketAddr, path: &str) -> String {
    request(addr, "GET", path)
}

#[test]
fn metrics_are_valid_prometheus_text() {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let cfg = DriverConfig {
        listen: vec![loopback],
        admin: Some(loopback),
        instructions: vec![
            Instruction::new("ch1", "/live/ch1/", "127.0.0.1:9".parse().unwrap()),
            Instruction::new("ch\"2", "/live/ch2/", "127.0.0.1:9".parse().unwrap()),
        ]
        .into_iter()
        .filter(|i| i.validate().is_ok())
        .collect(),
        ..DriverConfig::default()
    };
    let driver = Driver::bind(cfg).unwrap();
    let admin = driver.local_addr(Listener::Admin).unwrap();
    let viewers = driver.local_addr(Listener::Viewers).unwrap();
    let stop = driver.stop_handle();
    let t = thread::spawn(move || driver.run());
    // One request that fails upstream (port 9 refuses) and one 404, so counters move.
    let r = get(viewers, "/live/ch1/seg_1.ts");
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");
    let r = get(viewers, "/nowhere");
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    let resp = get(admin, "/metrics");
    stop.stop();
    t.join().unwrap().unwrap();

    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    assert!(body.contains("# TYPE listo_requests_total counter"));
    assert!(body.contains("listo_requests_total{channel=\"ch1\"} 1"), "{body}");
    assert!(body.contains("listo_upstream_failures_total{channel=\"ch1\"} 1"), "{body}");
    assert!(body.contains("listo_error_responses_total{status=\"404\"} 1"), "{body}");
    // Errors by kind and by channel, per-rendition counters and the latency histogram.
    assert!(body.contains("listo_upstream_errors_total{channel=\"ch1\",kind=\"connect\"} 1"), "{body}");
    assert!(body.contains("listo_upstream_errors_total{channel=\"ch1\",kind=\"timeout\"} 0"), "{body}");
    assert!(body.contains("listo_channel_error_responses_total{channel=\"ch1\",status=\"502\"} 1"), "{body}");
    assert!(body.contains("listo_rendition_requests_total{channel=\"ch1\",rendition=\"/live/ch1/\"} 1"), "{body}");
    assert!(body.contains("# TYPE listo_upstream_latency_seconds histogram"), "{body}");
    assert!(body.contains("listo_upstream_latency_seconds_bucket{channel=\"ch1\",le=\"+Inf\"} 0"), "{body}");
    assert!(body.contains("listo_upstream_latency_seconds_count{channel=\"ch1\"} 0"), "{body}");
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("listo_"), "{line}");
        value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
    }
    match Command::new("promtool").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => {
            let mut child = Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        _ => eprintln!("note: promtool not installed; checked the exposition shape only"),
    }
}

fn post(addr: SocketAddr, path: &str) -> String {
    request(addr, "POST", path)
}

#[test]
fn admin_drain_stops_new_viewers_and_events_are_listed_since_a_number() {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let cfg = DriverConfig {
        listen: vec![loopback],
        admin: Some(loopback),
        instructions: vec![Instruction::new("ch1", "/live/ch1/", "127.0.0.1:9".parse().unwrap())],
        ..DriverConfig::default()
    };
    let driver = Driver::bind(cfg).unwrap();
    let admin = driver.local_addr(Listener::Admin).unwrap();
    let viewers = driver.local_addr(Listener::Viewers).unwrap();
    let stop = driver.stop_handle();
    let t = thread::spawn(move || driver.run());
    let r = get(viewers, "/nowhere");
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    let events = get(admin, "/v1/events?since=0");
    let body: serde_json::Value = serde_json::from_str(events.split_once("\r\n\r\n").unwrap().1).unwrap();
    let kinds: Vec<&str> = body["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"channel_instructed") && kinds.contains(&"request_rejected"), "{kinds:?}");
    let next = body["next"].as_u64().unwrap();
    let r = post(admin, "/v1/drain");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // Draining: the viewer port no longer accepts (refused, or accepted by nobody and reset).
    thread::sleep(Duration::from_millis(100));
    let refused = match TcpStream::connect(viewers) {
        Err(_) => true,
        Ok(mut s) => {
            s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let _ = write!(s, "GET /live/ch1/a.ts HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut buf = [0u8; 16];
            !matches!(s.read(&mut buf), Ok(n) if n > 0)
        }
    };
    assert!(refused, "no new viewer is served while draining");
    let later = get(admin, &format!("/v1/events?since={}", next - 1));
    assert!(later.contains("\"node_draining\""), "{later}");
    assert!(get(admin, "/v1/stats").contains("\"draining\":true"));
    stop.stop();
    t.join().unwrap().unwrap();
}
