//! One store for several nodes (one per worker thread): single-flight across them. The first
//! node to miss an object claims it and fetches it; the others wait for it and are told when it
//! completed (or failed) through their inbox, after which they serve it from the same shared
//! bytes (no copy). A complete object stays claimable while fresh, so a node that misses it
//! later takes it from here instead of fetching it again.
//!
//! Nodes sharing a store must use one time base (`now` values comparable across them) and the
//! same channel names; waiters of another node get the object once it is complete (streaming
//! while it arrives happens within the fetching node).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::http::ResponseHead;

/// A store-wide object key: channel name and the object's cache key (path and normalized query).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SharedKey {
    /// Channel name.
    pub channel: Arc<str>,
    /// Path and normalized query.
    pub path: Box<str>,
}

/// A complete object as the fetching node published it.
#[derive(Debug)]
pub struct SharedObject {
    /// The upstream head.
    pub head: ResponseHead,
    /// The whole body (shared bytes).
    pub body: Bytes,
    /// Claimable until then (the fetching node's freshness).
    pub fresh_until: u64,
}

/// What a node learns about an object another node fetched: the object, or the status its
/// waiting viewers get.
pub type SharedResult = Result<Arc<SharedObject>, u16>;

/// A completion sent to a waiting node.
#[derive(Debug)]
pub struct SharedDone {
    /// The object.
    pub key: SharedKey,
    /// It, or the failure status.
    pub result: SharedResult,
}

/// What a node should do about an object it misses.
#[derive(Debug)]
pub enum Claim {
    /// Fetch it (this node is now the one fetching); publish the outcome.
    Fetch,
    /// Another node is fetching it: wait for a `SharedDone` in the inbox.
    Wait,
    /// Here it is, complete and fresh.
    Ready(Arc<SharedObject>),
}

#[derive(Debug)]
enum Entry {
    Filling { owner: usize, waiters: BTreeSet<usize> },
    Complete(Arc<SharedObject>),
}

/// A member node: where its completions go and how to wake its thread.
struct Member {
    tx: Sender<SharedDone>,
    wake: Box<dyn Fn() + Send + Sync>,
}

/// Objects kept complete at most (beyond it, the stalest are forgotten first).
const MAX_COMPLETE: usize = 1 << 16;

/// The store several nodes share. Create it once, then give each node a handle with
/// [`SharedStore::join`].
#[derive(Default)]
pub struct SharedStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<SharedKey, Entry>,
    members: Vec<Member>,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.inner.lock();
        f.debug_struct("SharedStore").field("entries", &g.entries.len()).field("members", &g.members.len()).finish()
    }
}

impl SharedStore {
    /// An empty store to share.
    pub fn new() -> Arc<Self> {
        Arc::new(SharedStore::default())
    }

    /// Registers a node: returns its member number and the inbox of completions it waits for.
    /// `wake` is called (from another node's thread) after something was put in the inbox; it
    /// should make the node's host call `Node::handle_shared` soon (e.g. a mio `Waker`).
    pub fn join(&self, wake: impl Fn() + Send + Sync + 'static) -> (usize, Receiver<SharedDone>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut g = self.inner.lock();
        g.members.push(Member { tx, wake: Box::new(wake) });
        (g.members.len() - 1, rx)
    }

    /// Member `me` misses `key` at `now`.
    pub fn claim(&self, me: usize, key: &SharedKey, now: u64) -> Claim {
        let mut g = self.inner.lock();
        match g.entries.get_mut(key) {
            Some(Entry::Complete(o)) if now < o.fresh_until => return Claim::Ready(o.clone()),
            Some(Entry::Filling { owner, waiters }) if *owner != me => {
                waiters.insert(me);
                return Claim::Wait;
            }
            _ => {}
        }
        g.entries.insert(key.clone(), Entry::Filling { owner: me, waiters: BTreeSet::new() });
        Claim::Fetch
    }

