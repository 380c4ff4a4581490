//! Prefetch (claim 9 and beyond): while a rendition has viewers the node follows its media
//! playlist itself — refreshes it when it expires and fetches each newly listed segment before
//! any viewer asks. A refreshed playlist is *gated*: viewers get it only once the segments it
//! newly lists are in the store (or a short deadline passed), so players never learn of a
//! segment the node does not have yet and every segment request is a hit on a warm store.
//! Following stops when nobody asked for the playlist for `follow_idle`.

use std::collections::{HashMap, HashSet, VecDeque};

use super::timers::TimerKey;
use super::Node;
use crate::media::{self, PlaylistInfo, PlaylistKind};
use crate::store::{Lookup, ObjId, ObjKind, ObjectKey};

/// A media playlist the node follows.
#[derive(Debug)]
pub(super) struct Follow {
    key: ObjectKey,
    last_viewer: u64,
    /// Segments already prefetched (bounded): never fetched twice, even after an eviction.
    prefetched: VecDeque<ObjectKey>,
    pub(super) scheduled: u64,
    /// Publication tracking (see `publish_aligned_refresh`): the last content seen, when the
    /// request that saw it was sent, and the window the last change was published in.
    last_sig: Option<u64>,
    last_sent: u64,
    published: Option<(u64, u64)>,
    expected: Option<(u64, u64)>,
}

/// A refreshed playlist held back until the segments it newly lists are complete.
#[derive(Debug)]
pub(super) struct Gate {
    pending: HashSet<ObjId>,
    fresh_until: u64,
    window: Vec<(ObjectKey, u64)>,
}

/// Prefetch state of a node.
#[derive(Debug, Default)]
pub(super) struct Prefetch {
    follows: HashMap<ObjectKey, Follow>,
    gates: HashMap<ObjId, Gate>,
    /// Segment fetch → playlists it gates.
    gated_by: HashMap<ObjId, Vec<ObjId>>,
    /// Follow timer tokens, both ways.
    tokens: HashMap<ObjectKey, u64>,
    keys: HashMap<u64, ObjectKey>,
}

const PREFETCHED_MEMORY: usize = 64;

impl Node {
    /// A viewer asked for a playlist: (re)start following it.
    pub(super) fn note_playlist_viewer(&mut self, now: u64, key: &ObjectKey) {
        if !self.cfg.prefetch {
            return;
        }
        let f = self.prefetch.follows.entry(key.clone()).or_insert_with(|| Follow {
            key: key.clone(),
            last_viewer: now,
            prefetched: VecDeque::new(),
            scheduled: u64::MAX,
            last_sig: None,
            last_sent: now,
            published: None,
            expected: None,
        });
        f.last_viewer = now;
    }

