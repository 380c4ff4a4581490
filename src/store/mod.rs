//! `store` (seed M6): the segment fan-out cache.
//!
//! One [`Object`] per key (channel, path, normalized query). An object is *filling* while its
//! upstream fetch runs, then *complete*; a failed fetch removes it (it is never kept, never
//! served as complete). Body chunks are shared [`Bytes`]: viewers hold references, never copies.
//! The store only keeps objects and their bookkeeping; who reads what is the node's business
//! (`readers` lists the viewers to wake).

mod compact;
pub use compact::{file_of, file_range, FILE_MIN, MAX_FILES};
pub mod shared;

use std::collections::HashMap;

use bytes::Bytes;

use crate::http::ResponseHead;
use crate::idmap::IdMap;

/// Identifies an object in the store; never reused.
pub type ObjId = u64;

/// The key of an object: channel index and path with its normalized query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    /// Channel (its slot in the node's channel table, plus its generation).
    pub channel: u64,
    /// Path and normalized query.
    pub path: Box<str>,
}

/// What an object is, which decides how long it stays fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjKind {
    /// `.m3u8` / `.mpd`: short-lived, refreshed.
    Playlist,
    /// Anything else: immutable while in the live window.
    Segment,
}

/// Where an object is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjState {
    /// The upstream fetch is running; readers get bytes as they arrive.
    Filling,
    /// The whole body is here.
    Complete,
}

/// One cached (or arriving) object.
#[derive(Debug)]
pub struct Object {
    /// Its key.
    pub key: ObjectKey,
    /// Playlist or segment.
    pub kind: ObjKind,
    /// Filling or complete.
    pub state: ObjState,
    /// The upstream head, once it arrived.
    pub head: Option<ResponseHead>,
    /// Body chunks, in order.
    pub chunks: Vec<Bytes>,
    /// Body bytes so far.
    pub len: u64,
    /// When it completed (host time, ns).
    pub completed_at: u64,
    /// Served while `now < fresh_until` (complete objects only).
    pub fresh_until: u64,
    /// Segments: last moment a playlist listed it, plus window and grace.
    pub window_until: u64,
    /// Last time a viewer asked for it (LRU).
    pub last_access: u64,
    /// Keep nothing once complete (`no-store`).
    pub no_store: bool,
    /// Viewers to wake on progress: (viewer, attach token). Stale entries are skipped.
    pub readers: Vec<(u64, u64)>,
}

impl Object {
    /// True when complete and still fresh at `now`.
    pub fn is_fresh(&self, now: u64) -> bool {
        self.state == ObjState::Complete && now < self.fresh_until
    }
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Complete and fresh.
    Hit(ObjId),
    /// Being fetched now: attach and read while it arrives.
    Filling(ObjId),
    /// Absent or stale.
    Miss,
}

/// The store: objects, their index by key, and the byte budget.
#[derive(Debug)]
pub struct Store {
    objects: IdMap<Object>,
    index: HashMap<ObjectKey, ObjId>,
    next_id: ObjId,
    bytes: u64,
    budget: u64,
    evictions: u64,
    file_backed: bool,
}

impl Store {
    /// An empty store that tries to hold at most `budget` body bytes.
    pub fn new(budget: u64) -> Self {
        Store { objects: IdMap::default(), index: HashMap::new(), next_id: 1, bytes: 0, budget, evictions: 0, file_backed: false }
    }

    /// Compacts large completed objects into memory-backed files (see [`file_of`]).
    pub fn set_file_backed(&mut self, on: bool) {
        self.file_backed = on;
    }

    /// Body bytes the store holds (complete and filling objects).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Number of objects held.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True when the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Objects evicted for the budget so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Looks `key` up at `now`; a stale complete object is dropped (never served).
    pub fn lookup(&mut self, key: &ObjectKey, now: u64) -> Lookup {
        let Some(&id) = self.index.get(key) else { return Lookup::Miss };
        let Some(obj) = self.objects.get_mut(&id) else {
            self.index.remove(key);
            return Lookup::Miss;
        };
        match obj.state {
            ObjState::Filling => {
                obj.last_access = now;
                Lookup::Filling(id)
            }
            ObjState::Complete if now < obj.fresh_until => {
                obj.last_access = now;
                Lookup::Hit(id)
            }
            ObjState::Complete => {
                self.remove(id);
                Lookup::Miss
            }
        }
    }

