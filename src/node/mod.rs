//! `node` (seed M1, the handler): owns all state and exposes the sans-IO API of DESIGN §4.
//!
//! The host feeds input (`user_recv`, `upstream_recv`, `handle_timeout`, ...) and drains output
//! (`poll_ready` + `*_poll_transmit`, `poll_connect`, `poll_timeout`, `poll_event`). Time is a
//! monotonic `u64` of nanoseconds supplied by the host; the node never reads a clock.
//!
//! `examples/embed_poll.rs` is a complete host for this API in one file.
//!
//! Submodules: `serve` routes requests and fans objects out to viewers, `fetch` runs upstream
//! fetches (pool, retries, failures), `timers` keeps deadlines.

mod audience;
mod renditions;
mod shared;
mod fetch;
mod follow;
mod serve;
mod timers;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::IoSlice;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::admin::{ChannelStats, Event, EventQueue, Stats};
use crate::config::Config;
use crate::idmap::IdMap;
use crate::control::{ChannelTable, Instruction};
use crate::http::RequestLimits;
use crate::store::Store;
use crate::upstream::{UpConn, UpPhase};
use crate::user::ViewerConn;
use crate::Error;

use fetch::{Fetch, Pool};
use timers::{TimerKey, Timers};

/// A viewer connection, as the node names it to the host. Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ViewerId(pub u64);

/// An upstream connection, as the node names it to the host. Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamId(pub u64);

/// A connection with something for the host to do (bytes to write, or close it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnId {
    /// A viewer connection.
    Viewer(ViewerId),
    /// An upstream connection.
    Upstream(UpstreamId),
}

/// What a viewer connection wants from the host now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit {
    /// This many slices were filled: write them (vectored), then call `user_sent` with the
    /// number of bytes the socket took.
    Send(usize),
    /// Close the connection, then call `user_close`.
    Close,
    /// Nothing to write now; wait for `poll_ready` to name it again.
    Wait,
}

/// What an upstream connection wants from the host now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpTransmit<'a> {
    /// Write these bytes, then call `upstream_sent` with how many the socket took.
    Send(&'a [u8]),
    /// Close the connection, then call `upstream_closed`.
    Close,
    /// Nothing to write now.
    Wait,
}

/// The LISTO node: one per host thread. See the module docs for the calling contract.
#[derive(Debug)]
pub struct Node {
    cfg: Config,
    limits: RequestLimits,
    channels: ChannelTable,
    chan_stats: crate::idmap::IdMap<ChannelStats>,
    store: Store,
    viewers: IdMap<ViewerConn>,
    upstreams: IdMap<UpConn>,
    pools: HashMap<SocketAddr, Pool>,
    fetches: IdMap<Fetch>,
    connects: VecDeque<(UpstreamId, SocketAddr)>,
    ready: VecDeque<ConnId>,
    timers: Timers,
    events: EventQueue,
    next_id: u64,
    wall: (u64, u64),
    date: (u64, Bytes),
    errors: BTreeMap<u16, u64>,
    downstream_total: u64,
    slow_viewers: u64,
    prefetch: follow::Prefetch,
    audience: crate::idmap::IdMap<audience::ChannelAudience>,
    renditions: crate::idmap::IdMap<renditions::ChannelRenditions>,
    /// Membership of a store shared with other nodes, if any.
    shared: Option<shared::Membership>,
    endpoints: BTreeMap<SocketAddr, crate::admin::EndpointStats>,
    channel_expiry: HashMap<String, u64>,
    draining: bool,
    /// Last media sequence seen per media playlist path (origin restarts).
    media_sequences: HashMap<String, u64>,
}