    /// A followed media playlist was refreshed (its request sent at `sent`, answered at `now`):
    /// learns when the CDN publishes it and returns when to refresh it next, so the node's copy
    /// lags the CDN's by about a round trip instead of up to half a target duration.
    ///
    /// A change seen after an unchanged answer brackets the publication in (that answer's
    /// request, now], narrowed by what was expected; the next one is due a target duration
    /// later. The first refresh of the next window goes to its middle (a bisection: each segment
    /// halves the window), the second just after its end. A publication later than expected is
    /// polled for every quarter target. At most two refreshes per target duration while the CDN
    /// keeps its cadence, as with half-target polling, and never more than a target apart.
    pub(super) fn publish_aligned_refresh(&mut self, key: &ObjectKey, now: u64, sent: u64, info: &PlaylistInfo, target: u64) -> Option<u64> {
        const MARGIN: u64 = 20 * crate::config::SECOND / 1000;
        let f = self.prefetch.follows.get_mut(key)?;
        let sig = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            // Segments, not LL-HLS parts (which change several times per target): the media
            // sequence and the listed duration change exactly when a segment is published.
            info.media_sequence.hash(&mut h);
            info.window_ms.hash(&mut h);
            h.finish()
        };
        let changed = f.last_sig.is_some_and(|prev| prev != sig);
        if changed {
            let mut lo = f.last_sent;
            // Published inside the window it was expected in: keep what that window knew.
            if let Some((elo, _)) = f.expected.take() {
                if elo > lo && elo < now {
                    lo = elo;
                }
            }
            f.published = Some((lo, now));
        }
        f.last_sig = Some(sig);
        f.last_sent = sent;
        let (lo, hi) = f.published?;
        if target == 0 || hi.saturating_sub(lo) > target {
            return None;
        }
        let (mut lo_n, hi_n) = (lo.saturating_add(target), hi.saturating_add(target));
        if !changed && sent > lo_n {
            // Not published when this request went out: later than that.
            lo_n = sent.min(hi_n);
        }
        f.expected = Some((lo_n, hi_n));
        let at = if changed && hi_n - lo_n > 4 * MARGIN {
            lo_n + (hi_n - lo_n) / 2
        } else if !changed && sent >= hi_n {
            now + target / 4
        } else {
            hi_n + MARGIN
        };
        Some(at.clamp(now + MARGIN, now + target))
    }

    /// A playlist fetch completed with 200: decides whether to gate it. Returns true when the
    /// playlist was gated (its completion is deferred to [`Node::release_gate`]).
    pub(super) fn gate_playlist(
        &mut self,
        now: u64,
        id: ObjId,
        info: &PlaylistInfo,
        fresh_until: u64,
        window: &[(ObjectKey, u64)],
    ) -> bool {
        if !self.cfg.prefetch || info.kind != PlaylistKind::HlsMedia {
            return false;
        }
        let Some(obj) = self.store.get(id) else { return false };
        let key = obj.key.clone();
        let channel = key.channel;
        if !self.prefetch.follows.contains_key(&key) {
            return false;
        }
        if self.store.bytes() > self.cfg.memory_budget / 10 * 9 {
            return false;
        }
        let Some(prefix) = self.channels.by_id(channel).map(|c| c.instruction.path_prefix.clone()) else { return false };
        let newest: Vec<String> = info.uris.iter().rev().take(self.cfg.prefetch_segments).cloned().collect();
        let mut pending = HashSet::new();
        for uri in newest.into_iter().rev() {
            let Some(abs) = media::resolve(&key.path, &uri) else { continue };
            if !abs.starts_with(&prefix) || media::is_playlist_path(abs.split('?').next().unwrap_or("")) {
                continue;
            }
            let (p, q) = match abs.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (abs.as_str(), None),
            };
            let skey = ObjectKey { channel, path: super::serve::normalize_key(p, q).into() };
            let already = self.prefetch.follows.get(&key).is_some_and(|f| f.prefetched.contains(&skey));
            let seg = match self.store.lookup(&skey, now) {
                Lookup::Filling(sid) => Some(sid),
                Lookup::Hit(_) => None,
                Lookup::Miss if already => None,
                Lookup::Miss => {
                    let upstream_path = abs.clone();
                    let sid = self.store.insert_filling(skey.clone(), ObjKind::Segment, now);
                    if let Some(s) = self.chan_stats.get_mut(&channel) {
                        s.prefetches += 1;
                    }
                    if let Some(f) = self.prefetch.follows.get_mut(&key) {
                        f.prefetched.push_back(skey.clone());
                        if f.prefetched.len() > PREFETCHED_MEMORY {
                            f.prefetched.pop_front();
                        }
                    }
                    self.start_fetch(now, sid, channel, upstream_path);
                    // A fetch that failed at once (no endpoint), or an object another node had
                    // fetched already (shared store), leaves nothing to wait for.
                    self.store.get(sid).filter(|o| o.state == crate::store::ObjState::Filling).map(|_| sid)
                }
            };
            if let Some(sid) = seg {
                pending.insert(sid);
                self.prefetch.gated_by.entry(sid).or_default().push(id);
            }
        }
        if pending.is_empty() {
            return false;
        }
        self.prefetch.gates.insert(id, Gate { pending, fresh_until, window: window.to_vec() });
        self.timers.push(now + self.cfg.gate_timeout, TimerKey::Gate(id));
        true
    }

    /// A segment fetch ended (complete or failed): open the gates it held.
    pub(super) fn segment_settled(&mut self, now: u64, sid: ObjId) {
        let Some(playlists) = self.prefetch.gated_by.remove(&sid) else { return };
        for pid in playlists {
            let open = match self.prefetch.gates.get_mut(&pid) {
                Some(g) => {
                    g.pending.remove(&sid);
                    g.pending.is_empty()
                }
                None => false,
            };
            if open {
                self.release_gate(now, pid);
            }
        }
    }

    /// Completes a gated playlist: viewers waiting for it get it now.
    pub(super) fn release_gate(&mut self, now: u64, pid: ObjId) {
        let Some(gate) = self.prefetch.gates.remove(&pid) else { return };
        for sid in gate.pending {
            if let Some(v) = self.prefetch.gated_by.get_mut(&sid) {
                v.retain(|p| *p != pid);
            }
        }
        self.finish_playlist(now, pid, gate.fresh_until, &gate.window);
    }

    /// Marks a playlist complete, its segments in the window, wakes its readers, and keeps
    /// following it while it has viewers.
    pub(super) fn finish_playlist(&mut self, now: u64, id: ObjId, fresh_until: u64, window: &[(ObjectKey, u64)]) {
        let key = self.store.get(id).map(|o| o.key.clone());
        let alive = key.as_ref().is_some_and(|k| self.channels.by_id(k.channel).is_some());
        self.store.complete(id, now, if alive { fresh_until } else { now });
        for (k, until) in window {
            self.store.mark_in_window(k, *until);
        }
        self.object_complete(now, id);
        if let Some(key) = key {
            self.schedule_follow(&key, fresh_until);
        }
    }

    fn schedule_follow(&mut self, key: &ObjectKey, at: u64) {
        let due = self.prefetch.follows.get(key).is_some_and(|f| at < f.scheduled);
        if due {
            let token = self.follow_token(key);
            if let Some(f) = self.prefetch.follows.get_mut(key) {
                f.scheduled = at;
            }
            self.timers.push(at, TimerKey::Follow(token));
        }
    }

    /// Timer keys carry a number; follows are found by a stable hash of their key.
    fn follow_token(&mut self, key: &ObjectKey) -> u64 {
        if let Some(t) = self.prefetch.tokens.get(key) {
            return *t;
        }
        let t = self.alloc_id();
        self.prefetch.tokens.insert(key.clone(), t);
        self.prefetch.keys.insert(t, key.clone());
        t
    }

    /// The follow timer: refresh the playlist if it has had viewers lately, else stop.
    pub(super) fn follow_timer(&mut self, now: u64, token: u64, pushed: u64) {
        let Some(key) = self.prefetch.keys.get(&token).cloned() else { return };
        let Some(f) = self.prefetch.follows.get_mut(&key) else { return };
        if f.scheduled != pushed {
            return;
        }
        f.scheduled = u64::MAX;
        if now.saturating_sub(f.last_viewer) > self.cfg.follow_idle || self.channels.by_id(key.channel).is_none() {
            self.prefetch.follows.remove(&key);
            self.prefetch.keys.remove(&token);
            self.prefetch.tokens.remove(&key);
            return;
        }
        let channel = key.channel;
        let path = f.key.path.to_string();
        match self.store.lookup(&key, now) {
            Lookup::Miss => self.prefetch(now, channel, &path),
            Lookup::Hit(id) => {
                let at = self.store.get(id).map_or(now + self.cfg.playlist_default_ttl, |o| o.fresh_until);
                self.schedule_follow(&key, at);
            }
            Lookup::Filling(_) => {} // its completion schedules the next refresh
        }
    }

    /// Gate deadline: release whatever is still waiting.
    pub(super) fn gate_timer(&mut self, now: u64, pid: ObjId) {
        if self.prefetch.gates.contains_key(&pid) {
            self.release_gate(now, pid);
        }
    }

    /// Followed playlists (for stats and tests).
    pub(super) fn followed(&self) -> usize {
        self.prefetch.follows.len()
    }
}