    /// Creates a filling object for `key` (replacing any index entry) and returns its id.
    pub fn insert_filling(&mut self, key: ObjectKey, kind: ObjKind, now: u64) -> ObjId {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(old) = self.index.insert(key.clone(), id) {
            self.remove_object(old);
        }
        self.objects.insert(
            id,
            Object {
                key,
                kind,
                state: ObjState::Filling,
                head: None,
                chunks: Vec::new(),
                len: 0,
                completed_at: 0,
                fresh_until: 0,
                window_until: 0,
                last_access: now,
                no_store: false,
                readers: Vec::new(),
            },
        );
        id
    }

    /// The object with this id.
    pub fn get(&self, id: ObjId) -> Option<&Object> {
        self.objects.get(&id)
    }

    /// The object with this id, mutably.
    pub fn get_mut(&mut self, id: ObjId) -> Option<&mut Object> {
        self.objects.get_mut(&id)
    }

    /// The id indexed under `key`, whatever its state.
    pub fn id_of(&self, key: &ObjectKey) -> Option<ObjId> {
        self.index.get(key).copied()
    }

    /// Appends a body chunk to a filling object.
    pub fn append(&mut self, id: ObjId, chunk: Bytes) {
        if let Some(obj) = self.objects.get_mut(&id) {
            obj.len += chunk.len() as u64;
            self.bytes += chunk.len() as u64;
            obj.chunks.push(chunk);
        }
    }

    /// Marks an object complete, fresh until `fresh_until`. A `no-store` object or one with
    /// no freshness is dropped from the index at once (never served again), but the object
    /// itself stays until the next [`Store::expire`], so the node can still finish the
    /// responses of the readers that attached while it filled.
    pub fn complete(&mut self, id: ObjId, now: u64, fresh_until: u64) {
        let drop_now = match self.objects.get_mut(&id) {
            Some(obj) => {
                obj.state = ObjState::Complete;
                obj.completed_at = now;
                if obj.len <= compact::COMPACT_MAX {
                    if let Some(one) = compact::concat(&obj.chunks, self.file_backed) {
                        obj.chunks = vec![one];
                    }
                }
                obj.fresh_until = fresh_until;
                let drop_now = obj.no_store || fresh_until <= now;
                if drop_now {
                    obj.fresh_until = now;
                }
                drop_now.then(|| obj.key.clone())
            }
            None => None,
        };
        if let Some(key) = drop_now {
            if self.index.get(&key) == Some(&id) {
                self.index.remove(&key);
            }
        }
    }

    /// Removes an object (failed fetch, withdrawn channel, expiry). Returns it.
    pub fn remove(&mut self, id: ObjId) -> Option<Object> {
        let obj = self.remove_object(id)?;
        if self.index.get(&obj.key) == Some(&id) {
            self.index.remove(&obj.key);
        }
        Some(obj)
    }

    fn remove_object(&mut self, id: ObjId) -> Option<Object> {
        let obj = self.objects.remove(&id)?;
        self.bytes -= obj.len;
        Some(obj)
    }

    /// Extends the live-window mark of the segment under `key`, if present.
    pub fn mark_in_window(&mut self, key: &ObjectKey, until: u64) {
        if let Some(obj) = self.index.get(key).and_then(|id| self.objects.get_mut(id)) {
            obj.window_until = obj.window_until.max(until);
            if obj.kind == ObjKind::Segment && obj.state == ObjState::Complete {
                obj.fresh_until = obj.fresh_until.max(until);
            }
        }
    }

