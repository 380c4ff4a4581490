//! The reference driver (feature `driver`): one `mio` poll loop that runs a [`Node`] on real
//! sockets — viewers, upstream connections, the control port (LA/LC) and the admin port (LR).
//!
//! What it owes the core, and nothing more: accept and read viewer bytes, connect upstream
//! when the node asks, write what the node gives with vectored writes straight from the shared
//! buffers, honour `poll_timeout`, and close what the node wants closed.

mod api;
mod conn;
mod events;
mod send;
mod workers;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;

use crate::{Config, ConnId, Instruction, Node, Stats};
pub use conn::Listener;
pub use events::{rfc3339, syslog_line, EventSink};
pub use workers::{bind_workers, run_all, run_workers};
use conn::Entry;

/// How a driver runs.
#[derive(Debug, Clone, Default)]
pub struct DriverConfig {
    /// Viewer listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Control port (LA/LC JSON API), if any.
    pub control: Option<SocketAddr>,
    /// Bearer token the control port requires (`Authorization: Bearer TOKEN`), compared in
    /// constant time; `None`: none (bind the control port to loopback then).
    pub control_token: Option<String>,
    /// Admin port (LR: `/metrics`, `/v1/stats`), if any.
    pub admin: Option<SocketAddr>,
    /// The node's configuration.
    pub node: Config,
    /// Channels instructed at start.
    pub instructions: Vec<Instruction>,
    /// How long in-flight responses may take to finish after a stop request.
    pub drain: Duration,
    /// Where node events are written (RFC 5424 syslog lines).
    pub events: EventSink,
    /// Copy every response body into the socket with `writev`. By default (false) large
    /// completed objects live in memfds and leave by `sendfile(2)` without a copy
    /// (`Config::file_backed_objects`); this turns that off (`listo node --sendfile off`).
    pub no_sendfile: bool,
    /// Workers of one node (see [`run_workers`]): the store they share, their common clock, and
    /// whether the viewer listeners share their ports (`SO_REUSEPORT`).
    pub worker: Option<WorkerSetup>,
}

/// What a worker shares with the others of its node.
#[derive(Debug, Clone)]
pub struct WorkerSetup {
    /// The store of all workers (single-flight across them).
    pub store: Arc<crate::store::shared::SharedStore>,
    /// The time base of every worker's node (`now` values must be comparable across them).
    pub epoch: Instant,
    /// One stop flag for all workers.
    pub stop: Arc<AtomicBool>,
}

/// Asks a running driver to stop (from another thread or a signal handler's flag).
#[derive(Debug, Clone)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl StopHandle {
    /// Stop accepting, finish in-flight responses (bounded by `drain`), return from `run`.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// Set by SIGINT/SIGTERM once [`install_signal_handlers`] ran.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM stop every driver in the process cleanly (exit path of `listo node`).
pub fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// True once SIGINT or SIGTERM arrived (after [`install_signal_handlers`]).
pub fn signalled() -> bool {
    SIGNALLED.load(Ordering::SeqCst)
}

/// Raises this process's soft limit on open files to its hard limit (a common default soft
/// limit of 1024 would cap a node at about a thousand viewers). Returns the limit now in force.
/// For programs (`listo node`), not called by the library itself.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: `want` is a valid rlimit within the hard limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim = want;
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    Ok(lim.rlim_cur as u64)
}

const WAKER: Token = Token(0);

/// Pending connections the kernel may queue per listener before the driver accepts them.
#[cfg(unix)]
const LISTEN_BACKLOG: libc::c_int = 1024;

/// A node on real sockets.
pub struct Driver {
    poll: Poll,
    node: Node,
    entries: HashMap<Token, Entry>,
    viewers: HashMap<u64, Token>,
    upstreams: HashMap<u64, Token>,
    next_token: usize,
    start: Instant,
    stop: StopHandle,
    local: Vec<(Listener, SocketAddr)>,
    drain: Duration,
    counters: DriverCounters,
    /// The event ring and sink (one for all workers of a node).
    log: Arc<Mutex<events::EventLog>>,
    /// Sockets whose read or write loop stopped at its cap before `WouldBlock`: with
    /// edge-triggered readiness no new event would come, so they are served again next turn.
    again: Vec<(Token, bool, bool)>,
    /// Listeners whose `accept` failed for lack of fds or memory, and when to try them again.
    accept_stalled: Vec<Token>,
    accept_retry: Option<Instant>,
    draining: bool,
    control_token: Option<String>,
    /// Viewer listeners share their port with other workers' (`SO_REUSEPORT`).
    reuse_port: bool,
    /// Workers that follow this one's control port (instructions are applied on every worker).
    followers: Vec<(crossbeam_channel::Sender<ControlMsg>, Arc<Waker>)>,
    /// Instructions from the worker that owns the control port.
    inbox: Option<crossbeam_channel::Receiver<ControlMsg>>,
    /// The other workers' counters, merged into this one's admin answers.
    peer_stats: Vec<Peer>,
    /// Raised by the worker with the admin port when it wants fresh counters (shared by all
    /// workers of a node).
    stats_wanted: Arc<AtomicU64>,
    /// This worker's published counters (`stats_handle`, and what the admin worker reads).
    peer: Peer,
}

