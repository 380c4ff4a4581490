//! README.md is the guide (issue 11): every command it marks as runnable works as written.
//!
//! A fenced ```` ```sh ```` block is run when the line right before its fence is
//!
//! - `<!-- test: run -->`: the block runs on its own (a scenario);
//! - `<!-- test: continue -->`: the block runs after the previous marked block, in the same shell,
//!   with the servers that block started still running (e.g. "With the processes of 'Steering
//!   viewers' running").
//!
//! A scenario runs as one `bash` script from the repository root, command by command (a command
//! is a line plus its `\` continuations):
//!
//! - every foreground command must exit 0 within [`COMMAND_LIMIT`], and the first one that does
//!   not ends the scenario;
//! - a command ending in `&` is started in the background, and the script goes on once every
//!   address it listens on (`--listen`, `--control`, `--admin`, `--alto`) accepts connections;
//! - a line `#   TEXT` (`#` and three spaces) right after a command is output the command must
//!   print: `…` stands for anything; a `{…}` line is a JSON object that must be contained in a
//!   JSON line of the output (keys in any order, `…` for the keys left out);
//! - `kill $(jobs -p)` runs last in its scenario, and whatever is still running when the script
//!   ends (or overstays) is killed: the script runs in a process group of its own, and the Drop
//!   guard kills that group by its id.
//!
//! As written, with these substitutions: `cargo run [--release] -- ARGS` and
//! `[./]target/release/listo` run the `listo` binary `cargo test` built (no release build);
//! `cargo run [--release] --example NAME -- ARGS` runs that example's binary (built if missing);
//! `cargo build --release` is not run (the binary is built); every `127.0.0.N:PORT` port (and
//! `dig -p PORT`) is mapped to a free port, in the commands, the expected output and the repository
//! files the commands name (a copy in a temporary directory), so the test never collides with
//! anything else on the machine. Everything stays on loopback. A command whose program is not
//! installed (`curl`, `dig`, `ffmpeg`) is reported and not run, with the lines that expect its
//! output. Other `cargo` commands in a marked block fail the test: they are not quick.

// Without the driver and the instructor, `listo` cannot run the marked blocks: only the checks
// of the README's text run.
#![cfg_attr(not(all(feature = "driver", feature = "instructor")), allow(dead_code, unused_imports))]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const LISTO: &str = env!("CARGO_BIN_EXE_listo");
/// Longest one foreground command may run before the scenario is killed and the test fails.
const COMMAND_LIMIT: Duration = Duration::from_secs(25);
/// Longest one scenario may run.
const SCENARIO_LIMIT: Duration = Duration::from_secs(50);

fn readme() -> String {
    fs::read_to_string(Path::new(MANIFEST_DIR).join("README.md")).expect("README.md")
}

// ---------------------------------------------------------------------------------------------
// Finding the marked blocks
// ---------------------------------------------------------------------------------------------

/// A fenced block: the line of its opening fence (1-based), its info string, its lines, and the
/// marker on the line before the fence.
#[derive(Debug, Clone)]
struct Block {
    line: usize,
    info: String,
    body: Vec<String>,
    marker: Option<Marker>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Run,
    Continue,
}

/// Every fenced block of `text`, with its marker. A malformed `<!-- test: … -->` comment, or one
/// that is not right before a fence, is an error.
fn blocks(text: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        if l.starts_with("<!-- test:") {
            let next = lines.get(i + 1).map(|s| s.trim_start()).unwrap_or("");
            if !next.starts_with("```") {
                return Err(format!("README.md:{}: `{l}` must be the line right before a ```sh fence", i + 1));
            }
        }
        if let Some(info) = l.strip_prefix("```") {
            let marker = match i.checked_sub(1).map(|p| lines[p].trim()) {
                Some(p) if p.starts_with("<!-- test:") => Some(match p {
                    "<!-- test: run -->" => Marker::Run,
                    "<!-- test: continue -->" => Marker::Continue,
                    other => {
                        return Err(format!(
                            "README.md:{i}: unknown marker `{other}` (`<!-- test: run -->` or `<!-- test: continue -->`)"
                        ))
                    }
                }),
                _ => None,
            };
            let start = i + 1;
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                body.push(lines[i].to_string());
                i += 1;
            }
            if i == lines.len() {
                return Err(format!("README.md:{start}: unclosed fence"));
            }
            out.push(Block { line: start, info: info.trim().to_string(), body, marker });
        }
        i += 1;
    }
    Ok(out)
}

