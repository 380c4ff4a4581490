//! Connection plumbing shared by viewers and upstreams: slices, output buffers, and the
//! node-wide readiness queue and timers.
//!
//! Output comes in two forms with one contract: the copy form (`*_poll_transmit`) and the
//! zero-copy form (`*_poll_transmit_slices`) both only *peek*; the host reports what the socket
//! took with `*_sent`. So a short write needs no buffering in the host.

use std::io::IoSlice;
use std::os::raw::c_int;

use super::{code_int, ffi, listo_err, listo_node, node_mut, node_ref, Fail, LISTO_CLOSE, LISTO_DONE, LISTO_OK};
use crate::{ConnId, Transmit};

/// Most slices gathered in one call (well under any `IOV_MAX`).
pub(super) const SLOTS: usize = 64;

/// A view of bytes owned by the node: `len` bytes at `ptr`. Valid until the next call that
/// takes the same node; never free it. The same two fields as `struct iovec`: copy them into
/// an iovec array for `writev`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct listo_slice {
    /// First byte.
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

/// Which kind of connection `listo_node_poll_ready` names.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum listo_conn {
    /// A viewer connection (`listo_node_viewer_*`).
    Viewer = 1,
    /// An upstream connection (`listo_node_upstream_*`).
    Upstream = 2,
}

pub(super) fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Copies the gathered slices into `buf` (as much as fits). Returns the bytes copied.
pub(super) fn gather(slices: &[IoSlice<'_>], buf: &mut [u8]) -> usize {
    let mut at = 0;
    for s in slices {
        let n = s.len().min(buf.len() - at);
        buf[at..at + n].copy_from_slice(&s[..n]);
        at += n;
        if at == buf.len() {
            break;
        }
    }
    at
}

pub(super) unsafe fn out_buf<'a>(buf: *mut u8, cap: usize) -> Result<&'a mut [u8], Fail> {
    if buf.is_null() {
        return Err(Fail::null("buf"));
    }
    if cap == 0 {
        return Err(Fail::new(listo_err::BufferTooSmall, "cap is 0"));
    }
    if cap > isize::MAX as usize {
        return Err(Fail::invalid("cap too large"));
    }
    Ok(std::slice::from_raw_parts_mut(buf, cap))
}

pub(super) unsafe fn out_slices<'a>(out: *mut listo_slice, cap: usize) -> Result<&'a mut [listo_slice], Fail> {
    if out.is_null() {
        return Err(Fail::null("out"));
    }
    if cap == 0 {
        return Err(Fail::new(listo_err::BufferTooSmall, "cap is 0"));
    }
    Ok(std::slice::from_raw_parts_mut(out, cap.min(SLOTS)))
}

pub(super) fn transmit_code(t: Transmit) -> Option<i64> {
    match t {
        Transmit::Send(_) => None,
        Transmit::Wait => Some(i64::from(LISTO_DONE)),
        Transmit::Close => Some(i64::from(LISTO_CLOSE)),
    }
}

/// The next connection with something to do: on `LISTO_OK`, `*kind_out` is `LISTO_CONN_VIEWER`
/// or `LISTO_CONN_UPSTREAM` and `*id_out` its id; call the matching `*_poll_transmit*` until
/// it returns `LISTO_DONE` or the socket would block (then retry when it is writable). Returns
/// `LISTO_OK`, `LISTO_DONE` (none), or `LISTO_ERR_NULL`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_poll_ready(
    node: *mut listo_node,
    kind_out: *mut listo_conn,
    id_out: *mut u64,
) -> c_int {
    ffi!(code_int, {
        let mut h = node_mut(node)?;
        if kind_out.is_null() || id_out.is_null() {
            return h.check(Err(Fail::null("kind_out or id_out")));
        }
        let (kind, id) = match h.node.poll_ready() {
            None => return Ok(LISTO_DONE),
            Some(ConnId::Viewer(v)) => (listo_conn::Viewer, v.0),
            Some(ConnId::Upstream(u)) => (listo_conn::Upstream, u.0),
        };
        kind_out.write(kind);
        id_out.write(id);
        Ok(LISTO_OK)
    })
}

/// The absolute deadline (same clock as `now_ns`) at which `listo_node_handle_timeout` must be
/// called, or `UINT64_MAX` for none (also if `node` is NULL or poisoned). Re-ask after every
/// call that fed input or drained output: the new deadline replaces the previous one.
#[no_mangle]
pub unsafe extern "C" fn listo_node_timeout_ns(node: *const listo_node) -> u64 {
    ffi!(|_| u64::MAX, {
        let h = node_ref(node)?;
        Ok(h.node.poll_timeout().unwrap_or(u64::MAX))
    })
}

/// Runs every timer due at `now_ns` (calling it early is harmless), then drain output as after
/// any input. Returns `LISTO_OK` or `LISTO_ERR_NULL`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_handle_timeout(node: *mut listo_node, now_ns: u64) -> c_int {
    ffi!(code_int, {
        let mut h = node_mut(node)?;
        h.node.handle_timeout(now_ns);
        Ok(LISTO_OK)
    })
}
