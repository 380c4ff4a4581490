//! A store shared by several nodes, one per host thread (the multi-core shape): an object is
//! fetched once for all of them.

use std::os::raw::{c_int, c_void};
use std::sync::Arc;

use super::{ffi, listo_node, node_mut, Fail, LISTO_OK};
use crate::store::shared::SharedStore;

/// A store shared by nodes (opaque). Create it with `listo_shared_new`, give it to each node
/// with `listo_node_join_shared`, free it with `listo_shared_free` (nodes keep their own
/// reference: free it whenever convenient).
pub struct listo_shared {
    _private: [u8; 0],
}

/// Called from another node's thread when this node has objects to take: make the node's own
/// thread call `listo_node_handle_shared` soon (e.g. write to an eventfd or a pipe its poll loop
/// watches). It must be thread-safe and must not call into the node itself.
pub type listo_wake_fn = Option<unsafe extern "C" fn(user: *mut c_void)>;

/// The host's wake callback and its argument, callable from any thread (the host promised).
struct Wake {
    f: unsafe extern "C" fn(*mut c_void),
    user: *mut c_void,
}

// SAFETY: the host documents (listo_node_join_shared) that `f(user)` may be called from any thread.
unsafe impl Send for Wake {}
// SAFETY: as above.
unsafe impl Sync for Wake {}

impl Wake {
    fn call(&self) {
        // SAFETY: the host's callback, documented to be callable from any thread.
        unsafe { (self.f)(self.user) }
    }
}

/// Creates an empty shared store. Free it with `listo_shared_free`. Returns NULL only on an
/// internal failure. Thread-safe.
#[no_mangle]
pub extern "C" fn listo_shared_new() -> *mut listo_shared {
    ffi!(|_| std::ptr::null_mut(), { Ok(Arc::into_raw(SharedStore::new()) as *mut listo_shared) })
}

/// Drops the caller's reference to a shared store (nodes that joined it keep theirs). `shared`
/// may be NULL (no-op). Call exactly once per `listo_shared_new`.
#[no_mangle]
pub unsafe extern "C" fn listo_shared_free(shared: *mut listo_shared) {
    ffi!(|_| (), {
        if !shared.is_null() {
            drop(Arc::from_raw(shared as *const SharedStore));
        }
        Ok(())
    })
}

/// Makes `node` share `shared` with the other nodes that joined it. All of them must be
/// driven with `now` values from one clock and instructed with the same channel names. `wake`
/// (with `user`) is called from other nodes' threads when this node has objects to take; see
/// `listo_wake_fn`. Call once, before the node serves. `shared` stays owned by the caller.
/// Returns `LISTO_OK` or `LISTO_ERR_NULL` (`node`, `shared` or `wake` NULL).
#[no_mangle]
pub unsafe extern "C" fn listo_node_join_shared(
    node: *mut listo_node,
    shared: *const listo_shared,
    wake: listo_wake_fn,
    user: *mut c_void,
) -> c_int {
    ffi!(super::code_int, {
        let mut h = node_mut(node)?;
        if shared.is_null() {
            return h.check(Err(Fail::null("shared")));
        }
        let Some(f) = wake else { return h.check(Err(Fail::null("wake"))) };
        // Borrow the caller's reference without taking it.
        let store = std::mem::ManuallyDrop::new(Arc::from_raw(shared as *const SharedStore));
        let w = Wake { f, user };
        h.node.join_shared(&store, move || w.call());
        Ok(LISTO_OK)
    })
}

/// Takes the objects other nodes fetched for this one and answers the viewers waiting for them.
/// Call on the node's thread after its wake callback fired (calling it more often is cheap),
/// then drain `listo_node_poll_ready` and `listo_node_poll_connect`. Returns `LISTO_OK` or
/// `LISTO_ERR_NULL`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_handle_shared(node: *mut listo_node, now_ns: u64) -> c_int {
    ffi!(super::code_int, {
        let mut h = node_mut(node)?;
        h.node.handle_shared(now_ns);
        Ok(LISTO_OK)
    })
}