    /// Drops the complete objects of `channel` whose path starts with `dir`, except `keep`;
    /// returns how many (filling ones finish for their readers).
    pub fn drop_under(&mut self, channel: u64, dir: &str, keep: &str) -> usize {
        let ids: Vec<ObjId> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o.key.channel == channel && o.state == ObjState::Complete && o.key.path.starts_with(dir) && &*o.key.path != keep
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.remove(*id);
        }
        ids.len()
    }

    /// Drops complete objects past their freshness; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let stale: Vec<ObjId> = self
            .objects
            .iter()
            .filter(|(_, o)| o.state == ObjState::Complete && now >= o.fresh_until)
            .map(|(id, _)| *id)
            .collect();
        for id in &stale {
            self.remove(*id);
        }
        stale.len()
    }

    /// Drops every object of a channel (withdrawn); returns the filling ones' ids first.
    pub fn drop_channel(&mut self, channel: u64) -> Vec<ObjId> {
        let ids: Vec<ObjId> = self.objects.iter().filter(|(_, o)| o.key.channel == channel).map(|(id, _)| *id).collect();
        let mut filling = Vec::new();
        for id in ids {
            if let Some(o) = self.objects.get(&id) {
                if o.state == ObjState::Filling {
                    filling.push(id);
                    continue;
                }
            }
            self.remove(id);
        }
        filling
    }

    /// Evicts complete objects while over budget: first those out of the live window, least
    /// recently used first, then in-window ones. Filling objects are never evicted. Evicts
    /// down to 90 % of the budget so the scan is amortized.
    pub fn enforce_budget(&mut self, now: u64) -> usize {
        if self.bytes <= self.budget {
            return 0;
        }
        let target = self.budget - self.budget / 10;
        let mut candidates: Vec<(bool, u64, ObjId)> = self
            .objects
            .iter()
            .filter(|(_, o)| o.state == ObjState::Complete)
            .map(|(id, o)| (o.window_until > now, o.last_access, *id))
            .collect();
        candidates.sort_unstable();
        let mut n = 0;
        for (_, _, id) in candidates {
            if self.bytes <= target {
                break;
            }
            self.remove(id);
            n += 1;
        }
        self.evictions += n as u64;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str) -> ObjectKey {
        ObjectKey { channel: 1, path: p.into() }
    }

    #[test]
    fn single_flight_then_hit_then_stale() {
        let mut s = Store::new(1 << 20);
        assert_eq!(s.lookup(&key("/a.ts"), 0), Lookup::Miss);
        let id = s.insert_filling(key("/a.ts"), ObjKind::Segment, 0);
        assert_eq!(s.lookup(&key("/a.ts"), 1), Lookup::Filling(id));
        s.append(id, Bytes::from_static(b"abc"));
        s.complete(id, 2, 100);
        assert_eq!(s.lookup(&key("/a.ts"), 50), Lookup::Hit(id));
        assert_eq!(s.bytes(), 3);
        assert_eq!(s.lookup(&key("/a.ts"), 100), Lookup::Miss, "stale is never served");
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn failed_fetch_is_not_kept() {
        let mut s = Store::new(1 << 20);
        let id = s.insert_filling(key("/a.ts"), ObjKind::Segment, 0);
        s.append(id, Bytes::from_static(b"partial"));
        s.remove(id);
        assert_eq!(s.lookup(&key("/a.ts"), 1), Lookup::Miss);
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn no_store_is_dropped_on_completion() {
        let mut s = Store::new(1 << 20);
        let id = s.insert_filling(key("/p.m3u8"), ObjKind::Playlist, 0);
        s.get_mut(id).unwrap().no_store = true;
        s.complete(id, 1, 1000);
        assert_eq!(s.lookup(&key("/p.m3u8"), 2), Lookup::Miss);
    }

    #[test]
    fn budget_evicts_out_of_window_lru_first() {
        let mut s = Store::new(100);
        let mut ids = Vec::new();
        for (i, p) in ["/a", "/b", "/c"].iter().enumerate() {
            let id = s.insert_filling(key(p), ObjKind::Segment, i as u64);
            s.append(id, Bytes::from(vec![0u8; 40]));
            s.complete(id, i as u64, 1_000);
            ids.push(id);
        }
        // /a is in the window; /b and /c are not. /b is older than /c.
        s.mark_in_window(&key("/a"), 500);
        assert_eq!(s.enforce_budget(10), 1);
        assert!(s.get(ids[0]).is_some(), "in-window object kept");
        assert!(s.get(ids[1]).is_none(), "LRU out-of-window object evicted");
        assert!(s.get(ids[2]).is_some());
        assert!(s.bytes() <= 90);
    }

    #[test]
    fn filling_objects_are_never_evicted() {
        let mut s = Store::new(10);
        let id = s.insert_filling(key("/a"), ObjKind::Segment, 0);
        s.append(id, Bytes::from(vec![0u8; 40]));
        assert_eq!(s.enforce_budget(1), 0);
        assert!(s.get(id).is_some());
    }
}
