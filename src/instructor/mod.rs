//! Steering viewers to nodes (DESIGN §2, §6): the **instructor** (topology, node choice,
//! instructions to nodes) and its two **mediators**, HTTP 302 ([`HttpMediator`], `listo
//! instructor`) and authoritative DNS ([`DnsServer`], `listo dns`); and, for a CDN run by a
//! third party, the **ALTO server** ([`AltoServer`], `listo instructor --alto`): RFC 7285
//! network map, cost map and endpoint cost service from the same topology, plus the LISTO
//! selection and notification resources through which the CDN controller learns the node for
//! a viewer and tells which endpoint it chose (seed figures 3 and 5, AC and LA interfaces).
//!
//! * [`Topology`]: an ALTO network map and optional cost map (RFC 7285), the nodes of each PID,
//!   the channels with their CDN endpoints, and an optional node hierarchy; checked at load.
//!   A client is mapped to a PID by longest-prefix match ([`PrefixTable`], IPv4 and IPv6, on
//!   the `prefix-trie` crate); within a PID a channel goes to one node by weighted rendezvous
//!   hashing; the CDN endpoint is the cheapest by the cost map from the top node's PID.
//! * [`Instructor`]: holds the topology behind an `RwLock<Arc<Topology>>` (readers clone the
//!   `Arc`, a reload swaps it whole) and instructs nodes: `POST /v1/channels` with `ttl_s`,
//!   deduplicated per (node, channel), renewed in the background at half the TTL for as long as
//!   the topology still names that node and channel (so a stopped instructor's channels expire
//!   on their own), every hierarchy level top first. **Reload**: SIGHUP (after
//!   [`install_sighup_handler`]) or [`Instructor::reload`]; a file that fails the checks is
//!   refused and the running topology stays.
//! * Claim 9: the mediator starts the instruction before it answers. For a (node, channel) not
//!   yet instructed the 302 waits for the node's acknowledgement, at most
//!   [`InstructorConfig::ack_wait`] — the acknowledgement means the node knows the channel and
//!   its playlist fetch has started, so the viewer can't arrive first and get a 404, and the
//!   fetch runs while the 302 travels and the viewer reconnects. With `ack_wait` zero the 302
//!   goes at once.
//!
//! Blocking `std::net` with a thread per connection: the mediators answer one small request
//! per viewer start, not the media itself.

mod hierarchy;
mod http_server;
mod instruct;
pub mod alto;
pub mod alto_http;
pub mod dns;
pub mod lpm;
pub mod mediator_http;
pub mod topology;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

pub use alto_http::{AltoServer, AltoServerConfig, AltoStats};
pub use dns::{DnsConfig, DnsServer, DnsStats};
pub use instruct::post_instruction;
pub use lpm::PrefixTable;
pub use mediator_http::{HttpMediator, HttpMediatorConfig, MediatorStats};
pub use topology::{CdnEndpoint, Route, Step, TopoChannel, TopoNode, Topology, TopologyError, Vtag};

/// How the instructor instructs nodes.
#[derive(Debug, Clone)]
pub struct InstructorConfig {
    /// `ttl_s` of every instruction; renewed at half of it (0 is taken as 1).
    pub ttl_s: u64,
    /// Longest a redirect waits for a node to acknowledge a new instruction.
    pub ack_wait: Duration,
    /// Timeout of each control-port connect, write and read.
    pub post_timeout: Duration,
    /// After a failed instruction, viewers go to the CDN for this long before a retry.
    pub retry_after: Duration,
    /// Log every instruction to stderr.
    pub verbose: bool,
}

impl Default for InstructorConfig {
    fn default() -> Self {
        InstructorConfig {
            ttl_s: 60,
            ack_wait: Duration::from_millis(500),
            post_timeout: Duration::from_secs(2),
            retry_after: Duration::from_secs(1),
            verbose: false,
        }
    }
}

/// What the instructor did so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstructorStats {
    /// Instructions POSTed (first ones, prefetches and renewals).
    pub posts: u64,
    /// POSTs that failed (connect, timeout, or a non-2xx answer).
    pub post_failures: u64,
    /// Renewals started by the background thread.
    pub renewals: u64,
    /// Successful topology reloads.
    pub reloads: u64,
    /// Refused topology reloads.
    pub reload_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    posts: AtomicU64,
    post_failures: AtomicU64,
    renewals: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

/// The instructor: the topology (atomically replaceable) and the instructions sent to nodes.
pub struct Instructor {
    topo: RwLock<Arc<Topology>>,
    path: Option<PathBuf>,
    cfg: InstructorConfig,
    slots: Mutex<instruct::Slots>,
    stats: Counters,
    me: Mutex<Weak<Instructor>>,
    stopped: AtomicBool,
    hup_seen: AtomicU64,
}

impl std::fmt::Debug for Instructor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instructor").field("path", &self.path).field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// The outcome of waiting for a route's instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Every level acknowledged (now or earlier).
    Ready,
    /// Still in flight when the wait ended; the instructions go on.
    Pending,
    /// A level could not be instructed (the message says why).
    Failed(String),
}

impl Instructor {
    /// An instructor over `topology`, with its background thread (renewals, SIGHUP reloads).
    pub fn new(topology: Topology, cfg: InstructorConfig) -> Arc<Instructor> {
        Self::build(topology, None, cfg)
    }

