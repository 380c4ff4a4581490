//! `control_client`: drives a running node from outside, as an instructor / CDN controller
//! (control port, LA/LC) and an OSS (admin port, LR) do. Plain HTTP/1.1 over `std::net`, so
//! the requests printed here are all a script, a controller or `curl` needs.
//!
//! 1. `POST /v1/channels` on the control port with the channel as JSON:
//!    `{"channel":"ch0","path_prefix":"/live/ch0/","endpoints":["127.0.0.1:18080"]}`
//!    (optional `"host"`, `"prefetch":[paths]`, `"ttl_s"`) → `201 {"ok":true,...}`, or
//!    `400 {"error":"..."}` naming the field at fault.
//! 2. `GET /v1/channels` → what the node is instructed with.
//! 3. With `--node ADDR`: plays viewer for `--requests N` requests through the node's viewer
//!    port (the channel's `index.m3u8`, then its newest segments).
//! 4. `GET /v1/stats` on the admin port → the counters as JSON; a one-line summary per channel
//!    is printed, then the JSON (`--seconds S` repeats the summary every second for S seconds).
//!
//! ```sh
//! cargo run -- origin --listen 127.0.0.1:18080 &
//! cargo run -- node --listen 127.0.0.1:8080 --control 127.0.0.1:8081 --admin 127.0.0.1:8082 &
//! cargo run --example control_client -- --control 127.0.0.1:8081 --admin 127.0.0.1:8082 \
//!     --channel ch0=/live/ch0/@127.0.0.1:18080 --node 127.0.0.1:8080 --requests 3
//! ```
//!
//! Flags: `--control ADDR` (default 127.0.0.1:8081), `--admin ADDR` (default 127.0.0.1:8082),
//! `--channel NAME=PREFIX@IP:PORT[,IP:PORT]` (default `ch0=/live/ch0/@127.0.0.1:18080`),
//! `--prefetch PATH` (repeatable), `--node ADDR`, `--requests N` (default 3 with `--node`),
//! `--seconds S`. Exits 1 when the node refuses a request, 2 on bad flags.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(5);

/// One request on a fresh connection (`Connection: close`), read to EOF: `(status, body)`.
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !body.is_empty() {
        req += &format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    }
    req += "\r\n";
    req += &body;
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{method} {path}: {why}"));
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no complete response head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status code"))?;
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body).ok_or_else(|| bad("malformed chunked body"))?;
    }
    Ok((status, body))
}

/// Decodes a complete chunked body.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_field = std::str::from_utf8(&b[..eol]).ok()?;
        let len = usize::from_str_radix(size_field.split(';').next()?.trim(), 16).ok()?;
        if len == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(eol + 2..eol + 2 + len)?);
        b = b.get(eol + 4 + len..)?;
    }
}

/// `NAME=PREFIX@IP:PORT[,IP:PORT]` → the JSON the control port takes.
fn channel_json(spec: &str, prefetch: &[String]) -> Result<Value, String> {
    let bad = |why: &str| format!("--channel '{spec}': {why} (expected NAME=PREFIX@IP:PORT[,IP:PORT])");
    let (name, rest) = spec.split_once('=').ok_or_else(|| bad("missing '='"))?;
    let (prefix, eps) = rest.rsplit_once('@').ok_or_else(|| bad("missing '@'"))?;
    let endpoints: Vec<&str> = eps.split(',').map(str::trim).collect();
    // The node validates everything else and says what is wrong; try a bad prefix to see.
    Ok(json!({ "channel": name, "path_prefix": prefix, "endpoints": endpoints, "prefetch": prefetch }))
}

/// Prints a JSON answer; `Err` with the node's `error` text when the status is not 2xx.
fn show(what: &str, (status, body): (u16, Vec<u8>)) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    println!("{what} → {status} {v}");
    if (200..300).contains(&status) {
        Ok(v)
    } else {
        Err(format!("{what} refused ({status}): {}", v["error"].as_str().unwrap_or("no reason given")))
    }
}

/// One line per channel: how requests were served and what it cost upstream.
fn print_summary(stats: &Value) {
    for c in stats["channels"].as_array().into_iter().flatten() {
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        println!(
            "channel {}: {} requests ({} hits, {} coalesced, {} misses), {} upstream requests, {} upstream bytes, {} downstream bytes",
            c["channel"].as_str().unwrap_or("?"),
            n("requests"),
            n("hits"),
            n("coalesced"),
            n("misses"),
            n("upstream_requests"),
            n("upstream_bytes"),
            n("downstream_bytes"),
        );
    }
}

