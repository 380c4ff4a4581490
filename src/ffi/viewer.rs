//! Viewer connections: open, bytes in, output (copy and zero-copy), sent, close.

use std::io::IoSlice;
use std::os::raw::{c_int, c_void};

use super::conn::{count, gather, listo_slice, out_buf, out_slices, transmit_code, SLOTS};
use super::sockaddr::read_sockaddr;
use super::{c_bytes, code_i64, code_int, ffi, listo_node, node_mut, Fail, LISTO_DONE, LISTO_OK};
use crate::{Error, Node, Transmit, ViewerId};

fn viewer_copy(node: &Node, v: ViewerId, buf: &mut [u8]) -> Result<i64, Error> {
    let mut slots = [IoSlice::new(&[]); SLOTS];
    let t = node.user_poll_transmit(v, &mut slots)?;
    match t {
        Transmit::Send(n) => Ok(count(gather(&slots[..n.min(SLOTS)], buf))),
        other => Ok(transmit_code(other).unwrap_or(0)),
    }
}

/// Fills `out` with views of the node's buffers. The pointers outlive the borrow of `node`
/// only as the C contract says: until the next call that takes the node.
fn viewer_slices(node: &Node, v: ViewerId, out: &mut [listo_slice]) -> Result<i64, Error> {
    let mut slots = [IoSlice::new(&[]); SLOTS];
    let room = out.len().min(SLOTS);
    let t = node.user_poll_transmit(v, &mut slots[..room])?;
    match t {
        Transmit::Send(n) => {
            let n = n.min(room);
            for (o, s) in out.iter_mut().zip(&slots[..n]) {
                *o = listo_slice { ptr: s.as_ptr(), len: s.len() };
            }
            Ok(count(n))
        }
        other => Ok(transmit_code(other).unwrap_or(0)),
    }
}

/// A viewer connection was accepted at `now_ns`. `peer` (may be NULL) is the peer's
/// `struct sockaddr_in` or `sockaddr_in6` of `peer_len` bytes, as `accept` filled it; it is read
/// during the call only. Returns the new viewer id (never 0), or 0 if `node` is NULL or
/// poisoned. The id stays valid until `listo_node_viewer_close`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_viewer_open(
    node: *mut listo_node,
    now_ns: u64,
    peer: *const c_void,
    peer_len: usize,
) -> u64 {
    ffi!(|_| 0, {
        let mut h = node_mut(node)?;
        let peer = read_sockaddr(peer, peer_len);
        Ok(h.node.user_open(now_ns, peer).0)
    })
}

/// `len` bytes arrived from viewer `id` (`buf` is read during the call only; NULL only when
/// `len` is 0). Returns the number of bytes consumed (always `len`), `LISTO_ERR_NULL` or
/// `LISTO_ERR_UNKNOWN_ID`. Then drain `listo_node_poll_ready`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_viewer_recv(
    node: *mut listo_node,
    now_ns: u64,
    id: u64,
    buf: *const u8,
    len: usize,
) -> i64 {
    ffi!(code_i64, {
        let mut h = node_mut(node)?;
        let data = h.check(c_bytes(buf, len, "buf"))?;
        let r = h.node.user_recv(now_ns, ViewerId(id), data);
        h.check(r)?;
        Ok(count(len))
    })
}

/// Copy form of the viewer's output: copies up to `cap` bytes of what viewer `id` should be
/// sent next into `buf` (owned by the caller) without consuming them.
///
/// Returns the bytes copied (> 0) — write them, then call `listo_node_viewer_sent` with what
/// the socket took; `LISTO_DONE` — nothing to send now (wait until `listo_node_poll_ready`
/// names the viewer again); `LISTO_CLOSE` — close the socket, then `listo_node_viewer_close`;
/// or `LISTO_ERR_NULL`, `LISTO_ERR_BUFFER_TOO_SMALL` (`cap` is 0), `LISTO_ERR_UNKNOWN_ID`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_viewer_poll_transmit(
    node: *mut listo_node,
    id: u64,
    buf: *mut u8,
    cap: usize,
) -> i64 {
    ffi!(code_i64, {
        let mut h = node_mut(node)?;
        let buf = h.check(out_buf(buf, cap))?;
        let r = viewer_copy(&h.node, ViewerId(id), buf);
        h.check(r)
    })
}