    /// An instructor over the topology file at `path` (reloaded from there).
    pub fn from_file(path: &Path, cfg: InstructorConfig) -> Result<Arc<Instructor>, TopologyError> {
        let topo = Topology::load(path)?;
        Ok(Self::build(topo, Some(path.to_path_buf()), cfg))
    }

    fn build(topology: Topology, path: Option<PathBuf>, cfg: InstructorConfig) -> Arc<Instructor> {
        let me = Arc::new(Instructor {
            topo: RwLock::new(Arc::new(topology)),
            path,
            cfg,
            slots: Mutex::new(Default::default()),
            stats: Counters::default(),
            me: Mutex::new(Weak::new()),
            stopped: AtomicBool::new(false),
            hup_seen: AtomicU64::new(HUPS.load(Ordering::SeqCst)),
        });
        *me.me.lock() = Arc::downgrade(&me);
        let weak = Arc::downgrade(&me);
        let _ = std::thread::Builder::new().name("listo-instructor".into()).spawn(move || background(weak));
        me
    }

    /// The configuration.
    pub fn config(&self) -> &InstructorConfig {
        &self.cfg
    }

    /// The current topology (a snapshot: a reload does not change it under the caller).
    pub fn topology(&self) -> Arc<Topology> {
        self.topo.read().clone()
    }

    /// Swaps in a new topology atomically; instructions the change affects are re-sent by the
    /// background thread, those whose node or channel left are no longer renewed.
    pub fn set_topology(&self, topology: Topology) {
        *self.topo.write() = Arc::new(topology);
        self.stats.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Re-reads the topology file; on any error the running topology stays and the error is
    /// returned. Returns the new topology's summary.
    pub fn reload(&self) -> Result<String, TopologyError> {
        let Some(path) = &self.path else { return Err(TopologyError("no topology file to reload from".into())) };
        match Topology::load(path) {
            Ok(t) => {
                let s = t.summary();
                self.set_topology(t);
                Ok(s)
            }
            Err(e) => {
                self.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> InstructorStats {
        InstructorStats {
            posts: self.stats.posts.load(Ordering::Relaxed),
            post_failures: self.stats.post_failures.load(Ordering::Relaxed),
            renewals: self.stats.renewals.load(Ordering::Relaxed),
            reloads: self.stats.reloads.load(Ordering::Relaxed),
            reload_failures: self.stats.reload_failures.load(Ordering::Relaxed),
        }
    }

    /// Stops the background thread (renewals and reloads); instructions then expire on the
    /// nodes after their TTL.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Instructs every level of `steps` (top first) as needed, and waits up to `wait` for the
    /// ones the viewer depends on. `prefetch` is given to the last (chosen) node.
    pub fn instruct(&self, steps: &[Step], prefetch: Option<&str>, wait: Duration) -> Readiness {
        self.instruct_as(steps, prefetch, wait, false)
    }

    /// Like [`Instructor::instruct`] for steps a CDN controller chose through an ALTO
    /// notification: they are *pinned*, so renewals re-send them as they are (the controller's
    /// endpoint) instead of what the topology would say, for as long as the node stays in the
    /// topology or until another notification replaces them.
    pub fn instruct_pinned(&self, steps: &[Step], prefetch: Option<&str>, wait: Duration) -> Readiness {
        self.instruct_as(steps, prefetch, wait, true)
    }

    fn instruct_as(&self, steps: &[Step], prefetch: Option<&str>, wait: Duration, pinned: bool) -> Readiness {
        match self.dispatch(steps, prefetch, pinned) {
            instruct::Dispatch::Ready => Readiness::Ready,
            instruct::Dispatch::Failed(e) => Readiness::Failed(e),
            instruct::Dispatch::Wait(tickets) => {
                let deadline = Instant::now() + wait;
                for t in tickets {
                    match t.wait_until(deadline) {
                        Some(Ok(())) => {}
                        Some(Err(e)) => return Readiness::Failed(e),
                        None => return Readiness::Pending,
                    }
                }
                Readiness::Ready
            }
        }
    }

    /// The route of a client address for a channel (see [`Topology::route`]).
    pub fn route(&self, client: IpAddr, channel: &TopoChannel) -> Route {
        self.topology().route(&ipnet::IpNet::from(lpm::canonical(client)), channel)
    }
}

/// SIGHUPs received since [`install_sighup_handler`].
static HUPS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_hup(_sig: libc::c_int) {
    HUPS.fetch_add(1, Ordering::SeqCst);
}

/// Makes SIGHUP reload the topology file of every [`Instructor`] in the process.
pub fn install_sighup_handler() {
    // SAFETY: the handler only increments an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGHUP, on_hup as *const () as libc::sighandler_t);
    }
}

/// Renewals every TTL/6 (so each is due at TTL/2 within a small margin) and SIGHUP reloads.
fn background(weak: Weak<Instructor>) {
    let mut last_renew = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let Some(me) = weak.upgrade() else { return };
        if me.stopped.load(Ordering::SeqCst) {
            return;
        }
        let hups = HUPS.load(Ordering::SeqCst);
        if me.hup_seen.swap(hups, Ordering::SeqCst) != hups && me.path.is_some() {
            match me.reload() {
                Ok(s) => eprintln!("listo: topology reloaded: {s}"),
                Err(e) => eprintln!("listo: topology reload refused, keeping the running one: {e}"),
            }
        }
        let every = Duration::from_millis((me.cfg.ttl_s.max(1) * 1000 / 6).max(200));
        if last_renew.elapsed() >= every {
            last_renew = Instant::now();
            me.renew_due();
        }
    }
}