impl Node {
    /// A node with no channels. Next, `instruct` its channels (or let the control port do it)
    /// and `set_wall_clock`; then run the host loop of the module docs around it.
    pub fn new(cfg: Config) -> Self {
        let limits = RequestLimits {
            max_head_bytes: cfg.max_head_bytes,
            max_headers: cfg.max_headers,
            max_uri_bytes: cfg.max_uri_bytes,
        };
        Node {
            store: {
                let mut s = Store::new(cfg.memory_budget);
                s.set_file_backed(cfg.file_backed_objects);
                s
            },
            events: EventQueue::new(cfg.event_queue),
            limits,
            cfg,
            channels: ChannelTable::default(),
            chan_stats: Default::default(),
            viewers: IdMap::default(),
            upstreams: IdMap::default(),
            pools: HashMap::new(),
            fetches: IdMap::default(),
            connects: VecDeque::new(),
            ready: VecDeque::new(),
            timers: Timers::default(),
            next_id: 1,
            wall: (0, 0),
            date: (u64::MAX, Bytes::new()),
            errors: BTreeMap::new(),
            downstream_total: 0,
            slow_viewers: 0,
            prefetch: follow::Prefetch::default(),
            audience: Default::default(),
            renditions: Default::default(),
            shared: None,
            endpoints: BTreeMap::new(),
            channel_expiry: HashMap::new(),
            draining: false,
            media_sequences: HashMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Tells the node that monotonic time `now` is `unix_ns` on the wall clock, for `Date`
    /// headers. Call once at start and now and then; the node never reads a clock itself.
    pub fn set_wall_clock(&mut self, now: u64, unix_ns: u64) {
        self.wall = (now, unix_ns);
        self.date.0 = u64::MAX;
    }

    /// Adds or replaces a channel. A replaced channel keeps its cache when its prefix is the
    /// same; new endpoints apply to new fetches while in-flight ones finish. `prefetch` paths
    /// are fetched at once. A refused instruction changes nothing; its error says why (e.g.
    /// "path_prefix must start with '/'"). Afterwards drain `poll_connect` (prefetches ask
    /// for upstream connections), re-ask `poll_timeout` (a `ttl_s` arms a timer) and drain
    /// `poll_event`.
    pub fn instruct(&mut self, now: u64, ins: Instruction) -> Result<(), Error> {
        if self.channels.by_name(&ins.channel).is_none() && self.channels.len() >= self.cfg.max_channels {
            return Err(Error::TooManyChannels(self.cfg.max_channels));
        }
        let prefetch = ins.prefetch.clone();
        let name = ins.channel.clone();
        let ttl = ins.ttl_s;
        let existed = self.channels.by_name(&name).is_some();
        // A renewal (the same instruction again) only extends its TTL: no event.
        let renewal = self.channels.by_name(&name).is_some_and(|c| {
            let (a, b) = (&c.instruction, &ins);
            a.path_prefix == b.path_prefix && a.endpoints == b.endpoints && a.host == b.host
        });
        let (id, replaced) = self.channels.upsert(ins)?;
        match ttl {
            Some(s) => {
                self.channel_expiry.insert(name.clone(), now.saturating_add(s.saturating_mul(crate::SECOND)));
                self.timers.arm_sweep(now);
            }
            None => {
                self.channel_expiry.remove(&name);
            }
        }
        if let Some(old) = replaced {
            let mut stats = self.chan_stats.remove(&old).unwrap_or_default();
            stats.viewers = 0;
            self.chan_stats.insert(id, stats);
            // Viewers stay: so do their sessions and renditions, under the new id.
            if let Some(a) = self.audience.remove(&old) {
                self.audience.insert(id, a);
            }
            if let Some(r) = self.renditions.remove(&old) {
                self.renditions.insert(id, r);
            }
            self.drop_channel_objects(old);
        }
        self.chan_stats.entry(id).or_insert_with(|| ChannelStats { channel: name.clone(), ..Default::default() });
        if !renewal {
            self.events.push(if existed { Event::ChannelReplaced { channel: name } } else { Event::ChannelInstructed { channel: name } });
        }
        for path in prefetch {
            self.prefetch(now, id, &path);
        }
        Ok(())
    }

    /// Withdraws a channel: new requests for it get 404; responses in flight finish. Fails
    /// with [`Error::UnknownChannel`] for a name never instructed. Afterwards drain `poll_event`.
    pub fn withdraw(&mut self, _now: u64, name: &str) -> Result<(), Error> {
        self.remove_channel(name)?;
        self.events.push(Event::ChannelWithdrawn { channel: name.to_string() });
        Ok(())
    }

    /// Starts draining: every response from now on closes its connection once sent, idle
    /// keep-alive connections close now. The host stops accepting viewers, drains `poll_ready`
    /// (idle connections now say `Transmit::Close`) and keeps its loop running until no viewer
    /// is [`user_busy`](Self::user_busy) (or its own deadline passes).
    pub fn drain(&mut self, _now: u64) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.events.push(Event::NodeDraining);
        let idle: Vec<u64> = self.viewers.iter().filter(|(_, v)| v.is_idle()).map(|(id, _)| *id).collect();
        for id in idle {
            if let Some(v) = self.viewers.get_mut(&id) {
                v.close_after_flush = true;
                v.stop_reading = true;
            }
            self.mark_ready(ConnId::Viewer(ViewerId(id)));
        }
    }

    /// True once `drain` was called.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// A receiver of every event from now on, for a host that logs from another thread
    /// (`poll_event` keeps working too). Events are dropped, and counted, while it is full.
    /// Call once at setup (a second call replaces the first receiver); the receiver is `Send`,
    /// so move it to the logging thread. The `poll_event` queue still fills: keep draining it
    /// (and discard) on the node's thread, or its overflow also counts in `events_dropped`.
    pub fn event_receiver(&mut self) -> crossbeam_channel::Receiver<Event> {
        self.events.subscribe(self.cfg.event_queue)
    }

    /// Withdraws channels whose instruction expired.
    pub(crate) fn expire_channels(&mut self, now: u64) {
        let expired: Vec<String> = self.channel_expiry.iter().filter(|(_, at)| now >= **at).map(|(n, _)| n.clone()).collect();
        for name in expired {
            if self.remove_channel(&name).is_ok() {
                self.events.push(Event::ChannelExpired { channel: name });
            }
        }
    }

    fn remove_channel(&mut self, name: &str) -> Result<(), Error> {
        self.channel_expiry.remove(name);
        let ch = self.channels.remove(name).ok_or_else(|| Error::UnknownChannel(name.to_string()))?;
        self.chan_stats.remove(&ch.id);
        self.audience.remove(&ch.id);
        self.renditions.remove(&ch.id);
        self.drop_channel_objects(ch.id);
        Ok(())
    }

    /// The instructed channels.
    pub fn instructions(&self) -> impl Iterator<Item = &Instruction> {
        self.channels.iter().map(|c| &c.instruction)
    }

    /// A viewer connection was accepted at `now`. Returns its id: keep it with the socket, pass
    /// the socket's bytes to `user_recv`, and re-ask `poll_timeout` (an idle timer starts).
    pub fn user_open(&mut self, now: u64, peer: Option<SocketAddr>) -> ViewerId {
        let id = self.alloc_id();
        let mut conn = ViewerConn::new(now);
        conn.peer = peer.map(|p| p.ip());
        self.viewers.insert(id, conn);
        self.reschedule_viewer(id);
        ViewerId(id)
    }

    /// Bytes arrived from a viewer. Afterwards drain `poll_connect` (a miss asks for an upstream
    /// connection) and `poll_ready` (a hit has bytes to write now). On EOF or a read error
    /// call `user_close` instead.
    pub fn user_recv(&mut self, now: u64, v: ViewerId, data: &[u8]) -> Result<(), Error> {
        let (limits, pipe) = (self.limits, self.cfg.max_pipeline);
        let viewer = self.viewers.get_mut(&v.0).ok_or(Error::UnknownConnection)?;
        if let Err(e) = viewer.recv(now, data, &limits, pipe) {
            self.reject(now, v.0, e.status, e.reason);
        }
        self.progress_viewer(now, v.0);
        Ok(())
    }

    /// Fills `slices` with what the viewer should be sent next (zero-copy views of the node's
    /// shared buffers; valid until the next call that takes `&mut self`). Call it when
    /// `poll_ready` names the viewer or its socket became writable again. On `Send(n)` write
    /// `slices[..n]` with one vectored write (`writev`), then call `user_sent` with the bytes the
    /// socket took; on `Close` close the socket and call `user_close`; on `Wait` do nothing.
    pub fn user_poll_transmit<'a>(&'a self, v: ViewerId, slices: &mut [IoSlice<'a>]) -> Result<Transmit, Error> {
        let viewer = self.viewers.get(&v.0).ok_or(Error::UnknownConnection)?;
        if viewer.wants_close() {
            return Ok(Transmit::Close);
        }
        match viewer.poll_transmit(slices) {
            0 => Ok(Transmit::Wait),
            n => Ok(Transmit::Send(n)),
        }
    }

    /// The host wrote `n` bytes of what `user_poll_transmit` gave. Call after every write, a
    /// partial one too (never with more than was given), then call `user_poll_transmit` again
    /// until it says `Wait` or the socket would block (then wait for it to become writable).
    pub fn user_sent(&mut self, now: u64, v: ViewerId, n: usize) -> Result<(), Error> {
        let viewer = self.viewers.get_mut(&v.0).ok_or(Error::UnknownConnection)?;
        viewer.last_activity = now;
        let (chan_stats, renditions) = (&mut self.chan_stats, &mut self.renditions);
        let taken = viewer.sent(n as u64, |tag, b| {
            let (ch, r) = renditions::untag(tag);
            if let Some(s) = chan_stats.get_mut(&ch) {
                s.downstream_bytes += b;
            }
            if let Some(rs) = r.and_then(|r| renditions.get_mut(&ch)?.stats_mut(r)) {
                rs.downstream_bytes += b;
            }
        });
        self.downstream_total += taken;
        let wants_close = viewer.wants_close();
        let more = viewer.out.is_empty()
            && viewer.front.is_none()
            && (!viewer.pending.is_empty() || viewer.pending_error.is_some() || viewer.has_partial_head());
        if wants_close {
            self.mark_ready(ConnId::Viewer(v));
        }
        // `progress_viewer` answers a bounded number of pipelined requests per call; the rest
        // go on once what was queued for them is written (else they would wait forever and
        // the buffered heads would even earn a 408).
        if more {
            self.progress_viewer(now, v.0);
        }
        self.reschedule_viewer(v.0);
        Ok(())
    }

    /// True while the viewer has a response in progress, requests queued or output unwritten
    /// (a draining host waits for these before it closes).
    pub fn user_busy(&self, v: ViewerId) -> bool {
        self.viewers.get(&v.0).is_some_and(|c| !c.is_idle() && !c.wants_close())
    }

    /// The viewer connection is gone (closed by either side). Its state is dropped. Call exactly
    /// once per viewer, after closing its socket; the id is unknown to the node afterwards.
    pub fn user_close(&mut self, _now: u64, v: ViewerId) -> Result<(), Error> {
        self.viewers.remove(&v.0).map(|_| ()).ok_or(Error::UnknownConnection)
    }

    /// The next upstream connection the host must open: connect a TCP socket to the address,
    /// then call `upstream_connected` (or `upstream_closed` if it fails).
    pub fn poll_connect(&mut self) -> Option<(UpstreamId, SocketAddr)> {
        while let Some((u, addr)) = self.connects.pop_front() {
            if self.upstreams.get(&u.0).is_some_and(|c| c.phase == UpPhase::Connecting) {
                return Some((u, addr));
            }
        }
        None
    }

    /// The host's connect for `u` succeeded (for a non-blocking connect: the socket became
    /// writable and `SO_ERROR` is 0). Afterwards drain `poll_ready`: the request waits in
    /// `upstream_poll_transmit`.
    pub fn upstream_connected(&mut self, now: u64, u: UpstreamId) -> Result<(), Error> {
        let conn = self.upstreams.get_mut(&u.0).ok_or(Error::UnknownConnection)?;
        if conn.phase != UpPhase::Connecting {
            return Err(Error::InvalidState("upstream is not connecting"));
        }
        conn.phase = UpPhase::Idle;
        self.conn_idle(now, u.0);
        Ok(())
    }

    /// Response bytes arrived on `u` (copied once into a shared buffer). Afterwards drain
    /// `poll_ready` (every viewer waiting on the object has bytes to write) and `poll_connect`.
    /// On EOF or a read error call `upstream_closed` instead.
    pub fn upstream_recv(&mut self, now: u64, u: UpstreamId, data: &[u8]) -> Result<(), Error> {
        self.upstream_recv_bytes(now, u, Bytes::copy_from_slice(data))
    }

    /// Response bytes arrived on `u`, already in a `Bytes` (no copy). As `upstream_recv`.
    pub fn upstream_recv_bytes(&mut self, now: u64, u: UpstreamId, data: Bytes) -> Result<(), Error> {
        let conn = self.upstreams.get_mut(&u.0).ok_or(Error::UnknownConnection)?;
        let mut events = Vec::new();
        conn.recv(data, &mut events);
        self.handle_up_events(now, u.0, events);
        Ok(())
    }

    /// What to write on upstream connection `u` now. Call it when `poll_ready` names `u` or its
    /// socket became writable. On `Send` write the bytes, then call `upstream_sent` with what the
    /// socket took; on `Close` close the socket and call `upstream_closed`; on `Wait` do nothing.
    pub fn upstream_poll_transmit(&self, u: UpstreamId) -> Result<UpTransmit<'_>, Error> {
        let conn = self.upstreams.get(&u.0).ok_or(Error::UnknownConnection)?;
        if conn.phase == UpPhase::Closing {
            return Ok(UpTransmit::Close);
        }
        if conn.phase != UpPhase::Connecting && !conn.out.is_empty() {
            return Ok(UpTransmit::Send(&conn.out));
        }
        Ok(UpTransmit::Wait)
    }