/// A worker's published counters, read by the worker that owns the admin port.
#[derive(Debug, Clone, Default)]
struct Peer {
    stats: Arc<Mutex<Stats>>,
    counters: Arc<Mutex<DriverCounters>>,
    /// The `stats_wanted` value these counters answer.
    served: Arc<AtomicU64>,
}

/// An instruction forwarded from the worker with the control port to the others.
#[derive(Debug, Clone)]
pub(crate) enum ControlMsg {
    /// Instruct (add or replace) a channel.
    Instruct(Instruction),
    /// Withdraw a channel.
    Withdraw(String),
    /// Start draining.
    Drain,
}

/// How long a listener that ran out of file descriptors waits before accepting again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Connection-level counters the driver keeps (the node counts requests and bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverCounters {
    /// Viewer connections accepted.
    pub accepted: u64,
    /// Viewer connections closed because the node asked (errors, slow viewers, idle).
    pub closed_by_node: u64,
    /// Upstream connects that failed at once.
    pub connect_errors: u64,
}

impl DriverCounters {
    /// Adds another worker's counters.
    pub fn add(&mut self, other: &DriverCounters) {
        self.accepted += other.accepted;
        self.closed_by_node += other.closed_by_node;
        self.connect_errors += other.connect_errors;
    }
}

