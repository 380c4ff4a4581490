//! Upstream fetches: one per filling object. Connection pool per endpoint, one retry on the
//! next endpoint, freshness on completion, and failure (502/504, object dropped).

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::{ConnId, Node, UpstreamId};
use crate::admin::{EndpointStats, Event, UpstreamErrorKind};
use crate::media;
use crate::store::{ObjId, ObjKind, ObjectKey};
use crate::upstream::{UpConn, UpEvent, UpPhase};

/// Connections toward one endpoint.
#[derive(Debug, Default)]
pub(super) struct Pool {
    /// Connected, idle connections.
    idle: Vec<u64>,
    /// Connections open or opening (counted against the pool size).
    open: usize,
    /// Fetches waiting for a connection.
    waiting: VecDeque<ObjId>,
}

/// One upstream fetch (of one object).
#[derive(Debug)]
pub(super) struct Fetch {
    channel: u64,
    path: String,
    host: String,
    endpoints: Vec<SocketAddr>,
    attempt: usize,
    silent_retries: u8,
    conn: Option<u64>,
    /// An LL-HLS blocking playlist reload (`_HLS_msn`): the upstream may hold it up to three
    /// target durations, and running out of that time is a 503 (RFC 8216bis §6.2.5.2).
    blocking: Option<u64>,
    /// Rendition whose upstream bytes these are.
    rendition: Option<u16>,
    /// When the current attempt's request went to a connection (upstream latency).
    sent_at: u64,
}

/// How long a segment's 404 is kept when the CDN says nothing (see `complete_object`).
const SEGMENT_NEGATIVE_TTL: u64 = 100 * crate::config::SECOND / 1000;

impl Node {
    /// Creates the fetch for a new filling object and sends it on its way.
    pub(super) fn start_fetch(&mut self, now: u64, obj: ObjId, channel: u64, path: String) {
        self.start_fetch_with(now, obj, channel, path, None);
    }

    /// Like `start_fetch`, for an LL-HLS blocking playlist reload the upstream may hold `hold` ns.
    pub(super) fn start_fetch_blocking(&mut self, now: u64, obj: ObjId, channel: u64, path: String, hold: u64) {
        self.start_fetch_with(now, obj, channel, path, Some(hold));
    }

    fn start_fetch_with(&mut self, now: u64, obj: ObjId, channel: u64, path: String, blocking: Option<u64>) {
        // With a store shared by several nodes, one of them fetches for all.
        if let super::shared::Shared::Done = self.shared_claim(now, obj, channel) {
            return;
        }
        let Some(ch) = self.channels.by_id(channel) else { return };
        let rendition = self.store.get(obj).and_then(|o| {
            let key = &o.key.path;
            let bare = key.split('?').next().unwrap_or("");
            self.renditions.entry(channel).or_default().classify(bare, key, o.kind == ObjKind::Playlist)
        });
        let fetch = Fetch {
            channel,
            path,
            host: ch.host.clone(),
            endpoints: ch.instruction.endpoints.clone(),
            attempt: 0,
            silent_retries: 0,
            conn: None,
            blocking,
            rendition,
            sent_at: now,
        };
        self.fetches.insert(obj, fetch);
        self.timers.arm_sweep(now);
        self.dispatch(now, obj);
    }

    /// Fetches `path` of `channel` now unless it is cached or already being fetched.
    pub(super) fn prefetch(&mut self, now: u64, channel: u64, path: &str) {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let key = ObjectKey { channel, path: super::serve::normalize_key(path, query).into() };
        if self.store.lookup(&key, now) == crate::store::Lookup::Miss {
            let kind = if media::is_playlist_path(path) { ObjKind::Playlist } else { ObjKind::Segment };
            let upstream_path = key.path.to_string();
            let id = self.store.insert_filling(key, kind, now);
            self.start_fetch(now, id, channel, upstream_path);
        }
    }

