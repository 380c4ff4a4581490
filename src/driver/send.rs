//! Writing a viewer's queued pieces to its socket with as few copies as the kernel allows:
//! plain pieces (heads, small bodies) go by `writev`; a piece of a file-backed object
//! ([`crate::store::file_of`]) goes by `sendfile(2)` straight from the object's memfd, the
//! pieces before it corked (`MSG_MORE`) so a response head and its body leave together.

use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;

use mio::net::TcpStream;

use crate::store::{file_of, FILE_MIN};

/// Most not-yet-sent bytes a viewer socket holds before it stops being writable
/// (`TCP_NOTSENT_LOWAT`): more is only more memory and more unfairness between viewers.
pub(super) const NOTSENT_LOWAT: libc::c_int = 128 << 10;

/// Sets `TCP_NOTSENT_LOWAT` on a viewer socket (best effort).
pub(super) fn limit_unsent(stream: &TcpStream) {
    // SAFETY: setsockopt with a valid c_int option value on a socket we own.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&NOTSENT_LOWAT as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Writes a prefix of `slices`. Returns the bytes written and whether the socket took less than
/// was offered (it would block: wait for writability). `WouldBlock` errors come back as
/// `(0, true)`.
pub(super) fn send_pieces(stream: &mut TcpStream, slices: &[IoSlice<'_>]) -> io::Result<(usize, bool)> {
    let file = slices.iter().position(|s| s.len() >= FILE_MIN && file_of(s).is_some());
    let Some(j) = file else {
        let total: usize = slices.iter().map(|s| s.len()).sum();
        return short(stream.write_vectored(slices), total);
    };
    let mut written = 0;
    if j > 0 {
        let total: usize = slices[..j].iter().map(|s| s.len()).sum();
        let (k, blocked) = short(sendmsg_more(stream, &slices[..j]), total)?;
        if blocked {
            return Ok((k, true));
        }
        written = k;
    }
    let piece = &slices[j];
    let Some((fd, off)) = file_of(piece) else { return Ok((written, false)) };
    let mut offset = off as libc::off_t;
    // SAFETY: sendfile from a memfd kept open by the queued piece (alive for this call) to a
    // socket we own; the kernel advances `offset`.
    let n = unsafe { libc::sendfile(stream.as_raw_fd(), fd, &mut offset, piece.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock => Ok((written, true)),
            io::ErrorKind::Interrupted => Ok((written, false)),
            _ if written > 0 => Ok((written, false)),
            _ => Err(e),
        };
    }
    let n = n as usize;
    Ok((written + n, n < piece.len()))
}

/// `(k, k < total)`, with `WouldBlock` as `(0, true)` and `Interrupted` as `(0, false)`.
fn short(r: io::Result<usize>, total: usize) -> io::Result<(usize, bool)> {
    match r {
        Ok(k) => Ok((k, k < total)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok((0, true)),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok((0, false)),
        Err(e) => Err(e),
    }
}

/// `writev` with `MSG_MORE` (more follows at once: do not push a short segment yet).
fn sendmsg_more(stream: &TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix; the kernel only reads through it.
    msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = slices.len() as _;
    // SAFETY: `msg` points at `slices`, alive for the call.
    let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_MORE | libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
