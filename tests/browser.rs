//! A real browser player through `listo node`: headless Chromium runs hls.js (fetched from npm at
//! test time, never part of the repository) on a page served from one port, and plays live HLS
//! from `listo node` processes on other ports, so every playlist and segment request is
//! cross-origin and the node's CORS handling is what lets the browser read it.
//!
//! Upstreams: `listo origin` (real MPEG-TS, H.264 Constrained Baseline + AAC-LC, with its own
//! `Access-Control-Allow-Origin: *`) and, when ffmpeg is installed, a real encoder's live output
//! (`ffmpeg -re … -f hls`) served by this test's plain static server (no CORS headers at all).
//! The streams, all in one page:
//!
//! | stream            | node flags                 | upstream | expected                          |
//! |-------------------|----------------------------|----------|-----------------------------------|
//! | origin-passthru   | (no --cors)                | origin   | plays: the origin's CORS passes   |
//! | origin-cors       | --cors '*'                 | origin   | plays (no doubled CORS header)    |
//! | ffmpeg-cors       | --cors '*'                 | ffmpeg   | plays: the node adds CORS         |
//! | ffmpeg-cors-page  | --cors http://<page host>  | ffmpeg   | plays                             |
//! | ffmpeg-preflight  | --cors '*'                 | ffmpeg   | plays with a custom request header (a CORS preflight before every new URL) |
//! | ffmpeg-no-cors    | (no --cors)                | ffmpeg   | fails with a network error: proves the page really is cross-origin |
//! | ffmpeg-dash       | --cors '*'                 | ffmpeg DASH (fMP4) | plays with dash.js      |
//!
//! "Plays" means: no fatal player error, no media element error, at least 3 media segments loaded
//! (hls.js FRAG_LOADED / dash.js FRAGMENT_LOADING_COMPLETED events), at least 50 frames decoded,
//! and `currentTime` advanced by at least 4 s in 10 s of wall-clock play.
//!
//! Needs `chromium` (or `LISTO_CHROMIUM=/path`) and hls.js (`LISTO_HLSJS=/path/to/hls.min.js`, or
//! `npm` to fetch it into `<target>/browser-deps/`); without them it prints a skip note. dash.js
//! (`LISTO_DASHJS`, or npm) is optional. Chromium runs with every host name but 127.0.0.1 mapped
//! to "not found", so nothing leaves loopback. Every wait is bounded and every child (Chromium's
//! whole process group) is ended by a Drop guard.
#![cfg(feature = "driver")]

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

