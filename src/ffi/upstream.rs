//! Upstream connections: connect requests, connected, bytes in, output (copy and zero-copy),
//! sent, closed.

use std::os::raw::{c_int, c_void};

use super::conn::{count, listo_slice, out_buf, out_slices};
use super::sockaddr::{write_sockaddr, SOCKADDR_MAX};
use super::{
    c_bytes, code_i64, code_int, ffi, listo_err, listo_node, node_mut, Fail, LISTO_CLOSE, LISTO_DONE, LISTO_OK,
};
use crate::{Error, Node, UpTransmit, UpstreamId};

fn upstream_copy(node: &Node, u: UpstreamId, buf: &mut [u8]) -> Result<i64, Error> {
    match node.upstream_poll_transmit(u)? {
        UpTransmit::Send(b) => {
            let n = b.len().min(buf.len());
            buf[..n].copy_from_slice(&b[..n]);
            Ok(count(n))
        }
        UpTransmit::Wait => Ok(i64::from(LISTO_DONE)),
        UpTransmit::Close => Ok(i64::from(LISTO_CLOSE)),
    }
}

fn upstream_slices(node: &Node, u: UpstreamId, out: &mut [listo_slice]) -> Result<i64, Error> {
    match node.upstream_poll_transmit(u)? {
        UpTransmit::Send(b) => {
            out[0] = listo_slice { ptr: b.as_ptr(), len: b.len() };
            Ok(1)
        }
        UpTransmit::Wait => Ok(i64::from(LISTO_DONE)),
        UpTransmit::Close => Ok(i64::from(LISTO_CLOSE)),
    }
}

/// The next upstream connection the node wants opened. On `LISTO_OK`, `*id_out` is its id and
/// `addr_out` holds the CDN endpoint as a native `struct sockaddr_in` or `sockaddr_in6`, ready
/// for `socket(((struct sockaddr *)addr_out)->sa_family, SOCK_STREAM, 0)` and `connect(fd,
/// addr_out, *addr_len)`. Pass a `struct sockaddr_storage` and `*addr_len` set to its size; on
/// `LISTO_OK` `*addr_len` is set to the address's length.
///
/// Connect (non-blocking is fine), then call `listo_node_upstream_connected`, or
/// `listo_node_upstream_closed` if the connect failed. Call until `LISTO_DONE` after every input.
///
/// Returns `LISTO_OK`, `LISTO_DONE` (none wanted), `LISTO_ERR_NULL`, or
/// `LISTO_ERR_BUFFER_TOO_SMALL` (`*addr_len` below `sizeof(struct sockaddr_in6)`; nothing is
/// lost, the request stays queued).
#[no_mangle]
pub unsafe extern "C" fn listo_node_poll_connect(
    node: *mut listo_node,
    id_out: *mut u64,
    addr_out: *mut c_void,
    addr_len: *mut usize,
) -> c_int {
    ffi!(code_int, {
        let mut h = node_mut(node)?;
        if id_out.is_null() || addr_out.is_null() || addr_len.is_null() {
            return h.check(Err(Fail::null("id_out, addr_out or addr_len")));
        }
        if *addr_len < SOCKADDR_MAX || SOCKADDR_MAX == 0 {
            return h.check(Err(Fail::new(listo_err::BufferTooSmall, "addr_len is below sizeof(struct sockaddr_in6)")));
        }
        let Some((u, addr)) = h.node.poll_connect() else { return Ok(LISTO_DONE) };
        *addr_len = write_sockaddr(addr, addr_out);
        *id_out = u.0;
        Ok(LISTO_OK)
    })
}

/// The connect for upstream `id` succeeded (for a non-blocking connect: the socket became
/// writable and `SO_ERROR` is 0). Returns `LISTO_OK`, `LISTO_ERR_NULL`, `LISTO_ERR_UNKNOWN_ID`
/// or `LISTO_ERR_INVALID_STATE` (not connecting).
#[no_mangle]
pub unsafe extern "C" fn listo_node_upstream_connected(node: *mut listo_node, now_ns: u64, id: u64) -> c_int {
    ffi!(code_int, {
        let mut h = node_mut(node)?;
        let r = h.node.upstream_connected(now_ns, UpstreamId(id));
        h.check(r)?;
        Ok(LISTO_OK)
    })
}

/// `len` response bytes arrived on upstream `id` (`buf` read during the call only; NULL only
/// when `len` is 0). Returns the bytes consumed (always `len`), `LISTO_ERR_NULL` or
/// `LISTO_ERR_UNKNOWN_ID`. Then drain `listo_node_poll_ready`: viewers are waiting.
#[no_mangle]
pub unsafe extern "C" fn listo_node_upstream_recv(
    node: *mut listo_node,
    now_ns: u64,
    id: u64,
    buf: *const u8,
    len: usize,
) -> i64 {
    ffi!(code_i64, {
        let mut h = node_mut(node)?;
        let data = h.check(c_bytes(buf, len, "buf"))?;
        let r = h.node.upstream_recv(now_ns, UpstreamId(id), data);
        h.check(r)?;
        Ok(count(len))
    })
}

/// Copy form of an upstream connection's output (the request bytes): as
/// `listo_node_viewer_poll_transmit`, then `listo_node_upstream_sent`; `LISTO_CLOSE` means
/// close the socket, then `listo_node_upstream_closed`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_upstream_poll_transmit(
    node: *mut listo_node,
    id: u64,
    buf: *mut u8,
    cap: usize,
) -> i64 {
    ffi!(code_i64, {
        let mut h = node_mut(node)?;
        let buf = h.check(out_buf(buf, cap))?;
        let r = upstream_copy(&h.node, UpstreamId(id), buf);
        h.check(r)
    })
}

/// Zero-copy form of an upstream connection's output: as
/// `listo_node_viewer_poll_transmit_slices` (valid until the next call that takes this node),
/// then `listo_node_upstream_sent`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_upstream_poll_transmit_slices(
    node: *mut listo_node,
    id: u64,
    out: *mut listo_slice,
    cap: usize,
) -> i64 {
    ffi!(code_i64, {
        let mut h = node_mut(node)?;
        let out = h.check(out_slices(out, cap))?;
        let r = upstream_slices(&h.node, UpstreamId(id), out);
        h.check(r)
    })
}

/// The socket took `n` request bytes of upstream `id`. Returns `LISTO_OK`, `LISTO_ERR_NULL` or
/// `LISTO_ERR_UNKNOWN_ID`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_upstream_sent(node: *mut listo_node, now_ns: u64, id: u64, n: usize) -> c_int {
    ffi!(code_int, {
        let mut h = node_mut(node)?;
        let r = h.node.upstream_sent(now_ns, UpstreamId(id), n);
        h.check(r)?;
        Ok(LISTO_OK)
    })
}

/// Upstream `id` is gone: the connect failed, the peer closed (`read` returned 0) or reset, or
/// the host closed it after `LISTO_CLOSE`. The id becomes unknown. Returns `LISTO_OK`,
/// `LISTO_ERR_NULL` or `LISTO_ERR_UNKNOWN_ID`.
#[no_mangle]
pub unsafe extern "C" fn listo_node_upstream_closed(node: *mut listo_node, now_ns: u64, id: u64) -> c_int {
    ffi!(code_int, {
        let mut h = node_mut(node)?;
        let r = h.node.upstream_closed(now_ns, UpstreamId(id));
        h.check(r)?;
        Ok(LISTO_OK)
    })
}