/// Zero-copy form of the viewer's output: fills `out[0..n]` (a caller array of `cap` slices)
/// with views of the node's own buffers, in order, without consuming them. The views are valid
/// until the next call that takes this node: write them at once (e.g. `writev`), then call
/// `listo_node_viewer_sent` with what the socket took. At most 64 slices are filled per call.
///
/// Returns `n` (> 0), `LISTO_DONE`, `LISTO_CLOSE` (as `listo_node_viewer_poll_transmit`), or
/// `LISTO_ERR_NULL`, `LISTO_ERR_BUFFER_TOO_SMALL` (`cap` is 0), `LISTO_ERR_UNKNOWN_ID`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_viewer_poll_transmit_slices(
    node: *mut listo_node,
    id: u64,
    out: *mut listo_slice,
    cap: usize,
) -> i64 {
    ffi!(code_i64, {
        let mut h = node_mut(node)?;
        let out = h.check(out_slices(out, cap))?;
        let r = viewer_slices(&h.node, ViewerId(id), out);
        h.check(r)
    })
}

/// Where the bytes of `*slice` (one filled by `listo_node_viewer_poll_transmit_slices`) live in
/// a file, for a node created with `file_backed_objects`: on `LISTO_OK`, `*fd` and `*offset`
/// are set so `sendfile(sock, *fd, &off, slice->len)` (with `off = *offset`) sends exactly
/// those bytes without copying them; write the slices before it first. The descriptor belongs
/// to the node: never close it; it stays valid as long as the slice does. Returns `LISTO_OK`,
/// `LISTO_DONE` (plain memory: write it), or `LISTO_ERR_NULL`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn listo_slice_file(slice: *const listo_slice, fd: *mut c_int, offset: *mut u64) -> c_int {
    ffi!(code_int, {
        if slice.is_null() || fd.is_null() || offset.is_null() {
            return Err(Fail::null("slice, fd or offset"));
        }
        // SAFETY: checked non-NULL; the caller passes a slice the node filled (or any readable
        // (ptr, len) pair: it is only compared against the node's own mappings, never read).
        let s = unsafe { *slice };
        if s.ptr.is_null() || s.len == 0 {
            return Ok(LISTO_DONE);
        }
        let addr = s.ptr as usize;
        match crate::store::file_range(addr, s.len) {
            Some((f, off)) => {
                // SAFETY: checked non-NULL; the caller owns these outputs.
                unsafe {
                    *fd = f;
                    *offset = off;
                }
                Ok(LISTO_OK)
            }
            None => Ok(LISTO_DONE),
        }
    })
}

/// The socket took `n` bytes of viewer `id`'s output (from either poll form). Returns
/// `LISTO_OK`, `LISTO_ERR_NULL` or `LISTO_ERR_UNKNOWN_ID`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_viewer_sent(node: *mut listo_node, now_ns: u64, id: u64, n: usize) -> c_int {
    ffi!(code_int, {
        let mut h = node_mut(node)?;
        let r = h.node.user_sent(now_ns, ViewerId(id), n);
        h.check(r)?;
        Ok(LISTO_OK)
    })
}

/// Viewer `id`'s connection is gone (peer closed, error, or the host closed it after
/// `LISTO_CLOSE`). The id becomes unknown. Returns `LISTO_OK`, `LISTO_ERR_NULL` or
/// `LISTO_ERR_UNKNOWN_ID`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_viewer_close(node: *mut listo_node, now_ns: u64, id: u64) -> c_int {
    ffi!(code_int, {
        let mut h = node_mut(node)?;
        let r = h.node.user_close(now_ns, ViewerId(id));
        h.check(r)?;
        Ok(LISTO_OK)
    })
}