const LISTO: &str = env!("CARGO_BIN_EXE_listo");
/// The hls.js release the test runs (npm package `hls.js`, file `dist/hls.min.js`).
const HLSJS_VERSION: &str = "1.7.4";
/// The dash.js release for the DASH stream (npm package `dashjs`); optional: without it the DASH
/// stream is left out with a note.
const DASHJS_VERSION: &str = "5.2.1";
/// Wall-clock seconds the page plays before it reports.
const PLAY_SECS: u64 = 10;
/// Least `currentTime` advance (media seconds) a playing stream must show after `PLAY_SECS`.
const MIN_ADVANCE_S: f64 = 4.0;

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// A child process that is ended when dropped (test failure included). With `group`, the child
/// leads its own process group and the whole group is signalled (Chromium's helpers).
struct Proc {
    name: &'static str,
    child: Option<Child>,
    group: bool,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        let pid = c.id() as libc::pid_t;
        if self.group {
            // SAFETY: signals only the process group this test created for this child.
            unsafe { libc::kill(-pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: as above; helpers that outlived the leader are ended too.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        } else if matches!(c.try_wait(), Ok(None)) {
            let _ = c.kill();
        }
        let _ = c.wait();
        if !self.name.is_empty() {
            eprintln!("[browser test] {} (pid {pid}) ended", self.name);
        }
    }
}

/// A running `listo` subcommand: its bound address (from its first stderr line) and the last
/// lines it wrote to stderr (drained by a thread so it never blocks on a full pipe).
struct Listo {
    /// Held for its Drop (ends the process).
    _proc: Proc,
    addr: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Listo {
    fn start(name: &'static str, args: &[&str]) -> Listo {
        let child = Command::new(LISTO)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn listo {args:?}: {e}"));
        let mut proc = Proc { name, child: Some(child), group: false };
        let stderr = proc.child.as_mut().and_then(|c| c.stderr.take()).expect("stderr");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = Arc::clone(&log);
        thread::spawn(move || {
            let mut first = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(tx) = first.take() {
                    let _ = tx.send(line.clone());
                }
                let mut l = log2.lock().unwrap();
                l.push_back(line);
                if l.len() > 40 {
                    l.pop_front();
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("listo {args:?} printed no start line within 20 s (exit: {:?})", proc.exited()));
        let addr = bound_addr(&line).unwrap_or_else(|| panic!("no address in listo's start line: {line}"));
        eprintln!("[browser test] {name}: {line}");
        Listo { _proc: proc, addr, log }
    }

    fn tail(&self) -> String {
        self.log.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// The first `IP:PORT` after " on " in a `listo origin` / `listo node` start line.
fn bound_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(" on ")? + 4..];
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')).unwrap_or(rest.len());
    rest[..end].trim_end_matches(':').parse().ok()
}

/// `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LISTO_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"].iter().find_map(|n| on_path(n))
}

/// The target directory (…/target), from the path of the `listo` binary cargo built.
fn target_dir() -> PathBuf {
    let exe = Path::new(LISTO);
    exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("target"))
}

/// One file of an npm package: `$env_var` if set, else `<target>/browser-deps/PACKAGE-VERSION/package/FILE`,
/// fetched there with `npm pack` the first time (the registry's tarball, integrity-checked by npm).
fn npm_file(env_var: &str, package: &str, version: &str, file: &str) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(format!("{env_var}={} is not a file", p.display())) };
    }
    let dir = target_dir().join("browser-deps").join(format!("{package}-{version}"));
    let member = format!("package/{file}");
    let path = dir.join(&member);
    if path.is_file() {
        return Ok(path);
    }
    let npm = on_path("npm").ok_or("npm is not installed")?;
    let stage = dir.with_extension(format!("partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(&stage).map_err(|e| format!("mkdir {}: {e}", stage.display()))?;
    let spec = format!("{package}@{version}");
    run_bounded(Command::new(npm).args(["pack", &spec, "--silent"]).current_dir(&stage), Duration::from_secs(120))
        .map_err(|e| format!("npm pack {spec}: {e}"))?;
    let tgz = format!("{package}-{version}.tgz");
    run_bounded(Command::new("tar").args(["xzf", &tgz, &member]).current_dir(&stage), Duration::from_secs(60))
        .map_err(|e| format!("tar xzf {tgz} {member}: {e}"))?;
    let _ = fs::remove_file(stage.join(&tgz));
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&stage, &dir).map_err(|e| format!("rename {}: {e}", stage.display()))?;
    if path.is_file() {
        eprintln!("[browser test] fetched {spec} into {}", dir.display());
        Ok(path)
    } else {
        Err(format!("{} missing after npm pack", path.display()))
    }
}

/// Runs a command to completion within `limit` (killed otherwise); Err with its stderr on failure.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<(), String> {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().map_err(|e| e.to_string())?;
    let mut p = Proc { name: "", child: Some(child), group: false };
    let mut err = p.child.as_mut().and_then(|c| c.stderr.take()).expect("stderr");
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = p.exited() {
            break s;
        }
        if Instant::now() > deadline {
            drop(p);
            return Err(format!("did not finish within {limit:?}"));
        }
        thread::sleep(Duration::from_millis(50));
    };
    let err = reader.join().unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(format!("{status}: {}", err.trim()))
    }
}

/// A scratch directory under the target dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let p = target_dir().join("browser-tmp").join(format!("{}-{nanos}", std::process::id()));
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// The page's static server (also the "any static web server" for ffmpeg's HLS output)
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Posted {
    progress: Option<String>,
    result: Option<String>,
}