/// The marked blocks grouped into scenarios (a `continue` block joins the one before it).
fn scenarios(blocks: &[Block]) -> Result<Vec<Vec<Block>>, String> {
    let mut out: Vec<Vec<Block>> = Vec::new();
    for b in blocks.iter().filter(|b| b.marker.is_some()) {
        if b.info != "sh" {
            return Err(format!("README.md:{}: a marked block must be ```sh, not ```{}", b.line, b.info));
        }
        match (b.marker, out.last_mut()) {
            (Some(Marker::Continue), Some(last)) => last.push(b.clone()),
            (Some(Marker::Continue), None) => {
                return Err(format!("README.md:{}: `<!-- test: continue -->` with no marked block before it", b.line))
            }
            _ => out.push(vec![b.clone()]),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// One command of a block, as written (continuation lines joined with their `\`+newline).
#[derive(Debug, Clone)]
struct Cmd {
    /// README line of its first line.
    line: usize,
    /// The command as written, comments removed.
    written: String,
    /// The command with the test's ports and file copies.
    text: String,
    background: bool,
    /// Output it must print (`#   TEXT` lines after it).
    expect: Vec<String>,
}

/// `line` without a trailing shell comment (a `#` outside quotes, at the start or after a blank).
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double, mut prev_blank) = (false, false, true);
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev_blank => return line[..i].trim_end(),
            _ => {}
        }
        prev_blank = c.is_whitespace();
    }
    line.trim_end()
}