    /// The host wrote `n` request bytes on `u`. Call after every write, a partial one too, then
    /// ask `upstream_poll_transmit` again.
    pub fn upstream_sent(&mut self, _now: u64, u: UpstreamId, n: usize) -> Result<(), Error> {
        let conn = self.upstreams.get_mut(&u.0).ok_or(Error::UnknownConnection)?;
        conn.sent(n);
        Ok(())
    }

    /// Upstream connection `u` is gone: connect failed, peer closed or reset, or the host
    /// closed it after `UpTransmit::Close`. A response in progress fails (or, if it was
    /// close-delimited, completes). Call exactly once per upstream id, after closing its socket.
    /// Afterwards drain `poll_connect` (a retry may want a new connection) and `poll_ready`
    /// (waiting viewers get an error response or a close).
    pub fn upstream_closed(&mut self, now: u64, u: UpstreamId) -> Result<(), Error> {
        let conn = self.upstreams.get_mut(&u.0).ok_or(Error::UnknownConnection)?;
        let mut events = Vec::new();
        let phase = conn.phase.clone();
        match phase {
            UpPhase::Connecting => {
                self.close_upstream(now, u.0);
                self.upstreams.remove(&u.0);
                self.conn_failed(now, u.0, phase, 502, "upstream connect failed");
                return Ok(());
            }
            UpPhase::AwaitHead if conn.reused && conn.received == 0 => {
                // A pooled connection the peer had closed: retry on a fresh one, silently.
                let fetch = conn.fetch.take();
                self.close_upstream(now, u.0);
                self.upstreams.remove(&u.0);
                if let Some(obj) = fetch {
                    self.redispatch_silently(now, obj);
                }
                return Ok(());
            }
            _ => conn.closed(&mut events),
        }
        self.handle_up_events(now, u.0, events);
        self.close_upstream(now, u.0);
        self.upstreams.remove(&u.0);
        Ok(())
    }