/// Serves `/player.html`, `/hls.min.js`, `/dash.all.min.js`, ffmpeg's output (`media_dir`'s
/// `enc/` and `dash/` folders under `/enc/` and `/dash/`, as a plain web server would: Content-Type
/// by extension, no CORS headers), and takes the page's POSTs to `/progress` and `/result`. One
/// request per connection.
struct StaticServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    posted: Arc<Mutex<Posted>>,
    thread: Option<JoinHandle<()>>,
}

struct Files {
    page: Vec<u8>,
    hlsjs: Vec<u8>,
    dashjs: Option<Vec<u8>>,
    media_dir: PathBuf,
}

impl StaticServer {
    fn start(files: Files) -> StaticServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind static server");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let posted = Arc::new(Mutex::new(Posted::default()));
        let files = Arc::new(files);
        let (stop2, posted2) = (Arc::clone(&stop), Arc::clone(&posted));
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (files, posted) = (Arc::clone(&files), Arc::clone(&posted2));
                        thread::spawn(move || {
                            let _ = serve_one(s, &files, &posted);
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        StaticServer { addr, stop, posted, thread: Some(thread) }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(mut s: TcpStream, files: &Files, posted: &Mutex<Posted>) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (method, path, body_start, content_length) = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let cl = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (req.method.unwrap_or("").to_string(), req.path.unwrap_or("").to_string(), len, cl);
            }
            Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => continue,
            _ => return respond(&mut s, 400, "text/plain", b"bad request"),
        }
    };
    if content_length > 1 << 20 {
        return respond(&mut s, 413, "text/plain", b"too large");
    }
    while buf.len() < body_start + content_length {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[body_start..body_start + content_length];
    let path_only = path.split('?').next().unwrap_or("");
    match (method.as_str(), path_only) {
        ("POST", "/progress" | "/result") => {
            let text = String::from_utf8_lossy(body).into_owned();
            let mut p = posted.lock().unwrap();
            if path_only == "/result" {
                p.result = Some(text);
            } else {
                p.progress = Some(text);
            }
            drop(p);
            respond(&mut s, 204, "text/plain", b"")
        }
        ("GET", "/player.html") => respond(&mut s, 200, "text/html; charset=utf-8", &files.page),
        ("GET", "/hls.min.js") => respond(&mut s, 200, "text/javascript", &files.hlsjs),
        ("GET", "/dash.all.min.js") if files.dashjs.is_some() => {
            respond(&mut s, 200, "text/javascript", files.dashjs.as_deref().unwrap_or_default())
        }
        ("GET" | "HEAD", p) if p.starts_with("/enc/") || p.starts_with("/dash/") => {
            let (folder, name) = p[1..].split_once('/').unwrap_or_default();
            let plain = !name.is_empty() && !name.starts_with('.') && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            let ctype = match name.rsplit('.').next() {
                Some("m3u8") => "application/vnd.apple.mpegurl",
                Some("ts") => "video/mp2t",
                Some("mpd") => "application/dash+xml",
                Some("m4s") => "video/iso.segment",
                _ => "application/octet-stream",
            };
            match fs::read(files.media_dir.join(folder).join(name)) {
                Ok(bytes) if plain => {
                    let bytes = if method == "HEAD" { Vec::new() } else { bytes };
                    respond(&mut s, 200, ctype, &bytes)
                }
                _ => respond(&mut s, 404, "text/plain", b"not found"),
            }
        }
        _ => respond(&mut s, 404, "text/plain", b"not found"),
    }
}