/// The error for a port that does not answer, with what to check.
fn unreachable(port: &'static str, a: SocketAddr) -> impl Fn(io::Error) -> (u8, String) {
    move |e| (1, format!("cannot reach the {port} port at {a}: {e} (is `listo node --{port} {a}` running?)"))
}

/// Plays viewer: the channel's playlist, then its newest segments, `requests` in all.
fn watch(node: SocketAddr, prefix: &str, requests: u64) -> Result<(), String> {
    let playlist = format!("{prefix}index.m3u8");
    let get = |path: &str| http(node, "GET", path, None).map_err(|e| format!("cannot reach the node's viewer port {node}: {e}"));
    let (status, body) = get(&playlist)?;
    println!("GET {playlist} via {node} → {status}, {} bytes", body.len());
    if status != 200 {
        return Err(format!("GET {playlist} answered {status}: is the channel instructed and its origin up?"));
    }
    let text = String::from_utf8_lossy(&body);
    let uris: Vec<&str> = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for uri in uris.iter().rev().take(requests.saturating_sub(1) as usize) {
        let path = format!("{prefix}{uri}");
        let (status, body) = get(&path)?;
        println!("GET {path} via {node} → {status}, {} bytes", body.len());
    }
    Ok(())
}

fn run(argv: &[String]) -> Result<(), (u8, String)> {
    let usage = |e: String| (2, e);
    let addr = |flag: &str, v: &str| v.parse::<SocketAddr>().map_err(|_| usage(format!("{flag}: '{v}' is not an address like 127.0.0.1:8081")));
    let (mut control, mut admin) = (addr("", "127.0.0.1:8081")?, addr("", "127.0.0.1:8082")?);
    let (mut spec, mut prefetch, mut node, mut requests, mut seconds) =
        ("ch0=/live/ch0/@127.0.0.1:18080".to_string(), Vec::new(), None, 3, 0);
    for pair in argv.chunks(2) {
        let flag = pair[0].as_str();
        if !["--control", "--admin", "--channel", "--prefetch", "--node", "--requests", "--seconds"].contains(&flag) {
            return Err(usage(format!("unknown flag '{flag}'")));
        }
        let v = pair.get(1).ok_or_else(|| usage(format!("{flag} needs a value")))?;
        let num = || v.parse::<u64>().map_err(|_| usage(format!("{flag}: '{v}' is not a number")));
        match flag {
            "--control" => control = addr(flag, v)?,
            "--admin" => admin = addr(flag, v)?,
            "--channel" => spec = v.clone(),
            "--prefetch" => prefetch.push(v.clone()),
            "--node" => node = Some(addr(flag, v)?),
            "--requests" => requests = num()?,
            "--seconds" => seconds = num()?,
            _ => return Err(usage(format!("unknown flag '{flag}'"))),
        }
    }
    let ins = channel_json(&spec, &prefetch).map_err(usage)?;

    // 1. Instruct, 2. list.
    let answer = http(control, "POST", "/v1/channels", Some(&ins)).map_err(unreachable("control", control))?;
    show("POST /v1/channels", answer).map_err(|e| (1, e))?;
    let answer = http(control, "GET", "/v1/channels", None).map_err(unreachable("control", control))?;
    show("GET /v1/channels", answer).map_err(|e| (1, e))?;

    // 3. Optionally, be a viewer for a moment.
    if let Some(node) = node {
        watch(node, ins["path_prefix"].as_str().unwrap_or("/"), requests).map_err(|e| (1, e))?;
    }

    // 4. What the node counted.
    let stats = |quiet: bool| -> Result<Value, (u8, String)> {
        let (status, body) = http(admin, "GET", "/v1/stats", None).map_err(unreachable("admin", admin))?;
        if quiet {
            return serde_json::from_slice(&body).map_err(|e| (1, format!("/v1/stats is not JSON: {e}")));
        }
        show("GET /v1/stats", (status, body)).map_err(|e| (1, e))
    };
    print_summary(&stats(false)?);
    for _ in 0..seconds {
        std::thread::sleep(Duration::from_secs(1));
        print_summary(&stats(true)?);
    }
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match run(&argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, e)) => {
            eprintln!("control_client: {e}");
            if code == 2 {
                eprintln!("usage: control_client [--control ADDR] [--admin ADDR] [--channel NAME=PREFIX@IP:PORT] [--prefetch PATH]... [--node ADDR] [--requests N] [--seconds S]");
            }
            ExitCode::from(code)
        }
    }
}