impl Driver {
    /// Binds every listener (a port in use fails here) and instructs the static channels.
    pub fn bind(cfg: DriverConfig) -> io::Result<Driver> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        // A driver can sendfile large objects from their memfds (see `send`).
        let mut node = Node::new(Config { file_backed_objects: !cfg.no_sendfile, ..cfg.node.clone() });
        let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        node.set_wall_clock(0, started_unix);
        for ins in cfg.instructions.iter().cloned() {
            node.instruct(0, ins).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        }
        let mut d = Driver {
            poll,
            node,
            entries: HashMap::new(),
            viewers: HashMap::new(),
            upstreams: HashMap::new(),
            next_token: 1,
            start: Instant::now(),
            stop: StopHandle { flag: cfg.worker.as_ref().map_or_else(|| Arc::new(AtomicBool::new(false)), |w| w.stop.clone()), waker },
            local: Vec::new(),
            drain: if cfg.drain.is_zero() { Duration::from_secs(3) } else { cfg.drain },
            counters: DriverCounters::default(),
            log: Arc::new(Mutex::new(events::EventLog::new(cfg.events.clone()))),
            again: Vec::new(),
            accept_stalled: Vec::new(),
            accept_retry: None,
            draining: false,
            control_token: cfg.control_token.clone().filter(|t| !t.is_empty()),
            reuse_port: cfg.worker.is_some(),
            followers: Vec::new(),
            inbox: None,
            peer_stats: Vec::new(),
            stats_wanted: Arc::new(AtomicU64::new(0)),
            peer: Peer::default(),
        };
        if let Some(w) = &cfg.worker {
            d.start = w.epoch;
            let waker = d.stop.waker.clone();
            d.node.join_shared(&w.store, move || {
                let _ = waker.wake();
            });
        }
        for addr in &cfg.listen {
            d.listen(*addr, Listener::Viewers)?;
        }
        if let Some(a) = cfg.control {
            d.listen(a, Listener::Control)?;
        }
        if let Some(a) = cfg.admin {
            d.listen(a, Listener::Admin)?;
        }
        Ok(d)
    }

    fn listen(&mut self, addr: SocketAddr, kind: Listener) -> io::Result<()> {
        let bound = if self.reuse_port && kind == Listener::Viewers { workers::bind_reuse_port(addr) } else { TcpListener::bind(addr) };
        let mut l = bound.map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        // mio (like std) listens with a backlog of 128: an audience arriving at once (a channel
        // zap, a node restart) overflows it and the dropped SYNs wait a whole second for their
        // retransmit. Listening again on a listening socket only raises the backlog (the
        // kernel caps it at net.core.somaxconn); on failure the 128 stays, which still works.
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: listen(2) on a socket this listener owns; no memory is passed.
            let _ = unsafe { libc::listen(l.as_raw_fd(), LISTEN_BACKLOG) };
        }
        let token = self.token();
        self.poll.registry().register(&mut l, token, Interest::READABLE)?;
        self.local.push((kind, l.local_addr()?));
        self.entries.insert(token, Entry::Listener(kind, l));
        Ok(())
    }

    /// Accepts on `token` again after [`ACCEPT_RETRY`] (it failed for lack of resources).
    pub(super) fn retry_accept(&mut self, token: Token) {
        if !self.accept_stalled.contains(&token) {
            self.accept_stalled.push(token);
        }
        self.accept_retry.get_or_insert(Instant::now() + ACCEPT_RETRY);
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    /// The bound address of the first listener of a kind (useful with port 0).
    pub fn local_addr(&self, kind: Listener) -> Option<SocketAddr> {
        self.local.iter().find(|(k, _)| *k == kind).map(|(_, a)| *a)
    }

    /// The bound addresses of every listener of a kind, in configuration order.
    pub fn local_addrs(&self, kind: Listener) -> Vec<SocketAddr> {
        self.local.iter().filter(|(k, _)| *k == kind).map(|(_, a)| *a).collect()
    }

    /// A handle that stops `run` from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// A snapshot of the node's counters, refreshed every 250 ms while running (and, for the
    /// workers after the first of [`run_workers`], whenever the first one's admin port asks).
    pub fn stats_handle(&self) -> Arc<Mutex<Stats>> {
        self.peer.stats.clone()
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Runs until stopped (handle or signal), then drains in-flight responses for up to the
    /// configured time. Returns the connection counters.
    pub fn run(mut self) -> io::Result<DriverCounters> {
        let mut events = Events::with_capacity(1024);
        let mut stopping: Option<Instant> = None;
        let mut last_stats = Instant::now() - Duration::from_secs(1);
        loop {
            let now = self.now();
            let mut timeout = Duration::from_millis(250);
            if let Some(t) = self.node.poll_timeout() {
                timeout = timeout.min(Duration::from_nanos(t.saturating_sub(now)));
            }
            if let Some(at) = self.accept_retry {
                timeout = timeout.min(at.saturating_duration_since(Instant::now()));
            }
            if !self.again.is_empty() {
                timeout = Duration::ZERO;
            }
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            for (token, r, w) in std::mem::take(&mut self.again) {
                self.event(token, r, w);
            }
            if self.accept_retry.is_some_and(|at| Instant::now() >= at) {
                self.accept_retry = None;
                for token in std::mem::take(&mut self.accept_stalled) {
                    self.event(token, true, false);
                }
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                self.event(ev.token(), ev.is_readable() || ev.is_read_closed() || ev.is_error(), ev.is_writable());
            }
            let now = self.now();
            self.node.handle_shared(now);
            self.follow_control(now);
            self.node.handle_timeout(now);
            self.pump();
            self.record_events();
            self.api_timeouts();
            // A worker whose counters another worker's admin port reports publishes them when
            // asked (so an admin answer counts everything done before it).
            let wanted = self.stats_wanted.load(Ordering::Acquire);
            let asked_fresh = self.inbox.is_some() && wanted > self.peer.served.load(Ordering::Relaxed);
            if asked_fresh || last_stats.elapsed() >= Duration::from_millis(250) {
                self.publish_stats(wanted);
                last_stats = Instant::now();
            }
            if self.node.is_draining() && !self.draining {
                // Drained through the control port of another worker.
                self.start_drain();
            }
            let asked = self.stop.flag.load(Ordering::SeqCst) || SIGNALLED.load(Ordering::SeqCst);
            if asked && stopping.is_none() {
                for (_, w) in &self.followers {
                    let _ = w.wake();
                }
                stopping = Some(Instant::now());
                self.start_drain();
            }
            if let Some(since) = stopping {
                let node = &self.node;
                let busy = self.entries.values().any(|e| matches!(e, Entry::Viewer(c) if c.busy() || node.user_busy(c.id())));
                if !busy || since.elapsed() >= self.drain {
                    self.stop_accepting_all();
                    let wanted = self.stats_wanted.load(Ordering::Acquire);
                    self.publish_stats(wanted);
                    return Ok(self.counters);
                }
            }
        }
    }

    /// Moves the node's events to the log. Workers that follow another's control port skip the
    /// channel events: every worker applies the same instructions, the log says it once.
    fn record_events(&mut self) {
        let follower = self.inbox.is_some();
        let mut log = None;
        while let Some(e) = self.node.poll_event() {
            let replayed = matches!(
                e,
                crate::Event::ChannelInstructed { .. }
                    | crate::Event::ChannelReplaced { .. }
                    | crate::Event::ChannelWithdrawn { .. }
                    | crate::Event::ChannelExpired { .. }
            );
            if !(follower && replayed) {
                log.get_or_insert_with(|| self.log.lock()).record(e);
            }
        }
    }

    /// Publishes this worker's counters (for `stats_handle` and the admin worker), answering
    /// the admin worker's request number `wanted`.
    fn publish_stats(&self, wanted: u64) {
        *self.peer.stats.lock() = self.node.stats();
        *self.peer.counters.lock() = self.counters.clone();
        self.peer.served.store(wanted, Ordering::Release);
    }

    /// The other workers' counters, fresh: asks them to publish and waits (at most 100 ms,
    /// typically well under one) until each has. Then adds them to `stats` and `counters`.
    pub(super) fn merge_peer_stats(&self, stats: &mut Stats, counters: &mut DriverCounters) {
        if self.peer_stats.is_empty() {
            return;
        }
        let want = self.stats_wanted.fetch_add(1, Ordering::AcqRel) + 1;
        for (_, w) in &self.followers {
            let _ = w.wake();
        }
        let deadline = Instant::now() + Duration::from_millis(100);
        while self.peer_stats.iter().any(|p| p.served.load(Ordering::Acquire) < want) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(50));
        }
        for p in &self.peer_stats {
            stats.merge(&p.stats.lock());
            counters.add(&p.counters.lock());
        }
    }

    /// Applies what the worker owning the control port forwarded.
    fn follow_control(&mut self, now: u64) {
        let Some(inbox) = &self.inbox else { return };
        let msgs: Vec<ControlMsg> = inbox.try_iter().collect();
        for m in msgs {
            match m {
                ControlMsg::Instruct(ins) => {
                    let _ = self.node.instruct(now, ins);
                }
                ControlMsg::Withdraw(name) => {
                    let _ = self.node.withdraw(now, &name);
                }
                ControlMsg::Drain => self.start_drain(),
            }
        }
    }

    /// Forwards a control change to the other workers.
    pub(super) fn broadcast(&self, m: ControlMsg) {
        for (tx, w) in &self.followers {
            if tx.send(m.clone()).is_ok() {
                let _ = w.wake();
            }
        }
    }

    /// Stops accepting viewers and lets the node close connections as their responses end.
    pub(super) fn start_drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.broadcast(ControlMsg::Drain);
        let now = self.now();
        self.node.drain(now);
        self.stop_accepting(Listener::Viewers);
        self.pump();
    }

    fn stop_accepting_all(&mut self) {
        self.stop_accepting(Listener::Viewers);
        self.stop_accepting(Listener::Control);
        self.stop_accepting(Listener::Admin);
    }

    fn stop_accepting(&mut self, kind: Listener) {
        let tokens: Vec<Token> =
            self.entries.iter().filter(|(_, e)| matches!(e, Entry::Listener(k, _) if *k == kind)).map(|(t, _)| *t).collect();
        for t in tokens {
            if let Some(Entry::Listener(_, mut l)) = self.entries.remove(&t) {
                let _ = self.poll.registry().deregister(&mut l);
            }
        }
    }

    /// Drains what the node wants done: connects, then writes/closes on ready connections.
    fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut progressed = false;
            while let Some((u, addr)) = self.node.poll_connect() {
                progressed = true;
                self.connect(u, addr);
            }
            while let Some(c) = self.node.poll_ready() {
                progressed = true;
                match c {
                    ConnId::Viewer(v) => {
                        if let Some(t) = self.viewers.get(&v.0).copied() {
                            self.flush_viewer(t);
                        } else {
                            let _ = self.node.user_close(self.now(), v);
                        }
                    }
                    ConnId::Upstream(u) => {
                        if let Some(t) = self.upstreams.get(&u.0).copied() {
                            self.flush_upstream(t);
                        } else {
                            let _ = self.node.upstream_closed(self.now(), u);
                        }
                    }
                }
            }
            if !progressed {
                break;
            }
        }
    }
}
