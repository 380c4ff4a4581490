//! One store for several nodes (one per worker thread): single-flight across them. The first
//! node to miss an object claims it and fetches it; the others wait for it. While it arrives,
//! the fetching node passes on its head and every body chunk (shared `Bytes`, no copy), so the
//! waiting nodes stream it to their viewers as it comes in, as the fetching node does; then
//! they are told it completed (or failed). A complete object stays claimable while fresh, so a
//! node that misses it later takes it from here instead of fetching it again.
//!
//! Nodes sharing a store must use one time base (`now` values comparable across them) and the
//! same channel names.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// When the fetching node sent its request upstream (the content is at least that recent).
    pub sent_at: u64,
    /// When it completed there.
    pub completed_at: u64,
}

/// What a node learns at the end of an object another node fetched: the object, or the status
/// its waiting viewers get.
pub type SharedResult = Result<Arc<SharedObject>, u16>;

/// Progress of an object another node fetches, in the order it happened.
#[derive(Debug, Clone)]
pub enum SharedMsg {
    /// The upstream head arrived.
    Head(ResponseHead),
    /// The next body chunk arrived.
    Data(Bytes),
    /// It completed (the whole object) or failed (the status). The last message for the key.
    Done(SharedResult),
}

/// One message to a waiting node.
#[derive(Debug)]
pub struct SharedEvent {
    /// The object.
    pub key: SharedKey,
    /// What happened to it.
    pub msg: SharedMsg,
}

/// What a node should do about an object it misses.
#[derive(Debug)]
pub enum Claim {
    /// Fetch it (this node is now the one fetching); pass on its progress and publish the outcome.
    Fetch,
    /// Another node is fetching it. What arrived so far is here (head, body chunks); the rest
    /// comes through the inbox.
    Wait {
        /// The upstream head, if it arrived already.
        head: Option<ResponseHead>,
        /// The body chunks so far, in order.
        body: Vec<Bytes>,
    },
    /// Here it is, complete and fresh.
    Ready(Arc<SharedObject>),
}

#[derive(Debug)]
enum Entry {
    Filling { owner: usize, since: u64, waiters: BTreeSet<usize>, head: Option<ResponseHead>, body: Vec<Bytes> },
    Complete(Arc<SharedObject>),
}

/// A member node: where its messages go and how to wake its thread.
struct Member {
    tx: Sender<SharedEvent>,
    /// Set when woken, cleared by the member before it drains: one wake per batch.
    pending: Arc<AtomicBool>,
    wake: Box<dyn Fn() + Send + Sync>,
}

impl Member {
    fn tell(&self, ev: SharedEvent) {
        if self.tx.send(ev).is_ok() && !self.pending.swap(true, Ordering::AcqRel) {
            (self.wake)();
        }
    }
}

/// A member's inbox: the progress of the objects other members fetch for it.
#[derive(Debug)]
pub struct Inbox {
    rx: Receiver<SharedEvent>,
    pending: Arc<AtomicBool>,
}

impl Inbox {
    /// Everything queued now, in order. Clears the wake flag first, so a message sent while
    /// this runs wakes the member again.
    pub fn drain(&self) -> Vec<SharedEvent> {
        self.pending.store(false, Ordering::Release);
        self.rx.try_iter().collect()
    }
}

/// Objects kept complete at most (beyond it, the stalest are forgotten first).
const MAX_COMPLETE: usize = 1 << 16;
/// A fetch claimed this long ago and never published is presumed lost (its node dropped the
/// object without a word): the next node to miss the object fetches it again.
pub const STALE_FILL: u64 = 60 * crate::SECOND;

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

impl Inner {
    /// The waiters of `key` if `me` is fetching it.
    fn waiters_of(&mut self, me: usize, key: &SharedKey) -> Option<(&mut Option<ResponseHead>, &mut Vec<Bytes>, Vec<usize>)> {
        match self.entries.get_mut(key) {
            Some(Entry::Filling { owner, waiters, head, body, .. }) if *owner == me => {
                Some((head, body, waiters.iter().copied().collect()))
            }
            _ => None,
        }
    }

    fn tell(&self, to: &[usize], key: &SharedKey, msg: &SharedMsg) {
        for &w in to {
            if let Some(m) = self.members.get(w) {
                m.tell(SharedEvent { key: key.clone(), msg: msg.clone() });
            }
        }
    }
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