    fn dispatch(&mut self, now: u64, obj: ObjId) {
        let Some(f) = self.fetches.get(&obj) else { return };
        let Some(&ep) = f.endpoints.get(f.attempt % f.endpoints.len().max(1)) else { return };
        let pool_size = self.cfg.upstream_pool_size.max(1);
        let pool = self.pools.entry(ep).or_default();
        if let Some(u) = pool.idle.pop() {
            self.assign(now, u, obj);
        } else if pool.open < pool_size {
            self.open_conn(now, obj, ep);
        } else {
            pool.waiting.push_back(obj);
        }
    }

    /// Asks the host for a new connection to `ep` for `obj` (the pool has room).
    fn open_conn(&mut self, now: u64, obj: ObjId, ep: SocketAddr) {
        self.pools.entry(ep).or_default().open += 1;
        let id = self.alloc_id();
        let mut conn = UpConn::new(ep, Some(obj));
        conn.deadline = now + self.cfg.connect_timeout;
        self.upstreams.insert(id, conn);
        self.connects.push_back((UpstreamId(id), ep));
        if let Some(f) = self.fetches.get_mut(&obj) {
            f.conn = Some(id);
        }
        self.reschedule_upstream(id);
    }

    fn assign(&mut self, now: u64, u: u64, obj: ObjId) {
        let (Some(f), Some(conn)) = (self.fetches.get_mut(&obj), self.upstreams.get_mut(&u)) else { return };
        conn.start_request(obj, &f.path, &f.host);
        conn.deadline = now.saturating_add(f.blocking.unwrap_or(self.cfg.first_byte_timeout));
        f.conn = Some(u);
        f.sent_at = now;
        if let Some(s) = self.chan_stats.get_mut(&f.channel) {
            s.upstream_requests += 1;
        }
        self.reschedule_upstream(u);
        self.mark_ready(ConnId::Upstream(UpstreamId(u)));
    }

    /// A connection became idle: give it the fetch it was opened for, or a waiting one, or
    /// park it in the pool.
    pub(super) fn conn_idle(&mut self, now: u64, u: u64) {
        let Some(conn) = self.upstreams.get_mut(&u) else { return };
        let ep = conn.endpoint;
        if let Some(obj) = conn.fetch.take() {
            if self.fetches.contains_key(&obj) {
                self.assign(now, u, obj);
                return;
            }
        }
        let pool = self.pools.entry(ep).or_default();
        while let Some(obj) = pool.waiting.pop_front() {
            if self.fetches.contains_key(&obj) {
                self.assign(now, u, obj);
                return;
            }
        }
        pool.idle.push(u);
        if let Some(conn) = self.upstreams.get_mut(&u) {
            conn.deadline = now + self.cfg.pool_idle_timeout;
        }
        self.reschedule_upstream(u);
    }

    /// Asks the host to close `u` and frees its pool slot (a waiting fetch may open another).
    /// Idempotent.
    pub(super) fn close_upstream(&mut self, now: u64, u: u64) {
        let Some(conn) = self.upstreams.get_mut(&u) else { return };
        if conn.released {
            return;
        }
        conn.released = true;
        conn.phase = UpPhase::Closing;
        conn.deadline = u64::MAX;
        let ep = conn.endpoint;
        if let Some(pool) = self.pools.get_mut(&ep) {
            pool.idle.retain(|x| *x != u);
            pool.open = pool.open.saturating_sub(1);
        }
        self.mark_ready(ConnId::Upstream(UpstreamId(u)));
        self.refill_pool(now, ep);
    }

    /// Opens connections for waiting fetches while the pool has room.
    fn refill_pool(&mut self, now: u64, ep: SocketAddr) {
        loop {
            let pool_size = self.cfg.upstream_pool_size.max(1);
            let Some(pool) = self.pools.get_mut(&ep) else { return };
            if pool.open >= pool_size {
                return;
            }
            let Some(obj) = pool.waiting.pop_front() else { return };
            if self.fetches.contains_key(&obj) {
                // No idle connection exists (it would have taken the fetch): this opens one.
                self.dispatch(now, obj);
            }
        }
    }

