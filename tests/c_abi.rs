//! The C ABI (DESIGN §5), tested from the C side:
//! - `include/listo.h` is what cbindgen (the version pinned in Cargo.lock) generates today;
//! - the cdylib exports only `listo_*` symbols, and every function of the header;
//! - `listo.pc`'s `Libs.private` is what rustc says the staticlib needs;
//! - `examples/c/test_api.c` (C unit tests, written from the header alone) passes, under ASan
//!   where the compiler has it and under valgrind where it is installed;
//! - `examples/c/listo_host.c`, a C host with its own poll() loop, serves 100 concurrent viewers
//!   from a test origin with exactly one upstream request per segment, bodies byte-identical.
//!
//! The staticlib and cdylib are not built by `cargo test` (it builds the rlib only), so the
//! first test that needs them runs `cargo rustc --lib` once, in its own target directory
//! (`target/c_abi`, so the outer cargo's lock on `target/` is never waited for).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// Header drift

#[test]
fn header_is_up_to_date() {
    let config = cbindgen::Config::from_file(root().join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root().join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen failed on src/ffi");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let path = root().join("include/listo.h");
    if std::env::var_os("LISTO_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &fresh).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    if committed != fresh {
        let (c, f) = (String::from_utf8_lossy(&committed), String::from_utf8_lossy(&fresh));
        let first =
            c.lines().zip(f.lines()).position(|(a, b)| a != b).unwrap_or(c.lines().count().min(f.lines().count()));
        panic!(
            "include/listo.h is out of date with src/ffi (first difference at line {}):\n  committed: {:?}\n  generated: {:?}\n\
             Regenerate it with the pinned cbindgen:\n    LISTO_BLESS=1 cargo test --test c_abi header_is_up_to_date\n\
             and commit include/listo.h.",
            first + 1,
            c.lines().nth(first).unwrap_or("<end of file>"),
            f.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}

#[test]
fn header_is_c99_with_version_macros() {
    let h = std::fs::read_to_string(root().join("include/listo.h")).unwrap();
    let includes: Vec<&str> = h.lines().filter(|l| l.trim_start().starts_with("#include")).collect();
    assert_eq!(includes, ["#include <stdint.h>", "#include <stddef.h>"], "C99 headers only");
    for (name, v) in [
        ("MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        let line = format!("#define LISTO_VERSION_{name} {v}");
        assert!(h.contains(&line), "cbindgen.toml's after_includes must say `{line}` (Cargo.toml's version)");
    }
    assert!(h.contains("#ifndef LISTO_H"), "include guard");
    assert!(h.contains("typedef struct listo_node listo_node;"), "opaque handle");
}

/// Every `listo_*` function the header declares.
fn header_functions() -> Vec<String> {
    let h = std::fs::read_to_string(root().join("include/listo.h")).unwrap();
    let mut fns = Vec::new();
    for (i, _) in h.match_indices("listo_") {
        let rest = &h[i..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let after = rest[name.len()..].trim_start();
        let before = h[..i].trim_end();
        // a declaration: `type name(`, where what precedes is a type, not `(` or `=`
        if after.starts_with('(') && !before.ends_with('(') && !before.ends_with(',') && !fns.contains(&name) {
            fns.push(name);
        }
    }
    fns
}

// ---------------------------------------------------------------------------------------------
// The libraries

struct Artifacts {
    /// Where liblisto.a, liblisto.so and listo.pc are.
    dir: PathBuf,
    /// What rustc printed for `--print native-static-libs` when it built liblisto.a.
    native_static_libs: Option<String>,
}

fn artifacts() -> &'static Artifacts {
    static A: OnceLock<Artifacts> = OnceLock::new();
    A.get_or_init(|| {
        let target = root().join("target").join("c_abi");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // Firmware builds use `default-features = false` (no mio driver).
        let out = Command::new(cargo)
            .current_dir(root())
            .args(["rustc", "--lib", "--no-default-features", "--target-dir"])
            .arg(&target)
            .args(["--", "--print", "native-static-libs"])
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .expect("run cargo");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "building the staticlib/cdylib failed:\n{stderr}");
        let native_static_libs =
            stderr.lines().find_map(|l| l.split("native-static-libs:").nth(1)).map(|s| s.trim().to_string());
        let dir = target.join("debug");
        assert!(dir.join("liblisto.a").exists(), "no liblisto.a in {}", dir.display());
        Artifacts { dir, native_static_libs }
    })
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

#[test]
fn cdylib_exports_only_listo_symbols() {
    let a = artifacts();
    if !have("nm") {
        eprintln!("SKIP: nm is not installed");
        return;
    }
    let so = a.dir.join("liblisto.so");
    let out = Command::new("nm").args(["-D", "--defined-only"]).arg(&so).output().expect("nm");
    assert!(out.status.success(), "nm failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let syms: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    let foreign: Vec<&&str> = syms.iter().filter(|s| !s.starts_with("listo_")).collect();
    assert!(foreign.is_empty(), "liblisto.so exports symbols outside listo_*: {foreign:?}");
    let mut declared = header_functions();
    declared.sort();
    let mut exported: Vec<String> = syms.iter().map(|s| s.to_string()).collect();
    exported.sort();
    assert_eq!(declared, exported, "the functions listo.h declares and liblisto.so exports differ");
    assert!(exported.len() >= 30, "only {} functions", exported.len());
}

/// `Libs.private` of listo.pc, split into flags.
fn libs_private(pc: &str) -> Vec<String> {
    pc.lines()
        .find_map(|l| l.strip_prefix("Libs.private:"))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn pkg_config_file_matches_rustc() {
    let a = artifacts();
    let pc = std::fs::read_to_string(a.dir.join("listo.pc")).expect("build.rs writes listo.pc next to the libraries");
    assert!(pc.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))));
    assert!(pc.lines().any(|l| l == "Libs: -L${libdir} -llisto"), "{pc}");
    let ours = libs_private(&pc);
    assert!(!ours.is_empty(), "no Libs.private in listo.pc:\n{pc}");
    match &a.native_static_libs {
        Some(rustc) => {
            let theirs: Vec<String> = rustc.split_whitespace().map(str::to_string).collect();
            assert_eq!(ours, theirs, "listo.pc Libs.private differs from rustc --print native-static-libs");
        }
        None => eprintln!("note: cargo replayed no native-static-libs note (fresh build); checked by linking below"),
    }
    if have("pkg-config") {
        let out = Command::new("pkg-config")
            .args(["--cflags", "--libs", "--static", "listo"])
            .env("PKG_CONFIG_PATH", &a.dir)
            .output()
            .unwrap();
        let flags = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "pkg-config: {}", String::from_utf8_lossy(&out.stderr));
        assert!(flags.contains(&format!("-I{}", root().join("include").display())), "{flags}");
        assert!(flags.contains(&format!("-L{}", a.dir.display())) && flags.contains("-llisto"), "{flags}");

        // Exactly what README "Use from C" tells a user: link the shared library through
        // pkg-config alone, then run the C tests against it.
        let out = Command::new("pkg-config")
            .args(["--cflags", "--libs", "listo"])
            .env("PKG_CONFIG_PATH", &a.dir)
            .output()
            .unwrap();
        let flags = String::from_utf8_lossy(&out.stdout).to_string();
        let exe = build_dir().join("test_api-shared");
        let mut cmd = Command::new(cc());
        cmd.args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-o"]).arg(&exe);
        cmd.arg(root().join("examples/c/test_api.c")).args(flags.split_whitespace());
        let built = cmd.output().unwrap();
        assert!(built.status.success(), "{cmd:?}\n{}", String::from_utf8_lossy(&built.stderr));
        let mut run = Command::new(&exe);
        run.env("LD_LIBRARY_PATH", &a.dir);
        let (ok, out, err) = run_bounded(run, Duration::from_secs(60));
        assert!(ok && out.contains(" 0 failed"), "test_api against liblisto.so failed:\n{out}\n{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Compiling C

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".to_string())
}

/// True when `cc -fsanitize=address` builds a program that runs.
fn asan_works() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let dir = build_dir();
        let src = dir.join("asan_probe.c");
        let exe = dir.join("asan_probe");
        std::fs::write(&src, "#include <stdlib.h>\nint main(void) { void *p = malloc(4); free(p); return 0; }\n")
            .unwrap();
        let built = Command::new(cc())
            .args(["-fsanitize=address", "-o"])
            .arg(&exe)
            .arg(&src)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        built && Command::new(&exe).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    })
}

fn build_dir() -> PathBuf {
    let d = root().join("target").join("c_abi").join("c");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Compiles `examples/c/<name>.c` against the staticlib with the flags of listo.pc, once per
/// test run (tests run in parallel and share the executables).
fn compile_c(name: &str, asan: bool) -> PathBuf {
    static BUILT: Mutex<Vec<(String, bool, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, exe)) = built.iter().find(|(n, a, _)| n == name && *a == asan) {
        return exe.clone();
    }
    let exe = compile_c_now(name, asan);
    built.push((name.to_string(), asan, exe.clone()));
    exe
}

fn compile_c_now(name: &str, asan: bool) -> PathBuf {
    let a = artifacts();
    let pc = std::fs::read_to_string(a.dir.join("listo.pc")).unwrap();
    let exe = build_dir().join(if asan { format!("{name}-asan") } else { name.to_string() });
    let mut cmd = Command::new(cc());
    cmd.args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-g", "-O1"]);
    if asan {
        cmd.args(["-fsanitize=address", "-fno-omit-frame-pointer"]);
    }
    cmd.arg("-I").arg(root().join("include"));
    cmd.arg(root().join("examples/c").join(format!("{name}.c")));
    cmd.arg(a.dir.join("liblisto.a"));
    cmd.args(libs_private(&pc));
    cmd.arg("-o").arg(&exe);
    let out = cmd.output().expect("run cc");
    assert!(out.status.success(), "compiling {name}.c failed:\n{cmd:?}\n{}", String::from_utf8_lossy(&out.stderr));
    exe
}

/// Runs a program with a deadline; returns (success, stdout, stderr).
fn run_bounded(mut cmd: Command, limit: Duration) -> (bool, String, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let status = wait_bounded(&mut child, limit);
    let (o, e) = (t_out.join().unwrap(), t_err.join().unwrap());
    (status, o, e)
}

/// Waits for `child` at most `limit`, killing it after; true if it exited successfully.
fn wait_bounded(child: &mut Child, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        match child.try_wait() {
            Ok(Some(s)) => return s.success(),
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

#[test]
fn c_unit_tests_pass() {
    let asan = asan_works();
    let exe = compile_c("test_api", asan);
    let mut cmd = Command::new(&exe);
    if asan {
        cmd.env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0");
    }
    let (ok, out, err) = run_bounded(cmd, Duration::from_secs(60));
    assert!(ok && out.contains(" 0 failed"), "test_api{} failed:\n{out}\n{err}", if asan { " (ASan)" } else { "" });
    eprintln!("{}{}", out.trim(), if asan { " (with AddressSanitizer)" } else { "" });
}

#[test]
fn c_unit_tests_are_clean_under_valgrind() {
    if !have("valgrind") {
        eprintln!("SKIP: valgrind is not installed");
        return;
    }
    let exe = compile_c("test_api", false);
    let mut cmd = Command::new("valgrind");
    cmd.args(["--error-exitcode=1", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect,possible", "-q"]);
    cmd.arg(&exe);
    let (ok, out, err) = run_bounded(cmd, Duration::from_secs(300));
    assert!(ok && out.contains(" 0 failed"), "test_api under valgrind failed:\n{out}\n{err}");
}

// ---------------------------------------------------------------------------------------------
// The C host between a test origin and concurrent viewers

const SEGMENTS: usize = 3;
const SEGMENT_BYTES: usize = 256 * 1024;

/// Fixed, distinct bytes for segment `i`.
fn segment_body(i: usize) -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9u32.wrapping_mul(i as u32 + 1);
    (0..SEGMENT_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn playlist() -> String {
    let mut p = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:1\n");
    for i in 1..=SEGMENTS {
        p.push_str(&format!("#EXTINF:10.0,\nseg{i}.ts\n"));
    }
    p
}

/// A test CDN endpoint: serves the playlist and segments under /live/ch1/ (keep-alive,
/// Content-Length, segment bodies dribbled out in chunks so later viewers arrive mid-fetch) and
/// counts requests per path.
struct Origin {
    addr: SocketAddr,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    stop: Arc<AtomicBool>,
}

impl Origin {
    fn start(ip: std::net::IpAddr) -> Origin {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counts.clone(), stop.clone());
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let c = c.clone();
                        thread::spawn(move || serve_origin_conn(sock, c));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Origin { addr, counts, stop }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_origin_conn(sock: TcpStream, counts: Arc<Mutex<HashMap<String, usize>>>) {
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = sock.set_write_timeout(Some(Duration::from_secs(30)));
    let mut w = sock.try_clone().unwrap();
    let mut r = BufReader::new(sock);
    for _ in 0..10_000 {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
        }
        *counts.lock().unwrap().entry(path.clone()).or_default() += 1;
        let seg = path
            .strip_prefix("/live/ch1/seg")
            .and_then(|s| s.strip_suffix(".ts"))
            .and_then(|n| n.parse::<usize>().ok());
        let ok = if path == "/live/ch1/index.m3u8" {
            let body = playlist();
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.apple.mpegurl\r\nCache-Control: max-age=60\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .is_ok()
        } else if let Some(i) = seg.filter(|i| (1..=SEGMENTS).contains(i)) {
            let body = segment_body(i);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nContent-Length: {}\r\n\r\n", body.len());
            w.write_all(head.as_bytes()).is_ok()
                && body.chunks(16 * 1024).all(|c| {
                    thread::sleep(Duration::from_millis(3));
                    w.write_all(c).is_ok()
                })
        } else {
            w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").is_ok()
        };
        if !ok {
            return;
        }
    }
}

/// Reads one HTTP/1.1 response (Content-Length or chunked); returns (status, body).
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, Vec<u8>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (mut len, mut chunked) = (None, false);
    for _ in 0..200 {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((h, ""));
        if k.eq_ignore_ascii_case("content-length") {
            len = v.trim().parse::<usize>().ok();
        } else if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        for _ in 0..1_000_000 {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(len.unwrap_or(0), 0);
        r.read_exact(&mut body)?;
    }
    Ok((status, body))
}

/// One viewer: the playlist, then every segment it lists, on one keep-alive connection.
/// Returns the segment bodies by path.
fn viewer(node: SocketAddr) -> Result<Vec<(String, Vec<u8>)>, String> {
    let sock = TcpStream::connect_timeout(&node, Duration::from_secs(10)).map_err(|e| format!("connect: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    sock.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = sock.try_clone().unwrap();
    let mut r = BufReader::new(sock);
    let get = |w: &mut TcpStream, r: &mut BufReader<TcpStream>, path: &str| -> Result<Vec<u8>, String> {
        write!(w, "GET {path} HTTP/1.1\r\nHost: node.test\r\n\r\n").map_err(|e| format!("{path}: {e}"))?;
        match read_response(r).map_err(|e| format!("{path}: {e}"))? {
            (200, body) => Ok(body),
            (status, _) => Err(format!("{path}: status {status}")),
        }
    };
    let pl = get(&mut w, &mut r, "/live/ch1/index.m3u8")?;
    let pl = String::from_utf8(pl).map_err(|_| "playlist is not UTF-8".to_string())?;
    let mut out = Vec::new();
    for uri in pl.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let path = format!("/live/ch1/{uri}");
        let body = get(&mut w, &mut r, &path)?;
        out.push((path, body));
    }
    Ok(out)
}

/// A running `listo_host`; stops it (stdin EOF) on drop if still running.
struct Host {
    child: Child,
    addr: SocketAddr,
    stderr: thread::JoinHandle<String>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Host {
    fn start(exe: &Path, wrapper: Option<&[&str]>, listen: &str, channel: &str) -> Host {
        let mut cmd = match wrapper {
            Some(w) => {
                let mut c = Command::new(w[0]);
                c.args(&w[1..]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.args(["--listen", listen, "--channel", channel, "--exit-on-eof", "--max-seconds", "240"]);
        cmd.env("ASAN_OPTIONS", "detect_leaks=1");
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn host");
        let mut se = child.stderr.take().unwrap();
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = se.read_to_string(&mut s);
            s
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        // The host prints its address once listening (bounded by the pipe: EOF if it dies).
        let _ = stdout.read_line(&mut line);
        let addr = line.trim().strip_prefix("listening on ").and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("listo_host did not start: {line:?}\n{}", stderr.join().unwrap());
        };
        Host { child, addr, stderr, stdout }
    }

    /// Closes stdin (the host exits), returns (exit ok, stats JSON line, stderr).
    fn stop(mut self, limit: Duration) -> (bool, String, String) {
        drop(self.child.stdin.take());
        let ok = wait_bounded(&mut self.child, limit);
        let mut stats = String::new();
        let _ = self.stdout.read_line(&mut stats);
        let err = self.stderr.join().unwrap_or_default();
        (ok, stats, err)
    }
}

/// Runs `n` concurrent viewers against a C host between them and a test origin; checks one
/// upstream request per segment and byte-identical bodies. Returns the host's stats JSON.
fn run_host_scenario(exe: &Path, wrapper: Option<&[&str]>, ip: std::net::IpAddr, n: usize) -> serde_json::Value {
    let origin = Origin::start(ip);
    let listen = SocketAddr::new(ip, 0).to_string();
    let channel = format!("ch1=/live/ch1/@{}", origin.addr);
    let host = Host::start(exe, wrapper, &listen, &channel);
    let started = Instant::now();
    let barrier = Arc::new(Barrier::new(n));
    let node = host.addr;
    let viewers: Vec<_> = (0..n)
        .map(|_| {
            let b = barrier.clone();
            thread::spawn(move || {
                b.wait();
                viewer(node)
            })
        })
        .collect();
    let results: Vec<_> = viewers.into_iter().map(|t| t.join().unwrap()).collect();
    let elapsed = started.elapsed();
    let (ok, stats, err) = host.stop(Duration::from_secs(60));
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {n} viewers failed, e.g. {:?}\nhost stderr:\n{err}",
        failures.len(),
        failures[0]
    );
    assert!(ok, "listo_host did not exit cleanly:\n{err}");

    let bodies: Vec<Vec<u8>> = (1..=SEGMENTS).map(segment_body).collect();
    for r in results.iter().map(|r| r.as_ref().unwrap()) {
        assert_eq!(r.len(), SEGMENTS);
        for (path, body) in r {
            let i: usize = path.trim_start_matches("/live/ch1/seg").trim_end_matches(".ts").parse().unwrap();
            assert!(body == &bodies[i - 1], "{path}: body differs from the origin's ({} bytes)", body.len());
        }
    }
    let counts = origin.counts.lock().unwrap().clone();
    for i in 1..=SEGMENTS {
        let path = format!("/live/ch1/seg{i}.ts");
        assert_eq!(counts.get(&path), Some(&1), "upstream requests for {path} ({n} viewers): {counts:?}");
    }
    assert_eq!(counts.get("/live/ch1/index.m3u8"), Some(&1), "playlist has max-age=60: one fetch; {counts:?}");
    assert_eq!(counts.len(), SEGMENTS + 1, "nothing else was fetched: {counts:?}");
    let stats: serde_json::Value =
        serde_json::from_str(stats.trim()).unwrap_or_else(|e| panic!("stats JSON {stats:?}: {e}"));
    let ch = &stats["channels"][0];
    assert_eq!(ch["upstream_requests"].as_u64(), Some(SEGMENTS as u64 + 1), "{stats}");
    assert_eq!(ch["requests"].as_u64(), Some((n * (SEGMENTS + 1)) as u64), "{stats}");
    // Cache hits of the (file-backed) segments left by sendfile, not writev.
    let sent_by_sendfile: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("listo_host: ")?.strip_suffix(" bytes sent by sendfile")?.parse().ok())
        .unwrap_or_else(|| panic!("no sendfile count in the host's stderr:\n{err}"));
    if n > 1 {
        assert!(sent_by_sendfile >= SEGMENT_BYTES as u64, "hits went out by sendfile: {sent_by_sendfile} bytes\n{err}");
    }
    eprintln!(
        "{n} viewers x {} objects through the C host in {elapsed:.2?}: origin requests {counts:?}; downstream {} bytes",
        SEGMENTS + 1,
        stats["downstream_bytes"]
    );
    stats
}

#[test]
fn c_host_serves_100_viewers_from_one_upstream_fetch_per_segment() {
    let exe = compile_c("listo_host", asan_works());
    run_host_scenario(&exe, None, Ipv4Addr::LOCALHOST.into(), 100);
}

#[test]
fn c_host_over_ipv6() {
    if TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_err() {
        eprintln!("SKIP: no IPv6 loopback");
        return;
    }
    let exe = compile_c("listo_host", asan_works());
    run_host_scenario(&exe, None, Ipv6Addr::LOCALHOST.into(), 5);
}

#[test]
fn c_host_is_clean_under_valgrind() {
    if !have("valgrind") {
        eprintln!("SKIP: valgrind is not installed");
        return;
    }
    let exe = compile_c("listo_host", false);
    let wrapper = [
        "valgrind",
        "--error-exitcode=1",
        "--leak-check=full",
        "--errors-for-leak-kinds=definite,indirect,possible",
        "-q",
    ];
    run_host_scenario(&exe, Some(&wrapper), Ipv4Addr::LOCALHOST.into(), 10);
}