fn respond(s: &mut TcpStream, status: u16, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        413 => "Payload Too Large",
        _ => "Not Found",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

/// ffmpeg's live output in real time (a test pattern and a tone, H.264 baseline + AAC, 1 s
/// segments): HLS into `media_dir/enc/`, and with `dash` also DASH (fMP4) into `media_dir/dash/`.
fn start_ffmpeg(media_dir: &Path, log: &Path, dash: bool) -> Proc {
    let log = fs::File::create(log).expect("ffmpeg log");
    #[rustfmt::skip]
    let encode = [
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-profile:v", "baseline",
        "-pix_fmt", "yuv420p", "-g", "25", "-keyint_min", "25", "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", "64k", "-ac", "1",
    ];
    #[rustfmt::skip]
    let mut args = vec![
        "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
        "-f", "lavfi", "-i", "testsrc=size=320x180:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
    ];
    args.extend(encode);
    #[rustfmt::skip]
    args.extend([
        "-f", "hls", "-hls_time", "1", "-hls_list_size", "6", "-hls_flags", "delete_segments+temp_file",
        "enc/index.m3u8",
    ]);
    if dash {
        args.extend(["-map", "0:v", "-map", "1:a"]);
        args.extend(encode);
        #[rustfmt::skip]
        args.extend([
            "-f", "dash", "-seg_duration", "1", "-window_size", "6", "-extra_window_size", "4",
            "-use_template", "1", "-use_timeline", "1",
            "dash/manifest.mpd",
        ]);
    }
    let child = Command::new("ffmpeg")
        .args(args)
        .current_dir(media_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn ffmpeg");
    Proc { name: "ffmpeg", child: Some(child), group: false }
}

/// Whether ffmpeg's output has at least 3 segments listed (HLS) or written (DASH).
fn enough_segments(media_dir: &Path, dash: bool) -> bool {
    let hls = fs::read_to_string(media_dir.join("enc/index.m3u8")).unwrap_or_default().matches("#EXTINF").count() >= 3;
    let dash_ok = !dash
        || (media_dir.join("dash/manifest.mpd").is_file()
            && fs::read_dir(media_dir.join("dash")).map_or(0, |d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("chunk-stream0-") && n.ends_with(".m4s")))
                    .count()
            }) >= 3);
    hls && dash_ok
}

/// One stream the page plays, how (`mode`: "" for hls.js, "header" for hls.js with a custom
/// request header, "dash" for dash.js), and whether it must play.
struct Stream {
    name: &'static str,
    url: String,
    mode: &'static str,
    must_play: bool,
}

impl Stream {
    fn new(name: &'static str, url: String, mode: &'static str, must_play: bool) -> Stream {
        Stream { name, url, mode, must_play }
    }
}

fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(-1.0)
}