    /// The next connection with something to do (bytes to write or a close); the host then
    /// calls the matching `*_poll_transmit` until it returns `Wait` or the socket would block.
    pub fn poll_ready(&mut self) -> Option<ConnId> {
        while let Some(c) = self.ready.pop_front() {
            match c {
                ConnId::Viewer(v) => {
                    if let Some(conn) = self.viewers.get_mut(&v.0) {
                        conn.in_ready = false;
                        return Some(c);
                    }
                }
                ConnId::Upstream(u) => {
                    if let Some(conn) = self.upstreams.get_mut(&u.0) {
                        conn.in_ready = false;
                        return Some(c);
                    }
                }
            }
        }
        None
    }

    /// The earliest deadline (absolute, ns) at which `handle_timeout` must be called, if any.
    /// Re-ask after every call that fed input or drained output. `None`: no timer; sleep until
    /// a socket is ready.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.next()
    }

    /// Runs every timer due at `now`. Calling it early is harmless, so a host may call it every
    /// loop turn. Afterwards drain `poll_connect` and `poll_ready` (timeouts answer 408/504,
    /// close idle connections, refresh followed playlists) and re-ask `poll_timeout`.
    pub fn handle_timeout(&mut self, now: u64) {
        while let Some((at, key)) = self.timers.pop_due(now) {
            match key {
                TimerKey::Viewer(id) => self.viewer_timer(now, id, at),
                TimerKey::Upstream(id) => self.upstream_timer(now, id, at),
                TimerKey::Sweep => self.sweep(now),
                TimerKey::Follow(t) => self.follow_timer(now, t, at),
                TimerKey::Gate(id) => self.gate_timer(now, id),
            }
        }
    }

    /// The next admin event for the OSS. Drain after transmits and timers, every loop turn: the
    /// queue holds `Config::event_queue` events, then drops the oldest (counted in
    /// `Stats::events_dropped`).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    /// Counters, per channel and node-wide: a snapshot built on each call (allocates), with no
    /// effect on the node. Call it when asked (an admin port) or on a timer, not per event.
    pub fn stats(&self) -> Stats {
        let mut per: HashMap<u64, u64> = HashMap::new();
        for v in self.viewers.values() {
            if let Some(ch) = v.channel {
                *per.entry(ch).or_default() += 1;
            }
        }
        let channels = self
            .channels
            .iter()
            .filter_map(|c| {
                let mut s = self.chan_stats.get(&c.id)?.clone();
                s.viewer_connections = per.get(&c.id).copied().unwrap_or(0);
                if let Some(a) = self.audience.get(&c.id) {
                    s.viewers = a.current;
                    s.peak_viewers = a.peak;
                    s.viewer_seconds = a.viewer_seconds();
                }
                if let Some(r) = self.renditions.get(&c.id) {
                    s.renditions = r.snapshot();
                }
                Some(s)
            })
            .collect();
        Stats {
            channels,
            viewer_connections: self.viewers.len() as u64,
            upstream_connections: self.upstreams.len() as u64,
            store_objects: self.store.len() as u64,
            store_bytes: self.store.bytes(),
            evictions: self.store.evictions(),
            errors: self.errors.iter().map(|(s, n)| (*s, *n)).collect(),
            downstream_bytes: self.downstream_total,
            slow_viewers_dropped: self.slow_viewers,
            followed_playlists: self.followed() as u64,
            endpoints: self.endpoints.values().cloned().collect(),
            events_dropped: self.events.dropped(),
            draining: self.draining,
        }
    }

    fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn mark_ready(&mut self, c: ConnId) {
        let flag = match c {
            ConnId::Viewer(v) => self.viewers.get_mut(&v.0).map(|x| &mut x.in_ready),
            ConnId::Upstream(u) => self.upstreams.get_mut(&u.0).map(|x| &mut x.in_ready),
        };
        if let Some(flag) = flag {
            if !*flag {
                *flag = true;
                self.ready.push_back(c);
            }
        }
    }

    /// Unix seconds at `now`, from the host's wall-clock hint.
    fn date_header(&mut self, now: u64) -> Bytes {
        let unix_ns = self.wall.1.saturating_add(now.saturating_sub(self.wall.0));
        let secs = unix_ns / 1_000_000_000;
        if self.date.0 != secs {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            self.date = (secs, Bytes::from(httpdate::fmt_http_date(t)));
        }
        self.date.1.clone()
    }

    fn drop_channel_objects(&mut self, channel: u64) {
        // Complete objects go now; filling ones finish for their readers and are then dropped
        // because their channel no longer exists.
        self.store.drop_channel(channel);
    }
}