    /// Registers a node: returns its member number and its inbox. `wake` is called (from
    /// another node's thread) when something was put in the inbox after the node last drained
    /// it; it should make the node's host call `Node::handle_shared` soon (e.g. a mio `Waker`).
    pub fn join(&self, wake: impl Fn() + Send + Sync + 'static) -> (usize, Inbox) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let pending = Arc::new(AtomicBool::new(false));
        let mut g = self.inner.lock();
        g.members.push(Member { tx, pending: pending.clone(), wake: Box::new(wake) });
        (g.members.len() - 1, Inbox { rx, pending })
    }

    /// Member `me` misses `key` at `now`.
    pub fn claim(&self, me: usize, key: &SharedKey, now: u64) -> Claim {
        let mut g = self.inner.lock();
        match g.entries.get_mut(key) {
            Some(Entry::Complete(o)) if now < o.fresh_until => return Claim::Ready(o.clone()),
            Some(Entry::Filling { owner, since, waiters, head, body }) if *owner != me && now.saturating_sub(*since) < STALE_FILL => {
                waiters.insert(me);
                return Claim::Wait { head: head.clone(), body: body.clone() };
            }
            _ => {}
        }
        let entry = Entry::Filling { owner: me, since: now, waiters: BTreeSet::new(), head: None, body: Vec::new() };
        if let Some(Entry::Filling { waiters, .. }) = g.entries.insert(key.clone(), entry) {
            // A lost fetch: its waiters get a failure (their viewers retry) rather than nothing.
            g.tell(&waiters.into_iter().filter(|&w| w != me).collect::<Vec<_>>(), key, &SharedMsg::Done(Err(502)));
        }
        Claim::Fetch
    }

    /// Member `me`, fetching `key`, got its upstream head: its waiters get it.
    pub fn head(&self, me: usize, key: &SharedKey, head: &ResponseHead) {
        let mut g = self.inner.lock();
        let Some((h, _, waiters)) = g.waiters_of(me, key) else { return };
        *h = Some(head.clone());
        g.tell(&waiters, key, &SharedMsg::Head(head.clone()));
    }

    /// Member `me`, fetching `key`, got the next body chunk: its waiters get it (shared bytes).
    pub fn data(&self, me: usize, key: &SharedKey, chunk: &Bytes) {
        let mut g = self.inner.lock();
        let Some((_, body, waiters)) = g.waiters_of(me, key) else { return };
        body.push(chunk.clone());
        g.tell(&waiters, key, &SharedMsg::Data(chunk.clone()));
    }

    /// Member `me` finished fetching `key`: the object (kept while fresh), or the failure status.
    /// Its waiters are told.
    pub fn publish(&self, me: usize, key: &SharedKey, result: SharedResult) {
        let mut g = self.inner.lock();
        let waiters = g.waiters_of(me, key).map(|(_, _, w)| w).unwrap_or_default();
        match &result {
            Ok(o) => {
                g.entries.insert(key.clone(), Entry::Complete(o.clone()));
            }
            Err(_) => {
                g.entries.remove(key);
            }
        }
        g.tell(&waiters, key, &SharedMsg::Done(result));
    }

    /// Forgets complete objects no longer fresh at `now` (and the stalest beyond the cap), and
    /// fetches lost for twice [`STALE_FILL`].
    pub fn expire(&self, now: u64) {
        let mut g = self.inner.lock();
        g.entries.retain(|_, e| match e {
            Entry::Complete(o) => o.fresh_until > now,
            Entry::Filling { since, .. } => now.saturating_sub(*since) < 2 * STALE_FILL,
        });
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
        Arc::new(SharedObject { head, body: Bytes::from_static(b"abc"), fresh_until, sent_at: 0, completed_at: 0 })
    }