#[test]
fn hls_js_in_chromium_plays_live_streams_through_the_node() {
    let t0 = Instant::now();
    let Some(chrome) = chromium() else {
        eprintln!("note: chromium not installed (apt-get install chromium, or LISTO_CHROMIUM=/path); browser test skipped");
        return;
    };
    let hls_path = match npm_file("LISTO_HLSJS", "hls.js", HLSJS_VERSION, "dist/hls.min.js") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("note: hls.js not available ({e}); set LISTO_HLSJS=/path/to/hls.min.js or install npm; browser test skipped");
            return;
        }
    };
    let have_ffmpeg = on_path("ffmpeg").is_some();
    if !have_ffmpeg {
        eprintln!("note: ffmpeg not installed: only the listo origin streams are played");
    }
    let dashjs = if have_ffmpeg {
        match npm_file("LISTO_DASHJS", "dashjs", DASHJS_VERSION, "dist/modern/umd/dash.all.min.js") {
            Ok(p) => Some(fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))),
            Err(e) => {
                eprintln!("note: dash.js not available ({e}): the DASH stream is left out");
                None
            }
        }
    } else {
        None
    };

    let scratch = Scratch::new();
    let media_dir = scratch.0.join("media");
    for d in ["enc", "dash"] {
        fs::create_dir_all(media_dir.join(d)).expect("mkdir media");
    }
    let page = fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/player.html")).expect("tests/browser/player.html");
    let hlsjs = fs::read(&hls_path).unwrap_or_else(|e| panic!("read {}: {e}", hls_path.display()));
    let dash = dashjs.is_some();
    let web = StaticServer::start(Files { page, hlsjs, dashjs, media_dir: media_dir.clone() });
    let page_origin = format!("http://{}", web.addr);

    let ffmpeg_log = scratch.0.join("ffmpeg.log");
    let mut ffmpeg = have_ffmpeg.then(|| start_ffmpeg(&media_dir, &ffmpeg_log, dash));
    let origin = Listo::start("origin", &["origin", "--listen", "127.0.0.1:0"]);
    let ch0 = format!("ch0=/live/ch0/@{}", origin.addr);
    let enc = format!("enc=/enc/@{}", web.addr);
    let dash_ch = format!("dash=/dash/@{}", web.addr);
    // passthru: no --cors (the origin's own CORS header must pass; ffmpeg's plain server has none).
    let passthru = Listo::start("node passthru", &["node", "--listen", "127.0.0.1:0", "--channel", &ch0, "--channel", &enc]);
    let star = Listo::start(
        "node cors=*",
        &["node", "--listen", "127.0.0.1:0", "--cors", "*", "--channel", &ch0, "--channel", &enc, "--channel", &dash_ch],
    );
    let exact = Listo::start("node cors=page", &["node", "--listen", "127.0.0.1:0", "--cors", &page_origin, "--channel", &enc]);

    let mut streams = vec![
        Stream::new("origin-passthru", format!("http://{}/live/ch0/master.m3u8", passthru.addr), "", true),
        Stream::new("origin-cors", format!("http://{}/live/ch0/master.m3u8", star.addr), "", true),
    ];
    if ffmpeg.is_some() {
        streams.push(Stream::new("ffmpeg-cors", format!("http://{}/enc/index.m3u8", star.addr), "", true));
        streams.push(Stream::new("ffmpeg-cors-page", format!("http://{}/enc/index.m3u8", exact.addr), "", true));
        streams.push(Stream::new("ffmpeg-preflight", format!("http://{}/enc/index.m3u8", star.addr), "header", true));
        streams.push(Stream::new("ffmpeg-no-cors", format!("http://{}/enc/index.m3u8", passthru.addr), "", false));
    }
    if ffmpeg.is_some() && dash {
        streams.push(Stream::new("ffmpeg-dash", format!("http://{}/dash/manifest.mpd", star.addr), "dash", true));
    }

    // ffmpeg's output needs a few segments before a live player starts (bounded wait).
    if let Some(ff) = ffmpeg.as_mut() {
        let deadline = Instant::now() + Duration::from_secs(20);
        let ff_log = || fs::read_to_string(&ffmpeg_log).unwrap_or_default();
        while !enough_segments(&media_dir, dash) {
            if let Some(status) = ff.exited() {
                panic!("ffmpeg exited ({status}): {}", ff_log());
            }
            assert!(Instant::now() < deadline, "ffmpeg wrote no 3 segments within 20 s: {}", ff_log());
            thread::sleep(Duration::from_millis(100));
        }
    }
    run_page(&chrome, &scratch.0, &web, &streams, &[&origin, &passthru, &star, &exact], t0);
    eprintln!("[browser test] done in {:.1} s", t0.elapsed().as_secs_f64());
}

