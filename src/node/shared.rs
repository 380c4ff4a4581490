//! A node's side of a [`SharedStore`]: misses are claimed there first (single-flight across the
//! nodes sharing it), objects this node fetched are published, and objects other nodes fetched
//! for it arrive through its inbox (`Node::handle_shared`).

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::Node;
use crate::store::shared::{Claim, SharedDone, SharedKey, SharedObject, SharedStore};
use crate::store::ObjId;

/// This node's membership of a shared store.
pub(super) struct Membership {
    store: Arc<SharedStore>,
    me: usize,
    inbox: Receiver<SharedDone>,
    /// Objects this node claimed and fetches: published when they complete or fail.
    claims: HashMap<ObjId, SharedKey>,
    /// Objects another node fetches for this one.
    waits: HashMap<SharedKey, ObjId>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").field("me", &self.me).field("claims", &self.claims.len()).field("waits", &self.waits.len()).finish()
    }
}

/// What `start_fetch` should do.
pub(super) enum Shared {
    /// Fetch it here (no shared store, or this node claimed it).
    Fetch,
    /// Nothing: another node fetches it, or it was filled from the shared store already.
    Done,
}

impl Node {
    /// Shares `store` with other nodes (one per thread, same time base for `now`, same channel
    /// names): an object is fetched once for all of them. `wake` is called from another node's
    /// thread when this node has completions to take: make the host call
    /// [`handle_shared`](Self::handle_shared) on this node's thread soon (e.g. a mio `Waker`).
    /// Call once, before serving.
    pub fn join_shared(&mut self, store: &Arc<SharedStore>, wake: impl Fn() + Send + Sync + 'static) {
        let (me, inbox) = store.join(wake);
        self.shared = Some(Membership { store: store.clone(), me, inbox, claims: HashMap::new(), waits: HashMap::new() });
    }

    /// Takes the objects other nodes fetched for this one (and their failures) and answers the
    /// viewers waiting for them. Call when woken (see [`join_shared`](Self::join_shared)), then
    /// drain `poll_ready` and `poll_connect`. Cheap when there is nothing.
    pub fn handle_shared(&mut self, now: u64) {
        let Some(m) = self.shared.as_mut() else { return };
        let done: Vec<SharedDone> = m.inbox.try_iter().collect();
        for d in done {
            let Some(id) = self.shared.as_mut().and_then(|m| m.waits.remove(&d.key)) else { continue };
            match d.result {
                Ok(o) => self.fill_from_shared(now, id, &o),
                Err(status) => {
                    if let Some(o) = self.store.remove(id) {
                        self.object_failed(now, o.readers, id, status);
                    }
                    self.segment_settled(now, id);
                }
            }
        }
    }

    /// Before fetching a missed object: claim it in the shared store (if any).
    pub(super) fn shared_claim(&mut self, now: u64, obj: ObjId, channel: u64) -> Shared {
        let Some(m) = self.shared.as_ref() else { return Shared::Fetch };
        let (Some(o), Some(ch)) = (self.store.get(obj), self.channels.by_id(channel)) else { return Shared::Fetch };
        let key = SharedKey { channel: ch.instruction.channel.as_str().into(), path: o.key.path.clone() };
        match m.store.claim(m.me, &key, now) {
            Claim::Fetch => {
                if let Some(m) = self.shared.as_mut() {
                    m.claims.insert(obj, key);
                }
                Shared::Fetch
            }
            Claim::Wait => {
                if let Some(m) = self.shared.as_mut() {
                    m.waits.insert(key, obj);
                }
                Shared::Done
            }
            Claim::Ready(o) => {
                self.fill_from_shared(now, obj, &o);
                Shared::Done
            }
        }
    }

    /// An object this node claimed completed: publish it (claimable until `fresh_until`).
    pub(super) fn shared_complete(&mut self, id: ObjId, fresh_until: u64) {
        let Some(m) = self.shared.as_mut() else { return };
        let Some(key) = m.claims.remove(&id) else { return };
        let Some(o) = self.store.get(id) else { return };
        let (Some(head), [body]) = (o.head.clone(), o.chunks.as_slice()) else {
            // Not compacted into one piece (too large, or empty): others fetch it themselves.
            let body = o.chunks.iter().flat_map(|c| c.iter().copied()).collect::<Vec<u8>>();
            if let Some(head) = o.head.clone() {
                let obj = SharedObject { head, body: body.into(), fresh_until };
                m.store.publish(m.me, &key, Ok(Arc::new(obj)));
            } else {
                m.store.publish(m.me, &key, Err(502));
            }
            return;
        };
        let obj = SharedObject { head, body: body.clone(), fresh_until };
        m.store.publish(m.me, &key, Ok(Arc::new(obj)));
    }

    /// An object this node claimed failed: its waiters elsewhere get `status`.
    pub(super) fn shared_failed(&mut self, id: ObjId, status: u16) {
        let Some(m) = self.shared.as_mut() else { return };
        if let Some(key) = m.claims.remove(&id) {
            m.store.publish(m.me, &key, Err(status));
        }
    }

    /// The periodic sweep: the shared store forgets stale objects.
    pub(super) fn shared_sweep(&self, now: u64) {
        if let Some(m) = &self.shared {
            m.store.expire(now);
        }
    }

    /// Completes a local filling object with what another node fetched.
    fn fill_from_shared(&mut self, now: u64, id: ObjId, o: &SharedObject) {
        match self.store.get_mut(id) {
            Some(obj) => {
                obj.no_store = o.head.no_store;
                obj.head = Some(o.head.clone());
            }
            None => return,
        }
        self.object_head(now, id);
        if !o.body.is_empty() {
            self.store.append(id, o.body.clone());
            self.object_data(now, id, o.body.clone());
        }
        self.complete_object(now, id, now);
    }
}