fn commands(block: &Block) -> Vec<Cmd> {
    let mut out: Vec<Cmd> = Vec::new();
    let mut i = 0;
    // Whether `#   TEXT` lines still belong to the last command (nothing else came between).
    let mut expecting = false;
    while i < block.body.len() {
        let raw = &block.body[i];
        let t = raw.trim();
        if t.is_empty() {
            expecting = false;
            i += 1;
            continue;
        }
        if t.starts_with('#') {
            if let (true, Some(text), Some(last)) = (expecting, t.strip_prefix("#   "), out.last_mut()) {
                last.expect.push(text.trim().to_string());
            } else {
                expecting = false;
            }
            i += 1;
            continue;
        }
        let line = block.line + 1 + i;
        let mut parts = vec![strip_comment(raw).to_string()];
        while parts.last().is_some_and(|p| p.ends_with('\\')) && i + 1 < block.body.len() {
            i += 1;
            parts.push(strip_comment(&block.body[i]).to_string());
        }
        let mut text = parts.join("\n");
        let background = text.ends_with('&') && !text.ends_with("&&");
        if background {
            text.pop();
            text.truncate(text.trim_end().len());
        }
        out.push(Cmd { line, written: text.clone(), text, background, expect: Vec::new() });
        expecting = true;
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Expected output
// ---------------------------------------------------------------------------------------------

/// Whether `out` shows `expect` (see the module docs).
fn shows(out: &str, expect: &str) -> bool {
    let expect = expect.trim();
    if expect.starts_with('{') {
        let want = expect.replace(",…", "").replace("…,", "").replace('…', "");
        let Ok(want) = serde_json::from_str::<serde_json::Value>(&want) else {
            panic!("expected output {expect:?} is not JSON once `…` is removed");
        };
        let whole = std::iter::once(out.trim());
        return whole.chain(out.lines()).filter_map(|l| serde_json::from_str(l.trim()).ok()).any(|got| contains(&got, &want));
    }
    let mut rest = out;
    for piece in expect.split('…').map(str::trim).filter(|p| !p.is_empty()) {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// `got` has everything `want` has (objects: these keys, recursively; anything else: equal).
fn contains(got: &serde_json::Value, want: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => w.iter().all(|(k, wv)| g.get(k).is_some_and(|gv| contains(gv, wv))),
        (Value::Array(g), Value::Array(w)) => g.len() == w.len() && g.iter().zip(w).all(|(g, w)| contains(g, w)),
        _ => got == want,
    }
}

// ---------------------------------------------------------------------------------------------
// Ports, files, programs
// ---------------------------------------------------------------------------------------------

/// Calls `f(port)` for every port in `text` written as `IPV4:PORT` or `-p PORT` (dig), and
/// returns `text` with each port for which `f` gives another replaced by it.
fn map_ports(text: &str, mut f: impl FnMut(u16) -> Option<u16>) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let lead = if b[i] == b':' && after_ipv4(&text[..i]) {
            1
        } else if text[i..].starts_with("-p ") && (i == 0 || b[i - 1] == b' ') {
            3
        } else {
            0
        };
        if lead > 0 {
            let start = i + lead;
            let end = start + b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
            let next = b.get(end).copied().unwrap_or(b' ');
            if end > start && end - start <= 5 && next != b'.' && !next.is_ascii_digit() {
                if let Some(q) = text[start..end].parse().ok().and_then(&mut f) {
                    out.push_str(&text[i..start]);
                    out.push_str(&q.to_string());
                    i = end;
                    continue;
                }
            }
        }
        let c = text[i..].chars().next().expect("char");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Whether `before` ends with a dotted IPv4 address (so a `:` after it starts a port).
fn after_ipv4(before: &str) -> bool {
    let tail: String = before.chars().rev().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    tail.chars().rev().collect::<String>().parse::<Ipv4Addr>().is_ok()
}

/// The loopback addresses (`127.0.0.N`) written in `text`.
fn loopback_ips(text: &str) -> BTreeSet<Ipv4Addr> {
    let mut ips = BTreeSet::new();
    for (at, _) in text.match_indices("127.") {
        let s: String = text[at..].chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        if let Ok(ip) = s.trim_end_matches('.').parse::<Ipv4Addr>() {
            ips.insert(ip);
        }
    }
    ips
}

/// A port free for TCP and UDP on every one of `ips`, never handed out before in this process.
fn free_port(ips: &BTreeSet<Ipv4Addr>) -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(Default::default);
    for _ in 0..200 {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port();
        let free = ips.iter().all(|ip| {
            TcpListener::bind((IpAddr::V4(*ip), port)).is_ok() && UdpSocket::bind((IpAddr::V4(*ip), port)).is_ok()
        });
        if free && given.lock().expect("ports").insert(port) {
            return port;
        }
    }
    panic!("no free port on {ips:?} after 200 tries");
}

/// Whether `program` is on the PATH.
fn installed(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join(program).is_file())
}

/// The binary of example `name` next to the `listo` binary, built for this profile if missing.
fn example(name: &str) -> Result<PathBuf, String> {
    let profile_dir = Path::new(LISTO).parent().ok_or("listo has no directory")?;
    let path = profile_dir.join("examples").join(name);
    if path.is_file() {
        return Ok(path);
    }
    let target_dir = profile_dir.parent().ok_or("no target directory")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(p) => p,
        None => return Err("odd profile directory".into()),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        .args(["build", "--example", name, "--profile", profile, "--target-dir"])
        .arg(target_dir)
        .current_dir(MANIFEST_DIR)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            if !s.success() || !path.is_file() {
                return Err(format!("cargo build --example {name}: {s}"));
            }
            return Ok(path);
        }
        if t.elapsed() > Duration::from_secs(600) {
            let _ = child.kill(); // only this child, by its pid
            let _ = child.wait();
            return Err(format!("cargo build --example {name} took over 10 minutes"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// What the test runs for a command as written: the shell text, or why it is not run.
fn rewrite(cmd: &str) -> Result<Result<String, String>, String> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    if words.first() == Some(&"cargo") {
        if words == ["cargo", "build", "--release"] || words == ["cargo", "build"] {
            return Ok(Err(format!("not run: the test uses the binary cargo test built, {LISTO}")));
        }
        let args: Vec<&str> = words.iter().copied().filter(|w| *w != "--release").collect();
        let Some(sep) = args.iter().position(|w| *w == "--") else {
            return Err(format!("`{cmd}` is not quick: unmark its block, or map it in tests/readme.rs"));
        };
        let program = match &args[1..sep] {
            ["run"] => LISTO.to_string(),
            ["run", "--example", name] => example(name)?.display().to_string(),
            _ => return Err(format!("`{cmd}` is not quick: unmark its block, or map it in tests/readme.rs")),
        };
        // Keep the arguments as written (quotes and line continuations included).
        let at = cmd.find(" -- ").map(|p| p + 4).unwrap_or(cmd.len());
        return Ok(Ok(format!("{program} {}", &cmd[at..])));
    }
    let text = cmd.replace("./target/release/listo", LISTO).replace("target/release/listo", LISTO);
    let first = text.split_whitespace().next().unwrap_or("");
    let program_like = !first.contains('=') && !first.contains('/') && !first.starts_with('$');
    let builtin = ["kill", "cd", "export", "echo", "sleep", "wait", "true"].contains(&first);
    if program_like && !builtin && !installed(first) {
        return Ok(Err(format!("not run: {first} is not installed")));
    }
    Ok(Ok(text))
}

/// The addresses a background command listens on.
fn listen_addrs(cmd: &str) -> Vec<(String, u16)> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let mut out = Vec::new();
    for w in words.windows(2) {
        if ["--listen", "--control", "--admin", "--alto"].contains(&w[0]) {
            if let Some((ip, port)) = w[1].rsplit_once(':') {
                if let (Ok(ip), Ok(port)) = (ip.parse::<Ipv4Addr>(), port.parse::<u16>()) {
                    out.push((ip.to_string(), port));
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Running a scenario
// ---------------------------------------------------------------------------------------------

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("listo-readme-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The scenario's shell, in a process group of its own. Dropping it kills that group (the shell
/// and everything it started, by the group's id) and reaps the shell. The shell is reaped only
/// here, so its pid (the group's id) cannot be reused before the kill.
struct Shell(Option<Child>);

impl Drop for Shell {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let pgid = c.id() as libc::pid_t;
            // SAFETY: kill(2) with the negative id of the process group this test created.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

struct Step {
    cmd: Cmd,
    /// What runs, or why nothing does.
    run: Result<String, String>,
}

/// Runs one scenario. Ok: notes (commands not run); Err: what failed.
fn run_scenario(n: usize, blocks: &[Block]) -> Result<Vec<String>, String> {
    let started = Instant::now();
    let dir = TempDir::new(&n.to_string());
    let d = &dir.0;
    let where_ = format!("README.md:{}", blocks[0].line);

    // Free ports for every port written in the scenario; skip it where 127.0.0.N is missing.
    let whole: String = blocks.iter().flat_map(|b| b.body.iter()).map(|l| format!("{l}\n")).collect();
    let ips = loopback_ips(&whole);
    for ip in &ips {
        if TcpListener::bind((IpAddr::V4(*ip), 0)).is_err() {
            return Ok(vec![format!("{where_}: not run: cannot bind {ip} (Linux has all of 127.0.0.0/8 on lo)")]);
        }
    }
    let mut ports = BTreeMap::new();
    let _ = map_ports(&whole, |p| {
        ports.entry(p).or_insert_with(|| free_port(&ips));
        None
    });
    let remap = |s: &str| map_ports(s, |p| ports.get(&p).copied());

    // Repository files the commands name that hold remapped addresses: copies with them mapped.
    let mut files = BTreeMap::new();
    for word in whole.split_whitespace().map(|w| w.trim_matches(|c| c == '\'' || c == '"')) {
        let p = Path::new(MANIFEST_DIR).join(word);
        let small = fs::metadata(&p).is_ok_and(|m| m.is_file() && m.len() < 1 << 20);
        if word.contains('/') && !word.starts_with('/') && small && !files.contains_key(word) {
            if let Ok(content) = fs::read_to_string(&p) {
                let mapped = remap(&content);
                if mapped != content {
                    let copy = d.join(p.file_name().expect("file name"));
                    fs::write(&copy, mapped).expect("write copy");
                    files.insert(word.to_string(), copy.display().to_string());
                }
            }
        }
    }

    let mut steps = Vec::new();
    let mut kills = Vec::new();
    for b in blocks {
        for mut cmd in commands(b) {
            cmd.text = remap(&cmd.text);
            for (from, to) in &files {
                cmd.text = cmd.text.replace(from.as_str(), to);
            }
            cmd.expect = cmd.expect.iter().map(|e| remap(e)).collect();
            let run = rewrite(&cmd.text).map_err(|e| format!("README.md:{}: {e}", cmd.line))?;
            let step = Step { cmd, run };
            if step.cmd.text.split_whitespace().collect::<Vec<_>>() == ["kill", "$(jobs", "-p)"] {
                kills.push(step);
            } else {
                steps.push(step);
            }
        }
    }
    steps.extend(kills);

    let q = |name: String| shell_quote(&d.join(name).display().to_string());
    let mut script = String::new();
    writeln!(script, "cd {}", shell_quote(MANIFEST_DIR)).unwrap();
    writeln!(script, "trap 'echo > {}' EXIT", q("done".into())).unwrap();
    script.push_str(
        "__readme_wait() { local i; for i in $(seq 1 200); do (exec 3<>\"/dev/tcp/$1/$2\") 2>/dev/null && return 0; \
         sleep 0.05; done; echo \"nothing listens on $1:$2 after 10 s\" >&2; return 1; }\n",
    );
    for (i, s) in steps.iter().enumerate() {
        let Ok(run) = &s.run else { continue };
        writeln!(script, "echo {i} > {}", q("current".into())).unwrap();
        let (out, err, rc) = (q(format!("{i}.out")), q(format!("{i}.err")), q(format!("{i}.rc")));
        if s.cmd.background {
            writeln!(script, "{run} > {out} 2> {err} < /dev/null &").unwrap();
            let waits: Vec<String> =
                listen_addrs(run).iter().map(|(ip, port)| format!("__readme_wait {ip} {port}")).collect();
            let waits = if waits.is_empty() { "true".to_string() } else { waits.join(" && ") };
            writeln!(script, "{{ {waits}; }} 2> {}", q(format!("{i}.wait"))).unwrap();
        } else {
            writeln!(script, "{{ {run}\n}} > {out} 2> {err} < /dev/null").unwrap();
        }
        // The first failure ends the scenario.
        writeln!(script, "__readme_rc=$?; echo $__readme_rc > {rc}; [ $__readme_rc = 0 ] || exit").unwrap();
    }
    fs::write(d.join("script.sh"), &script).expect("write script");

    let bash_err = fs::File::create(d.join("bash.err")).expect("bash.err");
    let child = Command::new("bash")
        .arg(d.join("script.sh"))
        .env_remove("BASH_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(bash_err)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{where_}: cannot run bash: {e}"))?;
    let shell = Shell(Some(child));

    let read = |name: String| fs::read_to_string(d.join(name)).unwrap_or_default();
    let describe = |i: usize| {
        let s: &Step = &steps[i];
        format!(
            "README.md:{}: `{}`\n  ran: {}\n  stdout: {}\n  stderr: {}",
            s.cmd.line,
            s.cmd.written,
            s.run.as_deref().unwrap_or("-"),
            tail(&read(format!("{i}.out")), 20),
            tail(&(read(format!("{i}.err")) + &read(format!("{i}.wait"))), 20),
        )
    };
    let background_logs = || {
        let mut s = String::new();
        for (i, st) in steps.iter().enumerate().filter(|(_, st)| st.cmd.background && st.run.is_ok()) {
            let _ = write!(s, "\n  background README.md:{} stderr: {}", st.cmd.line, tail(&read(format!("{i}.err")), 5));
        }
        s + "\n  shell: " + &read("bash.err".into())
    };

    // Wait for the script, bounding each command and the whole scenario.
    let (mut current, mut since) = (String::new(), Instant::now());
    while !d.join("done").exists() {
        let now = read("current".into()).trim().to_string();
        if now != current {
            (current, since) = (now, Instant::now());
        }
        let i: Option<usize> = current.parse().ok();
        let overstays = i.is_some_and(|i| !steps[i].cmd.background) && since.elapsed() > COMMAND_LIMIT;
        if overstays || started.elapsed() > SCENARIO_LIMIT {
            drop(shell);
            let what = i.map(describe).unwrap_or_default();
            return Err(format!("{where_}: still running after {:?}: {what}{}", since.elapsed(), background_logs()));
        }
        thread::sleep(Duration::from_millis(25));
    }
    drop(shell);

    let mut notes = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        if let Err(why) = &s.run {
            notes.push(format!("README.md:{}: `{}`: {why}", s.cmd.line, s.cmd.written));
            continue;
        }
        let rc = read(format!("{i}.rc"));
        if rc.trim() != "0" {
            let status = if rc.is_empty() { "never finished".to_string() } else { format!("exit status {}", rc.trim()) };
            return Err(format!("{status}: {}{}", describe(i), background_logs()));
        }
        let out = read(format!("{i}.out"));
        for e in &s.cmd.expect {
            if !shows(&out, e) {
                return Err(format!("the README says it prints `{e}`: {}", describe(i)));
            }
        }
    }
    notes.push(format!("{where_}: {} commands in {:?}", steps.len(), started.elapsed()));
    Ok(notes)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The two commands a newcomer runs first stay where they are: in a ```sh block near the top.
#[test]
fn readme_keeps_its_two_commands_near_the_top() {
    let text = readme();
    let all = blocks(&text).expect("README fences");
    let first = all.iter().find(|b| b.info == "sh").expect("a ```sh block in README.md");
    assert!(first.line <= 40, "the first ```sh block of README.md is at line {}, not near the top", first.line);
    let cmds: Vec<String> = commands(first).into_iter().map(|c| c.text).collect();
    for want in ["cargo run --release -- demo", "cargo test"] {
        assert!(
            cmds.iter().any(|c| c == want),
            "README.md's first ```sh block must have `{want}` as a command of its own; it has {cmds:?}"
        );
    }
    // And CI runs the second one.
    let ci = fs::read_to_string(Path::new(MANIFEST_DIR).join(".ci/run")).expect(".ci/run");
    assert!(ci.lines().any(|l| l.trim().starts_with("cargo test")), ".ci/run no longer runs `cargo test`");
}

/// The markers parse, and the blocks the README promises work are marked.
#[test]
fn readme_markers_are_well_formed() {
    let text = readme();
    let all = blocks(&text).unwrap_or_else(|e| panic!("{e}"));
    let scenarios = scenarios(&all).unwrap_or_else(|e| panic!("{e}"));
    assert!(!scenarios.is_empty(), "no block of README.md is marked `<!-- test: run -->`");
    let marked: String = scenarios.iter().flatten().flat_map(|b| b.body.iter()).map(|l| format!("{l}\n")).collect();
    for (what, needle) in [
        ("the node walk-through", "listo node --listen 127.0.0.1:8080"),
        ("the steering walk-through", "$L instructor --listen"),
        ("the ALTO walk-through", "$L instructor --alto"),
    ] {
        assert!(marked.contains(needle), "{what} (`{needle}`) is no longer in a marked block of README.md");
    }
    for s in &scenarios {
        for b in s {
            for c in commands(b) {
                assert!(!c.text.is_empty(), "README.md:{}: empty command", c.line);
            }
        }
    }
}

/// Every marked block runs as written (see the module docs), scenarios in parallel.
#[cfg(all(feature = "driver", feature = "instructor"))]
#[test]
fn readme_marked_blocks_run_as_written() {
    let t = Instant::now();
    let text = readme();
    let scenarios = scenarios(&blocks(&text).expect("README fences")).expect("README markers");
    let handles: Vec<_> = scenarios
        .into_iter()
        .enumerate()
        .map(|(n, s)| thread::spawn(move || run_scenario(n, &s)))
        .collect();
    let mut failures = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(notes)) => notes.iter().for_each(|n| eprintln!("{n}")),
            Ok(Err(e)) => failures.push(e),
            Err(_) => failures.push("a scenario panicked".into()),
        }
    }
    eprintln!("README scenarios: {:?}", t.elapsed());
    assert!(failures.is_empty(), "README.md commands that do not work as written:\n\n{}", failures.join("\n\n"));
}

/// The pieces above, on small inputs.
#[test]
fn readme_test_helpers() {
    assert_eq!(strip_comment("curl -s 'a#b' x   # note"), "curl -s 'a#b' x");
    assert_eq!(strip_comment("$L origin --listen 127.0.0.1:18080 &   # origin"), "$L origin --listen 127.0.0.1:18080 &");
    assert!(shows("HTTP/1.1 401 Unauthorized\r\nx: y", "HTTP/1.1 401 Unauthorized"));
    assert!(shows("a\n{\"meta\":{},\"selection\":{\"pid\":\"p\",\"url\":\"u\"}}\n", r#"{"selection":{"url":"u",…},…}"#));
    assert!(!shows("{\"selection\":{\"url\":\"v\"}}", r#"{"selection":{"url":"u",…},…}"#));
    assert!(shows("summary: 20 viewers received 78 segments", "summary: 20 viewers … segments"));
    assert!(!shows("summary: 20 viewers", "summary: … segments"));
    let m = |p: u16| match p {
        8080 => Some(1),
        5353 => Some(2),
        _ => None,
    };
    assert_eq!(
        map_ports("127.0.0.2:8080/x :8080 127.0.0.1:18080 dig -p 5353 \"10.0.0.1:8080\" ipv4:8080.1.0.1 1:8080", m),
        "127.0.0.2:1/x :8080 127.0.0.1:18080 dig -p 2 \"10.0.0.1:1\" ipv4:8080.1.0.1 1:8080"
    );
    let b = Block {
        line: 10,
        info: "sh".into(),
        body: vec![
            "a --x \\".into(),
            "  --y &   # bg".into(),
            "curl z | grep -i '^location'".into(),
            "#   Location: here".into(),
            "# a remark".into(),
            "#   not expected".into(),
        ],
        marker: Some(Marker::Run),
    };
    let c = commands(&b);
    assert_eq!(c.len(), 2);
    assert_eq!((c[0].line, c[0].text.as_str(), c[0].background), (11, "a --x \\\n  --y", true));
    assert_eq!((c[1].line, c[1].expect.clone()), (13, vec!["Location: here".to_string()]));
    assert_eq!(listen_addrs("x --listen 127.0.0.4:80 --alto http://127.0.0.1:1/alto --admin 127.0.0.1:9"), [
        ("127.0.0.4".to_string(), 80),
        ("127.0.0.1".to_string(), 9)
    ]);
    let bad = "<!-- test: run -->\ntext\n```sh\nx\n```\n";
    assert!(blocks(bad).is_err());
    assert!(blocks("<!-- test: sometimes -->\n```sh\nx\n```\n").is_err());
}