fn run_page(chrome: &Path, scratch: &Path, web: &StaticServer, streams: &[Stream], listos: &[&Listo], t0: Instant) {
    let mut query = format!("secs={PLAY_SECS}");
    for s in streams {
        let spec = format!("{}|{}|{}", s.name, s.url, s.mode);
        query.push_str("&s=");
        query.push_str(&percent_encode(&spec));
    }
    let url = format!("http://{}/player.html?{query}", web.addr);
    let profile = scratch.join("profile");
    let log = fs::File::create(scratch.join("chromium.log")).expect("chromium log");
    use std::os::unix::process::CommandExt;
    let child = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--disable-features=OptimizationHints,OptimizationGuideModelDownloading,Translate,MediaRouter,DialMediaRouteProvider,AutofillServerCommunication,SpellcheckService",
            "--metrics-recording-only",
            "--no-pings",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            // Loopback only: no host name resolves, so Chromium's own background requests (sign-in,
            // component updates, dictionaries) fail before any DNS query or connection is made.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", chrome.display()));
    let mut browser = Proc { name: "chromium", child: Some(child), group: true };
    eprintln!("[browser test] chromium pid {} opened {url}", browser.pid());

    let deadline = Instant::now() + Duration::from_secs(PLAY_SECS + 40);
    let result = loop {
        if let Some(r) = web.posted.lock().unwrap().result.clone() {
            break r;
        }
        let exited = browser.exited();
        if exited.is_some() || Instant::now() > deadline {
            let progress = web.posted.lock().unwrap().progress.clone();
            let chrome_log = fs::read_to_string(scratch.join("chromium.log")).unwrap_or_default();
            let chrome_tail: Vec<&str> = chrome_log.lines().filter(|l| !l.contains("dbus")).collect();
            let chrome_tail = chrome_tail[chrome_tail.len().saturating_sub(30)..].join("\n");
            drop(browser);
            panic!(
                "the page posted no result ({}); last progress: {progress:?}\nchromium stderr (tail):\n{chrome_tail}\nnodes:\n{}",
                if exited.is_some() { format!("chromium exited: {exited:?}") } else { format!("not within {} s", PLAY_SECS + 40) },
                listos.iter().map(|l| l.tail()).collect::<Vec<_>>().join("\n---\n")
            );
        }
        thread::sleep(Duration::from_millis(100));
    };
    drop(browser);

    let r: Value = serde_json::from_str(&result).unwrap_or_else(|e| panic!("result is not JSON ({e}): {result}"));
    eprintln!(
        "[browser test] hls.js {}, dash.js {} in {} (MSE avc1 {}, mp4a {}), {:.1} s after start",
        r["hls_version"],
        r["dashjs_version"],
        r["user_agent"],
        r["mse_avc1"],
        r["mse_mp4a"],
        t0.elapsed().as_secs_f64()
    );
    let got = r["streams"].as_array().cloned().unwrap_or_default();
    let mut failures = Vec::new();
    for s in streams {
        let Some(v) = got.iter().find(|v| v["name"] == s.name) else {
            failures.push(format!("{}: not in the page's report", s.name));
            continue;
        };
        let (adv, frags, frames) = (num(v, "advanced"), num(v, "frags_loaded"), num(v, "decoded_frames"));
        eprintln!(
            "[browser test] {:<17} currentTime {:>6.2} (advanced {:>5.2} s), {:>2} fragments loaded, {:>3} frames decoded, {}x{}, fatal: {}, errors: {}",
            s.name,
            num(v, "current_time"),
            adv,
            frags,
            frames,
            v["video_width"],
            v["video_height"],
            v["fatal"],
            v["errors"]
        );
        if s.must_play {
            let mut why = Vec::new();
            if !v["fatal"].is_null() {
                why.push(format!("fatal hls.js error {}", v["fatal"]));
            }
            if !v["media_error"].is_null() {
                why.push(format!("media element error {}", v["media_error"]));
            }
            if adv < MIN_ADVANCE_S {
                why.push(format!("currentTime advanced {adv:.2} s < {MIN_ADVANCE_S} s in {PLAY_SECS} s"));
            }
            if frags < 3.0 {
                why.push(format!("{frags} fragments loaded (< 3)"));
            }
            if frames < 50.0 {
                why.push(format!("{frames} frames decoded (< 50)"));
            }
            if !why.is_empty() {
                failures.push(format!("{} ({}) did not play: {}; report: {v}", s.name, s.url, why.join("; ")));
            }
        } else {
            // The control: a node that adds no CORS header for an upstream that sends none must
            // be refused by the browser, or the page is not really cross-origin.
            let fatal = v["fatal"].as_str().unwrap_or("");
            if !fatal.contains("networkError") || frags > 0.0 || frames > 0.0 {
                failures.push(format!("{} ({}) should have failed with a CORS network error: {v}", s.name, s.url));
            }
        }
    }
    assert!(failures.is_empty(), "browser playback through the node failed:\n{}", failures.join("\n"));
}

/// Percent-encodes everything but unreserved characters (for one query value).
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