    /// A pooled connection turned out dead before answering: try again, once, not counted.
    pub(super) fn redispatch_silently(&mut self, now: u64, obj: ObjId) {
        let Some(f) = self.fetches.get_mut(&obj) else { return };
        f.conn = None;
        if f.silent_retries < 1 {
            f.silent_retries += 1;
            // On a fresh connection when the pool has room: the other idle ones are as suspect
            // (a CDN restart or keep-alive timeout closes them all at once).
            let ep = f.endpoints.get(f.attempt % f.endpoints.len().max(1)).copied();
            let room = ep.is_some_and(|ep| self.pools.get(&ep).map_or(0, |p| p.open) < self.cfg.upstream_pool_size.max(1));
            match ep {
                Some(ep) if room => self.open_conn(now, obj, ep),
                _ => self.dispatch(now, obj),
            }
        } else {
            self.fetch_failed(now, obj, 502, UpstreamErrorKind::Malformed, "upstream closed before the head", true);
        }
    }

    /// A connection failed (connect, timeout) in `phase`: fail or retry its fetch.
    pub(super) fn conn_failed(&mut self, now: u64, u: u64, phase: UpPhase, status: u16, reason: &'static str) {
        let obj = match self.upstreams.get_mut(&u) {
            Some(c) => c.fetch.take(),
            None => self.fetches.iter().find(|(_, f)| f.conn == Some(u)).map(|(o, _)| *o),
        };
        let Some(obj) = obj else { return };
        let head_sent = phase == UpPhase::Body;
        let blocking = self.fetches.get(&obj).is_some_and(|f| f.blocking.is_some());
        if blocking && status == 504 && phase == UpPhase::AwaitHead {
            // The part did not appear within three target durations.
            self.fetch_failed(now, obj, 503, UpstreamErrorKind::Timeout, "blocking playlist reload timed out", false);
            return;
        }
        let kind = match phase {
            _ if status == 504 => UpstreamErrorKind::Timeout,
            UpPhase::Connecting => UpstreamErrorKind::Connect,
            _ => UpstreamErrorKind::Malformed,
        };
        self.fetch_failed(now, obj, status, kind, reason, !head_sent);
    }

