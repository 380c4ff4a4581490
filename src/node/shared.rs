//! A node's side of a [`SharedStore`]: misses are claimed there first (single-flight across the
//! nodes sharing it), the progress of objects this node fetches is passed on (head, chunks,
//! outcome), and objects other nodes fetch for it arrive the same way through its inbox
//! (`Node::handle_shared`): streamed to its viewers as they arrive, as if fetched here.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::Node;
use crate::http::ResponseHead;
use crate::store::shared::{Claim, Inbox, SharedKey, SharedMsg, SharedObject, SharedStore};
use crate::store::ObjId;

/// This node's membership of a shared store.
pub(super) struct Membership {
    store: Arc<SharedStore>,
    me: usize,
    inbox: Inbox,
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

    /// Takes the progress of the objects other nodes fetch for this one (heads, body chunks,
    /// completions, failures) and streams it to the viewers waiting here. Call when woken (see
    /// [`join_shared`](Self::join_shared)), then drain `poll_ready` and `poll_connect`. Cheap
    /// when there is nothing.
    pub fn handle_shared(&mut self, now: u64) {
        let Some(m) = self.shared.as_mut() else { return };
        for ev in m.inbox.drain() {
            let waits = self.shared.as_mut().map(|m| &mut m.waits);
            let id = match (&ev.msg, waits) {
                (SharedMsg::Done(_), Some(w)) => w.remove(&ev.key),
                (_, Some(w)) => w.get(&ev.key).copied(),
                (_, None) => None,
            };
            let Some(id) = id else { continue };
            match ev.msg {
                SharedMsg::Head(head) => self.head_from_shared(now, id, head),
                SharedMsg::Data(chunk) => self.data_from_shared(now, id, chunk),
                SharedMsg::Done(Ok(o)) => self.fill_from_shared(now, id, &o),
                SharedMsg::Done(Err(status)) => {
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
            Claim::Wait { head, body } => {
                if let Some(m) = self.shared.as_mut() {
                    m.waits.insert(key, obj);
                }
                if let Some(head) = head {
                    self.head_from_shared(now, obj, head);
                    for chunk in body {
                        self.data_from_shared(now, obj, chunk);
                    }
                }
                Shared::Done
            }
            Claim::Ready(o) => {
                self.fill_from_shared(now, obj, &o);
                Shared::Done
            }
        }
    }

    /// The upstream head of an object this node claimed arrived: pass it on.
    pub(super) fn shared_head(&self, id: ObjId) {
        let Some(m) = self.shared.as_ref() else { return };
        let (Some(key), Some(head)) = (m.claims.get(&id), self.store.get(id).and_then(|o| o.head.as_ref())) else { return };
        m.store.head(m.me, key, head);
    }

    /// A body chunk of an object this node claimed arrived: pass it on.
    pub(super) fn shared_data(&self, id: ObjId, chunk: &Bytes) {
        let Some(m) = self.shared.as_ref() else { return };
        if let Some(key) = m.claims.get(&id) {
            m.store.data(m.me, key, chunk);
        }
    }

    /// An object this node claimed completed: publish it (claimable until `fresh_until`).
    pub(super) fn shared_complete(&mut self, id: ObjId, fresh_until: u64, sent_at: u64, completed_at: u64) {
        let Some(m) = self.shared.as_mut() else { return };
        let Some(key) = m.claims.remove(&id) else { return };
        let Some(o) = self.store.get(id) else {
            // Dropped here (channel withdrawn, no-store): the others fetch it themselves.
            m.store.publish(m.me, &key, Err(502));
            return;
        };
        let (Some(head), [body]) = (o.head.clone(), o.chunks.as_slice()) else {
            // Not compacted into one piece (too large, or empty): others fetch it themselves.
            let body = o.chunks.iter().flat_map(|c| c.iter().copied()).collect::<Vec<u8>>();
            if let Some(head) = o.head.clone() {
                let obj = SharedObject { head, body: body.into(), fresh_until, sent_at, completed_at };
                m.store.publish(m.me, &key, Ok(Arc::new(obj)));
            } else {
                m.store.publish(m.me, &key, Err(502));
            }
            return;
        };
        let obj = SharedObject { head, body: body.clone(), fresh_until, sent_at, completed_at };
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

    /// Another node got the upstream head of an object this node waits for.
    fn head_from_shared(&mut self, now: u64, id: ObjId, head: ResponseHead) {
        let Some(obj) = self.store.get_mut(id) else { return };
        if obj.head.is_some() {
            return;
        }
        obj.no_store = head.no_store;
        obj.head = Some(head);
        self.object_head(now, id);
    }

    /// Another node got the next body chunk of an object this node waits for.
    fn data_from_shared(&mut self, now: u64, id: ObjId, chunk: Bytes) {
        if chunk.is_empty() || self.store.get(id).is_none_or(|o| o.head.is_none()) {
            return;
        }
        self.store.append(id, chunk.clone());
        self.object_data(now, id, chunk);
    }

    /// Completes a local filling object with what another node fetched: whatever of it has not
    /// streamed in yet, then the whole body as the fetching node holds it (one shared buffer,
    /// not a second copy here).
    fn fill_from_shared(&mut self, now: u64, id: ObjId, o: &SharedObject) {
        let Some(obj) = self.store.get(id) else { return };
        if obj.head.is_none() {
            self.head_from_shared(now, id, o.head.clone());
        }
        let have = self.store.get(id).map_or(0, |obj| obj.len) as usize;
        if have < o.body.len() {
            self.data_from_shared(now, id, o.body.slice(have..));
        }
        if let Some(obj) = self.store.get_mut(id) {
            if obj.len == o.body.len() as u64 && !o.body.is_empty() {
                obj.chunks = vec![o.body.clone()];
            }
        }
        self.complete_object_from(now, id, o.sent_at, Some((o.completed_at, o.fresh_until)));
    }
}
