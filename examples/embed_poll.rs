//! `embed_poll`: a complete LISTO node driven from a hand-written `poll(2)` loop over
//! non-blocking `std::net` sockets — no mio, no async runtime. It answers "what does my event
//! loop owe the core?" line by line; a firmware loop in any language has the same shape.
//!
//! | the host does                                         | and then tells the node            |
//! |-------------------------------------------------------|------------------------------------|
//! | accepts a viewer connection                           | `user_open`                        |
//! | reads the viewer's bytes                              | `user_recv` (EOF: `user_close`)    |
//! | writes `user_poll_transmit`'s slices with `writev`    | `user_sent(n)` with what it took   |
//! | closes the socket on `Transmit::Close`                | `user_close`                       |
//! | starts a non-blocking connect for each `poll_connect` | `upstream_connected` / `_closed`   |
//! | writes `upstream_poll_transmit`'s bytes               | `upstream_sent(n)`                 |
//! | reads the CDN's bytes                                 | `upstream_recv` (EOF: `_closed`)   |
//! | sleeps in `poll` no longer than `poll_timeout`        | `handle_timeout(now)`              |
//! | drains `poll_event`                                   | (logs it for the OSS)              |
//!
//! After any input, drain output in this order: connects and transmits (`poll_connect`,
//! `poll_ready`), then `poll_timeout`, then events. Time is the host's monotonic clock in
//! nanoseconds; the node never reads a clock.
//!
//! Try it against the synthetic origin:
//!
//! ```sh
//! cargo run -- origin --listen 127.0.0.1:18080 &
//! cargo run --example embed_poll -- --listen 127.0.0.1:8080 --channel ch0=/live/ch0/@127.0.0.1:18080
//! curl -s http://127.0.0.1:8080/live/ch0/index.m3u8
//! ```
//!
//! Flags: `--listen ADDR` (default 127.0.0.1:8080; port 0 picks a free one), `--channel
//! NAME=PREFIX@HOST:PORT[,HOST:PORT]` (repeatable; default `ch0=/live/ch0/@127.0.0.1:18080`),
//! `--requests N` (stop once N requests for instructed channels were answered), `--seconds S`
//! (stop after S seconds). The first line on stdout is `listening on ADDR`, the last a summary.
//! Unix only (`poll`, `writev` and `connect` through `libc`).
//!
//! `embed_threads` reuses [`Host`] and the helpers below, one host per worker thread.

use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use listo::{ConnId, Instruction, Node, Stats, Transmit, UpTransmit, UpstreamId, ViewerId};

/// A viewer socket and whether its last write stopped short (then we wait for `POLLOUT`).
struct Viewer {
    stream: TcpStream,
    blocked: bool,
}

/// An upstream socket and whether its non-blocking connect has finished.
struct Upstream {
    stream: TcpStream,
    connected: bool,
}

/// What one `pollfd` entry stands for.
#[derive(Clone, Copy)]
enum Slot {
    Listener,
    Wake,
    Viewer(ViewerId),
    Upstream(UpstreamId),
}

/// A node on real sockets: everything a host owes the core, and nothing more.
pub struct Host {
    /// The sans-IO core. The host may call it directly between turns (e.g. `instruct`).
    pub node: Node,
    /// `None` once draining: no more viewers are accepted.
    listener: Option<TcpListener>,
    viewers: HashMap<ViewerId, Viewer>,
    upstreams: HashMap<UpstreamId, Upstream>,
    start: Instant,
    /// Print `poll_event`s to stderr. A host that reads `Node::event_receiver` on another
    /// thread sets this false (the queue is still drained, so no event counts as dropped).
    pub log_events: bool,
    buf: Vec<u8>,
    /// Read end of a pipe another thread writes to when this node has objects to take from a
    /// shared store (see `share`).
    wake_rx: Option<std::fs::File>,
}

impl Host {
    /// Takes a node and a bound listener; the host's clock starts now (node time 0).
    pub fn new(mut node: Node, listener: TcpListener) -> io::Result<Host> {
        listener.set_nonblocking(true)?;
        // The wall clock is only for `Date` headers: tell the node once what time 0 is.
        let unix_ns = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        node.set_wall_clock(0, unix_ns);
        Ok(Host {
            node,
            listener: Some(listener),
            viewers: HashMap::new(),
            upstreams: HashMap::new(),
            start: Instant::now(),
            log_events: true,
            buf: vec![0; 64 * 1024],
            wake_rx: None,
        })
    }