    /// Handles what a response turned into.
    pub(super) fn handle_up_events(&mut self, now: u64, u: u64, events: Vec<UpEvent>) {
        let obj = self.upstreams.get(&u).and_then(|c| c.fetch);
        let mut obj = obj.or_else(|| self.fetches.iter().find(|(_, f)| f.conn == Some(u)).map(|(o, _)| *o));
        if let Some(c) = self.upstreams.get_mut(&u) {
            if c.phase == UpPhase::Body {
                c.deadline = now + self.cfg.body_idle_timeout;
            }
        }
        for ev in events {
            let Some(id) = obj else {
                // Bytes on a connection with no fetch: close it.
                self.close_upstream(now, u);
                return;
            };
            match ev {
                UpEvent::Head(head) => {
                    if head.status >= 500 {
                        if let Some(c) = self.upstreams.get_mut(&u) {
                            c.fetch = None;
                        }
                        self.close_upstream(now, u);
                        // A blocking playlist reload the CDN gave up on is a 503 for every held viewer (RFC
                        // 8216bis §6.2.5.2), not a failure to retry elsewhere.
                        if head.status == 503 && self.fetches.get(&id).is_some_and(|f| f.blocking.is_some()) {
                            self.fetch_failed(now, id, 503, UpstreamErrorKind::Status, "blocking playlist reload timed out upstream", false);
                            return;
                        }
                        self.fetch_failed(now, id, 502, UpstreamErrorKind::Status, "upstream answered 5xx", true);
                        return;
                    }
                    if let Some(f) = self.fetches.get(&id).filter(|f| f.blocking.is_none()) {
                        if let Some(s) = self.chan_stats.get_mut(&f.channel) {
                            s.upstream_latency.observe(now.saturating_sub(f.sent_at));
                        }
                    }
                    if let Some(o) = self.store.get_mut(id) {
                        o.no_store = head.no_store;
                        o.head = Some(head);
                    }
                    self.shared_head(id);
                    self.object_head(now, id);
                }
                UpEvent::Data(chunk) => {
                    if let Some(f) = self.fetches.get(&id) {
                        if let Some(s) = self.chan_stats.get_mut(&f.channel) {
                            s.upstream_bytes += chunk.len() as u64;
                        }
                        if let Some(r) = f.rendition.and_then(|r| self.renditions.get_mut(&f.channel)?.stats_mut(r)) {
                            r.upstream_bytes += chunk.len() as u64;
                        }
                    }
                    self.store.append(id, chunk.clone());
                    self.shared_data(id, &chunk);
                    self.object_data(now, id, chunk);
                }
                UpEvent::Done { reusable } => {
                    let sent_at = self.fetches.remove(&id).map_or(now, |f| f.sent_at);
                    if let Some(ep) = self.upstreams.get(&u).map(|c| c.endpoint) {
                        self.endpoint_ok(ep);
                    }
                    self.complete_object(now, id, sent_at);
                    obj = None;
                    if reusable {
                        self.conn_idle(now, u);
                    } else {
                        self.close_upstream(now, u);
                    }
                }
                UpEvent::Failed(e) => {
                    let head_known = self.store.get(id).is_some_and(|o| o.head.is_some());
                    if let Some(c) = self.upstreams.get_mut(&u) {
                        c.fetch = None;
                    }
                    self.close_upstream(now, u);
                    self.fetch_failed(now, id, e.status.max(502), UpstreamErrorKind::Malformed, e.reason, !head_known);
                    return;
                }
            }
        }
        self.reschedule_upstream(u);
    }

    /// Retries on the next endpoint (once, before anything reached a viewer), else fails the
    /// object: waiting viewers get `status`, streaming ones are closed, nothing is kept.
    pub(super) fn fetch_failed(
        &mut self,
        now: u64,
        obj: ObjId,
        status: u16,
        kind: UpstreamErrorKind,
        reason: &str,
        retryable: bool,
    ) {
        let Some(f) = self.fetches.get_mut(&obj) else { return };
        f.conn = None;
        if let Some(s) = self.chan_stats.get_mut(&f.channel) {
            s.upstream_errors.add(kind);
        }
        let len = f.endpoints.len().max(1);
        let failed_ep = f.endpoints.get(f.attempt % len).copied();
        let channel = f.channel;
        if let Some(ep) = failed_ep {
            self.endpoint_failed(channel, ep, reason);
        }
        let Some(f) = self.fetches.get_mut(&obj) else { return };
        if retryable && f.attempt == 0 && f.endpoints.len() > 1 {
            f.attempt = 1;
            let next = f.endpoints.get(1).copied();
            if let (Some(from), Some(to)) = (failed_ep, next) {
                let channel = self.chan_stats.get(&channel).map(|s| s.channel.clone()).unwrap_or_default();
                self.events.push(Event::Failover { channel, from: from.to_string(), to: to.to_string() });
            }
            self.dispatch(now, obj);
            return;
        }
        let Some(f) = self.fetches.remove(&obj) else { return };
        let mut channel_name = String::new();
        if let Some(s) = self.chan_stats.get_mut(&f.channel) {
            s.upstream_failures += 1;
            channel_name = s.channel.clone();
        }
        self.events.push(Event::UpstreamFailed {
            channel: channel_name,
            path: f.path,
            status,
            reason: reason.to_string(),
        });
        self.shared_failed(obj, status);
        if let Some(o) = self.store.remove(obj) {
            self.object_failed(now, o.readers, obj, status);
        }
        self.segment_settled(now, obj);
    }