    /// Member `me` finished fetching `key`: the object (kept while fresh), or the failure status.
    /// Its waiters are told.
    pub fn publish(&self, me: usize, key: &SharedKey, result: SharedResult) {
        let mut g = self.inner.lock();
        let waiters = match g.entries.get(key) {
            Some(Entry::Filling { owner, waiters }) if *owner == me => waiters.clone(),
            _ => BTreeSet::new(),
        };
        match &result {
            Ok(o) => {
                g.entries.insert(key.clone(), Entry::Complete(o.clone()));
            }
            Err(_) => {
                g.entries.remove(key);
            }
        }
        for w in waiters {
            if let Some(m) = g.members.get(w) {
                if m.tx.send(SharedDone { key: key.clone(), result: result.clone() }).is_ok() {
                    (m.wake)();
                }
            }
        }
    }

    /// Forgets complete objects no longer fresh at `now` (and the stalest beyond the cap).
    pub fn expire(&self, now: u64) {
        let mut g = self.inner.lock();
        g.entries.retain(|_, e| !matches!(e, Entry::Complete(o) if o.fresh_until <= now));
        if g.entries.len() > MAX_COMPLETE {
            let mut complete: Vec<(u64, SharedKey)> = g
                .entries
                .iter()
                .filter_map(|(k, e)| match e {
                    Entry::Complete(o) => Some((o.fresh_until, k.clone())),
                    Entry::Filling { .. } => None,
                })
                .collect();
            complete.sort();
            let excess = g.entries.len() - MAX_COMPLETE;
            for (_, k) in complete.into_iter().take(excess) {
                g.entries.remove(&k);
            }
        }
    }

    /// Objects known (filling or complete).
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// True when it knows no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::BodyKind;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn key(p: &str) -> SharedKey {
        SharedKey { channel: "ch1".into(), path: p.into() }
    }

    fn obj(fresh_until: u64) -> Arc<SharedObject> {
        let head = ResponseHead {
            status: 200,
            keep_alive: true,
            body: BodyKind::Length(3),
            passthrough: Bytes::new(),
            etag: None,
            last_modified: None,
            max_age: None,
            no_store: false,
        };
        Arc::new(SharedObject { head, body: Bytes::from_static(b"abc"), fresh_until })
    }

    #[test]
    fn one_member_fetches_the_others_wait_and_are_told() {
        let s = SharedStore::new();
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        let (a, _rx_a) = s.join(|| {});
        let (b, rx_b) = s.join(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        assert!(matches!(s.claim(a, &key("/x.ts"), 0), Claim::Fetch));
        assert!(matches!(s.claim(b, &key("/x.ts"), 0), Claim::Wait));
        assert!(matches!(s.claim(b, &key("/x.ts"), 0), Claim::Wait), "waiting twice is one wait");
        s.publish(a, &key("/x.ts"), Ok(obj(100)));
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        let done = rx_b.try_recv().expect("b told");
        assert!(done.result.is_ok());
        assert!(rx_b.try_recv().is_err(), "told once");
        // Fresh: taken from the store; stale: fetched again.
        assert!(matches!(s.claim(b, &key("/x.ts"), 99), Claim::Ready(_)));
        assert!(matches!(s.claim(b, &key("/x.ts"), 100), Claim::Fetch));
    }

    #[test]
    fn a_failure_is_told_and_not_kept() {
        let s = SharedStore::new();
        let (a, _) = s.join(|| {});
        let (b, rx_b) = s.join(|| {});
        assert!(matches!(s.claim(a, &key("/y.ts"), 0), Claim::Fetch));
        assert!(matches!(s.claim(b, &key("/y.ts"), 0), Claim::Wait));
        s.publish(a, &key("/y.ts"), Err(502));
        assert_eq!(rx_b.try_recv().map(|d| d.result.err()).ok().flatten(), Some(502));
        assert!(matches!(s.claim(b, &key("/y.ts"), 1), Claim::Fetch), "nothing kept: the next miss fetches");
        s.expire(1);
        assert_eq!(s.len(), 1, "the new claim stays");
    }
}