    /// Makes this host's node share `store` with other hosts' nodes (one per thread): `epoch`
    /// is the clock all of them use, and a pipe wakes this host's `poll` when another node
    /// fetched something this one waits for.
    pub fn share(&mut self, store: &std::sync::Arc<listo::store::shared::SharedStore>, epoch: Instant) -> io::Result<()> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 fills the two-element array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        use std::os::unix::io::FromRawFd;
        // SAFETY: both fds were just created and are owned here.
        let (rx, tx) = unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) };
        self.node.join_shared(store, move || {
            use std::io::Write;
            // A full pipe already holds a wake-up: ignore WouldBlock.
            let _ = (&tx).write(&[1]);
        });
        self.wake_rx = Some(rx);
        self.start = epoch;
        Ok(())
    }

    /// The host's monotonic clock in nanoseconds: what every `now` argument gets.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// One turn of the loop: wait in `poll` (at most `max_wait`, less when a node timer is
    /// due), feed what happened to the node, run its timers, do what it asks, log its events.
    pub fn turn(&mut self, max_wait: Duration) -> io::Result<()> {
        let mut fds = Vec::new();
        let mut slots = Vec::new();
        let mut watch = |fd, events, slot| {
            fds.push(libc::pollfd { fd, events, revents: 0 });
            slots.push(slot);
        };
        if let Some(l) = &self.listener {
            watch(l.as_raw_fd(), libc::POLLIN, Slot::Listener);
        }
        if let Some(w) = &self.wake_rx {
            watch(w.as_raw_fd(), libc::POLLIN, Slot::Wake);
        }
        for (&v, c) in &self.viewers {
            // Always read (requests, or EOF); wait for writability only after a short write.
            watch(c.stream.as_raw_fd(), libc::POLLIN | if c.blocked { libc::POLLOUT } else { 0 }, Slot::Viewer(v));
        }
        for (&u, c) in &self.upstreams {
            // POLLOUT tells a connect finished, or that a blocked request write may go on.
            let wants_write = !c.connected || matches!(self.node.upstream_poll_transmit(u), Ok(UpTransmit::Send(_)));
            watch(c.stream.as_raw_fd(), libc::POLLIN | if wants_write { libc::POLLOUT } else { 0 }, Slot::Upstream(u));
        }
        // Sleep no longer than the node's next deadline (re-asked every turn: it moves).
        let mut wait = max_wait;
        if let Some(deadline) = self.node.poll_timeout() {
            wait = wait.min(Duration::from_nanos(deadline.saturating_sub(self.now())));
        }
        let wait_ms = wait.as_micros().div_ceil(1000) as libc::c_int;
        // SAFETY: `fds` is a valid, initialised array of `fds.len()` pollfd structs.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        for (pfd, slot) in fds.iter().zip(slots) {
            // Errors and hang-ups count as both: the read or write that follows reports them.
            let readable = pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
            let writable = pfd.revents & (libc::POLLOUT | libc::POLLHUP | libc::POLLERR) != 0;
            match slot {
                Slot::Listener if readable => self.accept(),
                Slot::Viewer(v) => {
                    if readable {
                        self.read_viewer(v);
                    }
                    if writable {
                        if let Some(c) = self.viewers.get_mut(&v) {
                            c.blocked = false;
                        }
                        self.flush_viewer(v);
                    }
                }
                Slot::Upstream(u) => {
                    if writable {
                        self.upstream_writable(u);
                    }
                    if readable {
                        self.read_upstream(u);
                    }
                }
                Slot::Wake if readable => {
                    use std::io::Read;
                    let mut sink = [0u8; 64];
                    while let Some(Ok(n)) = self.wake_rx.as_mut().map(|w| w.read(&mut sink)) {
                        if n == 0 {
                            break;
                        }
                    }
                }
                Slot::Listener | Slot::Wake => {}
            }
        }
        // Objects another node fetched for this one (cheap when there are none).
        let now = self.now();
        self.node.handle_shared(now);
        // Timers: calling `handle_timeout` before the deadline is a no-op, so every turn is fine.
        let now = self.now();
        self.node.handle_timeout(now);
        self.pump();
        while let Some(e) = self.node.poll_event() {
            if self.log_events {
                eprintln!("event {}: {:?}", e.kind(), e.fields());
            }
        }
        Ok(())
    }

    /// True while a viewer still has a response in progress or bytes unwritten.
    pub fn busy(&self) -> bool {
        self.viewers.keys().any(|&v| self.node.user_busy(v))
    }

    /// Stops accepting and asks the node to close connections as their responses end; keep
    /// calling `turn` until `busy` is false.
    pub fn start_drain(&mut self) {
        self.listener = None;
        let now = self.now();
        self.node.drain(now);
        self.pump();
    }

    /// Does what the node asks until it asks nothing more: open the upstream connections it
    /// wants, then write to (or close) every connection `poll_ready` names.
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some((u, addr)) = self.node.poll_connect() {
                progressed = true;
                self.connect(u, addr);
            }
            while let Some(c) = self.node.poll_ready() {
                progressed = true;
                match c {
                    ConnId::Viewer(v) => self.flush_viewer(v),
                    ConnId::Upstream(u) => self.flush_upstream(u),
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn accept(&mut self) {
        // Accept what is queued; the listener is level-triggered, so stopping early is fine.
        for _ in 0..64 {
            let Some(l) = &self.listener else { return };
            match l.accept() {
                Ok((stream, peer)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let v = self.node.user_open(self.now(), Some(peer));
                    self.viewers.insert(v, Viewer { stream, blocked: false });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock: nothing queued. Other errors (EMFILE): poll will retry.
                Err(_) => return,
            }
        }
    }

    fn read_viewer(&mut self, v: ViewerId) {
        for _ in 0..16 {
            let Some(c) = self.viewers.get_mut(&v) else { return };
            match c.stream.read(&mut self.buf) {
                Ok(0) => return self.close_viewer(v),
                Ok(n) => {
                    let now = self.now();
                    // Err only for an id the node does not know: impossible here.
                    let _ = self.node.user_recv(now, v, &self.buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.close_viewer(v),
            }
        }
    }

    /// Writes what the node has for viewer `v` — zero-copy slices of the shared segment
    /// buffers — until the node has nothing more or the socket is full.
    fn flush_viewer(&mut self, v: ViewerId) {
        loop {
            let Some(c) = self.viewers.get_mut(&v) else { return };
            if c.blocked {
                return; // POLLOUT will bring us back
            }
            let mut slices = [IoSlice::new(&[]); 64];
            let n = match self.node.user_poll_transmit(v, &mut slices) {
                Ok(Transmit::Send(n)) => n,
                Ok(Transmit::Wait) => return,
                Ok(Transmit::Close) | Err(_) => return self.close_viewer(v),
            };
            let want: usize = slices[..n].iter().map(|s| s.len()).sum();
            // SAFETY: on Unix `IoSlice` is ABI-compatible with `struct iovec`; the slices borrow
            // the node's buffers, which stay put until the next `&mut` call (`user_sent`).
            let rc = unsafe { libc::writev(c.stream.as_raw_fd(), slices.as_ptr().cast::<libc::iovec>(), n as libc::c_int) };
            if rc < 0 {
                match io::Error::last_os_error().kind() {
                    io::ErrorKind::WouldBlock => c.blocked = true,
                    io::ErrorKind::Interrupted => {}
                    _ => return self.close_viewer(v), // EPIPE, ECONNRESET: the viewer left
                }
                if c.blocked {
                    return;
                }
                continue;
            }
            let wrote = rc as usize;
            c.blocked = wrote < want;
            let now = self.now();
            let _ = self.node.user_sent(now, v, wrote); // exactly what the socket took
            if wrote < want {
                return;
            }
        }
    }

    fn close_viewer(&mut self, v: ViewerId) {
        self.viewers.remove(&v); // dropping the stream closes the socket
        let _ = self.node.user_close(self.now(), v);
    }

    fn connect(&mut self, u: UpstreamId, addr: SocketAddr) {
        match connect_nonblocking(addr) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                self.upstreams.insert(u, Upstream { stream, connected: false });
            }
            // Refused at once: the node retries on the next endpoint or answers 502.
            Err(_) => {
                let _ = self.node.upstream_closed(self.now(), u);
            }
        }
    }

    fn upstream_writable(&mut self, u: UpstreamId) {
        let Some(c) = self.upstreams.get_mut(&u) else { return };
        if !c.connected {
            // The connect finished: SO_ERROR says how.
            if !matches!(c.stream.take_error(), Ok(None)) || c.stream.peer_addr().is_err() {
                return self.close_upstream(u);
            }
            c.connected = true;
            let _ = self.node.upstream_connected(self.now(), u);
        }
        self.flush_upstream(u);
    }

    fn flush_upstream(&mut self, u: UpstreamId) {
        loop {
            let Some(c) = self.upstreams.get_mut(&u) else { return };
            if !c.connected {
                return;
            }
            let n = match self.node.upstream_poll_transmit(u) {
                Ok(UpTransmit::Send(bytes)) => match c.stream.write(bytes) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return self.close_upstream(u),
                },
                Ok(UpTransmit::Wait) => return,
                Ok(UpTransmit::Close) | Err(_) => return self.close_upstream(u),
            };
            let _ = self.node.upstream_sent(self.now(), u, n);
        }
    }

    fn read_upstream(&mut self, u: UpstreamId) {
        for _ in 0..16 {
            let Some(c) = self.upstreams.get_mut(&u) else { return };
            if !c.connected {
                return;
            }
            match c.stream.read(&mut self.buf) {
                Ok(0) => return self.close_upstream(u),
                Ok(n) => {
                    let now = self.now();
                    let _ = self.node.upstream_recv(now, u, &self.buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.close_upstream(u),
            }
        }
    }

    fn close_upstream(&mut self, u: UpstreamId) {
        self.upstreams.remove(&u);
        let _ = self.node.upstream_closed(self.now(), u);
    }
}

/// A `sockaddr_in`/`sockaddr_in6` for `addr`, as `connect(2)` and `bind(2)` take it.
pub fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage; each arm writes the variant that fits in it.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// A new non-blocking TCP socket (close-on-exec) for `addr`'s family, owned by `TcpStream`.
pub fn tcp_socket(addr: &SocketAddr) -> io::Result<TcpStream> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain syscalls; the fd is owned by the returned TcpStream (closed on drop).
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let s = unsafe { TcpStream::from_raw_fd(fd) };
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Starts a connect that returns at once (`EINPROGRESS`); `poll` reports `POLLOUT` when it
/// finished, and `SO_ERROR` says whether it worked. std has no non-blocking connect.
pub fn connect_nonblocking(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = tcp_socket(&addr)?;
    let (sa, len) = sockaddr(&addr);
    // SAFETY: `sa` holds a valid sockaddr of `len` bytes.
    let rc = unsafe { libc::connect(s.as_raw_fd(), (&sa as *const libc::sockaddr_storage).cast(), len) };
    if rc == 0 {
        return Ok(s);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EINPROGRESS) {
        Ok(s)
    } else {
        Err(e)
    }
}

/// Requests routed to an instructed channel (what `--requests` counts).
pub fn requests(stats: &Stats) -> u64 {
    stats.channels.iter().map(|c| c.requests).sum()
}

/// One line of totals: requests, how they were served, and what went upstream.
pub fn summary(stats: &Stats) -> String {
    let sum = |f: fn(&listo::ChannelStats) -> u64| stats.channels.iter().map(f).sum::<u64>();
    format!(
        "requests {} (hits {}, coalesced {}, misses {}), upstream requests {}, upstream bytes {}, downstream bytes {}",
        sum(|c| c.requests),
        sum(|c| c.hits),
        sum(|c| c.coalesced),
        sum(|c| c.misses),
        sum(|c| c.upstream_requests),
        sum(|c| c.upstream_bytes),
        stats.downstream_bytes
    )
}

/// Command-line flags shared by `embed_poll` and `embed_threads`.
pub struct Args {
    /// Where viewers connect.
    pub listen: SocketAddr,
    /// Channels instructed at start.
    pub channels: Vec<Instruction>,
    /// Stop after this many answered requests.
    pub requests: Option<u64>,
    /// Stop after this long.
    pub seconds: Option<u64>,
    /// `--workers` (embed_threads only).
    pub workers: usize,
}

impl Args {
    /// Parses `--flag value` pairs; `workers_flag` admits `--workers N`.
    pub fn parse(argv: impl Iterator<Item = String>, workers_flag: bool) -> Result<Args, String> {
        let mut a = Args { listen: ([127, 0, 0, 1], 8080).into(), channels: Vec::new(), requests: None, seconds: None, workers: 2 };
        let argv: Vec<String> = argv.collect();
        for pair in argv.chunks(2) {
            let flag = pair[0].as_str();
            let known = ["--listen", "--channel", "--requests", "--seconds"].contains(&flag) || (workers_flag && flag == "--workers");
            if !known {
                return Err(format!("unknown flag '{flag}'"));
            }
            let value = pair.get(1).ok_or_else(|| format!("{flag} needs a value"))?;
            let num = || value.parse::<u64>().map_err(|_| format!("{flag}: '{value}' is not a number"));
            match flag {
                "--listen" => {
                    a.listen = value.parse().map_err(|_| format!("--listen: '{value}' is not an address like 127.0.0.1:8080"))?
                }
                "--channel" => a.channels.push(parse_channel(value)?),
                "--requests" => a.requests = Some(num()?),
                "--seconds" => a.seconds = Some(num()?),
                "--workers" => a.workers = num()?.clamp(1, 256) as usize,
                _ => return Err(format!("unknown flag '{flag}'")),
            }
        }
        if a.channels.is_empty() {
            a.channels.push(parse_channel("ch0=/live/ch0/@127.0.0.1:18080")?);
        }
        Ok(a)
    }
}

/// Parses `NAME=PREFIX@HOST:PORT[,HOST:PORT]` (the `listo node --channel` syntax).
pub fn parse_channel(spec: &str) -> Result<Instruction, String> {
    let bad = |why: String| format!("--channel '{spec}': {why} (expected NAME=PREFIX@HOST:PORT[,HOST:PORT])");
    let (name, rest) = spec.split_once('=').ok_or_else(|| bad("missing '='".into()))?;
    let (prefix, eps) = rest.rsplit_once('@').ok_or_else(|| bad("missing '@'".into()))?;
    let endpoints = eps
        .split(',')
        .map(|e| e.trim().parse().map_err(|_| bad(format!("'{e}' is not IP:PORT"))))
        .collect::<Result<Vec<SocketAddr>, _>>()?;
    let mut ins = Instruction::new(name, prefix, endpoints[0]);
    ins.endpoints = endpoints;
    ins.validate().map_err(|e| bad(e.to_string()))?;
    Ok(ins)
}

/// Runs one host until `stop` says so, then drains it (at most 3 s).
pub fn run_until(host: &mut Host, mut stop: impl FnMut(&Host) -> bool) -> io::Result<()> {
    while !stop(host) {
        host.turn(Duration::from_millis(50))?;
    }
    host.start_drain();
    let deadline = Instant::now() + Duration::from_secs(3);
    while host.busy() && Instant::now() < deadline {
        host.turn(Duration::from_millis(50))?;
    }
    Ok(())
}

#[allow(dead_code)] // `embed_threads` includes this file as a module and has its own main
fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1), false) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("embed_poll: {e}\nusage: embed_poll [--listen ADDR] [--channel NAME=PREFIX@IP:PORT]... [--requests N] [--seconds S]");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("embed_poll: cannot listen on {}: {e} (pick another --listen, or port 0)", args.listen);
            return ExitCode::from(2);
        }
    };
    let local = listener.local_addr().expect("bound address");
    let mut host = Host::new(Node::new(listo::Config::default()), listener).expect("non-blocking listener");
    for ins in args.channels {
        let now = host.now();
        if let Err(e) = host.node.instruct(now, ins) {
            eprintln!("embed_poll: {e}");
            return ExitCode::from(2);
        }
    }
    println!("listening on {local}");
    let _ = io::stdout().flush();
    let deadline = args.seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let result = run_until(&mut host, |h| {
        // `stats()` builds a snapshot: fine once per turn at this scale.
        let answered = args.requests.is_some_and(|n| requests(&h.node.stats()) >= n && !h.busy());
        answered || deadline.is_some_and(|d| Instant::now() >= d)
    });
    if let Err(e) = result {
        eprintln!("embed_poll: poll failed: {e}");
        return ExitCode::FAILURE;
    }
    println!("{}", summary(&host.node.stats()));
    ExitCode::SUCCESS
}