    fn done(ev: SharedEvent) -> SharedResult {
        match ev.msg {
            SharedMsg::Done(r) => r,
            other => panic!("expected Done, got {other:?}"),
        }
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
        assert!(matches!(s.claim(b, &key("/x.ts"), 0), Claim::Wait { .. }));
        assert!(matches!(s.claim(b, &key("/x.ts"), 0), Claim::Wait { .. }), "waiting twice is one wait");
        s.publish(a, &key("/x.ts"), Ok(obj(100)));
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        let mut got = rx_b.drain();
        assert_eq!(got.len(), 1, "told once");
        assert!(done(got.remove(0)).is_ok());
        // Fresh: taken from the store; stale: fetched again.
        assert!(matches!(s.claim(b, &key("/x.ts"), 99), Claim::Ready(_)));
        assert!(matches!(s.claim(b, &key("/x.ts"), 100), Claim::Fetch));
    }

    #[test]
    fn waiters_get_head_and_chunks_as_they_arrive_and_a_late_waiter_the_backlog() {
        let s = SharedStore::new();
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        let (a, _) = s.join(|| {});
        let (b, rx_b) = s.join(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        let (c, rx_c) = s.join(|| {});
        let k = key("/z.ts");
        assert!(matches!(s.claim(a, &k, 0), Claim::Fetch));
        assert!(matches!(s.claim(b, &k, 0), Claim::Wait { head: None, ref body } if body.is_empty()));
        let h = obj(1).head.clone();
        s.head(a, &k, &h);
        s.data(a, &k, &Bytes::from_static(b"ab"));
        s.data(a, &k, &Bytes::from_static(b"c"));
        // One wake for the batch (b has not drained yet).
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        let got = rx_b.drain();
        assert!(matches!(got[0].msg, SharedMsg::Head(_)));
        assert!(matches!(&got[1].msg, SharedMsg::Data(d) if &d[..] == b"ab"));
        assert!(matches!(&got[2].msg, SharedMsg::Data(d) if &d[..] == b"c"));
        // A member that misses it now gets what arrived so far, then the rest.
        match s.claim(c, &k, 0) {
            Claim::Wait { head: Some(_), body } => assert_eq!(body.concat(), b"abc"),
            other => panic!("expected the backlog, got {other:?}"),
        }
        s.data(a, &k, &Bytes::from_static(b"d"));
        assert_eq!(woken.load(Ordering::SeqCst), 2, "drained, so woken again");
        assert!(matches!(&rx_c.drain()[0].msg, SharedMsg::Data(d) if &d[..] == b"d"));
        // Only the fetching member's progress counts.
        s.data(b, &k, &Bytes::from_static(b"x"));
        assert_eq!(rx_b.drain().len(), 1, "b got d only");
        assert!(rx_c.drain().is_empty());
    }

    #[test]
    fn a_failure_is_told_and_not_kept() {
        let s = SharedStore::new();
        let (a, _) = s.join(|| {});
        let (b, rx_b) = s.join(|| {});
        assert!(matches!(s.claim(a, &key("/y.ts"), 0), Claim::Fetch));
        assert!(matches!(s.claim(b, &key("/y.ts"), 0), Claim::Wait { .. }));
        s.publish(a, &key("/y.ts"), Err(502));
        assert_eq!(rx_b.drain().into_iter().next().map(done).and_then(|r| r.err()), Some(502));
        assert!(matches!(s.claim(b, &key("/y.ts"), 1), Claim::Fetch), "nothing kept: the next miss fetches");
        s.expire(1);
        assert_eq!(s.len(), 1, "the new claim stays");
    }

    #[test]
    fn a_fetch_never_published_is_taken_over_after_stale_fill_and_its_waiters_told() {
        let s = SharedStore::new();
        let (a, _) = s.join(|| {});
        let (b, rx_b) = s.join(|| {});
        let (c, _) = s.join(|| {});
        let k = key("/lost.ts");
        assert!(matches!(s.claim(a, &k, 0), Claim::Fetch));
        assert!(matches!(s.claim(b, &k, 1), Claim::Wait { .. }));
        // a dropped it without publishing; within STALE_FILL others still wait.
        assert!(matches!(s.claim(c, &k, STALE_FILL - 1), Claim::Wait { .. }));
        // Past it, the next miss fetches it again, and the stuck waiter is told to give up.
        assert!(matches!(s.claim(c, &k, STALE_FILL), Claim::Fetch));
        assert_eq!(rx_b.drain().into_iter().next().map(done).and_then(|r| r.err()), Some(502));
        // And an abandoned claim is forgotten eventually.
        s.expire(3 * STALE_FILL);
        assert!(s.is_empty());
    }
}