    /// Freshness of a completed object, then wakes its readers (a refreshed playlist may
    /// first wait for the segments it newly lists: see `follow`).
    /// `sent_at`: when its request went to the CDN (a playlist's content is at least that recent).
    pub(super) fn complete_object(&mut self, now: u64, id: ObjId, sent_at: u64) {
        self.complete_object_from(now, id, sent_at, None);
    }

    /// As [`complete_object`](Self::complete_object); `fetched_elsewhere`: the object came
    /// from another node sharing the store, which completed it at `.0` and keeps it fresh
    /// until `.1`. A playlist then teaches this node when the CDN published it (as if this node
    /// had fetched it) and stays fresh exactly as long as there, so the nodes refresh it together
    /// (once, through the shared store) instead of each on a schedule of its own.
    pub(super) fn complete_object_from(&mut self, now: u64, id: ObjId, sent_at: u64, fetched_elsewhere: Option<(u64, u64)>) {
        let Some(o) = self.store.get(id) else { return };
        let channel_alive = self.channels.by_id(o.key.channel).is_some();
        let head = o.head.as_ref();
        let status = head.map_or(0, |h| h.status);
        let max_age = head.and_then(|h| h.max_age).map(|s| s.saturating_mul(crate::config::SECOND));
        let second = crate::config::SECOND;
        let kind = o.kind;
        if kind == ObjKind::Playlist && matches!(status, 200 | 203) {
            let body: Vec<u8> = o.chunks.iter().flat_map(|c| c.iter().copied()).collect();
            let base = o.key.path.to_string();
            let channel = o.key.channel;
            let info = media::parse_playlist(&base, &body).ok();
            let mut window: Vec<(ObjectKey, u64)> = Vec::new();
            if let Some(info) = &info {
                let until = now.saturating_add(info.window_ms.saturating_mul(1_000_000)).saturating_add(self.cfg.window_grace);
                for uri in &info.uris {
                    if let Some(abs) = media::resolve(&base, uri) {
                        let (p, q) = match abs.split_once('?') {
                            Some((p, q)) => (p, Some(q)),
                            None => (abs.as_str(), None),
                        };
                        let path = super::serve::normalize_key(p, q);
                        window.push((ObjectKey { channel, path: path.into() }, until));
                    }
                }
            }
            if let Some(info) = &info {
                let bare = base.split('?').next().unwrap_or("");
                let r = self.renditions.entry(channel).or_default();
                match info.kind {
                    media::PlaylistKind::HlsMedia => r.media_playlist(bare, window.iter().map(|(k, until)| (&*k.path, *until))),
                    _ => r.master_playlist(bare),
                }
            }
            let target = info.as_ref().and_then(|i| i.target_duration_ms).map(|ms| ms.saturating_mul(1_000_000));
            if let Some(t) = target {
                self.note_target(channel, t);
            }
            let half_target = target.map(|t| t / 2);
            if let Some(seq) = info.as_ref().filter(|i| i.kind == media::PlaylistKind::HlsMedia).and_then(|i| i.media_sequence) {
                let key = ObjectKey { channel, path: base.clone().into() };
                self.check_media_sequence(&key, seq);
            }
            let ttl = max_age.or(half_target).unwrap_or(self.cfg.playlist_default_ttl);
            let mut fresh_until = if channel_alive { now.saturating_add(ttl) } else { now };
            if let (Some(info), Some(t), true) = (info.as_ref().filter(|i| i.kind == media::PlaylistKind::HlsMedia), target, channel_alive) {
                let key = ObjectKey { channel, path: base.clone().into() };
                // Refreshed when the CDN is expected to publish, not on a fixed TTL (which lags).
                let done_at = fetched_elsewhere.map_or(now, |(at, _)| at.min(now));
                if let Some(at) = self.publish_aligned_refresh(&key, done_at, sent_at, info, t) {
                    fresh_until = at;
                }
            }
            if let (Some((_, there)), true) = (fetched_elsewhere, channel_alive) {
                fresh_until = there;
            }
            self.shared_complete(id, fresh_until, sent_at, now);
            if let Some(info) = &info {
                if channel_alive && self.gate_playlist(now, id, info, fresh_until, &window) {
                    return;
                }
            }
            self.finish_playlist(now, id, fresh_until, &window);
        } else {
            let ttl = match (status, kind) {
                (200 | 203, _) => max_age.unwrap_or(self.cfg.segment_ttl),
                // A live segment asked a moment before it exists (a player's clock ahead, DASH
                // availability times) must not stay 404 once it does: without the CDN's own
                // max-age, a segment's 404 lives 100 ms - enough to collapse a burst of viewers.
                (404 | 410, ObjKind::Segment) => max_age.unwrap_or(SEGMENT_NEGATIVE_TTL).min(self.cfg.negative_ttl).min(second),
                (404 | 410, _) => max_age.unwrap_or(second).min(self.cfg.negative_ttl).min(second),
                _ => 0,
            };
            let fresh_until = if channel_alive { now.saturating_add(ttl) } else { now };
            self.store.complete(id, now, fresh_until);
            self.shared_complete(id, fresh_until, sent_at, now);
            self.object_complete(now, id);
            self.segment_settled(now, id);
        }
        self.enforce_budget(now);
    }

