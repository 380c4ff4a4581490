//! Real-socket pieces shared by the steering tests (`instructor.rs`, `alto.rs`): a node driven
//! by the mio driver on its own thread, the synthetic origin, and small helpers. Loopback only;
//! every node is stopped and joined when its handle drops.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use listo::driver::{Driver, DriverConfig, DriverCounters, Listener, StopHandle};
use listo::origin::{OriginConfig, OriginServer};
use listo::player::{http_request, HttpResponse};
use serde_json::Value;

/// 127.0.0.1, any port.
pub fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// A node with a viewer port and a control port, no channels, running on its own thread.
pub struct TestNode {
    pub viewers: SocketAddr,
    pub control: SocketAddr,
    stop: StopHandle,
    thread: Option<JoinHandle<io::Result<DriverCounters>>>,
}

impl TestNode {
    pub fn start() -> TestNode {
        let driver = Driver::bind(DriverConfig {
            listen: vec![lo()],
            control: Some(lo()),
            drain: Duration::from_millis(500),
            ..DriverConfig::default()
        })
        .expect("driver binds");
        let viewers = driver.local_addr(Listener::Viewers).expect("viewers");
        let control = driver.local_addr(Listener::Control).expect("control");
        let stop = driver.stop_handle();
        let thread = thread::Builder::new().name("node".into()).spawn(move || driver.run()).expect("spawn");
        TestNode { viewers, control, stop, thread: Some(thread) }
    }

    /// The node's instructed channels (its control port's `GET /v1/channels`).
    pub fn channels(&self) -> Vec<Value> {
        let r = http_request(self.control, "GET", "/v1/channels", &[]).expect("control GET");
        assert_eq!(r.status, 200);
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        v["channels"].as_array().cloned().unwrap_or_default()
    }

    /// One instructed channel by name.
    pub fn channel(&self, name: &str) -> Option<Value> {
        self.channels().into_iter().find(|c| c["channel"] == name)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The synthetic origin: 2 channels, a 6-segment window of `segment_secs` segments.
pub fn origin(segment_secs: u64) -> OriginServer {
    OriginServer::start(lo(), OriginConfig { channels: 2, segment_secs, window: 6, ..OriginConfig::default() }).expect("origin")
}

/// An address nobody listens on.
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind(lo()).expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

/// The node and path a 302 points at.
pub fn location(r: &HttpResponse) -> (SocketAddr, String) {
    assert_eq!(r.status, 302, "{:?}", String::from_utf8_lossy(&r.body));
    let loc = r.header("location").expect("Location");
    let rest = loc.strip_prefix("http://").expect("http URL");
    let slash = rest.find('/').expect("path");
    (rest[..slash].parse().expect("host:port"), rest[slash..].to_string())
}

/// Waits (bounded by `limit`) until `f` holds; panics naming `what` otherwise.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