    /// A rendition's media sequence went backwards (an origin restart): its segments may come
    /// back under reused names with other bytes, so everything cached beside the playlist goes.
    fn check_media_sequence(&mut self, key: &ObjectKey, seq: u64) {
        let base = key.path.split('?').next().unwrap_or("").to_string();
        let prev = self.media_sequences.insert(base.clone(), seq);
        if prev.is_some_and(|p| seq < p) {
            let dir = match base.rfind('/') {
                Some(i) => base[..=i].to_string(),
                None => return,
            };
            let dropped = self.store.drop_under(key.channel, &dir, &key.path);
            let channel = self.chan_stats.get(&key.channel).map(|s| s.channel.clone()).unwrap_or_default();
            self.events.push(Event::RenditionReset { channel, playlist: base, from: prev.unwrap_or(0), to: seq, dropped: dropped as u64 });
        }
    }

    /// Evicts for the memory budget; tells the OSS when it had to.
    pub(super) fn enforce_budget(&mut self, now: u64) {
        let evicted = self.store.enforce_budget(now);
        if evicted > 0 {
            self.events.push(Event::MemoryPressure { evicted: evicted as u64, store_bytes: self.store.bytes() });
        }
    }

    fn endpoint_failed(&mut self, channel: u64, ep: SocketAddr, reason: &str) {
        let e = self.endpoints.entry(ep).or_insert_with(|| EndpointStats { endpoint: ep.to_string(), healthy: true, ..Default::default() });
        e.failures += 1;
        e.consecutive_failures += 1;
        e.last_error = reason.to_string();
        if e.healthy {
            e.healthy = false;
            let channel = self.chan_stats.get(&channel).map(|s| s.channel.clone()).unwrap_or_default();
            self.events.push(Event::EndpointFailed { channel, endpoint: ep.to_string(), reason: reason.to_string() });
        }
    }

    fn endpoint_ok(&mut self, ep: SocketAddr) {
        let e = self.endpoints.entry(ep).or_insert_with(|| EndpointStats { endpoint: ep.to_string(), healthy: true, ..Default::default() });
        e.successes += 1;
        e.consecutive_failures = 0;
        if !e.healthy {
            e.healthy = true;
            self.events.push(Event::EndpointRecovered { endpoint: ep.to_string() });
        }
    }
}
